"""The report's plots, drawn with matplotlib and returned as inline SVG text.

Every plot uses the same colour per method (:func:`~densefeat.report.format.method_colours`;
``dense`` red and drawn thicker, on top), a legend below the panels so it never covers data, and
labelled log axes. Ablations are left to the tables, so the curves stay readable. A plot whose
section is empty in ``results.json`` is not drawn: its :class:`Plot` carries ``skipped`` (why)
instead of ``svg``, and the page says so. :mod:`.figure` holds the drawing shared by all plots,
:mod:`.spectra` the eigenspectra and training curves, :mod:`.probes` the k-shot and robustness
curves, :mod:`.temporal` the temporal summary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .figure import Plot
from .probes import kshot, robustness
from .spectra import eigenspectra, training
from .temporal import temporal

__all__ = ["Plot", "make_plots"]


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
        for builder in (eigenspectra, training, kshot, robustness, temporal)
    ]
