"""LoRA-Reins: learnable tokens that refine every backbone block's patch features and become the
head's object queries.

Per layer l the tokens are T_l = A_l @ B_l (low-rank). Patch features f attend to all tokens;
token 0 only takes part in the softmax (it absorbs attention), the rest carry features:
    attn = softmax(f T_l^T / sqrt(C));  delta = attn[:, :, 1:] @ token2feat(T_l[1:])
    f <- f + scale * delta_f(delta + f)
The cls token passes unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from engine.crossearth.config import ReinsConfig


class LoRAReins(nn.Module):
    def __init__(
        self, config: ReinsConfig, num_layers: int, embed_dims: int, patch_size: int
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.embed_dims = embed_dims
        self.patch_size = patch_size
        self.token_length = config.token_length
        self.scale_init = config.scale_init
        self.scale = nn.Parameter(torch.tensor(float(config.scale_init)))
        self.learnable_tokens_a = nn.Parameter(
            torch.empty(num_layers, config.token_length, config.lora_dim)
        )
        self.learnable_tokens_b = nn.Parameter(torch.empty(num_layers, config.lora_dim, embed_dims))
        self.mlp_token2feat = nn.Linear(embed_dims, embed_dims)
        self.mlp_delta_f = nn.Linear(embed_dims, embed_dims)
        self.transform = nn.Linear(embed_dims, config.query_dims)
        self.merge = nn.Linear(config.query_dims * 3, config.query_dims)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialises as Rein does; skipped on the meta device, where weights load later."""
        if self.scale.is_meta:
            return
        self.scale.fill_(self.scale_init)
        # Rein's init: uniform in +-sqrt(6 / (3 * patch^2 + sqrt(C * r))) for both factors.
        lora_dim = self.learnable_tokens_a.shape[-1]
        bound = math.sqrt(
            6.0 / float(3 * self.patch_size * self.patch_size + (self.embed_dims * lora_dim) ** 0.5)
        )
        nn.init.uniform_(self.learnable_tokens_a, -bound, bound)
        nn.init.uniform_(self.learnable_tokens_b, -bound, bound)
        for linear in (self.mlp_delta_f, self.mlp_token2feat):
            nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5))

    def tokens(self) -> torch.Tensor:
        """All layers' tokens A @ B: [layers, tokens, C]."""
        return self.learnable_tokens_a @ self.learnable_tokens_b

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """x [B, 1 + N, C] (cls token first); tokens [T, C] of this layer."""
        cls_token, feats = x[:, :1], x[:, 1:]
        attn = (feats @ tokens.transpose(0, 1)) * (self.embed_dims**-0.5)
        attn = attn.softmax(-1)
        delta = attn[..., 1:] @ self.mlp_token2feat(tokens[1:])
        delta = self.mlp_delta_f(delta + feats)
        return torch.cat([cls_token, feats + delta * self.scale], dim=1)

    def queries(self, tokens: torch.Tensor) -> torch.Tensor:
        """The head's queries [T, query_dims] from all layers' tokens [L, T, C]: per token and
        channel the max, mean and last-layer value over layers, interleaved, then merged."""
        per_layer = self.transform(tokens).permute(1, 2, 0)  # [T, Q, L]
        summary = torch.stack(
            [per_layer.max(-1).values, per_layer.mean(-1), per_layer[..., -1]], dim=-1
        )
        return self.merge(summary.flatten(-2))
