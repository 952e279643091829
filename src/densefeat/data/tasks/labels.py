"""Labelling a task at prediction times (positive, negative, prevalent, censored), counts per
split, and writing MEDS label files.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import meds
import polars as pl

from ..meds import MedsDataset

if TYPE_CHECKING:
    import pyarrow as pa
from .definitions import TaskDefinition, builtin_tasks, check_task_codes
from .times import Rule, is_date_only, observation_bounds, prediction_times

#: Label statuses; only ``positive`` and ``negative`` become labels.
STATUSES = ("positive", "negative", "prevalent", "censored")


def label_task(
    events: pl.LazyFrame | pl.DataFrame,
    task: TaskDefinition,
    times: pl.DataFrame,
    *,
    date_only: bool | None = None,
    bounds: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Status and label of one task at each prediction time (rules in the module docstring).

    Args:
        events: MEDS events (subject_id, time, code).
        task: the task.
        times: ``subject_id, prediction_time`` (e.g. from :func:`prediction_times`); used as
            given, so pass end-of-day times for date-only data.
        date_only: see :func:`is_date_only`; detected when None (only used for ``bounds``).
        bounds: :func:`observation_bounds` when already computed.

    Returns:
        ``subject_id, prediction_time, status`` (one of :data:`STATUSES`) and
        ``boolean_value`` (null unless positive or negative), in the order of ``times``.
        A subject with no timed event (unknown observation end) is censored unless prevalent.
    """
    frame = events.lazy()
    if bounds is None:
        bounds = observation_bounds(frame, date_only=date_only)
    # An onset task only needs each subject's first outcome (and whether one is static).
    first = (
        frame.filter(pl.col("code").is_in(task.outcome_codes))
        .group_by("subject_id")
        .agg(first_outcome=pl.col("time").min(), static_outcome=pl.col("time").is_null().any())
        .collect()
    )
    t = pl.col("prediction_time")
    end = t + pl.duration(days=task.horizon_days)
    prevalent = pl.col("static_outcome").fill_null(False) | (
        pl.col("first_outcome") <= t
    ).fill_null(False)
    positive = ~prevalent & (pl.col("first_outcome") <= end).fill_null(False)
    censored = ~prevalent & ~positive & (pl.col("obs_end") < end).fill_null(True)
    status = (
        pl.when(prevalent)
        .then(pl.lit("prevalent"))
        .when(positive)
        .then(pl.lit("positive"))
        .when(censored)
        .then(pl.lit("censored"))
        .otherwise(pl.lit("negative"))
    )
    joined = (
        times.select(pl.col("subject_id").cast(pl.Int64), t.cast(pl.Datetime("us")))
        .join(
            bounds.select("subject_id", "obs_end"),
            on="subject_id",
            how="left",
            maintain_order="left",
        )
        .join(first, on="subject_id", how="left", maintain_order="left")
    )
    return joined.select(
        "subject_id",
        "prediction_time",
        status=status,
    ).with_columns(
        boolean_value=pl.when(pl.col("status").is_in(["positive", "negative"])).then(
            pl.col("status") == "positive"
        )
    )


def _as_label_table(labels: pl.DataFrame) -> pa.Table:
    """The MEDS LabelSchema Arrow table of ``labels`` (validated by the meds package)."""
    keep = [c for c in ("subject_id", "prediction_time", "boolean_value") if c in labels.columns]
    table = meds.LabelSchema.align(labels.select(keep).to_arrow())
    meds.LabelSchema.validate(table)
    return table


