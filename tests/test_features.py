"""Count features never see events after the cut-off."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl

from densefeat.data.ehr.count_features import code_count_features


def _events():
    t0 = datetime(2020, 1, 1, 12, 0, 0)
    return pl.DataFrame(
        {
            "subject_id": [1, 1, 1, 1, 1, 2, 2],
            "time": [None, t0, t0, t0 + timedelta(seconds=1), t0 + timedelta(days=9), t0, None],
            "code": ["GENDER/F", "A", "A", "B", "A", "B", "GENDER/M"],
        },
        schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.String},
    )


def test_events_after_the_cutoff_never_enter():
    t0 = datetime(2020, 1, 1, 12, 0, 0)
    cutoffs = pl.DataFrame(
        {"subject_id": [1, 1, 2], "cutoff": [t0, t0 + timedelta(seconds=1), t0]},
        schema={"subject_id": pl.Int64, "cutoff": pl.Datetime("us")},
    )
    vocab = ["A", "B", "GENDER/F", "GENDER/M", "UNSEEN"]
    x = code_count_features(_events(), cutoffs, vocab)
    expected = np.log1p(
        np.array(
            [
                [2, 0, 1, 0, 0],  # B one second after the cut-off is not counted
                [2, 1, 1, 0, 0],  # ... and is at a cut-off one second later
                [0, 1, 0, 1, 0],  # static events always count
            ],
            dtype=np.float32,
        )
    )
    np.testing.assert_array_equal(x, expected)


def test_row_order_follows_cutoffs_and_unknown_subjects_are_zero():
    t0 = datetime(2030, 1, 1)
    cutoffs = pl.DataFrame(
        {"subject_id": [2, 99, 1], "cutoff": [t0, t0, t0]},
        schema={"subject_id": pl.Int64, "cutoff": pl.Datetime("us")},
    )
    x = code_count_features(_events(), cutoffs, ["A", "B"])
    np.testing.assert_array_equal(x, np.log1p(np.array([[0, 1], [0, 0], [3, 1]], np.float32)))
