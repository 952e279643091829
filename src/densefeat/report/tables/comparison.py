"""The main table: one row per method and ablation, the isotropic references in its foot."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from ..format import fmt, num
from ..model import NA, Cell, Row, Table
from ..records import (
    auprc_chance,
    group_by,
    has_records,
    join,
    mean_of,
    probe_only,
    reference_for,
    row_kind,
    sd_of,
    task_names,
)

__all__ = ["comparison_table"]

_PROBE_ONLY_SEEDS = (
    "probe-only baseline: no encoder is trained, so there is no training seed to repeat"
)


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


def _macro_auprc(results: Mapping[str, Any]) -> dict[str, tuple[float | None, float | None]]:
    """Method -> (mean, sd) over seeds of the macro AUPRC over tasks (raw embeddings, all
    shots): computed like the table's probe AUROC, from the probe records (a seed missing a
    task is left out)."""
    probes = [p for p in results.get("probes") or () if p["k"] == "all" and p["embedding"] == "raw"]
    tasks = task_names(results, probes)
    out = {}
    for method, recs in group_by(probes, lambda p: p["method"]).items():
        macros = []
        for seed_recs in group_by(recs, lambda p: p["seed"]).values():
            by_task = {
                t: mean_of(p.get("auprc") for p in g)
                for t, g in group_by(seed_recs, lambda p: p["task"]).items()
            }
            if all(by_task.get(t) is not None for t in tasks):
                macros.append(statistics.fmean(by_task[t] for t in tasks))
        out[method] = (mean_of(macros), sd_of(macros))
    return out


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
        "probe AUPRC",
        "robustness drop",
        "seed alignment (CKA)",
    )
    auprc = _macro_auprc(results)
    rows = []
    for method in [*results["config"]["methods"], *results["config"]["ablations"]]:
        row = rows_by_method[method]

        def reason(key: str, fallback: str | None, row: Mapping[str, Any] = row) -> str | None:
            return row.get(f"{key}_reason") or fallback

        shape = shapes.get(method, [])
        only = probe_only(results, method)
        no_geometry = None
        if not shape:
            no_geometry = (
                "probe-only baseline: no encoder embedding, so no embedding geometry"
                if only
                else "no embedding geometry in results.json"
            )
        shape_cell = Cell(join(f"{n} × {d}" for n, d in shape)) if shape else Cell(NA)
        seeds_cell = (
            Cell(NA, _PROBE_ONLY_SEEDS)
            if only and row["n_seeds"] == 1
            else fmt(row["n_seeds"], "int")
        )
        mean, sd = auprc.get(method, (None, None))
        cells = (
            Cell(method),
            seeds_cell,
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
                mean,
                "auprc",
                sd=sd,
                reason="no full-data probe on raw embeddings for every task",
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
                    "probe-only baseline: no encoder, so no seeds to align"
                    if only
                    else "one seed: no pair of seeds to align"
                    if row["n_seeds"] == 1
                    else None,
                ),
            ),
        )
        rows.append(Row(cells, method=method, kind=row_kind(results, method)))

    chance = mean_of(rec["chance"] for rec in results.get("temporal") or ())
    probed = task_names(results, [p for p in results.get("probes") or () if p["k"] == "all"])
    prevalences = [auprc_chance(results, t) for t in probed]
    auprc_chance_cell = (
        Cell(f"{num(statistics.fmean(prevalences), 'auprc')} (chance)")
        if prevalences and None not in prevalences
        else Cell(NA, "results.json does not give every task's prevalence")
    )
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
                auprc_chance_cell,
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
        "over tasks, all shots, raw embeddings; probe AUPRC the same, computed from the probe "
        "records (its chance level is the prevalence: the reference row gives the mean over "
        "tasks). Robustness drop: clean minus perturbed AUROC "
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
