"""The tuning table: each method's chosen configuration, its search and a collapse flag."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..format import fmt
from ..model import NA, Cell, Row, Table
from ..records import row_kind

__all__ = ["tuning_table"]


def _config_text(overrides: Mapping[str, Any]) -> str:
    if not overrides:
        return "defaults"
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in overrides.items()
    )


def tuning_table(results: Mapping[str, Any]) -> Table:
    """One row per tuned method: trials, chosen trial and configuration, its tuning-split
    macro AUROC, and the comparison runs' final monitoring effective rank (flagged when below
    10% of d: the chosen configuration still collapses)."""
    tuning = results.get("tuning") or {}
    methods = tuning.get("methods") or {}
    table = {r["method"]: r for r in results.get("table") or ()}
    rows = []
    for method, rec in methods.items():
        trials = rec.get("trials") or []
        chosen = trials[rec["chosen_trial"]] if trials else {}
        scores = [t.get("auroc_macro") for t in trials if t.get("auroc_macro") is not None]
        main = table.get(method, {})
        collapsed = main.get("collapsed")
        flag = (
            Cell("COLLAPSED" if collapsed else "no")
            if collapsed is not None
            else Cell(NA, "no training curve")
        )
        rows.append(
            Row(
                (
                    Cell(method),
                    Cell(str(len(trials))),
                    Cell(str(rec["chosen_trial"])),
                    Cell(_config_text(rec.get("chosen") or {})),
                    fmt(chosen.get("auroc_macro"), "auroc"),
                    fmt(min(scores) if scores else None, "auroc"),
                    fmt(main.get("final_effective_rank"), "rank"),
                    flag,
                ),
                method=method,
                kind=row_kind(results, method),
            )
        )
    n = tuning.get("trials")
    return Table(
        "tuning",
        "Tuning: chosen configurations",
        f"Every trained method got the same random search ({n} seeded trials; trial 0 = its "
        "defaults) over its documented space (densefeat.benchmark.tuning), each trial scored "
        "by the tuning split's macro probe AUROC (held-out rows never used). 'chosen AUROC' is "
        "the chosen trial's tuning score, 'worst' the lowest trial's; 'final eff. rank' is the "
        "comparison runs' last monitoring effective rank (seed mean), 'collapsed' when it is "
        "below 10% of d.",
        (
            "method",
            "trials",
            "chosen",
            "configuration",
            "chosen AUROC",
            "worst AUROC",
            "final eff. rank",
            "collapsed",
        ),
        tuple(rows),
        empty=None
        if rows
        else (tuning.get("skipped") or "no tuning (--trials 1): every method at its defaults."),
        text_columns=4,
    )
