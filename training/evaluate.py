"""`crossearth evaluate`: a model's predictions on an image against reference labels."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from engine.error_codes import LABELS_CLASS_FIELD, LABELS_UNMAPPED
from engine.errors import CrossEarthError, InputError
from engine.models.packages import find_package
from engine.run.pipeline import SegmentOptions, segment
from training.config import IGNORE
from training.labels import ClassMapping, Grid, PolygonLabels, RasterLabels, is_raster
from training.metrics import metrics, update_confusion


def reference_mapping(
    raw_values: list[Any], class_names: list[str], label_map: dict[Any, Any] | None
) -> dict[Any, int]:
    """Label values -> the model's class indices: by label_map, else numbers as indices and
    text as class names. Values that fit nowhere are an error."""
    table: dict[Any, int] = {IGNORE: IGNORE}
    for raw, target in (label_map or {}).items():
        key = int(raw) if isinstance(raw, str) and raw.lstrip("-").isdigit() else raw
        if target == "ignore":
            table[key] = IGNORE
        elif isinstance(target, str) and target in class_names:
            table[key] = class_names.index(target)
        elif isinstance(target, int) and 0 <= target < len(class_names):
            table[key] = target
        else:
            raise CrossEarthError(f"label_map target {target!r} is not one of the model's classes")
    for value in raw_values:
        if value in table:
            continue
        if isinstance(value, (int, np.integer)) and 0 <= value < len(class_names):
            table[int(value)] = int(value)
        elif isinstance(value, str) and value in class_names:
            table[value] = class_names.index(value)
    unknown = [v for v in raw_values if v not in table]
    if unknown:
        values = ", ".join(map(str, unknown[:10]))
        raise InputError(
            f"the reference labels hold value(s) {values} that are not classes of the model "
            f"({', '.join(class_names)}); map them with a label map",
            code=LABELS_UNMAPPED,
            option="label_map",
            values=values,
            classes=", ".join(class_names),
        )
    return table


def evaluate(
    model: str | Path | None,
    image: Path,
    labels: Path,
    *,
    class_field: str | None = None,
    layer: str | None = None,
    label_map: dict[Any, Any] | None = None,
    options: SegmentOptions | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Segments `image` with the model and scores it on every labelled pixel of `labels` (a
    label raster on any grid, or polygons with `class_field`)."""
    package = find_package(model)
    names = package.card.class_names
    with tempfile.TemporaryDirectory(prefix="crossearth-eval-") as scratch:
        predicted = Path(scratch) / "prediction.tif"
        segment(image, predicted, package, options or SegmentOptions(), progress=progress)
        with rasterio.open(predicted) as prediction:
            grid = Grid.of(prediction)
            if is_raster(labels):
                source: Any = RasterLabels(labels, grid, image.name)
                raw_values = source.values()
                mapping = ClassMapping(reference_mapping(raw_values, names, label_map))
            else:
                if not class_field:
                    raise InputError(
                        f"{labels.name} holds polygons: give the class field",
                        code=LABELS_CLASS_FIELD,
                        option="class_field",
                        path=labels.name,
                    )
                codes: dict[Any, int] = {}
                source = PolygonLabels(labels, grid, layer, class_field, codes)
                raw_values = source.values()
                for value in raw_values:
                    codes.setdefault(value, len(codes))
                table = reference_mapping(raw_values, names, label_map)
                mapping = ClassMapping({codes[v]: table[v] for v in raw_values})
            confusion = np.zeros((len(names), len(names)), np.int64)
            for _, window in prediction.block_windows(1):
                classes = prediction.read(1, window=window, masked=True)
                reference = mapping.apply(source.read(window))
                reference[np.ma.getmaskarray(classes)] = IGNORE
                update_confusion(confusion, reference, np.ma.getdata(classes), IGNORE)
    result = metrics(confusion, names)
    if result["pixels"] == 0:
        raise CrossEarthError(
            f"{labels.name} labels no pixel where the model made a prediction; check that the "
            "labels cover the image"
        )
    result["model"] = package.card.name
    result["image"] = image.name
    result["labels"] = labels.name
    return result
