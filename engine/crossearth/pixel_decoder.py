"""Mask2Former's multi-scale deformable-attention pixel decoder (mmdet's MSDeformAttnPixelDecoder).

The three coarsest backbone maps (strides 32, 16, 8) are projected to the head width and refined
together by deformable-attention encoder layers; the stride-4 map joins through a lateral
connection (FPN style) and gives the per-pixel mask features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.crossearth.config import HeadConfig
from engine.crossearth.deform_attn import MultiScaleDeformableAttention
from engine.crossearth.positional import sine_positional_encoding


class ConvNorm(nn.Sequential):
    """Conv -> GroupNorm (-> ReLU): mmcv's ConvModule with keys `conv` and `gn`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        groups: int,
        bias: bool,
        relu: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias
        )
        self.gn = nn.GroupNorm(groups, out_channels)
        if relu:
            self.activate = nn.ReLU(inplace=True)


class FFN(nn.Module):
    """x + Linear(ReLU(Linear(x))), parameter names as mmcv's FFN (layers.0.0, layers.1)."""

    def __init__(self, dims: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(dims, hidden), nn.ReLU(inplace=True), nn.Dropout(0.0)),
            nn.Linear(hidden, dims),
            nn.Dropout(0.0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The feed-forward block with its residual."""
        return x + self.layers(x)


class EncoderLayer(nn.Module):
    """Deformable self-attention -> LayerNorm -> FFN -> LayerNorm (post-norm)."""

    def __init__(self, dims: int, heads: int, levels: int, points: int, ffn: int) -> None:
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(dims, heads, levels, points)
        self.ffn = FFN(dims, ffn)
        self.norms = nn.ModuleList([nn.LayerNorm(dims), nn.LayerNorm(dims)])

    def forward(
        self,
        query: torch.Tensor,
        query_pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        """An encoder layer: deformable self-attention over all levels, then the FFN (post-norm)."""
        query = self.norms[0](self.self_attn(query, query_pos, reference_points, spatial_shapes))
        return self.norms[1](self.ffn(query))


class Encoder(nn.Module):
    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(
                config.feat_channels,
                config.pixel_decoder_heads,
                config.num_levels,
                config.pixel_decoder_points,
                config.pixel_decoder_ffn,
            )
            for _ in range(config.pixel_decoder_layers)
        )

    def forward(
        self, query: torch.Tensor, query_pos: torch.Tensor, spatial_shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        """The flattened multi-level features after every encoder layer; each query samples
        around its own pixel centre on every level (mmdet's encoder reference points)."""
        levels = len(spatial_shapes)
        points = reference_points(spatial_shapes, levels, query.shape[0], query.device)
        for layer in self.layers:
            query = layer(query, query_pos, points, spatial_shapes)
        return query


def reference_points(
    spatial_shapes: list[tuple[int, int]], levels: int, batch: int, device: torch.device
) -> torch.Tensor:
    """Pixel centres of every level, normalized to 0..1 as (x, y): [B, sum(H*W), levels, 2]."""
    points = []
    for height, width in spatial_shapes:
        ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((grid_x.flatten(), grid_y.flatten()), -1))
    flat = torch.cat(points, 0)
    return flat[None, :, None].expand(batch, -1, levels, -1)


class MSDeformAttnPixelDecoder(nn.Module):
    def __init__(self, in_channels: int, config: HeadConfig) -> None:
        super().__init__()
        width, groups = config.feat_channels, config.norm_groups
        self.num_levels = config.num_levels
        self.positional_feats = config.positional_feats
        # input_convs[0] projects the coarsest map (stride 32), as in mmdet.
        self.input_convs = nn.ModuleList(
            ConvNorm(in_channels, width, 1, groups, bias=True) for _ in range(self.num_levels)
        )
        self.encoder = Encoder(config)
        self.level_encoding = nn.Embedding(self.num_levels, width)
        self.lateral_convs = nn.ModuleList([ConvNorm(in_channels, width, 1, groups, bias=False)])
        self.output_convs = nn.ModuleList(
            [ConvNorm(width, width, 3, groups, bias=False, relu=True)]
        )
        self.mask_feature = nn.Conv2d(width, config.out_channels, 1)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialises as mmdet does; skipped on the meta device, where weights load later."""
        if self.mask_feature.weight.is_meta:
            return
        # mmdet's init: xavier for the input projections, caffe2-xavier for the FPN part,
        # xavier-normal for the encoder, then deformable attention's own ring init.
        for module in self.input_convs:
            assert isinstance(module, ConvNorm)  # a ModuleList types its items as Module
            nn.init.xavier_uniform_(module.conv.weight)
            if module.conv.bias is not None:  # always: built with bias=True
                nn.init.zeros_(module.conv.bias)
        lateral, output = self.lateral_convs[0], self.output_convs[0]
        assert isinstance(lateral, ConvNorm) and isinstance(output, ConvNorm)
        for conv in (lateral.conv, output.conv, self.mask_feature):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        nn.init.normal_(self.level_encoding.weight)
        for parameter in self.encoder.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_normal_(parameter)
        for layer in self.encoder.layers:
            assert isinstance(layer, EncoderLayer)
            layer.self_attn.reset_parameters()

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """feats: backbone maps at strides 4, 8, 16, 32. Returns the stride-4 mask features and
        the refined maps at strides 32, 16, 8 (coarse first, as the transformer decoder cycles
        through them)."""
        batch = feats[0].shape[0]
        device = feats[0].device
        inputs, positions, shapes = [], [], []
        for i in range(self.num_levels):
            feat = feats[len(feats) - 1 - i]
            height, width = feat.shape[-2:]
            projected = self.input_convs[i](feat)
            pos = sine_positional_encoding(batch, height, width, self.positional_feats, device)
            pos = pos + self.level_encoding.weight[i].view(1, -1, 1, 1)
            inputs.append(projected.flatten(2).transpose(1, 2))
            positions.append(pos.flatten(2).transpose(1, 2))
            shapes.append((int(height), int(width)))
        query = torch.cat(inputs, 1)
        query_pos = torch.cat(positions, 1).to(query.dtype)
        # contiguous: the levels are resampled and convolved, which is slow on a transposed view
        memory = self.encoder(query, query_pos, shapes).transpose(1, 2).contiguous()
        outs = [
            level.reshape(batch, -1, h, w)
            for level, (h, w) in zip(
                memory.split([h * w for h, w in shapes], -1), shapes, strict=True
            )
        ]
        lateral = self.lateral_convs[0](feats[0])
        top_down = F.interpolate(
            outs[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False
        )
        finest = self.output_convs[0](lateral + top_down)
        return self.mask_feature(finest), outs
