"""Test-time perturbations of **hour tokens** (``data.tokens=hours``): perturb the measurements,
then re-bin them.

An hour token summarises every measurement of one hour (``EventBatch.bin_values``); the exact
time of each measurement inside its hour is gone from the batch, so a perturbation applied to
the tokens could not mean what it means on event tokens (a measurement jittered by 40 minutes
may or may not change hour, depending on where in its hour it was). The three EHR perturbations
of :mod:`densefeat.eval.perturb` are therefore applied to the **measurements** of each row, read
from the :class:`~densefeat.data.ehr.EventStore` with their exact int64 times, and the result is
binned again by the store's own :meth:`~densefeat.data.ehr.EventStore.gather_hours` (one
binning code for clean and perturbed rows). Per real measurement ``j`` of a row (every event at
or before the prediction time ``T``, the whole record, not only the kept hours):

* ``event_dropout`` (level ``p``): ``j`` is removed iff ``u_j < p``; a row with measurements
  keeps at least one (the largest ``u``). An hour whose measurements all go disappears; a
  variable removed from an hour is *missing* in it (``bin_mask`` False), never imputed.
* ``time_jitter`` (level ``J`` days): ``t'_j = t_j + round(J (2 u_j - 1) * 86400e6)`` us, so
  each measurement moves by ``U[-J, J)`` and keeps its value; a measurement with ``t'_j > T``
  would lie after the prediction time and is **dropped** (never clamped to ``T``). The kept
  ones are re-sorted by ``t'`` (stable) and re-binned: a value can change hour, and within an
  hour the last value in the new order wins. Only events at or before ``T`` are read, so a
  later event can never be jittered into the past.
* ``code_noise`` (level ``q``): with probability ``q`` the measurement's variable is swapped for
  another timed variable drawn uniformly (``vocab_size - 3`` choices, the rule of
  :func:`~densefeat.eval.perturb.code_noise`) and its value is dropped (the value is on the old
  variable's scale): in the hour token, the new variable is *measured without a value*.

The uniforms ``u_j`` (and ``v_j`` of ``code_noise``) are those of
:class:`~densefeat.eval.perturb.KeyedRandom`: a hash of ``(seed, stream, subject_id, T, rank of
the measurement counted from the most recent)``. On event tokens with a batch holding the whole
record the same measurement gets the same draw, so "10% code noise" picks the same measurements
whatever the tokenisation, and a row's perturbation does not depend on its batch-mates.

Guarantees (tested): level 0 is the identity; nothing after ``T`` enters (every output token's
``time_before_prediction >= 0``, and every value comes from a measurement at or before ``T``);
deterministic in the seed; ``subject_id``, ``prediction_time``, ``static`` and ``age_known``
unchanged.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ..data.ehr.batch import N_RESERVED, US_PER_DAY, EventBatch
from ..data.ehr.store import EventStore, rows_searchsorted
from .perturb import (
    _STREAM_CODE_PICK,
    _STREAM_CODE_REPLACE,
    _STREAM_DROPOUT,
    _STREAM_JITTER,
    keyed_uniforms_of,
)

__all__ = ["HOUR_PERTURBATIONS", "PerturbedHourStore", "perturb_hour_rows"]

#: The perturbations defined on hour tokens (their levels are the EHR/ICU grids').
HOUR_PERTURBATIONS = ("event_dropout", "time_jitter", "code_noise")


def _row_events(
    store: EventStore, sid: np.ndarray, pt: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every event of each row at or before its prediction time, oldest first.

    Returns:
        ``(row, ev, rank)``: per event its row, its index into the store's arrays and its
        rank counted from the row's most recent event (0).
    """
    idx = store.index_of(sid)
    lo = store.start[idx]
    cut = rows_searchsorted(store.time, lo, store.end[idx], pt)
    n = cut - lo
    row = np.repeat(np.arange(sid.size), n)
    offsets = np.cumsum(n) - n
    j = np.arange(row.size) - offsets[row]
    return row, lo[row] + j, n[row] - 1 - j


