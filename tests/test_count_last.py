"""The stronger count baseline: counts + static values + last values, by hand on a fixture."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from _helpers import events_frame
from densefeat.data.ehr import HistoryBuilder
from densefeat.data.ehr.count_features import code_count_features, count_last_features

D = dt.datetime
US_PER_YEAR = 86_400_000_000 * 365.25


def _events() -> pl.DataFrame:
    rows = []
    for s in range(1, 7):  # training subjects: the statistics come from these
        rows += [
            (s, None, "GENDER/F" if s % 2 else "GENDER/M", None),
            (s, None, "DEMOGRAPHIC//Age", 40.0 + 5 * s),
            (s, D(1970 + s, 1, 1), "MEDS_BIRTH", None),
            (s, D(2020, 1, 1, 1), "VITAL//HR", 70.0 + s),
            (s, D(2020, 1, 1, 2), "VITAL//HR", 80.0 + s),
            (s, D(2020, 1, 1, 2), "LAB//Lactate", 1.0 + 0.5 * s),
            (s, D(2020, 1, 1, 3), "FLAG", None),
        ]
    # Subject 7 (evaluation): two HR values at the same time (the later row wins), a value
    # one second after the cut-off, no age value, no gender.
    rows += [
        (7, D(1950, 1, 1), "MEDS_BIRTH", None),
        (7, D(2020, 1, 1, 1), "VITAL//HR", 60.0),
        (7, D(2020, 1, 1, 2), "VITAL//HR", 61.0),
        (7, D(2020, 1, 1, 2), "VITAL//HR", 62.0),
        (7, D(2020, 1, 1, 2, 0, 1), "VITAL//HR", 500.0),
        (7, D(2020, 1, 1, 2, 0, 1), "LAB//Lactate", 9.0),
        (7, D(2020, 1, 1, 2, 0, 1), "FLAG", None),
    ]
    return events_frame(rows)


def test_count_last_features_by_hand():
    events = _events()
    builder = HistoryBuilder.fit(
        events.filter(pl.col("subject_id") <= 6), split=None, min_subjects=2, min_values=3
    )
    vocab, norm = builder.vocabulary, builder.normalizer
    codes = ["VITAL//HR", "LAB//Lactate", "FLAG"]
    cut = D(2020, 1, 1, 2)
    cutoffs = pl.DataFrame(
        {"subject_id": [7, 3, 3], "cutoff": [cut, cut, D(2020, 1, 1, 0)]},
        schema={"subject_id": pl.Int64, "cutoff": pl.Datetime("us")},
    )
    x, names = count_last_features(events, cutoffs, vocab, norm, codes)
    f = {name: x[:, j] for j, name in enumerate(names)}
    assert x.shape == (3, len(names)) and len(set(names)) == len(names)
    # Counts equal the counts-only baseline (first block).
    np.testing.assert_array_equal(x[:, :3], code_count_features(events, cutoffs, codes))
    np.testing.assert_allclose(f["count:VITAL//HR"], np.log1p([3, 2, 0]), rtol=1e-6)
    np.testing.assert_allclose(f["count:FLAG"], [0, 0, 0])  # subject 7's flag is 1 s late
    # Static indicators and values (age normalised with the TRAINING median/IQR: 45..70).
    ages = 40.0 + 5 * np.arange(1, 7)
    q1, q3 = np.percentile(ages, [25, 75])
    z3 = (55.0 - np.median(ages)) / ((q3 - q1) / 1.3489795)
    np.testing.assert_allclose(f["static_value:DEMOGRAPHIC//Age"], [0, z3, z3], rtol=1e-5)
    np.testing.assert_array_equal(f["static:GENDER/F"], [0, 1, 1])
    np.testing.assert_array_equal(f["static:DEMOGRAPHIC//Age"], [0, 1, 1])
    # Age at the cut-off from MEDS_BIRTH.
    want_age = [
        (np.datetime64(cut) - np.datetime64(D(1950, 1, 1)))
        .astype("timedelta64[us]")
        .astype(np.int64)
        / US_PER_YEAR,
        (np.datetime64(cut) - np.datetime64(D(1973, 1, 1)))
        .astype("timedelta64[us]")
        .astype(np.int64)
        / US_PER_YEAR,
        (np.datetime64(D(2020, 1, 1, 0)) - np.datetime64(D(1973, 1, 1)))
        .astype("timedelta64[us]")
        .astype(np.int64)
        / US_PER_YEAR,
    ]
    np.testing.assert_allclose(f["age_years"], want_age, rtol=1e-6)
    # Last values: the later of two same-time rows, never the value 1 s after the cut-off.
    hr = norm.transform(["VITAL//HR"] * 2, [62.0, 83.0])
    np.testing.assert_allclose(f["last:VITAL//HR"], [hr[0], hr[1], 0.0], rtol=1e-6)
    np.testing.assert_array_equal(f["seen:VITAL//HR"], [1, 1, 0])
    lac = norm.transform(["LAB//Lactate"], [2.5])[0]
    np.testing.assert_allclose(f["last:LAB//Lactate"], [0.0, lac, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(f["seen:LAB//Lactate"], [0, 1, 0])
    assert "last:FLAG" not in names  # no numeric statistics: no last value column


def test_count_last_features_never_read_after_the_cutoff():
    events = _events()
    builder = HistoryBuilder.fit(events, split=None, min_subjects=2, min_values=3)
    cutoffs = pl.DataFrame(
        {"subject_id": [7], "cutoff": [D(2020, 1, 1, 2)]},
        schema={"subject_id": pl.Int64, "cutoff": pl.Datetime("us")},
    )
    args = (builder.vocabulary, builder.normalizer, ["VITAL//HR", "LAB//Lactate"])
    a, _ = count_last_features(events, cutoffs, *args)
    before = events.filter(pl.col("time").is_null() | (pl.col("time") <= D(2020, 1, 1, 2)))
    b, _ = count_last_features(before, cutoffs, *args)
    np.testing.assert_array_equal(a, b)


def test_count_last_features_without_static_or_numeric_codes():
    events = (
        _events()
        .filter(pl.col("time").is_not_null())
        .with_columns(pl.lit(None, pl.Float32).alias("numeric_value"))
    )
    builder = HistoryBuilder.fit(events, split=None, min_subjects=2)
    assert builder.vocabulary.static_codes_ == () and builder.vocabulary.static_value_codes_ == ()
    cutoffs = pl.DataFrame(
        {"subject_id": [7, 1], "cutoff": [D(2020, 1, 1, 2), D(2020, 1, 1, 3)]},
        schema={"subject_id": pl.Int64, "cutoff": pl.Datetime("us")},
    )
    x, names = count_last_features(events, cutoffs, builder.vocabulary, builder.normalizer)
    assert not any(n.startswith(("static", "last:", "seen:")) for n in names)
    assert {"count:VITAL//HR", "age_years", "age_known"} <= set(names)
    assert x.shape == (2, len(names)) and np.isfinite(x).all()
