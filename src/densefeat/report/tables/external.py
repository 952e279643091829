"""The external-validation table: site A's probe on every row of site B (transfer), B's own
cross-fitted probe, the drop, and how much of B the training vocabulary never saw."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..format import ci_text, num
from ..model import NA, Cell, Row, Table
from ..records import group_by, mean_of, ordered_methods, row_kind

__all__ = ["external_table"]


def _metric(recs: list[Mapping[str, Any]], key: str, kind: str) -> Cell:
    value = mean_of(r.get(key) for r in recs)
    if value is None:
        reason = next((str(r["error"]) for r in recs if r.get("error")), "not measured")
        return Cell(NA, reason)
    cis = [r[f"{key}_ci"] for r in recs if r.get(f"{key}_ci")]
    ci = [mean_of(c[0] for c in cis), mean_of(c[1] for c in cis)] if cis else None
    text = num(value, kind)
    if ci_text(ci, kind):  # type: ignore[arg-type]
        text += f" {ci_text(ci, kind)}"  # type: ignore[arg-type]
    return Cell(text)


def external_table(results: Mapping[str, Any]) -> Table:
    """Per method and task: transfer AUROC/AUPRC, within-site AUROC, drop; means over seeds."""
    recs = list(results.get("external") or ())
    site = results.get("external_site") or {}
    groups = group_by(recs, lambda r: (r["method"], r["task"]))
    tasks = list(dict.fromkeys(r["task"] for r in recs))
    rows = []
    for method in ordered_methods(results, (r["method"] for r in recs)):
        for task in tasks:
            g = groups.get((method, task))
            if not g:
                continue
            rows.append(
                Row(
                    (
                        Cell(method),
                        Cell(task),
                        _metric(g, "transfer_auroc", "auroc"),
                        _metric(g, "transfer_auprc", "auprc"),
                        _metric(g, "within_auroc", "auroc"),
                        _metric(g, "auroc_drop", "drop"),
                        Cell(f"{g[0].get('n_pos_b', '?')} / {g[0].get('n_b', '?')}"),
                    ),
                    method=method,
                    kind=row_kind(results, method),
                )
            )
    unseen = site.get("unseen_code_event_share")
    unk = mean_of(r.get("unk_event_share") for r in recs)
    share = (
        f" {100 * unseen:.1f}% of site B's timed "
        "events have a code that never occurs in the training split"
        + (f" ({100 * unk:.1f}% map to the vocabulary's UNK)." if unk is not None else ".")
        if unseen is not None
        else ""
    )
    return Table(
        "external",
        f"External validation on {site.get('name', 'a second site')}",
        "Transfer: the probe fitted on this site's training split (C on its tuning split) "
        "tested on every evaluation row of the external site, embedded with each run's own "
        "vocabulary and normalisation; within-site: the external site's own subject-grouped "
        "cross-fitted probe on the same rows; drop = within − transfer AUROC (positive: the "
        "probe loses by moving sites). Means over seeds; 95% patient-level bootstrap CIs of the "
        "external site's subjects (the drop's paired)." + share,
        ("method", "task", "transfer AUROC", "transfer AUPRC", "within-site AUROC", "drop",
         "positives / rows"),
        tuple(rows),
        empty=None if rows else "No external site in this benchmark (--external).",
    )  # fmt: skip
