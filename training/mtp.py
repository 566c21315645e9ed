"""Multi-Task Training (CrossEarth): masked-image reconstruction beside segmentation.

About 10 % of the 64 px blocks of each training window are masked: their patch embeddings are
replaced by the backbone's learnable mask token. A light head per feature level (a 1x1
convolution, upsampled to the window) reconstructs the input bands, and the L1 error on the
masked pixels, averaged over levels, is added to the segmentation loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ReconstructionHeads(nn.Module):
    def __init__(self, embed_dim: int, out_channels: int, levels: int = 4) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Conv2d(embed_dim, out_channels, 1) for _ in range(levels))

    def forward(self, feats: list[torch.Tensor], size: tuple[int, int]) -> list[torch.Tensor]:
        return [
            F.interpolate(head(feat), size=size, mode="bilinear", align_corners=False)
            for head, feat in zip(self.heads, feats, strict=True)
        ]


def block_masks(
    batch: int,
    height: int,
    width: int,
    patch: int,
    block: int,
    ratio: float,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(patch mask [B, patches] for the backbone, pixel mask [B, 1, H, W]) with `ratio` of the
    block x block squares masked (at least one per image)."""
    per_block = max(1, block // patch)
    rows, cols = height // patch, width // patch
    grid_rows, grid_cols = -(-rows // per_block), -(-cols // per_block)
    count = max(1, round(ratio * grid_rows * grid_cols))
    scores = torch.rand(batch, grid_rows * grid_cols, generator=generator)
    chosen = scores.argsort(dim=1)[:, :count]
    grid = torch.zeros(batch, grid_rows * grid_cols, dtype=torch.bool)
    grid.scatter_(1, chosen, True)
    grid = grid.view(batch, grid_rows, grid_cols)
    patches = grid.repeat_interleave(per_block, 1).repeat_interleave(per_block, 2)[:, :rows, :cols]
    pixels = patches.repeat_interleave(patch, 1).repeat_interleave(patch, 2)[:, None]
    return patches.flatten(1), pixels


def reconstruction_loss(
    rebuilt: list[torch.Tensor], target: torch.Tensor, pixel_mask: torch.Tensor
) -> torch.Tensor:
    weight = pixel_mask.float()
    count = (weight.sum() * target.shape[1]).clamp(min=1.0)
    losses = [((r.float() - target).abs() * weight).sum() / count for r in rebuilt]
    return torch.stack(losses).mean()
