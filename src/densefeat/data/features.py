"""Count features: log counts of each code in a subject's history up to a cut-off."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

__all__ = ["code_count_features"]


def code_count_features(
    events: pl.DataFrame, cutoffs: pl.DataFrame, vocabulary: Sequence[str]
) -> np.ndarray:
    """``log(1 + count)`` of each vocabulary code among events at or before each cut-off.

    Only events with ``date <= cutoff`` of the same subject enter a row: a row never sees its
    future. Codes outside ``vocabulary`` are dropped.

    Args:
        events: ``subject_id, date, code``.
        cutoffs: ``subject_id, cutoff`` (one row per output row, order kept).
        vocabulary: the feature codes, in column order.

    Returns:
        float32 array of shape (len(cutoffs), len(vocabulary)).
    """
    index = {code: j for j, code in enumerate(vocabulary)}
    rows = cutoffs.with_row_index("row")
    counts = (
        rows.join(events, on="subject_id", how="inner")
        .filter(pl.col("date") <= pl.col("cutoff"))
        .filter(pl.col("code").is_in(list(index)))
        .group_by(["row", "code"])
        .len()
    )
    out = np.zeros((rows.height, len(vocabulary)), dtype=np.float32)
    r = counts["row"].to_numpy()
    c = counts["code"].replace_strict(index, return_dtype=pl.Int64).to_numpy()
    out[r, c] = np.log1p(counts["len"].to_numpy().astype(np.float32))
    return out
