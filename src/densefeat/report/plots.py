"""The report's plots, drawn with matplotlib and returned as inline SVG text.

Every plot uses the same colour per method (:func:`~densefeat.report.format.method_colours`;
``dense`` red and drawn thicker, on top), a legend below the panels so it never covers data, and
labelled log axes. Ablations are left to the tables, so the curves stay readable. A plot whose
section is empty in ``results.json`` is not drawn: its :class:`Plot` carries ``skipped`` (why)
instead of ``svg``, and the page says so.

matplotlib is imported lazily, never through pyplot: figures are built on
``matplotlib.figure.Figure`` with an Agg canvas and saved with the SVG backend inside an
``rc_context``, so rendering neither changes the caller's backend nor its rcParams. Text is
drawn as paths, so the page looks the same whatever fonts the viewer has.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .format import method_colours
from .records import finite, group_by, mean_of, ordered_methods, reference_for

__all__ = ["Plot", "make_plots"]

_RC = {
    "font.size": 9.5,
    "axes.titlesize": 10,
    "axes.labelsize": 9.5,
    "legend.fontsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "svg.fonttype": "path",
}
_REF_STYLE = {"color": "black", "linestyle": (0, (5, 3)), "linewidth": 1.3}
_CHANCE_STYLE = {"color": "0.45", "linestyle": (0, (5, 3)), "linewidth": 1.2}
_PERTURBATION_AXIS = {
    "event_dropout": "fraction of events dropped",
    "code_noise": "fraction of codes replaced",
    "token_dropout": "fraction of tokens dropped",
    "sentence_dropout": "fraction of sentences dropped",
    "time_jitter": "time jitter (days)",
}


@dataclass(frozen=True)
class Plot:
    """One figure of the report.

    Attributes:
        key: a stable identifier (used for the HTML ``id``).
        title: a short title.
        caption: what is plotted and what the reference lines are.
        svg: the inline SVG (no XML prolog, ids prefixed by ``key``), or ``None``.
        skipped: why the plot was not drawn, when ``svg`` is ``None``.
    """

    key: str
    title: str
    caption: str
    svg: str | None = None
    skipped: str | None = None


def _matplotlib() -> Any:
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - the eval extra is installed in tests
        raise ImportError(
            "the report's plots need matplotlib: pip install 'densefeat[eval]'"
        ) from err
    return matplotlib, Figure, FigureCanvasAgg


def _style(method: str, colours: Mapping[str, str]) -> dict[str, Any]:
    dense = method == "dense"
    return {
        "color": colours.get(method, "0.3"),
        "linewidth": 2.6 if dense else 1.5,
        "zorder": 10 if dense else 3,
        "alpha": 1.0 if dense else 0.9,
    }


def _order(results: Mapping[str, Any]) -> list[str]:
    """Report order of every method name (legend order)."""
    return list(method_colours(results))


def _plot_order(methods: Sequence[str]) -> list[str]:
    """Draw dense last (on top); the legend keeps the report order."""
    return [m for m in methods if m != "dense"] + [m for m in methods if m == "dense"]


def _svg(fig: Any, key: str, label: str) -> str:
    buf = io.StringIO()
    # bbox "tight" grows the canvas to hold the legend below the panels, whatever its width.
    fig.savefig(
        buf,
        format="svg",
        bbox_inches="tight",
        pad_inches=0.08,
        metadata={"Date": None, "Creator": None},
    )
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    # Several SVGs share one HTML document: make every id (clip paths, glyphs) unique.
    text = re.sub(r'\bid="([^"]+)"', rf'id="{key}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{key}-\1)", text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{key}-\1"', text)
    # Scale with the page: drop the fixed size, keep the viewBox (aspect ratio).
    head_end = text.index(">")
    head = re.sub(r'\s(width|height)="[^"]*"', "", text[:head_end])
    label = label.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    head += f' class="plot" role="img" aria-label="{label}"'
    return head + text[head_end:]


def _figure(ncols: int, width: float, height: float) -> tuple[Any, list[Any]]:
    _, Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _legend(fig: Any, handles: list[Any], labels: list[str]) -> None:
    """One legend below all panels, in balanced rows that fit the figure's width."""
    if not handles:
        return
    typical = (max(map(len, labels)) + sum(map(len, labels)) / len(labels)) / 2
    max_cols = max(1, int(fig.get_figwidth() / (0.8 + 0.07 * typical)))
    rows = math.ceil(len(labels) / max_cols)
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=math.ceil(len(labels) / rows),
        frameon=False,
        handlelength=2.6,
        columnspacing=1.6,
    )


