"""The written GeoTIFF: georeferencing, type, colours, names, nodata, overviews, atomicity."""

import json

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp

from engine.run.pipeline import LoadedModel, SegmentOptions, segment

from .conftest import LANDSAT, PixelLinear, make_card, seeded, write_raster


def test_output_keeps_georeferencing_and_embeds_classes(tmp_path, pixel_model):
    out = tmp_path / "classes.tif"
    result = segment(LANDSAT, out, pixel_model, SegmentOptions(bands=[1, 2, 3], tile_size=128))
    with rasterio.open(LANDSAT) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs
        assert dst.crs.to_epsg() == 31985  # SIRGAS 2000 / UTM 25S, as the source
        assert dst.transform == src.transform
        assert (dst.height, dst.width) == (352, 349)
        assert dst.dtypes == ("uint8",)
        assert dst.nodata == 255
        assert dst.compression.name == "deflate"
        assert dst.block_shapes == [(256, 256)]
        assert dst.overviews(1) == [2]
        assert dst.colorinterp == (ColorInterp.palette,)
        colormap = dst.colormap(1)
        for cls in pixel_model.card.classes:
            assert colormap[cls.index] == (*cls.color, 255)
        assert colormap[255][3] == 0  # nodata transparent
        tags = dst.tags(1)
        assert json.loads(tags["CLASS_NAMES"]) == ["class 0", "class 1", "class 2", "class 3"]
        assert dst.tags()["CROSSEARTH_MODEL"] == "test-model"
        data = dst.read(1)
    counts = np.bincount(data.ravel(), minlength=4)
    assert dict(zip(result.class_names, counts[:4].tolist(), strict=True)) == result.class_pixels
    assert sum(result.class_pixels.values()) == 352 * 349
    # GDAL category names beside the file (PAM), for tools that read them
    from osgeo import gdal

    info = gdal.Info(str(out))  # (GetCategoryNames() returns None in Debian's GDAL 3.6 binding)
    assert all(f"{i}: class {i}" in info for i in range(4))
    assert not list(tmp_path.glob(".*partial*"))


def test_uint8_confidence_in_percent(tmp_path, pixel_model):
    conf = tmp_path / "conf.tif"
    segment(
        LANDSAT,
        tmp_path / "c.tif",
        pixel_model,
        SegmentOptions(bands=[1, 2, 3], confidence=conf, confidence_dtype="uint8"),
    )
    with rasterio.open(conf) as dst:
        values = dst.read(1)
        assert dst.dtypes == ("uint8",) and dst.nodata == 255
    assert values.min() >= 25 and values.max() <= 100  # 4 classes: top share >= 25 %


def test_more_than_255_classes_gives_uint16(tmp_path):
    card = make_card(num_classes=300, bands=("blue", "green", "red"))
    model = LoadedModel(card, seeded(PixelLinear(3, 300)))
    out = tmp_path / "many.tif"
    segment(LANDSAT, out, model, SegmentOptions(bands=[1, 2, 3], tile_size=128))
    with rasterio.open(out) as dst:
        assert dst.dtypes == ("uint16",) and dst.nodata == 65535
        assert dst.read(1).max() < 300


def test_nodata_pixels_stay_nodata_and_empty_tiles_are_skipped(tmp_path, pixel_model):
    with rasterio.open(LANDSAT) as src:
        data = src.read([1, 2, 3])
    data[:, :100, :] = 0  # a band of nodata across the top, covering whole tiles
    data[:, 200:210, 50:60] = 0
    path = write_raster(
        tmp_path / "holes.tif", data, nodata=0, descriptions=["blue", "green", "red"]
    )
    out = tmp_path / "classes.tif"
    result = segment(path, out, pixel_model, SegmentOptions(tile_size=64, overlap=16))
    with rasterio.open(out) as dst:
        classes = dst.read(1)
    assert (classes[:100] == 255).all()
    assert (classes[200:210, 50:60] == 255).all()
    assert (classes[100:200] != 255).all()
    assert result.nodata_pixels == 100 * 349 + 100
    assert result.tiles_skipped >= 6  # the top row of tiles holds only nodata


