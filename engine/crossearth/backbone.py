"""DINOv2 ViT (patch 16) with a LoRA-Reins update after every block, built from timm blocks.

Parameter names follow DINOv2/timm, so released checkpoints load by name. `norm` and
`mask_token` are part of DINOv2 checkpoints: `norm` is never applied to the outputs (the
official backbone returns pre-norm features); `mask_token` replaces masked patches when the
backbone is given a patch mask (masked-image training).
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

from engine.crossearth.config import CrossEarthConfig
from engine.crossearth.reins import LoRAReins

LayerNorm6 = partial(nn.LayerNorm, eps=1e-6)


def interpolate_pos_encoding(
    pos_embed: torch.Tensor, height: int, width: int, patch_size: int
) -> torch.Tensor:
    """Position embedding for an input of height x width pixels, as DINOv2 computes it.

    Unchanged for a square input with the configured patch count. Otherwise the patch grid is
    resized in fp32 by bicubic interpolation with scale factors (n + 0.1) / grid — not to a
    target size, and without antialiasing — which is what the released models saw.
    """
    patches = (height // patch_size) * (width // patch_size)
    grid_tokens = pos_embed.shape[1] - 1
    if patches == grid_tokens and height == width:
        return pos_embed
    dtype = pos_embed.dtype
    pos = pos_embed.float()
    cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
    dim = pos.shape[-1]
    grid = int(math.sqrt(grid_tokens))
    rows, cols = height // patch_size, width // patch_size
    patch_pos = F.interpolate(
        patch_pos.reshape(1, grid, grid, dim).permute(0, 3, 1, 2),
        scale_factor=((rows + 0.1) / grid, (cols + 0.1) / grid),
        mode="bicubic",
        align_corners=False,
        antialias=False,
    )
    if patch_pos.shape[-2:] != (rows, cols):
        raise RuntimeError(
            f"position grid resized to {tuple(patch_pos.shape[-2:])}, expected {(rows, cols)}"
        )
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)
    return torch.cat((cls_pos, patch_pos), dim=1).to(dtype)


class ReinsDinoVisionTransformer(nn.Module):
    def __init__(self, config: CrossEarthConfig) -> None:
        super().__init__()
        cfg = config.backbone
        self.patch_size = cfg.patch_size
        self.embed_dim = cfg.embed_dim
        self.out_indices = tuple(cfg.out_indices)
        self.patch_embed = PatchEmbed(
            img_size=cfg.img_size,
            patch_size=cfg.patch_size,
            in_chans=cfg.in_chans,
            embed_dim=cfg.embed_dim,
            strict_img_size=False,
        )
        grid_tokens = (cfg.img_size // cfg.patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid_tokens + 1, cfg.embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, cfg.embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                dim=cfg.embed_dim,
                num_heads=cfg.num_heads,
                mlp_ratio=cfg.mlp_ratio,
                qkv_bias=True,
                proj_bias=True,
                init_values=cfg.layerscale_init,
                # timm types it as a class but only calls it (its own models pass partials).
                norm_layer=LayerNorm6,  # type: ignore[arg-type]
                act_layer=nn.GELU,
            )
            for _ in range(cfg.depth)
        )
        self.norm = LayerNorm6(cfg.embed_dim)
        self.reins = LoRAReins(config.reins, cfg.depth, cfg.embed_dim, cfg.patch_size)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialises as DINOv2 does; skipped on the meta device, where weights load later."""
        if self.pos_embed.is_meta:
            return
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def prepare_tokens(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """cls + patch tokens + position embedding: [B, 1 + N, C]. `masks` [B, N] (True =
        masked) replaces those patch embeddings by the mask token."""
        height, width = x.shape[-2:]
        tokens = self.patch_embed(x)
        if masks is not None:
            tokens = torch.where(masks[..., None], self.mask_token.to(tokens.dtype), tokens)
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        return tokens + interpolate_pos_encoding(self.pos_embed, height, width, self.patch_size)

    def forward(
        self, x: torch.Tensor, masks: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Feature maps at strides 4, 8, 16, 32 and the head's queries [T, query_dims]."""
        batch, _, height, width = x.shape
        rows, cols = height // self.patch_size, width // self.patch_size
        tokens = self.prepare_tokens(x, masks)
        rein_tokens = self.reins.tokens()
        maps = []
        for index, block in enumerate(self.blocks):
            tokens = self.reins(block(tokens), rein_tokens[index])
            if index in self.out_indices:
                # contiguous: resampling a transposed view is a slow strided copy on CPU
                maps.append(
                    tokens[:, 1:].transpose(1, 2).reshape(batch, -1, rows, cols).contiguous()
                )
        scales = (4.0, 2.0, None, 0.5)
        feats = [
            m
            if s is None
            else F.interpolate(m, scale_factor=s, mode="bilinear", align_corners=False)
            for m, s in zip(maps, scales, strict=True)
        ]
        return feats, self.reins.queries(rein_tokens)
