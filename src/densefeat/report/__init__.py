"""The benchmark report: results.md and a self-contained report.html with plots.

``render(results, out_dir)`` writes both from a ``results.json`` object alone
(docs/results-schema.md), so a report can be re-rendered without rerunning anything.
"""

from .render import render

__all__ = ["render"]
