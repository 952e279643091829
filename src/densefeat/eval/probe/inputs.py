"""Checks of the probe protocol's inputs: split tables, split parts, evaluation weights.

The protocol takes its rows in one of two forms: a *split table* (every row carries its split
name, ``train`` / ``tuning`` / ``held_out``, and its subject) or pre-split *parts*. Splits must
be by subject (a subject with rows in two splits leaks between fitting and testing), and each
split needs both classes: train to fit, tuning to choose C by AUROC, held_out to evaluate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...data.splits import SPLIT_NAMES
from ..checks import as_binary, as_matrix, check_weights

__all__ = [
    "check_eval_weights",
    "check_part",
    "check_split_table",
    "require_classes",
    "single_class_reason",
]


def check_split_table(X: Any, split: Any, groups: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A split table's features, split names and subject ids, checked.

    Args:
        X: (n, d) features. split: (n,) split names (``SPLIT_NAMES``).
        groups: (n,) subject id per row.

    Returns:
        ``(X, split, groups)``: float64 (n, d), str (n,) and the ids as an (n,) array.

    Raises:
        ValueError: bad shapes, NaN/inf in X, unknown split names, or subjects with rows in
            more than one split (counted, with a few examples).
    """
    X = as_matrix(X, "X")
    n = X.shape[0]
    split = np.asarray(split).astype(str)
    if split.shape != (n,):
        raise ValueError(f"split must have shape ({n},), got {split.shape}")
    unknown = sorted(set(np.unique(split).tolist()) - set(SPLIT_NAMES))
    if unknown:
        raise ValueError(f"split holds unknown names {unknown}; expected {list(SPLIT_NAMES)}")
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must have shape ({n},) (one subject id per row)")
    # Splits must be by subject: a subject in two splits leaks between fitting and testing.
    uniq, inv = np.unique(groups, return_inverse=True)
    code = np.select([split == s for s in SPLIT_NAMES], list(range(len(SPLIT_NAMES))))
    lo = np.full(uniq.size, len(SPLIT_NAMES))
    hi = np.full(uniq.size, -1)
    np.minimum.at(lo, inv, code)
    np.maximum.at(hi, inv, code)
    mixed = np.flatnonzero(lo != hi)
    if mixed.size:
        raise ValueError(
            f"{mixed.size} subjects have rows in more than one split (e.g. "
            f"{uniq[mixed[:3]].tolist()}); splits must be by subject"
        )
    return X, split, groups


def single_class_reason(
    y: np.ndarray, split: np.ndarray, names: Sequence[str] = SPLIT_NAMES
) -> str | None:
    """Why bool labels ``y`` cannot be probed: the first of ``names`` with a single class.

    Returns:
        e.g. ``"the tuning split has 0 positive and 170 negative rows"``, or None when every
        split in ``names`` holds both classes.
    """
    for name in names:
        mask = split == name
        pos = int(y[mask].sum())
        neg = int(mask.sum()) - pos
        if pos == 0 or neg == 0:
            return f"the {name} split has {pos} positive and {neg} negative rows"
    return None


def require_classes(y: np.ndarray, split: np.ndarray, names: Sequence[str], what: str) -> None:
    """Raise ``ValueError`` (prefixed with ``what``) unless every split in ``names`` holds both
    classes of the bool labels ``y`` (see :func:`single_class_reason`)."""
    reason = single_class_reason(y, split, names)
    if reason is not None:
        raise ValueError(
            f"{what}: {reason}; the probe protocol needs both classes in train, tuning and held_out"
        )


def check_part(X: Any, y: Any, name: str, d: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One pre-split part's features and bool labels, with both classes.

    Args:
        X: (n, d) features. y: (n,) binary labels.
        name: "train", "val" or "test" (errors name ``X_{name}`` / ``y_{name}`` and the split).
        d: the number of features the part must have (that of the train part), or None.

    Raises:
        ValueError: bad shapes, NaN/inf, non-binary labels, or a single class.
    """
    Xp = as_matrix(X, f"X_{name}")
    if d is not None and Xp.shape[1] != d:
        raise ValueError(f"X_{name} has {Xp.shape[1]} features, X_train has {d}")
    yp = as_binary(y, Xp.shape[0], f"y_{name}")
    pos = int(yp.sum())
    if pos == 0 or pos == yp.size:
        split = {"train": "train", "val": "tuning", "test": "held_out"}[name]
        raise ValueError(
            f"y_{name}: the {split} rows have {pos} positive and {yp.size - pos} negative "
            "labels; the probe protocol needs both classes in train, tuning and held_out"
        )
    return Xp, yp


def check_eval_weights(weights: Any | None, n: int) -> np.ndarray | None:
    """Evaluation weights of ``n`` held-out rows as float64, or None (see ``check_weights``).

    They enter the AUROC/AUPRC point estimates and every bootstrap resample, never the fit.
    """
    return check_weights(weights, n, per="held-out row")
