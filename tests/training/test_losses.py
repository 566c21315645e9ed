"""Mask2Former losses and Hungarian matching on hand-made cases."""

import math

import numpy as np
import torch
import torch.nn.functional as F

from training.config import IGNORE
from training.losses import LossWeights, Mask2FormerLoss, make_targets, match

BIG = 50.0  # a confident logit


def two_region_labels():
    labels = torch.zeros(1, 16, 16, dtype=torch.uint8)
    labels[0, :, 8:] = 2  # class 0 on the left, class 2 on the right
    return labels


def predictions(order):
    """4 queries; `order[k]` = the region (0 left, 1 right) query k predicts, -1 none."""
    masks = torch.full((1, 4, 16, 16), -BIG)  # at label resolution: no upsampling blur
    cls = torch.full((1, 4, 4), -BIG)  # 3 classes + no object
    cls[0, :, 3] = BIG
    for query, region in enumerate(order):
        if region < 0:
            continue
        cols = slice(0, 8) if region == 0 else slice(8, 16)
        masks[0, query, :, cols] = BIG
        cls[0, query] = -BIG
        cls[0, query, 0 if region == 0 else 2] = BIG
    return cls, masks


def test_matching_finds_the_queries_that_predict_each_region():
    cls, masks = predictions([-1, 1, -1, 0])
    target = make_targets(two_region_labels())[0]
    assert target.classes.tolist() == [0, 2]
    rows, cols = match(
        cls[0], masks[0], target, 512, LossWeights(), torch.Generator().manual_seed(0)
    )
    pairs = {int(r): int(c) for r, c in zip(rows, cols, strict=True)}
    assert pairs == {3: 0, 1: 1}  # query 3 -> class 0 (left), query 1 -> class 2 (right)


def test_perfect_predictions_cost_almost_nothing_and_swaps_cost_a_lot():
    # Uniform points: importance sampling would crowd them onto the region border, where
    # bilinear sampling blurs even a perfect prediction.
    loss = Mask2FormerLoss(num_classes=3, num_points=1024, importance=0.0)
    labels = two_region_labels()
    good = loss([predictions([0, 1, -1, -1])[0]], [predictions([0, 1, -1, -1])[1]], labels)
    cls, masks = predictions([0, 1, -1, -1])
    # Right masks, wrong classes: the class loss must carry it.
    cls_swapped = cls.clone()
    cls_swapped[0, 0], cls_swapped[0, 1] = cls[0, 1], cls[0, 0]
    masks_swapped = masks.clone()
    masks_swapped[0, 0], masks_swapped[0, 1] = masks[0, 1], masks[0, 0]
    wrong = loss([cls], [masks_swapped], labels)
    assert good["total"] < 0.2
    assert good["mask"] < 0.1 and good["dice"] < 0.1
    # Matching pairs each mask with its class, so swapped masks with unswapped classes
    # leave either the class or the mask wrong for every query.
    assert wrong["total"] > 10 * good["total"] + 1.0


def test_class_loss_weights_no_object_by_point_one():
    loss = Mask2FormerLoss(num_classes=3, num_points=64)
    cls = torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(1))
    masks = torch.zeros(1, 4, 16, 16)
    labels = torch.full((1, 16, 16), IGNORE, dtype=torch.uint8)  # nothing labelled: all no-object
    out = loss([cls], [masks], labels)
    manual = F.cross_entropy(cls[0], torch.full((4,), 3))  # equal weights cancel in the mean
    assert math.isclose(float(out["cls"]), 2.0 * float(manual), rel_tol=1e-6)
    assert float(out["mask"]) == 0.0 and float(out["dice"]) == 0.0

    # One matched query of class 1 and three no-object queries: weights 1 and 3 x 0.1.
    labels = torch.ones(1, 16, 16, dtype=torch.uint8)
    out = loss([cls], [torch.full((1, 4, 16, 16), BIG)], labels)
    log_probs = cls[0].log_softmax(-1)
    for matched in range(4):  # whichever query matched, the weighted mean has this form
        targets = torch.full((4,), 3)
        targets[matched] = 1
        weights = torch.tensor([1.0 if q == matched else 0.1 for q in range(4)])
        expected = -(weights * log_probs[torch.arange(4), targets]).sum() / weights.sum()
        if math.isclose(float(out["cls"]), 2.0 * float(expected), rel_tol=1e-5):
            break
    else:
        raise AssertionError(f"class loss {float(out['cls'])} matches no weighted form")


def test_unlabelled_pixels_do_not_count():
    loss = Mask2FormerLoss(num_classes=3, num_points=512)  # with importance sampling
    labels = two_region_labels()
    labels[0, :8] = IGNORE  # the top half has no labels
    cls, masks = predictions([0, 1, -1, -1])
    base = loss([cls], [masks], labels, torch.Generator().manual_seed(0))
    scrambled = masks.clone()
    # Rows 0-6 of the masks; bilinear sampling of the labelled rows (8-15) never reaches them.
    scrambled[0, :, :7] = torch.randn(4, 7, 16, generator=torch.Generator().manual_seed(5)) * BIG
    changed = loss([cls], [scrambled], labels, torch.Generator().manual_seed(0))
    # Only the top of the masks changed, and nothing is labelled there: neither the chosen
    # points nor their weights depend on it.
    assert float(changed["mask"]) == float(base["mask"])
    assert float(changed["dice"]) == float(base["dice"])
    everywhere = masks.clone()
    everywhere[0, :, 8:] = -everywhere[0, :, 8:]  # now break the labelled half
    broken = loss([cls], [everywhere], labels, torch.Generator().manual_seed(0))
    assert float(broken["total"]) > 10 * float(base["total"]) + 1.0


def test_deep_supervision_sums_every_layer():
    loss = Mask2FormerLoss(num_classes=3, num_points=128)
    labels = two_region_labels()
    layers = [
        predictions([0, 1, -1, -1]),
        predictions([-1, -1, -1, -1]),
        predictions([-1, -1, 0, 1]),
    ]
    total = loss(
        [c for c, _ in layers], [m for _, m in layers], labels, torch.Generator().manual_seed(0)
    )
    # The same random draws, layer after layer, from one generator.
    generator = torch.Generator().manual_seed(0)
    parts = [loss([c], [m], labels, generator) for c, m in layers]
    for key in ("cls", "mask", "dice", "total"):
        assert np.isclose(float(total[key]), sum(float(p[key]) for p in parts), rtol=1e-6)
    # The second layer predicts nothing: it must cost far more than the good ones.
    assert float(parts[1]["total"]) > 5 * float(parts[0]["total"])
