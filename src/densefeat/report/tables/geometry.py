"""The geometry table: backbone and projector outputs, isotropic references in its foot."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..format import fmt
from ..model import NA, Cell, Row, Table
from ..records import (
    finite,
    group_by,
    join,
    mean_of,
    ordered_methods,
    reference_for,
    row_kind,
    sd_of,
)

__all__ = ["geometry_table"]


def geometry_table(results: Mapping[str, Any]) -> Table:
    recs = list(results.get("geometry") or ())
    groups = group_by(recs, lambda r: (r["method"], r["output"]))
    outputs = sorted({r["output"] for r in recs}, key=lambda o: (o != "backbone", o))
    rows = []
    shapes: list[tuple[int, int]] = []
    for method in ordered_methods(results, (r["method"] for r in recs)):
        for out in outputs:
            g = groups.get((method, out))
            if not g:
                continue
            shape = list(dict.fromkeys((r["n"], r["d"]) for r in g))
            shapes.extend(s for s in shape if s not in shapes)
            conds = [r["condition_number"] for r in g]
            if all(finite(c) for c in conds):
                cond_cell = fmt(mean_of(conds), "cond")
            else:
                reasons = dict.fromkeys(
                    r.get("condition_number_reason") or "no reason recorded"
                    for r in g
                    if not finite(r["condition_number"])
                )
                which = "every seed" if not any(finite(c) for c in conds) else "some seeds"
                cond_cell = Cell(NA, f"infinite for {which}: " + "; ".join(reasons))
            ks = sorted({r["k"] for r in g if finite(r.get("k"))})
            rows.append(
                Row(
                    (
                        Cell(method),
                        Cell(out),
                        Cell(join(f"{n} × {d}" for n, d in shape)),
                        fmt(
                            mean_of(r["effective_rank"] for r in g),
                            "rank",
                            sd=sd_of(r["effective_rank"] for r in g),
                        ),
                        fmt(mean_of(r.get("effective_rank_eig") for r in g), "rank"),
                        fmt(mean_of(r.get("rankme") for r in g), "rank"),
                        cond_cell,
                        fmt(mean_of(r.get("condition_number_k") for r in g), "cond"),
                        Cell(join(ks) if ks else NA),
                    ),
                    method=method,
                    kind=row_kind(results, method),
                )
            )
    foot = []
    for n, d in shapes:
        ref = reference_for(results, n, d)
        if ref is None:
            continue
        foot.append(
            Row(
                (
                    Cell(f"isotropic Gaussian (n={n}, d={d})"),
                    Cell(NA),
                    Cell(f"{n} × {d}"),
                    fmt(ref["effective_rank"], "rank"),
                    fmt(ref.get("effective_rank_eig"), "rank"),
                    fmt(ref.get("rankme"), "rank"),
                    fmt(ref["condition_number"], "cond"),
                    fmt(ref.get("condition_number_k"), "cond"),
                    Cell(NA),
                ),
                kind="reference",
            )
        )
    return Table(
        "geometry",
        "Geometry by output",
        "Backbone and projector outputs on the held-out subjects, mean over seeds (± sd of the "
        "effective rank). Effective rank: exp of the entropy of the normalised singular values "
        "of the centred embeddings (Roy & Vetterli 2007); (eig): the same on covariance "
        "eigenvalues; RankMe: on the uncentred embeddings (Garrido et al. 2023). Condition "
        "number: largest over smallest singular value; @k: over the k-th, k = round(effective "
        "rank).",
        (
            "method",
            "output",
            "n × d",
            "effective rank",
            "eff. rank (eig)",
            "RankMe",
            "condition number",
            "cond. number @k",
            "k",
        ),
        tuple(rows),
        tuple(foot),
        empty=None if recs else "results.json has no geometry records.",
        text_columns=2,
    )