def _keep_one(row: np.ndarray, keep: np.ndarray, u: np.ndarray, b: int) -> np.ndarray:
    """``keep`` plus, for rows with events but none kept, the event with the largest ``u``."""
    kept = np.bincount(row[keep], minlength=b)
    has = np.bincount(row, minlength=b)
    empty = (kept == 0) & (has > 0)
    if not empty.any():
        return keep
    # Per row, the position of its largest draw (ties: the earliest position).
    order = np.lexsort((-u, row))  # by row, then u descending
    first = np.ones(order.size, dtype=bool)
    first[1:] = row[order][1:] != row[order][:-1]
    best = order[first]
    out = keep.copy()
    rescue = best[empty[row[best]]]
    out[rescue] = True
    return out


def perturb_hour_rows(
    store: EventStore,
    subject_id: np.ndarray,
    prediction_time: np.ndarray,
    name: str,
    level: float,
    seed: int,
    *,
    vocab_size: int | None = None,
) -> tuple[EventBatch, int, int]:
    """The hour-token batch of rows whose measurements were perturbed (module docstring).

    Args:
        store: an hour-token store (``store.tokens == "hours"``).
        subject_id, prediction_time: (B,) int64 rows (time in microseconds).
        name: ``"event_dropout"``, ``"time_jitter"`` or ``"code_noise"``.
        level: the perturbation's level (dropout / replacement probability, or ``J`` in days).
        seed: the evaluation seed (:class:`~densefeat.eval.perturb.KeyedRandom`).
        vocab_size: the vocabulary's size for ``code_noise`` (default: ``store.n_variables``).

    Returns:
        ``(batch, measurements_in, measurements_out)``: the re-binned batch (same shape and
        static fields as ``store.gather``) and the number of measurements at or before the
        prediction times before and after perturbing (whole records, not only kept hours).
    """
    if store.tokens != "hours":
        raise ValueError(f"perturb_hour_rows needs an hour-token store, got tokens={store.tokens}")
    if name not in HOUR_PERTURBATIONS:
        raise ValueError(f"unknown EHR perturbation {name!r}; choose one of {HOUR_PERTURBATIONS}")
    sid = np.asarray(subject_id, dtype=np.int64)
    pt = np.asarray(prediction_time, dtype=np.int64)
    b = sid.size
    row, ev, rank = _row_events(store, sid, pt)
    time = store.time[ev].copy()
    code = store.code[ev].copy()
    value = store.value[ev].copy()
    has_value = store.has_value[ev].copy()
    keep = np.ones(row.size, dtype=bool)

    def draw(stream: int) -> np.ndarray:
        return keyed_uniforms_of(seed, stream, sid[row], pt[row], rank)

    if name == "event_dropout":
        if not 0.0 <= level < 1.0:
            raise ValueError(f"event_dropout level must be in [0, 1), got {level}")
        u = draw(_STREAM_DROPOUT)
        keep = _keep_one(row, u >= level, u, b)
    elif name == "time_jitter":
        if not (level >= 0.0 and np.isfinite(level)):
            raise ValueError(f"time_jitter level (J in days) must be finite and >= 0, got {level}")
        u = draw(_STREAM_JITTER).astype(np.float64)
        # Whole microseconds, the store's resolution: J = 0 moves nothing, exactly.
        off = np.rint(float(level) * US_PER_DAY * (2.0 * u - 1.0)).astype(np.int64)
        time = time + off
        keep = time <= pt[row]  # moved past the prediction time: unseen, so dropped
    else:
        if not 0.0 <= level <= 1.0:
            raise ValueError(f"code_noise level must be in [0, 1], got {level}")
        vsize = int(store.n_variables if vocab_size is None else vocab_size)
        n_timed = vsize - N_RESERVED
        u, v = draw(_STREAM_CODE_REPLACE), draw(_STREAM_CODE_PICK)
        picked = u < level
        old = code.astype(np.int64)
        timed = old >= N_RESERVED
        if picked.any() and (n_timed < 1 or (n_timed < 2 and (picked & timed).any())):
            raise ValueError(
                f"code_noise needs at least 2 timed codes in the vocabulary, got {max(n_timed, 0)}"
            )
        choices = np.maximum(np.where(timed, n_timed - 1, n_timed), 1)
        r = np.minimum(np.floor(v.astype(np.float64) * choices).astype(np.int64), choices - 1)
        new = N_RESERVED + r
        new = new + (timed & (new >= old))
        code = np.where(picked, new, old).astype(store.code.dtype)
        value = np.where(picked, np.float32(0.0), value).astype(np.float32)
        has_value = has_value & ~picked

    row, time, code, value, has_value = (a[keep] for a in (row, time, code, value, has_value))
    # Re-sort by (row, new time), stable: simultaneous measurements keep their order.
    order = np.lexsort((time, row))
    row, time, code, value, has_value = (a[order] for a in (row, time, code, value, has_value))
    batch = _rebin(store, sid, pt, row, time, code, value, has_value)
    n_in, n_out = int(ev.size), int(row.size)
    return batch, n_in, n_out


