"""Count features: log counts of each code in a subject's history up to a cut-off."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

__all__ = ["code_count_features"]


def code_count_features(
    events: pl.DataFrame | pl.LazyFrame, cutoffs: pl.DataFrame, vocabulary: Sequence[str]
) -> np.ndarray:
    """``log(1 + count)`` of each vocabulary code among a subject's events up to a cut-off.

    A row counts the subject's static events (null ``time``) and its events with
    ``time <= cutoff``: nothing after the cut-off ever enters a row. Codes outside
    ``vocabulary`` are dropped.

    Args:
        events: MEDS events (``subject_id``, ``time``, ``code``).
        cutoffs: ``subject_id, cutoff`` (Datetime), one row per output row, order kept.
        vocabulary: the feature codes, in column order.

    Returns:
        float32 array of shape (len(cutoffs), len(vocabulary)).
    """
    index = {code: j for j, code in enumerate(vocabulary)}
    rows = cutoffs.lazy().with_row_index("row")
    counts = (
        rows.join(events.lazy().select("subject_id", "time", "code"), on="subject_id")
        .filter(pl.col("time").is_null() | (pl.col("time") <= pl.col("cutoff")))
        .filter(pl.col("code").is_in(list(index)))
        .group_by(["row", "code"])
        .len()
        .collect()
    )
    out = np.zeros((cutoffs.height, len(vocabulary)), dtype=np.float32)
    r = counts["row"].to_numpy()
    c = counts["code"].replace_strict(index, return_dtype=pl.Int64).to_numpy()
    out[r, c] = np.log1p(counts["len"].to_numpy().astype(np.float32))
    return out
