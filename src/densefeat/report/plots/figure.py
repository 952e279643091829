"""What every plot shares: the :class:`Plot` record, matplotlib set-up, styles, the legend
below the panels and the SVG export.

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

from ..format import method_colours

__all__ = [
    "CHANCE_STYLE",
    "REF_STYLE",
    "Plot",
    "draw_order",
    "draw_svg",
    "legend_below",
    "legend_order",
    "line_style",
    "log_ticks",
    "new_figure",
    "unique_legend",
]


RC = {
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


REF_STYLE = {"color": "black", "linestyle": (0, (5, 3)), "linewidth": 1.3}


CHANCE_STYLE = {"color": "0.45", "linestyle": (0, (5, 3)), "linewidth": 1.2}


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


def matplotlib_modules() -> Any:
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - the eval extra is installed in tests
        raise ImportError(
            "the report's plots need matplotlib: pip install 'densefeat[eval]'"
        ) from err
    return matplotlib, Figure, FigureCanvasAgg


def line_style(method: str, colours: Mapping[str, str]) -> dict[str, Any]:
    dense = method == "dense"
    return {
        "color": colours.get(method, "0.3"),
        "linewidth": 2.6 if dense else 1.5,
        "zorder": 10 if dense else 3,
        "alpha": 1.0 if dense else 0.9,
    }


def legend_order(results: Mapping[str, Any]) -> list[str]:
    """Report order of every method name (legend order)."""
    return list(method_colours(results))


def draw_order(methods: Sequence[str]) -> list[str]:
    """Draw dense last (on top); the legend keeps the report order."""
    return [m for m in methods if m != "dense"] + [m for m in methods if m == "dense"]


def to_svg(fig: Any, key: str, label: str) -> str:
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


def new_figure(
    ncols: int, width: float, height: float, ratios: Sequence[float] | None = None
) -> tuple[Any, list[Any]]:
    _, Figure, FigureCanvasAgg = matplotlib_modules()
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    kw = {"gridspec_kw": {"width_ratios": list(ratios)}} if ratios else {}
    axes = fig.subplots(1, ncols, squeeze=False, **kw)[0]
    return fig, list(axes)


def legend_below(fig: Any, handles: list[Any], labels: list[str]) -> None:
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


def unique_legend(axes: Iterable[Any], order: Sequence[str] = ()) -> tuple[list[Any], list[str]]:
    """Legend entries of ``axes``, one per label: methods in ``order``, then the rest."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if not lab.startswith("_"):
                entries.setdefault(lab, h)
    rank = {name: i for i, name in enumerate(order)}
    labels = sorted(entries, key=lambda lab: rank.get(lab, len(rank)))
    return [entries[lab] for lab in labels], labels


def log_ticks(axis: Any) -> None:
    """Plain-number ticks (1, 2, 5, 10, 20, ...) on a log axis."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def draw_svg(key: str, title: str, draw: Callable[[], Any]) -> str:
    """Run ``draw`` (which returns a Figure) under the report's rcParams; return its SVG."""
    matplotlib, _, _ = matplotlib_modules()
    with matplotlib.rc_context(RC | {"svg.hashsalt": key}):
        return to_svg(draw(), key, title)
