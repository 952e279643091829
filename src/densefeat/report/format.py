"""How numbers and methods look in the report: rounding, CIs, signed values, colours.

Rounding (one rule per quantity, used everywhere): effective ranks 1 decimal; condition numbers 3
significant digits (whole numbers from 1,000 to 1e6); AUROC, AUPRC, subspace distances, CKA and
AUROC drops 3 decimals; a standard deviation has the decimals of its value; a prevalence is a
percentage with 1 decimal (2 below 1%). A value that rounds to zero is printed without a sign
(``0.000``, never ``-0.000``). A value that does not
exist (``null``, or a non-finite number that should not be in the file) is printed as ``—``
with its reason as a note where one is known; ``NaN`` is never printed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .model import NA, Cell
from .records import finite

__all__ = [
    "DENSE_COLOUR",
    "PALETTE",
    "ci_text",
    "count_of",
    "fmt",
    "method_colours",
    "num",
    "signed",
]


_DECIMALS = {"rank": 1, "auroc": 3, "auprc": 3, "dist": 3, "cka": 3, "drop": 3, "angle": 1}


#: Highlight colour of the method under test; the others take PALETTE in order.
DENSE_COLOUR = "#d62728"


PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
    "#3182bd",
    "#e6550d",
    "#31a354",
    "#756bb1",
)


def _unsigned_zero(text: str) -> str:
    """``-0.000`` -> ``0.000`` (and ``+0.000``): a value that rounds to zero has no sign."""
    if text[:1] in "+-" and not any(c in "123456789" for c in text.partition("e")[0]):
        return text[1:]
    return text


def num(value: float, kind: str) -> str:
    """``value`` as text by the rounding rule of ``kind`` (see :func:`fmt`)."""
    return _unsigned_zero(_num(value, kind))


def _num(value: float, kind: str) -> str:
    if kind == "cond":
        if 1e3 <= abs(value) < 1e6:
            return f"{value:,.0f}"
        text = f"{value:#.3g}"  # keeps trailing zeros: 1.90, 14.7, 123., 1.20e+18
        mant, _, exp = text.partition("e")
        mant = mant.rstrip(".")
        return f"{mant}e{int(exp)}" if exp else mant
    if kind == "int":
        return f"{round(value):,}"
    if kind == "pct":
        return f"{100 * value:.{2 if 0 < abs(value) < 0.01 else 1}f}%"
    return f"{value:.{_DECIMALS[kind]}f}"


def fmt(
    value: Any,
    kind: str,
    *,
    sd: Any = None,
    reason: str | None = None,
) -> Cell:
    """Format one number as a :class:`Cell`.

    Args:
        value: the number, or ``None``.
        kind: ``"rank"`` (1 decimal), ``"cond"`` (3 significant digits), ``"auroc"``,
            ``"auprc"``, ``"dist"``, ``"cka"``, ``"drop"`` (3 decimals), ``"angle"`` (1 decimal),
            ``"int"``, ``"pct"``.
        sd: optional standard deviation, printed as ``± sd`` with the value's decimals.
        reason: why the value is missing, used when ``value`` is ``None`` (a non-finite
            number gets a note saying so instead).

    Returns:
        the cell; a missing value is ``—`` with ``reason`` (or a generic one for a non-finite
        number) as its note.
    """
    if value is None:
        return Cell(NA, reason)
    if not finite(value):
        what = "infinite" if isinstance(value, float) and math.isinf(value) else "not a number"
        return Cell(NA, f"{what} in results.json, where the schema wants null")
    text = num(value, kind)
    if finite(sd):
        text += f" ± {num(sd, 'rank' if kind == 'cond' else kind)}"
    return Cell(text)


def signed(value: float) -> str:
    """A difference with its sign, 3 decimals (``+0.012``, ``-0.005``; ``0.000`` unsigned)."""
    return _unsigned_zero(f"{value:+.3f}")


def count_of(positives: Any, rows: Any) -> Cell:
    """``positives / rows`` (e.g. ``47 / 616``), or ``—`` when either is unknown."""
    if not (finite(positives) and finite(rows)):
        return Cell(NA, "results.json does not give the held-out positives and rows")
    return Cell(f"{num(positives, 'int')} / {num(rows, 'int')}")


def ci_text(ci: Sequence[float] | None, kind: str = "auroc") -> str:
    """``[lo, hi]`` with the rounding of ``kind``; empty when there is no (finite) CI."""
    if ci is None or len(ci) != 2 or not all(finite(v) for v in ci):
        return ""
    return f"[{num(ci[0], kind)}, {num(ci[1], kind)}]"


def method_colours(results: Mapping[str, Any]) -> dict[str, str]:
    """One colour per method name, the same in every plot and table swatch.

    ``dense`` is always red; the others take a fixed palette in the order methods, ablations,
    then any other name found in the records (e.g. ``count_features``).
    """
    names: list[str] = []
    for name in [*results["config"]["methods"], *results["config"]["ablations"]]:
        if name not in names:
            names.append(name)
    for section in ("geometry", "training_curves", "probes", "robustness", "temporal", "alignment"):
        for rec in results.get(section) or ():
            if rec.get("method") not in names:
                names.append(rec["method"])
    colours: dict[str, str] = {}
    i = 0
    for name in names:
        if name == "dense":
            colours[name] = DENSE_COLOUR
        else:
            colours[name] = PALETTE[i % len(PALETTE)]
            i += 1
    return colours
