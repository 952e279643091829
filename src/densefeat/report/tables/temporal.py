"""The temporal-stability tables: a per-method summary over windows, and the windows one by one
(transposed: a row per window, a column per method), every window left out said so."""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from ..format import fmt, num, signed
from ..model import NA, Cell, Row, Table
from ..prose import window_rule
from ..records import (
    finite,
    group_by,
    mean_of,
    ordered_methods,
    quartiles,
    row_kind,
    window_means,
)

__all__ = ["CHANCE_LABEL", "temporal_tables"]

CHANCE_LABEL = "chance √(1 − k/(n − 1))"


def _spans(values: Sequence[int]) -> str:
    """``[44, 45, 46, 50]`` -> ``"44–46, 50"``."""
    out: list[str] = []
    vals = sorted(values)
    start = prev = vals[0]
    for v in [*vals[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        out.append(str(start) if start == prev else f"{start}–{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(out)


def _labels(recs: list[Mapping[str, Any]], windows: range) -> dict[int, str]:
    labels: dict[int, str] = {}
    for r in recs:
        labels.setdefault(r["window"], str(r.get("label") or f"window {r['window']}"))
    numbered = all(re.fullmatch(r"w\d+ -> w\d+", text) for text in labels.values())
    for w in windows:
        labels.setdefault(w, f"w{w} -> w{w + 1}" if numbered else f"window {w}")
    return labels


def _summary(
    results: Mapping[str, Any], recs: list[Mapping[str, Any]], span: range, rule: str
) -> Table:
    groups = group_by(recs, lambda r: r["method"])
    rows = []
    for method in ordered_methods(results, groups):
        dist = window_means(groups[method], "subspace_distance")
        floor = window_means(groups[method], "floor")
        missing = [w for w in span if w not in dist]
        note = f"windows {_spans(missing)} not measured: {rule}" if missing else None
        count = Cell(f"{len(dist)} of {len(span)}", note)
        if not dist:
            cells = (Cell(method), count, *(Cell(NA) for _ in range(5)))
        else:
            q1, med, q3 = quartiles(list(dist.values()))
            excess = [dist[w] - floor[w] for w in dist if w in floor]
            cells = (
                Cell(method),
                count,
                Cell(num(med, "dist")),
                Cell(f"{num(q1, 'dist')}–{num(q3, 'dist')}"),
                Cell(f"{num(min(dist.values()), 'dist')}–{num(max(dist.values()), 'dist')}"),
                fmt(
                    statistics.median(floor.values()) if floor else None,
                    "dist",
                    reason="no no-drift floor recorded",
                ),
                Cell(signed(statistics.median(excess)))
                if excess
                else Cell(NA, "no no-drift floor recorded"),
            )
        rows.append(Row(cells, method=method, kind=row_kind(results, method)))
    chance = list(window_means(recs, "chance").values())
    foot = ()
    if chance:
        q1, med, q3 = quartiles(chance)
        foot = (
            Row(
                (
                    Cell(CHANCE_LABEL),
                    Cell(""),
                    Cell(num(med, "dist")),
                    Cell(f"{num(q1, 'dist')}–{num(q3, 'dist')}"),
                    Cell(f"{num(min(chance), 'dist')}–{num(max(chance), 'dist')}"),
                    Cell(""),
                    Cell(""),
                ),
                kind="reference",
            ),
        )
    first, last = span[0], span[-1]
    return Table(
        "temporal",
        "Temporal stability",
        "Subspace distance between the embeddings of the same held-out subjects at the two "
        "cut-offs of each time window (lower is more stable), mean over seeds, then summarised "
        "over the windows measured: median, interquartile range and range. No-drift floor: the "
        "same window split in two halves (the distance that event sampling and finite n alone "
        "produce); distance − floor near 0 means no measurable drift. The last row is the "
        "chance level of two random subspaces (it depends on each window's n). "
        f"results.json holds windows {first} to {last}: {rule}; a window outside that span "
        "had too few such subjects or lies beyond the held-out records. "
        "Each window is in the next table.",
        (
            "method",
            "windows measured",
            "median distance",
            "interquartile range",
            "range",
            "median no-drift floor",
            "median distance − floor",
        ),
        tuple(rows),
        foot,
        text_columns=2,
    )


def _by_window(
    results: Mapping[str, Any], recs: list[Mapping[str, Any]], span: range, rule: str
) -> Table:
    methods = ordered_methods(results, (r["method"] for r in recs))
    labels = _labels(recs, span)
    groups = group_by(recs, lambda r: (r["window"], r["method"]))
    by_window = group_by(recs, lambda r: r["window"])
    chance = window_means(recs, "chance")
    rows = []
    for w in span:
        if w not in by_window:
            cells = (
                Cell(labels[w], f"not measured: {rule}"),
                *(Cell(NA) for _ in range(2 + len(methods))),
            )
            rows.append(Row(cells, kind="missing"))
            continue
        ns = sorted({int(r["n"]) for r in by_window[w] if finite(r.get("n"))})
        n_cell = Cell(NA) if not ns else Cell(str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}")
        cells = [Cell(labels[w]), n_cell, fmt(chance.get(w), "dist")]
        for method in methods:
            g = groups.get((w, method), [])
            dist = mean_of(r["subspace_distance"] for r in g)
            floor = mean_of(r["floor"] for r in g)
            if dist is None:
                cells.append(Cell(NA, "this method has no record for the window"))
            elif floor is None:
                cells.append(Cell(num(dist, "dist")))
            else:
                cells.append(Cell(f"{num(dist, 'dist')} ({num(floor, 'dist')})"))
        rows.append(Row(tuple(cells)))
    return Table(
        "temporal-windows",
        "Temporal stability by window",
        "One row per time window: the held-out subjects measured (n), the chance level "
        "√(1 − k/(n − 1)), and per method the subspace distance between the two cut-offs, mean "
        "over seeds, with its no-drift floor in brackets. Rows in italics were not measured.",
        ("window", "subjects", "chance", *methods),
        tuple(rows),
        lead_columns=3,
    )


def temporal_tables(results: Mapping[str, Any]) -> tuple[Table, ...]:
    """The per-method summary and the per-window table (one "not available" table if empty)."""
    recs = [r for r in results.get("temporal") or () if finite(r.get("window"))]
    if not recs:
        return (
            Table(
                "temporal",
                "Temporal stability",
                "Subspace distance between the embeddings of the same held-out subjects at "
                "adjacent time windows.",
                ("method",),
                (),
                empty=str(results["config"].get("temporal_reason") or "")
                or "results.json has no temporal records.",
            ),
        )
    windows = sorted({int(r["window"]) for r in recs})
    span = range(windows[0], windows[-1] + 1)
    rule = window_rule(results)
    return _summary(results, recs, span, rule), _by_window(results, recs, span, rule)
