"""The CrossEarth segmenter: backbone + head, and the semantic scores the engine blends."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.crossearth.backbone import ReinsDinoVisionTransformer
from engine.crossearth.config import CrossEarthConfig
from engine.crossearth.head import ReinMask2FormerHead


def semantic_scores(
    cls_logits: torch.Tensor, mask_logits: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """Per-class scores [B, K, *size]: class probabilities (without "no object") weighted by the
    query masks resampled to `size`, summed over queries (Mask2Former semantic inference)."""
    masks = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False).sigmoid()
    probabilities = cls_logits.softmax(-1)[..., :-1]
    return torch.einsum("bqc,bqhw->bchw", probabilities, masks)


class CrossEarth(nn.Module):
    """forward: normalized images [B, C, H, W] (H, W multiples of the patch size) -> scores
    [B, K, H, W], equal to the official `inference` in whole-image mode."""

    def __init__(self, config: CrossEarthConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = ReinsDinoVisionTransformer(config)
        self.decode_head = ReinMask2FormerHead(config)

    @property
    def size_multiple(self) -> int:
        """What tile sides must be a multiple of: the backbone's patch size."""
        return self.config.backbone.patch_size

    def predictions(
        self, x: torch.Tensor, masks: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per decoder layer: class logits [B, Q, K+1] and stride-4 mask logits [B, Q, h, w]."""
        self._check_size(x)
        feats, queries = self.backbone(x, masks)
        return self.decode_head(feats, queries)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-class scores [B, K, H, W] for images [B, C, H, W] (the engine's model contract)."""
        return self.scores(x, (x.shape[-2], x.shape[-1]))

    def scores(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Per-class scores [B, K, *size] for images [B, C, H, W]: the query masks are resampled
        straight to the grid the caller needs (an upsampled input's source grid), instead of to
        the input and back."""
        all_cls, all_masks = self.predictions(x)
        return semantic_scores(all_cls[-1], all_masks[-1], size)

    def _check_size(self, x: torch.Tensor) -> None:
        patch = self.size_multiple
        height, width = x.shape[-2:]
        if height % patch or width % patch:
            raise ValueError(
                f"input {height}x{width} is not a multiple of the patch size {patch}; "
                f"pad or crop to a multiple of {patch}"
            )
        # The smallest map is stride 32: half the patch grid. Fewer than 2 patches per side
        # would leave it empty.
        if height < 2 * patch or width < 2 * patch:
            raise ValueError(f"input {height}x{width} is too small: at least {2 * patch} px a side")
