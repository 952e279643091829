"""Small cohorts: fit the benchmark's settings to what the data allows, and say so.

A 100-patient hospital extract breaks defaults sized for Eunomia (2,694 patients, decades of
records): 365-day windows give no window pair, a batch of 256 exceeds the training rows, k = 16
exceeds the held-out rows, and a held-out split of 4 subjects gives AUROC CIs of [0, 1].
:func:`adapt_to_data` runs once, after the data source is opened and before any training:

* **Windows** (EHR): unless ``--set data.window_days`` is given, the largest window of
  :data:`WINDOW_CANDIDATES` (365 days .. 1 hour) that gives at least ``MIN_BATCHES`` batches of
  training window pairs; the default (365 days) is kept whenever it gives one batch, so the
  default dataset is untouched.
* **Batch size**: unless ``--set batch_size`` is given, lowered to the largest power of two
  that fits the training rows of every method (window pairs; a supervised run's labelled rows)
  twice, never below 8.
* **k**: clipped to ``min(k, n_held - 1, d_model)`` (``n_held`` the held-out evaluation rows):
  a k-dim subspace of fewer than k + 1 centred rows does not exist.
* **Pairs and tokens on ICU-stay data** (PhysioNet 2019 conversions,
  :func:`~densefeat.benchmark.icu.is_icu`), each unless ``--set`` gives it
  (:data:`ICU_SETTINGS`):

  - ``data.pairs = future``. Two windows of one stay share its static values (age, sex, unit,
    admission offset) and, with long histories, most of their events, so ``windows`` pairs
    teach the subspace term the patient; a ``future`` pair shares no event and has no static
    values on its later side.
  - ``data.tokens = hours``: a token per hour with every variable's value and mask, and (the
    encoder's default ``encoder.carry_forward``) its last value, the hours since it and its
    count so far. A history of 256 events is about 36 ICU hours.
  - ``data.max_len = 64`` when the tokens are hours (:data:`ICU_HOURS_MAX_LEN`): 64 hours with
    events. 256 hour tokens (about 10 days, set A's whole stays) scored lower on the tuning
    split at 5.5 times the training cost.

  Both chosen on set A's tuning split (docs/design.md §4.3, §6).
* **Cross-fitting**: a task with fewer than :data:`MIN_HELD_POSITIVES` held-out positives or
  :data:`MIN_HELD_SUBJECTS` held-out subjects is probed by subject-grouped K-fold cross-fitting
  over all its labelled rows (``--probe-folds K``, :mod:`densefeat.eval.probe.crossfit`).

Every change is returned as a note (printed, kept in results.json ``config.adaptations`` and
shown in the report).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import polars as pl

from ..train.config import canonical_key
from .config import RunSpec
from .runs import run_config

__all__ = [
    "ICU_HOURS_MAX_LEN",
    "ICU_PAIRS",
    "ICU_SETTINGS",
    "ICU_TOKENS",
    "MIN_BATCHES",
    "MIN_HELD_POSITIVES",
    "MIN_HELD_SUBJECTS",
    "WINDOW_CANDIDATES",
    "adapt_to_data",
    "crossfit_reason",
]

#: Held-out positives below which a task's probe is cross-fitted.
MIN_HELD_POSITIVES = 10
#: Held-out subjects below which a task's probe is cross-fitted.
MIN_HELD_SUBJECTS = 20
#: Window lengths tried, in days, largest first: a year .. a week, a day, 6 hours, an hour.
WINDOW_CANDIDATES = (365.0, 90.0, 30.0, 7.0, 1.0, 0.25, 1 / 24)
#: A window is chosen when it gives at least this many batches of training pairs.
MIN_BATCHES = 4
#: The smallest batch the benchmark lowers ``batch_size`` to (batch statistics need rows).
MIN_BATCH = 8
#: ``data.pairs`` on ICU-stay data unless the user sets it (module docstring).
ICU_PAIRS = "future"
#: ``data.tokens`` on ICU-stay data unless the user sets it (module docstring).
ICU_TOKENS = "hours"
#: Every setting the benchmark gives ICU-stay data, with why (for the note).
ICU_SETTINGS: dict[str, tuple[str, str]] = {
    "data.pairs": (ICU_PAIRS, "the later window without the stay's static values"),
    "data.tokens": (
        ICU_TOKENS,
        "a token per hour holds every variable, so a history spans the stay",
    ),
}
#: ``data.max_len`` of hour tokens on ICU-stay data unless the user sets it (module docstring).
ICU_HOURS_MAX_LEN = 64


def crossfit_reason(task_rows: pl.DataFrame, folds: int) -> str | None:
    """Why a task's probe is cross-fitted (too few held-out positives or subjects), or None."""
    if folds < 2:
        return None
    te = task_rows.filter(pl.col("split") == "held_out")
    pos = int(te["boolean_value"].sum())
    subjects = te["subject_id"].n_unique()
    if pos < MIN_HELD_POSITIVES or subjects < MIN_HELD_SUBJECTS:
        return (
            f"{pos} held-out positives, {subjects} held-out subjects (< {MIN_HELD_POSITIVES} "
            f"or < {MIN_HELD_SUBJECTS}): {folds}-fold subject-grouped cross-fitting"
        )
    return None


def _user_set(bench: Any, key: str) -> bool:
    return any(canonical_key(k) == key for k in bench.train)


