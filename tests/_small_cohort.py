"""A 60-subject MEDS dataset with one shipped binary task: the small-cohort fixture.

Hourly events of a short hospital stay (about 3 days) per subject; the task's label depends on
a code seen before the prediction time, so a probe has signal. 80/10/10 splits leave about six
held-out subjects: every probe must fall back to cross-fitting and every subspace dimension
must be clipped.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl

from densefeat.data.meds import write_meds_dataset


def small_cohort(root: Path, n_subjects: int = 60, seed: int = 0, new_codes: int = 0) -> Path:
    """Write the fixture under ``root/meds`` (with ``labels/outcome.parquet``) and return it.

    ``new_codes`` > 0 replaces that many of the lab codes by codes of another name (a second
    site whose vocabulary differs)."""
    rng = np.random.default_rng(seed)
    codes = [f"LAB//{i}" for i in range(12)] + [f"DX//{i}" for i in range(6)]
    for i in range(new_codes):
        codes[i] = f"LAB//NEW{i}"
    rows, labels = [], []
    t0 = dt.datetime(2020, 1, 1)
    for s in range(n_subjects):
        start = t0 + dt.timedelta(days=int(rng.integers(0, 300)))
        sick = rng.random() < 0.4
        n_hours = int(rng.integers(30, 72))
        for h in range(n_hours):
            t = start + dt.timedelta(hours=h)
            for c in rng.choice(len(codes) - 6, size=2, replace=False):
                rows.append((s, t, codes[c], float(rng.normal())))
            if sick and h % 7 == 3:
                rows.append((s, t, "DX//0", None))
            elif h % 11 == 5:
                rows.append((s, t, codes[12 + int(rng.integers(1, 6))], None))
        for h in (12, 24):
            if h < n_hours:
                labels.append((s, start + dt.timedelta(hours=h, minutes=30), bool(sick)))
    events = pl.DataFrame(
        rows,
        schema={
            "subject_id": pl.Int64,
            "time": pl.Datetime("us"),
            "code": pl.Utf8,
            "numeric_value": pl.Float32,
        },
        orient="row",
    )
    # Hourly ICU-like stays: marked as PhysioNet 2019 data, so the benchmark adds its ICU
    # control (hours since admission) and jitters by an hour.
    out = write_meds_dataset(
        root / "meds",
        events,
        dataset_name="small_cohort",
        etl_name="densefeat.physionet2019",
        seed=seed,
    )
    (out / "labels").mkdir()
    pl.DataFrame(
        labels,
        schema={
            "subject_id": pl.Int64,
            "prediction_time": pl.Datetime("us"),
            "boolean_value": pl.Boolean,
        },
        orient="row",
    ).write_parquet(out / "labels" / "outcome.parquet")
    return out
