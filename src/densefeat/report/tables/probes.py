"""The task table and the linear-probe tables (all shots per task, and k-shot)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from ..format import ci_text, fmt, num
from ..model import NA, Cell, Row, Table
from ..records import finite, group_by, join, mean_of, ordered_methods, row_kind, task_names

__all__ = ["kshot_table", "probe_table", "tasks_table"]


def tasks_table(results: Mapping[str, Any]) -> Table:
    tasks = results.get("tasks") or []
    rows = tuple(
        Row(
            (
                Cell(str(t["name"])),
                fmt(t.get("n_train"), "int"),
                fmt(t.get("n_tuning"), "int"),
                fmt(t.get("n_test"), "int"),
                fmt(t.get("prevalence_test"), "pct"),
            )
        )
        for t in tasks
    )
    return Table(
        "tasks",
        "Tasks",
        "Prediction tasks: evaluation rows (labelled prediction times) per split, and the "
        "outcome prevalence among all held-out labels (the evaluation rows may hold a uniform "
        "sample of the negatives; see the benchmark's notes).",
        ("task", "train", "tuning", "test", "prevalence (test)"),
        rows,
        empty=None if rows else "results.json lists no tasks.",
    )


def probe_table(results: Mapping[str, Any]) -> Table:
    probes = [p for p in results.get("probes") or () if p["k"] == "all"]
    tasks = task_names(results, probes)
    header = ("method", "embedding", *tasks, "macro")
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
                mean = mean_of(p["auroc"] for p in trecs)
                if mean is None:
                    cells.append(Cell(NA, "no probe for this task"))
                    continue
                means.append(mean)
                cis = [p.get("auroc_ci") for p in trecs if p.get("auroc_ci")]
                ci = [mean_of(c[0] for c in cis), mean_of(c[1] for c in cis)] if cis else None
                text = num(mean, "auroc")
                if ci_text(ci):
                    text += f" {ci_text(ci)}"
                cells.append(Cell(text))
            macro = statistics.fmean(means) if len(means) == len(tasks) and means else None
            cells.append(fmt(macro, "auroc", reason="a task is missing"))
            rows.append(Row(tuple(cells), method=method, kind=row_kind(results, method)))
    return Table(
        "probes",
        "Linear probes per task",
        "Test AUROC of an L2 logistic-regression probe on frozen embeddings (all training "
        "shots), mean over seeds; in brackets the 95% patient-level bootstrap CI (1,000 "
        "resamples), its bounds averaged over seeds. raw: the embeddings as they are; "
        "whitened: after ZCA whitening fitted on the training split (whitening alone can raise "
        "a probe's AUROC). Macro: mean over tasks. Chance is 0.5.",
        tuple(header),
        tuple(rows),
        empty=None if rows else "results.json has no full-data probe records.",
        text_columns=2,
    )


def kshot_table(results: Mapping[str, Any]) -> Table:
    probes = [p for p in results.get("probes") or () if p["k"] != "all" and p["embedding"] == "raw"]
    ks = sorted({int(p["k"]) for p in probes})
    groups = group_by(probes, lambda p: (p["method"], int(p["k"])))
    draws = sorted({p["n_draws"] for p in probes if finite(p.get("n_draws"))})
    rows = []
    for method in ordered_methods(results, (p["method"] for p in probes)):
        cells = [Cell(method)]
        for k in ks:
            recs = groups.get((method, k), [])
            cells.append(
                fmt(
                    mean_of(p["auroc"] for p in recs),
                    "auroc",
                    sd=mean_of(p.get("auroc_sd") for p in recs),
                    reason=f"no probe at k = {k}",
                )
            )
        note = " (saw labels in pretraining)" if method == "supervised" else ""
        cells[0] = Cell(method + note)
        rows.append(Row(tuple(cells), method=method, kind=row_kind(results, method)))
    draws_text = f" ({join(draws)} draws per k)" if draws else ""
    return Table(
        "kshot",
        "k-shot linear probes",
        "Test AUROC with k labelled training subjects per class, raw embeddings, macro over "
        f"tasks and mean over seeds{draws_text}; ± the standard deviation over draws (averaged "
        "over tasks and seeds). Supervised pretraining saw the labels, so it is not a k-shot "
        "comparison. Chance is 0.5.",
        ("method", *(f"k = {k}" for k in ks)),
        tuple(rows),
        empty=None if rows else "results.json has no k-shot probe records.",
    )
