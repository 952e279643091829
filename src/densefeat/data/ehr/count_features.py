"""Count-feature baselines: log counts of each code in a subject's history up to a cut-off
(:func:`code_count_features`, the benchmark's ``counts_only``), and counts plus static values and
each numeric code's last value (:func:`count_last_features`, ``count_features``)."""

from __future__ import annotations

from collections.abc import Sequence

import meds
import numpy as np
import polars as pl

from ..meds import lazy_events
from .batch import US_PER_YEAR
from .normalizer import NumericNormalizer
from .vocabulary import Vocabulary

__all__ = ["code_count_features", "count_last_features"]


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


def count_last_features(
    events: pl.DataFrame | pl.LazyFrame,
    cutoffs: pl.DataFrame,
    vocabulary: Vocabulary,
    normalizer: NumericNormalizer,
    codes: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """The stronger count baseline: counts + static values + each numeric code's last value.

    Columns, for each row ``(subject, cutoff)`` (only static events and events with
    ``time <= cutoff`` are read: nothing after the cut-off enters a row):

    * ``count:<code>``: ``log(1 + count)`` of each timed code of ``codes`` (default: the
      vocabulary's observed codes), as :func:`code_count_features`;
    * ``static:<code>``: 1 where the subject has the static code (sex, ICU unit, ...);
    * ``static_value:<code>``: the normalised value of each static value code (age, admission
      offset; 0 where absent, the indicator above tells);
    * ``age_years``, ``age_known``: age at the cut-off from ``MEDS_BIRTH`` (0 if unknown);
    * ``last:<code>``, ``seen:<code>``: for every code of ``codes`` with numeric statistics,
      the normalised value of its **last** event with a value at or before the cut-off (ties in
      time: the later row of the file) and whether there is one (0 / 0 otherwise).

    Values are normalised with ``normalizer``, fitted on the training split only (median/IQR,
    clipped): no statistic comes from the evaluation rows.

    Args:
        events: MEDS events (``subject_id``, ``time``, ``code``, ``numeric_value``).
        cutoffs: ``subject_id, cutoff`` (Datetime), one row per output row, order kept.
        vocabulary: the training vocabulary (static codes and static value codes).
        normalizer: the training normaliser.
        codes: timed feature codes (default: ``vocabulary.codes_`` minus its parent codes and
            ``MEDS_*`` codes).

    Returns:
        float32 array (len(cutoffs), n_features) and the feature names.
    """
    vocabulary._check_fitted()
    if codes is None:
        parents = set(vocabulary.parent_codes_)
        codes = [c for c in vocabulary.codes_ if c not in parents and not c.startswith("MEDS_")]
    codes = list(codes)
    stats = normalizer.stats_table()
    numeric = [c for c in codes if c in set(stats["code"].to_list())]
    static_codes = list(vocabulary.static_codes_)
    static_values = list(vocabulary.static_value_codes_)
    n = cutoffs.height
    blocks = [code_count_features(events, cutoffs, codes)]
    names = [f"count:{c}" for c in codes]

    lazy = lazy_events(events).with_row_index("_order")
    rows = cutoffs.lazy().with_row_index("row")
    subj = cutoffs.select("subject_id").unique().lazy()
    # Static indicators and values (per subject, then spread to its rows).
    static = (
        lazy.filter(pl.col("time").is_null())
        .join(subj, on="subject_id", how="semi")
        .join(stats.lazy(), on="code", how="left")
        .with_columns(
            v=normalizer.normalize_expr(pl.col("numeric_value"), pl.col("center"), pl.col("scale"))
        )
        .collect()
    )
    row_of = rows.select("row", "subject_id").collect()
    ind = np.zeros((n, len(static_codes)), np.float32)
    val = np.zeros((n, len(static_values)), np.float32)
    hits = static.join(row_of, on="subject_id")
    col = {c: j for j, c in enumerate(static_codes)}
    s_hits = hits.filter(pl.col("code").is_in(static_codes))
    _scatter(ind, s_hits["row"], s_hits["code"].replace_strict(col, return_dtype=pl.Int64), 1.0)
    vcol = {c: j for j, c in enumerate(static_values)}
    v_hits = (
        hits.filter(pl.col("code").is_in(static_values) & pl.col("v").is_not_null())
        .sort("_order")
        .unique(["row", "code"], keep="first", maintain_order=True)
    )
    codes_v = v_hits["code"].replace_strict(vcol, return_dtype=pl.Int64)
    _scatter(val, v_hits["row"], codes_v, v_hits["v"].to_numpy())
    blocks += [ind, val]
    names += [f"static:{c}" for c in static_codes] + [f"static_value:{c}" for c in static_values]

    # Age at the cut-off from MEDS_BIRTH.
    birth = (
        lazy.filter(pl.col("code") == meds.birth_code)
        .group_by("subject_id")
        .agg(birth=pl.col("time").min())
    )
    age = (
        rows.join(birth, on="subject_id", how="left")
        .sort("row")
        .select(
            years=((pl.col("cutoff") - pl.col("birth")).dt.total_microseconds() / US_PER_YEAR)
            .fill_null(0.0)
            .cast(pl.Float32),
            known=pl.col("birth").is_not_null().cast(pl.Float32),
        )
        .collect()
    )
    blocks.append(age.to_numpy().astype(np.float32))
    names += ["age_years", "age_known"]

    # Last value of each numeric code up to the cut-off, with its seen-flag.
    last = np.zeros((n, len(numeric)), np.float32)
    seen = np.zeros((n, len(numeric)), np.float32)
    if numeric:
        ncol = {c: j for j, c in enumerate(numeric)}
        found = (
            rows.join(
                lazy.filter(
                    pl.col("time").is_not_null()
                    & pl.col("code").is_in(numeric)
                    & pl.col("numeric_value").is_not_null()
                ),
                on="subject_id",
            )
            .filter(pl.col("time") <= pl.col("cutoff"))
            .join(stats.lazy(), on="code", how="left")
            .with_columns(
                v=normalizer.normalize_expr(
                    pl.col("numeric_value"), pl.col("center"), pl.col("scale")
                )
            )
            .filter(pl.col("v").is_not_null())
            .group_by(["row", "code"])
            .agg(pl.col("v").sort_by(["time", "_order"]).last())
            .collect()
        )
        c = found["code"].replace_strict(ncol, return_dtype=pl.Int64)
        _scatter(last, found["row"], c, found["v"].to_numpy())
        _scatter(seen, found["row"], c, 1.0)
    blocks += [last, seen]
    names += [f"last:{c}" for c in numeric] + [f"seen:{c}" for c in numeric]
    return np.concatenate(blocks, axis=1).astype(np.float32), names


def _scatter(out: np.ndarray, rows: pl.Series, cols: pl.Series, values: np.ndarray | float) -> None:
    """``out[rows, cols] = values`` (a no-op for no hits, whose columns may lack a dtype)."""
    if rows.len() == 0:
        return
    r = rows.cast(pl.Int64).to_numpy()
    out[r, cols.cast(pl.Int64).to_numpy()] = values