def _pairs(source: Any, days: float) -> int:
    from ..data.ehr.windows import periodic_cuts, window_pairs

    store = source.store_for(source.shared_builder())
    train = source.ds.split_ids("train").to_numpy()
    return window_pairs(store, periodic_cuts(store, days, subjects=train)).height


def _label_rows(source: Any, bench: Any) -> int | None:
    """Training rows of the supervised run (its task's training labels), or None."""
    if "supervised" not in bench.methods or not source.tasks:
        return None
    name = bench.supervised_task or source.tasks[0].name
    task = next((t for t in source.tasks if t.name == name), source.tasks[0])
    return int(task.labels.filter(pl.col("split") == "train").height)


def _windows(source: Any, bench: Any, say: Any) -> tuple[Any, list[str]]:
    notes: list[str] = []
    cfg = run_config(RunSpec("dense", "dense", 0), bench)
    batch = cfg.batch_size
    days = cfg.data.window_days
    n = _pairs(source, days)
    changes: dict[str, Any] = {}
    if n < batch and not _user_set(bench, "data.window_days"):
        counts = {}
        for cand in WINDOW_CANDIDATES:
            counts[cand] = n if cand == days else _pairs(source, cand)
            if counts[cand] >= MIN_BATCHES * batch:
                break
        best = next(
            (c for c in counts if counts[c] >= MIN_BATCHES * batch),
            max(counts, key=lambda c: (counts[c], c)),
        )
        if best != days:
            changes["data.window_days"] = best
            notes.append(
                f"windows: {days:g}-day windows give {n} training window pairs (< batch "
                f"{batch}); using {_fmt_days(best)} windows ({counts[best]} pairs)"
            )
            days, n = best, counts[best]
    fit = [n] + ([m] if (m := _label_rows(source, bench)) is not None else [])
    if min(fit) < batch and not _user_set(bench, "batch_size"):
        new = MIN_BATCH
        while new * 2 <= min(fit) // 2:
            new *= 2
        if new < batch:
            changes["batch_size"] = new
            notes.append(
                f"batch size: {min(fit)} training rows for the smallest method; batch_size "
                f"{batch} -> {new}"
            )
    if changes:
        bench = replace(bench, train={**bench.train, **changes})
    for note in notes:
        say(note)
    return bench, notes


def _icu_settings(source: Any, bench: Any, say: Any) -> tuple[Any, list[str]]:
    """:data:`ICU_SETTINGS` on ICU-stay data, each one the user did not set."""
    from .icu import is_icu

    if not is_icu(source.ds):
        return bench, []
    cfg = run_config(RunSpec("dense", "dense", 0), bench)
    notes, train = [], dict(bench.train)
    for key, (value, why) in ICU_SETTINGS.items():
        section, name = key.split(".")
        old = getattr(getattr(cfg, section), name)
        if _user_set(bench, key) or old == value:
            continue
        note = f"ICU-stay data: {key} {old} -> {value} ({why}; --set {key} to choose)"
        say(note)
        notes.append(note)
        train[key] = value
    bench = replace(bench, train=train)
    cfg = run_config(RunSpec("dense", "dense", 0), bench)
    if (
        cfg.data.tokens == "hours"
        and not _user_set(bench, "data.max_len")
        and cfg.data.max_len != ICU_HOURS_MAX_LEN
    ):
        note = (
            f"ICU-stay data: data.max_len {cfg.data.max_len} -> {ICU_HOURS_MAX_LEN} (hour "
            "tokens: longer histories scored no better on set A at several times the cost; "
            "--set data.max_len to choose)"
        )
        say(note)
        notes.append(note)
        bench = replace(bench, train={**bench.train, "data.max_len": ICU_HOURS_MAX_LEN})
    return bench, notes


def _fmt_days(days: float) -> str:
    return f"{days:g}-day" if days >= 1 else f"{days * 24:g}-hour"


def adapt_to_data(source: Any, say: Any) -> dict[str, Any]:
    """Fit ``source.bench`` to the data (module docstring); updates ``source.bench`` and its
    probe context in place.

    Returns:
        ``{"adaptations": [notes], "k_requested", "k", "crossfit": {task: reason}}``.
    """
    bench = source.bench
    notes: list[str] = []
    if getattr(source, "modality", None) in ("ehr", "multimodal"):
        bench, notes = _windows(source, bench, say)
    if getattr(source, "modality", None) == "ehr":
        # Multimodal runs pair modalities of one row, not windows: data.pairs does not apply.
        bench, icu_notes = _icu_settings(source, bench, say)
        notes += icu_notes
    held = int((source.eval_rows.rows["split"] == "held_out").sum())
    cfg = run_config(RunSpec("dense", "dense", 0), bench)
    d = int(cfg.encoder.d_model)
    k_max = max(1, min(bench.k, held - 1, d))
    if k_max < bench.k:
        note = (
            f"k: {held} held-out evaluation rows and d_model {d} allow k <= {k_max}; "
            f"k {bench.k} -> {k_max}"
        )
        say(note)
        notes.append(note)
    k_requested = bench.k
    bench = replace(bench, k=k_max)
    crossfit = {}
    for t in source.tasks:
        reason = crossfit_reason(source.eval_rows.task_rows[t.name], bench.probe_folds)
        if reason is not None:
            crossfit[t.name] = reason
            note = f"task {t.name}: {reason}"
            say(note)
            notes.append(note)
    source.bench = bench
    source.ctx.bench = bench
    source.ctx.crossfit = crossfit
    return {"adaptations": notes, "k_requested": k_requested, "crossfit": crossfit}