def write_labels(labels: pl.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write MEDS label parquet atomically (a temporary sibling renamed into place).

    Args:
        labels: ``subject_id, prediction_time, boolean_value``; rows with a null
            ``boolean_value`` (excluded statuses) are dropped.
        path: the parquet file to (over)write.

    Returns:
        ``path`` as a Path.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = labels.filter(pl.col("boolean_value").is_not_null()).sort(
        ["subject_id", "prediction_time"]
    )
    table = _as_label_table(rows)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _split_of(frame: pl.DataFrame, splits: pl.DataFrame) -> pl.DataFrame:
    # Subjects that a splits file does not list belong to no split: shown as "(none)".
    return frame.join(splits, on="subject_id", how="left").with_columns(
        pl.col("split").fill_null("(none)")
    )


def _with_total(counts: pl.DataFrame) -> pl.DataFrame:
    order = {name: i for i, name in enumerate((*_meds_split_names(), "(none)"))}
    counts = counts.sort(pl.col("split").replace_strict(order, default=len(order)))
    numeric = [c for c in counts.columns if c != "split"]
    total = counts.select(pl.lit("total").alias("split"), *[pl.col(c).sum() for c in numeric])
    return pl.concat([counts, total], how="vertical_relaxed")


def _meds_split_names() -> tuple[str, str, str]:
    """MEDS's split names in their usual order."""
    return (meds.train_split, meds.tuning_split, meds.held_out_split)


def status_counts(status: pl.DataFrame, splits: pl.DataFrame) -> pl.DataFrame:
    """Per split (and total): prediction times, positives, negatives, prevalent, censored."""
    frame = _split_of(status, splits)
    counts = frame.group_by("split").agg(
        prediction_times=pl.len(),
        subjects=pl.col("subject_id").n_unique(),
        positives=(pl.col("status") == "positive").sum(),
        negatives=(pl.col("status") == "negative").sum(),
        prevalent=(pl.col("status") == "prevalent").sum(),
        censored=(pl.col("status") == "censored").sum(),
    )
    return _with_total(counts).with_columns(
        labels=pl.col("positives") + pl.col("negatives"),
    )


def describe_labels(labels: pl.DataFrame, splits: pl.DataFrame) -> pl.DataFrame:
    """Per split (and total) counts of any MEDS labels (e.g. read with ``read_labels``).

    Returns:
        ``split, labels, subjects`` and, when present, ``positives, prevalence`` (boolean),
        ``mean_integer`` / ``mean_float`` (numeric), ``categories`` (categorical).
    """
    frame = _split_of(labels, splits)
    aggs = [pl.len().alias("labels"), pl.col("subject_id").n_unique().alias("subjects")]
    if "boolean_value" in frame.columns:
        aggs.append(pl.col("boolean_value").sum().alias("positives"))
    if "categorical_value" in frame.columns:
        aggs.append(pl.col("categorical_value").n_unique().alias("categories"))
    counts = _with_total(frame.group_by("split").agg(aggs))
    if "boolean_value" in frame.columns:
        counts = counts.with_columns(prevalence=pl.col("positives") / pl.col("labels"))
    for name, column in (("mean_integer", "integer_value"), ("mean_float", "float_value")):
        if column in frame.columns:
            means = frame.group_by("split").agg(pl.col(column).cast(pl.Float64).mean().alias(name))
            total = frame.select(pl.lit("total").alias("split"), pl.col(column).mean().alias(name))
            counts = counts.join(pl.concat([means, total]), on="split", how="left")
    if "categories" in counts.columns:
        # A sum of per-split category counts is meaningless: the total is the distinct count.
        n = frame["categorical_value"].n_unique()
        counts = counts.with_columns(
            categories=pl.when(pl.col("split") == "total").then(n).otherwise(pl.col("categories"))
        )
    return counts


@dataclass(frozen=True)
class TaskLabels:
    """One task built on a dataset.

    Attributes:
        task: the definition.
        status: ``subject_id, prediction_time, status, boolean_value`` at every prediction time.
        counts: :func:`status_counts` per split and in total.
        path: the label file written, if any.
    """

    task: TaskDefinition
    status: pl.DataFrame = field(repr=False)
    counts: pl.DataFrame = field(repr=False)
    path: Path | None = None

    @property
    def labels(self) -> pl.DataFrame:
        """The MEDS labels: positives and negatives only, sorted."""
        return (
            self.status.filter(pl.col("boolean_value").is_not_null())
            .select("subject_id", "prediction_time", "boolean_value")
            .sort(["subject_id", "prediction_time"])
        )


@dataclass(frozen=True)
class TaskBuild:
    """The result of :func:`build_task_labels`.

    Attributes:
        tasks: one :class:`TaskLabels` per task, in the order given.
        times: the shared prediction times.
        rule, seed, min_history_days, date_only: how they were made.
        subjects: subjects of the dataset.
        subjects_without_time: subjects with no eligible prediction time.
    """

    tasks: tuple[TaskLabels, ...]
    times: pl.DataFrame = field(repr=False)
    rule: str
    seed: int
    min_history_days: int
    date_only: bool
    subjects: int
    subjects_without_time: int


def build_task_labels(
    dataset: MedsDataset,
    tasks: Sequence[TaskDefinition] | None = None,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    rule: Rule = "yearly",
    seed: int = 0,
    min_history_days: int = 365,
) -> TaskBuild:
    """Build (and optionally write) the labels of several tasks at shared prediction times.

    Args:
        dataset: an opened MEDS dataset.
        tasks: the tasks; the dataset's built-in tasks by default.
        out_dir: when given, ``<out_dir>/<task.name>.parquet`` per task (atomic writes).
        rule: prediction-time rule (see :func:`prediction_times`).
        seed: seed of the ``"sampled"`` rule.
        min_history_days: observation before each prediction time, at least.

    Returns:
        the labels, statuses and counts of each task.
    """
    tasks = tuple(builtin_tasks(dataset) if tasks is None else tasks)
    if len({t.name for t in tasks}) != len(tasks):
        raise ValueError("task names must be unique")
    check_task_codes(tasks, dataset)
    # Three columns, once: every task reuses them (the lazy scan would re-read the files).
    events = dataset.data.select("subject_id", "time", "code").collect()
    date_only = is_date_only(events)
    bounds = observation_bounds(events, date_only=date_only)
    followup = max((t.horizon_days for t in tasks), default=365)
    times = prediction_times(
        events,
        rule=rule,
        seed=seed,
        min_history_days=min_history_days,
        min_followup_days=followup,
        bounds=bounds,
    )
    built = []
    for task in tasks:
        status = label_task(events, task, times, bounds=bounds)
        path = None
        if out_dir is not None:
            path = write_labels(status, Path(out_dir) / f"{task.name}.parquet")
        built.append(TaskLabels(task, status, status_counts(status, dataset.splits), path))
    n_subjects = bounds.height
    return TaskBuild(
        tasks=tuple(built),
        times=times,
        rule=rule,
        seed=seed,
        min_history_days=min_history_days,
        date_only=date_only,
        subjects=n_subjects,
        subjects_without_time=n_subjects - times["subject_id"].n_unique(),
    )
