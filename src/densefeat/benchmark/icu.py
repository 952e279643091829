"""The ICU "hours since admission" control (PhysioNet 2019 and other ICU-stay data).

Set A's records end differently for septic and non-septic stays (a stay is cut soon after
onset), so *when* a prediction is made already says something about the label. A probe on
the hours since admission alone measures how much; the same probe on every method's features
plus that one column measures what an embedding adds beyond it. Both are reported beside the
ICU tasks (probe records with ``method`` ``hours_since_admission``, and ``embedding``
``raw+hours`` for every run and the count features).

Hours since admission: ``(prediction_time - first timed event of the subject) / 1 h``, the
stay's first measurement standing for the ICU admission (PhysioNet 2019's ``ICULOS``); it uses
no event after the prediction time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

__all__ = ["CONTROL", "hours_since_admission", "is_icu"]

#: The control's name (a probe-only row) and the suffix of the "+ hours" embedding variant.
CONTROL = "hours_since_admission"


def is_icu(ds: Any) -> bool:
    """ICU-stay data (converted by ``densefeat convert physionet2019``)."""
    return ds.metadata.get("etl_name") == "densefeat.physionet2019"


def hours_since_admission(ds: Any, rows: pl.DataFrame) -> np.ndarray:
    """(n, 1) hours from each subject's first timed event to the row's prediction time.

    Raises:
        ValueError: a row whose subject has no timed event at or before its prediction time.
    """
    first = (
        ds.events()
        .filter(pl.col("time").is_not_null())
        .group_by("subject_id")
        .agg(pl.col("time").min().alias("first"))
        .collect()
    )
    joined = rows.select("subject_id", "prediction_time").join(
        first, on="subject_id", how="left", maintain_order="left"
    )
    hours = (
        joined["prediction_time"].cast(pl.Datetime("us")) - joined["first"].cast(pl.Datetime("us"))
    ).dt.total_microseconds().to_numpy() / 3.6e9
    bad = ~np.isfinite(hours) | (hours < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"hours since admission: subject {joined['subject_id'][i]} has no timed event at or "
            f"before its prediction time {joined['prediction_time'][i]}"
        )
    return hours.reshape(-1, 1).astype(np.float64)
