"""CSV and TSV tables (embeddings, labels) read into the same typed frames as Parquet.

Clinical exports are often CSV. densefeat reads ``.csv`` (comma-separated) and ``.tsv``
(tab-separated) wherever it reads a Parquet table of embeddings or labels, and then validates
the frame exactly as it validates Parquet (the same checks, the same errors naming the file
and column), because the CSV is first turned into the Parquet-typed frame:

* numbers: integers stay integers, numbers with a decimal point or exponent are floats (a
  float column written as ``1`` / ``0`` only is read as an integer, which the embedding
  readers refuse by name, as they would in Parquet);
* ``true`` / ``false``: booleans; ISO dates and datetimes (``2013-01-01T00:00:00``):
  naive datetimes;
* a column whose every value is a bracketed list (``[0.12, -0.5, ...]``, how polars and pandas
  print a list): a list of floats (one embedding per row).

The whole file is read at once: CSV has no row groups to stream, so very large embedding
files belong in Parquet or ``.npy``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import polars as pl

__all__ = ["TEXT_TABLE_SUFFIXES", "is_text_table", "read_table", "read_text_table", "to_parquet"]

#: Extensions of delimited text tables.
TEXT_TABLE_SUFFIXES = (".csv", ".tsv")


def is_text_table(path: str | Path) -> bool:
    """Whether ``path`` names a CSV or TSV file (by its extension)."""
    return Path(path).suffix.lower() in TEXT_TABLE_SUFFIXES


def read_text_table(path: str | Path, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """A CSV/TSV file as a typed frame (the module docstring gives the typing rules).

    Args:
        path: a ``.csv`` or ``.tsv`` file.
        columns: only these columns (all by default).

    Returns:
        the frame, with list columns parsed.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an unreadable file, or a bracketed-list column that is not numbers (named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    separator = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        frame = pl.read_csv(
            path,
            separator=separator,
            columns=list(columns) if columns is not None else None,
            try_parse_dates=True,
            infer_schema_length=None,  # every row: a late 0.5 must not break an "int" column
        )
    except Exception as exc:  # polars raises many types
        raise ValueError(f"{path}: not a readable {separator!r}-separated table ({exc})") from exc
    for name, dtype in frame.schema.items():
        if dtype != pl.String:
            continue
        values = frame[name].drop_nulls()
        if values.len() == 0 or not values.str.strip_chars().str.starts_with("[").all():
            continue
        try:
            parsed = frame[name].str.json_decode(pl.List(pl.Float64))
        except Exception as exc:
            raise ValueError(
                f"{path}: column {name!r} holds bracketed lists that are not lists of numbers "
                f"({exc})"
            ) from exc
        frame = frame.with_columns(parsed.alias(name))
    return frame


def read_table(path: str | Path, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """A Parquet, CSV or TSV table as a frame (CSV/TSV by :func:`read_text_table`)."""
    if is_text_table(path):
        return read_text_table(path, columns)
    return pl.read_parquet(path, columns=list(columns) if columns is not None else None)


def to_parquet(frame: pl.DataFrame) -> io.BytesIO:
    """``frame`` as an in-memory Parquet file (for the Parquet readers and their checks)."""
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    buffer.seek(0)
    return buffer
