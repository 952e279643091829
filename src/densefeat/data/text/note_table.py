"""Note tables (CSV/TSV/parquet a user brings, and MTSamples): :class:`NoteTable`, one in-memory
contract with text-group splits.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from ..splits import DEFAULT_FRACTIONS, SPLIT_NAMES, assign_subject_splits
from .chunks import text_group_key

_DECOMPRESSORS = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}


_STRING_TYPES = (pl.Utf8, pl.Categorical, pl.Enum)


class NoteTableError(ValueError):
    """A note table that cannot be used; the message names the file (or table) and column."""


@dataclass(frozen=True)
class NoteTable:
    """Notes with ids, optional subjects and labels; one row per note.

    Attributes:
        frame: ``note_id`` (the source's id dtype), ``text`` Utf8 (non-empty), ``subject_id``
            Int64 when the source has subjects, then one column per label in ``label_names``.
            Extra columns a reader adds (e.g. MTSamples' ``n_source_rows``) follow.
        label_names: the label columns of ``frame``, in order.
        source: the file (or table name) the notes came from, for messages.
        counts: what the reader read, kept and dropped (e.g. ``rows_read``, ``empty_dropped``).
    """

    frame: pl.DataFrame
    label_names: tuple[str, ...] = ()
    source: str = "notes"
    counts: Mapping[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.frame.height

    @property
    def texts(self) -> list[str]:
        """The note texts in row order."""
        return self.frame["text"].to_list()

    @property
    def ids(self) -> pl.Series:
        """The note ids in row order."""
        return self.frame["note_id"]

    @property
    def has_subjects(self) -> bool:
        """Whether the notes carry a subject_id."""
        return "subject_id" in self.frame.columns

    def label_matrix(self) -> np.ndarray:
        """Labels as an ``(n, k)`` array: bool if every label column is boolean, else float64.

        Raises:
            NoteTableError: no labels, or a string (categorical) label column.
        """
        if not self.label_names:
            raise NoteTableError(f"{self.source}: the note table has no label columns")
        labels = self.frame.select(self.label_names)
        for name, dtype in labels.schema.items():
            if not (dtype == pl.Boolean or dtype.is_numeric()):
                raise NoteTableError(
                    f"{self.source}: label column {name!r} has dtype {dtype}; a label matrix "
                    "needs boolean or numeric labels"
                )
        if all(dtype == pl.Boolean for dtype in labels.schema.values()):
            return labels.to_numpy().astype(bool)
        return labels.cast(pl.Float64).to_numpy()

    def group_keys(self) -> list[str]:
        """The split group of every row (see :func:`_group_keys`)."""
        subjects = self.frame["subject_id"].to_list() if self.has_subjects else None
        return _group_keys(self.texts, subjects)

    def splits(
        self,
        seed: int = 0,
        fractions: Sequence[float] = DEFAULT_FRACTIONS,
        names: Sequence[str] = SPLIT_NAMES,
    ) -> pl.Series:
        """Deterministic split name of every row: a hash of ``(seed, group key)``.

        Rows with identical (whitespace-normalised) texts share a split, and so do the rows of
        one subject; the two rules are applied together (connected groups).
        """
        split = assign_subject_splits(self.group_keys(), seed, tuple(fractions), names)
        return pl.Series("split", split, dtype=pl.Utf8)


def _group_keys(texts: Sequence[str], subjects: Sequence[int] | None) -> list[str]:
    """Split-group key per row: rows linked by an identical text or a shared subject.

    Without subjects the key is the text's hash. With subjects, rows are linked through both
    and each connected group is keyed by its smallest subject id, written as the bare id: a
    subject whose texts are shared with no other subject then gets exactly the split that
    :func:`~densefeat.data.meds.make_subject_splits` gives it in a MEDS dataset with the same seed,
    so its notes and its events land in the same split. (Subjects linked through a shared text
    all follow the smallest one; that key does not depend on row order either.)
    """
    text_keys = [text_group_key(t) for t in texts]
    if subjects is None:
        return text_keys
    parent: dict[object, object] = {}

    def find(x: object) -> object:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving keeps the trees flat
            x = parent[x]
        return x

    for key, subject in zip(text_keys, subjects, strict=True):
        a, b = find(key), find(("subject", subject))
        if a != b:
            parent[a] = b
    smallest: dict[object, int] = {}
    for subject in subjects:
        root = find(("subject", subject))
        smallest[root] = min(smallest.get(root, subject), subject)
    return [str(smallest[find(("subject", s))]) for s in subjects]


_TABLE_NAME = re.compile(r"\.(csv|tsv)(\.(gz|xz|bz2|zst))?$|\.parquet$")


def _read_csv(path: Path, text_col: str) -> pl.DataFrame:
    name = path.name.lower()
    separator = "\t" if ".tsv" in name else ","
    suffix = path.suffix.lower()
    source: Path | io.BytesIO = path
    if suffix in _DECOMPRESSORS:
        # polars itself reads plain, gzip and zstd CSV; xz and bz2 go through the stdlib.
        with _DECOMPRESSORS[suffix](path, "rb") as handle:
            source = io.BytesIO(handle.read())
    header = pl.read_csv(source, separator=separator, n_rows=0).columns
    if isinstance(source, io.BytesIO):
        source.seek(0)
    # The text column is read as a string whatever it looks like: a note "120" is still text.
    overrides = {text_col: pl.Utf8} if text_col in header else None
    return pl.read_csv(
        source, separator=separator, schema_overrides=overrides, infer_schema_length=10000
    )


def _read_table(path: Path, text_col: str) -> pl.DataFrame:
    if not _TABLE_NAME.search(path.name.lower()):
        raise NoteTableError(
            f"{path}: unsupported file type; use .parquet, .csv or .tsv (optionally "
            ".gz/.xz/.bz2/.zst)"
        )
    try:
        if path.name.lower().endswith(".parquet"):
            return pl.read_parquet(path)
        return _read_csv(path, text_col)
    except Exception as exc:  # polars, pyarrow and the decompressors raise many types
        raise NoteTableError(f"{path}: not a readable note table ({exc})") from exc


def as_name_list(columns: str | Sequence[str] | None) -> list[str]:
    if columns is None:
        return []
    return [columns] if isinstance(columns, str) else list(columns)


def require_columns(frame: pl.DataFrame, names: Iterable[str], source: str) -> None:
    for name in names:
        if name not in frame.columns:
            raise NoteTableError(
                f"{source}: missing column {name!r} (columns: {', '.join(frame.columns) or 'none'})"
            )


def _check_ids(ids: pl.Series, source: str, id_col: str) -> None:
    if ids.null_count():
        raise NoteTableError(f"{source}: column {id_col!r} has {ids.null_count()} null ids")
    dup = ids.filter(ids.is_duplicated())
    if dup.len():
        raise NoteTableError(
            f"{source}: column {id_col!r} has {dup.n_unique()} duplicate ids (e.g. {dup[0]!r})"
        )


def _check_text(frame: pl.DataFrame, source: str, text_col: str) -> pl.Series:
    """Rows whose text is null or whitespace-only (True), after checking the dtype."""
    dtype = frame.schema[text_col]
    if not isinstance(dtype, _STRING_TYPES):
        raise NoteTableError(f"{source}: column {text_col!r} has dtype {dtype}; want a string")
    text = frame[text_col].cast(pl.Utf8)
    return text.is_null() | (text.str.strip_chars() == "")


def _label_expr(frame: pl.DataFrame, name: str, source: str) -> pl.Expr:
    dtype = frame.schema[name]
    if frame[name].null_count():
        raise NoteTableError(
            f"{source}: label column {name!r} has {frame[name].null_count()} nulls"
        )
    if dtype == pl.Boolean or dtype.is_numeric():
        return pl.col(name)
    if isinstance(dtype, _STRING_TYPES):
        return pl.col(name).cast(pl.Utf8)  # a categorical label (e.g. a specialty name)
    raise NoteTableError(
        f"{source}: label column {name!r} has dtype {dtype}; want boolean, numeric or string"
    )


def note_table_from_frame(
    frame: pl.DataFrame,
    *,
    id_col: str = "id",
    text_col: str = "text",
    label_col: str | Sequence[str] | None = None,
    subject_col: str | None = None,
    drop_empty: bool = False,
    source: str = "notes",
) -> NoteTable:
    """Validate an in-memory table of notes and bring it to the :class:`NoteTable` contract.

    Args:
        frame: one row per note.
        id_col: the note id column (any dtype; non-null and unique).
        text_col: the note text column (string).
        label_col: one or more label columns (boolean, numeric or string; non-null).
        subject_col: the subject id column (integer, as in MEDS), if the notes have subjects.
        drop_empty: drop rows with an empty text instead of failing (counted in ``counts``).
        source: the name used in error messages (the file path when read from disk).

    Returns:
        the note table; extra columns are dropped.

    Raises:
        NoteTableError: a missing column, non-string text, empty text (unless ``drop_empty``),
            null or duplicate ids, a non-integer subject column, null or unusable labels.
    """
    labels = as_name_list(label_col)
    require_columns(frame, [id_col, text_col, *labels, *as_name_list(subject_col)], source)
    reserved = {"note_id", "text", "subject_id", id_col, text_col, subject_col}
    if reserved & set(labels) or len(set(labels)) != len(labels):
        raise NoteTableError(
            f"{source}: label columns {labels} repeat or clash with the id, text or subject "
            "columns (note_id, text, subject_id are reserved)"
        )
    _check_ids(frame[id_col], source, id_col)
    empty = _check_text(frame, source, text_col)
    n_empty = int(empty.sum())
    if n_empty and not drop_empty:
        first = frame.filter(empty)[id_col][0]
        raise NoteTableError(
            f"{source}: column {text_col!r} is empty for {n_empty} notes (e.g. id {first!r}); "
            "drop them first or pass drop_empty=True"
        )
    exprs = [pl.col(id_col).alias("note_id"), pl.col(text_col).cast(pl.Utf8).alias("text")]
    if subject_col is not None:
        dtype = frame.schema[subject_col]
        if not dtype.is_integer():
            # Refused rather than parsed, as in MEDS: "00123" and "123" would silently merge.
            raise NoteTableError(
                f"{source}: column {subject_col!r} has dtype {dtype}; subject ids must be integers"
            )
        if frame[subject_col].null_count():
            raise NoteTableError(f"{source}: column {subject_col!r} has null subject ids")
        exprs.append(pl.col(subject_col).cast(pl.Int64).alias("subject_id"))
    exprs += [_label_expr(frame, name, source) for name in labels]
    out = frame.filter(~empty).select(exprs)
    if out.height == 0:
        raise NoteTableError(f"{source}: no notes with a non-empty text")
    counts = {"rows_read": frame.height, "empty_dropped": n_empty, "rows": out.height}
    return NoteTable(out, tuple(labels), source, counts)


def read_note_table(
    path: str | os.PathLike[str],
    *,
    id_col: str = "id",
    text_col: str = "text",
    label_col: str | Sequence[str] | None = None,
    subject_col: str | None = None,
    drop_empty: bool = False,
    boolean_labels: bool = False,
) -> NoteTable:
    """Read a note table from CSV (plain or compressed) or parquet.

    Args:
        path: ``.parquet``, ``.csv`` (comma-separated) or ``.tsv`` (tab-separated), the text
            files optionally compressed (``.gz``, ``.xz``, ``.bz2``, ``.zst``).
        id_col, text_col, label_col, subject_col, drop_empty: see :func:`note_table_from_frame`.
        boolean_labels: without ``label_col``, take every boolean column (other than the id,
            text and subject columns) as a label: a note table's labels unless told otherwise.

    Returns:
        the validated note table, with ``source`` set to the path.

    Raises:
        FileNotFoundError: no such file.
        NoteTableError: unreadable or unsupported file, or any problem listed in
            :func:`note_table_from_frame`; the message names the file and column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no note table at {path}")
    frame = _read_table(path, text_col)
    if boolean_labels and not as_name_list(label_col):
        skip = {id_col, text_col, *as_name_list(subject_col)}
        label_col = [c for c, t in frame.schema.items() if t == pl.Boolean and c not in skip]
    return note_table_from_frame(
        frame,
        id_col=id_col,
        text_col=text_col,
        label_col=label_col,
        subject_col=subject_col,
        drop_empty=drop_empty,
        source=str(path),
    )


def read_mtsamples(path: str | os.PathLike[str]) -> NoteTable:
    """MTSamples as one row per distinct transcription with one-vs-rest specialty labels.

    MTSamples lists many transcriptions under several specialties (in the shared copy, 2,357
    distinct texts in 4,966 non-empty rows, 91% of them under more than one specialty), so a
    row-per-sample table would put the same text in train and test with contradicting labels.
    Here rows are grouped by whitespace-normalised text; each group becomes one note whose
    label for a specialty is True when any of its rows has that specialty. Its id is the smallest
    ``note_id`` of the group and its text the first of them (original whitespace kept, since line
    structure matters to sentence splitting).

    The original site's licence is unverified: densefeat reads MTSamples only from the path the
    user gives and never copies it into the package or test fixtures.

    Args:
        path: the MTSamples CSV (``.csv`` or compressed, e.g. ``mtsamples.csv.xz``) with columns
            ``note_id`` (or none: row numbers are used), ``medical_specialty``, ``transcription``.

    Returns:
        a :class:`NoteTable` with ``note_id``, ``text``, one boolean column per specialty (sorted
        names, leading/trailing spaces stripped), ``n_source_rows`` and ``source_note_ids``;
        ``counts`` holds ``rows_read``, ``empty_dropped`` (no transcription),
        ``no_specialty_dropped``, ``rows`` (distinct texts), ``multi_specialty_texts``,
        ``specialties``.

    Raises:
        FileNotFoundError: no such file.
        NoteTableError: unreadable file or a missing column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no MTSamples file at {path}")
    source = str(path)
    raw = _read_table(path, "transcription")
    require_columns(raw, ["medical_specialty", "transcription"], source)
    if "note_id" not in raw.columns:
        raw = raw.with_row_index("note_id", offset=1)
    rows = raw.select(
        pl.col("note_id"),
        pl.col("transcription").cast(pl.Utf8).alias("text"),
        pl.col("medical_specialty").cast(pl.Utf8).str.strip_chars().alias("specialty"),
    ).with_columns(
        key=pl.col("text").str.replace_all(r"\s+", " ").str.strip_chars(),
    )
    empty = rows["key"].is_null() | (rows["key"] == "")
    no_specialty = ~empty & (rows["specialty"].is_null() | (rows["specialty"] == ""))
    rows = rows.filter(~empty & ~no_specialty)
    specialties = sorted(rows["specialty"].unique().to_list())
    notes = (
        rows.sort("note_id")
        .group_by("key", maintain_order=True)
        .agg(
            pl.col("note_id").first(),
            pl.col("text").first(),
            pl.col("specialty").unique().alias("specialties"),
            pl.col("note_id").alias("source_note_ids"),
            pl.len().alias("n_source_rows"),
        )
        .sort("note_id")
    )
    label_cols = [pl.col("specialties").list.contains(s).alias(s) for s in specialties]
    frame = notes.select("note_id", "text", *label_cols, "n_source_rows", "source_note_ids")
    counts = {
        "rows_read": raw.height,
        "empty_dropped": int(empty.sum()),
        "no_specialty_dropped": int(no_specialty.sum()),
        "rows": frame.height,
        "multi_specialty_texts": int((notes["specialties"].list.len() > 1).sum()),
        "specialties": len(specialties),
    }
    return NoteTable(frame, tuple(specialties), source, counts)
