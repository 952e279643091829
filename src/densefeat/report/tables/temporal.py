"""The temporal-stability table: subspace distance between adjacent time windows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..format import fmt, num
from ..model import NA, Cell, Row, Table
from ..records import group_by, mean_of, ordered_methods, row_kind

__all__ = ["temporal_table"]


def temporal_table(results: Mapping[str, Any]) -> Table:
    recs = list(results.get("temporal") or ())
    windows = sorted({r["window"] for r in recs})
    labels = {}
    for r in recs:
        labels.setdefault(r["window"], str(r.get("label") or f"window {r['window']}"))
    groups = group_by(recs, lambda r: (r["method"], r["window"]))
    rows = []
    for method in ordered_methods(results, (r["method"] for r in recs)):
        cells = [Cell(method)]
        for w in windows:
            g = groups.get((method, w), [])
            dist = mean_of(r["subspace_distance"] for r in g)
            floor = mean_of(r["floor"] for r in g)
            if dist is None:
                cells.append(Cell(NA, "window not measured"))
            elif floor is None:
                cells.append(Cell(num(dist, "dist")))
            else:
                cells.append(Cell(f"{num(dist, 'dist')} (floor {num(floor, 'dist')})"))
        rows.append(Row(tuple(cells), method=method, kind=row_kind(results, method)))
    by_window = group_by(recs, lambda r: r["window"])
    foot = ()
    if recs:
        chance_cells = [Cell("chance √(1 − k/n)")]
        for w in windows:
            chance_cells.append(fmt(mean_of(r["chance"] for r in by_window[w]), "dist"))
        foot = (Row(tuple(chance_cells), kind="reference"),)
    return Table(
        "temporal",
        "Temporal stability",
        "Subspace distance between the embeddings of the same held-out subjects at adjacent "
        "time windows (lower is more stable), mean over seeds; in brackets the no-drift floor "
        "(the same window split in two halves). The last row is the chance level of two random "
        "subspaces.",
        ("method", *(labels[w] for w in windows)),
        tuple(rows),
        foot,
        empty=None if recs else "results.json has no temporal records.",
    )
