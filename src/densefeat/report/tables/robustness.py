"""The robustness tables: AUROC drop and embedding drift per perturbation and level."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..format import fmt
from ..model import Cell, Row, Table
from ..records import group_by, mean_of, ordered_methods, row_kind

__all__ = ["robustness_tables"]


def _level(perturbation: str, level: float) -> str:
    if perturbation == "time_jitter":
        return f"±{level:g} d"
    return f"{100 * level:g}%"


def robustness_tables(results: Mapping[str, Any]) -> tuple[Table, Table]:
    recs = list(results.get("robustness") or ())
    perts = list(dict.fromkeys(r["perturbation"] for r in recs))
    cols = [
        (p, lvl)
        for p in perts
        for lvl in sorted({r["level"] for r in recs if r["perturbation"] == p})
    ]
    groups = group_by(recs, lambda r: (r["method"], r["perturbation"], r["level"]))
    header = ("method", *(f"{p} {_level(p, lvl)}" for p, lvl in cols))
    drop_rows, dist_rows = [], []
    for method in ordered_methods(results, (r["method"] for r in recs)):
        drop_cells, dist_cells = [Cell(method)], [Cell(method)]
        for p, lvl in cols:
            g = groups.get((method, p, lvl), [])
            drop_cells.append(fmt(mean_of(r["auroc_drop"] for r in g), "drop", reason="not run"))
            dist_cells.append(
                fmt(mean_of(r.get("subspace_distance") for r in g), "dist", reason="not run")
            )
        kind = row_kind(results, method)
        drop_rows.append(Row(tuple(drop_cells), method=method, kind=kind))
        dist_rows.append(Row(tuple(dist_cells), method=method, kind=kind))
    empty = None if recs else "results.json has no robustness records."
    drop = Table(
        "robustness",
        "Robustness: AUROC drop under perturbation",
        "Clean minus perturbed test AUROC (positive: the probe got worse), probe fitted on "
        "clean data, macro over tasks and mean over seeds. Levels: the fraction of events, "
        "codes or tokens affected, or the time jitter in days.",
        header,
        tuple(drop_rows),
        empty=empty,
    )
    dist = Table(
        "drift",
        "Robustness: embedding drift under perturbation",
        "Subspace distance between the clean and the perturbed embeddings of the same rows "
        "(0: same subspace, 1: orthogonal), macro over tasks and mean over seeds.",
        header,
        tuple(dist_rows),
        empty=empty,
    )
    return drop, dist
