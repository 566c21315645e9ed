"""The engine runs converted CrossEarth packages: normalization, band order, scores."""

import numpy as np
import rasterio
import torch

from engine import load_model
from engine.run.pipeline import LoadedModel, SegmentOptions, segment

from ..engine.conftest import LANDSAT, write_raster


def test_single_tile_equals_the_model_on_the_same_pixels(tmp_path, tiny_package):
    with rasterio.open(LANDSAT) as src:
        rgb = src.read([3, 2, 1], window=((100, 228), (50, 178)))
        crs, transform = src.crs.to_wkt(), src.window_transform(((100, 228), (50, 178)))
    raster = write_raster(tmp_path / "rgb.tif", rgb, crs=crs, transform=transform)
    out = tmp_path / "classes.tif"
    segment(
        raster, out, tiny_package, SegmentOptions(bands=[1, 2, 3], scaling="none", device="cpu")
    )

    card = tiny_package.card
    mean = np.asarray(card.input.mean, np.float32)[:, None, None]
    std = np.asarray(card.input.std, np.float32)[:, None, None]
    x = torch.from_numpy((rgb.astype(np.float32) - mean) / std)[None]
    with torch.no_grad():
        expected = load_model(tiny_package.path)(x)[0].argmax(0).numpy()
    with rasterio.open(out) as dst:
        classes = dst.read(1)
        assert dst.crs.to_wkt() == crs and dst.transform == transform
        assert [dst.colormap(1)[i][:3] for i in range(3)] == [c.color for c in card.classes]
    np.testing.assert_array_equal(classes, expected)


def test_tiled_run_on_a_larger_raster(tmp_path, tiny_package):
    out = tmp_path / "classes.tif"
    result = segment(
        LANDSAT,
        out,
        tiny_package,
        SegmentOptions(bands=[3, 2, 1], tile_size=128, overlap=32, batch_size=3, device="cpu"),
    )
    assert result.tiles == 16 and result.tiles_skipped == 0
    with rasterio.open(out) as dst:
        classes = dst.read(1)
    assert classes.shape == (352, 349)
    assert set(np.unique(classes)) <= {0, 1, 2}
    assert sum(result.class_pixels.values()) == 352 * 349


def test_input_scale_runs_the_network_on_a_finer_grid(tmp_path):
    from engine.crossearth.model import CrossEarth
    from engine.crossearth.presets import architecture_config, make_card
    from engine.models.model_card import ClassInfo
    from engine.models.packages import save_package
    from engine.run.scaled_model import ScaledModel

    config = architecture_config("tiny", 2)
    classes = (ClassInfo(0, "a", (0, 0, 0)), ClassInfo(1, "b", (255, 255, 255)))
    card = make_card("scaled", config, classes, input_scale=4)
    assert (card.tile_size, card.size_multiple, card.input_scale) == (32, 4, 4)
    torch.manual_seed(0)
    package = save_package(tmp_path / "scaled", card, CrossEarth(config).state_dict())

    model = load_model(package.path)
    assert isinstance(model, ScaledModel)
    seen = []
    backbone = model.network.backbone
    backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    with rasterio.open(LANDSAT) as src:
        rgb = src.read([3, 2, 1], window=((0, 50), (0, 70)))
    raster = write_raster(tmp_path / "rgb.tif", rgb)
    out = tmp_path / "classes.tif"
    loaded = LoadedModel(package.card, model)
    result = segment(raster, out, loaded, SegmentOptions(bands=[1, 2, 3], device="cpu"))
    # 32 px source tiles reach the network as 128 px tiles.
    assert {tuple(s[-2:]) for s in seen} == {(128, 128)}
    with rasterio.open(out) as dst:
        assert dst.shape == (50, 70)
    assert sum(s[0] for s in seen) == result.tiles - result.tiles_skipped
    with torch.no_grad():
        x = torch.randn(1, 3, 32, 32)
        scores = model(x)
        up = torch.nn.functional.interpolate(x, scale_factor=4, mode="bilinear")
        fine = model.network(up)
        direct = model.network.scores(up, (32, 32))
    assert tuple(scores.shape) == (1, 2, 32, 32)
    # The query masks are resampled straight to the source grid (not to the 128 px input and
    # averaged back): the same scores up to the order of resampling and the sigmoid.
    torch.testing.assert_close(scores, direct)
    pooled = torch.nn.functional.avg_pool2d(fine, 4)
    assert (scores - pooled).abs().mean() < 0.03 * pooled.abs().mean()
    assert (scores.argmax(1) == pooled.argmax(1)).float().mean() > 0.97


def test_card_refuses_a_bad_input_scale():
    import pytest

    from engine.errors import CrossEarthError
    from engine.models.model_card import card_from_dict

    with pytest.raises(CrossEarthError, match="input_scale: must be a positive whole number"):
        card_from_dict(
            {
                "name": "x",
                "architecture": {"name": "crossearth"},
                "classes": [{"index": 0, "name": "a", "color": [0, 0, 0]}],
                "input": {"bands": ["red"], "mean": [0], "std": [1]},
                "tile": {"size": 64, "stride": 32},
                "input_scale": 0,
            }
        )
