"""Wide tables split into parts that fit the page: at most :data:`MAX_COLUMNS` columns and
about :data:`MAX_WIDTH_PX` pixels each, every part repeating the row's leading columns.

The width is estimated from the text (the HTML table's cells do not wrap; its headers wrap at
spaces and underscores), so the same split is made in ``results.md`` and ``report.html``.
"""

from __future__ import annotations

from dataclasses import replace

from .model import Row, Table

__all__ = ["MAX_COLUMNS", "MAX_WIDTH_PX", "fit", "fit_all"]

#: Most columns of one table (a reader compares across a row; more is a wall of numbers).
MAX_COLUMNS = 12
#: Width a table may take: report.html's content column (1,240 px less padding), with a margin.
MAX_WIDTH_PX = 1120
#: Estimated px per character of a cell (13.5 px tabular figures) and per cell of padding.
_PX_PER_CHAR = 7.6
_PAD_PX = 22
_SWATCH_PX = 17
#: A header wraps; its width is that of its longest piece, at most this many characters.
_HEADER_CHARS = 14


def _column_px(table: Table, j: int) -> float:
    cells = [row.cells[j] for row in (*table.rows, *table.foot) if j < len(row.cells)]
    chars = max([len(c.text) + (2 if c.note else 0) for c in cells] or [0])
    head = max(
        (len(w) for w in table.header[j].replace("_", " ").split()),
        default=0,
    )
    px = max(chars, min(head, _HEADER_CHARS)) * _PX_PER_CHAR + _PAD_PX
    if j == 0 and any(row.method for row in table.rows):
        px += _SWATCH_PX
    return px


def fit(table: Table) -> tuple[Table, ...]:
    """``table`` as is when it fits, else split by columns into parts that do.

    Parts are titled "title (columns a-b of n)", keyed ``key``, ``key-2``, ...; later parts are
    left out of the page's navigation. A table with no data is never split.
    """
    n = len(table.header)
    lead = table.leading
    if table.empty or n <= lead + 1:
        return (table,)
    widths = [_column_px(table, j) for j in range(n)]
    lead_px = sum(widths[:lead])
    if n <= MAX_COLUMNS and sum(widths) <= MAX_WIDTH_PX:
        return (table,)
    groups: list[list[int]] = [[]]
    used = lead_px
    for j in range(lead, n):
        if groups[-1] and (
            len(groups[-1]) + lead >= MAX_COLUMNS or used + widths[j] > MAX_WIDTH_PX
        ):
            groups.append([])
            used = lead_px
        groups[-1].append(j)
        used += widths[j]
    if len(groups) == 1:
        return (table,)
    data = n - lead
    parts = []
    for i, cols in enumerate(groups):
        keep = [*range(lead), *cols]

        def pick(rows: tuple[Row, ...], keep: list[int] = keep) -> tuple[Row, ...]:
            return tuple(replace(r, cells=tuple(r.cells[j] for j in keep)) for r in rows)

        span = f"columns {cols[0] - lead + 1}–{cols[-1] - lead + 1} of {data}"
        parts.append(
            replace(
                table,
                key=table.key if i == 0 else f"{table.key}-{i + 1}",
                title=f"{table.title} ({span})",
                caption=table.caption
                if i == 0
                else "The same rows as the part above, more columns.",
                header=tuple(table.header[j] for j in keep),
                rows=pick(table.rows),
                foot=pick(table.foot),
                nav=i == 0,
            )
        )
    return tuple(parts)


def fit_all(tables: tuple[Table, ...]) -> tuple[Table, ...]:
    """Every table of ``tables`` fitted to the page (see :func:`fit`), in order."""
    return tuple(part for table in tables for part in fit(table))
