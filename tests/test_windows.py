"""Time windows: cut-offs, the history filters, and that paired batches pair the same subjects."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import torch

from densefeat.data.ehr import HistoryBuilder
from densefeat.data.ehr.windows import pair_batches, periodic_cuts, visit_cuts, window_pairs

D = dt.datetime


def _events() -> pl.DataFrame:
    rows = [
        # subject 1: events on 2010-01-01, 2010-06-01, 2011-03-01, 2012-02-01, 2013-12-31
        (1, None, "GENDER/F"),
        (1, D(2010, 1, 1), "Visit/IP"),
        (1, D(2010, 6, 1), "A"),
        (1, D(2011, 3, 1), "Visit/OP"),
        (1, D(2011, 3, 1), "B"),
        (1, D(2012, 2, 1), "A"),
        (1, D(2013, 12, 31), "C"),
        # subject 2: 2010-01-01 then nothing until 2012-06-01 (an empty second year)
        (2, D(2010, 1, 1), "A"),
        (2, D(2012, 6, 1), "B"),
        (2, D(2012, 7, 1), "Visit/OP"),
        # subject 3: a single day (no pairs)
        (3, D(2015, 1, 1), "A"),
    ]
    return pl.DataFrame(
        rows,
        schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.Utf8},
        orient="row",
    )


@pytest.fixture()
def store():
    events = _events()
    builder = HistoryBuilder.fit(events, split=None, min_subjects=1, max_len=8)
    return builder.encode(events)


def test_periodic_cuts_first_event_anchor(store):
    cuts = periodic_cuts(store, 365)
    one = cuts.filter(pl.col("subject_id") == 1)
    start = D(2010, 1, 1)
    # Cuts at start + k * 365 days strictly before the last event (2013-12-31).
    assert one["time"].to_list() == [start + dt.timedelta(days=365 * k) for k in (1, 2, 3)]
    assert one["window"].to_list() == [1, 2, 3]
    assert cuts.filter(pl.col("subject_id") == 3).height == 0
    twelve_hours = periodic_cuts(store, dt.timedelta(hours=12), subjects=[2])
    assert twelve_hours["time"][0] == D(2010, 1, 1, 12)


def test_periodic_cuts_start_at_the_record_not_at_birth():
    # A birth decades before the record must not anchor the grid: window 1 is the first
    # period after the first clinical event (else 12-hour windows of an ICU stay would be
    # counted from birth, tens of thousands of cuts per subject).
    events = pl.concat(
        [
            _events(),
            pl.DataFrame(
                {"subject_id": [1], "time": [D(1950, 5, 5)], "code": ["MEDS_BIRTH"]},
                schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.Utf8},
            ),
        ]
    )
    builder = HistoryBuilder.fit(events, split=None, min_subjects=1, max_len=8)
    store = builder.encode(events)
    assert store.birth_known[store.index_of(np.array([1]))][0]
    one = periodic_cuts(store, 365, subjects=[1])
    start = D(2010, 1, 1)
    assert one["time"].to_list() == [start + dt.timedelta(days=365 * k) for k in (1, 2, 3)]
    cal = periodic_cuts(store, 365, anchor="calendar", origin=D(2009, 1, 1), subjects=[1])
    assert cal["time"][0] >= start


def test_periodic_cuts_calendar_anchor(store):
    cuts = periodic_cuts(store, 365, anchor="calendar", origin=D(2009, 1, 1), subjects=[1])
    origin = D(2009, 1, 1)
    times = cuts["time"].to_list()
    assert all((t - origin).days % 365 == 0 for t in times)
    assert times[0] >= D(2010, 1, 1) and times[-1] < D(2013, 12, 31)
    with pytest.raises(ValueError, match="anchor"):
        periodic_cuts(store, 365, anchor="nope")


def test_window_pairs_filters_on_history(store):
    pairs = window_pairs(store, periodic_cuts(store, 365))
    one = pairs.filter(pl.col("subject_id") == 1)
    assert one.height == 2 and one["window"].to_list() == [1, 2]
    assert (one["time_t1"] > one["time_t"]).all()
    # Subject 2 (2010-01-01 .. 2012-07-01) has cuts at 2011-01-01 and 2012-01-01, and nothing
    # happens between them: no pair unless identical histories are allowed.
    assert pairs.filter(pl.col("subject_id") == 2).height == 0
    loose = window_pairs(store, periodic_cuts(store, 365), min_new_events=0)
    two = loose.filter(pl.col("subject_id") == 2)
    assert two["window"].to_list() == [1]
    assert two["time_t1"][0] == D(2010, 1, 1) + dt.timedelta(days=730)
    assert window_pairs(store, periodic_cuts(store, 365), min_history=10).height == 0


def test_paired_batches_have_the_same_subjects(store):
    pairs = window_pairs(store, periodic_cuts(store, 182), min_new_events=0)
    a, b = pair_batches(store, pairs)
    a.validate(), b.validate()
    assert torch.equal(a.subject_id, b.subject_id)
    assert a.subject_id.tolist() == pairs["subject_id"].to_list()
    assert (b.prediction_time > a.prediction_time).all()
    # History at both cut-offs, the later one a superset of the earlier one.
    assert a.mask.any(dim=1).all() and (b.lengths >= a.lengths).all()
    # Static features are the subject's: identical in both windows except age columns.
    assert torch.equal(a.static[:, :-2], b.static[:, :-2])


def test_training_order_of_window_pairs_keeps_pairing(store):
    # The training loop's row order (train.loop.step_rows): every pair once per epoch, seeded,
    # and the batches of a step stay paired row by row.
    from densefeat.train import TrainConfig
    from densefeat.train.loop import step_rows

    pairs = window_pairs(store, periodic_cuts(store, 91), min_new_events=0)
    cfg = TrainConfig.from_dict({"batch_size": 3, "seed": 3})
    per_epoch = pairs.height // 3
    seen = []
    for step in range(per_epoch):
        a, b = pair_batches(store, pairs[step_rows(cfg, pairs.height, step)])
        assert torch.equal(a.subject_id, b.subject_id)
        assert (b.prediction_time > a.prediction_time).all()
        seen += list(zip(a.subject_id.tolist(), a.prediction_time.tolist(), strict=True))
    expected = list(
        zip(pairs["subject_id"].to_list(), pairs["time_t"].cast(pl.Int64).to_list(), strict=True)
    )
    assert len(set(seen)) == len(seen) == per_epoch * 3  # no pair twice in an epoch
    assert set(seen) <= set(expected) and seen != expected[: len(seen)]  # shuffled
    assert [step_rows(cfg, pairs.height, s).tolist() for s in range(per_epoch)] == [
        step_rows(cfg, pairs.height, s).tolist() for s in range(per_epoch)
    ]
    # The next epoch is another permutation of the same rows.
    nxt = np.concatenate([step_rows(cfg, pairs.height, per_epoch + s) for s in range(per_epoch)])
    this = np.concatenate([step_rows(cfg, pairs.height, s) for s in range(per_epoch)])
    assert not np.array_equal(nxt, this)


def test_visit_cuts(store):
    events = _events()
    cuts = visit_cuts(events)
    assert cuts.filter(pl.col("subject_id") == 1)["time"].to_list() == [
        D(2010, 1, 1),
        D(2011, 3, 1),
    ]
    pairs = window_pairs(store, cuts)
    assert pairs["subject_id"].to_list() == [1]  # subject 2 has a single visit
    a, b = pair_batches(store, pairs)
    # The cut at a visit includes the events at the visit's time (B on 2011-03-01).
    assert a.lengths.tolist() == [1] and b.lengths.tolist() == [4]


def test_default_dataset_yearly_windows(monkeypatch, tmp_path):
    from densefeat.data.convert.eunomia import eunomia_meds
    from densefeat.data.meds import read_meds_dataset

    monkeypatch.setenv("DENSEFEAT_CACHE", str(tmp_path))
    ds = read_meds_dataset(eunomia_meds())
    builder = HistoryBuilder.fit(ds)
    store = builder.encode(ds, subjects=ds.split_ids("train"))
    pairs = window_pairs(store, periodic_cuts(store, 365))
    assert pairs.height > 1000
    last = pairs.group_by("subject_id").agg(pl.col("window").max())
    a, b = pair_batches(store, pairs.join(last, on=["subject_id", "window"]))
    assert torch.equal(a.subject_id, b.subject_id)
    idx = store.index_of(a.subject_id.numpy())
    new = store.count_at_or_before(idx, b.prediction_time.numpy()) - store.count_at_or_before(
        idx, a.prediction_time.numpy()
    )
    assert np.all(new >= 1)  # the later window holds new events (truncation may hide it)
