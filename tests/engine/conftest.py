"""Small real rasters, tiny models and model cards for the engine tests."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from engine.models.architectures import register_architecture, unregister_architecture
from engine.models.model_card import ModelCard, card_from_dict
from engine.run.pipeline import LoadedModel

REPO = Path(__file__).resolve().parents[2]
LANDSAT = REPO / "resources" / "samples" / "landsat7_olinda_6band.tif"


def make_card(
    num_classes: int = 4,
    bands: tuple[str, ...] = ("red", "green", "blue"),
    tile: int = 64,
    stride: int = 48,
    size_multiple: int = 1,
    architecture: str = "test-pixel-linear",
    config: dict | None = None,
) -> ModelCard:
    palette = [[(37 * i) % 256, (91 * i) % 256, (151 * i) % 256] for i in range(num_classes)]
    return card_from_dict(
        {
            "name": "test-model",
            "version": "1",
            "architecture": {"name": architecture, "config": config or {}},
            "classes": [
                {"index": i, "name": f"class {i}", "color": palette[i]} for i in range(num_classes)
            ],
            "input": {
                "bands": list(bands),
                "mean": [127.5] * len(bands),
                "std": [64.0] * len(bands),
            },
            "tile": {"size": tile, "stride": stride},
            "size_multiple": size_multiple,
        }
    )


class PixelLinear(torch.nn.Module):
    """Per-pixel linear classifier: translation equivariant with a 1x1 receptive field."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).softmax(1)


class SmallConvNet(torch.nn.Module):
    """Three 3x3 convolutions (7 px receptive field, zero padded): tile borders matter."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(in_channels, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, num_classes, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).softmax(1)


def seeded(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return module.eval()


@pytest.fixture
def pixel_architecture() -> Iterator[None]:
    """The "test-pixel-linear" architecture (a PixelLinear over the card's bands) registered
    for one test."""
    register_architecture(
        "test-pixel-linear",
        lambda config, card: PixelLinear(len(card.input.bands), card.num_classes),
        replace=True,
    )
    yield
    unregister_architecture("test-pixel-linear")


@pytest.fixture
def pixel_model() -> LoadedModel:
    card = make_card(num_classes=4, bands=("blue", "green", "red"))
    return LoadedModel(card, seeded(PixelLinear(3, 4)))


@pytest.fixture
def conv_model() -> LoadedModel:
    card = make_card(num_classes=3, bands=("blue", "green", "red"), tile=96, stride=64)
    return LoadedModel(card, seeded(SmallConvNet(3, 3), seed=1))


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = "EPSG:32633",
    transform=None,
    nodata: float | None = None,
    colorinterp=None,
    descriptions: list[str] | None = None,
) -> Path:
    count, height, width = data.shape
    profile = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": count,
        "dtype": data.dtype.name,
        "crs": crs,
        "nodata": nodata,
        "transform": transform or from_origin(500000, 4600000, 2.0, 2.0),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if colorinterp:
            dst.colorinterp = colorinterp
        for i, text in enumerate(descriptions or []):
            dst.set_band_description(i + 1, text)
    return path


def segment_args(package, source, output, *extra) -> list:
    """The command line of `crossearth segment` of `source` into `output` with `package`'s
    model, on the CPU and without progress output; `extra` options come last."""
    return [
        "segment",
        source,
        output,
        "--model",
        package.path,
        "--device",
        "cpu",
        "--progress",
        "none",
        *extra,
    ]


def write_tiled(
    path: Path,
    data: np.ndarray,
    block: int,
    *,
    crs="EPSG:32633",
    transform=None,
    names=("blue", "green", "red"),
) -> Path:
    """`data` as a tiled, deflate-compressed GeoTIFF in blocks of `block` px, with the bands
    named `names` (the files the damaged-input tests cut or corrupt). By default in UTM 33N at
    2 m, like write_raster."""
    count, height, width = data.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=height,
        width=width,
        count=count,
        dtype=data.dtype.name,
        crs=crs,
        transform=transform or from_origin(500000, 4600000, 2, 2),
        tiled=True,
        blockxsize=block,
        blockysize=block,
        compress="deflate",
    ) as dst:
        dst.write(data)
        for i, name in enumerate(names):
            dst.set_band_description(i + 1, name)
    return path


@contextlib.contextmanager
def http_server(folder: Path) -> Iterator[str]:
    """Serves `folder` over HTTP on 127.0.0.1, from a real server in its own process (GDAL holds
    the GIL while it reads); yields its address, http://127.0.0.1:PORT."""
    server = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1"],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        port = re.search(r"port (\d+)", server.stdout.readline()).group(1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait()


@pytest.fixture
def landsat_rgb(tmp_path: Path) -> Path:
    """The real Landsat 7 sample reduced to blue/green/red with band names set."""
    with rasterio.open(LANDSAT) as src:
        data = src.read([1, 2, 3])
        return write_raster(
            tmp_path / "landsat_bgr.tif",
            data,
            crs=src.crs.to_wkt(),
            transform=src.transform,
            descriptions=["blue", "green", "red"],
        )


@pytest.fixture
def tiled_landsat(tmp_path: Path) -> Callable[[int], Path]:
    """The Landsat sample stacked vertically `repeat` times (a real-texture tall raster)."""

    def build(repeat: int, width: int | None = None) -> Path:
        with rasterio.open(LANDSAT) as src:
            data = src.read([1, 2, 3])
        if width is not None:
            data = data[:, :, :width]
        tall = np.concatenate([data] * repeat, axis=1)
        return write_raster(
            tmp_path / f"tall_{repeat}.tif", tall, descriptions=["blue", "green", "red"]
        )

    return build


def whole_image_scores(model: LoadedModel, path: Path, bands: list[int]) -> np.ndarray:
    """Reference: the model applied once to the whole normalized raster."""
    with rasterio.open(path) as src:
        data = src.read(bands).astype(np.float32)
    mean = np.asarray(model.card.input.mean, np.float32)[:, None, None]
    std = np.asarray(model.card.input.std, np.float32)[:, None, None]
    x = torch.from_numpy((data - mean) / std)[None]
    with torch.no_grad():
        return model.module(x)[0].numpy()
