"""Normalized 2-D sine positional encoding (the DETR / Mask2Former variant)."""

from __future__ import annotations

import math

import torch


def sine_positional_encoding(
    batch: int,
    height: int,
    width: int,
    num_feats: int,
    device: torch.device,
    temperature: float = 10000.0,
    scale: float = 2 * math.pi,
    eps: float = 1e-6,
) -> torch.Tensor:
    """[B, 2 * num_feats, H, W]: y features then x features, sin/cos interleaved per frequency.

    Positions are 1-based cumulative counts over an unpadded map, normalized to (0, 2 pi].
    """
    ones = torch.ones(1, height, width, device=device, dtype=torch.float32)
    y_embed = ones.cumsum(1)
    x_embed = ones.cumsum(2)
    y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    pos_x = x_embed[..., None] / dim_t
    pos_y = y_embed[..., None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
    pos = torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)
    return pos.expand(batch, -1, -1, -1)
