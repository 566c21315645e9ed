"""Running a network at a finer grid than the source raster (a card's input_scale)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ScaledModel(nn.Module):
    """Tiles are upsampled by `scale` (bilinear) before the network and its class scores are
    averaged over each scale x scale block back onto the source grid, so callers see the usual
    [B, C, H, W] -> [B, K, H, W] contract in source pixels."""

    def __init__(self, network: nn.Module, scale: int) -> None:
        super().__init__()
        self.network = network
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1:
            return self.network(x)
        upsampled = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return F.avg_pool2d(self.network(upsampled), self.scale)
