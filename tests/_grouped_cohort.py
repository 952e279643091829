"""A small ICU-like MEDS dataset with vitals, labs and static values: the code-group fixture.

Hourly vitals (``VITAL//HR``, ``VITAL//SBP``), labs every few hours (``LAB//LACT``,
``LAB//WBC``), static sex codes and a birth event. Sick subjects have a higher heart rate
and lactate, so both groups carry the label's signal (a probe on the fused embedding can
learn it, and the two groups share a direction of variation).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl

from densefeat.data.meds import write_meds_dataset

__all__ = ["grouped_cohort"]


def grouped_cohort(root: Path, n_subjects: int = 120, seed: int = 0) -> Path:
    """Write the fixture under ``root/meds`` (with ``labels/sick.parquet``) and return it."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    t0 = dt.datetime(2020, 1, 1)
    for s in range(n_subjects):
        start = t0 + dt.timedelta(days=int(rng.integers(0, 300)))
        sick = bool(rng.random() < 0.4)
        level = rng.normal() + (1.5 if sick else 0.0)  # the subject's shared latent state
        rows.append((s, None, "GENDER//F" if rng.random() < 0.5 else "GENDER//M", None))
        rows.append(
            (s, start - dt.timedelta(days=365 * int(rng.integers(30, 80))), "MEDS_BIRTH", None)
        )
        n_hours = int(rng.integers(30, 60))
        for h in range(n_hours):
            t = start + dt.timedelta(hours=h)
            rows.append((s, t, "VITAL//HR", float(80 + 10 * level + rng.normal())))
            rows.append((s, t, "VITAL//SBP", float(120 - 5 * level + rng.normal())))
            if h % 4 == 1:
                rows.append(
                    (s, t + dt.timedelta(minutes=20), "LAB//LACT", float(level + rng.normal()))
                )
            if h % 6 == 2:
                rows.append((s, t + dt.timedelta(minutes=20), "LAB//WBC", float(rng.normal())))
        for h in (12, 24):
            labels.append((s, start + dt.timedelta(hours=h, minutes=30), sick))
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
    out = write_meds_dataset(
        root / "meds",
        events,
        dataset_name="grouped_cohort",
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
    ).write_parquet(out / "labels" / "sick.parquet")
    return out
