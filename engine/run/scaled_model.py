"""Running a network at a finer grid than the source raster (a card's input_scale)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ScaledModel(nn.Module):
    """Tiles are upsampled by `scale` (bilinear) before the network, and its class scores come
    back on the source grid, so callers see the usual [B, C, H, W] -> [B, K, H, W] contract in
    source pixels. A network with `scores(x, size)` (CrossEarth) makes them there directly;
    the scores of any other are averaged over each scale x scale block."""

    def __init__(self, network: nn.Module, scale: int) -> None:
        super().__init__()
        self.network = network
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores on the source grid for source-resolution tiles."""
        if self.scale == 1:
            return self.network(x)
        upsampled = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        scores_at = getattr(self.network, "scores", None)
        if callable(scores_at):
            return scores_at(upsampled, (x.shape[-2], x.shape[-1]))
        return F.avg_pool2d(self.network(upsampled), self.scale)


class ResampledModel(nn.Module):
    """Runs a network at another ground sample distance than the raster's: source tiles of any
    size are resampled to `model_tile` pixels (area average when coarsening, bilinear when
    refining), and the scores are resampled back to the source tile, so blending and class
    decisions stay on the source grid."""

    def __init__(self, network: nn.Module, model_tile: int) -> None:
        super().__init__()
        self.network = network
        self.model_tile = model_tile

    @staticmethod
    def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
        if x.shape[-1] == size and x.shape[-2] == size:
            return x
        if size < x.shape[-1]:
            return F.interpolate(x, size=(size, size), mode="area")
        return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores on the source tile's grid, the network run at `model_tile` pixels."""
        source = x.shape[-1]
        # contiguous: resampling a strided view is a slow copy on CPU
        scores = self.network(self._resize(x, self.model_tile).contiguous())
        return self._resize(scores, source)
