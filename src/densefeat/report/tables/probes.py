"""The task table and the linear-probe tables: all shots per task and k-shot, each in AUROC and
in AUPRC, with the held-out positives and rows every number was measured on."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from ..format import ci_text, count_of, fmt, num
from ..model import NA, Cell, Row, Table
from ..records import (
    auprc_chance,
    finite,
    group_by,
    held_out_counts,
    join,
    mean_of,
    ordered_methods,
    row_kind,
    skipped,
    task_names,
)

__all__ = ["kshot_tables", "probe_tables", "tasks_table"]

#: Metric key -> (name, what its chance level is).
_METRICS = {
    "auroc": ("AUROC", "Chance is 0.5."),
    "auprc": (
        "AUPRC",
        "AUPRC (average precision) depends on the prevalence: its chance level is the "
        "prevalence (the last row), not 0.5.",
    ),
}


_KSHOT_AUPRC_CHANCE = (
    "AUPRC (average precision) depends on the prevalence: its chance level is each task's "
    "prevalence (Tasks table), not 0.5. "
)


def tasks_table(results: Mapping[str, Any]) -> Table:
    tasks = results.get("tasks") or []
    rows = []
    for t in tasks:
        pos, n, prev = held_out_counts(results, t["name"])
        rows.append(
            Row(
                (
                    Cell(str(t["name"])),
                    fmt(t.get("n_train"), "int"),
                    fmt(t.get("n_tuning"), "int"),
                    count_of(pos, n),
                    fmt(prev, "pct", reason="results.json does not give the prevalence"),
                )
            )
        )
    listed = {t["name"] for t in tasks}
    for name, reason in skipped(results, "tasks"):
        if name not in listed:
            cells = (Cell(f"{name} (not probed)", reason), *(Cell(NA) for _ in range(4)))
            rows.append(Row(cells, kind="missing"))
    return Table(
        "tasks",
        "Tasks",
        "Prediction tasks: evaluation rows (labelled prediction times) per split; on the "
        "held-out split, the positives among the evaluation rows, and the outcome prevalence "
        "among all held-out labels (the evaluation rows keep every positive and may hold a "
        "uniform sample of the negatives, so positives / rows can be far above the "
        "prevalence). A task that could not be probed is listed with the reason.",
        ("task", "train rows", "tuning rows", "test positives / rows", "prevalence (held-out)"),
        tuple(rows),
        empty=None if rows else "results.json lists no tasks.",
    )


def _weighted(results: Mapping[str, Any], task: str) -> bool:
    """Whether the task's full-data probes say they weighted the sampled negatives back."""
    return any(
        p.get("weighted")
        for p in results.get("probes") or ()
        if p["task"] == task and p["k"] == "all"
    )


def _chance_cell(results: Mapping[str, Any], task: str) -> Cell:
    prev = auprc_chance(results, task)
    if prev is None:
        return Cell(NA, "results.json does not give the prevalence")
    return Cell(f"{num(prev, 'auprc')} ({num(prev, 'pct')})")


def _counts_caption(results: Mapping[str, Any], tasks: list[str]) -> str:
    parts = []
    for task in tasks:
        pos, n, _ = held_out_counts(results, task)
        parts.append(f"{task} {count_of(pos, n).text}")
    return "Held-out positives / rows per task: " + "; ".join(parts) + "." if parts else ""


def _probe_table(results: Mapping[str, Any], metric: str) -> Table:
    name, chance = _METRICS[metric]
    probes = [p for p in results.get("probes") or () if p["k"] == "all"]
    tasks = task_names(results, probes)
    groups = group_by(probes, lambda p: (p["method"], p["embedding"]))
    embeddings = sorted({p["embedding"] for p in probes}, key=lambda e: (e != "raw", e))
    rows = []
    for method in ordered_methods(results, (p["method"] for p in probes)):
        for emb in embeddings:
            recs = groups.get((method, emb))
            if not recs:
                continue
            by_task = group_by(recs, lambda p: p["task"])
            cells = [Cell(method), Cell(emb)]
            means = []
            for task in tasks:
                trecs = by_task.get(task, [])
                mean = mean_of(p.get(metric) for p in trecs)
                if mean is None:
                    cells.append(Cell(NA, "no probe for this task"))
                    continue
                means.append(mean)
                cis = [p.get(f"{metric}_ci") for p in trecs if p.get(f"{metric}_ci")]
                ci = [mean_of(c[0] for c in cis), mean_of(c[1] for c in cis)] if cis else None
                text = num(mean, metric)
                if ci_text(ci, metric):
                    text += f" {ci_text(ci, metric)}"
                cells.append(Cell(text))
            macro = statistics.fmean(means) if len(means) == len(tasks) and means else None
            cells.append(fmt(macro, metric, reason="a task is missing"))
            rows.append(Row(tuple(cells), method=method, kind=row_kind(results, method)))
    foot = []
    if rows:
        counts = [count_of(*held_out_counts(results, t)[:2]) for t in tasks]
        foot.append(
            Row((Cell("held-out positives / rows"), Cell(""), *counts, Cell("")), kind="reference")
        )
        if metric == "auprc":
            chances = [_chance_cell(results, t) for t in tasks]
            foot.append(
                Row((Cell("chance: prevalence"), Cell(""), *chances, Cell("")), kind="reference")
            )
        foot += _crossfit_rows(probes, tasks, metric)
    weighted = any(_weighted(results, t) for t in tasks)
    icu = any(e.startswith("raw+") for e in embeddings)
    crossfit = sorted({p["task"] for p in probes if p.get("protocol") == "crossfit"})
    return Table(
        "probes" if metric == "auroc" else f"probes-{metric}",
        f"Linear probes per task: {name}",
        f"Test {name} of an L2 logistic-regression probe on frozen embeddings (all training "
        "shots), mean over seeds; in brackets the 95% patient-level bootstrap CI (1,000 "
        "resamples), its bounds averaged over seeds. raw: the embeddings as they are; "
        "whitened: after ZCA whitening fitted on the training split (whitening alone can raise "
        f"a probe's {name}). Macro: mean over tasks. {chance}"
        + (
            " Every held-out positive is evaluated; sampled negatives are weighted by the "
            "inverse of their sampling rate, so the numbers stand for all held-out labels."
            if weighted
            else ""
        )
        + (
            " ICU control: hours_since_admission is a probe on the hours since admission "
            "alone (when a prediction is made already says something about the label); "
            "raw+hours_since_admission is each method's embedding with that column added, so "
            "what an embedding adds beyond it is the difference to the control's row."
            if icu
            else ""
        )
        + (
            f" Cross-fitted ({join(crossfit)}: too few held-out positives or subjects): "
            f"{_folds(probes)}-fold subject-grouped cross-fitting over every labelled row of "
            "the task, each row scored by a probe that never saw its subject; the CI resamples "
            "those subjects; the null row is the same procedure on permuted labels."
            if crossfit
            else ""
        ),
        ("method", "embedding", *tasks, "macro"),
        tuple(rows),
        tuple(foot),
        empty=None if rows else "results.json has no full-data probe records.",
        text_columns=2,
    )


