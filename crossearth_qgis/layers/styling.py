"""How results look: class rasters with the model's names and colours, and their polygons.

The classes come from the model card when the caller has it, else from the output GeoTIFF
itself (band tag CLASS_NAMES and the colour table the engine writes), so any CrossEarth output
can be styled, also in scripts and `make demo`. A .qml saved beside the output makes QGIS
apply the same style whenever the file is opened again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsContrastEnhancement,
    QgsFillSymbol,
    QgsPalettedRasterRenderer,
    QgsRasterLayer,
    QgsRendererCategory,
    QgsSingleBandGrayRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

CLASS_BAND = 1
POLYGON_LAYER = "classes"  # the layer the engine writes into the polygons GeoPackage
POLYGON_CLASS_FIELD = "class"


class StyleError(Exception):
    """The output cannot be loaded or styled; the message says which file and why."""


@dataclass(frozen=True)
class ClassStyle:
    index: int
    name: str
    color: tuple[int, int, int]


def classes_from_card(card: dict[str, Any]) -> list[ClassStyle]:
    return [
        ClassStyle(int(c["index"]), str(c["name"]), tuple(int(v) for v in c["color"][:3]))
        for c in card.get("classes", [])
    ]


def classes_from_raster(path: str | Path) -> list[ClassStyle]:
    """The classes a CrossEarth output GeoTIFF carries (names in its tags, colour table)."""
    from osgeo import gdal

    dataset = gdal.Open(str(path))
    if dataset is None:
        raise StyleError(f"{path} cannot be opened as a raster")
    band = dataset.GetRasterBand(CLASS_BAND)
    names_json = band.GetMetadataItem("CLASS_NAMES")
    names = json.loads(names_json) if names_json else list(band.GetCategoryNames() or [])
    table = band.GetColorTable()
    if not names or table is None:
        raise StyleError(
            f"{Path(path).name} has no class names or colour table: it is not a CrossEarth "
            "class raster"
        )
    return [
        ClassStyle(i, str(name), tuple(table.GetColorEntry(i)[:3]))  # type: ignore[arg-type]
        for i, name in enumerate(names)
    ]


def model_name_of(path: str | Path) -> str:
    """The model a CrossEarth output was made with (its CROSSEARTH_MODEL tag)."""
    from osgeo import gdal

    dataset = gdal.Open(str(path))
    name = dataset.GetMetadataItem("CROSSEARTH_MODEL") if dataset is not None else None
    return name or "CrossEarth"


def result_layer_name(input_name: str, model_name: str) -> str:
    return f"{input_name} – {model_name}"


def apply_class_style(layer: QgsRasterLayer, classes: list[ClassStyle]) -> None:
    """A paletted renderer: one legend entry per class, in the class colour, nodata clear."""
    provider = layer.dataProvider()
    # Pixels the engine did not classify hold the nodata value it wrote into the file (its
    # choice, not repeated here): keep them transparent.
    provider.setUseSourceNoDataValue(CLASS_BAND, True)
    renderer = QgsPalettedRasterRenderer(
        provider,
        CLASS_BAND,
        [QgsPalettedRasterRenderer.Class(c.index, QColor(*c.color), c.name) for c in classes],
    )
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def style_path(source: str | Path) -> Path:
    """Where QGIS looks for a file's default style: same name, .qml extension."""
    return Path(source).with_suffix(".qml")


def save_style(layer: QgsRasterLayer | QgsVectorLayer, path: Path) -> Path:
    message, ok = layer.saveNamedStyle(str(path))
    if not ok:
        raise StyleError(f"could not save the style {path}: {message}")
    return path


def class_layer(
    path: str | Path, name: str, classes: list[ClassStyle] | None = None, save_qml: bool = True
) -> QgsRasterLayer:
    """Loads a class raster styled with its classes; saves the .qml beside it by default."""
    layer = QgsRasterLayer(str(path), name, "gdal")
    if not layer.isValid():
        raise StyleError(f"QGIS cannot open the result {path}")
    apply_class_style(layer, classes or classes_from_raster(path))
    if save_qml:
        save_style(layer, style_path(path))
    return layer


def class_layer_or_plain(
    path: str | Path, name: str, classes: list[ClassStyle] | None = None
) -> tuple[QgsRasterLayer, str | None]:
    """The class raster as a layer, styled where styling works: a complete result is always
    loaded, and a style that fails (unreadable class names, a .qml that cannot be saved) is
    returned as one line beside it. Raises StyleError only when QGIS cannot open the file."""
    layer = QgsRasterLayer(str(path), name, "gdal")
    if not layer.isValid():
        raise StyleError(f"QGIS cannot open the result {path}")
    try:
        apply_class_style(layer, classes or classes_from_raster(path))
        save_style(layer, style_path(path))
    except StyleError as exc:
        return layer, f"The result was loaded without its class style: {exc}"
    return layer, None


def confidence_layer(path: str | Path, name: str) -> QgsRasterLayer:
    """Grey from uncertain (dark) to certain (bright); float 0..1 or uint8 percent."""
    layer = QgsRasterLayer(str(path), name, "gdal")
    if not layer.isValid():
        raise StyleError(f"QGIS cannot open the confidence raster {path}")
    provider = layer.dataProvider()
    provider.setUseSourceNoDataValue(CLASS_BAND, True)
    renderer = QgsSingleBandGrayRenderer(provider, CLASS_BAND)
    enhancement = QgsContrastEnhancement(provider.dataType(CLASS_BAND))
    enhancement.setContrastEnhancementAlgorithm(
        QgsContrastEnhancement.ContrastEnhancementAlgorithm.StretchToMinimumMaximum
    )
    enhancement.setMinimumValue(0.0)
    enhancement.setMaximumValue(100.0 if provider.dataType(CLASS_BAND) == 1 else 1.0)
    renderer.setContrastEnhancement(enhancement)
    layer.setRenderer(renderer)
    return layer


def polygon_renderer(classes: list[ClassStyle]) -> QgsCategorizedSymbolRenderer:
    """Each class's polygons filled in the class colour."""
    categories = []
    for c in classes:
        symbol = QgsFillSymbol.createSimple(
            {"color": "{},{},{},255".format(*c.color), "outline_color": "35,35,35,255"}
        )
        categories.append(QgsRendererCategory(c.name, symbol, c.name))
    return QgsCategorizedSymbolRenderer(POLYGON_CLASS_FIELD, categories)


def polygon_layer(path: str | Path, name: str, classes: list[ClassStyle]) -> QgsVectorLayer:
    """The class polygons (attributes: class_id, class, area_m2), styled by class."""
    layer = QgsVectorLayer(f"{path}|layername={POLYGON_LAYER}", name, "ogr")
    if not layer.isValid():
        raise StyleError(f"QGIS cannot open the polygons {path}")
    layer.setRenderer(polygon_renderer(classes))
    return layer
