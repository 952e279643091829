"""The benchmark report: results.md and a self-contained report.html with plots.

``render(results, out_dir)`` writes both from a ``results.json`` object alone
(docs/results-schema.md), so a report can be re-rendered without rerunning anything.
``build_report`` validates and builds the format-neutral content, ``to_markdown`` lays it out as
``results.md``, ``validate`` only checks a results object.

Modules, imported one way (each only from those above it): ``records`` (reading records),
``model`` (Report/Table/Row/Cell), ``format`` (numbers, colours), ``schema`` (validation),
``prose`` (sentences), ``tables`` (one module per table), ``build`` (``build_report``),
``markdown``, ``plots``, ``html``, ``render``.
"""

from .build import build_report
from .markdown import to_markdown
from .render import render
from .schema import validate

__all__ = ["build_report", "render", "to_markdown", "validate"]
