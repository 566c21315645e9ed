"""The Rein variant of the Mask2Former head.

Mask2Former's learned query embeddings are replaced by the backbone's Rein queries: they are the
query position of every decoder layer, and `querys2feat(queries)` is the initial query content.
The masked-attention decoder cycles through the pixel decoder's maps (strides 32, 16, 8); each
layer's cross-attention only sees where the previous layer's mask prediction is positive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.crossearth.config import CrossEarthConfig
from engine.crossearth.pixel_decoder import FFN, MSDeformAttnPixelDecoder
from engine.crossearth.positional import sine_positional_encoding


class Attention(nn.Module):
    """query + MHA(query + query_pos, key + key_pos, value) — mmcv's MultiheadAttention wrapper
    (parameters under `attn`, as in the checkpoints)."""

    def __init__(self, dims: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dims, heads, batch_first=True)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        query_pos: torch.Tensor,
        key_pos: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention with positional encodings added to query and key, plus the residual."""
        out = self.attn(
            query + query_pos, key + key_pos, value, attn_mask=attn_mask, need_weights=False
        )[0]
        return query + out


class DecoderLayer(nn.Module):
    """Masked cross-attention -> norm -> self-attention -> norm -> FFN -> norm."""

    def __init__(self, dims: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.self_attn = Attention(dims, heads)
        self.cross_attn = Attention(dims, heads)
        self.ffn = FFN(dims, ffn)
        self.norms = nn.ModuleList(nn.LayerNorm(dims) for _ in range(3))

    def forward(
        self,
        query: torch.Tensor,
        query_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        attn_mask: torch.Tensor,
    ) -> torch.Tensor:
        """A Mask2Former decoder layer: masked cross-attention, self-attention, FFN (post-norm)."""
        query = self.norms[0](
            self.cross_attn(query, memory, memory, query_pos, memory_pos, attn_mask)
        )
        query = self.norms[1](self.self_attn(query, query, query, query_pos, query_pos))
        return self.norms[2](self.ffn(query))


class TransformerDecoder(nn.Module):
    def __init__(self, dims: int, heads: int, ffn: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(dims, heads, ffn) for _ in range(layers))
        self.post_norm = nn.LayerNorm(dims)


class ReinMask2FormerHead(nn.Module):
    def __init__(self, config: CrossEarthConfig) -> None:
        super().__init__()
        head = config.head
        width = head.feat_channels
        self.num_levels = head.num_levels
        self.num_heads = head.decoder_heads
        self.positional_feats = head.positional_feats
        self.pixel_decoder = MSDeformAttnPixelDecoder(config.backbone.embed_dim, head)
        self.transformer_decoder = TransformerDecoder(
            width, head.decoder_heads, head.decoder_ffn, head.decoder_layers
        )
        self.level_embed = nn.Embedding(head.num_levels, width)
        self.cls_embed = nn.Linear(width, config.num_classes + 1)
        self.mask_embed = nn.Sequential(
            nn.Linear(width, width),
            nn.ReLU(inplace=True),
            nn.Linear(width, width),
            nn.ReLU(inplace=True),
            nn.Linear(width, head.out_channels),
        )
        self.querys2feat = nn.Linear(width, width)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialises as mmdet does; skipped on the meta device, where weights load later."""
        if self.querys2feat.weight.is_meta:
            return
        for parameter in self.transformer_decoder.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_normal_(parameter)

    def _predict(
        self, query: torch.Tensor, mask_features: torch.Tensor, attn_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class logits [B, Q, K+1], mask logits [B, Q, h, w] and the next layer's attention
        mask [B * heads, Q, attn h * w] (True = not attended)."""
        decoded = self.transformer_decoder.post_norm(query)
        cls_logits = self.cls_embed(decoded)
        mask_logits = torch.einsum("bqc,bchw->bqhw", self.mask_embed(decoded), mask_features)
        attn = F.interpolate(mask_logits, attn_size, mode="bilinear", align_corners=False)
        attn = attn.flatten(2).detach().sigmoid() < 0.5
        # A query whose mask is empty attends everywhere rather than nowhere.
        attn = attn & ~attn.all(-1, keepdim=True)
        attn = attn.repeat_interleave(self.num_heads, dim=0)
        return cls_logits, mask_logits, attn

    def forward(
        self, feats: list[torch.Tensor], queries: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """feats at strides 4/8/16/32, queries [Q, C]. Returns per-layer class and mask logits,
        the first entry before decoder layer 0 (deep supervision uses all of them)."""
        batch = feats[0].shape[0]
        mask_features, memories = self.pixel_decoder(feats)
        inputs, positions, sizes = [], [], []
        for i, memory in enumerate(memories):
            height, width = memory.shape[-2:]
            inputs.append(memory.flatten(2).transpose(1, 2) + self.level_embed.weight[i])
            pos = sine_positional_encoding(
                batch, height, width, self.positional_feats, memory.device
            )
            positions.append(pos.flatten(2).transpose(1, 2).to(memory.dtype))
            sizes.append((int(height), int(width)))
        query_pos = queries.expand(batch, -1, -1)
        query = self.querys2feat(query_pos)
        cls_logits, mask_logits, attn = self._predict(query, mask_features, sizes[0])
        all_cls, all_masks = [cls_logits], [mask_logits]
        for i, layer in enumerate(self.transformer_decoder.layers):
            level = i % self.num_levels
            query = layer(query, query_pos, inputs[level], positions[level], attn)
            cls_logits, mask_logits, attn = self._predict(
                query, mask_features, sizes[(i + 1) % self.num_levels]
            )
            all_cls.append(cls_logits)
            all_masks.append(mask_logits)
        return all_cls, all_masks
