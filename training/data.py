"""Training data: images with their labels on the image grid, checked before training starts,
split into spatial blocks for training and validation, and sampled as windows on the fly."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from engine.errors import CrossEarthError
from engine.models.model_card import InputSpec
from engine.raster.raster_input import TileReader, choose_scaling, open_raster, resolve_bands
from training.config import IGNORE, ClassSpec, ImageSource, TrainConfig
from training.labels import AreaMask, ClassMapping, Grid, PolygonLabels, RasterLabels

log = logging.getLogger(__name__)

TRAIN, VAL = "train", "val"


@dataclass
class ImageData:
    source: ImageSource
    reader: TileReader
    grid: Grid
    labels: Any  # RasterLabels | PolygonLabels
    mapping: ClassMapping | None = None
    mask: AreaMask | None = None
    # Per block: 0 no labels, 1 train, 2 validation (filled by the split).
    block_split: np.ndarray | None = None

    @property
    def name(self) -> str:
        return self.source.image.name

    def read_labels(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Class indices of any window (IGNORE outside the image, where unlabelled, outside the
        labelled area and where the image is nodata)."""
        out = np.full((height, width), IGNORE, np.uint8)
        top, left = max(row, 0), max(col, 0)
        bottom, right = min(row + height, self.grid.height), min(col + width, self.grid.width)
        if bottom <= top or right <= left:
            return out
        window = Window(left, top, right - left, bottom - top)
        assert self.mapping is not None
        classes = self.mapping.apply(self.labels.read(window))
        if self.mask is not None:
            classes[~self.mask.read(window)] = IGNORE
        classes[~self.reader.read_window(window)[1]] = IGNORE  # masks, NaN and infinities
        out[top - row : bottom - row, left - col : right - col] = classes
        return out


@dataclass
class Block:
    image: int
    row: int
    col: int
    size: int
    counts: np.ndarray  # labelled pixels per class
    split: str = TRAIN

    @property
    def labelled(self) -> int:
        return int(self.counts.sum())


