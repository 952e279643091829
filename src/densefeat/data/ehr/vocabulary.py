"""The code vocabulary (code -> id), fitted on the training split only."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from ..meds import lazy_events
from .batch import N_RESERVED, PAD_ID, STATIC_EXTRA, UNK_ID


def parent_code(code: str) -> str | None:
    """The code up to its last ``//`` (``LAB//Lactate`` -> ``LAB``), None without one."""
    head, sep, _ = code.rpartition("//")
    return head if sep and head else None


def code_id_expr(vocab: Vocabulary, code: str = "code") -> pl.Expr:
    """Expression for the id of column ``code``: its own id, else its parent's, else UNK.

    One ``replace_strict`` per level (vectorised, no Python per event). Int32.
    """
    index = dict(zip(vocab.codes_, range(N_RESERVED, N_RESERVED + len(vocab.codes_)), strict=True))
    own = pl.col(code).replace_strict(index, default=None, return_dtype=pl.Int32)
    parent = pl.col(code).str.extract(r"^(.*)//", 1)  # greedy: up to the LAST "//"; null if none
    by_parent = parent.replace_strict(index, default=None, return_dtype=pl.Int32)
    return pl.coalesce(own, by_parent, pl.lit(UNK_ID, pl.Int32)).alias("code_id")


def _rank_codes(stats: pl.DataFrame, min_subjects: int, min_count: int) -> list[str]:
    # Most frequent first, ties by code: deterministic ids, and max_size keeps the commonest.
    kept = stats.filter((pl.col("n_subjects") >= min_subjects) & (pl.col("n_events") >= min_count))
    return kept.sort(["n_subjects", "n_events", "code"], descending=[True, True, False])[
        "code"
    ].to_list()


