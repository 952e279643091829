"""The main table: one row per method and ablation, the isotropic references in its foot."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..format import fmt, num
from ..model import NA, Cell, Row, Table
from ..records import has_records, join, mean_of, reference_for, row_kind

__all__ = ["comparison_table"]


def _backbone_shapes(results: Mapping[str, Any]) -> dict[str, list[tuple[int, int]]]:
    shapes: dict[str, list[tuple[int, int]]] = {}
    for rec in results.get("geometry") or ():
        if rec["output"] == "backbone":
            lst = shapes.setdefault(rec["method"], [])
            if (rec["n"], rec["d"]) not in lst:
                lst.append((rec["n"], rec["d"]))
    return shapes


def _cond_reason(results: Mapping[str, Any], method: str, row: Mapping[str, Any]) -> str | None:
    if row.get("condition_number_reason"):
        return str(row["condition_number_reason"])
    reasons = [
        rec.get("condition_number_reason")
        for rec in results.get("geometry") or ()
        if rec["method"] == method
        and rec["output"] == "backbone"
        and rec["condition_number"] is None
        and rec.get("condition_number_reason")
    ]
    if reasons:
        return "infinite: " + "; ".join(dict.fromkeys(reasons))
    return None


def comparison_table(results: Mapping[str, Any]) -> Table:
    rows_by_method = {row["method"]: row for row in results["table"]}
    shapes = _backbone_shapes(results)
    header = (
        "method",
        "seeds",
        "n × d",
        "effective rank",
        "condition number",
        "cond. number @k",
        "temporal subspace distance",
        "probe AUROC",
        "robustness drop",
        "seed alignment (CKA)",
    )
    rows = []
    for method in [*results["config"]["methods"], *results["config"]["ablations"]]:
        row = rows_by_method[method]

        def reason(key: str, fallback: str | None, row: Mapping[str, Any] = row) -> str | None:
            return row.get(f"{key}_reason") or fallback

        shape = shapes.get(method, [])
        no_geometry = None if shape else "no embedding geometry (e.g. a probe-only baseline)"
        shape_cell = Cell(join(f"{n} × {d}" for n, d in shape)) if shape else Cell(NA)
        cells = (
            Cell(method),
            fmt(row["n_seeds"], "int"),
            shape_cell,
            fmt(
                row["effective_rank"],
                "rank",
                sd=row["effective_rank_sd"],
                reason=reason("effective_rank", no_geometry),
            ),
            fmt(
                row["condition_number"],
                "cond",
                reason=_cond_reason(results, method, row) or no_geometry,
            ),
            fmt(
                row["condition_number_k"], "cond", reason=reason("condition_number_k", no_geometry)
            ),
            fmt(
                row["temporal_subspace_distance"],
                "dist",
                reason=reason(
                    "temporal_subspace_distance",
                    None
                    if has_records(results, "temporal", method)
                    else "no temporal windows measured",
                ),
            ),
            fmt(
                row["probe_auroc"],
                "auroc",
                sd=row["probe_auroc_sd"],
                reason=reason(
                    "probe_auroc",
                    None if has_records(results, "probes", method) else "no linear probe",
                ),
            ),
            fmt(
                row["robustness_drop"],
                "drop",
                reason=reason(
                    "robustness_drop",
                    None
                    if has_records(results, "robustness", method)
                    else "no perturbation measured",
                ),
            ),
            fmt(
                row["seed_alignment_cka"],
                "cka",
                reason=reason(
                    "seed_alignment_cka",
                    "one seed: no pair of seeds to align" if row["n_seeds"] == 1 else None,
                ),
            ),
        )
        rows.append(Row(cells, method=method, kind=row_kind(results, method)))

    chance = mean_of(rec["chance"] for rec in results.get("temporal") or ())
    foot = []
    seen: list[tuple[int, int]] = []
    for shape in shapes.values():
        for n, d in shape:
            if (n, d) in seen:
                continue
            seen.append((n, d))
            ref = reference_for(results, n, d)
            no_ref = None if ref is not None else f"results.json has no reference for n={n}, d={d}"
            ref = ref or {}
            cells = (
                Cell(f"isotropic Gaussian (n={n}, d={d})"),
                Cell(NA),
                Cell(f"{n} × {d}"),
                fmt(ref.get("effective_rank"), "rank", reason=no_ref),
                fmt(ref.get("condition_number"), "cond", reason=no_ref),
                fmt(
                    ref.get("condition_number_k"),
                    "cond",
                    reason=no_ref,
                ),
                Cell(f"{num(chance, 'dist')} (chance)") if chance is not None else Cell(NA),
                Cell("0.500 (chance)"),
                Cell(NA),
                Cell("0.000 (independent)"),
            )
            foot.append(Row(cells, kind="reference"))
    seeds = len(results["config"]["seeds"])
    caption = (
        "One row per method, then per ablation; mean over seeds, ± the standard deviation over "
        f"seeds where there are several ({seeds} seed{'s' if seeds != 1 else ''} in this run). "
        "Geometry of the backbone output on the held-out subjects (higher effective rank and a "
        "condition number nearer 1 are more isotropic). Temporal subspace distance: adjacent "
        "windows of the same subjects, lower is more stable. Probe AUROC: linear probe, macro "
        "over tasks, all shots, raw embeddings. Robustness drop: clean minus perturbed AUROC "
        "as summarised by the benchmark (lower is more robust; each perturbation and level is "
        "in the robustness table). Seed alignment: debiased linear "
        "CKA between two seeds on the same rows. The reference rows give what an isotropic "
        "Gaussian matrix of the same (n, d) scores, the chance level of the subspace distance "
        "and of AUROC, and the CKA of independent matrices: spectral numbers depend on (n, d), "
        "so compare methods only at equal shape."
    )
    return Table(
        "comparison",
        "Comparison of methods",
        caption,
        header,
        tuple(rows),
        tuple(foot),
    )
