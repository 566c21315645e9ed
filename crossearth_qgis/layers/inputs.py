"""Checks on what the analyst chose, before a worker starts: each problem in plain words.

The engine validates everything again; checking here first means the common mistakes are
explained at once, in the dock's terms, without waiting for a worker to load PyTorch.
"""

from __future__ import annotations

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsMapLayer,
    QgsProject,
    QgsProviderRegistry,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)

# Raster providers that do not read a file on this computer, and how to say what they are.
_REMOTE_PROVIDERS = {
    "wms": "a web map layer (WMS/WMTS or XYZ tiles)",
    "wcs": "a web coverage (WCS) layer",
    "arcgismapserver": "an ArcGIS MapServer web layer",
    "postgresraster": "a PostGIS raster layer",
    "virtualraster": "a virtual (raster calculator) layer",
    "mdal": "a mesh layer",
}
_REMOTE_PREFIXES = ("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift")
_REMOTE_SCHEMES = ("http://", "https://", "ftp://")
_SAVE_AS_HINT = (
    "Save the area you need as a GeoTIFF first (right-click the layer > Export > Save As...) "
    "and segment that file."
)


class InputProblem(Exception):
    """Something the analyst can fix in the dock; the message says what and how."""


def local_raster_source(layer: QgsMapLayer | None) -> str:
    """The GDAL source of a raster layer read from a local file, or InputProblem."""
    if layer is None:
        raise InputProblem(
            "No raster layer is selected. Choose one under 'Raster layer' (add one with "
            "Layer > Add Layer > Add Raster Layer)."
        )
    if not isinstance(layer, QgsRasterLayer):
        raise InputProblem(f"'{layer.name()}' is not a raster layer; choose a raster layer.")
    provider = layer.providerType()
    if provider != "gdal":
        kind = _REMOTE_PROVIDERS.get(provider, f"a '{provider}' layer, not a raster file")
        raise InputProblem(
            f"'{layer.name()}' is {kind}. CrossEarth reads the original band values of a raster "
            f"file on this computer, which such a layer does not provide. {_SAVE_AS_HINT}"
        )
    source = layer.source()
    path = QgsProviderRegistry.instance().decodeUri("gdal", source).get("path", source) or source
    lowered = str(path).lower()
    if lowered.startswith(_REMOTE_PREFIXES) or lowered.startswith(_REMOTE_SCHEMES):
        raise InputProblem(
            f"'{layer.name()}' is read over the network ({path}); segmenting it would download "
            f"it tile by tile many times. {_SAVE_AS_HINT}"
        )
    return source


def parse_bands(text: str) -> list[int] | None:
    """'3,2,1' -> [3, 2, 1]; '' -> None (the engine matches bands by name)."""
    # The plugin's input check, before a worker starts: it words the problem for the analyst,
    # and the plugin may not import the engine (engine/bands.py), which checks again.
    text = text.strip()
    if not text:
        return None
    try:
        bands = [int(part) for part in text.replace(" ", ",").split(",") if part]
    except ValueError:
        raise InputProblem(
            f"Bands '{text}' is not a list of band numbers; write them like 3,2,1."
        ) from None
    if not bands:
        return None
    return bands


def check_bands(
    layer: QgsRasterLayer, model_name: str, model_bands: list[str], bands: list[int] | None
) -> None:
    """The layer has enough bands for the model, and the chosen band numbers exist."""
    count = layer.bandCount()
    needed = len(model_bands)
    wanted = ", ".join(model_bands)
    if bands is not None:
        if len(bands) != needed:
            raise InputProblem(
                f"Bands lists {len(bands)} band(s) but the model '{model_name}' takes {needed} "
                f"({wanted}); list one band of '{layer.name()}' per model input, in that order."
            )
        wrong = [b for b in bands if not 1 <= b <= count]
        if wrong:
            raise InputProblem(
                f"Band {', '.join(map(str, wrong))} does not exist: '{layer.name()}' has bands "
                f"1 to {count}."
            )
        return
    if count < needed:
        raise InputProblem(
            f"'{layer.name()}' has {count} band(s) but the model '{model_name}' needs {needed} "
            f"({wanted}). Choose a raster with these bands, or another model."
        )


def extent_in_layer_crs(
    extent: QgsRectangle,
    extent_crs: QgsCoordinateReferenceSystem,
    layer: QgsRasterLayer,
    what: str,
) -> tuple[float, float, float, float]:
    """`extent` (in `extent_crs`) in the raster's CRS, cut to the raster; InputProblem if apart."""
    if extent_crs.isValid() and layer.crs().isValid() and extent_crs != layer.crs():
        transform = QgsCoordinateTransform(extent_crs, layer.crs(), QgsProject.instance())
        extent = transform.transformBoundingBox(extent)
    overlap = extent.intersect(layer.extent())
    if overlap.isEmpty() or overlap.width() <= 0 or overlap.height() <= 0:
        raise InputProblem(
            f"{what} does not overlap '{layer.name()}'; pan to the raster or choose 'Whole layer'."
        )
    return (overlap.xMinimum(), overlap.yMinimum(), overlap.xMaximum(), overlap.yMaximum())


def selected_features_extent(layer: QgsMapLayer | None) -> QgsRectangle:
    """The bounding box of a vector layer's selected features (in the layer's CRS)."""
    if not isinstance(layer, QgsVectorLayer):
        raise InputProblem(
            "No polygon layer is chosen for 'Extent of selected features'; choose the layer "
            "that holds the selected polygon."
        )
    if layer.selectedFeatureCount() == 0:
        raise InputProblem(
            f"No feature is selected in '{layer.name()}'; select the polygon(s) to segment with "
            "the Select Features tool first."
        )
    return layer.boundingBoxOfSelected()
