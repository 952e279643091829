"""Temporal stability at three subspace dimensions: the fixed k, k = round(effective rank) and
the whole space (canonical-correlation form), each with its no-drift floor and chance level
(docs/design.md §3.3: a fixed k penalises the spread dense learning seeks, so no reader may
conclude "less stable" from the fixed-k number alone)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from ..format import num
from ..model import NA, Cell, Row, Table
from ..records import group_by, ordered_methods, row_kind, window_means

__all__ = ["temporal_k_table"]

#: Column -> the record keys of its distance, floor, chance and k.
_FORMS = {
    "fixed": ("subspace_distance", "floor", "chance", "k"),
    "erank": ("subspace_distance_erank", "floor_erank", "chance_erank", "k_erank"),
    "whole": ("subspace_distance_whole", "floor_whole", "chance_whole", "k_whole"),
}


def _cell(recs: list[Mapping[str, Any]], form: str) -> Cell:
    dist_key, floor_key, chance_key, k_key = _FORMS[form]
    dist = window_means(recs, dist_key)
    if not dist:
        reason = next((str(r["whole_reason"]) for r in recs if r.get("whole_reason")), None)
        return Cell(NA, reason or "not recorded (results of an older densefeat)")
    floor, chance, ks = (window_means(recs, key) for key in (floor_key, chance_key, k_key))
    med = statistics.median(dist.values())
    parts = [num(med, "dist")]
    if floor:
        parts.append(f"floor {num(statistics.median(floor.values()), 'dist')}")
    if chance:
        parts.append(f"chance {num(statistics.median(chance.values()), 'dist')}")
    k = statistics.median(ks.values()) if ks else None
    k_text = f"k {k:g}; " if k is not None else ""
    return Cell(f"{parts[0]} ({k_text}{'; '.join(parts[1:])})")


def temporal_k_table(results: Mapping[str, Any]) -> Table:
    """Per method: median over the measured windows (mean over seeds first) of the temporal
    subspace distance at each of the three k, with the median floor and chance beside it."""
    recs = list(results.get("temporal") or ())
    groups = group_by(recs, lambda r: r["method"])
    rows = []
    for method in ordered_methods(results, groups):
        cells = (Cell(method), *(_cell(groups[method], form) for form in _FORMS))
        rows.append(Row(cells, method=method, kind=row_kind(results, method)))
    k = results["config"].get("k")
    clipped = sorted({(r["window"], r["n"], r["k"]) for r in recs if r.get("k_note")})
    clip_note = (
        f" Windows with fewer than 4k subjects are scored at k = floor(n / 4) (floor and "
        f"chance at that k): {len(clipped)} window(s), k "
        f"{min(c[2] for c in clipped)}–{max(c[2] for c in clipped)} instead of {k}."
        if clipped
        else ""
    )
    return Table(
        "temporal-k",
        "Temporal stability at three subspace dimensions",
        f"Median over the measured windows of the temporal subspace distance (lower is more "
        f"stable), in brackets the k used and the median no-drift floor and chance level at "
        f"that k. k = {k}: the fixed k of every subspace distance; k = round(effective rank): "
        "the effective rank of the earlier window's embedding, so an embedding that spreads "
        "its variance over many directions is not judged on an arbitrary top-k of near-tied "
        "eigenvalues; whole space: k = d, where the distance is sqrt(1 − mean squared "
        "canonical correlation), invariant to whitening (undefined when d ≥ n − 1). Compare a "
        "distance with its own floor and chance, never across columns." + clip_note,
        ("method", f"k = {k}", "k = round(effective rank)", "whole space (k = d)"),
        tuple(rows),
        empty=None if rows else "results.json has no temporal records.",
    )
