"""The converted official tiny checkpoint reproduces every tensor the official code saved."""

import pytest
import torch

from engine import load_model

TOLERANCE = 1e-4


def run_with_taps(model, x):
    """Runs the model once, collecting the same intermediates the official run saved."""
    taps = {}
    blocks = []
    hooks = [
        b.register_forward_hook(lambda m, i, o: blocks.append(o)) for b in model.backbone.blocks
    ]
    pixel = model.decode_head.pixel_decoder
    hooks.append(pixel.register_forward_hook(lambda m, i, o: taps.setdefault("pixel", o)))
    try:
        with torch.no_grad():
            taps["tokens"] = model.backbone.prepare_tokens(x)
            taps["rein_tokens"] = model.backbone.reins.tokens()
            feats, queries = model.backbone(x)
            cls, masks = model.decode_head(feats, queries)
            taps["scores"] = model(x)
    finally:
        for hook in hooks:
            hook.remove()
    taps.update(
        feats=feats,
        queries=queries,
        cls=cls,
        masks=masks,
        blocks=blocks[: len(model.backbone.blocks)],
    )
    return taps


@pytest.fixture(scope="module")
def taps(tiny_package, tiny_reference):
    model = load_model(tiny_package.path)
    return run_with_taps(model, tiny_reference["input"])


def assert_close(actual, expected, name):
    assert tuple(actual.shape) == tuple(expected.shape), name
    difference = (actual - expected).abs().max().item()
    assert difference < TOLERANCE, f"{name}: max difference {difference:.2e}"


def test_backbone_tokens_and_blocks(taps, tiny_reference):
    assert_close(taps["tokens"], tiny_reference["backbone.prepare_tokens"], "prepare_tokens")
    assert_close(
        torch.stack(taps["blocks"]), tiny_reference["backbone.block_out_preRein"], "blocks"
    )
    assert_close(
        taps["rein_tokens"], tiny_reference["backbone.rein_tokens_all_layers"], "rein tokens"
    )
    assert_close(taps["queries"], tiny_reference["backbone.forward_features.querys"], "queries")


def test_backbone_features(taps, tiny_reference):
    for i, feat in enumerate(taps["feats"]):
        assert_close(feat, tiny_reference[f"backbone.forward.feats.{i}"], f"feats.{i}")
    # Before resizing, every tapped block's stride-16 map (the last level is block 3's map x0.5,
    # the third is block 2's unchanged).
    assert_close(
        taps["feats"][2], tiny_reference["backbone.forward_features.feats_stride16"][2], "stride16"
    )


def test_pixel_decoder(taps, tiny_reference):
    mask_features, memories = taps["pixel"]
    assert_close(mask_features, tiny_reference["head.pixel_decoder.mask_features"], "mask features")
    for i, memory in enumerate(memories):
        key = f"head.pixel_decoder.multi_scale_memorys.{i}"
        assert_close(memory, tiny_reference[key], key)


def test_decoder_layers_and_scores(taps, tiny_reference):
    assert_close(torch.stack(taps["cls"]), tiny_reference["head.cls_pred_all"], "cls per layer")
    assert_close(
        torch.stack(taps["masks"]), tiny_reference["head.mask_pred_all"], "masks per layer"
    )
    assert_close(taps["cls"][-1], tiny_reference["head.cls_pred_final"], "cls final")
    assert_close(taps["masks"][-1], tiny_reference["head.mask_pred_final"], "mask final")
    for key in ("encode_decode.seg_logits", "inference.seg_logits", "predict.seg_logits"):
        assert_close(taps["scores"], tiny_reference[key], key)


def test_scores_are_not_trivial(taps, tiny_reference):
    # Guards the comparison itself: the reference has real spread, so a constant would fail.
    scores = tiny_reference["inference.seg_logits"]
    assert scores.std() > 0.1
    assert (taps["scores"] - scores.mean()).abs().max() > 1.0
