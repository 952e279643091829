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
  OMOP observation_period, see :mod:`densefeat.data.convert.omop`), else the last timed event other
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

from .definitions import BUILTIN_TASKS, EUNOMIA_TASKS, TaskDefinition, builtin_tasks
from .labels import (
    STATUSES,
    TaskBuild,
    TaskLabels,
    build_task_labels,
    describe_labels,
    label_task,
    status_counts,
    write_labels,
)
from .times import is_date_only, observation_bounds, prediction_times, subject_uniform

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
