"""Input checks shared by the evaluation modules: feature matrices, binary labels, weights.

Every check either returns the input as a NumPy array of the documented dtype or raises a
``ValueError`` that names the argument and what is wrong with it. They are used by
:mod:`~densefeat.eval.ranking`, :mod:`~densefeat.eval.bootstrap` and the probes in
:mod:`~densefeat.eval.probe`, so one argument gets the same message everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "as_binary",
    "as_labels",
    "as_matrix",
    "binary_labels",
    "check_non_negative",
    "check_weights",
]


def as_matrix(X: Any, name: str = "X") -> np.ndarray:
    """X as a float64 ``(n, d)`` array (no copy when X already is one); finite, n, d >= 1.

    Raises:
        ValueError: a non-numeric dtype, not 2-D, no rows or columns, or a NaN/inf (named by
            its first row and column).
    """
    arr = np.asarray(X)
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be a numeric matrix, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    finite = np.isfinite(arr)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise ValueError(
            f"{name} holds NaN or inf (first at row {row}, column {col}); a probe needs finite "
            "features"
        )
    return arr


def as_labels(y: Any, n: int, name: str = "y") -> np.ndarray:
    """y as an ``(n,)`` array of labels of any dtype (float labels must be finite)."""
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or inf")
    return arr


def binary_labels(y: np.ndarray, name: str = "y") -> np.ndarray:
    """Bool labels from bool or 0/1 labels (1 / True = positive); shape as given.

    Raises:
        ValueError: a value other than 0 and 1 (the first few are listed).
    """
    if y.dtype == bool:
        return y
    values = np.unique(y)
    if not np.isin(values, [0, 1]).all():
        raise ValueError(
            f"{name} must be binary (bool or 0/1; 1 = positive), got values {values[:5].tolist()}"
        )
    return y == 1


def as_binary(y: Any, n: int, name: str = "y") -> np.ndarray:
    """``(n,)`` bool labels from bool or 0/1 input (:func:`as_labels`, :func:`binary_labels`)."""
    return binary_labels(as_labels(y, n, name), name)


def check_non_negative(w: np.ndarray) -> None:
    """Raise ``ValueError`` unless every weight in ``w`` is finite and ``>= 0``."""
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and non-negative")


def check_weights(weights: Any | None, n: int, per: str = "row") -> np.ndarray | None:
    """Evaluation weights as a float64 ``(n,)`` array, or None when ``weights`` is None.

    Args:
        weights: one finite, non-negative weight per row (e.g. ``1 / r`` on negatives kept at
            sampling rate ``r``), or None.
        n: the number of rows.
        per: what one weight belongs to, for the shape error ("one per {per}").
    """
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},) (one per {per}), got {w.shape}")
    check_non_negative(w)
    return w
