"""Patient histories -> EventBatch: hand-checked batches, the no-leakage guarantee, train-only
statistics, UNK, static features, serialisation, iteration and the default dataset."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest
import torch

from _helpers import events_frame
from densefeat.data.ehr import (
    PAD_ID,
    UNK_ID,
    US_PER_DAY,
    EventBatch,
    HistoryBuilder,
    NumericNormalizer,
    Vocabulary,
    end_of_record,
)
from densefeat.data.meds import read_meds_dataset, write_meds_dataset

D = dt.datetime
BIRTH = D(2000, 1, 1)


def _events() -> pl.DataFrame:
    """Four subjects; 1-3 train, 4 held_out. LAB values 1..9 in train, 1000 only in held-out."""
    rows = [
        # subject 1: static F, born 2000-01-01, ten timed events A0..A9 daily from 2020-01-01
        (1, None, "GENDER/F", None),
        (1, BIRTH, "MEDS_BIRTH", None),
        *[(1, D(2020, 1, 1 + i), f"A{i}", None) for i in range(10)],
        (1, D(2020, 1, 3), "LAB", 1.0),
        # subject 2: static M, born 1990-07-01; LAB values 2..5
        (2, None, "GENDER/M", None),
        (2, D(1990, 7, 1), "MEDS_BIRTH", None),
        *[(2, D(2021, 3, 1 + i), "LAB", float(2 + i)) for i in range(4)],
        (2, D(2021, 3, 10), "A1", None),
        # subject 3: no birth event (age unknown), LAB values 6..9
        (3, None, "GENDER/F", None),
        *[(3, D(2019, 5, 1 + i), "LAB", float(6 + i)) for i in range(4)],
        (3, D(2019, 6, 1, 12), "A2", None),
        # subject 4 (held_out): a code never seen in training and an extreme LAB value
        (4, None, "GENDER/X", None),
        (4, D(1980, 1, 1), "MEDS_BIRTH", None),
        (4, D(2022, 1, 1), "ONLY_HELD_OUT", None),
        (4, D(2022, 1, 2), "LAB", 1000.0),
        (4, D(2022, 1, 3), "A0", None),
    ]
    return events_frame(rows)


SPLITS = pl.DataFrame(
    {"subject_id": [1, 2, 3, 4], "split": ["train", "train", "train", "held_out"]}
)


@pytest.fixture()
def dataset(tmp_path):
    path = write_meds_dataset(
        tmp_path / "meds", _events(), dataset_name="toy", splits=SPLITS, shard_rows=10
    )
    return read_meds_dataset(path)


@pytest.fixture()
def builder(dataset):
    return HistoryBuilder.fit(dataset, min_subjects=1, min_values=3, max_len=8)


def _rows(pairs) -> pl.DataFrame:
    return pl.DataFrame(
        {"subject_id": [p[0] for p in pairs], "prediction_time": [p[1] for p in pairs]},
        schema={"subject_id": pl.Int64, "prediction_time": pl.Datetime("us")},
    )


def _decode(builder: HistoryBuilder, ids: torch.Tensor) -> list[str]:
    names = ["<pad>", "<unk>", *builder.vocabulary.codes_]
    return [names[i] for i in ids.tolist()]


def test_vocabulary_from_train_split_only(builder):
    vocab = builder.vocabulary
    assert "ONLY_HELD_OUT" not in vocab.codes_
    assert set(vocab.codes_) == {"MEDS_BIRTH", "LAB", *(f"A{i}" for i in range(10))}
    assert vocab.static_codes_ == ("GENDER/F", "GENDER/M")  # GENDER/X is held-out only
    assert vocab.encode(["LAB", "ONLY_HELD_OUT"])[1] == UNK_ID
    assert len(vocab) == 2 + len(vocab.codes_)
    assert min(vocab.encode(list(vocab.codes_))) == 2  # 0 and 1 are reserved


def test_vocabulary_cutoff_maps_rare_codes_to_unk(dataset):
    vocab = Vocabulary(min_subjects=2).fit(dataset.events("train"))
    # A1 (subjects 1, 2), A2 (1, 3), LAB (1, 2, 3), MEDS_BIRTH (1, 2) pass; A0 (1 only) does not.
    assert set(vocab.codes_) == {"A1", "A2", "LAB", "MEDS_BIRTH"}
    assert vocab.codes_[0] == "LAB"  # most frequent first
    assert vocab.encode(["A0"])[0] == UNK_ID
    assert vocab.static_codes_ == ("GENDER/F",)
    count = Vocabulary(min_subjects=1, min_count=5).fit(dataset.events("train"))
    assert count.codes_ == ("LAB",)


def test_normalizer_uses_train_statistics_only(dataset, builder):
    norm = builder.normalizer
    assert norm.codes_ == ("LAB",)
    train_values = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9], dtype=np.float64)
    assert norm.center_[0] == pytest.approx(np.median(train_values))
    iqr = np.quantile(train_values, 0.75) - np.quantile(train_values, 0.25)
    assert norm.scale_[0] == pytest.approx(iqr / 1.3489795)
    # Fitting on everything would move the statistics: the held-out 1000 must not.
    everything = NumericNormalizer(min_values=3).fit(dataset.events())
    assert everything.center_[0] != norm.center_[0]
    z = norm.transform(["LAB", "LAB", "UNSEEN"], [5.0, 1000.0, 3.0])
    assert z[0] == pytest.approx(0.0)
    assert z[1] == pytest.approx(10.0)  # clipped
    assert np.isnan(z[2])  # no statistics -> dropped


def test_hand_checked_batch(dataset, builder):
    store = builder.encode(dataset)
    pt = D(2020, 1, 5)
    batch = builder.build_batch(store, _rows([(1, pt), (3, D(2019, 5, 2, 23))])).validate()
    assert batch.codes.shape == (2, 8) and batch.static.shape == (2, 2 + 2)
    # Subject 1 at 2020-01-05: birth, A0..A4 and LAB (at 01-03, after A2 in time order).
    assert batch.mask[0].tolist() == [False] + [True] * 7
    assert _decode(builder, batch.codes[0]) == [
        "<pad>", "MEDS_BIRTH", "A0", "A1", "A2", "LAB", "A3", "A4",
    ]  # fmt: skip
    assert batch.codes[0, 0] == PAD_ID
    days = torch.tensor(
        [(pt - D(2020, 1, d)).days for d in (1, 2, 3, 3, 4, 5)], dtype=torch.float32
    )
    assert torch.equal(batch.time_before_prediction[0, 2:], days)
    assert batch.time_before_prediction[0, 1] == pytest.approx((pt - BIRTH).days)
    assert batch.delta_t[0].tolist() == [0, 0, (D(2020, 1, 1) - BIRTH).days, 1, 1, 0, 1, 1]
    age = (D(2020, 1, 3) - BIRTH) / dt.timedelta(days=365.25)
    assert batch.age[0, 5].item() == pytest.approx(age, rel=1e-6)
    assert batch.age[0, 1].item() == 0.0  # at birth
    # Only LAB has a value; 1.0 normalised with the train median 5 and IQR 4.
    assert batch.has_value[0].tolist() == [False] * 5 + [True, False, False]
    assert batch.values[0, 5].item() == pytest.approx((1 - 5) / (4 / 1.3489795), rel=1e-5)
    # Static: GENDER/F one-hot, age at prediction, age known.
    assert batch.static[0, :2].tolist() == [1.0, 0.0]
    assert batch.static[0, 2].item() == pytest.approx((pt - BIRTH) / dt.timedelta(days=365.25))
    assert batch.static[0, 3].item() == 1.0
    # Subject 3: no birth -> age 0 and the flag off; two LAB events before 05-02 23:00.
    assert not batch.age_known[1] and batch.static[1, 3].item() == 0.0
    assert batch.mask[1].sum() == 2 and (batch.age[1] == 0).all()
    assert batch.prediction_time[1].item() == (D(2019, 5, 2, 23) - D(1970, 1, 1)) // dt.timedelta(
        microseconds=1
    )


def test_truncation_keeps_the_last_events(dataset, builder):
    store = builder.encode(dataset)
    rows = _rows([(1, D(2030, 1, 1))])
    batch = builder.build_batch(store, rows, max_len=4)
    assert batch.mask.all()
    assert _decode(builder, batch.codes[0]) == ["A6", "A7", "A8", "A9"]
    # delta_t of the oldest kept event still refers to its (truncated) predecessor.
    assert batch.delta_t[0, 0].item() == 1.0
    long = builder.build_batch(store, rows, max_len=40)
    assert long.mask[0].sum() == 12 and not long.mask[0, :28].any()
    assert torch.equal(long.codes[0, -4:], batch.codes[0])


def test_no_event_after_the_prediction_time(dataset, builder):
    store = builder.encode(dataset)
    at = D(2020, 1, 4)  # A3 is exactly at this time
    one_us = dt.timedelta(microseconds=1)
    cases = {
        at: "A3",  # an event exactly at the prediction time enters
        at - one_us: "A2",  # one microsecond before A3: A3 must not enter (LAB at 01-03 is last)
        at + dt.timedelta(seconds=1) - one_us: "A3",
    }
    for pt, last in cases.items():
        batch = builder.build_batch(store, _rows([(1, pt)]), max_len=32).validate()
        codes = _decode(builder, batch.codes[0][batch.mask[0]])
        assert "A4" not in codes  # one day later: never
        if last == "A2":
            assert codes[-1] == "LAB" and "A3" not in codes
        else:
            assert codes[-1] == "A3"
        assert (batch.time_before_prediction[batch.mask] >= 0).all()


def test_no_leakage_matches_a_polars_reference():
    # Random data and cut-offs, checked against a direct polars filter + tail.
    rng = np.random.default_rng(0)
    n = 5000
    subject = np.sort(rng.integers(0, 40, n))
    seconds = rng.integers(0, 10 * 86400, n)
    events = pl.DataFrame(
        {
            "subject_id": subject,
            "time": (pl.Series(seconds * 1_000_000).cast(pl.Datetime("us"))),
            "code": [f"C{c}" for c in rng.integers(0, 50, n)],
        }
    ).sort("subject_id", "time")
    builder = HistoryBuilder.fit(events, split=None, min_subjects=1, max_len=16)
    store = builder.encode(events)
    pts = rng.integers(0, 10 * 86400, 200) * 1_000_000 + rng.integers(-1, 2, 200)
    rows = pl.DataFrame(
        {"subject_id": rng.choice(store.subject_ids, 200), "prediction_time": pts}
    ).with_columns(pl.col("prediction_time").cast(pl.Datetime("us")))
    batch = builder.build_batch(store, rows).validate()
    ref = (
        rows.with_row_index("row")
        .join(events, on="subject_id")
        .filter(pl.col("time") <= pl.col("prediction_time"))
        .group_by("row", maintain_order=True)
        .agg(pl.col("code").tail(16))
    )
    got = dict(zip(ref["row"].to_list(), ref["code"].to_list(), strict=True))
    for i in range(rows.height):
        assert _decode(builder, batch.codes[i][batch.mask[i]]) == got.get(i, [])


def test_unseen_codes_map_to_unk(dataset, builder):
    store = builder.encode(dataset)
    batch = builder.build_batch(store, _rows([(4, D(2022, 1, 3))])).validate()
    assert _decode(builder, batch.codes[0][batch.mask[0]]) == ["MEDS_BIRTH", "<unk>", "LAB", "A0"]
    # GENDER/X has no static column: all static indicators off, age known.
    assert batch.static[0, :2].tolist() == [0.0, 0.0] and batch.static[0, 3] == 1.0
    assert batch.values[0, -2].item() == pytest.approx(10.0)  # 1000 clipped


def test_serialisation_round_trip(dataset, builder):
    state = json.loads(json.dumps(builder.to_dict()))
    again = HistoryBuilder.from_dict(state)
    assert again.vocabulary == builder.vocabulary
    assert again.normalizer.to_dict() == builder.normalizer.to_dict()
    assert Vocabulary.from_json(builder.vocabulary.to_json()) == builder.vocabulary
    norm = NumericNormalizer.from_json(builder.normalizer.to_json())
    np.testing.assert_array_equal(norm.center_, builder.normalizer.center_)
    np.testing.assert_array_equal(norm.scale_, builder.normalizer.scale_)
    rows = end_of_record(dataset.events())
    a = builder.build_batch(builder.encode(dataset), rows)
    b = again.build_batch(again.encode(dataset), rows)
    for name in EventBatch.__dataclass_fields__:
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    with pytest.raises(ValueError, match="not a densefeat Vocabulary"):
        Vocabulary.from_dict({"kind": "other"})


def test_encode_sharded_equals_single_frame(dataset, builder):
    # The dataset was written in several shards; encoding one frame must give the same store.
    assert len(dataset.data_files) > 1
    a = builder.encode(dataset)
    b = builder.encode(_events().sample(fraction=1.0, shuffle=True, seed=1))  # unsorted input
    for name in ("subject_ids", "start", "end", "time", "code", "value", "birth", "static"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    only = builder.encode(dataset, subjects=[2, 4])
    assert only.subject_ids.tolist() == [2, 4]


def test_rows_errors(dataset, builder):
    store = builder.encode(dataset)
    with pytest.raises(KeyError, match="99"):
        builder.build_batch(store, _rows([(99, D(2020, 1, 1))]))
    with pytest.raises(ValueError, match="prediction_time"):
        builder.build_batch(store, pl.DataFrame({"subject_id": [1]}))
    with pytest.raises(ValueError, match="split"):
        HistoryBuilder.fit(dataset.events("train"))  # plain events: say split=None
    empty = builder.build_batch(store, _rows([(1, D(1999, 1, 1))])).validate()
    assert not empty.mask.any() and empty.static[0, 0] == 1.0  # statics always enter


def test_build_batch_from_plain_events(builder):
    batch = builder.build_batch(_events(), _rows([(2, D(2021, 3, 2))])).validate()
    assert _decode(builder, batch.codes[0][batch.mask[0]]) == ["MEDS_BIRTH", "LAB", "LAB"]


def test_default_dataset(monkeypatch, tmp_path):
    from densefeat.data.convert.eunomia import eunomia_meds

    monkeypatch.setenv("DENSEFEAT_CACHE", str(tmp_path))
    ds = read_meds_dataset(eunomia_meds())
    builder = HistoryBuilder.fit(ds)
    store = builder.encode(ds)
    assert store.n_subjects == 2694
    assert set(builder.vocabulary.static_codes_) >= {"GENDER/F", "GENDER/M"}
    train = set(ds.split_ids("train").to_list())
    rows = store.end_of_record()
    batch = builder.build_batch(store, rows).validate()
    assert batch.codes.shape == (2694, 256)
    assert batch.age_known.all()
    # Every history ends with the record's last event, exactly at the prediction time.
    has = batch.mask.any(dim=1)
    assert (batch.time_before_prediction[has, -1] == 0).all()
    # Codes seen only outside the training split are UNK.
    held = ds.events().filter(~pl.col("subject_id").is_in(list(train))).collect()
    train_codes = set(ds.events("train").select("code").unique().collect()["code"].to_list())
    unseen = set(held["code"].unique().to_list()) - train_codes
    if unseen:
        assert builder.vocabulary.encode(sorted(unseen)).tolist() == [UNK_ID] * len(unseen)
    per_day = batch.time_before_prediction[batch.mask] * US_PER_DAY
    assert torch.isfinite(per_day).all()


def test_coverage_markers_never_enter_histories():
    from datetime import datetime

    from densefeat.data.ehr import COVERAGE_MARKER_CODES, HistoryBuilder, end_of_record

    rows = []
    for sid in range(1, 8):
        rows += [
            (sid, datetime(2000, 1, 1), "MEDS_OBSERVATION_START"),
            (sid, datetime(2001, 1, 1), "A"),
            (sid, datetime(2002, 1, 1), "B"),
            (sid, datetime(2005, 1, 1), "MEDS_OBSERVATION_END"),
        ]
    events = pl.DataFrame(
        rows,
        schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.String},
        orient="row",
    ).with_columns(numeric_value=pl.lit(None, pl.Float32), text_value=pl.lit(None, pl.String))
    builder = HistoryBuilder.fit(events, split=None, min_subjects=1)
    assert not set(COVERAGE_MARKER_CODES) & set(builder.vocabulary.codes_)
    ends = end_of_record(events)
    assert ends["prediction_time"].to_list() == [datetime(2002, 1, 1)] * 7
    batch = builder.build_batch(
        builder.encode(events),
        ends.with_columns(prediction_time=pl.lit(datetime(2006, 1, 1), pl.Datetime("us"))),
    )
    assert int(batch.mask.sum()) == 2 * 7  # A and B only, no markers
