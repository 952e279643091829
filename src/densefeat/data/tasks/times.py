"""Observation bounds and prediction times (the rules ``yearly`` and ``sampled``; see
:mod:`densefeat.data.tasks`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import meds
import numpy as np
import polars as pl

from ..meds import OBSERVATION_END_CODE, OBSERVATION_START_CODE
from ..splits import splitmix64

if TYPE_CHECKING:
    pass


#: Timed codes that are not clinical events: they neither make a day eligible as a prediction
#: time nor tell whether the data is date-only.
_MARKER_CODES = (meds.birth_code, OBSERVATION_START_CODE, OBSERVATION_END_CODE)


_DAY = pl.duration(days=1)


_ONE_US = pl.duration(microseconds=1)


Rule = Literal["yearly", "sampled"]


def _clinical() -> pl.Expr:
    return pl.col("time").is_not_null() & ~pl.col("code").is_in(_MARKER_CODES)


def _end_of_day(expr: pl.Expr) -> pl.Expr:
    return expr.dt.truncate("1d") + _DAY - _ONE_US


def is_date_only(events: pl.LazyFrame | pl.DataFrame) -> bool:
    """Whether every clinical timed event is at midnight (dates without times).

    Birth and observation markers are ignored: a birth datetime with a time of day does not
    make the clinical record timed. A dataset without clinical events counts as date-only.
    """
    frame = events.lazy().filter(_clinical())
    off = frame.select((pl.col("time") != pl.col("time").dt.truncate("1d")).any()).collect()
    return not bool(off.item())


def observation_bounds(
    events: pl.LazyFrame | pl.DataFrame, *, date_only: bool | None = None
) -> pl.DataFrame:
    """Per subject: ``obs_start`` and ``obs_end`` (Datetime us) of its observed history.

    ``obs_start`` is the first ``MEDS_OBSERVATION_START``, else the first clinical event;
    ``obs_end`` the last ``MEDS_OBSERVATION_END``, else the last clinical event, moved to the
    end of its day in date-only data. Subjects without any timed event have null bounds.

    Args:
        events: MEDS events (subject_id, time, code).
        date_only: see :func:`is_date_only`; detected when None.
    """
    frame = events.lazy()
    if date_only is None:
        date_only = is_date_only(frame)
    time = pl.col("time")
    code = pl.col("code")
    bounds = frame.group_by("subject_id").agg(
        obs_start=pl.coalesce(
            time.filter(code == OBSERVATION_START_CODE).min(), time.filter(_clinical()).min()
        ),
        obs_end=pl.coalesce(
            time.filter(code == OBSERVATION_END_CODE).max(), time.filter(_clinical()).max()
        ),
    )
    if date_only:
        bounds = bounds.with_columns(obs_end=_end_of_day(pl.col("obs_end")))
    return bounds.sort("subject_id").collect()


def subject_uniform(subject_ids: pl.Series, seed: int) -> pl.Series:
    """A uniform number in [0, 1) per subject from a hash of ``(seed, subject_id)``.

    Deterministic, the same on every machine and library version, and independent of which
    other subjects are present. Salted so it does not repeat the split assignment's hash.
    """
    ids = subject_ids.cast(pl.Int64).to_numpy().astype(np.int64).view(np.uint64)
    key = splitmix64(np.array([np.uint64(seed & (2**64 - 1)) ^ np.uint64(0x7A5C_0DE5)]))[0]
    h = splitmix64(splitmix64(ids ^ key))
    return pl.Series("u", (h >> np.uint64(11)).astype(np.float64) / 2.0**53)


def prediction_times(
    events: pl.LazyFrame | pl.DataFrame,
    *,
    rule: Rule = "yearly",
    seed: int = 0,
    min_history_days: int = 365,
    min_followup_days: int = 365,
    date_only: bool | None = None,
    bounds: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Prediction times inside each subject's observed history (rules in the module docstring).

    Args:
        events: MEDS events (subject_id, time, code).
        rule: ``"yearly"`` (every observation anniversary) or ``"sampled"`` (one per subject).
        seed: seed of the ``"sampled"`` rule (unused by ``"yearly"``).
        min_history_days: observation before a prediction time, at least.
        min_followup_days: observation after it, at least (``"sampled"`` only: the yearly
            rule keeps times with short follow-up and lets each task count them as censored
            unless the outcome was seen).
        date_only: see :func:`is_date_only`; detected when None.
        bounds: :func:`observation_bounds` when already computed.

    Returns:
        ``subject_id`` Int64, ``prediction_time`` Datetime("us") (end of a day), sorted.
    """
    frame = events.lazy()
    if bounds is None:
        bounds = observation_bounds(frame, date_only=date_only)
    if rule == "yearly":
        out = _yearly_times(bounds, min_history_days)
    elif rule == "sampled":
        out = _sampled_times(frame, bounds, seed, min_history_days, min_followup_days)
    else:
        raise ValueError(f"unknown prediction-time rule {rule!r}: use 'yearly' or 'sampled'")
    return out.sort(["subject_id", "prediction_time"])


def _yearly_times(bounds: pl.DataFrame, min_history_days: int) -> pl.DataFrame:
    start = pl.col("obs_start").dt.truncate("1d")
    # The first anniversary with enough history: ceil(min_history_days / 365) years after the
    # observation start, at the end of that day.
    first_year = max(1, -(-int(min_history_days) // 365))
    valid = bounds.drop_nulls(["obs_start", "obs_end"])
    years = valid.select(
        "subject_id",
        "obs_start",
        "obs_end",
        k=pl.int_ranges(
            first_year, pl.col("obs_end").dt.year() - pl.col("obs_start").dt.year() + 2
        ),
    ).explode("k")
    times = years.select(
        "subject_id",
        "obs_start",
        "obs_end",
        prediction_time=_end_of_day(start.dt.offset_by(pl.format("{}y", pl.col("k")))),
    )
    history = pl.col("prediction_time") >= pl.col("obs_start") + pl.duration(days=min_history_days)
    inside = pl.col("prediction_time") < pl.col("obs_end")
    return times.filter(history & inside).select(
        pl.col("subject_id").cast(pl.Int64), pl.col("prediction_time").cast(pl.Datetime("us"))
    )


def _sampled_times(
    events: pl.LazyFrame,
    bounds: pl.DataFrame,
    seed: int,
    min_history_days: int,
    min_followup_days: int,
) -> pl.DataFrame:
    days = (
        events.filter(_clinical())
        .select("subject_id", prediction_time=_end_of_day(pl.col("time")))
        .unique()
        .collect()
        .join(bounds, on="subject_id", how="inner")
    )
    eligible = days.filter(
        (pl.col("prediction_time") >= pl.col("obs_start") + pl.duration(days=min_history_days))
        & (pl.col("prediction_time") + pl.duration(days=min_followup_days) <= pl.col("obs_end"))
    ).sort(["subject_id", "prediction_time"])
    per_subject = eligible.group_by("subject_id").len().sort("subject_id")
    u = subject_uniform(per_subject["subject_id"], seed)
    # floor(u * n) is uniform over the n eligible days (u < 1, so it never reaches n).
    pick = per_subject.with_columns(pick=(u * per_subject["len"]).floor().cast(pl.UInt32))
    ranked = eligible.with_columns(rank=pl.int_range(pl.len(), dtype=pl.UInt32).over("subject_id"))
    return (
        ranked.join(pick, on="subject_id")
        .filter(pl.col("rank") == pl.col("pick"))
        .select(
            pl.col("subject_id").cast(pl.Int64), pl.col("prediction_time").cast(pl.Datetime("us"))
        )
    )
