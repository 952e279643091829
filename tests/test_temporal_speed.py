"""Temporal stability through the fast inference loop (issue 14, item 5): the four window
embeddings (at ``t``, at ``t1``, half-window views A and B) computed length-bucketed under
inference mode with the last block at the read-out token only equal the straightforward route
(one row at a time, full forward pass) to 1e-6, rows in the pair table's order, on a store
with mixed history lengths and windows holding more new events than ``max_len``."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import torch

from _helpers import events_frame
from densefeat.data.ehr import HistoryBuilder
from densefeat.data.ehr.buckets import length_buckets
from densefeat.data.ehr.windows import periodic_cuts, window_pairs
from densefeat.eval.temporal import half_window_views, temporal_stability, window_embeddings
from densefeat.models import EHREncoder, EHREncoderConfig

D = dt.datetime
MAX_LEN = 10
T0 = D(2000, 1, 1)


def _us(x: D) -> int:
    return (x - D(1970, 1, 1)) // dt.timedelta(microseconds=1)


@pytest.fixture(scope="module")
def world():
    """30 subjects with 0..~60 events over 6 years (bursts of up to 30 events in one year, so
    some windows hold more new events than MAX_LEN), values, static codes; random weights."""
    rng = np.random.default_rng(1)
    rows = []
    for s in range(1, 31):
        rows.append((s, None, f"SEX/{s % 2}", None))
        if s % 4:
            rows.append((s, D(1950 + s, 1, 1), "MEDS_BIRTH", None))
        n = int(rng.integers(0, 30)) if s % 6 else 0
        for k in range(n):
            t = T0 + dt.timedelta(days=int(rng.integers(0, 6 * 365)), minutes=k)
            value = float(rng.normal()) if k % 3 == 0 else None
            rows.append((s, t, f"C{int(rng.integers(0, 9))}" if value is None else "LAB", value))
        if s % 3 == 0:  # a burst: 30 events in one month of year 3
            for k in range(30):
                t = T0 + dt.timedelta(days=3 * 365 + k, hours=int(rng.integers(0, 24)))
                rows.append((s, t, f"C{int(rng.integers(0, 9))}", None))
    events = events_frame(rows).sort("subject_id", "time", nulls_last=False, maintain_order=True)
    builder = HistoryBuilder.fit(events, split=None, min_subjects=1, min_values=2, max_len=MAX_LEN)
    store = builder.encode(events)
    torch.manual_seed(0)
    cfg = EHREncoderConfig.from_builder(builder, d_model=32, n_heads=4, n_layers=2, dropout=0.1)
    encoder = EHREncoder(cfg)
    pairs = window_pairs(store, periodic_cuts(store, 365.0))
    # Shuffled: the outputs must come back in the table's order, whatever the batching.
    pairs = pairs.sample(fraction=1.0, shuffle=True, seed=0)
    return store, encoder, pairs


def _reference(encoder: EHREncoder, store, pairs: pl.DataFrame) -> dict[str, np.ndarray]:
    """One row at a time, the full forward pass (no read-out shortcut), under no_grad."""
    sid = pairs["subject_id"].cast(pl.Int64).to_numpy()
    t = pairs["time_t"].cast(pl.Datetime("us")).cast(pl.Int64).to_numpy()
    t1 = pairs["time_t1"].cast(pl.Datetime("us")).cast(pl.Int64).to_numpy()
    out: dict[str, list[np.ndarray]] = {"z_t": [], "z_t1": [], "z_a": [], "z_b": []}
    encoder.eval()
    encoder.fast_readout = False
    try:
        with torch.no_grad():
            for i in range(sid.size):
                one = slice(i, i + 1)
                out["z_t"].append(encoder(store.gather(sid[one], t[one])).numpy())
                out["z_t1"].append(encoder(store.gather(sid[one], t1[one])).numpy())
                a, b = half_window_views(store, sid[one], t[one], t1[one])
                out["z_a"].append(encoder(a).numpy())
                out["z_b"].append(encoder(b).numpy())
    finally:
        encoder.fast_readout = True
    return {k: np.concatenate(v) for k, v in out.items()}


def test_the_fixture_exercises_truncation_and_regrouping(world):
    store, _, pairs = world
    sid = pairs["subject_id"].cast(pl.Int64).to_numpy()
    t = pairs["time_t"].cast(pl.Datetime("us")).cast(pl.Int64).to_numpy()
    t1 = pairs["time_t1"].cast(pl.Datetime("us")).cast(pl.Int64).to_numpy()
    idx = store.index_of(sid)
    n_new = store.count_at_or_before(idx, t1) - store.count_at_or_before(idx, t)
    lengths = store.history_lengths(sid, t1)
    assert pairs.height >= 50
    assert (n_new > MAX_LEN).any() and (n_new == 1).any()  # bursts and single new events
    assert (lengths == MAX_LEN).any() and (lengths < MAX_LEN // 2).any()
    batches = length_buckets(lengths, 7, 40)
    assert not np.array_equal(np.concatenate(batches), np.arange(sid.size))


@pytest.mark.parametrize(("batch_size", "max_positions"), [(512, None), (7, 40), (3, 1)], ids=str)
def test_bucketed_window_embeddings_equal_the_row_by_row_reference(
    world, batch_size: int, max_positions: int | None
):
    store, encoder, pairs = world
    want = _reference(encoder, store, pairs)
    encoder.train()  # the call must put it in eval mode itself, and restore this
    got = window_embeddings(
        encoder, store, pairs, batch_size=batch_size, max_positions=max_positions
    )
    assert encoder.training and encoder.fast_readout
    assert set(got) == set(want)
    for key in want:
        assert got[key].dtype == np.float32 and got[key].shape == want[key].shape
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-6, err_msg=key)
    # The row-order route (the loop before issue 14) gives the same numbers too.
    plain = window_embeddings(encoder, store, pairs, batch_size=batch_size, bucket=False)
    for key in want:
        np.testing.assert_allclose(plain[key], want[key], rtol=0, atol=1e-6, err_msg=key)


def test_temporal_stability_uses_the_same_embeddings(world):
    store, encoder, pairs = world
    ref = _reference(encoder, store, pairs)
    out = temporal_stability(encoder, store, pairs, k=2, min_rows=4)
    from densefeat.eval.temporal import window_records

    want, _ = window_records(pairs, ref, k=2, min_rows=4)
    assert out["n_windows"] == len(want) > 0
    for rec, ref_rec in zip(out["windows"], want, strict=True):
        for key in ("subspace_distance", "floor"):
            assert rec[key] == pytest.approx(ref_rec[key], abs=1e-4), key


def test_half_window_views_number_the_window_from_its_first_event():
    # 5 new events, max_len 1: the gather (1 + 3 positions) misses NEW0, yet the numbering
    # starts there (A = NEW0, NEW2, NEW4; B = NEW1, NEW3), alone or beside any batch-mate.
    rows = [(1, D(2010, 1, 1), "OLD0", None)]
    rows += [(1, D(2010, 3, 1 + i), f"NEW{i}", None) for i in range(5)]
    rows += [(2, D(2010, 1, 1), "OLD0", None)]
    rows += [(2, D(2010, 3, 1) + dt.timedelta(hours=i), f"NEW{i}", None) for i in range(9)]
    events = events_frame(rows)
    builder = HistoryBuilder.fit(events, split=None, min_subjects=1, max_len=1)
    store = builder.encode(events)
    inv = dict(enumerate(["<pad>", "<unk>", *builder.vocabulary.codes_]))
    t, t1 = _us(D(2010, 2, 1)), _us(D(2010, 6, 1))
    alone = half_window_views(store, np.array([1]), np.array([t]), np.array([t1]))
    pair = half_window_views(store, np.array([1, 2]), np.array([t, t]), np.array([t1, t1]))
    last = [[inv[int(view.codes[i, -1])] for view in views] for views, i in ((alone, 0), (pair, 0))]
    assert last == [["NEW4", "NEW3"], ["NEW4", "NEW3"]]
    for a, b in zip(alone, pair, strict=True):
        for name in a.position_fields():
            assert torch.equal(getattr(a, name)[0], getattr(b, name)[0]), name
