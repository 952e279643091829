"""Patient histories at a prediction time -> model-ready batches (:class:`EventBatch`).

The pipeline, and where leakage is ruled out:

1. :class:`Vocabulary` and :class:`NumericNormalizer` are fitted on the **training split only**
   (:meth:`HistoryBuilder.fit` takes the dataset and reads ``dataset.events("train")``), and are
   serialisable to a JSON-able dict so they live in a checkpoint. Codes unseen in training (e.g.
   at another hospital) map to ``UNK``.
2. :meth:`HistoryBuilder.encode` turns MEDS events into an :class:`EventStore`: one compact,
   sorted event array (time, code id, normalised value, delta_t; ~17 bytes an event) plus
   per-subject start/end offsets, birth times and static-code indicators. It is built shard by
   shard, so the strings of only one MEDS data file are in memory at a time.
3. :meth:`EventStore.gather` cuts each requested ``(subject_id, prediction_time)`` row with a
   vectorised binary search (``time <= prediction_time``; static events always enter through
   ``static``), keeps the last ``max_len`` events and gathers them into an :class:`EventBatch`.
   After gathering it re-checks, on the gathered times, that no event is later than its row's
   prediction time (a cheap guarantee, not a convention) and raises if one is.

Everything is vectorised numpy/polars: the only Python loops run over shards, batches or the
~log2(events per subject) steps of the binary search, never over events.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import meds
import numpy as np
import polars as pl
import torch

from .meds import MedsDataset, conform_events

__all__ = [
    "DAYS_PER_YEAR",
    "DEFAULT_MAX_LEN",
    "PAD_ID",
    "UNK_ID",
    "US_PER_DAY",
    "EventBatch",
    "EventStore",
    "HistoryBatches",
    "HistoryBuilder",
    "NumericNormalizer",
    "Vocabulary",
    "build_batch",
    "end_of_record",
]

#: Reserved code ids: padding and codes unseen (or too rare) in the training split.
PAD_ID = 0
UNK_ID = 1
N_RESERVED = 2
US_PER_DAY = 86_400_000_000
DAYS_PER_YEAR = 365.25
DEFAULT_MAX_LEN = 256
_US_PER_YEAR = US_PER_DAY * DAYS_PER_YEAR
#: Extra columns at the end of :attr:`EventBatch.static`, after the static-code indicators.
STATIC_EXTRA = ("age_at_prediction_years", "age_known")


# --------------------------------------------------------------------------------------------
# The batch contract.


@dataclass(frozen=True)
class EventBatch:
    """A batch of patient histories cut at prediction times: THE contract of densefeat's EHR side.

    ``B`` rows (one per ``(subject_id, prediction_time)``), ``L`` event positions, ``S`` static
    features. All tensors are on one device.

    Padding is on the **left**: row ``i`` holds its ``n_i = mask[i].sum()`` events in positions
    ``L - n_i .. L - 1``, oldest first, so the most recent event is always at position ``L - 1``
    (models may pool the last position; windows and truncation align at the end). Every padded
    position holds 0 in every ``(B, L)`` field (``codes == PAD_ID``, ``has_value`` False). A row
    may have ``n_i == 0`` (only static events before its prediction time): models must cope with
    an all-False ``mask`` row.

    Attributes:
        subject_id: (B,) int64.
        prediction_time: (B,) int64, microseconds since 1970-01-01 (MEDS's naive timestamps).
        codes: (B, L) int64 vocabulary ids; ``PAD_ID`` (0) on padding, ``UNK_ID`` (1) for codes
            unseen or too rare in the training split.
        values: (B, L) float32 normalised numeric values (see :class:`NumericNormalizer`); 0
            where the event has no (usable) value.
        has_value: (B, L) bool, True where ``values`` holds a normalised value.
        delta_t: (B, L) float32 days since the subject's previous timed event in the full record
            (also when that event was truncated away); 0 for the first event and for events at
            the same time as their predecessor.
        age: (B, L) float32 years at the event (from the ``MEDS_BIRTH`` event); 0 where the birth
            time is unknown (see ``age_known``).
        time_before_prediction: (B, L) float32 days from the event to the prediction time,
            ``>= 0`` on every real event (the no-leakage guarantee).
        mask: (B, L) bool, True on real events.
        static: (B, S) float32: one-hot (0/1) indicators of the vocabulary's static codes
            (``Vocabulary.static_codes_``, events with null time) followed by
            ``age_at_prediction_years`` (0 if unknown) and ``age_known`` (0/1).
        age_known: (B,) bool, whether the subject has a ``MEDS_BIRTH`` event.
    """

    subject_id: torch.Tensor
    prediction_time: torch.Tensor
    codes: torch.Tensor
    values: torch.Tensor
    has_value: torch.Tensor
    delta_t: torch.Tensor
    age: torch.Tensor
    time_before_prediction: torch.Tensor
    mask: torch.Tensor
    static: torch.Tensor
    age_known: torch.Tensor

    #: The (B, L) fields, which views gather and padding zeroes.
    SEQUENCE_FIELDS = (
        "codes",
        "values",
        "has_value",
        "delta_t",
        "age",
        "time_before_prediction",
        "mask",
    )

    @property
    def batch_size(self) -> int:
        """B, the number of rows."""
        return int(self.codes.shape[0])

    @property
    def seq_len(self) -> int:
        """L, the number of event positions."""
        return int(self.codes.shape[1])

    @property
    def lengths(self) -> torch.Tensor:
        """(B,) int64, the number of real events of each row."""
        return self.mask.sum(dim=1)

    def __len__(self) -> int:
        return self.batch_size

    def to(self, device: torch.device | str, non_blocking: bool = False) -> EventBatch:
        """The same batch with every tensor on ``device``."""
        return EventBatch(
            **{
                f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                for f in fields(self)
            }
        )

    def pin_memory(self) -> EventBatch:
        """Pinned copy (torch's DataLoader calls this with ``pin_memory=True``)."""
        return EventBatch(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})

    def validate(self) -> EventBatch:
        """Check the contract (shapes, dtypes, left padding, zeros on padding, no leakage).

        Returns:
            self, so it chains.

        Raises:
            ValueError: naming the violated rule.
        """
        b, seq = self.codes.shape
        want = {
            "subject_id": ((b,), torch.int64),
            "prediction_time": ((b,), torch.int64),
            "codes": ((b, seq), torch.int64),
            "values": ((b, seq), torch.float32),
            "has_value": ((b, seq), torch.bool),
            "delta_t": ((b, seq), torch.float32),
            "age": ((b, seq), torch.float32),
            "time_before_prediction": ((b, seq), torch.float32),
            "mask": ((b, seq), torch.bool),
            "age_known": ((b,), torch.bool),
        }
        for name, (shape, dtype) in want.items():
            t = getattr(self, name)
            if tuple(t.shape) != shape or t.dtype != dtype:
                raise ValueError(
                    f"EventBatch.{name}: {tuple(t.shape)} {t.dtype}, want {shape} {dtype}"
                )
        if self.static.ndim != 2 or self.static.shape[0] != b:
            raise ValueError(f"EventBatch.static: shape {tuple(self.static.shape)}")
        # Left padding: once a row's mask turns True it stays True.
        if seq > 1 and (self.mask[:, 1:].int() < self.mask[:, :-1].int()).any():
            raise ValueError("EventBatch.mask: real events must be right-aligned (left padding)")
        pad = ~self.mask
        for name in self.SEQUENCE_FIELDS:
            if name != "mask" and (getattr(self, name)[pad] != 0).any():
                raise ValueError(f"EventBatch.{name}: non-zero on padding")
        if (self.codes[self.mask] == PAD_ID).any():
            raise ValueError("EventBatch.codes: PAD_ID on a real event")
        if (self.has_value & ~self.mask).any():
            raise ValueError("EventBatch.has_value: True on padding")
        if (self.time_before_prediction[self.mask] < 0).any():
            raise ValueError("EventBatch: an event after its prediction time (leakage)")
        return self


# --------------------------------------------------------------------------------------------
# Vocabulary and numeric normalisation (fitted on the training split only).


def _as_lazy(events: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    return conform_events(events.lazy(), "events")


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
            _as_lazy(events)
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


#: IQR of a normal distribution in units of its standard deviation.
_IQR_PER_SIGMA = 1.3489795


class NumericNormalizer:
    """Per-code robust standardisation of ``numeric_value``, fitted on the training split.

    ``z = clip((x - median) / scale, -clip, clip)`` with ``scale = IQR / 1.349`` (the IQR of a
    normal distribution is 1.349 sigma, so ``z`` is a z-score for normal data). Robust on
    purpose: lab columns of real hospitals carry sentinel values (99999) and unit mix-ups that
    would dominate a mean/std. Where the IQR is 0 (a code with mostly one value) the standard
    deviation is used instead, and where that is 0 too the scale is 1 (centring only). The clip
    (default 10) bounds what a unit error at another hospital can do to a model.

    Codes with fewer than ``min_values`` finite training values have no statistics: their values
    are not normalised and, because a raw value on an arbitrary scale (e.g. platelets 250000)
    would swamp a model, they are dropped (``has_value`` False, value 0; the event itself stays)
    unless ``unfitted="raw"``, which passes them through unchanged. Non-finite values are always
    dropped.

    Args:
        min_values: least number of finite training values for a code to get statistics.
        clip: bound on ``|z|``; None for no clipping.
        unfitted: ``"drop"`` or ``"raw"``, what to do with values of codes without statistics.
    """

    def __init__(self, min_values: int = 10, clip: float | None = 10.0, unfitted: str = "drop"):
        if unfitted not in ("drop", "raw"):
            raise ValueError(f"unfitted must be 'drop' or 'raw', got {unfitted!r}")
        self.min_values = int(min_values)
        self.clip = clip
        self.unfitted = unfitted
        self.codes_: tuple[str, ...] | None = None
        self.center_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.count_: np.ndarray | None = None

    def fit(self, events: pl.DataFrame | pl.LazyFrame) -> NumericNormalizer:
        """Learn per-code statistics from **training** events only.

        Returns:
            self.
        """
        x = pl.col("numeric_value").cast(pl.Float64)
        stats = (
            _as_lazy(events)
            .filter(pl.col("numeric_value").is_not_null() & pl.col("numeric_value").is_finite())
            .group_by("code")
            .agg(
                n=pl.len(),
                median=x.median(),
                iqr=x.quantile(0.75, "linear") - x.quantile(0.25, "linear"),
                std=x.std(),
            )
            .filter(pl.col("n") >= self.min_values)
            .sort("code")
            .collect()
        )
        iqr_scale = stats["iqr"].to_numpy() / _IQR_PER_SIGMA
        std = np.nan_to_num(stats["std"].to_numpy(), nan=0.0)
        scale = np.where(iqr_scale > 0, iqr_scale, np.where(std > 0, std, 1.0))
        self.codes_ = tuple(stats["code"].to_list())
        self.center_ = stats["median"].to_numpy().astype(np.float64)
        self.scale_ = scale.astype(np.float64)
        self.count_ = stats["n"].to_numpy().astype(np.int64)
        return self

    def _check_fitted(self) -> None:
        if self.codes_ is None:
            raise RuntimeError("NumericNormalizer is not fitted: call fit() or from_dict() first")

    def stats_table(self) -> pl.DataFrame:
        """``code``, ``center`` Float64, ``scale`` Float64 of the codes with statistics."""
        self._check_fitted()
        return pl.DataFrame(
            {
                "code": pl.Series(self.codes_, dtype=pl.Utf8),
                "center": pl.Series(self.center_, dtype=pl.Float64),
                "scale": pl.Series(self.scale_, dtype=pl.Float64),
            }
        )

    def normalize_expr(self, value: pl.Expr, center: pl.Expr, scale: pl.Expr) -> pl.Expr:
        """Normalised value (null where dropped) from joined ``center``/``scale`` columns."""
        z = (value.cast(pl.Float64) - center) / scale
        if self.clip is not None:
            z = z.clip(-self.clip, self.clip)
        fallback = value.cast(pl.Float64) if self.unfitted == "raw" else pl.lit(None, pl.Float64)
        out = pl.when(center.is_not_null()).then(z).otherwise(fallback)
        # Non-finite inputs (inf, nan) never reach a model.
        return pl.when(out.is_finite()).then(out).otherwise(None).cast(pl.Float32)

    def transform(self, codes: Sequence[str], values: Sequence[float | None]) -> np.ndarray:
        """Normalised values (NaN where dropped), float32; for inspection and tests."""
        frame = pl.DataFrame(
            {"code": pl.Series(codes, dtype=pl.Utf8), "v": pl.Series(values, dtype=pl.Float64)}
        ).join(self.stats_table(), on="code", how="left", maintain_order="left")
        out = frame.select(
            self.normalize_expr(pl.col("v"), pl.col("center"), pl.col("scale")).fill_null(
                float("nan")
            )
        )
        return out.to_series().to_numpy()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict for checkpoints (floats round-trip exactly through JSON)."""
        self._check_fitted()
        return {
            "kind": "densefeat.NumericNormalizer",
            "version": 1,
            "method": "median/IQR",
            "min_values": self.min_values,
            "clip": self.clip,
            "unfitted": self.unfitted,
            "codes": list(self.codes_),
            "center": [float(c) for c in self.center_],
            "scale": [float(s) for s in self.scale_],
            "count": [int(n) for n in self.count_],
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> NumericNormalizer:
        """Inverse of :meth:`to_dict`."""
        if state.get("kind") != "densefeat.NumericNormalizer":
            raise ValueError(
                f"not a densefeat NumericNormalizer state (kind={state.get('kind')!r})"
            )
        norm = cls(state["min_values"], state["clip"], state["unfitted"])
        norm.codes_ = tuple(str(c) for c in state["codes"])
        norm.center_ = np.asarray(state["center"], dtype=np.float64)
        norm.scale_ = np.asarray(state["scale"], dtype=np.float64)
        norm.count_ = np.asarray(state["count"], dtype=np.int64)
        return norm

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> NumericNormalizer:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


# --------------------------------------------------------------------------------------------
# The encoded event store.


def rows_searchsorted(
    values: np.ndarray, lo: np.ndarray, hi: np.ndarray, target: np.ndarray
) -> np.ndarray:
    """Per row ``r``, the first index in ``[lo[r], hi[r])`` with ``values > target[r]``.

    ``values`` must be sorted within each ``[lo, hi)`` range (one subject's times). A vectorised
    binary search: ~log2(max range length) numpy steps over all rows at once, no per-row loop.
    """
    lo = lo.astype(np.int64, copy=True)
    hi = hi.astype(np.int64, copy=True)
    if values.size == 0:
        return lo
    last = values.size - 1
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) >> 1
        right = active & (values[np.minimum(mid, last)] <= target)
        lo = np.where(right, mid + 1, lo)
        hi = np.where(active & ~right, mid, hi)


@dataclass(frozen=True)
class EventStore:
    """Encoded timed events of many subjects in one sorted array, plus per-subject offsets.

    Events of subject ``k`` (``subject_ids[k]``, ascending) are ``start[k]:end[k]`` of the event
    arrays, sorted by time. Each event array has one extra zero element at index ``n_events``,
    the target of padded positions, so a gather needs no second masking pass.

    Attributes:
        subject_ids: (N,) int64, ascending.
        start, end: (N,) int64 offsets into the event arrays.
        time: (E + 1,) int64 microseconds.
        code: (E + 1,) int32 vocabulary ids.
        value: (E + 1,) float32 normalised values, 0 where absent.
        has_value: (E + 1,) bool.
        delta_t: (E + 1,) float32 days since the subject's previous timed event (0 for its first).
        birth: (N,) int64 microseconds of ``MEDS_BIRTH`` (0 where unknown).
        birth_known: (N,) bool.
        static: (N, n_static_codes) bool indicators of the vocabulary's static codes.
    """

    subject_ids: np.ndarray
    start: np.ndarray
    end: np.ndarray
    time: np.ndarray
    code: np.ndarray
    value: np.ndarray
    has_value: np.ndarray
    delta_t: np.ndarray
    birth: np.ndarray
    birth_known: np.ndarray
    static: np.ndarray

    @property
    def n_events(self) -> int:
        """Number of timed events (static events are in ``static``)."""
        return int(self.time.size - 1)

    @property
    def n_subjects(self) -> int:
        """Number of subjects."""
        return int(self.subject_ids.size)

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        return sum(getattr(self, f.name).nbytes for f in fields(self))

    def index_of(self, subject_id: np.ndarray) -> np.ndarray:
        """Positions of ``subject_id`` in :attr:`subject_ids`.

        Raises:
            KeyError: a subject that is not in the store (named, up to 5).
        """
        subject_id = np.asarray(subject_id, dtype=np.int64)
        idx = np.searchsorted(self.subject_ids, subject_id)
        idx_c = np.minimum(idx, max(self.n_subjects - 1, 0))
        found = (idx < self.n_subjects) & (self.subject_ids[idx_c] == subject_id)
        if not found.all():
            missing = np.unique(subject_id[~found])[:5].tolist()
            raise KeyError(f"subjects not in the event store: {missing}")
        return idx_c

    def count_at_or_before(self, idx: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Number of timed events of subjects ``idx`` with ``time <= times`` (int64 us)."""
        cut = rows_searchsorted(self.time, self.start[idx], self.end[idx], times)
        return cut - self.start[idx]

    def first_time(self) -> np.ndarray:
        """(N,) int64 time of each subject's first timed event (``INT64_MIN`` if none)."""
        has = self.end > self.start
        return np.where(has, self.time[np.where(has, self.start, 0)], np.iinfo(np.int64).min)

    def last_time(self) -> np.ndarray:
        """(N,) int64 time of each subject's last timed event (``INT64_MIN`` if none)."""
        has = self.end > self.start
        return np.where(has, self.time[np.where(has, self.end - 1, 0)], np.iinfo(np.int64).min)

    def end_of_record(self) -> pl.DataFrame:
        """``subject_id, prediction_time``: each subject's last timed event (subjects with one)."""
        has = self.end > self.start
        return pl.DataFrame(
            {
                "subject_id": pl.Series(self.subject_ids[has], dtype=pl.Int64),
                "prediction_time": pl.Series(self.last_time()[has], dtype=pl.Int64).cast(
                    pl.Datetime("us")
                ),
            }
        )

    def gather(
        self,
        subject_id: np.ndarray,
        prediction_time: np.ndarray,
        max_len: int = DEFAULT_MAX_LEN,
    ) -> EventBatch:
        """The :class:`EventBatch` of rows ``(subject_id[i], prediction_time[i])``.

        Only events with ``time <= prediction_time`` enter (the last ``max_len`` of them), left
        padded; see :class:`EventBatch` for every field.

        Args:
            subject_id: (B,) int64 subjects, all in the store.
            prediction_time: (B,) int64 microseconds.
            max_len: L.

        Raises:
            KeyError: an unknown subject.
            RuntimeError: an event after its prediction time reached the batch (cannot happen
                unless the store is corrupt; checked because it is the guarantee).
        """
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        sid = np.asarray(subject_id, dtype=np.int64)
        pt = np.asarray(prediction_time, dtype=np.int64)
        idx = self.index_of(sid)
        lo = self.start[idx]
        cut = rows_searchsorted(self.time, lo, self.end[idx], pt)
        n = np.minimum(cut - lo, max_len)  # last-L truncation
        pos = np.arange(max_len, dtype=np.int64)[None, :] - (max_len - n)[:, None]
        mask = pos >= 0
        ev = np.where(mask, (cut - n)[:, None] + pos, self.n_events)  # padding -> zero element
        time = self.time[ev]
        if (time[mask] > np.repeat(pt, n)).any():
            raise RuntimeError("an event after its prediction time reached a batch (leakage)")
        known = self.birth_known[idx]
        birth = self.birth[idx]
        tbp = np.where(mask, (pt[:, None] - time) / US_PER_DAY, 0.0)
        age = np.where(mask & known[:, None], (time - birth[:, None]) / _US_PER_YEAR, 0.0)
        age_now = np.where(known, (pt - birth) / _US_PER_YEAR, 0.0)
        static = np.concatenate(
            [self.static[idx].astype(np.float32), age_now[:, None], known[:, None]],
            axis=1,
            dtype=np.float32,
        )
        t = torch.from_numpy
        return EventBatch(
            subject_id=t(sid.copy()),
            prediction_time=t(pt.copy()),
            codes=t(self.code[ev].astype(np.int64)),
            values=t(self.value[ev]),
            has_value=t(self.has_value[ev]),
            delta_t=t(self.delta_t[ev]),
            age=t(age.astype(np.float32)),
            time_before_prediction=t(tbp.astype(np.float32)),
            mask=t(mask),
            static=t(static),
            age_known=t(known.copy()),
        )

    @classmethod
    def concat(cls, parts: Sequence[EventStore], n_static: int) -> EventStore:
        """One store from stores of disjoint subjects (e.g. one per MEDS shard)."""
        parts = [p for p in parts if p.n_subjects]
        if not parts:
            return _empty_store(n_static)
        if len(parts) == 1:
            return parts[0]
        shift = np.cumsum([0] + [p.n_events for p in parts[:-1]])
        subject_ids = np.concatenate([p.subject_ids for p in parts])
        order = np.argsort(subject_ids, kind="stable")
        if np.any(np.diff(subject_ids[order]) == 0):
            dup = subject_ids[order][np.flatnonzero(np.diff(subject_ids[order]) == 0)[0]]
            raise ValueError(f"subject {dup} appears in two shards")

        def per_subject(name: str, offset: bool = False) -> np.ndarray:
            arrays = [
                getattr(p, name) + s if offset else getattr(p, name)
                for p, s in zip(parts, shift, strict=True)
            ]
            return np.concatenate(arrays)[order]

        def per_event(name: str) -> np.ndarray:
            # Drop each part's zero element; one at the very end.
            return np.concatenate([getattr(p, name)[:-1] for p in parts] + [_ZERO[name]])

        return cls(
            subject_ids=subject_ids[order],
            start=per_subject("start", offset=True),
            end=per_subject("end", offset=True),
            time=per_event("time"),
            code=per_event("code"),
            value=per_event("value"),
            has_value=per_event("has_value"),
            delta_t=per_event("delta_t"),
            birth=per_subject("birth"),
            birth_known=per_subject("birth_known"),
            static=np.concatenate([p.static for p in parts])[order],
        )


_ZERO = {
    "time": np.zeros(1, np.int64),
    "code": np.zeros(1, np.int32),
    "value": np.zeros(1, np.float32),
    "has_value": np.zeros(1, bool),
    "delta_t": np.zeros(1, np.float32),
}


def _empty_store(n_static: int) -> EventStore:
    none = np.zeros(0, np.int64)
    return EventStore(
        subject_ids=none,
        start=none,
        end=none,
        birth=none,
        birth_known=np.zeros(0, bool),
        static=np.zeros((0, n_static), bool),
        **{k: v.copy() for k, v in _ZERO.items()},
    )


def _sorted_events(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` sorted by subject_id, then time (static first); sorts only when needed."""
    sid = frame["subject_id"]
    key = frame["time"].cast(pl.Int64).fill_null(np.iinfo(np.int64).min)
    same = sid == sid.shift(1)
    in_order = sid.is_sorted() and not (same & (key < key.shift(1))).any()
    if in_order:
        return frame
    return frame.sort(["subject_id", "time"], nulls_last=False, maintain_order=True)


def _encode_frame(
    frame: pl.LazyFrame, vocab: Vocabulary, normalizer: NumericNormalizer | None
) -> EventStore:
    """Encode one frame of whole subjects (a MEDS shard) into an :class:`EventStore`."""
    lookup = vocab.code_table()
    static_lookup = pl.DataFrame(
        {
            "code": pl.Series(vocab.static_codes_, dtype=pl.Utf8),
            "static_col": pl.Series(np.arange(len(vocab.static_codes_)), dtype=pl.Int32),
        }
    )
    if normalizer is not None:
        stats = normalizer.stats_table()
        lookup = lookup.join(stats, on="code", how="full", coalesce=True)
        value = normalizer.normalize_expr(
            pl.col("numeric_value"), pl.col("center"), pl.col("scale")
        )
    else:
        value = pl.lit(None, pl.Float32)
    events = _sorted_events(frame.select("subject_id", "time", "code", "numeric_value").collect())
    subject_ids = events["subject_id"].unique(maintain_order=True).to_numpy()
    n_static = len(vocab.static_codes_)

    # Static events -> per-subject indicators (codes outside the static vocabulary dropped).
    stat = (
        events.filter(pl.col("time").is_null())
        .select("subject_id", "code")
        .join(static_lookup, on="code", how="inner")
    )
    static = np.zeros((subject_ids.size, n_static), dtype=bool)
    static[
        np.searchsorted(subject_ids, stat["subject_id"].to_numpy()), stat["static_col"].to_numpy()
    ] = True

    timed = (
        events.filter(pl.col("time").is_not_null())
        .join(lookup, on="code", how="left", maintain_order="left")
        .select(
            "subject_id",
            pl.col("time").cast(pl.Int64),
            pl.col("code_id").fill_null(UNK_ID),
            value.alias("value"),
            (pl.col("code") == meds.birth_code).alias("is_birth"),
        )
    )
    del events
    sid = timed["subject_id"].to_numpy()
    time = timed["time"].to_numpy()
    start = np.searchsorted(sid, subject_ids, side="left")
    end = np.searchsorted(sid, subject_ids, side="right")
    delta = np.zeros(time.size, dtype=np.float32)
    if time.size > 1:
        same = sid[1:] == sid[:-1]
        delta[1:] = np.where(same, (time[1:] - time[:-1]) / US_PER_DAY, 0.0)
    births = timed.filter(pl.col("is_birth")).group_by("subject_id").agg(pl.col("time").min())
    birth = np.zeros(subject_ids.size, dtype=np.int64)
    birth_known = np.zeros(subject_ids.size, dtype=bool)
    b_idx = np.searchsorted(subject_ids, births["subject_id"].to_numpy())
    birth[b_idx] = births["time"].to_numpy()
    birth_known[b_idx] = True
    values = timed["value"]
    has_value = values.is_not_null().to_numpy()
    return EventStore(
        subject_ids=subject_ids.astype(np.int64),
        start=start.astype(np.int64),
        end=end.astype(np.int64),
        time=np.concatenate([time, _ZERO["time"]]),
        code=np.concatenate([timed["code_id"].to_numpy().astype(np.int32), _ZERO["code"]]),
        value=np.concatenate([values.fill_null(0.0).to_numpy(), _ZERO["value"]]),
        has_value=np.concatenate([has_value, _ZERO["has_value"]]),
        delta_t=np.concatenate([delta, _ZERO["delta_t"]]),
        birth=birth,
        birth_known=birth_known,
        static=static,
    )


# --------------------------------------------------------------------------------------------
# The builder: fitted state + encoding + batches.


def _rows_arrays(rows: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``subject_id`` and ``prediction_time`` (int64 us) of a rows/labels frame."""
    for name in ("subject_id", "prediction_time"):
        if name not in rows.columns:
            raise ValueError(f"rows: missing column {name!r} (columns: {', '.join(rows.columns)})")
    ptime = rows.schema["prediction_time"]
    if not isinstance(ptime, pl.Datetime) or ptime.time_zone is not None:
        raise ValueError(f"rows: column 'prediction_time' has dtype {ptime}; want naive Datetime")
    frame = rows.select(
        pl.col("subject_id").cast(pl.Int64),
        pl.col("prediction_time").cast(pl.Datetime("us")).cast(pl.Int64),
    )
    if frame.null_count().sum_horizontal().item():
        raise ValueError("rows: null subject_id or prediction_time")
    return frame["subject_id"].to_numpy(), frame["prediction_time"].to_numpy()


#: Codes that mark data coverage, not clinical events: kept in MEDS (censoring uses them) but
#: never fed to a model. An observation-end marker in a history would tell the encoder
#: "this record is over", a shortcut no prediction time inside the record can see.
COVERAGE_MARKER_CODES = ("MEDS_OBSERVATION_START", "MEDS_OBSERVATION_END")


def _drop_coverage_markers(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.filter(~pl.col("code").is_in(list(COVERAGE_MARKER_CODES)))


def end_of_record(events: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """``subject_id, prediction_time``: every subject's last timed clinical event, by subject.

    Coverage markers (:data:`COVERAGE_MARKER_CODES`) do not count as events.
    """
    return (
        _drop_coverage_markers(_as_lazy(events))
        .filter(pl.col("time").is_not_null())
        .group_by("subject_id")
        .agg(prediction_time=pl.col("time").max())
        .sort("subject_id")
        .collect()
    )


class HistoryBuilder:
    """Vocabulary + normaliser + ``max_len``: turns MEDS events into :class:`EventBatch` es.

    Typical use::

        ds = read_meds_dataset(path)
        builder = HistoryBuilder.fit(ds)              # training split only
        store = builder.encode(ds)                    # all subjects, shard by shard
        batch = builder.build_batch(store, labels)    # labels: subject_id, prediction_time
        ckpt["history"] = builder.to_dict()

    Args:
        vocabulary: a fitted :class:`Vocabulary`.
        normalizer: a fitted :class:`NumericNormalizer`, or None to ignore numeric values.
        max_len: L, the number of most recent events kept.
    """

    def __init__(
        self,
        vocabulary: Vocabulary,
        normalizer: NumericNormalizer | None = None,
        max_len: int = DEFAULT_MAX_LEN,
    ):
        vocabulary._check_fitted()
        if normalizer is not None:
            normalizer._check_fitted()
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self.vocabulary = vocabulary
        self.normalizer = normalizer
        self.max_len = int(max_len)

    @classmethod
    def fit(
        cls,
        data: MedsDataset | pl.DataFrame | pl.LazyFrame,
        *,
        split: str | None = "train",
        max_len: int = DEFAULT_MAX_LEN,
        min_subjects: int = 5,
        min_count: int = 1,
        max_size: int | None = None,
        min_values: int = 10,
        clip: float | None = 10.0,
    ) -> HistoryBuilder:
        """Fit vocabulary and normaliser on one split of a dataset (the training split).

        Args:
            data: a :class:`MedsDataset` (its ``split`` subjects are used), or events that are
                already the training events (then ``split`` must be None).
            split: the split to fit on; ``"train"`` unless you know why not.
            max_len, min_subjects, min_count, max_size, min_values, clip: see the classes.
        """
        if isinstance(data, MedsDataset):
            if split is None:
                raise ValueError("fit on a MedsDataset needs a split (normally 'train')")
            events = data.events(split)
        else:
            if split is not None:
                raise ValueError(
                    "fit on plain events cannot select a split: pass the training events and "
                    "split=None"
                )
            events = data
        events = _drop_coverage_markers(_as_lazy(events)).cache()
        vocab = Vocabulary(min_subjects, min_count, max_size).fit(events)
        norm = NumericNormalizer(min_values, clip).fit(events)
        return cls(vocab, norm, max_len)

    def encode(
        self,
        data: MedsDataset | pl.DataFrame | pl.LazyFrame | Iterable[pl.LazyFrame],
        subjects: Sequence[int] | np.ndarray | pl.Series | None = None,
    ) -> EventStore:
        """Encode events into an :class:`EventStore` (one MEDS data file at a time).

        Args:
            data: a dataset, an event frame, or frames of disjoint subjects.
            subjects: keep only these subjects (e.g. one split's ids); None for all.
        """
        if isinstance(data, MedsDataset):
            frames: Iterable[pl.LazyFrame] = [
                conform_events(pl.scan_parquet(f), str(f)) for f in data.data_files
            ]
        elif isinstance(data, pl.DataFrame | pl.LazyFrame):
            frames = [_as_lazy(data)]
        else:
            frames = [_as_lazy(f) for f in data]
        keep = None if subjects is None else pl.Series(subjects, dtype=pl.Int64).implode()
        parts = []
        for frame in frames:
            if keep is not None:
                frame = frame.filter(pl.col("subject_id").is_in(keep))
            frame = _drop_coverage_markers(frame)
            parts.append(_encode_frame(frame, self.vocabulary, self.normalizer))
        return EventStore.concat(parts, len(self.vocabulary.static_codes_))

    def build_batch(
        self,
        events: EventStore | pl.DataFrame | pl.LazyFrame,
        rows: pl.DataFrame,
        max_len: int | None = None,
    ) -> EventBatch:
        """One :class:`EventBatch` for ``rows`` (``subject_id``, ``prediction_time``), in order.

        Args:
            events: an encoded store (fast), or MEDS events (encoded here, for small data).
            rows: labels or cut-offs; other columns are ignored.
            max_len: overrides the builder's L.
        """
        store = events if isinstance(events, EventStore) else self.encode(events)
        sid, pt = _rows_arrays(rows)
        return store.gather(sid, pt, max_len or self.max_len)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state for a checkpoint."""
        return {
            "kind": "densefeat.HistoryBuilder",
            "version": 1,
            "max_len": self.max_len,
            "vocabulary": self.vocabulary.to_dict(),
            "normalizer": None if self.normalizer is None else self.normalizer.to_dict(),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> HistoryBuilder:
        """Inverse of :meth:`to_dict`."""
        if state.get("kind") != "densefeat.HistoryBuilder":
            raise ValueError(f"not a densefeat HistoryBuilder state (kind={state.get('kind')!r})")
        norm = state.get("normalizer")
        return cls(
            Vocabulary.from_dict(state["vocabulary"]),
            None if norm is None else NumericNormalizer.from_dict(norm),
            state["max_len"],
        )


def build_batch(
    events: EventStore | pl.DataFrame | pl.LazyFrame,
    rows: pl.DataFrame,
    builder: HistoryBuilder,
    max_len: int | None = None,
) -> EventBatch:
    """Functional form of :meth:`HistoryBuilder.build_batch`."""
    return builder.build_batch(events, rows, max_len)


# --------------------------------------------------------------------------------------------
# Iteration for training.


def batch_slices(
    n_rows: int,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int = 0,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> list[np.ndarray]:
    """Row indices of each batch this worker/rank yields, in order.

    The permutation comes from ``torch.Generator().manual_seed(seed + epoch)``, so every rank
    and worker computes the same one and takes every ``world_size * num_workers``-th batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if shuffle:
        gen = torch.Generator().manual_seed(int(seed) + int(epoch))
        order = torch.randperm(n_rows, generator=gen).numpy()
    else:
        order = np.arange(n_rows)
    stop = n_rows - n_rows % batch_size if drop_last else n_rows
    batches = [order[i : i + batch_size] for i in range(0, stop, batch_size)]
    shard, n_shards = rank, world_size
    info = torch.utils.data.get_worker_info()
    if info is not None:
        shard, n_shards = rank * info.num_workers + info.id, world_size * info.num_workers
    return batches[shard::n_shards]


@dataclass
class BatchOrder:
    """The seeded order of one rank's batches over ``n_rows`` rows, epoch by epoch.

    Shared by the batch iterables (:class:`HistoryBatches`, ``WindowPairBatches``): each holds
    one and asks it for :meth:`slices` and its length.
    """

    n_rows: int
    batch_size: int
    shuffle: bool = True
    seed: int = 0
    drop_last: bool = False
    rank: int = 0
    world_size: int = 1
    epoch: int = 0

    def __len__(self) -> int:
        """Batches one rank gets per epoch (before splitting between DataLoader workers)."""
        n, b = self.n_rows, self.batch_size
        full = n // b if self.drop_last else math.ceil(n / b)
        return len(range(self.rank, full, self.world_size))

    def slices(self) -> list[np.ndarray]:
        """Row indices of this rank's (and DataLoader worker's) batches in this epoch."""
        return batch_slices(
            self.n_rows,
            self.batch_size,
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=self.epoch,
            drop_last=self.drop_last,
            rank=self.rank,
            world_size=self.world_size,
        )


class HistoryBatches(torch.utils.data.IterableDataset):
    """Batches of histories for training, built lazily from an :class:`EventStore`.

    Only the compact store is in memory; each batch is gathered when it is reached. Use with
    ``torch.utils.data.DataLoader(ds, batch_size=None)`` (the dataset already batches) and call
    :meth:`set_epoch` each epoch for a new, still seeded, order.

    Args:
        store: the encoded events.
        rows: ``subject_id, prediction_time`` (labels or :meth:`EventStore.end_of_record`).
        batch_size: rows per batch.
        max_len: L.
        shuffle: permute rows each epoch (seeded by ``seed + epoch``).
        seed: the shuffle seed.
        drop_last: drop a last, smaller batch.
        label_column: when set, yield ``(EventBatch, labels)`` with ``labels`` the column's
            values as a tensor (float32 for boolean labels) in the batch's row order.
        rank, world_size: distributed sharding of batches.
    """

    def __init__(
        self,
        store: EventStore,
        rows: pl.DataFrame,
        *,
        batch_size: int = 256,
        max_len: int = DEFAULT_MAX_LEN,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        label_column: str | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        super().__init__()
        self.store = store
        self.subject_id, self.prediction_time = _rows_arrays(rows)
        store.index_of(self.subject_id)  # unknown subjects fail now, not mid-epoch
        self.labels = None
        if label_column is not None:
            col = rows[label_column]
            dtype = pl.Float32 if col.dtype == pl.Boolean else col.dtype
            self.labels = torch.from_numpy(col.cast(dtype).to_numpy().copy())
        self.max_len = max_len
        self.order = BatchOrder(
            self.subject_id.size, batch_size, shuffle, seed, drop_last, rank, world_size
        )

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` (as ``DistributedSampler.set_epoch``)."""
        self.order.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[EventBatch | tuple[EventBatch, torch.Tensor]]:
        for rows in self.order.slices():
            batch = self.store.gather(
                self.subject_id[rows], self.prediction_time[rows], self.max_len
            )
            yield batch if self.labels is None else (batch, self.labels[rows])
