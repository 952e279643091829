"""Temporal subspace distance: each method summarised over its windows (median, interquartile
range, range, no-drift floor, chance), and the windows in time order (dense against the band of
the other methods), never one line per window and method."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any

from ..prose import window_rule
from ..records import finite, group_by, ordered_methods, quartiles, window_means
from .figure import REF_STYLE, Plot, draw_svg, legend_below, line_style, new_figure

__all__ = ["temporal"]


def temporal(results: Mapping[str, Any], colours: Mapping[str, str]) -> Plot:
    key, title = "temporal", "Temporal subspace distance"
    ablations = set(results["config"]["ablations"])
    recs = [
        r
        for r in results.get("temporal") or ()
        if r["method"] not in ablations and finite(r["subspace_distance"]) and finite(r["window"])
    ]
    if not recs:
        return Plot(key, title, "", skipped="results.json has no temporal records.")
    groups = group_by(recs, lambda r: r["method"])
    methods = ordered_methods(results, groups)
    dist = {m: window_means(groups[m], "subspace_distance") for m in methods}
    floor = {m: window_means(groups[m], "floor") for m in methods}
    chance = window_means(recs, "chance")
    measured = sorted({w for d in dist.values() for w in d})
    span = list(range(measured[0], measured[-1] + 1))
    gaps = [w for w in span if w not in measured]
    focus = "dense" if "dense" in methods else None
    others = [m for m in methods if m != focus]

    def series(values: Mapping[int, float]) -> list[float]:
        return [values.get(w, math.nan) for w in span]  # NaN: a gap in the line

    def draw() -> Any:
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
        from matplotlib.ticker import MaxNLocator

        height = max(3.8, 0.36 * len(methods) + 1.9)
        fig, (left, right) = new_figure(2, 11.4, height, ratios=(1, 1.5))
        # Left: each method summarised over its windows (no line per window).
        for i, method in enumerate(methods):
            vals = list(dist[method].values())
            q1, med, q3 = quartiles(vals)
            style = line_style(method, colours)
            left.hlines(i, min(vals), max(vals), color=style["color"], linewidth=1.3)
            left.hlines(i, q1, q3, color=style["color"], linewidth=7, alpha=0.45)
            left.plot(
                med,
                i,
                "o",
                color=style["color"],
                markersize=6.5,
                markeredgecolor="white",
                zorder=style["zorder"] + 1,
            )
            if floor[method]:
                left.plot(
                    statistics.median(floor[method].values()),
                    i,
                    "D",
                    markersize=6,
                    markerfacecolor="none",
                    markeredgecolor=style["color"],
                    markeredgewidth=1.4,
                    zorder=style["zorder"] + 1,
                )
        if chance:
            c = list(chance.values())
            left.axvspan(min(c), max(c), color="0.88", zorder=0)
            left.axvline(statistics.median(c), zorder=1, **REF_STYLE)
        left.set_yticks(range(len(methods)), methods)
        left.set_ylim(len(methods) - 0.5, -0.5)
        left.set_xlim(0, 1.02)
        left.grid(axis="y", visible=False)
        left.set_xlabel("subspace distance (0 = same, 1 = orthogonal)")
        left.set_title(f"each method over its measured windows ({len(measured)})")
        # Right: the windows in time order; dense against the band of the other methods.
        if others:
            band = [[dist[m][w] for m in others if w in dist[m]] for w in span]
            lo = [min(b) if b else math.nan for b in band]
            hi = [max(b) if b else math.nan for b in band]
            mid = [statistics.median(b) if b else math.nan for b in band]
            right.fill_between(span, lo, hi, color="0.55", alpha=0.25, linewidth=0)
            right.plot(span, mid, color="0.4", linewidth=1.2)
        if focus:
            style = line_style(focus, colours)
            right.plot(span, series(dist[focus]), **style)
            right.plot(
                span,
                series(floor[focus]),
                color=style["color"],
                linestyle=(0, (1, 2)),
                linewidth=1.3,
                zorder=style["zorder"],
            )
        if chance:
            right.plot(span, series(chance), **REF_STYLE)
        for w in gaps:
            right.axvspan(
                w - 0.5,
                w + 0.5,
                facecolor="none",
                edgecolor="0.7",
                hatch="////",
                linewidth=0,
                zorder=0,
            )
        right.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
        right.set_xlim(span[0] - 0.5, span[-1] + 0.5)
        right.set_ylim(0, 1.02)
        right.set_xlabel("time window i (distance between its cut-offs i and i + 1)")
        right.set_ylabel("subspace distance")
        right.set_title("by window")
        handles: list[Any] = [
            Line2D([], [], color="0.3", marker="o", linestyle="none", markersize=6),
            Line2D([], [], color="0.3", linewidth=7, alpha=0.45),
            Line2D([], [], color="0.3", linewidth=1.3),
            Line2D([], [], color="0.3", marker="D", linestyle="none", markerfacecolor="none"),
        ]
        names = ["median over windows", "interquartile range", "range", "median no-drift floor"]
        if focus:
            style = line_style(focus, colours)
            handles += [
                Line2D([], [], **style),
                Line2D([], [], color=style["color"], linestyle=(0, (1, 2)), linewidth=1.3),
            ]
            names += [focus, f"{focus} no-drift floor"]
        if others:
            handles += [
                Line2D([], [], color="0.4", linewidth=1.2),
                Patch(color="0.55", alpha=0.25, linewidth=0),
            ]
            what = "the other methods" if focus else "all methods"
            names += [f"median of {what}", f"range of {what}"]
        if chance:
            handles.append(Line2D([], [], **REF_STYLE))
            names.append("chance √(1 − k/(n − 1))")
        if gaps:
            handles.append(Patch(facecolor="none", edgecolor="0.7", hatch="////", linewidth=0))
            names.append("window not measured")
        legend_below(fig, handles, names)
        return fig

    svg = draw_svg(key, title, draw)
    caption = (
        "Sample-space subspace distance between the embeddings of the same held-out subjects "
        "at the two cut-offs of each time window (lower is more stable), mean over seeds. Left: "
        "each method over its windows, the dot the median, the thick bar the interquartile "
        "range, the thin line the range; the hollow diamond the median no-drift floor (the same "
        "window split in two halves: what event sampling alone produces). The dashed black line "
        "is the median chance level of two random subspaces, the grey band its range over "
        "windows (it depends on each window's n). Right: the windows in time order"
        + (
            f", {focus} (with its no-drift floor dotted) against the median and range of the "
            "other methods"
            if focus and others
            else ""
        )
        + "; the dashed line is the chance level."
    )
    if gaps:
        caption += (
            f" Hatched windows ({len(gaps)}) were not measured: {window_rule(results)}; the "
            "tables list them."
        )
    return Plot(key, title, caption, svg=svg)
