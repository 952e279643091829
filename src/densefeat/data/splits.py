"""Deterministic subject-level splits."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np
import polars as pl

__all__ = [
    "DEFAULT_FRACTIONS",
    "SPLIT_NAMES",
    "assign_subject_splits",
    "make_subject_splits",
    "splitmix64",
    "subject_split",
]

#: MEDS's split names (``meds.train_split`` etc.), in the order of ``DEFAULT_FRACTIONS``.
SPLIT_NAMES: tuple[str, str, str] = ("train", "tuning", "held_out")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)


def _unit(seed: int, subject_id: object) -> float:
    digest = hashlib.blake2b(f"{seed}:{subject_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def subject_split(
    subject_ids: Iterable[object], seed: int = 0, fractions: tuple[float, ...] = (0.8, 0.2)
) -> np.ndarray:
    """Assign every subject to a split by a hash of ``(seed, subject_id)``.

    The assignment of a subject never depends on which other subjects are present, so it is
    stable across dataset versions and machines, and all rows of a subject share one split.

    Returns:
        int array, the split index (0, 1, ...) of each subject in input order.
    """
    if not fractions or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be positive and sum to 1, got {fractions}")
    edges = np.cumsum(fractions)[:-1]
    u = np.fromiter((_unit(seed, s) for s in subject_ids), dtype=np.float64)
    return np.searchsorted(edges, u, side="right")


def assign_subject_splits(
    subject_ids: Iterable[object],
    seed: int = 0,
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS,
    names: Sequence[str] = SPLIT_NAMES,
) -> list[str]:
    """Named splits (``train``/``tuning``/``held_out`` by default) of :func:`subject_split`.

    Args:
        subject_ids: the subjects, any hashable ids (their ``str`` enters the hash).
        seed: the split seed; the same seed always gives the same assignment.
        fractions: expected share of each split, positive, summing to 1.
        names: one name per fraction.

    Returns:
        the split name of each subject, in input order.
    """
    if len(names) != len(fractions):
        raise ValueError(f"{len(names)} split names for {len(fractions)} fractions")
    index = subject_split(subject_ids, seed, tuple(fractions))
    return [names[i] for i in index]


def make_subject_splits(
    subject_ids: pl.Series | Sequence[int], seed: int = 0, fractions=DEFAULT_FRACTIONS
) -> pl.DataFrame:
    """Deterministic ``subject_id, split`` for the given subjects (hash of seed and subject_id).

    Args:
        subject_ids: integer subject ids (duplicates are collapsed).
        seed: split seed.
        fractions: shares of train, tuning and held_out.

    Returns:
        DataFrame sorted by subject_id, MEDS SubjectSplitSchema columns.
    """
    ids = pl.Series("subject_id", subject_ids, dtype=pl.Int64).unique().sort()
    names = assign_subject_splits(ids.to_list(), seed, tuple(fractions), SPLIT_NAMES)
    return pl.DataFrame({"subject_id": ids, "split": pl.Series(names, dtype=pl.Utf8)})


def splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 (wrapping arithmetic): a fixed, well-mixed hash."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))
