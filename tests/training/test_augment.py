"""Augmentations: geometry stays consistent between image and labels, photometric changes stay
in range, Earth-Style Injection moves the style as the paper describes."""

import numpy as np

from training.augment import EarthStyle, PhotometricDistortion, flip_rotate, resize_window

from .conftest import IMAGE


def landsat_window():
    import rasterio

    with rasterio.open(IMAGE) as src:
        values = src.read([3, 2, 1], window=((200, 328), (200, 328))).astype(np.float32)
    return values


def test_flips_and_rotations_move_labels_with_the_image():
    rng = np.random.default_rng(0)
    values = landsat_window()
    labels = (values[0] > np.median(values[0])).astype(np.uint8)
    for _ in range(20):
        v, lab = flip_rotate([values, labels], rng, True, True)
        np.testing.assert_array_equal(lab, (v[0] > np.median(values[0])).astype(np.uint8))


def test_resize_keeps_labels_categorical():
    values = landsat_window()
    labels = np.zeros((128, 128), np.uint8)
    labels[:, 64:] = 4
    valid = np.ones((128, 128), bool)
    v, ok, lab = resize_window(values, valid, labels, 96)
    assert v.shape == (3, 96, 96) and ok.all()
    assert set(np.unique(lab)) == {0, 4}


def test_photometric_distortion_stays_in_range_and_changes_rgb_colour():
    values = landsat_window()
    distortion = PhotometricDistortion(("red", "green", "blue"), (0.0, 255.0))
    rng = np.random.default_rng(1)
    outputs = [distortion(values, rng) for _ in range(30)]
    assert all(o.min() >= 0 and o.max() <= 255 for o in outputs)
    ratios = [o[0].mean() / max(o[2].mean(), 1e-3) for o in outputs]
    assert np.std(ratios) > 0.01  # hue/saturation changed the red/blue balance in some draws
    # Bands without colour meaning get brightness and contrast only.
    multispectral = PhotometricDistortion(("nir", "swir1", "swir2"), (0.0, 255.0))
    assert multispectral.rgb is None


def test_earth_style_injection_blends_styles_and_keeps_blocks():
    values = landsat_window()
    valid = np.ones(values.shape[1:], bool)
    # A style distribution far from this window's: very bright, high contrast.
    mean = np.array([200.0, 200.0, 200.0, 60.0, 60.0, 60.0])
    style = EarthStyle(mean, np.eye(6) * 1e-6, (0.0, 255.0))
    out = style.apply(
        values, valid, np.random.default_rng(0), random_weight=0.1, keep=0.3, block=64
    )
    own = EarthStyle.window_style(values, valid)
    unchanged = np.all(out == values, axis=0)
    # 64 px blocks: each of the 4 blocks is either original or restyled as a whole.
    for r in (0, 64):
        for c in (0, 64):
            block = unchanged[r : r + 64, c : c + 64]
            assert block.all() or not block.any()
    restyled = ~unchanged
    assert restyled.any()
    target_mean = 0.1 * mean[:3] + 0.9 * own[:3]
    # Restyled pixels follow the blended target style, not the drawn one (0.1 / 0.9).
    pixels = out[:, restyled]
    moved = pixels.mean(1) - values[:, restyled].mean(1)
    expected = target_mean - own[:3]
    np.testing.assert_allclose(moved, expected, rtol=0.25, atol=1.0)


def test_earth_style_keeps_about_thirty_percent_of_blocks():
    values = np.random.default_rng(2).uniform(0, 255, (3, 640, 640)).astype(np.float32)
    valid = np.ones((640, 640), bool)
    style = EarthStyle(np.full(6, 100.0), np.eye(6) * 100.0, (0.0, 255.0))
    rng = np.random.default_rng(3)
    kept = [np.all(style.apply(values, valid, rng) == values, axis=0).mean() for _ in range(20)]
    assert 0.2 < np.mean(kept) < 0.4
