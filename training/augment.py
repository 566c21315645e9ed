"""Training-time augmentation of windows in the model's value range (before normalization).

Random resize comes from the sampler (windows are read at window / scale and resized here);
then flips and 90-degree rotations, photometric distortion as mmseg's PhotoMetricDistortion,
and Earth-Style Injection (CrossEarth): the window's per-band style (mean, standard deviation)
is moved towards a style drawn from a Gaussian fitted to Earth imagery statistics, blended
0.1 random / 0.9 own, with probability 0.1, and 64 px blocks (about 30 %) keep the original.
The paper re-styles through a pretrained style-transfer network that is not available offline;
here the style statistics are the bands' means and standard deviations and the re-styling is
their affine transfer (AdaIN in pixel space), fitted on the training imagery itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from training.config import IGNORE

RGB_NAMES = ("red", "green", "blue")


def resize_window(
    values: np.ndarray, valid: np.ndarray, labels: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear for values (antialiased when shrinking), nearest for validity and labels."""
    if values.shape[-1] == size:
        return values, valid, labels
    stacked = torch.from_numpy(np.stack([valid.astype(np.uint8), labels]))[None].float()
    nearest = F.interpolate(stacked, size=(size, size), mode="nearest")[0].numpy()
    return resize_bilinear(values, size), nearest[0] > 0.5, nearest[1].astype(np.uint8)


def resize_bilinear(values: np.ndarray, size: int) -> np.ndarray:
    """[C, S, S] -> [C, size, size], bilinear (antialiased when shrinking): band values, or a
    teacher's class probabilities (which stay probabilities: the weights sum to 1)."""
    if values.shape[-1] == size:
        return values
    return F.interpolate(
        torch.from_numpy(np.ascontiguousarray(values))[None],
        size=(size, size),
        mode="bilinear",
        align_corners=False,
        antialias=values.shape[-1] > size,
    )[0].numpy()


def flip_rotate(
    arrays: list[np.ndarray], rng: np.random.Generator, flips: bool, rotate90: bool
) -> list[np.ndarray]:
    """The same random flips / quarter turns for every array (last two axes)."""
    if flips and rng.random() < 0.5:
        arrays = [a[..., :, ::-1] for a in arrays]
    if flips and rng.random() < 0.5:
        arrays = [a[..., ::-1, :] for a in arrays]
    if rotate90:
        turns = int(rng.integers(4))
        arrays = [np.rot90(a, turns, axes=(-2, -1)) for a in arrays]
    return [np.ascontiguousarray(a) for a in arrays]


class PhotometricDistortion:
    """Brightness +-32, contrast 0.5-1.5 (before or after the colour steps), and for RGB
    bands saturation 0.5-1.5 and hue +-18/180 of a turn; each with probability 0.5, scaled to
    the model's value range (mmseg's defaults are for 0..255)."""

    def __init__(self, band_names: tuple[str, ...], value_range: tuple[float, float]) -> None:
        self.low, self.high = value_range
        self.span = self.high - self.low
        names = [b.lower() for b in band_names]
        self.rgb = [names.index(c) for c in RGB_NAMES] if set(RGB_NAMES) <= set(names) else None

    def __call__(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        values = values.copy()
        if rng.random() < 0.5:
            values += rng.uniform(-32, 32) * self.span / 255
        contrast_first = rng.random() < 0.5
        if contrast_first and rng.random() < 0.5:
            values = self._contrast(values, rng)
        if self.rgb is not None:
            values = self._colour(values, rng)
        if not contrast_first and rng.random() < 0.5:
            values = self._contrast(values, rng)
        return np.clip(values, self.low, self.high)

    def _contrast(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return (values - self.low) * rng.uniform(0.5, 1.5) + self.low

    def _colour(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from torchvision.transforms.v2 import functional as TF

        saturation = rng.uniform(0.5, 1.5) if rng.random() < 0.5 else None
        hue = rng.uniform(-18, 18) / 180 if rng.random() < 0.5 else None
        if saturation is None and hue is None:
            return values
        assert self.rgb is not None
        rgb = torch.from_numpy(np.clip((values[self.rgb] - self.low) / self.span, 0, 1))
        if saturation is not None:
            rgb = TF.adjust_saturation(rgb, saturation)
        if hue is not None:
            rgb = TF.adjust_hue(rgb, hue)
        values[self.rgb] = rgb.numpy() * self.span + self.low
        return values


@dataclass
class EarthStyle:
    """Gaussian over window styles: per band mean and standard deviation, [2C] mean and
    [2C, 2C] covariance."""

    mean: np.ndarray
    cov: np.ndarray
    value_range: tuple[float, float]

    @staticmethod
    def window_style(values: np.ndarray, valid: np.ndarray) -> np.ndarray | None:
        if valid.sum() < 16:
            return None
        pixels = values[:, valid]
        return np.concatenate([pixels.mean(1), pixels.std(1)])

    @classmethod
    def fit(cls, styles: list[np.ndarray], value_range: tuple[float, float]) -> EarthStyle:
        stack = np.stack(styles).astype(np.float64)
        cov = np.cov(stack, rowvar=False) if len(stack) > 1 else np.zeros((stack.shape[1],) * 2)
        cov = (
            np.atleast_2d(cov)
            + np.eye(stack.shape[1]) * 1e-6 * (value_range[1] - value_range[0]) ** 2
        )
        return cls(stack.mean(0), cov, value_range)

    def apply(
        self,
        values: np.ndarray,
        valid: np.ndarray,
        rng: np.random.Generator,
        random_weight: float = 0.1,
        keep: float = 0.3,
        block: int = 64,
    ) -> np.ndarray:
        own = self.window_style(values, valid)
        if own is None:
            return values
        bands = values.shape[0]
        drawn = rng.multivariate_normal(self.mean, self.cov)
        eps = 1e-3 * (self.value_range[1] - self.value_range[0])
        target = random_weight * drawn + (1 - random_weight) * own
        own_mean, own_std = own[:bands, None, None], np.maximum(own[bands:], eps)[:, None, None]
        target_mean = target[:bands, None, None]
        target_std = np.maximum(target[bands:], eps)[:, None, None]
        styled = (values - own_mean) / own_std * target_std + target_mean
        height, width = values.shape[-2:]
        grid = rng.random((-(-height // block), -(-width // block))) < keep
        keep_mask = np.repeat(np.repeat(grid, block, 0), block, 1)[:height, :width]
        out = np.where(keep_mask[None], values, styled)
        return np.clip(out, *self.value_range).astype(np.float32)


def ignore_invalid(labels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    labels = labels.copy()
    labels[~valid] = IGNORE
    return labels