def _rebin(
    store: EventStore,
    sid: np.ndarray,
    pt: np.ndarray,
    row: np.ndarray,
    time: np.ndarray,
    code: np.ndarray,
    value: np.ndarray,
    has_value: np.ndarray,
) -> EventBatch:
    """Bin per-row measurements (sorted by row, then time) with the store's own binning.

    Each row becomes a pseudo-subject ``i`` of a small store holding exactly its measurements
    (and its subject's static fields), so :meth:`EventStore.gather_hours` applies unchanged.
    """
    b = sid.size
    idx = store.index_of(sid)
    n = np.bincount(row, minlength=b).astype(np.int64)
    end = np.cumsum(n)

    def with_zero(a: np.ndarray, like: np.ndarray) -> np.ndarray:
        # The store convention: one zero element after the last event (padding gathers it).
        return np.concatenate([a.astype(like.dtype), np.zeros(1, like.dtype)])

    delta = np.zeros(row.size, np.float32)  # unused by gather_hours (it re-derives gaps)
    pseudo = EventStore(
        subject_ids=np.arange(b, dtype=np.int64),
        start=end - n,
        end=end,
        time=with_zero(time, store.time),
        code=with_zero(code, store.code),
        value=with_zero(value, store.value),
        has_value=with_zero(has_value, store.has_value),
        delta_t=with_zero(delta, store.delta_t),
        birth=store.birth[idx],
        birth_known=store.birth_known[idx],
        static=store.static[idx],
        static_value=store.static_value[idx],
        max_len=store.max_len,
        tokens="hours",
        n_variables=store.n_variables,
    )
    out = pseudo.gather_hours(np.arange(b, dtype=np.int64), pt)
    return replace(out, subject_id=torch.from_numpy(sid.copy()))


class PerturbedHourStore:
    """What :func:`~densefeat.train.modalities.ehr.encode_histories` reads instead of an
    hour-token store, to embed rows under a perturbation: :meth:`gather` returns
    :func:`perturb_hour_rows`'s batch and counts the measurements before and after.

    Attributes:
        counts: ``[measurements_in, measurements_out]`` summed over every gathered row.
    """

    def __init__(
        self, store: EventStore, name: str, level: float, seed: int, vocab_size: int | None
    ) -> None:
        self.store, self.name, self.level, self.seed = store, name, level, seed
        self.vocab_size = vocab_size
        self.counts = [0, 0]

    def history_lengths(self, subject_id: np.ndarray, prediction_time: np.ndarray) -> np.ndarray:
        """The clean rows' lengths (only used to group rows of similar length)."""
        return self.store.history_lengths(subject_id, prediction_time)

    def gather(self, subject_id: np.ndarray, prediction_time: np.ndarray) -> EventBatch:
        """The perturbed hour tokens of the rows."""
        batch, n_in, n_out = perturb_hour_rows(
            self.store,
            subject_id,
            prediction_time,
            self.name,
            self.level,
            self.seed,
            vocab_size=self.vocab_size,
        )
        self.counts[0] += n_in
        self.counts[1] += n_out
        return batch
