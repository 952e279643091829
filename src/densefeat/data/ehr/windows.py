"""Time windows: the same subjects' histories cut at successive times, as PAIRED batches.

A *window pair* is one subject at two adjacent cut-offs ``t < t1``; batches are built from a
table of pairs with one row per pair, so row ``i`` of the batch at ``t`` and row ``i`` of the
batch at ``t1`` are always the same subject (:func:`pair_batches` checks it). These pairs are
the input of subspace-consistency training and of the temporal-stability metric (docs/design.md).

Cut-offs come from :func:`periodic_cuts` (every N days: 365 for EHR, 0.5 for ICU stays; anchored
at each subject's first event or on a calendar grid) or :func:`visit_cuts` (the times of visit
events). :func:`window_pairs` turns any cut table into adjacent pairs and keeps a pair only when
the subject has history at both cut-offs: at least ``min_history`` timed events at or before
``t``, and at least ``min_new_events`` events in ``(t, t1]`` (so the two histories differ).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence

import numpy as np
import polars as pl
import torch

from ..meds import lazy_events
from .batch import US_PER_DAY, EventBatch
from .store import EventStore

__all__ = [
    "pair_batches",
    "periodic_cuts",
    "visit_cuts",
    "window_pairs",
]

#: Columns of a window-pair table.
PAIR_SCHEMA = {
    "subject_id": pl.Int64(),
    "window": pl.Int64(),
    "time_t": pl.Datetime("us"),
    "time_t1": pl.Datetime("us"),
}


def _period_us(every: float | _dt.timedelta) -> int:
    us = (
        every // _dt.timedelta(microseconds=1)
        if isinstance(every, _dt.timedelta)
        else round(float(every) * US_PER_DAY)
    )
    if us <= 0:
        raise ValueError(f"the window period must be positive, got {every!r}")
    return int(us)


def _ceil_div(a: np.ndarray, b: int) -> np.ndarray:
    return -((-a) // b)


def periodic_cuts(
    store: EventStore,
    every: float | _dt.timedelta = 365.0,
    *,
    anchor: str = "first_event",
    origin: _dt.datetime | None = None,
    subjects: Sequence[int] | np.ndarray | None = None,
) -> pl.DataFrame:
    """Cut-off times every ``every`` (days, or a timedelta) inside each subject's record.

    Args:
        store: the encoded events.
        every: the period; 365 days (EHR) by default, ``timedelta(hours=12)`` for ICU stays.
        anchor: ``"first_event"``: cuts at ``first + k * every`` for ``k >= 1``, ``first`` the
            subject's first timed event other than its ``MEDS_BIRTH`` (each subject's own
            clock; window ``k`` is the k-th period of the record, not of life: anchored at
            the birth, yearly windows would be years of age and 12-hour windows of an ICU stay
            would start decades before it). ``"calendar"``: cuts at ``origin + k * every``
            (the same calendar times for everyone; window ``k`` is the calendar period), from
            the first one at or after that first event.
        origin: the calendar grid's origin (``anchor="calendar"``); 1970-01-01 by default.
        subjects: only these subjects; None for all.

    Returns:
        ``subject_id`` Int64, ``window`` Int64 (``k``), ``time`` Datetime("us"): every cut
        strictly before the subject's last timed event (a cut at or after it adds nothing new),
        sorted by subject and time.
    """
    period = _period_us(every)
    idx = (
        np.arange(store.n_subjects)
        if subjects is None
        else store.index_of(np.asarray(subjects, dtype=np.int64))
    )
    idx = idx[store.end[idx] > store.start[idx]]
    first, last = _first_clinical_time(store, idx), store.last_time()[idx]
    if anchor == "first_event":
        base = first
        k_lo = np.ones_like(first)
    elif anchor == "calendar":
        origin_us = 0 if origin is None else _datetime_us(origin)
        base = np.full_like(first, origin_us)
        k_lo = _ceil_div(first - origin_us, period)
    else:
        raise ValueError(f"anchor must be 'first_event' or 'calendar', got {anchor!r}")
    k_hi = _ceil_div(last - base, period) - 1  # the last k with base + k * period < last
    count = np.maximum(k_hi - k_lo + 1, 0)
    rows = np.repeat(np.arange(idx.size), count)
    # k runs k_lo .. k_hi within each subject: a ramp restarted at every subject.
    ramp = np.arange(rows.size) - np.repeat(np.cumsum(count) - count, count)
    k = k_lo[rows] + ramp
    return pl.DataFrame(
        {
            "subject_id": pl.Series(store.subject_ids[idx][rows], dtype=pl.Int64),
            "window": pl.Series(k, dtype=pl.Int64),
            "time": pl.Series(base[rows] + k * period, dtype=pl.Int64).cast(pl.Datetime("us")),
        }
    )


def _first_clinical_time(store: EventStore, idx: np.ndarray) -> np.ndarray:
    """Time of each subject's first timed event after its birth event (if it has one).

    The birth is the first timed event of a subject whose birth is known; skip it when the
    subject has any other event (a record of only a birth keeps the birth time).
    """
    start, end = store.start[idx], store.end[idx]
    skip = store.birth_known[idx] & (store.time[start] == store.birth[idx]) & (end - start > 1)
    return store.time[start + skip.astype(np.int64)]


def _datetime_us(value: _dt.datetime) -> int:
    if value.tzinfo is not None:
        raise ValueError("origin must be a naive datetime (MEDS times are naive)")
    return (value - _dt.datetime(1970, 1, 1)) // _dt.timedelta(microseconds=1)


def visit_cuts(
    events: pl.DataFrame | pl.LazyFrame,
    visit_prefixes: Sequence[str] = ("Visit/", "VISIT/", "VISIT//"),
    subjects: Sequence[int] | None = None,
) -> pl.DataFrame:
    """Cut-offs at the times of visit events (codes starting with one of ``visit_prefixes``).

    A cut at a visit's time includes every event at that time (``time <= cut``): with
    date-only data, the whole day of the visit.

    Returns:
        ``subject_id``, ``window`` (0, 1, ... per subject), ``time``: distinct visit times,
        sorted.
    """
    is_visit = pl.any_horizontal([pl.col("code").str.starts_with(p) for p in visit_prefixes])
    frame = lazy_events(events).filter(pl.col("time").is_not_null() & is_visit)
    if subjects is not None:
        frame = frame.filter(
            pl.col("subject_id").is_in(pl.Series(subjects, dtype=pl.Int64).implode())
        )
    return (
        frame.select("subject_id", "time")
        .unique()
        .sort("subject_id", "time")
        .with_columns(window=pl.int_range(pl.len()).over("subject_id").cast(pl.Int64))
        .select("subject_id", "window", "time")
        .collect()
    )


def window_pairs(
    store: EventStore,
    cuts: pl.DataFrame,
    *,
    min_history: int = 1,
    min_new_events: int = 1,
) -> pl.DataFrame:
    """Adjacent cut-offs of each subject as pairs ``(t, t1)``, filtered on history.

    Args:
        store: the encoded events (subjects of ``cuts`` must be in it).
        cuts: ``subject_id``, ``window``, ``time`` (from :func:`periodic_cuts` or
            :func:`visit_cuts`, or your own).
        min_history: least timed events at or before ``t``.
        min_new_events: least timed events in ``(t, t1]``; 0 keeps pairs whose histories hold
            the same events (only times relative to the cut-off differ).

    Returns:
        ``subject_id``, ``window`` (the window of ``t``), ``time_t``, ``time_t1``; one row per
        pair, sorted by subject and time. Build batches from it with :func:`pair_batches` or
        :class:`WindowPairBatches`: row ``i`` of both batches is this table's row ``i``.
    """
    pairs = (
        cuts.select(
            pl.col("subject_id").cast(pl.Int64),
            pl.col("window").cast(pl.Int64),
            pl.col("time").cast(pl.Datetime("us")).alias("time_t"),
        )
        .unique(["subject_id", "time_t"], keep="first")
        .sort("subject_id", "time_t")
        .with_columns(time_t1=pl.col("time_t").shift(-1).over("subject_id"))
        .drop_nulls("time_t1")
    )
    if pairs.height == 0:
        return pl.DataFrame(schema=PAIR_SCHEMA)
    sid = pairs["subject_id"].to_numpy()
    idx = store.index_of(sid)
    n_t = store.count_at_or_before(idx, pairs["time_t"].cast(pl.Int64).to_numpy())
    n_t1 = store.count_at_or_before(idx, pairs["time_t1"].cast(pl.Int64).to_numpy())
    keep = (n_t >= min_history) & (n_t1 - n_t >= min_new_events)
    return pairs.filter(pl.Series(keep)).select(list(PAIR_SCHEMA))


def pair_batches(store: EventStore, pairs: pl.DataFrame) -> tuple[EventBatch, EventBatch]:
    """The batches at ``t`` and at ``t1`` of all rows of ``pairs``, row for row (each cut to
    the store's ``max_len``).

    Returns:
        ``(batch_t, batch_t1)`` with ``batch_t.subject_id == batch_t1.subject_id`` row by row
        and ``batch_t.prediction_time < batch_t1.prediction_time``.
    """
    sid = pairs["subject_id"].cast(pl.Int64).to_numpy()
    t = pairs["time_t"].cast(pl.Datetime("us")).cast(pl.Int64).to_numpy()
    t1 = pairs["time_t1"].cast(pl.Datetime("us")).cast(pl.Int64).to_numpy()
    if (t1 <= t).any():
        raise ValueError("pairs: time_t1 must be later than time_t in every row")
    a, b = store.gather(sid, t), store.gather(sid, t1)
    # The pairing is the point of this module: never hand out misaligned rows.
    if not torch.equal(a.subject_id, b.subject_id):  # pragma: no cover - by construction
        raise RuntimeError("window batches are not paired row by row")
    return a, b
