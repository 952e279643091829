"""The cross-modal alignment table: every pair of modalities of a multimodal run, at the three
subspace dimensions of the temporal endpoint (fixed k, round(effective rank), whole space), with
floor and chance, the mean principal angle and debiased CKA (densefeat.eval.crossmodal)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..format import fmt, num
from ..model import NA, Cell, Row, Table
from ..records import group_by, mean_of, ordered_methods, row_kind

__all__ = ["crossmodal_table"]

#: Column -> the record keys of its distance, floor, chance and k.
_FORMS = {
    "fixed": ("subspace_distance", "floor", "chance", "k"),
    "erank": ("subspace_distance_erank", "floor_erank", "chance_erank", "k_erank"),
    "whole": ("subspace_distance_whole", "floor_whole", "chance_whole", "k_whole"),
}


def _cell(recs: list[Mapping[str, Any]], form: str) -> Cell:
    dist_key, floor_key, chance_key, k_key = _FORMS[form]
    dist = mean_of(r.get(dist_key) for r in recs)
    if dist is None:
        reason = next((str(r["whole_reason"]) for r in recs if r.get("whole_reason")), None)
        return Cell(NA, reason or "not recorded")
    floor, chance, k = (mean_of(r.get(key) for r in recs) for key in (floor_key, chance_key, k_key))
    parts = [f"k {k:g}"] if k is not None else []
    if floor is not None:
        parts.append(f"floor {num(floor, 'dist')}")
    if chance is not None:
        parts.append(f"chance {num(chance, 'dist')}")
    return Cell(f"{num(dist, 'dist')} ({'; '.join(parts)})")


def crossmodal_table(results: Mapping[str, Any]) -> Table:
    """Per method and modality pair, means over seeds (module docstring)."""
    recs = [r for r in results.get("alignment") or () if r.get("kind") == "modalities"]
    groups = group_by(recs, lambda r: (r["method"], r["a"], r["b"]))
    order = {m: i for i, m in enumerate(ordered_methods(results, (r["method"] for r in recs)))}
    rows = []
    for method, a, b in sorted(groups, key=lambda key: order[key[0]]):
        g = groups[(method, a, b)]
        n = mean_of(r.get("n") for r in g)
        rows.append(
            Row(
                (
                    Cell(method),
                    Cell(f"{a} vs {b}"),
                    fmt(None if n is None else round(n), "int"),
                    *(_cell(g, form) for form in _FORMS),
                    fmt(mean_of(r.get("linear_cka_debiased") for r in g), "cka"),
                    fmt(mean_of(r.get("mean_angle_deg") for r in g), "angle"),
                ),
                method=method,
                kind=row_kind(results, method),
            )
        )
    k = (results.get("config") or {}).get("k")
    return Table(
        "crossmodal",
        "Cross-modal alignment",
        "Two modality embeddings of the same held-out rows (rows where both modalities are "
        "present; n), mean over seeds. Sample-space subspace distance (0 = the two modalities "
        f"order the rows along the same patterns) at k = {k}, at k = round(effective rank) (the "
        "smaller of the two) and over the whole space (k = d: sqrt(1 − mean squared canonical "
        "correlation), each with its floor (0: identical embeddings, the exact lower bound) and "
        "chance (sqrt(1 − k/(n − 1)), unrelated subspaces); debiased linear CKA (0 for "
        "independent matrices, 1 for identical ones); mean principal angle (degrees) between "
        "the top-k subspaces.",
        (
            "method",
            "pair",
            "n",
            f"k = {k}",
            "k = round(effective rank)",
            "whole space (k = d)",
            "debiased CKA",
            "mean angle (°)",
        ),
        tuple(rows),
        empty=None if rows else "results.json has no cross-modal alignment records.",
        text_columns=2,
    )
