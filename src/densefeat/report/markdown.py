"""``results.md``: the report as GitHub-flavoured Markdown (tables and footnotes, no plots).

Lays out a :class:`~densefeat.report.model.Report`; every number was formatted there, so this
file prints exactly what ``report.html`` prints. A missing value is ``—`` followed by a footnote
(``[^comparison-1]``) that gives its reason, defined right under its table.
"""

from __future__ import annotations

from .model import Cell, Notes, Report, Table

__all__ = ["to_markdown"]


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


class _Notes(Notes):
    """Footnotes of one table: one number per distinct reason, in order of first use."""

    def ref(self, cell: Cell) -> str:
        text = _escape(cell.text)
        if cell.note is None:
            return text
        return f"{text}[^{self.key}-{self.number(cell.note)}]"

    def lines(self) -> list[str]:
        return [f"[^{self.key}-{i}]: {_escape(t)}" for i, t in enumerate(self.texts, 1)]


def _table(table: Table, level: str = "##") -> list[str]:
    lines = [f"{level} {table.title}", "", table.caption, ""]
    if table.empty:
        return [*lines, f"_Not available: {table.empty}_", ""]
    notes = _Notes(table.key)
    lines.append("| " + " | ".join(_escape(h) for h in table.header) + " |")
    n_text = table.text_columns
    lines.append("|" + "|".join(["---"] * n_text + ["---:"] * (len(table.header) - n_text)) + "|")
    for row in (*table.rows, *table.foot):
        cells = [notes.ref(c) for c in row.cells]
        if row.method == "dense":
            cells = [f"**{c}**" if c else c for c in cells]
        elif row.kind in ("reference", "missing"):
            cells = [f"_{c}_" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if notes.texts:
        lines += [*notes.lines(), ""]
    return lines


def to_markdown(report: Report) -> str:
    """Render ``report`` as the text of ``results.md``.

    Args:
        report: the content built by :func:`~densefeat.report.build.build_report`.

    Returns:
        the Markdown text, ending in a newline.
    """
    lines = [f"# {report.title}", "", f"> **{report.scale_banner}**", ""]
    lines += [f"- **{name}:** {_escape(value)}" for name, value in report.facts]
    lines += ["", "## Primary endpoints", ""]
    lines += [f"- {sentence}" for sentence in report.endpoints]
    lines.append("")
    lines += _table(report.comparison)
    for table in report.tables:
        lines += _table(table)
    lines += ["## Definitions", ""]
    lines += [f"- **{name}:** {text}" for name, text in report.definitions]
    lines += [
        "",
        "Plots (eigenspectra, effective rank during training, k-shot, robustness and temporal "
        "curves) are in `report.html`, rendered from the same `results.json`.",
        "",
    ]
    return "\n".join(lines)
