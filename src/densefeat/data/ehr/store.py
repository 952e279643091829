""":class:`EventStore`: every subject's encoded events in one sorted array, cut into batches.

A store is built by :meth:`~densefeat.data.ehr.HistoryBuilder.encode` and carries that builder's
``max_len``: every batch of a run is cut to the same number of most recent events, set in one
place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import meds
import numpy as np
import polars as pl
import torch

from .batch import US_PER_DAY, US_PER_YEAR, EventBatch
from .normalizer import NumericNormalizer
from .vocabulary import Vocabulary, code_id_expr

US_PER_HOUR = 3_600_000_000


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
        static_value: (N, n_static_values) float32 normalised values of the vocabulary's
            ``static_value_codes_`` (0 where the subject has none; its indicator in ``static``
            says whether it has one). A subject with several values of one static code keeps
            the first.
        max_len: L, the most recent events a gathered row keeps (the builder's ``max_len``).
        tokens: ``"events"`` (one position per event) or ``"hours"`` (one position per hour
            bin with events, :meth:`gather_hours`); the builder's choice, like ``max_len``.
        n_variables: V of hour tokens, the vocabulary's size (code ids index the bins).
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
    static_value: np.ndarray
    max_len: int
    tokens: str = "events"
    n_variables: int = 0

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
        return sum(
            getattr(self, f.name).nbytes
            for f in fields(self)
            if isinstance(getattr(self, f.name), np.ndarray)
        )

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

    def history_lengths(
        self, subject_id: np.ndarray, prediction_time: np.ndarray, max_len: int | None = None
    ) -> np.ndarray:
        """(B,) int64 number of events :meth:`gather` puts in each row: the events at or before
        ``prediction_time``, at most ``max_len`` (the store's by default). Cheap (one search
        per row, no gather): what length bucketing sorts by.

        Raises:
            KeyError: an unknown subject.
        """
        max_len = self.max_len if max_len is None else max_len
        idx = self.index_of(np.asarray(subject_id, dtype=np.int64))
        times = np.asarray(prediction_time, dtype=np.int64)
        return np.minimum(self.count_at_or_before(idx, times), max_len)

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
        max_len: int | None = None,
    ) -> EventBatch:
        """The :class:`EventBatch` of rows ``(subject_id[i], prediction_time[i])``.

        Only events with ``time <= prediction_time`` enter (the last ``max_len`` of them), left
        padded; see :class:`EventBatch` for every field.

        Args:
            subject_id: (B,) int64 subjects, all in the store.
            prediction_time: (B,) int64 microseconds.
            max_len: L; None (every caller but a test or a no-drift floor, which reads a
                longer context and truncates it itself): the store's :attr:`max_len`.

        Raises:
            KeyError: an unknown subject.
            RuntimeError: an event after its prediction time reached the batch (cannot happen
                unless the store is corrupt; checked because it is the guarantee).
        """
        max_len = self.max_len if max_len is None else max_len
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        if self.tokens == "hours":
            return self.gather_hours(subject_id, prediction_time, max_len)
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
        age = np.where(mask & known[:, None], (time - birth[:, None]) / US_PER_YEAR, 0.0)
        age_now = np.where(known, (pt - birth) / US_PER_YEAR, 0.0)
        static = np.concatenate(
            [
                self.static[idx].astype(np.float32),
                self.static_value[idx],
                age_now[:, None],
                known[:, None],
            ],
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

    def _static_block(self, idx: np.ndarray, pt: np.ndarray) -> tuple[np.ndarray, ...]:
        known = self.birth_known[idx]
        age_now = np.where(known, (pt - self.birth[idx]) / US_PER_YEAR, 0.0)
        static = np.concatenate(
            [
                self.static[idx].astype(np.float32),
                self.static_value[idx],
                age_now[:, None],
                known[:, None],
            ],
            axis=1,
            dtype=np.float32,
        )
        return static, known

    def gather_hours(
        self, subject_id: np.ndarray, prediction_time: np.ndarray, max_len: int | None = None
    ) -> EventBatch:
        """The :class:`EventBatch` of rows as **hour tokens** (see ``EventBatch.bin_values``).

        Row ``i``'s events with ``time <= T_i`` (``T_i`` its prediction time; nothing later is
        read) fall into hour bins ``k = floor((T_i - time) / 1 h)``, i.e. the bin ``(T_i -
        (k+1) h, T_i - k h]``, aligned on the prediction time so that a cut-off a whole number
        of hours earlier (window pairs every 12 h) is a bin boundary. Each bin with at least
        one event is a token; the ``max_len`` most recent bins are kept, left padded. In a bin,
        ``bin_values[v]`` / ``bin_mask[v]`` hold the last value of code id ``v`` / whether ``v``
        occurred (never a value from another hour: missing stays missing).

        Cost: one pass over the rows' events up to their prediction times (vectorised).
        """
        return self.hours_and_times(subject_id, prediction_time, max_len)[0]

    def hours_and_times(
        self, subject_id: np.ndarray, prediction_time: np.ndarray, max_len: int | None = None
    ) -> tuple[EventBatch, np.ndarray]:
        """:meth:`gather_hours` and the exact (B, L) int64 time of each token's last event
        (0 on padding): the time a token is "at", which the batch keeps only as float32 days
        (:func:`densefeat.models.ehr.event_times`)."""
        max_len = self.max_len if max_len is None else max_len
        sid = np.asarray(subject_id, dtype=np.int64)
        pt = np.asarray(prediction_time, dtype=np.int64)
        b, n_var = sid.size, max(self.n_variables, 1)
        idx = self.index_of(sid)
        lo = self.start[idx]
        cut = rows_searchsorted(self.time, lo, self.end[idx], pt)
        n_ev = cut - lo
        row = np.repeat(np.arange(b), n_ev)
        offsets = np.cumsum(n_ev) - n_ev
        ev = lo[row] + (np.arange(row.size) - offsets[row])  # the events, oldest first per row
        time = self.time[ev]
        if (time > pt[row]).any():
            raise RuntimeError("an event after its prediction time reached a batch (leakage)")
        k = (pt[row] - time) // US_PER_HOUR  # >= 0; decreasing within a row
        new_bin = np.ones(row.size, dtype=bool)
        new_bin[1:] = (row[1:] != row[:-1]) | (k[1:] != k[:-1])
        bin_of = np.cumsum(new_bin) - 1  # global bin index, per event
        n_bins = np.bincount(row[new_bin], minlength=b)  # bins per row
        first_bin = np.cumsum(n_bins) - n_bins
        j = bin_of - first_bin[row]  # bin rank within its row, 0 = oldest
        kept_n = np.minimum(n_bins, max_len)
        pos = max_len - n_bins[row] + j  # left padding; newest bin at L - 1
        keep = pos >= 0
        row_k, pos_k, ev_k = row[keep], pos[keep], ev[keep]
        mask = np.arange(max_len)[None, :] >= (max_len - kept_n)[:, None]
        # The last event of each kept bin: the bin's (B, L) fields.
        last = np.zeros((b, max_len), dtype=np.int64) + self.n_events  # padding -> zero element
        # Events ascend within a bin; numpy promises no order for repeated fancy indices, so
        # write each bin's last event once.
        is_last = np.ones(ev_k.size, dtype=bool)
        is_last[:-1] = (row_k[1:] != row_k[:-1]) | (pos_k[1:] != pos_k[:-1])
        last[row_k[is_last], pos_k[is_last]] = ev_k[is_last]
        t_last = self.time[last]
        # Days since the previous kept token's last event; the first token: since the event
        # before its hour in the full record (0 at the record's start).
        prev = np.zeros_like(last) + self.n_events
        prev[:, 1:] = last[:, :-1]
        first_pos = max_len - kept_n
        has_prev = mask & (np.arange(max_len)[None, :] > first_pos[:, None])
        delta = np.where(has_prev, (t_last - self.time[prev]) / US_PER_DAY, 0.0)
        rows_idx = np.arange(b)
        fp = np.minimum(first_pos, max_len - 1)
        first_ev = np.where(
            kept_n > 0,
            # the first event of the first kept bin
            _first_event_of_bin(row_k, pos_k, ev_k, b, max_len)[rows_idx, fp],
            self.n_events,
        )
        before = first_ev - 1
        has_before = (kept_n > 0) & (before >= lo)
        first_delta = np.where(
            has_before,
            (t_last[rows_idx, fp] - self.time[np.where(has_before, before, 0)]) / US_PER_DAY,
            0.0,
        )
        delta[rows_idx[kept_n > 0], fp[kept_n > 0]] = first_delta[kept_n > 0]
        # (B, L, V) values: the last value of each code in each hour.
        code_k = self.code[ev_k].astype(np.int64)
        flat = (row_k * max_len + pos_k) * n_var + code_k
        bin_mask = np.zeros(b * max_len * n_var, dtype=bool)
        bin_mask[flat] = True
        hv = self.has_value[ev_k]
        # Reverse order + np.unique's first occurrence = the LAST event per (row, bin, code).
        flat_v, val_v = flat[hv][::-1], self.value[ev_k][hv][::-1]
        uniq, first = np.unique(flat_v, return_index=True)
        bin_values = np.zeros(b * max_len * n_var, dtype=np.float32)
        bin_values[uniq] = val_v[first]
        static, known = self._static_block(idx, pt)
        birth = self.birth[idx]
        tbp = np.where(mask, (pt[:, None] - t_last) / US_PER_DAY, 0.0)
        age = np.where(mask & known[:, None], (t_last - birth[:, None]) / US_PER_YEAR, 0.0)
        t = torch.from_numpy
        batch = EventBatch(
            subject_id=t(sid.copy()),
            prediction_time=t(pt.copy()),
            codes=t(self.code[last].astype(np.int64)),
            values=t(self.value[last]),
            has_value=t(self.has_value[last]),
            delta_t=t(np.where(mask, delta, 0.0).astype(np.float32)),
            age=t(age.astype(np.float32)),
            time_before_prediction=t(tbp.astype(np.float32)),
            mask=t(mask),
            static=t(static),
            age_known=t(known.copy()),
            bin_values=t(bin_values.reshape(b, max_len, n_var)),
            bin_mask=t(bin_mask.reshape(b, max_len, n_var)),
        )
        return batch, np.where(mask, t_last, 0)

    @classmethod
    def concat(
        cls, parts: Sequence[EventStore], n_static: int, max_len: int, n_static_values: int = 0
    ) -> EventStore:
        """One store from stores of disjoint subjects (e.g. one per MEDS shard)."""
        parts = [p for p in parts if p.n_subjects]
        if not parts:
            return _empty_store(n_static, max_len, n_static_values)
        if len(parts) == 1:
            return parts[0] if parts[0].max_len == max_len else replace(parts[0], max_len=max_len)
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
            static_value=np.concatenate([p.static_value for p in parts])[order],
            max_len=max_len,
        )


def _first_event_of_bin(
    row: np.ndarray, pos: np.ndarray, ev: np.ndarray, b: int, max_len: int
) -> np.ndarray:
    """(B, L) the first (oldest) event index of each kept bin (0 where none)."""
    out = np.zeros((b, max_len), dtype=np.int64)
    first = np.ones(ev.size, dtype=bool)
    first[1:] = (row[1:] != row[:-1]) | (pos[1:] != pos[:-1])
    out[row[first], pos[first]] = ev[first]
    return out


_ZERO = {
    "time": np.zeros(1, np.int64),
    "code": np.zeros(1, np.int32),
    "value": np.zeros(1, np.float32),
    "has_value": np.zeros(1, bool),
    "delta_t": np.zeros(1, np.float32),
}


def _empty_store(n_static: int, max_len: int, n_static_values: int = 0) -> EventStore:
    none = np.zeros(0, np.int64)
    return EventStore(
        subject_ids=none,
        start=none,
        end=none,
        birth=none,
        birth_known=np.zeros(0, bool),
        static=np.zeros((0, n_static), bool),
        static_value=np.zeros((0, n_static_values), np.float32),
        max_len=max_len,
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


def encode_frame(
    frame: pl.LazyFrame,
    vocab: Vocabulary,
    normalizer: NumericNormalizer | None,
    max_len: int,
) -> EventStore:
    """Encode one frame of whole subjects (a MEDS shard) into an :class:`EventStore`."""
    lookup = vocab.code_table().select("code")
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
    static_value = _static_values(events, subject_ids, vocab, normalizer)

    timed = events.filter(pl.col("time").is_not_null())
    # Ids (own, else the parent's, else UNK) resolved once per distinct code, then joined:
    # string work on a few hundred codes instead of every event.
    ids = timed.select(pl.col("code").unique()).with_columns(code_id_expr(vocab))
    timed = timed.join(
        lookup.join(ids, on="code", how="right"), on="code", how="left", maintain_order="left"
    ).select(
        "subject_id",
        pl.col("time").cast(pl.Int64),
        "code_id",
        value.alias("value"),
        (pl.col("code") == meds.birth_code).alias("is_birth"),
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
        static_value=static_value,
        max_len=max_len,
    )


def _static_values(
    events: pl.DataFrame,
    subject_ids: np.ndarray,
    vocab: Vocabulary,
    normalizer: NumericNormalizer | None,
) -> np.ndarray:
    """(N, n_static_values) float32: each subject's normalised value of every static value code.

    Normalised with the training split's statistics (the normaliser), like timed values; 0
    where the subject has no (usable) value, which the code's indicator column tells apart.
    """
    codes = vocab.static_value_codes_
    out = np.zeros((subject_ids.size, len(codes)), dtype=np.float32)
    if not codes or normalizer is None:
        return out
    cols = pl.DataFrame(
        {
            "code": pl.Series(codes, dtype=pl.Utf8),
            "value_col": pl.Series(np.arange(len(codes)), dtype=pl.Int32),
        }
    )
    rows = (
        events.filter(pl.col("time").is_null())
        .join(cols, on="code", how="inner")
        .join(normalizer.stats_table(), on="code", how="left")
        .select(
            "subject_id",
            "value_col",
            normalizer.normalize_expr(
                pl.col("numeric_value"), pl.col("center"), pl.col("scale")
            ).alias("v"),
        )
        .drop_nulls("v")
        .unique(["subject_id", "value_col"], keep="first", maintain_order=True)
    )
    where = np.searchsorted(subject_ids, rows["subject_id"].to_numpy())
    out[where, rows["value_col"].to_numpy()] = rows["v"].to_numpy()
    return out
