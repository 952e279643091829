"""``data.pairs``: EHR pairs as two views of one window (train/views.py), windows, or mixed.

Checks the contract a pair of views must keep: the same subject and prediction time on both
sides (pairing), no event after the prediction time (every kept event is one of the original
history's, at its original time), seeded draws (an exact resume), and that the encoder sees
them as pairs in one call.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from densefeat.data.ehr import EventBatch, HistoryBuilder
from densefeat.data.ehr.windows import periodic_cuts, window_pairs
from densefeat.methods import backbone_pairs, get_method
from densefeat.models.ehr import EHREncoder, EHREncoderConfig
from densefeat.train.config import TrainConfig
from densefeat.train.modalities.ehr import TrainData, _inputs
from densefeat.train.views import future_pair, pair_kind, view_generator, view_pair


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(1)
    n = 4000
    subject = np.sort(rng.integers(0, 50, n))
    seconds = rng.integers(0, 900 * 86400, n)  # each subject spans ~900 days
    events = pl.DataFrame(
        {
            "subject_id": subject,
            "time": pl.Series(seconds * 1_000_000).cast(pl.Datetime("us")),
            "code": [f"C{c}" for c in rng.integers(0, 25, n)],
            "numeric_value": np.where(rng.random(n) < 0.4, rng.normal(size=n), np.nan),
        }
    ).with_columns(pl.col("numeric_value").fill_nan(None))
    events = events.sort("subject_id", "time")
    builder = HistoryBuilder.fit(events, split=None, min_subjects=1, min_values=3, max_len=24)
    store = builder.encode(events)
    rows = window_pairs(store, periodic_cuts(store, 180.0))
    data = TrainData(store, rows, rows.head(0))
    return builder, store, data


def _events(b: EventBatch, i: int) -> list[tuple[float, int]]:
    m = b.mask[i]
    return list(zip(b.time_before_prediction[i][m].tolist(), b.codes[i][m].tolist(), strict=True))


def test_views_keep_pairing_and_never_cross_the_prediction_time(setup) -> None:
    _, store, data = setup
    cfg = TrainConfig(data={"pairs": "views", "view_crop": 0.5, "view_dropout": 0.3})
    idx = np.arange(40)
    table = data.rows[idx]
    sid = table["subject_id"].cast(pl.Int64).to_numpy()
    t1 = table["time_t1"].cast(pl.Datetime("us")).cast(pl.Int64).to_numpy()
    full = store.gather(sid, t1)
    views = view_pair(full, view_generator(0, 3, 0), cfg.data).validate()
    b = full.batch_size
    assert views.batch_size == 2 * b
    for side in (slice(0, b), slice(b, 2 * b)):
        assert torch.equal(views.subject_id[side], full.subject_id)
        assert torch.equal(views.prediction_time[side], full.prediction_time)
    assert (views.time_before_prediction[views.mask] >= 0).all()
    changed = 0
    for i in range(b):
        original = _events(full, i)
        for row in (i, b + i):
            kept = _events(views, row)
            # Every kept event is an original event at its original time, in order.
            it = iter(original)
            assert all(e in it for e in kept)
            assert bool(kept) == bool(original)
        changed += _events(views, i) != _events(views, b + i)
    assert changed > b // 2  # the two sides differ (they are views, not copies)


def test_view_draws_are_seeded_by_seed_step_and_rows(setup) -> None:
    _, _, data = setup
    method = get_method("dense")
    cfg = TrainConfig(data={"pairs": "views"})
    rows = np.arange(10, 30)
    a = _inputs(method, data, rows, torch.device("cpu"), cfg, step=5)["views"]
    again = _inputs(method, data, rows, torch.device("cpu"), cfg, step=5)["views"]
    other = _inputs(method, data, rows, torch.device("cpu"), cfg, step=6)["views"]
    assert torch.equal(a.mask, again.mask) and torch.equal(a.values, again.values)
    assert not torch.equal(a.mask, other.mask)


def test_mixed_alternates_and_windows_is_unchanged(setup) -> None:
    _, _, data = setup
    method = get_method("vicreg")
    rows = np.arange(16)
    assert [pair_kind("mixed", s) for s in range(4)] == ["windows", "views"] * 2
    assert pair_kind("views", 0) == pair_kind("views", 1) == "views"
    mixed = TrainConfig(data={"pairs": "mixed"})
    assert "cutoffs" in _inputs(method, data, rows, torch.device("cpu"), mixed, step=0)
    assert "views" in _inputs(method, data, rows, torch.device("cpu"), mixed, step=1)
    plain = _inputs(method, data, rows, torch.device("cpu"), TrainConfig(), step=1)
    assert "cutoffs" in plain and "views" not in plain
    with pytest.raises(ValueError, match=r"data\.pairs"):
        TrainConfig(data={"pairs": "neighbours"})
    with pytest.raises(ValueError, match="view_crop"):
        TrainConfig(data={"view_crop": 0.0})


def test_encoder_embeds_both_views_of_a_pair(setup) -> None:
    builder, _, data = setup
    torch.manual_seed(0)
    enc = EHREncoder(
        EHREncoderConfig.from_builder(builder, d_model=16, n_layers=1, n_heads=2, dropout=0.0)
    ).eval()
    cfg = TrainConfig(data={"pairs": "views"})
    inputs = _inputs(get_method("dense"), data, np.arange(8), torch.device("cpu"), cfg, 2)
    z = backbone_pairs(enc, inputs)
    assert z.shape == (8, 2, 16)
    with torch.no_grad():
        ref = enc(inputs["views"])
    torch.testing.assert_close(z[:, 0], ref[:8])
    torch.testing.assert_close(z[:, 1], ref[8:])


def test_future_pairs_are_the_past_and_only_the_next_windows_events(setup) -> None:
    """``data.pairs="future"``: side a is the history at t exactly as a window pair's first
    side; side b holds exactly the events in (t, t1] (the store's last max_len of them,
    checked against a plain count of the raw cut-offs), no static values, and the two sides
    share no event."""
    _, store, data = setup
    cfg = TrainConfig(data={"pairs": "future"})
    rows = np.arange(40)
    inputs = _inputs(get_method("dense"), data, rows, torch.device("cpu"), cfg, step=0)
    views = inputs["views"].validate()
    table = data.rows[rows]
    sid = table["subject_id"].cast(pl.Int64).to_numpy()
    t = table["time_t"].cast(pl.Datetime("us")).cast(pl.Int64).to_numpy()
    t1 = table["time_t1"].cast(pl.Datetime("us")).cast(pl.Int64).to_numpy()
    past, later = store.gather(sid, t), store.gather(sid, t1)
    b = len(rows)
    assert views.batch_size == 2 * b
    for name in ("codes", "mask", "time_before_prediction", "values", "static"):
        assert torch.equal(getattr(views, name)[:b], getattr(past, name))
    assert torch.equal(views.subject_id[b:], past.subject_id)
    assert (views.static[b:] == 0).all() and not views.age_known[b:].any()
    idx = store.index_of(sid)
    new_events = store.count_at_or_before(idx, t1) - store.count_at_or_before(idx, t)
    gap_days = (t1 - t) / 86_400e6
    for i in range(b):
        got = _events(views, b + i)
        window = [(tb, c) for tb, c in _events(later, i) if tb < gap_days[i]]
        assert got == window  # exactly the later history's events after t, in order
        # ... which are all the (t, t1] events, up to the max_len most recent ones
        assert len(got) == min(int(new_events[i]), later.seq_len)
        assert len(got) >= 1  # window pairs keep >= 1 new event
        assert all(tb >= 0 for tb, _ in got)  # nothing after t1 (the prediction time)
    with pytest.raises(ValueError, match="window_days"):
        future_pair(past, later, torch.zeros(b))
