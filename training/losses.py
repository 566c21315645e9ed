"""Mask2Former's training losses for semantic segmentation, as mmdet computes them.

Each class present in an image is one target mask. Per decoder layer (the prediction before
layer 0 included: deep supervision) queries are matched one-to-one to targets by the Hungarian
algorithm on 2 x classification cost + 5 x mask BCE cost + 5 x Dice cost, the mask costs on
randomly sampled points. Losses: 2 x cross-entropy over classes with the "no object" class
weighted 0.1, 5 x BCE and 5 x Dice on matched masks at points chosen by uncertainty (3x
oversampling, 75 % most uncertain). Targets are read at the points from the label map (nearest
pixel: labels are categorical; mmdet samples binary masks bilinearly, which makes soft targets
at every class edge). Pixels without a label (IGNORE) carry no weight in the mask costs and
losses, and uncertain points are chosen among labelled ones; mmseg would count unlabelled
pixels as background of every mask, which is wrong for sparse labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from training.config import IGNORE


@dataclass(frozen=True)
class LossWeights:
    cls: float = 2.0
    mask: float = 5.0
    dice: float = 5.0
    no_object: float = 0.1


@dataclass
class Target:
    classes: torch.Tensor  # [n] class indices present
    labels: torch.Tensor  # [H, W] long, IGNORE where unlabelled

    def at(self, points: torch.Tensor) -> torch.Tensor:
        """Labels at points [..., 2] (x, y in 0..1), nearest pixel: [...]."""
        height, width = self.labels.shape
        cols = (points[..., 0] * width).long().clamp(0, width - 1)
        rows = (points[..., 1] * height).long().clamp(0, height - 1)
        return self.labels[rows, cols]


def make_targets(labels: torch.Tensor) -> list[Target]:
    """labels [B, H, W] (uint8/long, IGNORE = no label) -> one Target per image. A target's
    masks are read at sampled points straight from the label map (nearest pixel), so no
    full-resolution mask is ever built."""
    targets = []
    for image in labels.long():
        classes = torch.unique(image[image != IGNORE])
        targets.append(Target(classes, image))
    return targets


def point_sample(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Predictions maps [N, C, H, W] at points [N, P, 2] ((x, y) in 0..1) -> [N, C, P],
    bilinear. Border padding, unlike mmdet's zeros: near the window edge a logit would
    otherwise be blended with zero."""
    grid = 2.0 * points[:, :, None] - 1.0
    return F.grid_sample(maps, grid, align_corners=False, padding_mode="border")[..., 0]