def test_alpha_band_mask_is_respected(tmp_path, pixel_model):
    with rasterio.open(LANDSAT) as src:
        data = src.read([3, 2, 1])
    alpha = np.full((1, *data.shape[1:]), 255, np.uint8)
    alpha[0, :, :40] = 0
    path = write_raster(
        tmp_path / "rgba.tif",
        np.concatenate([data, alpha]),
        colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha],
    )
    out = tmp_path / "classes.tif"
    result = segment(path, out, pixel_model)
    assert result.bands == [3, 2, 1]  # matched to the model's blue, green, red by colour
    with rasterio.open(out) as dst:
        classes = dst.read(1)
    assert (classes[:, :40] == 255).all() and (classes[:, 40:] != 255).all()


def test_raster_without_crs_works_with_warning(tmp_path, pixel_model):
    with rasterio.open(LANDSAT) as src:
        data = src.read([1, 2, 3])
    path = write_raster(
        tmp_path / "nocrs.tif", data, crs=None, descriptions=["blue", "green", "red"]
    )
    result = segment(path, tmp_path / "out.tif", pixel_model)
    assert any("no CRS" in w for w in result.warnings)
    with rasterio.open(tmp_path / "out.tif") as dst:
        assert dst.crs is None and dst.width == 349


def test_small_raster_is_reflection_padded(tmp_path, pixel_model):
    with rasterio.open(LANDSAT) as src:
        data = src.read([1, 2, 3], window=((0, 20), (0, 30)))
    path = write_raster(tmp_path / "small.tif", data, descriptions=["blue", "green", "red"])
    out = tmp_path / "out.tif"
    result = segment(path, out, pixel_model, SegmentOptions(tile_size=64))
    assert result.tiles == 1
    with rasterio.open(out) as dst:
        assert dst.shape == (20, 30) and (dst.read(1) != 255).all()


@pytest.mark.parametrize(
    ("dtype", "scale"), [("uint16", 40.0), ("int16", 30.0), ("float32", 1 / 255)]
)
def test_other_dtypes_are_stretched_to_the_model_range(tmp_path, pixel_model, dtype, scale):
    with rasterio.open(LANDSAT) as src:
        data = src.read([1, 2, 3]).astype(np.float64)
    path = write_raster(
        tmp_path / f"{dtype}.tif",
        (data * scale).astype(dtype),
        descriptions=["blue", "green", "red"],
    )
    reference = tmp_path / "ref.tif"
    stretched = tmp_path / "stretched.tif"
    result = segment(path, stretched, pixel_model)
    assert "2-98" in result.scaling
    # The same stretch expressed as explicit limits on the 8-bit original gives the same classes.
    with rasterio.open(LANDSAT) as src:
        raw = src.read([1, 2, 3]).astype(np.float64)
    lows, highs = np.percentile(raw.reshape(3, -1), [2, 98], axis=1)
    assert lows.std() > 0  # bands differ: per-band stretch is exercised
    manual = ((raw - lows[:, None, None]) / (highs - lows)[:, None, None] * 255).clip(0, 255)
    write_raster(
        tmp_path / "manual.tif", manual.astype(np.float32), descriptions=["blue", "green", "red"]
    )
    segment(tmp_path / "manual.tif", reference, pixel_model, SegmentOptions(scaling="none"))
    with rasterio.open(stretched) as a, rasterio.open(reference) as b:
        agreement = (a.read(1) == b.read(1)).mean()
    assert agreement > 0.97, agreement


def test_explicit_scaling_limits(tmp_path, pixel_model):
    with rasterio.open(LANDSAT) as src:
        data = src.read([1, 2, 3])
    path16 = write_raster(
        tmp_path / "x16.tif", data.astype(np.uint16) * 100, descriptions=["blue", "green", "red"]
    )
    segment(path16, tmp_path / "a.tif", pixel_model, SegmentOptions(scaling="0,25500"))
    segment(LANDSAT, tmp_path / "b.tif", pixel_model, SegmentOptions(bands=[1, 2, 3]))
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
