"""Eigenspectra of the held-out embeddings, and the effective rank during training."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..records import finite, group_by, ordered_methods, reference_for
from .figure import (
    REF_STYLE,
    Plot,
    draw_order,
    draw_svg,
    legend_below,
    legend_order,
    line_style,
    log_ticks,
    new_figure,
    unique_legend,
)

__all__ = ["eigenspectra", "training"]


def _normalised(eig: Sequence[Any]) -> list[float]:
    vals = [float(v) if finite(v) else 0.0 for v in eig]
    total = sum(v for v in vals if v > 0)
    return [v / total if total > 0 else 0.0 for v in vals]


def _mean_spectrum(records: list[Mapping[str, Any]]) -> list[float]:
    spectra = [_normalised(r.get("eigenvalues") or ()) for r in records]
    spectra = [s for s in spectra if s]
    if not spectra:
        return []
    length = min(len(s) for s in spectra)
    return [sum(s[i] for s in spectra) / len(spectra) for i in range(length)]


def eigenspectra(results: Mapping[str, Any], colours: Mapping[str, str]) -> Plot:
    key, title = "eigenspectra", "Eigenspectra"
    methods = set(results["config"]["methods"])
    recs = [
        r for r in results.get("geometry") or () if r["method"] in methods and r.get("eigenvalues")
    ]
    if not recs:
        return Plot(key, title, "", skipped="results.json has no geometry eigenvalues.")
    outputs = sorted({r["output"] for r in recs}, key=lambda o: (o != "backbone", o))
    clipped = False
    floor_ratio = 1e-8

    def draw() -> Any:
        nonlocal clipped
        fig, axes = new_figure(len(outputs), 5.2 * len(outputs) + 0.6, 4.4)
        for ax, output in zip(axes, outputs, strict=True):
            group = group_by([r for r in recs if r["output"] == output], lambda r: r["method"])
            order = ordered_methods(results, group)
            top, low = 0.0, math.inf
            for method in draw_order(order):
                p = _mean_spectrum(group[method])
                xs = [i + 1 for i, v in enumerate(p) if v > 0]
                ys = [v for v in p if v > 0]
                if not ys:
                    continue
                top, low = max(top, max(ys)), min(low, min(ys))
                clipped |= len(ys) < len(p)
                ax.plot(xs, ys, label=method, **line_style(method, colours))
            shapes = list(dict.fromkeys((r["n"], r["d"]) for r in recs if r["output"] == output))
            for n, d in shapes:
                ref = reference_for(results, n, d)
                if ref is None:
                    continue
                p = [v for v in _normalised(ref["eigenvalues"]) if v > 0]
                ax.plot(
                    range(1, len(p) + 1),
                    p,
                    label="isotropic Gaussian, same (n, d)",
                    zorder=11,
                    **REF_STYLE,
                )
                top, low = max(top, max(p)), min(low, min(p))
            ax.set_xscale("log")
            ax.set_yscale("log")
            log_ticks(ax.xaxis)
            if top > 0 and low < top * floor_ratio:
                clipped = True
                low = top * floor_ratio
            if top > 0:
                ax.set_ylim(low / 1.6, top * 1.6)
            shape_text = ", ".join(f"n={n}, d={d}" for n, d in shapes)
            ax.set_title(f"{output} output ({shape_text})")
            ax.set_xlabel("rank i (log scale)")
            ax.set_ylabel("eigenvalue λᵢ / Σλ (log scale)")
        legend_below(fig, *unique_legend(axes, legend_order(results)))
        return fig

    svg = draw_svg(key, title, draw)
    caption = (
        "Covariance eigenvalues of the held-out embeddings, each divided by their sum, against "
        "their rank (log-log), one panel per output (backbone; projector where the method has "
        "one), mean over seeds. The dashed black line is an isotropic Gaussian matrix of the "
        "same (n, d): a flatter curve nearer to it is a more isotropic embedding; a steep "
        "fall marks directions the embedding barely uses."
    )
    if clipped:
        caption += (
            f" Eigenvalues that are zero or below {floor_ratio:g} of the largest (e.g. an "
            "exact null direction) are below the panel."
        )
    return Plot(key, title, caption, svg=svg)


def _training_reference(results: Mapping[str, Any]) -> tuple[float, str, bool] | None:
    """Effective rank of an isotropic Gaussian matrix with the monitoring batch's shape."""
    batch = results["config"].get("batch_size")
    ds = [
        r["d"]
        for r in results.get("geometry") or ()
        if r["output"] == "backbone" and r["method"] == "dense"
    ] or [r["d"] for r in results.get("geometry") or () if r["output"] == "backbone"]
    if not finite(batch) or not ds or batch < 2:
        return None
    n, d = int(batch), int(ds[0])
    for ref in results.get("reference") or ():
        if ref["n"] == n and ref["d"] == d and finite(ref["effective_rank"]):
            return float(ref["effective_rank"]), f"n={n}, d={d}", False
    from ...functional import isotropic_reference  # torch: only when needed

    value = float(isotropic_reference(n, d)["effective_rank"])
    return value, f"n={n}, d={d}", True


