"""Mixed precision, batching and input shapes of the CrossEarth network."""

import pytest
import torch
import torch.nn.functional as F

from engine import load_model
from engine.crossearth.backbone import interpolate_pos_encoding


@pytest.fixture(scope="module")
def model(tiny_package):
    return load_model(tiny_package.path)


@pytest.fixture(scope="module")
def reference(model, tiny_reference):
    x = tiny_reference["input"]
    with torch.no_grad():
        return x, model(x)


@pytest.mark.parametrize(
    ("dtype", "max_rel", "mean_rel"), [(torch.float16, 0.02, 0.002), (torch.bfloat16, 0.12, 0.015)]
)
def test_autocast_has_no_nan_and_stays_close(model, reference, dtype, max_rel, mean_rel):
    x, full = reference
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        half = model(x)
    assert half.dtype == dtype
    assert torch.isfinite(half).all()
    scale = full.abs().max()
    difference = (half.float() - full).abs()
    assert difference.max() / scale < max_rel
    assert difference.mean() / scale < mean_rel


def test_batch_equals_one_by_one(model, reference):
    x, full = reference
    with torch.no_grad():
        single = torch.cat([model(x[i : i + 1]) for i in range(x.shape[0])])
    torch.testing.assert_close(single, full, atol=1e-4, rtol=0)


@pytest.mark.parametrize("shape", [(128, 192), (192, 128), (96, 160), (256, 256), (32, 48)])
def test_non_square_and_other_sizes(model, reference, shape):
    x = F.interpolate(reference[0], size=shape, mode="bilinear", align_corners=False)
    with torch.no_grad():
        scores = model(x)
    assert tuple(scores.shape) == (2, 3, *shape)
    assert torch.isfinite(scores).all() and (scores >= 0).all()


def test_input_not_multiple_of_patch_is_refused(model):
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        model(torch.zeros(1, 3, 120, 128))


def test_position_embedding_follows_dinov2_rules(model):
    pos = model.backbone.pos_embed.detach()  # 8 x 8 grid
    # The configured square size is used as is.
    assert interpolate_pos_encoding(pos, 128, 128, 16) is pos
    # Other sizes: bicubic with scale factors (n + 0.1) / grid, which differs from resizing to a
    # target size (the timm way); a regression to the latter would show here.
    ours = interpolate_pos_encoding(pos, 256, 256, 16)[:, 1:]
    grid = pos[:, 1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
    by_size = F.interpolate(grid, size=(16, 16), mode="bicubic", align_corners=False)
    by_size = by_size.permute(0, 2, 3, 1).reshape(1, 256, -1)
    assert (ours - by_size).abs().max() > 1e-3
    by_scale = F.interpolate(
        grid, scale_factor=(16.1 / 8, 16.1 / 8), mode="bicubic", align_corners=False
    )
    torch.testing.assert_close(ours, by_scale.permute(0, 2, 3, 1).reshape(1, 256, -1))
    # Non-square: rows follow the height. Transposing the grid and the request transposes the
    # result (separable interpolation), which holds only with the axes in the right order.
    wide = interpolate_pos_encoding(pos, 128, 192, 16)[:, 1:].reshape(8, 12, -1)
    transposed_pos = torch.cat(
        [pos[:, :1], grid.transpose(2, 3).permute(0, 2, 3, 1).reshape(1, 64, -1)], dim=1
    )
    tall = interpolate_pos_encoding(transposed_pos, 192, 128, 16)[:, 1:].reshape(12, 8, -1)
    torch.testing.assert_close(wide, tall.transpose(0, 1))
    # The cls entry always passes unchanged.
    torch.testing.assert_close(interpolate_pos_encoding(pos, 128, 192, 16)[:, :1], pos[:, :1])
