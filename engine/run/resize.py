"""Resampling [N, C, H, W] arrays with numpy, equal to torch's `F.interpolate` within float
rounding: "area" (adaptive average pooling, used when coarsening) and "bicubic" (a = -0.75,
align_corners=False, used when refining), the two modes `ResampledModel` uses. The ONNX
runtimes resample tiles to the model's GSD with this, so a run without PyTorch processes a
raster of another resolution exactly as the PyTorch runtime does.

Both modes are separable linear maps: out = Ry @ x @ Rx^T with one small weight matrix per
axis, built once per (source size, target size).
"""

from __future__ import annotations

import functools
import math

import numpy as np

CUBIC_A = -0.75  # torch's (and OpenCV's) bicubic convolution constant


def _cubic_weights(t: float) -> tuple[float, float, float, float]:
    """Weights of the samples at floor-1, floor, floor+1, floor+2 for a fraction `t`."""
    a = CUBIC_A

    def near(x: float) -> float:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: float) -> float:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return far(t + 1), near(t), near(1 - t), far(2 - t)


@functools.lru_cache(maxsize=64)
def resize_matrix(source: int, target: int, mode: str) -> np.ndarray:
    """The [target, source] float32 matrix that resamples one axis of `source` samples to
    `target` samples ("area" or "bicubic", as torch computes them)."""
    if source < 1 or target < 1:
        raise ValueError(f"sizes must be positive, got {source} -> {target}")
    matrix = np.zeros((target, source), np.float64)
    if mode == "area":
        for i in range(target):
            start = (i * source) // target
            end = -((-(i + 1) * source) // target)  # ceil
            matrix[i, start:end] = 1.0 / (end - start)
    elif mode == "bicubic":
        scale = source / target
        for i in range(target):
            position = scale * (i + 0.5) - 0.5  # align_corners=False; not clamped for cubic
            floor = math.floor(position)
            for offset, weight in zip(range(-1, 3), _cubic_weights(position - floor), strict=True):
                matrix[i, min(max(floor + offset, 0), source - 1)] += weight
    else:
        raise ValueError(f"unknown resampling mode '{mode}'; use area or bicubic")
    return matrix.astype(np.float32)


def resize(x: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    """[N, C, H, W] float32 resampled to [N, C, height, width] ("area" or "bicubic")."""
    if x.shape[-2:] == (height, width):
        return x
    rows = resize_matrix(x.shape[-2], height, mode)
    cols = resize_matrix(x.shape[-1], width, mode)
    return np.ascontiguousarray(np.matmul(np.matmul(rows, x), cols.T), dtype=np.float32)


def resize_like_resampled_model(x: np.ndarray, size: int) -> np.ndarray:
    """A square tile batch to `size` pixels as `ResampledModel` does it: area average when
    coarsening, bicubic when refining."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    mode = "area" if size < x.shape[-1] else "bicubic"
    return resize(x, size, size, mode)
