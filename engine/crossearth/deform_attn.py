"""Multi-scale deformable attention (Deformable DETR) in plain PyTorch, no compiled extension.

Each query samples `num_points` locations per head and level around its reference point with
bilinear interpolation (grid_sample, zero padding outside the map, align_corners=False) and
sums them with softmax weights over levels x points. Numerically the same as mmcv's
`multi_scale_deformable_attn_pytorch`; it runs on any device and under autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def multi_scale_deformable_attention(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """value [B, sum(H*W), heads, C]; sampling_locations [B, Q, heads, levels, points, 2] in
    0..1 (x, y); attention_weights [B, Q, heads, levels, points]. Returns [B, Q, heads * C]."""
    batch, _, heads, channels = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    values = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2 * sampling_locations - 1
    # Sampling grids for all levels in one layout: [B * heads, Q, points, 2] per level.
    grids = grids.permute(0, 2, 3, 1, 4, 5).flatten(0, 1)
    weights = attention_weights.permute(0, 2, 1, 3, 4).reshape(batch * heads, 1, queries, -1)
    output = None
    for level, (height, width) in enumerate(spatial_shapes):
        level_value = (
            values[level].permute(0, 2, 3, 1).reshape(batch * heads, channels, height, width)
        )
        sampled = F.grid_sample(
            level_value,
            grids[:, level],
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )  # [B * heads, C, Q, points]
        level_weights = weights[..., level * points : (level + 1) * points]
        contribution = (sampled * level_weights).sum(-1)
        output = contribution if output is None else output + contribution
    assert output is not None
    return output.view(batch, heads * channels, queries).transpose(1, 2)


class MultiScaleDeformableAttention(nn.Module):
    """Self-attention of the pixel decoder's encoder; parameter names as in mmcv."""

    def __init__(self, embed_dims: int, num_heads: int, num_levels: int, num_points: int) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f"embed_dims {embed_dims} not divisible by num_heads {num_heads}")
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialises as Deformable DETR does; skipped on the meta device (weights load later)."""
        # Deformable DETR's init: offsets start on rings around the reference point, one
        # direction per head, so untrained heads already look in different places.
        if self.sampling_offsets.weight.is_meta:
            return
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (
            2.0 * math.pi / self.num_heads
        )
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.num_heads, 1, 1, 2)
        grid = grid.repeat(1, self.num_levels, self.num_points, 1)
        grid *= torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for linear in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(
        self,
        query: torch.Tensor,
        query_pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        """query, query_pos [B, Q, C] (the query also serves as value, as in the encoder);
        reference_points [B, Q, levels, 2] in 0..1. Returns query + attention output."""
        batch, queries, _ = query.shape
        value = self.value_proj(query).view(batch, queries, self.num_heads, -1)
        positioned = query + query_pos
        offsets = self.sampling_offsets(positioned).view(
            batch, queries, self.num_heads, self.num_levels, self.num_points, 2
        )
        weights = self.attention_weights(positioned).view(
            batch, queries, self.num_heads, self.num_levels * self.num_points
        )
        weights = weights.softmax(-1).view(
            batch, queries, self.num_heads, self.num_levels, self.num_points
        )
        # Offsets are in pixels of each level: normalize by that level's (width, height).
        normalizer = query.new_tensor([[w, h] for h, w in spatial_shapes])
        locations = (
            reference_points[:, :, None, :, None, :]
            + offsets / normalizer[None, None, None, :, None, :]
        )
        output = multi_scale_deformable_attention(value, spatial_shapes, locations, weights)
        return query + self.output_proj(output)