def _unique_legend(axes: Iterable[Any], order: Sequence[str] = ()) -> tuple[list[Any], list[str]]:
    """Legend entries of ``axes``, one per label: methods in ``order``, then the rest."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if not lab.startswith("_"):
                entries.setdefault(lab, h)
    rank = {name: i for i, name in enumerate(order)}
    labels = sorted(entries, key=lambda lab: rank.get(lab, len(rank)))
    return [entries[lab] for lab in labels], labels


def _log_ticks(axis: Any) -> None:
    """Plain-number ticks (1, 2, 5, 10, 20, ...) on a log axis."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _draw_svg(key: str, title: str, draw: Callable[[], Any]) -> str:
    """Run ``draw`` (which returns a Figure) under the report's rcParams; return its SVG."""
    matplotlib, _, _ = _matplotlib()
    with matplotlib.rc_context(_RC | {"svg.hashsalt": key}):
        return _svg(draw(), key, title)


# --------------------------------------------------------------------------- eigenspectra
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


def _eigenspectra(results: Mapping[str, Any], colours: Mapping[str, str]) -> Plot:
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
        fig, axes = _figure(len(outputs), 5.2 * len(outputs) + 0.6, 4.4)
        for ax, output in zip(axes, outputs, strict=True):
            group = group_by([r for r in recs if r["output"] == output], lambda r: r["method"])
            order = ordered_methods(results, group)
            top, low = 0.0, math.inf
            for method in _plot_order(order):
                p = _mean_spectrum(group[method])
                xs = [i + 1 for i, v in enumerate(p) if v > 0]
                ys = [v for v in p if v > 0]
                if not ys:
                    continue
                top, low = max(top, max(ys)), min(low, min(ys))
                clipped |= len(ys) < len(p)
                ax.plot(xs, ys, label=method, **_style(method, colours))
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
                    **_REF_STYLE,
                )
                top, low = max(top, max(p)), min(low, min(p))
            ax.set_xscale("log")
            ax.set_yscale("log")
            _log_ticks(ax.xaxis)
            if top > 0 and low < top * floor_ratio:
                clipped = True
                low = top * floor_ratio
            if top > 0:
                ax.set_ylim(low / 1.6, top * 1.6)
            shape_text = ", ".join(f"n={n}, d={d}" for n, d in shapes)
            ax.set_title(f"{output} output ({shape_text})")
            ax.set_xlabel("rank i (log scale)")
            ax.set_ylabel("eigenvalue λᵢ / Σλ (log scale)")
        _legend(fig, *_unique_legend(axes, _order(results)))
        return fig

    svg = _draw_svg(key, title, draw)
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


# --------------------------------------------------------------------------- training curves
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
    from ..functional import isotropic_reference  # torch: only when needed

    value = float(isotropic_reference(n, d)["effective_rank"])
    return value, f"n={n}, d={d}", True


def _training(results: Mapping[str, Any], colours: Mapping[str, str]) -> Plot:
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

    def draw() -> Any:
        fig, (ax,) = _figure(1, 7.6, 4.4)
        group = group_by(recs, lambda r: r["method"])
        for method in _plot_order(ordered_methods(results, group)):
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
                    **_style(method, colours),
                )
        if ref is not None:
            ax.axhline(ref[0], label=f"isotropic Gaussian ({ref[1]})", zorder=11, **_REF_STYLE)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("effective rank (monitoring batch)")
        ax.set_ylim(bottom=0)
        _legend(fig, *_unique_legend([ax], _order(results)))
        return fig

    svg = _draw_svg(key, title, draw)
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
    return Plot(key, title, caption, svg=svg)


# --------------------------------------------------------------------------- k-shot
def _kshot(results: Mapping[str, Any], colours: Mapping[str, str]) -> Plot:
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
        fig, axes = _figure(len(panels), 4.6 * len(panels) + 0.8, 4.2)
        for ax, (name, prec) in zip(axes, panels, strict=True):
            group = group_by(prec, lambda r: r["method"])
            for method in _plot_order(ordered_methods(results, group)):
                by_k = group_by(group[method], lambda r: int(r["k"]))
                xs = sorted(by_k)
                ys = [mean_of(r["auroc"] for r in by_k[k]) for k in xs]
                sds = [mean_of(r.get("auroc_sd") for r in by_k[k]) for k in xs]
                style = _style(method, colours)
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
            ax.axhline(0.5, label="chance (AUROC 0.5)", **_CHANCE_STYLE)
            ax.set_xscale("log", base=2)
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.minorticks_off()
            ax.set_xlabel("k: labelled subjects per class (log₂ scale)")
            ax.set_ylabel("test AUROC")
            ax.set_title(name)
        _legend(fig, *_unique_legend(axes, _order(results)))
        return fig

    svg = _draw_svg(key, title, draw)
    caption = (
        "Test AUROC of a linear probe trained on k labelled subjects per class (raw "
        "embeddings), one panel per task, mean over draws and seeds; the band is ± the "
        "standard deviation over draws. The dashed grey line is chance (0.5). Supervised "
        "pretraining saw the labels and is left out."
    )
    return Plot(key, title, caption, svg=svg)


