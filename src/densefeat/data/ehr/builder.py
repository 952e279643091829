""":class:`HistoryBuilder`: the fitted vocabulary and normaliser plus ``max_len``, which turn MEDS
events into an :class:`~densefeat.data.ehr.EventStore` and batches."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import meds
import numpy as np
import polars as pl

from ...choices import DEFAULT_MAX_LEN
from ..meds import (
    OBSERVATION_END_CODE,
    OBSERVATION_START_CODE,
    MedsDataset,
    conform_events,
    lazy_events,
)
from .batch import EventBatch
from .normalizer import NumericNormalizer
from .store import EventStore, encode_frame
from .vocabulary import Vocabulary

# DEFAULT_MAX_LEN (256 events) lives in densefeat.choices so parsers read it without polars.
#: Token kinds: one per event, or one per hour bin (:meth:`EventStore.gather_hours`).
TOKENS = ("events", "hours")
#: ``tokens="auto"`` picks hours when at least this share of training timed events carries a
#: numeric value (dense numeric series: ICU vitals and labs) ...
AUTO_HOURS_VALUE_SHARE = 0.8
#: ... and the vocabulary is at most this large (an hour token is V values wide).
AUTO_HOURS_MAX_VOCAB = 512


def resolve_tokens(tokens: str, events: pl.LazyFrame, vocab_size: int) -> str:
    """``"events"`` or ``"hours"``: ``tokens`` itself, or what ``"auto"`` picks from the
    training events (hours for dense numeric series, see :data:`AUTO_HOURS_VALUE_SHARE`)."""
    if tokens in TOKENS:
        return tokens
    if tokens != "auto":
        raise ValueError(f"tokens must be one of {(*TOKENS, 'auto')}, got {tokens!r}")
    timed = events.filter(pl.col("time").is_not_null() & (pl.col("code") != meds.birth_code))
    share = (
        timed.select(pl.col("numeric_value").is_not_null().mean()).collect().item()
        if "numeric_value" in events.collect_schema().names()
        else 0.0
    )
    dense = share is not None and share >= AUTO_HOURS_VALUE_SHARE
    return "hours" if dense and vocab_size <= AUTO_HOURS_MAX_VOCAB else "events"


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
COVERAGE_MARKER_CODES = (OBSERVATION_START_CODE, OBSERVATION_END_CODE)


def _drop_coverage_markers(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.filter(~pl.col("code").is_in(list(COVERAGE_MARKER_CODES)))


def end_of_record(events: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """``subject_id, prediction_time``: every subject's last timed clinical event, by subject.

    Coverage markers (:data:`COVERAGE_MARKER_CODES`) do not count as events.
    """
    return (
        _drop_coverage_markers(lazy_events(events))
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
        max_len: L, the number of most recent events (or hour tokens) kept.
        tokens: ``"events"`` (one token per event) or ``"hours"`` (one token per hour with
            events, holding every code's last value and a missingness mask; see
            ``EventBatch.bin_values``).
    """

    def __init__(
        self,
        vocabulary: Vocabulary,
        normalizer: NumericNormalizer | None = None,
        max_len: int = DEFAULT_MAX_LEN,
        tokens: str = "events",
    ):
        if tokens not in TOKENS:
            raise ValueError(f"tokens must be one of {TOKENS}, got {tokens!r}")
        self.tokens = tokens
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
        tokens: str = "events",
    ) -> HistoryBuilder:
        """Fit vocabulary and normaliser on one split of a dataset (the training split).

        Args:
            data: a :class:`MedsDataset` (its ``split`` subjects are used), or events that are
                already the training events (then ``split`` must be None).
            split: the split to fit on; ``"train"`` unless you know why not.
            max_len, min_subjects, min_count, max_size, min_values, clip: see the classes.
            tokens: ``"events"``, ``"hours"`` or ``"auto"`` (:func:`resolve_tokens`, decided
                on the training events).
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
        events = _drop_coverage_markers(lazy_events(events)).cache()
        vocab = Vocabulary(min_subjects, min_count, max_size).fit(events)
        norm = NumericNormalizer(min_values, clip).fit(events)
        return cls(vocab, norm, max_len, resolve_tokens(tokens, events, len(vocab)))

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
            frames = [lazy_events(data)]
        else:
            frames = [lazy_events(f) for f in data]
        keep = None if subjects is None else pl.Series(subjects, dtype=pl.Int64).implode()
        parts = []
        for frame in frames:
            if keep is not None:
                frame = frame.filter(pl.col("subject_id").is_in(keep))
            frame = _drop_coverage_markers(frame)
            parts.append(encode_frame(frame, self.vocabulary, self.normalizer, self.max_len))
        vocab = self.vocabulary
        store = EventStore.concat(
            parts, len(vocab.static_codes_), self.max_len, len(vocab.static_value_codes_)
        )
        return replace(store, tokens=self.tokens, n_variables=len(vocab))

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
            "tokens": self.tokens,
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
            state.get("tokens", "events"),  # runs written before hour tokens: events
        )