class Vocabulary:
    """Code -> id map fitted on the training split, with a frequency cut-off.

    Ids: ``PAD_ID = 0``, ``UNK_ID = 1``, then the kept timed codes from ``2`` on, most frequent
    first, then (``parents=True``) the *parent codes* of the kept ones. A code is kept when it
    occurs in at least ``min_subjects`` distinct training subjects **and** at least
    ``min_count`` times. The default ``min_subjects=5`` also keeps codes that identify one
    patient out of a checkpoint.

    Unseen codes. A code that is not kept (never seen in training, or below the cut-off) backs
    off to its parent, the code up to its last ``//`` (``LAB//Lactate`` -> ``LAB``), where the
    vocabulary has that parent, and to ``UNK`` otherwise (:meth:`encode`,
    :meth:`parent_ids`). Every training code passes the cut-off by construction, so neither
    the parent ids nor ``UNK`` would ever occur in training on their own: training replaces a
    small seeded share of real codes by their parent or by ``UNK``
    (:func:`~densefeat.data.ehr.views.unknown_codes`, ``--set data.unk_rate``), which is
    what trains those embeddings (word dropout, Iyyer et al. 2015; the ``UNK`` replacement of
    Bahdanau et al.). ``densefeat embed`` reports the codes of its data that the vocabulary
    lacks and their share of events (:func:`unseen_codes`).

    Static codes (events with null time, e.g. ``GENDER/F``) are counted separately with the same
    cut-off and become the indicator columns of :attr:`EventBatch.static`; static codes below it
    are dropped (they have no column). Static codes whose training events carry numeric values
    in at least ``min_subjects`` subjects (``DEMOGRAPHIC//Age``) are also listed in
    :attr:`static_value_codes_`: their normalised values are columns of ``static`` too (the
    encoder's numeric branch for static values).

    Follows scikit-learn's estimator contract: ``fit`` returns self, learned state ends in ``_``.

    Args:
        min_subjects: least number of distinct training subjects with the code.
        min_count: least number of training events with the code.
        max_size: keep at most this many timed codes (the most frequent); None for no limit.
        parents: add the parent codes of kept ``//`` codes (the back-off targets).
    """

    def __init__(
        self,
        min_subjects: int = 5,
        min_count: int = 1,
        max_size: int | None = None,
        parents: bool = True,
    ):
        self.min_subjects = int(min_subjects)
        self.min_count = int(min_count)
        self.max_size = max_size
        self.parents = bool(parents)
        self.codes_: tuple[str, ...] | None = None
        self.static_codes_: tuple[str, ...] | None = None
        self.static_value_codes_: tuple[str, ...] = ()
        self.parent_codes_: tuple[str, ...] = ()

    def fit(self, events: pl.DataFrame | pl.LazyFrame) -> Vocabulary:
        """Learn the codes from **training** events only (e.g. ``dataset.events("train")``).

        Returns:
            self.
        """
        lazy = lazy_events(events)
        stats = (
            lazy.group_by(static=pl.col("time").is_null(), code=pl.col("code"))
            .agg(n_subjects=pl.col("subject_id").n_unique(), n_events=pl.len())
            .collect()
        )
        # Static codes with numeric values (a small query: static events only).
        if "numeric_value" in lazy.collect_schema().names():
            value = pl.col("numeric_value")
            with_values = (
                lazy.filter(pl.col("time").is_null() & value.is_not_null() & value.is_finite())
                .group_by("code")
                .agg(n_value_subjects=pl.col("subject_id").n_unique())
                .filter(pl.col("n_value_subjects") >= self.min_subjects)
                .collect()
            )
        else:
            with_values = pl.DataFrame({"code": pl.Series([], dtype=pl.Utf8)})
        timed = _rank_codes(stats.filter(~pl.col("static")), self.min_subjects, self.min_count)
        if self.max_size is not None:
            timed = timed[: self.max_size]
        static_stats = stats.filter(pl.col("static"))
        static = _rank_codes(static_stats, self.min_subjects, self.min_count)
        if self.parents:
            # Parents after every observed code: adding them never renumbers a real code.
            known = set(timed)
            parents = sorted({p for c in timed if (p := parent_code(c)) and p not in known})
            self.parent_codes_ = tuple(parents)
            timed += parents
        self.codes_ = tuple(timed)
        self.static_codes_ = tuple(sorted(static))
        self.static_value_codes_ = tuple(
            c for c in self.static_codes_ if c in set(with_values["code"].to_list())
        )
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
        """S, the width of :attr:`EventBatch.static`: static-code indicators, static values
        (:attr:`static_value_codes_`), then the extra columns."""
        self._check_fitted()
        return len(self.static_codes_) + len(self.static_value_codes_) + len(STATIC_EXTRA)

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
        """Ids of ``codes``, int64: an unknown code backs off to its parent's id where the
        vocabulary has the parent, else ``UNK_ID`` (class docstring)."""
        self._check_fitted()
        series = pl.Series("code", codes, dtype=pl.Utf8)
        frame = pl.DataFrame({"code": series}).with_columns(code_id_expr(self))
        return frame["code_id"].cast(pl.Int64).to_numpy()

    def parent_ids(self) -> np.ndarray:
        """(len(self),) int64: ``parent_ids()[i]`` is the id of code ``i``'s parent where the
        vocabulary has it, else ``UNK_ID`` (``PAD_ID`` -> ``PAD_ID``, ``UNK_ID`` -> ``UNK_ID``,
        a parent code -> ``UNK_ID``): what training replaces a code by to train the back-off."""
        self._check_fitted()
        index = dict(zip(self.codes_, range(N_RESERVED, len(self)), strict=True))
        out = np.full(len(self), UNK_ID, dtype=np.int64)
        out[PAD_ID] = PAD_ID
        for code, i in index.items():
            out[i] = index.get(parent_code(code) or "", UNK_ID)
        return out

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
            "static_value_codes": list(self.static_value_codes_),
            "parents": self.parents,
            "parent_codes": list(self.parent_codes_),
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
        # States written before parents and static values existed load as they were.
        parents = state.get("parents", False)
        vocab = cls(state["min_subjects"], state["min_count"], state["max_size"], parents)
        vocab.codes_ = tuple(str(c) for c in state["codes"])
        vocab.static_codes_ = tuple(str(c) for c in state["static_codes"])
        vocab.static_value_codes_ = tuple(str(c) for c in state.get("static_value_codes", ()))
        vocab.parent_codes_ = tuple(str(c) for c in state.get("parent_codes", ()))
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


#: Share of events with unseen codes above which ``densefeat embed`` warns.
UNSEEN_WARN_SHARE = 0.01


def unseen_codes(vocab: Vocabulary, events: pl.DataFrame | pl.LazyFrame) -> dict[str, Any]:
    """The timed codes of ``events`` that ``vocab`` lacks, and their share of timed events.

    What an encoder sees of data from another site: these events reach it as their parent code
    (``backoff`` ``"parent"``) or as ``UNK``. Pass events without coverage markers.

    Returns:
        ``{"n_events", "n_unseen_events", "share", "codes": [{"code", "n_events", "share",
        "backoff"}, ...]}`` (codes most frequent first; share of all timed events). JSON-able.
    """
    vocab._check_fitted()
    known = pl.Series(vocab.codes_, dtype=pl.Utf8).implode()
    counts = (
        lazy_events(events)
        .filter(pl.col("time").is_not_null())
        .group_by("code")
        .agg(n=pl.len())
        .collect()
    )
    total = int(counts["n"].sum()) if counts.height else 0
    unseen = counts.filter(~pl.col("code").is_in(known)).with_columns(code_id_expr(vocab))
    unseen = unseen.sort(["n", "code"], descending=[True, False])
    rows = [
        {
            "code": code,
            "n_events": int(n),
            "share": n / total if total else 0.0,
            "backoff": "UNK" if cid == UNK_ID else "parent",
        }
        for code, n, cid in unseen.select("code", "n", "code_id").iter_rows()
    ]
    n_unseen = sum(r["n_events"] for r in rows)
    return {
        "n_events": total,
        "n_unseen_events": n_unseen,
        "share": n_unseen / total if total else 0.0,
        "codes": rows,
    }