def training(results: Mapping[str, Any], colours: Mapping[str, str]) -> Plot:
    key, title = "training", "Effective rank during training"
    methods = set(results["config"]["methods"])
    recs = [
        r
        for r in results.get("training_curves") or ()
        if r["method"] in methods and len(r["step"]) == len(r["effective_rank"]) and r["step"]
    ]
    if not recs:
        return Plot(key, title, "", skipped="results.json has no training curves.")
    ref = _training_reference(results)
    pairing = _consistency_curves(recs)

    def draw() -> Any:
        if pairing:
            fig, (ax, ax_sub) = new_figure(2, 10.5, 4.4, ratios=(1.4, 1.0))
            _draw_consistency(ax_sub, pairing, colours)
        else:
            fig, (ax,) = new_figure(1, 7.6, 4.4)
        group = group_by(recs, lambda r: r["method"])
        for method in draw_order(ordered_methods(results, group)):
            for i, rec in enumerate(group[method]):
                pts = [
                    (s, v)
                    for s, v in zip(rec["step"], rec["effective_rank"], strict=True)
                    if finite(s) and finite(v)
                ]
                if not pts:
                    continue
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    label=method if i == 0 else "_",
                    **line_style(method, colours),
                )
        if ref is not None:
            ax.axhline(ref[0], label=f"isotropic Gaussian ({ref[1]})", zorder=11, **REF_STYLE)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("effective rank (monitoring batch)")
        ax.set_ylim(bottom=0)
        axes = [ax, ax_sub] if pairing else [ax]
        order = [*legend_order(results), "dense: paired", "dense: rows shuffled"]
        legend_below(fig, *unique_legend(axes, order))
        return fig

    svg = draw_svg(key, title, draw)
    caption = (
        "Effective rank of the monitoring batch's embeddings as logged during training, one "
        "line per seed. "
        + (
            f"The dashed black line is the effective rank of an isotropic Gaussian matrix of the "
            f"batch's shape ({ref[1]}"
            + (
                "; computed by the report, results.json has no reference at this shape)."
                if ref[2]
                else ")."
            )
            if ref
            else "No isotropic reference: results.json does not give the batch size."
        )
        + " A curve that falls is collapsing; random (untrained) has no curve."
    )
    if pairing:
        caption += (
            " Right: dense's subspace-consistency term on held-out window pairs of the "
            "monitoring subjects (solid) and the same with the second window's rows shuffled "
            "(dashed, its chance level), one pair of lines per seed: the term learns the pairing "
            "only where the solid line falls below the dashed one."
        )
    return Plot(key, title, caption, svg=svg)


def _consistency_curves(recs: Sequence[Mapping[str, Any]]) -> list[list[tuple[float, ...]]]:
    """Per dense seed, the finite (step, paired, shuffled) points of the monitored term."""
    out = []
    for rec in recs:
        if rec["method"] != "dense":
            continue
        paired = rec.get("subspace_consistency") or ()
        shuffled = rec.get("subspace_consistency_shuffled") or ()
        if len(paired) != len(rec["step"]) or len(shuffled) != len(rec["step"]):
            continue
        pts = [
            (s, p, q)
            for s, p, q in zip(rec["step"], paired, shuffled, strict=True)
            if finite(s) and finite(p) and finite(q)
        ]
        if pts:
            out.append(pts)
    return out


def _draw_consistency(ax: Any, curves: list[list[tuple[float, ...]]], colours: Any) -> None:
    style = line_style("dense", colours)
    for i, pts in enumerate(curves):
        steps = [p[0] for p in pts]
        ax.plot(steps, [p[1] for p in pts], label="dense: paired" if i == 0 else "_", **style)
        ax.plot(
            steps,
            [p[2] for p in pts],
            label="dense: rows shuffled" if i == 0 else "_",
            **{**style, "linestyle": "--"},
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("subspace consistency (lower: paired)")
