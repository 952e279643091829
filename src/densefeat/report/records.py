"""Reading ``results.json`` records: finiteness, means over seeds, grouping, method order.

Small pure helpers shared by the tables, the sentences and the plots; they format nothing.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "finite",
    "group_by",
    "has_records",
    "join",
    "mean_of",
    "ordered_methods",
    "reference_for",
    "row_kind",
    "sd_of",
    "task_names",
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