# --------------------------------------------------------------------------- robustness
def _robustness(results: Mapping[str, Any], colours: Mapping[str, str]) -> Plot:
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
        fig, axes = _figure(ncols, 3.9 * ncols + 0.8, 4.0)
        for ax, pert in zip(axes, perts, strict=True):
            group = group_by([r for r in recs if r["perturbation"] == pert], lambda r: r["method"])
            for method in _plot_order(ordered_methods(results, group)):
                by_level = group_by(group[method], lambda r: float(r["level"]))
                xs = [0.0, *sorted(by_level)]
                ys = [0.0, *(mean_of(r["auroc_drop"] for r in by_level[x]) for x in xs[1:])]
                ax.plot(xs, ys, marker="o", markersize=3.5, label=method, **_style(method, colours))
            ax.axhline(0.0, label="no drop (clean)", **_CHANCE_STYLE)
            ax.set_xlabel(_PERTURBATION_AXIS.get(pert, "perturbation level"))
            ax.set_ylabel("AUROC drop (clean − perturbed)")
            ax.set_title(pert.replace("_", " "))
        _legend(fig, *_unique_legend(axes, _order(results)))
        return fig

    svg = _draw_svg(key, title, draw)
    caption = (
        "Drop in test AUROC when the held-out records are perturbed at test time (probe "
        "fitted on clean data), one panel per perturbation, macro over tasks and mean over "
        "seeds; level 0 is the clean data. Higher is worse; the dashed grey line is no drop."
    )
    return Plot(key, title, caption, svg=svg)


# --------------------------------------------------------------------------- temporal
def _temporal(results: Mapping[str, Any], colours: Mapping[str, str]) -> Plot:
    key, title = "temporal", "Temporal subspace distance"
    ablations = set(results["config"]["ablations"])
    recs = [
        r
        for r in results.get("temporal") or ()
        if r["method"] not in ablations and finite(r["subspace_distance"])
    ]
    if not recs:
        return Plot(key, title, "", skipped="results.json has no temporal records.")
    windows = sorted({r["window"] for r in recs})
    labels = {}
    for r in recs:
        labels.setdefault(r["window"], str(r.get("label") or r["window"]))
    k = results["config"].get("k")

    def draw() -> Any:
        from matplotlib.lines import Line2D

        fig, (ax,) = _figure(1, 7.6, 4.4)
        group = group_by(recs, lambda r: r["method"])
        for method in _plot_order(ordered_methods(results, group)):
            by_w = group_by(group[method], lambda r: r["window"])
            xs = sorted(by_w)
            style = _style(method, colours)
            ys = [mean_of(r["subspace_distance"] for r in by_w[w]) for w in xs]
            ax.plot(xs, ys, marker="o", markersize=4, label=method, **style)
            floor = [mean_of(r["floor"] for r in by_w[w]) for w in xs]
            pts = [(x, f) for x, f in zip(xs, floor, strict=True) if f is not None]
            if pts:
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    color=style["color"],
                    linestyle=(0, (1, 2)),
                    linewidth=1.2,
                    zorder=style["zorder"],
                )
        by_w = group_by(recs, lambda r: r["window"])
        chance = [mean_of(r["chance"] for r in by_w[w]) for w in windows]
        pts = [(w, c) for w, c in zip(windows, chance, strict=True) if c is not None]
        if pts:
            chance_label = "chance √(1 − k/n)" + (f", k={k}" if finite(k) else "")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=chance_label, **_REF_STYLE)
        # At most ~12 labelled ticks: dozens of yearly (or 12-hourly) windows would overlap.
        step = max(1, -(-len(windows) // 12))
        shown = windows[::step]
        ax.set_xticks(shown, [labels[w] for w in shown])
        ax.set_xlim(windows[0] - 0.35, windows[-1] + 0.35)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("adjacent time windows")
        ax.set_ylabel("subspace distance (0 = same, 1 = orthogonal)")
        handles, names = _unique_legend([ax], _order(results))
        handles.append(Line2D([], [], color="0.3", linestyle=(0, (1, 2)), linewidth=1.2))
        names.append("no-drift floor (dotted, per method)")
        _legend(fig, handles, names)
        return fig

    svg = _draw_svg(key, title, draw)
    caption = (
        "Sample-space subspace distance between the embeddings of the same held-out subjects "
        "at adjacent time windows (lower is more stable), mean over seeds. Dotted lines in "
        "each method's colour: its no-drift floor (the same window split in two halves); "
        "dashed black line: the chance level of two random subspaces."
    )
    return Plot(key, title, caption, svg=svg)


def make_plots(results: Mapping[str, Any], colours: Mapping[str, str]) -> list[Plot]:
    """Draw every plot of the report (validated ``results``; see :mod:`.schema`).

    Args:
        results: the ``results.json`` object, already checked by
            :func:`~densefeat.report.schema.validate`.
        colours: method name -> colour, shared with the tables.

    Returns:
        eigenspectra, effective rank during training, k-shot, robustness and temporal plots, in
        that order; an empty section gives a :class:`Plot` with ``skipped`` set.
    """
    return [
        builder(results, colours)
        for builder in (_eigenspectra, _training, _kshot, _robustness, _temporal)
    ]
