"""The code vocabulary (code -> id), fitted on the training split only."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from ..meds import lazy_events
from .batch import N_RESERVED, PAD_ID, STATIC_EXTRA, UNK_ID


def _rank_codes(stats: pl.DataFrame, min_subjects: int, min_count: int) -> list[str]:
    # Most frequent first, ties by code: deterministic ids, and max_size keeps the commonest.
    kept = stats.filter((pl.col("n_subjects") >= min_subjects) & (pl.col("n_events") >= min_count))
    return kept.sort(["n_subjects", "n_events", "code"], descending=[True, True, False])[
        "code"
    ].to_list()


class Vocabulary:
    """Code -> id map fitted on the training split, with a frequency cut-off.

    Ids: ``PAD_ID = 0``, ``UNK_ID = 1``, then the kept timed codes from ``2`` on, most frequent
    first. A code is kept when it occurs in at least ``min_subjects`` distinct training subjects
    **and** at least ``min_count`` times. Codes below the cut-off map to ``UNK`` like codes never
    seen, so the ``UNK`` embedding is trained and the model degrades gracefully on data from
    another hospital. The default ``min_subjects=5`` also keeps codes that identify one patient
    out of a checkpoint.

    Static codes (events with null time, e.g. ``GENDER/F``) are counted separately with the same
    cut-off and become the indicator columns of :attr:`EventBatch.static`; static codes below it
    are dropped (they have no column).

    Follows scikit-learn's estimator contract: ``fit`` returns self, learned state ends in ``_``.

    Args:
        min_subjects: least number of distinct training subjects with the code.
        min_count: least number of training events with the code.
        max_size: keep at most this many timed codes (the most frequent); None for no limit.
    """

    def __init__(self, min_subjects: int = 5, min_count: int = 1, max_size: int | None = None):
        self.min_subjects = int(min_subjects)
        self.min_count = int(min_count)
        self.max_size = max_size
        self.codes_: tuple[str, ...] | None = None
        self.static_codes_: tuple[str, ...] | None = None

    def fit(self, events: pl.DataFrame | pl.LazyFrame) -> Vocabulary:
        """Learn the codes from **training** events only (e.g. ``dataset.events("train")``).

        Returns:
            self.
        """
        stats = (
            lazy_events(events)
            .group_by(static=pl.col("time").is_null(), code=pl.col("code"))
            .agg(n_subjects=pl.col("subject_id").n_unique(), n_events=pl.len())
            .collect()
        )
        timed = _rank_codes(stats.filter(~pl.col("static")), self.min_subjects, self.min_count)
        if self.max_size is not None:
            timed = timed[: self.max_size]
        static = _rank_codes(stats.filter(pl.col("static")), self.min_subjects, self.min_count)
        self.codes_ = tuple(timed)
        self.static_codes_ = tuple(sorted(static))
        return self

    def _check_fitted(self) -> None:
        if self.codes_ is None or self.static_codes_ is None:
            raise RuntimeError("Vocabulary is not fitted: call fit() or from_dict() first")

    def __len__(self) -> int:
        """Size of an embedding table over the ids (reserved ids included)."""
        self._check_fitted()
        return N_RESERVED + len(self.codes_)

    @property
    def n_static(self) -> int:
        """S, the width of :attr:`EventBatch.static` (static codes + the extra columns)."""
        self._check_fitted()
        return len(self.static_codes_) + len(STATIC_EXTRA)

    def code_table(self) -> pl.DataFrame:
        """``code`` Utf8, ``code_id`` Int32 of the kept timed codes."""
        self._check_fitted()
        return pl.DataFrame(
            {
                "code": pl.Series(self.codes_, dtype=pl.Utf8),
                "code_id": pl.Series(
                    np.arange(N_RESERVED, N_RESERVED + len(self.codes_)), dtype=pl.Int32
                ),
            }
        )

    def encode(self, codes: Sequence[str] | pl.Series) -> np.ndarray:
        """Ids of ``codes`` (``UNK_ID`` for unknown ones), int64."""
        self._check_fitted()
        mapping = dict(zip(self.codes_, range(N_RESERVED, len(self)), strict=True))
        series = pl.Series("code", codes, dtype=pl.Utf8)
        return series.replace_strict(mapping, default=UNK_ID, return_dtype=pl.Int64).to_numpy()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (hyperparameters and learned codes) for checkpoints."""
        self._check_fitted()
        return {
            "kind": "densefeat.Vocabulary",
            "version": 1,
            "min_subjects": self.min_subjects,
            "min_count": self.min_count,
            "max_size": self.max_size,
            "pad_id": PAD_ID,
            "unk_id": UNK_ID,
            "codes": list(self.codes_),
            "static_codes": list(self.static_codes_),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Vocabulary:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: not a densefeat vocabulary, or reserved ids that differ from ours.
        """
        if state.get("kind") != "densefeat.Vocabulary":
            raise ValueError(f"not a densefeat Vocabulary state (kind={state.get('kind')!r})")
        if state.get("pad_id") != PAD_ID or state.get("unk_id") != UNK_ID:
            raise ValueError("Vocabulary state uses other reserved ids than PAD=0, UNK=1")
        vocab = cls(state["min_subjects"], state["min_count"], state["max_size"])
        vocab.codes_ = tuple(str(c) for c in state["codes"])
        vocab.static_codes_ = tuple(str(c) for c in state["static_codes"])
        return vocab

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.to_dict() == other.to_dict()

    __hash__ = None  # mutable (fit)
