"""The cross-modal alignment table: every pair of modalities of a multimodal run, at the three
subspace dimensions of the temporal endpoint (fixed k, round(effective rank), whole space), with
floor and chance, the mean principal angle and debiased CKA (densefeat.eval.crossmodal), each
with its subject-level bootstrap CI; and dense minus every other method with paired CIs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..format import ci_text, fmt, num, signed
from ..model import NA, Cell, Row, Table
from ..records import group_by, mean_of, ordered_methods, row_kind

__all__ = ["crossmodal_paired_table", "crossmodal_table"]

#: Column -> the record keys of its distance, floor, chance and k.
_FORMS = {
    "fixed": ("subspace_distance", "floor", "chance", "k"),
    "erank": ("subspace_distance_erank", "floor_erank", "chance_erank", "k_erank"),
    "whole": ("subspace_distance_whole", "floor_whole", "chance_whole", "k_whole"),
}


def _with_ci(recs: list[Mapping[str, Any]], key: str, kind: str) -> str:
    """The seed mean of ``key`` with the seed mean of its CI bounds (empty without a value)."""
    value = mean_of(r.get(key) for r in recs)
    if value is None:
        return ""
    cis = [r[f"{key}_ci"] for r in recs if r.get(f"{key}_ci")]
    ci = [mean_of(c[0] for c in cis), mean_of(c[1] for c in cis)] if len(cis) == len(recs) else None
    text = ci_text(ci, kind)  # type: ignore[arg-type]
    return f"{num(value, kind)} {text}" if text else num(value, kind)


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
    return Cell(f"{_with_ci(recs, dist_key, 'dist')} ({'; '.join(parts)})")


def _ci_cell(recs: list[Mapping[str, Any]], key: str, kind: str) -> Cell:
    text = _with_ci(recs, key, kind)
    return Cell(text) if text else fmt(None, kind, reason="not recorded")


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
                    _ci_cell(g, "linear_cka_debiased", "cka"),
                    _ci_cell(g, "mean_angle_deg", "angle"),
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
        "the top-k subspaces. Brackets: 95% subject-level bootstrap CIs (percentile, recentred "
        "on the estimate; mean over seeds of the bounds).",
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


#: The paired table's columns: (record key, header, rounding).
_PAIRED = (
    ("subspace_distance", "k = fixed", "dist"),
    ("subspace_distance_erank", "k = round(erank)", "dist"),
    ("subspace_distance_whole", "whole space", "dist"),
    ("linear_cka_debiased", "debiased CKA", "cka"),
    ("mean_angle_deg", "mean angle (°)", "angle"),
)


def _diff_cell(value: Mapping[str, Any] | None, kind: str) -> Cell:
    if not value or value.get("difference") is None:
        return Cell(NA, "not measured (whole space undefined, or no resamples)")
    diff = float(value["difference"])
    text = f"{diff:+.1f}" if kind == "angle" else signed(diff)
    ci = value.get("difference_ci")
    if ci:
        text += (
            f" [{ci[0]:+.1f}, {ci[1]:+.1f}]"
            if kind == "angle"
            else (f" [{signed(ci[0])}, {signed(ci[1])}]")
        )
    return Cell(text)


def crossmodal_paired_table(results: Mapping[str, Any]) -> Table:
    """dense minus each other method on every number of the cross-modal table, paired CIs."""
    recs = list(results.get("crossmodal_comparison") or ())
    order = {m: i for i, m in enumerate(ordered_methods(results, (r["method"] for r in recs)))}
    rows = []
    for r in sorted(recs, key=lambda r: order[r["method"]]):
        rows.append(
            Row(
                (
                    Cell(f"dense − {r['method']}"),
                    Cell(f"{r['a']} vs {r['b']}"),
                    *(_diff_cell(r.get(key), kind) for key, _, kind in _PAIRED),
                ),
                method=r["method"],
                kind=row_kind(results, r["method"]),
            )
        )
    n = recs[0].get("n_resamples") if recs else None
    return Table(
        "crossmodal_paired",
        "Cross-modal alignment: dense minus each method",
        "dense minus the method on the same held-out rows, seed means; 95% paired bootstrap CI "
        f"({n} subject-level resamples shared by both methods, recentred on the difference). "
        "A negative distance difference (positive CKA difference) means dense aligns the two "
        "modalities more; a CI excluding 0 is a difference beyond subject sampling.",
        ("comparison", "pair", *(h for _, h, _ in _PAIRED)),
        tuple(rows),
        empty=None if rows else "results.json has no paired cross-modal comparison.",
        text_columns=2,
    )
