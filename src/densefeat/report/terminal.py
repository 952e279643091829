"""The benchmark's terminal summary: a compact aligned table for stdout.

``densefeat benchmark`` and ``densefeat demo`` print this (and only this) on stdout, so that
``densefeat demo > summary.txt`` captures the results while the progress goes to stderr. It lays
out the same :class:`~densefeat.report.model.Report` as ``results.md`` (so the numbers and their
rounding are the report's), keeping the comparison table's main columns, the primary-endpoint
sentences and where the full report is. A missing value is ``—``; its reason is in
``results.md`` (a terminal has no footnotes to spare).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .build import build_report
from .model import NA, Table

__all__ = ["TERMINAL_COLUMNS", "terminal_summary", "text_table"]

#: The comparison table's columns the terminal keeps (header in the report -> short header with
#: the better direction: ↑ higher is better, ↓ lower; geometry has no "better", only "more
#: isotropic", said in the legend). A header the table does not have is skipped.
TERMINAL_COLUMNS = {
    "method": "method",
    "seeds": "seeds",
    "effective rank": "eff. rank",
    "condition number": "cond.",
    "temporal subspace distance": "temporal ↓",
    "probe AUROC": "AUROC ↑",
    "robustness drop": "drop ↓",
    "seed alignment (CKA)": "CKA ↑",
}

_LEGEND = (
    "↑ higher is better, ↓ lower is better. eff. rank / cond.: effective rank and condition "
    "number of the backbone embedding (higher / nearer 1 is more isotropic, not better in "
    "itself). temporal: subspace distance between adjacent time windows. AUROC: linear probe, "
    "macro over tasks. drop: clean minus perturbed AUROC. CKA: seed alignment. isotropic: an "
    "isotropic Gaussian of the same n x d (AUROC, temporal: chance; CKA: independent). "
    "— not measured (why: results.md)."
)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1) -> str:
    """Rows of strings as an aligned plain-text table (text left-, numbers right-aligned).

    Args:
        header: column titles.
        rows: cells as text, each row as long as ``header``.
        text_columns: how many leading columns hold text (left-aligned).

    Returns:
        the lines joined by newlines: the header, a rule, the rows.
    """
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if i < text_columns else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _columns(table: Table) -> list[int]:
    return [i for i, h in enumerate(table.header) if h in TERMINAL_COLUMNS]


def terminal_summary(
    results: Mapping[str, Any],
    report_dir: str | Path | None = None,
    *,
    width: int = 100,
    title: str | None = None,
) -> str:
    """The compact summary of a benchmark for the terminal.

    Args:
        results: the ``results.json`` object.
        report_dir: where ``report.html`` and ``results.md`` were written (named at the end).
        width: the column to wrap the sentences at (the table is never wrapped).
        title: the first line (default: the report's title).

    Returns:
        the text, ending in a newline: a title line, the comparison table (main columns, the
        isotropic reference rows), the primary-endpoint sentences and the report's path.
    """
    report = build_report(results)
    table = report.comparison
    keep = _columns(table)
    header = [TERMINAL_COLUMNS[table.header[i]] for i in keep]
    rows = [[row.cells[i].text for i in keep] for row in table.rows]
    for row in table.foot:  # the reference rows, their labels shortened for the terminal
        cells = [row.cells[i].text.split(" (")[0] for i in keep]
        cells[0] = row.cells[keep[0]].text.replace("isotropic Gaussian", "isotropic")
        rows.append(cells)
    dataset = (results.get("dataset") or {}).get("name")
    seconds = results.get("seconds")
    facts = [
        str(dataset) if dataset else None,
        _count(len(results.get("tasks") or ()), "task"),
        _count(len(results["config"].get("seeds") or ()), "seed"),
        f"{results['config'].get('budget_steps')} steps per run",
        f"{seconds / 60:.1f} min" if isinstance(seconds, int | float) else None,
    ]
    lines = [
        title or report.title,
        ", ".join(f for f in facts if f),
        "",
        text_table(header, rows, text_columns=1),
        "",
        *textwrap.wrap(_LEGEND, width),
        "",
        "Primary endpoints:",
    ]
    for sentence in report.endpoints:
        lines += textwrap.wrap(sentence, width, initial_indent="- ", subsequent_indent="  ")
    skipped = results.get("tasks_skipped") or ()
    if skipped:
        lines += ["", f"Skipped task{'s' if len(skipped) != 1 else ''}:"]
        for s in skipped:
            lines += textwrap.wrap(
                f"{s.get('task', NA)}: {s.get('reason') or 'no reason recorded'}",
                width,
                initial_indent="- ",
                subsequent_indent="  ",
            )
    if report_dir is not None:
        out = Path(report_dir).resolve()
        lines += [
            "",
            f"report: {out / 'report.html'}",
            "(beside it: results.md, every table as Markdown; results.json, every number)",
        ]
    return "\n".join(lines) + "\n"