@dataclass
class TrainingData:
    images: list[ImageData]
    classes: list[ClassSpec]
    blocks: list[Block]
    block_size: int
    bands: list[int]
    spec: InputSpec
    warnings: list[str] = field(default_factory=list)

    @property
    def band_names(self) -> tuple[str, ...]:
        return self.spec.bands

    @property
    def value_range(self) -> tuple[float, float]:
        return self.spec.value_range

    def set_input_spec(self, spec: InputSpec) -> None:
        """Uses another normalization (e.g. statistics measured on the training data)."""
        self.spec = spec
        for image in self.images:
            dataset = image.reader.dataset
            scaling = choose_scaling(dataset, image.reader.bands, spec, "auto")
            image.reader = TileReader(dataset, image.reader.bands, scaling, spec)

    def blocks_of(self, split: str) -> list[Block]:
        return [b for b in self.blocks if b.split == split]

    def class_pixels(self, split: str) -> np.ndarray:
        return sum((b.counts for b in self.blocks_of(split)), np.zeros(len(self.classes), np.int64))

    def read_training_window(
        self, image: int, row: int, col: int, size: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values in the model range, validity, labels) of a window; labels of pixels outside
        training blocks are hidden (IGNORE), so validation labels never reach training."""
        data = self.images[image]
        values, valid = data.reader.read_box(row, col, size, size)
        labels = data.read_labels(row, col, size, size)
        labels[~self.training_area(image, row, col, size)] = IGNORE
        return values, valid, labels

    def training_area(self, image: int, row: int, col: int, size: int) -> np.ndarray:
        """Which pixels of a window lie in training blocks (bool [size, size])."""
        block_split = self.images[image].block_split
        assert block_split is not None
        rows = np.arange(row, row + size)
        cols = np.arange(col, col + size)
        split = block_split[
            np.ix_(
                (rows // self.block_size).clip(0, block_split.shape[0] - 1),
                (cols // self.block_size).clip(0, block_split.shape[1] - 1),
            )
        ]
        inside = (rows >= 0)[:, None] & (cols >= 0)[None, :]
        return (split == 1) & inside

    def save_split(self, path: Path) -> None:
        """The split as GeoJSON block polygons (in each image's CRS) with split and counts."""
        features = []
        for block in self.blocks:
            image = self.images[block.image]
            t = image.grid.transform
            corners = [
                t * (block.col, block.row),
                t * (block.col + block.size, block.row),
                t * (block.col + block.size, block.row + block.size),
                t * (block.col, block.row + block.size),
            ]
            features.append(
                {
                    "type": "Feature",
                    "properties": {
                        "image": image.name,
                        "split": block.split,
                        "row": block.row,
                        "col": block.col,
                        "labelled_pixels": block.labelled,
                        **{c.name: int(n) for c, n in zip(self.classes, block.counts, strict=True)},
                    },
                    "geometry": {
                        "type": "Polygon",
                        "coordinates": [[list(p) for p in [*corners, corners[0]]]],
                    },
                }
            )
        crs = self.images[0].grid.crs
        collection: dict[str, Any] = {"type": "FeatureCollection", "features": features}
        if crs is not None and crs.to_epsg():
            collection["crs"] = {
                "type": "name",
                "properties": {"name": f"urn:ogc:def:crs:EPSG::{crs.to_epsg()}"},
            }
        path.write_text(json.dumps(collection) + "\n", encoding="utf-8")


def _default_colors(count: int) -> list[tuple[int, int, int]]:
    import colorsys

    colors = []
    for i in range(count):
        red, green, blue = colorsys.hsv_to_rgb((i * 0.618034) % 1, 0.65, 0.95)
        colors.append((round(red * 255), round(green * 255), round(blue * 255)))
    return colors


def _resolve_classes(
    config: TrainConfig, raw_values: list[Any], base_classes: list[ClassSpec] | None
) -> tuple[list[ClassSpec], dict[Any, int]]:
    """The class list and the table raw label value -> class index (IGNORE allowed)."""
    label_map = dict(config.label_map or {})
    classes = list(config.classes) if config.classes else None
    if classes is None and label_map:
        names: list[str] = []
        for target in label_map.values():
            if isinstance(target, str) and target != "ignore" and target not in names:
                names.append(target)
        if names:
            classes = [ClassSpec(n) for n in names]
    if classes is None:
        if (
            all(isinstance(v, (int, np.integer)) for v in raw_values)
            and base_classes
            and (set(raw_values) <= set(range(len(base_classes))))
        ):
            classes = list(base_classes)
        elif all(isinstance(v, (int, np.integer)) for v in raw_values) and not label_map:
            classes = [ClassSpec(f"class {v}") for v in sorted(raw_values)]
            label_map = {v: i for i, v in enumerate(sorted(raw_values))}
        else:
            classes = [ClassSpec(str(v)) for v in sorted(raw_values, key=str)]
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise CrossEarthError(f"class names must be unique: {', '.join(names)}")
    # A class named as in the base keeps the base's colour (a fine-tuned model draws its map
    # as the model it came from); others get the default palette.
    base_colors = {c.name: c.color for c in base_classes or [] if c.color}
    colors = _default_colors(len(classes))
    classes = [
        ClassSpec(c.name, c.color or base_colors.get(c.name) or colors[i])
        for i, c in enumerate(classes)
    ]

    table: dict[Any, int] = {}
    if label_map:
        for raw, target in label_map.items():
            key = int(raw) if isinstance(raw, str) and raw.lstrip("-").isdigit() else raw
            if target == "ignore":
                table[key] = IGNORE
            elif isinstance(target, str):
                if target not in names:
                    raise CrossEarthError(
                        f"label_map sends {raw!r} to '{target}', which is not a class "
                        f"({', '.join(names)})"
                    )
                table[key] = names.index(target)
            elif isinstance(target, int) and 0 <= target < len(classes):
                table[key] = target
            else:
                raise CrossEarthError(f"label_map target {target!r} for {raw!r} is not a class")
    else:
        for value in raw_values:
            if isinstance(value, str) and value in names:
                table[value] = names.index(value)
            elif isinstance(value, (int, np.integer)) and 0 <= value < len(classes):
                table[int(value)] = int(value)
    table[IGNORE] = IGNORE
    unknown = [v for v in raw_values if v not in table]
    if unknown:
        shown = ", ".join(str(v) for v in unknown[:10])
        raise CrossEarthError(
            f"the labels hold value(s) {shown} outside the class list ({', '.join(names)}); "
            "map them with label_map (to a class or 'ignore') or list the classes"
        )
    return classes, table


def load_training_data(
    config: TrainConfig, spec: InputSpec, base_classes: list[ClassSpec] | None
) -> TrainingData:
    """Opens and checks every image and its labels, scans the labelled pixels per block and
    splits the blocks. Every problem is a CrossEarthError raised before training starts."""
    images: list[ImageData] = []
    warnings: list[str] = []
    raw_values: list[Any] = []
    bands: list[int] | None = None
    polygon_codes: dict[Any, int] = {}
    for source in config.images:
        dataset = open_raster(source.image)
        chosen = resolve_bands(dataset, spec, config.bands)
        if bands is not None and chosen != bands:
            log.info("%s uses bands %s", source.image.name, chosen)
        bands = bands or chosen
        scaling = choose_scaling(dataset, chosen, spec, "auto")
        reader = TileReader(dataset, chosen, scaling, spec)
        grid = Grid.of(dataset)
        if source.labels is not None:
            labels: Any = RasterLabels(source.labels, grid, source.image.name)
            values = labels.values()
        else:
            assert source.polygons is not None
            # Polygon classes may be text: each distinct value gets an integer code, shared by
            # all polygon files (the dict is filled in place before any window is read).
            labels = PolygonLabels(
                source.polygons, grid, source.layer, source.class_field, polygon_codes
            )
            values = labels.values()
            for value in values:
                polygon_codes.setdefault(value, len(polygon_codes))
        if labels.warning:
            warnings.append(labels.warning)
        mask = AreaMask(source.mask, grid, source.image.name) if source.mask else None
        images.append(ImageData(source, reader, grid, labels, mask=mask))
        raw_values.extend(v for v in values if v not in raw_values)

    classes, table = _resolve_classes(config, raw_values, base_classes)
    for image in images:
        if isinstance(image.labels, PolygonLabels):
            code_table = {
                polygon_codes[raw]: index for raw, index in table.items() if raw in polygon_codes
            }
            image.mapping = ClassMapping(code_table)
        else:
            image.mapping = ClassMapping(table)

    blocks = _scan_blocks(images, config.block_size, len(classes))
    if not blocks:
        raise CrossEarthError(
            "no labelled pixels in the training area: the labels are empty, all ignored, outside "
            "the labelled-area mask or under the image's nodata"
        )
    data = TrainingData(images, classes, blocks, config.block_size, bands or [], spec, warnings)
    split_blocks(data, config.val_fraction, config.seed)
    return data


def _scan_blocks(images: list[ImageData], size: int, num_classes: int) -> list[Block]:
    blocks = []
    for index, image in enumerate(images):
        rows = -(-image.grid.height // size)
        cols = -(-image.grid.width // size)
        image.block_split = np.zeros((rows, cols), np.uint8)
        for r in range(rows):
            for c in range(cols):
                labels = image.read_labels(r * size, c * size, size, size)
                counts = np.bincount(labels[labels != IGNORE].ravel(), minlength=num_classes)
                if counts.sum():
                    blocks.append(Block(index, r * size, c * size, size, counts[:num_classes]))
    return blocks


def split_blocks(data: TrainingData, val_fraction: float, seed: int) -> None:
    """Whole blocks go to validation until it holds `val_fraction` of the labelled pixels;
    the rest train. Seeded, so a run and its resume agree."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.blocks))
    total = sum(b.labelled for b in data.blocks)
    if len(data.blocks) < 2:
        raise CrossEarthError(
            f"only one {data.block_size} px block holds labels: a spatial split needs at least "
            "two; lower block_size or label more area"
        )
    in_val = 0
    for position in order:
        block = data.blocks[position]
        if in_val < val_fraction * total:
            block.split = VAL
            in_val += block.labelled
        else:
            block.split = TRAIN
    if not data.blocks_of(TRAIN):
        data.blocks[order[-1]].split = TRAIN
    for block in data.blocks:
        block_split = data.images[block.image].block_split
        assert block_split is not None
        block_split[block.row // block.size, block.col // block.size] = (
            1 if block.split == TRAIN else 2
        )
    missing = [
        c.name for c, n in zip(data.classes, data.class_pixels(TRAIN), strict=True) if n == 0
    ]
    if missing:
        message = f"classes without training pixels after the split: {', '.join(missing)}"
        log.warning(message)
        data.warnings.append(message)


class WindowSampler:
    """Random training windows: a block (weighted by labelled pixels, or by one class's pixels
    for class-balanced sampling), a centre inside it, a scale from the range."""

    def __init__(
        self,
        data: TrainingData,
        window: int,
        scale_range: tuple[float, float],
        class_balanced: bool,
        input_scale: int = 1,
    ) -> None:
        self.data = data
        self.window = window
        self.input_scale = input_scale
        self.scale_range = scale_range
        self.class_balanced = class_balanced
        self.blocks = data.blocks_of(TRAIN)
        counts = np.stack([b.counts for b in self.blocks]).astype(np.float64)
        self._weights = counts.sum(1) / counts.sum()
        present = counts.sum(0) > 0
        self._class_weights = np.where(present[None], counts / np.maximum(counts.sum(0), 1), 0)
        self._present = np.nonzero(present)[0]

    def sample(self, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(image, row, col, read size) of a window, in source pixels: window / (random
        scale x input scale), later resized to the window."""
        low, high = np.log(self.scale_range[0]), np.log(self.scale_range[1])
        scale = float(np.exp(rng.uniform(low, high)))
        size = max(8, int(round(self.window / (scale * self.input_scale))))
        if self.class_balanced:
            chosen_class = int(rng.choice(self._present))
            block = self.blocks[
                int(rng.choice(len(self.blocks), p=self._class_weights[:, chosen_class]))
            ]
            labels = self.data.images[block.image].read_labels(
                block.row, block.col, block.size, block.size
            )
            rows, cols = np.nonzero(labels == chosen_class)
            pick = int(rng.integers(len(rows))) if len(rows) else None
            centre_row = block.row + (int(rows[pick]) if pick is not None else block.size // 2)
            centre_col = block.col + (int(cols[pick]) if pick is not None else block.size // 2)
        else:
            block = self.blocks[int(rng.choice(len(self.blocks), p=self._weights))]
            centre_row = block.row + int(rng.integers(block.size))
            centre_col = block.col + int(rng.integers(block.size))
        return block.image, centre_row - size // 2, centre_col - size // 2, size
