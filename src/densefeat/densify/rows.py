"""Which rows an adapter is fitted on, and which rows are paired.

Training rows (medical hygiene: the adapter, like a normaliser, sees the training split only):

* a split column (default ``split``, as ``densefeat embed`` writes it): rows whose value is
  ``train`` (``--train-split``);
* else a seeded subject split (:func:`densefeat.data.splits.assign_subject_splits`, the
  80/10/10 hash split of ``(seed, subject_id)`` the rest of densefeat uses) on the subject
  column (default ``subject_id``);
* else (a file with no key columns, e.g. ``.npy``) every row is its own subject: the same
  hash split on the row index.

Pairs: with two files, row ``i`` of A with row ``i`` of B (checked to be the same subject and
time where both files carry those columns). With one file and both a subject and a time column,
each training row with the next prediction time of the same subject (adjacent windows); without
them, no pairs and the objective runs without its paired term.

Only Parquet files carry key columns; a key column named explicitly that is absent is an error
naming the file and listing the columns. Default column names that are absent are not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.splits import assign_subject_splits
from ..io import EmbeddingFileError

__all__ = ["KeyColumns", "adjacent_pairs", "read_keys", "training_mask"]

DEFAULT_SUBJECT = "subject_id"
DEFAULT_TIME = "prediction_time"
DEFAULT_SPLIT = "split"


@dataclass(frozen=True)
class KeyColumns:
    """The key columns of an embedding file (``None`` where the file has no such column).

    Attributes:
        n: number of rows.
        subject: subject id per row.
        time: prediction time per row (any sortable dtype).
        split: split name per row (str).
        names: the column name each came from (``None`` if absent).
    """

    n: int
    subject: np.ndarray | None
    time: np.ndarray | None
    split: np.ndarray | None
    names: dict[str, str | None]


def _pick(label: str, available: list[str], given: str | None, default: str) -> str | None:
    if given is None:
        return default if default in available else None
    if given == "":
        return None  # explicitly none
    if given not in available:
        listed = ", ".join(repr(c) for c in available) or "none"
        raise EmbeddingFileError(f"{label}: key column {given!r} not found; columns: {listed}")
    return given


def read_keys(
    path: str | os.PathLike[str],
    n: int,
    *,
    subject_col: str | None = None,
    time_col: str | None = None,
    split_col: str | None = None,
) -> KeyColumns:
    """Read the key columns of ``path`` (Parquet only; other formats have none).

    Args:
        path: the embedding file.
        n: its number of rows (from its header).
        subject_col, time_col, split_col: column names; ``None`` uses the default name when
            present, ``""`` means no such column.

    Raises:
        EmbeddingFileError: a named column is absent, or a non-Parquet file is given a column.
    """
    p = Path(path)
    if p.suffix.lower() != ".parquet":
        for given in (subject_col, time_col, split_col):
            if given:
                raise EmbeddingFileError(
                    f"{p}: key column {given!r} requested, but only .parquet files have "
                    "columns besides the embedding matrix"
                )
        return KeyColumns(n, None, None, None, {"subject": None, "time": None, "split": None})
    import pyarrow.parquet as pq

    available = list(pq.ParquetFile(p).schema_arrow.names)
    names = {
        "subject": _pick(str(p), available, subject_col, DEFAULT_SUBJECT),
        "time": _pick(str(p), available, time_col, DEFAULT_TIME),
        "split": _pick(str(p), available, split_col, DEFAULT_SPLIT),
    }
    wanted = sorted({c for c in names.values() if c is not None})
    table = pq.read_table(p, columns=wanted) if wanted else None
    cols: dict[str, np.ndarray | None] = {}
    for role, col in names.items():
        if col is None or table is None:
            cols[role] = None
            continue
        arr = table.column(col)
        if arr.null_count:
            raise EmbeddingFileError(f"{p}: key column {col!r} has {arr.null_count} null value(s)")
        cols[role] = arr.to_numpy()
    split = cols["split"]
    return KeyColumns(
        n,
        cols["subject"],
        cols["time"],
        None if split is None else split.astype(str),
        names,
    )


def training_mask(keys: KeyColumns, *, train_split: str = "train", seed: int = 0) -> np.ndarray:
    """Boolean (n,) mask of the training rows (rules in the module docstring).

    Raises:
        ValueError: no training row (the split values present are listed).
    """
    if keys.split is not None:
        mask = keys.split == train_split
        if not mask.any():
            values = sorted(set(np.unique(keys.split).tolist()))
            raise ValueError(
                f"split column {keys.names['split']!r} has no {train_split!r} row "
                f"(values: {values}); pick the training value with --train-split"
            )
        return mask
    ids = keys.subject.tolist() if keys.subject is not None else range(keys.n)
    mask = np.asarray(assign_subject_splits(ids, seed=seed)) == "train"
    if not mask.any():
        raise ValueError(f"the seeded subject split (seed {seed}) put no row in 'train'")
    return mask


def adjacent_pairs(keys: KeyColumns, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Row indices ``(i, j)``: each masked row and the next prediction time of its subject.

    Returns ``None`` when the file lacks a subject or a time column. Rows of a subject at the
    same time are not paired with each other (a pair is two different windows).
    """
    if keys.subject is None or keys.time is None:
        return None
    rows = np.flatnonzero(mask)
    subj, time = keys.subject[rows], keys.time[rows]
    order = rows[np.lexsort((time, subj))]
    s, t = keys.subject[order], keys.time[order]
    nxt = (s[1:] == s[:-1]) & (t[1:] > t[:-1])
    return order[:-1][nxt], order[1:][nxt]
