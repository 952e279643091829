"""Reading ``results.json`` records: finiteness, means over seeds, grouping, method order.

Small pure helpers shared by the tables, the sentences and the plots; they format nothing.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "PROBE_ONLY",
    "auprc_chance",
    "finite",
    "group_by",
    "has_records",
    "held_out_counts",
    "join",
    "mean_of",
    "ordered_methods",
    "probe_only",
    "quartiles",
    "reference_for",
    "row_kind",
    "sd_of",
    "skipped",
    "task_names",
    "window_means",
]


def finite(value: Any) -> bool:
    """Whether ``value`` is a real, finite number (``bool`` is not)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def mean_of(values: Iterable[Any]) -> float | None:
    """Mean of the finite values; ``None`` when there are none."""
    vals = [float(v) for v in values if finite(v)]
    return statistics.fmean(vals) if vals else None


def sd_of(values: Iterable[Any]) -> float | None:
    """Sample standard deviation of the finite values; ``None`` below two."""
    vals = [float(v) for v in values if finite(v)]
    return statistics.stdev(vals) if len(vals) > 1 else None


def group_by(records: Iterable[Mapping[str, Any]], key: Callable[[Mapping[str, Any]], Any]) -> dict:
    """``records`` grouped by ``key(record)``, groups and records in order of first appearance."""
    out: dict[Any, list[Mapping[str, Any]]] = {}
    for rec in records:
        out.setdefault(key(rec), []).append(rec)
    return out


def ordered_methods(results: Mapping[str, Any], present: Iterable[str]) -> list[str]:
    """Methods in report order (config methods, ablations, then others as first seen)."""
    present = list(dict.fromkeys(present))
    order = [*results["config"]["methods"], *results["config"]["ablations"]]
    return [m for m in order if m in present] + [m for m in present if m not in order]


def row_kind(results: Mapping[str, Any], method: str) -> str:
    """``"ablation"`` for a configured ablation, else ``"method"``."""
    return "ablation" if method in results["config"]["ablations"] else "method"


def join(values: Iterable[Any]) -> str:
    """``values`` as text, comma-separated."""
    return ", ".join(str(v) for v in values)


def reference_for(results: Mapping[str, Any], n: int, d: int) -> Mapping[str, Any] | None:
    """The isotropic-Gaussian ``reference`` record of shape (n, d), if results.json has one."""
    for ref in results.get("reference") or ():
        if ref["n"] == n and ref["d"] == d:
            return ref
    return None


def has_records(results: Mapping[str, Any], section: str, method: str) -> bool:
    """Whether ``section`` holds any record of ``method``."""
    return any(rec["method"] == method for rec in results.get(section) or ())


def task_names(results: Mapping[str, Any], probes: Iterable[Mapping[str, Any]]) -> list[str]:
    """Task names in report order: ``tasks``, then any other task the probe records name."""
    names = [t["name"] for t in results.get("tasks") or ()]
    for rec in probes:
        if rec["task"] not in names:
            names.append(rec["task"])
    return names


#: Baselines that only fit a probe (no encoder is trained, so there are no seeds to repeat):
#: log code counts, TF-IDF of the notes, and a frozen pretrained sentence encoder.
PROBE_ONLY = ("count_features", "counts_only", "tfidf", "minilm_frozen")


def probe_only(results: Mapping[str, Any], method: str) -> bool:
    """Whether ``method`` is a probe-only baseline: a known one, or one without any encoder
    record (no geometry, training curve, robustness or temporal record) that is not an
    ablation."""
    if method in PROBE_ONLY:
        return True
    if method in results["config"]["ablations"]:
        return False
    sections = ("geometry", "training_curves", "robustness", "temporal")
    return not any(has_records(results, s, method) for s in sections)


def skipped(results: Mapping[str, Any], key: str) -> list[tuple[str, str]]:
    """``(name, reason)`` of what the benchmark did not run: ``tasks`` (``tasks_skipped``),
    ``methods`` (``config.methods_skipped``) or ``baselines`` (``config.baselines_skipped``)."""
    if key == "tasks":
        recs, name = results.get("tasks_skipped") or (), "task"
    else:
        recs, name = (results["config"].get(f"{key}_skipped") or ()), "method"
    out = []
    for rec in recs:
        if isinstance(rec, Mapping) and rec.get(name):
            out.append((str(rec[name]), str(rec.get("reason") or "no reason recorded")))
    return out


def held_out_counts(
    results: Mapping[str, Any], task: str
) -> tuple[int | None, int | None, float | None]:
    """``(positives, rows, prevalence)`` of a task's held-out evaluation rows.

    From ``tasks[]`` (``positives_test``, ``n_test``, ``prevalence_test``: the prevalence of all
    held-out labels), else from the task's full-data probe records (``n_pos_test``,
    ``n_test``); ``None`` where results.json has neither.
    """
    rec = next((t for t in results.get("tasks") or () if t.get("name") == task), {})
    pos, rows, prev = rec.get("positives_test"), rec.get("n_test"), rec.get("prevalence_test")
    for p in results.get("probes") or ():
        if p["task"] == task and p["k"] == "all":
            pos = pos if finite(pos) else p.get("n_pos_test")
            rows = rows if finite(rows) else p.get("n_test")
    return (
        int(pos) if finite(pos) else None,
        int(rows) if finite(rows) else None,
        float(prev) if finite(prev) else None,
    )


def auprc_chance(results: Mapping[str, Any], task: str) -> float | None:
    """AUPRC's chance level on a task: the prevalence its evaluation rows stand for.

    The task's held-out prevalence (``tasks[].prevalence_test``) when the probes weighted the
    sampled negatives back (``weighted``, or not said); the positive fraction of the evaluation
    rows themselves when every full-data probe of the task says ``weighted: false``.
    """
    pos, rows, prev = held_out_counts(results, task)
    flags = {
        p.get("weighted")
        for p in results.get("probes") or ()
        if p["task"] == task and p["k"] == "all" and p.get("weighted") is not None
    }
    if flags == {False} and pos is not None and rows:
        return pos / rows
    return prev


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """First quartile, median and third quartile (inclusive method; one value: itself)."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def window_means(records: Iterable[Mapping[str, Any]], key: str) -> dict[int, float]:
    """Time window -> mean of ``key`` over the (temporal) records given, e.g. over seeds."""
    out = {}
    for w, group in group_by(records, lambda r: int(r["window"])).items():
        value = mean_of(r.get(key) for r in group)
        if value is not None:
            out[w] = value
    return out
