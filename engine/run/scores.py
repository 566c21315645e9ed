"""The class scores a model hands back, checked before they are blended: shape, classes and
finite values, whatever runtime produced them."""

from __future__ import annotations

import numpy as np

from engine.error_codes import MODEL_NONFINITE
from engine.errors import CrossEarthError, ModelError


def checked_scores(scores: np.ndarray, batch_shape: tuple[int, ...], classes: int) -> np.ndarray:
    """The model's scores, refused when their shape does not match the batch and card or when
    they hold NaN or infinities (damaged weights, overflow in reduced precision)."""
    expected = (batch_shape[0], classes, batch_shape[2], batch_shape[3])
    if tuple(scores.shape) != expected:
        raise CrossEarthError(
            f"the model returned scores of shape {tuple(scores.shape)}, expected {expected}: "
            "the package's card does not match its architecture"
        )
    if not np.isfinite(scores).all():
        raise ModelError(
            "the model produced NaN or infinite scores; its weights are damaged or it "
            "overflowed in reduced precision: re-install the package, or turn off mixed "
            "precision (amp)",
            code=MODEL_NONFINITE,
            option="no_amp",
        )
    return scores
