"""What the report is made of, independent of its format: :class:`Report`, :class:`Table`,
:class:`Row` and :class:`Cell` (every number already formatted as text).

:mod:`densefeat.report.markdown` and :mod:`densefeat.report.html` only lay these out, so both files
always print the same numbers with the same rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["NA", "Cell", "Notes", "Report", "Row", "Table"]


#: What a missing value is printed as.
NA = "—"


@dataclass(frozen=True)
class Cell:
    """One formatted table cell.

    Attributes:
        text: what is printed (never ``nan``).
        note: why the value is missing (or a caveat); shown as a footnote and a tooltip.
    """

    text: str
    note: str | None = None


@dataclass(frozen=True)
class Row:
    """One table row; ``method`` (when the row is a method) drives colour swatches/highlight."""

    cells: tuple[Cell, ...]
    method: str | None = None
    kind: str = "method"  # "method" | "ablation" | "reference" | "missing" (not measured)


@dataclass(frozen=True)
class Table:
    """A titled table with a caption saying what each number is and how it was aggregated."""

    key: str
    title: str
    caption: str
    header: tuple[str, ...]
    rows: tuple[Row, ...]
    foot: tuple[Row, ...] = ()
    empty: str | None = None  # set when the section has no data: why
    text_columns: int = 1  # leading columns that hold text (left-aligned), the rest numbers
    lead_columns: int | None = None  # repeated in each part of a split table (text_columns)
    nav: bool = True  # listed in the page's navigation (False: a later part of a split table)

    @property
    def leading(self) -> int:
        """How many leading columns identify a row (repeated when the table is split)."""
        return self.text_columns if self.lead_columns is None else self.lead_columns


@dataclass(frozen=True)
class Report:
    """Everything both report files print."""

    title: str
    scale: str
    scale_banner: str
    facts: tuple[tuple[str, str], ...]
    endpoints: tuple[str, ...]
    comparison: Table
    tables: tuple[Table, ...]
    definitions: tuple[tuple[str, str], ...]
    colours: Mapping[str, str] = field(default_factory=dict)


class Notes:
    """Numbered notes of one table: one number per distinct text, in order of first use."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.texts: list[str] = []

    def number(self, note: str) -> int:
        """The note's number (1-based), giving it the next one on first use."""
        if note not in self.texts:
            self.texts.append(note)
        return self.texts.index(note) + 1