def match(
    cls_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    target: Target,
    num_points: int,
    weights: LossWeights,
    generator: torch.Generator | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching for one image: (query indices, target indices)."""
    with torch.no_grad():
        points = torch.rand(1, num_points, 2, generator=generator, device="cpu").to(mask_logits)
        pred = point_sample(mask_logits[:, None].float(), points.expand(len(mask_logits), -1, -1))
        pred = pred[:, 0]
        labels = target.at(points[0])  # [P]
        gt = (labels[None] == target.classes[:, None]).float()  # [n, P]
        w = (labels != IGNORE).float()
        total = w.sum().clamp(min=1.0)
        probabilities = cls_logits.float().softmax(-1)
        cost_cls = -probabilities[:, target.classes]
        positive = F.softplus(-pred) * w
        negative = F.softplus(pred) * w
        cost_bce = (positive @ gt.T + negative @ (1 - gt).T) / total
        sig = pred.sigmoid() * w
        numerator = 2 * sig @ gt.T
        denominator = sig.sum(-1, keepdim=True) + (gt * w).sum(-1)[None]
        cost_dice = 1 - (numerator + 1) / (denominator + 1)
        cost = weights.cls * cost_cls + weights.mask * cost_bce + weights.dice * cost_dice
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return rows, cols


def uncertain_points(
    logits: torch.Tensor,
    num_points: int,
    oversample: float,
    importance: float,
    generator: torch.Generator | None,
    labelled: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mask2Former's point choice: [M, P, 2], most uncertain (|logit| small) first, plus random.
    With `labelled` (points [M, S, 2] -> bool [M, S]) uncertain points are chosen among
    labelled places only: points without a label carry no loss and would waste the budget."""
    count = len(logits)
    sampled = int(num_points * oversample)
    candidates = torch.rand(count, sampled, 2, generator=generator, device="cpu").to(logits)
    values = point_sample(logits[:, None], candidates)[:, 0]
    uncertainty = -values.abs()
    if labelled is not None:
        uncertainty = uncertainty.masked_fill(~labelled(candidates), float("-inf"))
    uncertain = int(importance * num_points)
    top = uncertainty.topk(uncertain, dim=1).indices
    chosen = torch.gather(candidates, 1, top[..., None].expand(-1, -1, 2))
    random = torch.rand(count, num_points - uncertain, 2, generator=generator, device="cpu")
    return torch.cat([chosen, random.to(logits)], dim=1)


class Mask2FormerLoss:
    def __init__(
        self,
        num_classes: int,
        num_points: int = 12544,
        oversample: float = 3.0,
        importance: float = 0.75,
        weights: LossWeights | None = None,
    ) -> None:
        self.num_classes = num_classes
        self.num_points = num_points
        self.oversample = oversample
        self.importance = importance
        self.weights = weights or LossWeights()
        self.class_weight = torch.ones(num_classes + 1)
        self.class_weight[-1] = self.weights.no_object

    def layer_loss(
        self,
        cls_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        targets: list[Target],
        generator: torch.Generator | None,
    ) -> dict[str, torch.Tensor]:
        batch, queries, _ = cls_logits.shape
        labels = torch.full(
            (batch, queries), self.num_classes, dtype=torch.long, device=cls_logits.device
        )
        matched_preds, matched_classes, owners = [], [], []
        for b, target in enumerate(targets):
            if len(target.classes) == 0:
                continue
            rows, cols = match(
                cls_logits[b], mask_logits[b], target, self.num_points, self.weights, generator
            )
            rows_t = torch.as_tensor(rows, device=cls_logits.device)
            cols_t = torch.as_tensor(cols, device=cls_logits.device)
            labels[b, rows_t] = target.classes[cols_t]
            matched_preds.append(mask_logits[b, rows_t])
            matched_classes.append(target.classes[cols_t])
            owners += [b] * len(rows)
        loss_cls = F.cross_entropy(
            cls_logits.float().flatten(0, 1),
            labels.flatten(),
            weight=self.class_weight.to(cls_logits.device),
        )
        if not matched_preds:
            zero = mask_logits.sum() * 0.0
            return {"cls": self.weights.cls * loss_cls, "mask": zero, "dice": zero}
        preds = torch.cat(matched_preds).float()
        classes = torch.cat(matched_classes)

        def labels_at(points: torch.Tensor) -> torch.Tensor:  # [M, S, 2] -> [M, S]
            return torch.stack([targets[b].at(p) for b, p in zip(owners, points, strict=True)])

        with torch.no_grad():
            points = uncertain_points(
                preds.detach(),
                self.num_points,
                self.oversample,
                self.importance,
                generator,
                lambda candidates: labels_at(candidates) != IGNORE,
            )
            at_points = labels_at(points)
            point_gts = (at_points == classes[:, None]).float()
            point_w = (at_points != IGNORE).float()
        point_preds = point_sample(preds[:, None], points)[:, 0]
        bce = F.binary_cross_entropy_with_logits(point_preds, point_gts, reduction="none")
        loss_mask = (bce * point_w).sum() / point_w.sum().clamp(min=1.0)
        sig = point_preds.sigmoid() * point_w
        numerator = 2 * (sig * point_gts).sum(-1)
        denominator = sig.sum(-1) + (point_gts * point_w).sum(-1)
        loss_dice = (1 - (numerator + 1) / (denominator + 1)).mean()
        return {
            "cls": self.weights.cls * loss_cls,
            "mask": self.weights.mask * loss_mask,
            "dice": self.weights.dice * loss_dice,
        }

    def __call__(
        self,
        all_cls: list[torch.Tensor],
        all_masks: list[torch.Tensor],
        labels: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Summed over all decoder layers: {'cls', 'mask', 'dice', 'total'}."""
        targets = make_targets(labels.to(all_masks[0].device))
        totals: dict[str, torch.Tensor] = {}
        for cls_logits, mask_logits in zip(all_cls, all_masks, strict=True):
            for name, value in self.layer_loss(cls_logits, mask_logits, targets, generator).items():
                totals[name] = totals.get(name, 0.0) + value
        totals["total"] = totals["cls"] + totals["mask"] + totals["dice"]
        return totals
