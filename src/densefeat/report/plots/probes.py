"""Probe curves: k-shot AUROC against k, and the AUROC drop against the perturbation level."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..records import finite, group_by, mean_of, ordered_methods
from .figure import (
    CHANCE_STYLE,
    Plot,
    draw_order,
    draw_svg,
    legend_below,
    legend_order,
    line_style,
    new_figure,
    unique_legend,
)

__all__ = ["kshot", "robustness"]


_PERTURBATION_AXIS = {
    "event_dropout": "fraction of events dropped",
    "code_noise": "fraction of codes replaced",
    "token_dropout": "fraction of tokens dropped",
    "sentence_dropout": "fraction of sentences dropped",
    "time_jitter": "time jitter (days)",
}


def kshot(results: Mapping[str, Any], colours: Mapping[str, str]) -> Plot:
    key, title = "kshot", "k-shot linear probes"
    recs = [
        r
        for r in results.get("probes") or ()
        if r["k"] != "all"
        and r["embedding"] == "raw"
        and r["method"] != "supervised"
        and r["method"] not in results["config"]["ablations"]
        and finite(r["auroc"])
    ]
    if not recs:
        return Plot(key, title, "", skipped="results.json has no k-shot probe records.")
    tasks = list(dict.fromkeys(r["task"] for r in recs))
    panels: list[tuple[str, list[Mapping[str, Any]]]]
    if len(tasks) <= 4:
        panels = [(t, [r for r in recs if r["task"] == t]) for t in tasks]
    else:
        panels = [("macro over tasks", recs)]
    ks = sorted({int(r["k"]) for r in recs})

    def draw() -> Any:
        fig, axes = new_figure(len(panels), 4.6 * len(panels) + 0.8, 4.2)
        for ax, (name, prec) in zip(axes, panels, strict=True):
            group = group_by(prec, lambda r: r["method"])
            for method in draw_order(ordered_methods(results, group)):
                by_k = group_by(group[method], lambda r: int(r["k"]))
                xs = sorted(by_k)
                ys = [mean_of(r["auroc"] for r in by_k[k]) for k in xs]
                sds = [mean_of(r.get("auroc_sd") for r in by_k[k]) for k in xs]
                style = line_style(method, colours)
                ax.plot(xs, ys, marker="o", markersize=3.5, label=method, **style)
                if all(s is not None for s in sds):
                    ax.fill_between(
                        xs,
                        [y - s for y, s in zip(ys, sds, strict=True)],
                        [y + s for y, s in zip(ys, sds, strict=True)],
                        color=style["color"],
                        alpha=0.12,
                        linewidth=0,
                        zorder=style["zorder"] - 1,
                    )
            ax.axhline(0.5, label="chance (AUROC 0.5)", **CHANCE_STYLE)
            ax.set_xscale("log", base=2)
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.minorticks_off()
            ax.set_xlabel("k: labelled subjects per class (log₂ scale)")
            ax.set_ylabel("test AUROC")
            ax.set_title(name)
        legend_below(fig, *unique_legend(axes, legend_order(results)))
        return fig

    svg = draw_svg(key, title, draw)
    caption = (
        "Test AUROC of a linear probe trained on k labelled subjects per class (raw "
        "embeddings), one panel per task, mean over draws and seeds; the band is ± the "
        "standard deviation over draws. The dashed grey line is chance (0.5). Supervised "
        "pretraining saw the labels and is left out."
    )
    return Plot(key, title, caption, svg=svg)


def robustness(results: Mapping[str, Any], colours: Mapping[str, str]) -> Plot:
    key, title = "robustness", "Robustness curves"
    ablations = set(results["config"]["ablations"])
    recs = [
        r
        for r in results.get("robustness") or ()
        if r["method"] not in ablations and finite(r["auroc_drop"]) and finite(r["level"])
    ]
    if not recs:
        return Plot(key, title, "", skipped="results.json has no robustness records.")
    perts = list(dict.fromkeys(r["perturbation"] for r in recs))
    ncols = len(perts)

    def draw() -> Any:
        fig, axes = new_figure(ncols, 3.9 * ncols + 0.8, 4.0)
        for ax, pert in zip(axes, perts, strict=True):
            group = group_by([r for r in recs if r["perturbation"] == pert], lambda r: r["method"])
            for method in draw_order(ordered_methods(results, group)):
                by_level = group_by(group[method], lambda r: float(r["level"]))
                xs = [0.0, *sorted(by_level)]
                ys = [0.0, *(mean_of(r["auroc_drop"] for r in by_level[x]) for x in xs[1:])]
                ax.plot(
                    xs, ys, marker="o", markersize=3.5, label=method, **line_style(method, colours)
                )
            ax.axhline(0.0, label="no drop (clean)", **CHANCE_STYLE)
            ax.set_xlabel(_PERTURBATION_AXIS.get(pert, "perturbation level"))
            ax.set_ylabel("AUROC drop (clean − perturbed)")
            ax.set_title(pert.replace("_", " "))
        legend_below(fig, *unique_legend(axes, legend_order(results)))
        return fig

    svg = draw_svg(key, title, draw)
    caption = (
        "Drop in test AUROC when the held-out records are perturbed at test time (probe "
        "fitted on clean data), one panel per perturbation, macro over tasks and mean over "
        "seeds; level 0 is the clean data. Higher is worse; the dashed grey line is no drop."
    )
    return Plot(key, title, caption, svg=svg)
