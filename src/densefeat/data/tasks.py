"""Binary onset tasks on MEDS data: prediction times, labels and their hygiene.

A task is data (:class:`TaskDefinition`): outcome codes and a horizon. Its label at a prediction
time ``t`` of a subject is one of four statuses:

* ``prevalent`` (excluded): an outcome event at or before ``t``, or a static (untimed) one.
  Onset tasks ask "does the disease *start* within the horizon", so a subject who already has
  it is not a negative, nor a positive;
* ``positive``: the subject's first outcome event falls in ``(t, t + horizon]``. A positive
  counts even when observation ends soon after it: the outcome was seen;
* ``censored`` (excluded): no outcome in the window and the subject is observed for less than
  the horizon after ``t`` (``observation end < t + horizon``), so a negative cannot be told
  from "not observed". The observation end is the last ``MEDS_OBSERVATION_END`` event (from
  OMOP observation_period, see :mod:`densefeat.data.omop`), else the last timed event other
  than birth. Gaps between observation periods are not modelled (the last end counts);
* ``negative``: otherwise.

Prediction times (:func:`prediction_times`), shared by every task of a dataset so that one
embedding per (subject, time) serves all tasks, follow one of two documented rules:

* ``"yearly"`` (default): every anniversary of the subject's observation start, from one year
  after it (at least ``min_history_days`` of history) up to the observation end. Each onset
  inside the observed history then falls in exactly one yearly window, so a task gets about as
  many positives as the dataset has observed onsets (Eunomia: hundreds, not the dozen that one
  random time per subject gives);
* ``"sampled"``: one time per subject, drawn deterministically (a splitmix64 hash of ``seed``
  and subject_id, stable across library versions and independent of the other subjects) among
  the days with clinical events that have ``min_history_days`` of observation before them and
  ``min_followup_days`` after them.

Times are days: a prediction time is always the *end* of its day (23:59:59.999999). In
date-only data (every clinical event at midnight, as in Eunomia) an event of the same day thus
belongs to the history (an outcome that day is prevalent) and the outcome window starts the
next day; the observation end is likewise the end of its day (observed through that day).
With a 365-day horizon and a prediction time on day D, an outcome on day D + 365 is positive
and one on day D + 366 is not.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import meds
import numpy as np
import polars as pl

from .meds import MedsDataset, MedsFormatError
from .omop import OBSERVATION_END_CODE, OBSERVATION_START_CODE

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "BUILTIN_TASKS",
    "EUNOMIA_TASKS",
    "STATUSES",
    "TaskBuild",
    "TaskDefinition",
    "TaskLabels",
    "build_task_labels",
    "builtin_tasks",
    "describe_labels",
    "is_date_only",
    "label_task",
    "observation_bounds",
    "prediction_times",
    "status_counts",
    "subject_uniform",
    "write_labels",
]

#: Label statuses; only ``positive`` and ``negative`` become labels.
STATUSES = ("positive", "negative", "prevalent", "censored")
#: Timed codes that are not clinical events: they neither make a day eligible as a prediction
#: time nor tell whether the data is date-only.
_MARKER_CODES = (meds.birth_code, OBSERVATION_START_CODE, OBSERVATION_END_CODE)
_DAY = pl.duration(days=1)
_ONE_US = pl.duration(microseconds=1)
_NAME = re.compile(r"[a-z0-9][a-z0-9_]*")
Rule = Literal["yearly", "sampled"]


@dataclass(frozen=True)
class TaskDefinition:
    """A binary onset task: does any outcome code first occur within the horizon?

    Attributes:
        name: identifier and label file stem (lower case, digits, underscores).
        outcome_codes: MEDS codes whose first occurrence is the outcome.
        horizon_days: length of the outcome window after the prediction time.
        description: what the task predicts and why these codes, for people.
    """

    name: str
    outcome_codes: tuple[str, ...]
    horizon_days: int = 365
    description: str = ""

    def __post_init__(self) -> None:
        # Accept a list for convenience but store a tuple: the dataclass is frozen and hashable.
        object.__setattr__(self, "outcome_codes", tuple(self.outcome_codes))
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"task name {self.name!r}: use lower-case letters, digits and _")
        if not self.outcome_codes or not all(isinstance(c, str) and c for c in self.outcome_codes):
            raise ValueError(f"task {self.name!r}: outcome_codes must be non-empty strings")
        if int(self.horizon_days) <= 0:
            raise ValueError(f"task {self.name!r}: horizon_days must be positive")


def _onset(name: str, codes: Sequence[str], what: str) -> TaskDefinition:
    return TaskDefinition(
        name=name,
        outcome_codes=tuple(codes),
        horizon_days=365,
        description=f"first {what} within 365 days after the prediction time",
    )


#: Built-in tasks of the default dataset (Eunomia GiBleed). Codes are the SNOMED concepts of
#: the converted data (``metadata/codes.parquet``); a descendant is added only where Eunomia's
#: own concept_ancestor table lists one among the conditions present (osteoporosis ->
#: pathological fracture due to osteoporosis, Alzheimer's disease -> its familial early-onset
#: form). The other concepts have no descendant in the data. Every condition occurs at most
#: once per person in Eunomia, so "first occurrence" is "the" occurrence.
EUNOMIA_TASKS: tuple[TaskDefinition, ...] = (
    _onset("gastrointestinal_hemorrhage", ["SNOMED/74474003"], "gastrointestinal hemorrhage"),
    _onset("peptic_ulcer", ["SNOMED/13200003"], "peptic ulcer"),
    _onset("cerebrovascular_accident", ["SNOMED/230690007"], "cerebrovascular accident"),
    _onset("coronary_arteriosclerosis", ["SNOMED/53741008"], "coronary arteriosclerosis"),
    _onset("atrial_fibrillation", ["SNOMED/49436004"], "atrial fibrillation"),
    _onset("ulcerative_colitis", ["SNOMED/64766004"], "ulcerative colitis"),
    _onset("osteoporosis", ["SNOMED/64859006", "SNOMED/443165006"], "osteoporosis"),
    _onset("alzheimers_disease", ["SNOMED/26929004", "SNOMED/230265002"], "Alzheimer's disease"),
)
#: dataset_name (``metadata/dataset.json``) -> its built-in tasks.
BUILTIN_TASKS: dict[str, tuple[TaskDefinition, ...]] = {"eunomia-gibleed": EUNOMIA_TASKS}


def builtin_tasks(dataset: MedsDataset) -> tuple[TaskDefinition, ...]:
    """The built-in tasks of a dataset, recognised by its ``dataset_name``.

    Raises:
        ValueError: the dataset has no built-in tasks (the message says how to bring labels).
    """
    name = dataset.metadata.get("dataset_name")
    if name in BUILTIN_TASKS:
        return BUILTIN_TASKS[name]
    known = ", ".join(sorted(BUILTIN_TASKS))
    raise ValueError(
        f"{dataset.root}: no built-in tasks for dataset {name!r} (built-in tasks exist for: "
        f"{known}); bring your own labels as MEDS label parquet (e.g. made by ACES) with "
        "--labels FILE_OR_DIR"
    )


# --------------------------------------------------------------------------------------------
# Observation bounds and prediction times.


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


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 (wrapping arithmetic): a fixed, well-mixed hash."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def subject_uniform(subject_ids: pl.Series, seed: int) -> pl.Series:
    """A uniform number in [0, 1) per subject from a hash of ``(seed, subject_id)``.

    Deterministic, the same on every machine and library version, and independent of which
    other subjects are present. Salted so it does not repeat the split assignment's hash.
    """
    ids = subject_ids.cast(pl.Int64).to_numpy().astype(np.int64).view(np.uint64)
    key = _splitmix64(np.array([np.uint64(seed & (2**64 - 1)) ^ np.uint64(0x7A5C_0DE5)]))[0]
    h = _splitmix64(_splitmix64(ids ^ key))
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


# --------------------------------------------------------------------------------------------
# Labels.


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


# --------------------------------------------------------------------------------------------
# Counts.


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


# --------------------------------------------------------------------------------------------
# All tasks of a dataset.


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


def _check_codes(tasks: Iterable[TaskDefinition], dataset: MedsDataset) -> None:
    # A misspelt code would silently make a task with no positives: refuse it instead.
    known = set(dataset.codes["code"].to_list()) if dataset.codes.height else None
    if known is None:
        return
    for task in tasks:
        missing = [c for c in task.outcome_codes if c not in known]
        if len(missing) == len(task.outcome_codes):
            raise MedsFormatError(
                f"{dataset.root}: task {task.name!r}: none of its outcome codes "
                f"({', '.join(missing)}) is in metadata/codes.parquet"
            )


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
    _check_codes(tasks, dataset)
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
