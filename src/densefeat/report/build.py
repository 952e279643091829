"""``build_report``: validate a ``results.json`` object and assemble the :class:`Report`.

The one place that decides what the report holds and in which order; the sentences come from
:mod:`.prose`, the tables from :mod:`.tables` (split to fit the page by :mod:`.layout`), the
colours from :mod:`.format`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .format import method_colours
from .layout import fit_all
from .model import Report
from .prose import DEFINITIONS, banner, endpoint_sentences, header_facts
from .schema import validate
from .tables import (
    alignment_table,
    comparison_table,
    geometry_table,
    kshot_tables,
    probe_tables,
    robustness_tables,
    tasks_table,
    temporal_tables,
    tuning_table,
)
from .tables.crossmodal import crossmodal_paired_table, crossmodal_table
from .tables.external import external_table
from .tables.robustness_auroc import robustness_auroc_table
from .tables.temporal_k import temporal_k_table

__all__ = ["build_report"]


def build_report(results: Mapping[str, Any]) -> Report:
    """Validate ``results`` and build the format-neutral :class:`Report`.

    Args:
        results: the ``results.json`` object of ``densefeat benchmark``.

    Returns:
        the report content: header facts, endpoint sentences, tables, method colours.

    Raises:
        ValueError: see :func:`~densefeat.report.schema.validate`.
    """
    validate(results)
    tables = (
        *((tuning_table(results),) if results.get("tuning") else ()),
        tasks_table(results),
        *probe_tables(results),
        *kshot_tables(results),
        *((external_table(results),) if results.get("external") else ()),
        robustness_auroc_table(results),
        *robustness_tables(results),
        *temporal_tables(results),
        temporal_k_table(results),
        alignment_table(results),
        *(
            (crossmodal_table(results),)
            if any(r.get("kind") == "modalities" for r in results.get("alignment") or ())
            else ()
        ),
        *((crossmodal_paired_table(results),) if results.get("crossmodal_comparison") else ()),
        geometry_table(results),
    )
    scale = str(results["scale"])
    return Report(
        title="densefeat benchmark report"
        + (" (smoke scale)" if scale == "smoke" else f" ({scale} scale)"),
        scale=scale,
        scale_banner=banner(results),
        facts=header_facts(results),
        endpoints=endpoint_sentences(results),
        comparison=comparison_table(results),
        tables=fit_all(tables),
        definitions=DEFINITIONS,
        colours=method_colours(results),
    )
