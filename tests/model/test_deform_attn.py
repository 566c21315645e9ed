"""Multi-scale deformable attention against a naive loop-by-loop bilinear reference."""

import math

import torch

from engine.crossearth.deform_attn import (
    MultiScaleDeformableAttention,
    multi_scale_deformable_attention,
)


def bilinear_zero_padded(value, x, y):
    """value [C, H, W]; (x, y) in 0..1 with pixel centres at (i + 0.5) / size (align_corners
    False); samples outside the map read zeros."""
    channels, height, width = value.shape
    px, py = x * width - 0.5, y * height - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    result = torch.zeros(channels, dtype=torch.float64)
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - abs(px - xi)) * (1 - abs(py - yi))
            if 0 <= xi < width and 0 <= yi < height:
                result += weight * value[:, yi, xi].double()
    return result


def naive(value, shapes, locations, weights):
    batch, _, heads, channels = value.shape
    _, queries, _, levels, points, _ = locations.shape
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(batch, queries, heads, channels, dtype=torch.float64)
    for b in range(batch):
        for q in range(queries):
            for head in range(heads):
                for level, (h, w) in enumerate(shapes):
                    level_value = value[b, starts[level] : starts[level + 1], head].T.reshape(
                        channels, h, w
                    )
                    for p in range(points):
                        x, y = locations[b, q, head, level, p].tolist()
                        out[b, q, head] += weights[
                            b, q, head, level, p
                        ].double() * bilinear_zero_padded(level_value, x, y)
    return out.reshape(batch, queries, heads * channels)


def test_matches_naive_reference_including_points_outside_the_map():
    generator = torch.Generator().manual_seed(0)
    shapes = [(4, 6), (3, 5), (2, 2)]
    batch, heads, channels, points = 2, 3, 4, 4
    total = sum(h * w for h, w in shapes)
    value = torch.randn(batch, total, heads, channels, generator=generator)
    # Locations from -0.3 to 1.3: a good share falls outside the map (zero padding applies).
    locations = torch.rand(batch, 5, heads, len(shapes), points, 2, generator=generator) * 1.6 - 0.3
    outside = ((locations < 0) | (locations > 1)).any(-1)
    assert 0.2 < outside.float().mean() < 0.8
    weights = torch.rand(batch, 5, heads, len(shapes), points, generator=generator)
    weights = weights / weights.sum((-1, -2), keepdim=True)
    ours = multi_scale_deformable_attention(value, shapes, locations, weights)
    reference = naive(value, shapes, locations, weights)
    torch.testing.assert_close(ours.double(), reference, atol=1e-5, rtol=1e-5)


def test_module_offsets_are_in_pixels_of_each_level():
    # One head, one point, one level: with zero weights on the projections except identity
    # value/output maps, an offset of exactly one pixel to the right reads the neighbour.
    attention = MultiScaleDeformableAttention(embed_dims=2, num_heads=1, num_levels=1, num_points=1)
    with torch.no_grad():
        attention.value_proj.weight.copy_(torch.eye(2))
        attention.value_proj.bias.zero_()
        attention.output_proj.weight.copy_(torch.eye(2))
        attention.output_proj.bias.zero_()
        attention.sampling_offsets.weight.zero_()
        attention.sampling_offsets.bias.copy_(torch.tensor([1.0, 0.0]))  # +1 px in x
    height, width = 3, 4
    grid = torch.arange(height * width, dtype=torch.float32)
    query = torch.stack([grid, -grid], -1)[None]  # [1, 12, 2]
    ys, xs = torch.meshgrid(
        (torch.arange(height) + 0.5) / height, (torch.arange(width) + 0.5) / width, indexing="ij"
    )
    reference = torch.stack([xs.flatten(), ys.flatten()], -1)[None, :, None]
    out = attention(query, torch.zeros_like(query), reference, [(height, width)]) - query
    expected = torch.roll(query.reshape(height, width, 2), -1, dims=1)
    # One pixel right of the last column's centre lies wholly in the zero padding.
    expected[:, -1] = 0.0
    torch.testing.assert_close(out.reshape(height, width, 2), expected)
