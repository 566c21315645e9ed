"""Segmentation metrics from a confusion matrix (rows: reference, columns: prediction)."""

from __future__ import annotations

from typing import Any

import numpy as np


def update_confusion(
    confusion: np.ndarray, reference: np.ndarray, predicted: np.ndarray, ignore: int
) -> None:
    """Adds the labelled pixels of one window to the matrix in place."""
    keep = reference != ignore
    classes = confusion.shape[0]
    index = reference[keep].astype(np.int64) * classes + predicted[keep].astype(np.int64)
    confusion += np.bincount(index, minlength=classes * classes).reshape(classes, classes)


def metrics(confusion: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Overall accuracy, per-class IoU / F1 / precision / recall, and their means over the
    classes present in the reference (a class never labelled has no IoU)."""
    confusion = confusion.astype(np.float64)
    true_positive = np.diag(confusion)
    reference = confusion.sum(1)
    predicted = confusion.sum(0)
    union = reference + predicted - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(reference > 0, true_positive / union, np.nan)
        precision = np.where(predicted > 0, true_positive / predicted, np.nan)
        recall = np.where(reference > 0, true_positive / reference, np.nan)
        f1 = np.where(reference > 0, 2 * true_positive / (reference + predicted), np.nan)
    total = confusion.sum()

    def clean(values: np.ndarray) -> dict[str, float | None]:
        return {
            n: (None if np.isnan(v) else round(float(v), 4))
            for n, v in zip(class_names, values, strict=True)
        }

    return {
        "pixels": int(total),
        "overall_accuracy": round(float(true_positive.sum() / total), 4) if total else None,
        "mIoU": round(float(np.nanmean(iou)), 4) if np.any(reference > 0) else None,
        "mean_f1": round(float(np.nanmean(f1)), 4) if np.any(reference > 0) else None,
        "iou": clean(iou),
        "f1": clean(f1),
        "precision": clean(precision),
        "recall": clean(recall),
        "confusion_matrix": confusion.astype(np.int64).tolist(),
        "classes": list(class_names),
    }


def format_metrics(result: dict[str, Any]) -> str:
    names = result["classes"]
    width = max(12, *(len(n) for n in names))
    lines = [
        f"pixels evaluated: {result['pixels']:,}",
        f"overall accuracy: {_pct(result['overall_accuracy'])}   mIoU: {_pct(result['mIoU'])}   "
        f"mean F1: {_pct(result['mean_f1'])}",
        f"{'class':<{width}} {'IoU':>7} {'F1':>7} {'precision':>9} {'recall':>7}",
    ]
    for name in names:
        lines.append(
            f"{name:<{width}} {_pct(result['iou'][name]):>7} {_pct(result['f1'][name]):>7} "
            f"{_pct(result['precision'][name]):>9} {_pct(result['recall'][name]):>7}"
        )
    lines.append("confusion matrix (rows: reference, columns: predicted):")
    short = [n[:8] for n in names]
    lines.append(f"{'':<{width}} " + " ".join(f"{s:>9}" for s in short))
    for name, row in zip(names, result["confusion_matrix"], strict=True):
        lines.append(f"{name:<{width}} " + " ".join(f"{v:>9,d}" for v in row))
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