def _folds(probes: list[dict[str, Any]]) -> str:
    return join(sorted({int(p["folds"]) for p in probes if finite(p.get("folds"))})) or "K"


def _crossfit_rows(probes: list[dict[str, Any]], tasks: list[str], metric: str) -> list[Row]:
    """Cross-fitted tasks: the rows actually scored (every labelled row) and, for AUROC, the
    permuted-label null; empty when no task was cross-fitted."""
    cf = [p for p in probes if p.get("protocol") == "crossfit" and p["embedding"] == "raw"]
    if not cf:
        return []
    by_task = group_by(cf, lambda p: p["task"])
    counts, nulls = [], []
    for task in tasks:
        recs = by_task.get(task)
        if not recs:
            counts.append(Cell(NA, "not cross-fitted"))
            nulls.append(Cell(NA, "not cross-fitted"))
            continue
        counts.append(count_of(recs[0].get("n_pos_test"), recs[0].get("n_test")))
        nulls.append(
            fmt(
                mean_of(p.get("null_auroc_mean") for p in recs),
                "auroc",
                reason="no permutation fitted",
            )
        )
    rows = [
        Row((Cell("cross-fitted positives / rows"), Cell(""), *counts, Cell("")), kind="reference")
    ]
    if metric == "auroc":
        rows.append(
            Row(
                (Cell("cross-fit null (permuted labels)"), Cell(""), *nulls, Cell("")),
                kind="reference",
            )
        )
    return rows


def probe_tables(results: Mapping[str, Any]) -> tuple[Table, Table]:
    """Full-data probes per task: the AUROC table and the AUPRC table."""
    return _probe_table(results, "auroc"), _probe_table(results, "auprc")


def _kshot_table(results: Mapping[str, Any], metric: str) -> Table:
    name = _METRICS[metric][0]
    probes = [p for p in results.get("probes") or () if p["k"] != "all" and p["embedding"] == "raw"]
    ks = sorted({int(p["k"]) for p in probes})
    groups = group_by(probes, lambda p: (p["method"], int(p["k"])))
    draws = sorted({p["n_draws"] for p in probes if finite(p.get("n_draws")) and p["n_draws"]})
    rows = []
    for method in ordered_methods(results, (p["method"] for p in probes)):
        note = (
            "saw the labels in pretraining: not a k-shot comparison"
            if method == "supervised"
            else None
        )
        cells = [Cell(method, note)]
        for k in ks:
            recs = groups.get((method, k), [])
            reasons = dict.fromkeys(
                str(p["reason"]) for p in recs if p.get("skipped") and p.get("reason")
            )
            cells.append(
                fmt(
                    mean_of(p.get(metric) for p in recs),
                    metric,
                    sd=mean_of(p.get(f"{metric}_sd") for p in recs),
                    reason="; ".join(reasons) or f"no probe at k = {k}",
                )
            )
        rows.append(Row(tuple(cells), method=method, kind=row_kind(results, method)))
    draws_text = f" ({join(draws)} draws per k)" if draws else ""
    tasks = task_names(results, [p for p in probes])
    return Table(
        "kshot" if metric == "auroc" else f"kshot-{metric}",
        f"k-shot linear probes: {name}",
        f"Test {name} with k labelled training subjects per class, raw embeddings, macro over "
        f"tasks and mean over seeds{draws_text}; ± the standard deviation over draws (averaged "
        "over tasks and seeds). Evaluated on the same held-out rows as the full-data probes. "
        "Supervised pretraining saw the labels, so it is not a k-shot comparison. "
        + ("Chance is 0.5. " if metric == "auroc" else _KSHOT_AUPRC_CHANCE)
        + _counts_caption(results, tasks),
        ("method", *(f"k = {k}" for k in ks)),
        tuple(rows),
        empty=None if rows else "results.json has no k-shot probe records.",
    )


def kshot_tables(results: Mapping[str, Any]) -> tuple[Table, Table]:
    """k-shot probes, macro over tasks: the AUROC table and the AUPRC table."""
    return _kshot_table(results, "auroc"), _kshot_table(results, "auprc")
