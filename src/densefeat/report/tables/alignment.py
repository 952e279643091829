"""The alignment table: two seeds of one method, or two modalities of one run."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from ..format import fmt, num
from ..model import NA, Cell, Row, Table
from ..records import finite, ordered_methods, row_kind

__all__ = ["alignment_table"]


def alignment_table(results: Mapping[str, Any]) -> Table:
    recs = list(results.get("alignment") or ())
    order = {m: i for i, m in enumerate(ordered_methods(results, (r["method"] for r in recs)))}
    rows = []
    for r in sorted(recs, key=lambda r: (order[r["method"]], r["kind"])):
        angles = [a for a in r.get("principal_angles_deg") or () if finite(a)]
        if angles:
            angle_text = (
                f"{num(min(angles), 'angle')} / {num(statistics.median(angles), 'angle')} / "
                f"{num(max(angles), 'angle')}"
            )
            angle_cell = Cell(angle_text)
        else:
            angle_cell = Cell(NA, "no principal angles recorded")
        rows.append(
            Row(
                (
                    Cell(r["method"]),
                    Cell(str(r["kind"])),
                    Cell(f"{r['a']} vs {r['b']}"),
                    fmt(r.get("n"), "int"),
                    fmt(r["subspace_distance"], "dist"),
                    fmt(r["linear_cka_debiased"], "cka"),
                    angle_cell,
                ),
                method=r["method"],
                kind=row_kind(results, r["method"]),
            )
        )
    return Table(
        "alignment",
        "Alignment between seeds and modalities",
        "Two embeddings of the same rows: two seeds of one method, or two modalities of one "
        "multimodal run. Subspace distance (sample space, 0 = same subspace; chance is near 1), "
        "debiased linear CKA (independent matrices score 0, identical ones 1) and the principal "
        "angles between the two subspaces (min / median / max, degrees).",
        ("method", "kind", "pair", "n", "subspace distance", "debiased CKA", "angles (°)"),
        tuple(rows),
        empty=None if recs else _why_no_alignment(results),
        text_columns=3,
    )


def _why_no_alignment(results: Mapping[str, Any]) -> str:
    """Why there is no alignment record: one seed (no pair to align), else just the fact."""
    seeds = (results.get("config") or {}).get("seeds") or ()
    if len(seeds) < 2:
        return (
            f"results.json has no alignment records: {len(seeds)} seed, so no pair of seeds to "
            "align (and no multimodal run); rerun with --seeds 2 or more."
        )
    return "results.json has no alignment records."
