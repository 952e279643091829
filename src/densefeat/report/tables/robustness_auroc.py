"""The primary robustness table: AUROC under each perturbation with its patient-level CI, and
the drop (clean − perturbed) with its paired CI beside it (docs/design.md §7: the drop alone
lets a weak method win by having little to lose)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..format import ci_text, num
from ..model import NA, Cell, Row, Table
from ..records import group_by, mean_of, ordered_methods, row_kind

__all__ = ["robustness_auroc_table"]


def _level(perturbation: str, level: float) -> str:
    return f"±{level:g} d" if perturbation == "time_jitter" else f"{100 * level:g}%"


def _ci(recs: list[Mapping[str, Any]], key: str) -> list[float] | None:
    cis = [r[key] for r in recs if r.get(key)]
    return [mean_of(c[0] for c in cis), mean_of(c[1] for c in cis)] if cis else None  # type: ignore[list-item]


def _cell(recs: list[Mapping[str, Any]]) -> Cell:
    auroc = mean_of(r.get("auroc") for r in recs)
    drop = mean_of(r.get("auroc_drop") for r in recs)
    if auroc is None:
        return Cell(NA, "not run")
    text = num(auroc, "auroc")
    if ci_text(_ci(recs, "auroc_ci"), "auroc"):
        text += f" {ci_text(_ci(recs, 'auroc_ci'), 'auroc')}"
    if drop is not None:
        text += f"; drop {num(drop, 'drop')}"
        if ci_text(_ci(recs, "auroc_drop_ci"), "drop"):
            text += f" {ci_text(_ci(recs, 'auroc_drop_ci'), 'drop')}"
    return Cell(text)


def robustness_auroc_table(results: Mapping[str, Any]) -> Table:
    """Per method and (perturbation, level): AUROC under perturbation [CI]; drop [CI]."""
    recs = list(results.get("robustness") or ())
    perts = list(dict.fromkeys(r["perturbation"] for r in recs))
    cols = [
        (p, lvl)
        for p in perts
        for lvl in sorted({r["level"] for r in recs if r["perturbation"] == p})
    ]
    groups = group_by(recs, lambda r: (r["method"], r["perturbation"], r["level"]))
    rows = []
    for method in ordered_methods(results, (r["method"] for r in recs)):
        cells = [Cell(method)]
        cells += [_cell(groups.get((method, p, lvl), [])) for p, lvl in cols]
        rows.append(Row(tuple(cells), method=method, kind=row_kind(results, method)))
    return Table(
        "robustness-auroc",
        "Robustness: AUROC under perturbation (primary), drop beside it",
        "Test AUROC of the probe fitted on clean data, scored on perturbed held-out rows "
        "(higher is better), macro over tasks and mean over seeds, in brackets its 95% "
        "patient-level bootstrap CI; then the drop (clean − perturbed AUROC) with its paired "
        "CI (clean and perturbed scored on the same resamples). CI bounds are averaged over "
        "tasks and seeds.",
        ("method", *(f"{p} {_level(p, lvl)}" for p, lvl in cols)),
        tuple(rows),
        empty=None if recs else "results.json has no robustness records.",
    )
