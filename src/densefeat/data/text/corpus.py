"""The notes that ``densefeat train/embed --modality text --data X`` read: one rule, one table.

What ``--data`` may be (checked in this order, so the rule is unambiguous):

1. **a directory**: a MEDS dataset. Its notes are the non-empty ``text_value`` events whose code
   matches ``notes.codes`` (``"NOTE"``: ``NOTE`` and ``NOTE//...``, as densefeat's FHIR converter
   writes them; empty: every ``text_value``), one row per note, in subject and time order.
   Splits are the dataset's subject splits (its ``subject_splits.parquet``, else the hash of
   subject_id), so a subject's notes and events share a split; ``prediction_time`` is the
   note's time.
2. **a table file** (``.parquet``, ``.csv``/``.tsv``, the text files optionally ``.gz``,
   ``.xz``, ``.bz2``, ``.zst``) **with the columns ``medical_specialty`` and
   ``transcription``**: MTSamples, read by :func:`~densefeat.data.text.read_mtsamples` (one row
   per distinct text, one boolean label per specialty, since 91% of its texts are listed
   under several specialties).
3. **any other table file**: a generic note table read by
   :func:`~densefeat.data.text.read_note_table` with the id, text and label columns named in
   the config, and a subject column when the table has one.

Note tables are split by :meth:`~densefeat.data.text.NoteTable.splits`: identical
(whitespace-normalised) texts always share a split, and so do the notes of one subject
(docs/design.md: "Text: group identical texts"). The split of a group is a hash of
``(split_seed, group)``, independent of the other rows.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import lzma
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ..meds import read_meds_dataset
from .meds_notes import notes_from_meds
from .note_table import NoteTableError, read_mtsamples, read_note_table

__all__ = ["NOTE_KINDS", "NoteCorpus", "adjacent_note_pairs", "load_note_corpus"]

#: ``NoteCorpus.kind`` values.
NOTE_KINDS = ("meds", "mtsamples", "table")
_MTSAMPLES_COLUMNS = {"medical_specialty", "transcription"}
_OPENERS = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}


@dataclass(frozen=True)
class NoteCorpus:
    """Notes with their splits (and labels, subjects and times where the source has them).

    Attributes:
        frame: one row per note: ``note_id``, ``text``, then ``subject_id`` (Int64) when the
            source has subjects, ``prediction_time`` (Datetime, the note's time) and ``code``
            for MEDS notes, ``split`` (Utf8; null for MEDS subjects that no split lists), then
            one column per label in ``label_names``.
        label_names: the label columns, in order.
        kind: ``"meds"``, ``"mtsamples"`` or ``"table"`` (see the module docstring).
        source: the path read, for messages.
    """

    frame: pl.DataFrame
    label_names: tuple[str, ...]
    kind: str
    source: str

    def __len__(self) -> int:
        return self.frame.height

    @property
    def texts(self) -> list[str]:
        """The note texts in row order."""
        return self.frame["text"].to_list()

    def split_rows(self, split: str) -> np.ndarray:
        """Row positions (int64, ascending) of the notes in ``split``."""
        return np.flatnonzero((self.frame["split"] == split).fill_null(False).to_numpy())

    def labels(self, rows: np.ndarray | None = None) -> np.ndarray:
        """``(n, k)`` float32 labels (0/1) of ``rows`` (all rows if None).

        Raises:
            NoteTableError: no label columns, or a label column that is not boolean or 0/1
                numeric (a categorical label must be given as one boolean column per class).
        """
        if not self.label_names:
            raise NoteTableError(f"{self.source}: the notes have no label columns")
        frame = self.frame if rows is None else self.frame[rows]
        out = []
        for name in self.label_names:
            col = frame[name]
            if col.dtype == pl.Boolean:
                out.append(col.cast(pl.Float32).to_numpy())
                continue
            if not col.dtype.is_numeric():
                raise NoteTableError(
                    f"{self.source}: label column {name!r} has dtype {col.dtype}; supervised "
                    "training needs boolean (or 0/1) labels, one column per class"
                )
            values = col.cast(pl.Float64).to_numpy()
            if not np.isin(values, (0.0, 1.0)).all():
                raise NoteTableError(
                    f"{self.source}: label column {name!r} holds values other than 0 and 1"
                )
            out.append(values.astype(np.float32))
        return np.stack(out, axis=1)


def _table_columns(path: Path) -> list[str]:
    """Column names of a table file, reading only its header."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        return list(pl.read_parquet_schema(path))
    separator = "\t" if ".tsv" in name else ","
    opener = _OPENERS.get(path.suffix.lower())
    try:
        if opener is None:  # plain, or zstd (read by polars itself)
            return pl.read_csv(path, separator=separator, n_rows=0).columns
        with opener(path, "rt", encoding="utf-8", newline="") as handle:
            return next(csv.reader(io.StringIO(handle.readline()), delimiter=separator), [])
    except Exception as exc:  # polars and the decompressors raise many types
        raise NoteTableError(f"{path}: not a readable note table ({exc})") from exc


def _split_list(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def _meds_notes(path: Path, note_codes: str) -> NoteCorpus:
    ds = read_meds_dataset(path)
    prefixes = _split_list(note_codes) or None
    notes = notes_from_meds(ds, code_prefixes=prefixes)
    if notes.height == 0:
        what = f"with a code under {prefixes}" if prefixes else ""
        raise NoteTableError(
            f"{path}: the MEDS dataset has no notes (non-empty text_value events {what}); "
            "set --set notes.codes=PREFIX[,PREFIX] (empty: any text_value)"
        )
    frame = (
        notes.with_row_index("note_id")
        .with_columns(pl.col("note_id").cast(pl.Int64))
        .join(ds.splits, on="subject_id", how="left", maintain_order="left")
        .select(
            "note_id",
            "text",
            "subject_id",
            pl.col("time").alias("prediction_time"),
            "code",
            "split",
        )
    )
    return NoteCorpus(frame, (), "meds", str(path))


def _with_splits(frame: pl.DataFrame, splits: pl.Series, labels: Sequence[str]) -> pl.DataFrame:
    front = [c for c in ("note_id", "text", "subject_id") if c in frame.columns]
    return frame.with_columns(splits).select(*front, "split", *labels)


def load_note_corpus(
    path: str | os.PathLike[str],
    *,
    note_codes: str = "NOTE",
    id_col: str = "note_id",
    text_col: str = "text",
    subject_col: str | None = "subject_id",
    labels: str = "",
    split_seed: int = 0,
) -> NoteCorpus:
    """Read notes by the rule of the module docstring.

    Args:
        path: a MEDS directory or a note table file.
        note_codes: comma-separated code prefixes of notes in MEDS (empty: any text_value).
        id_col, text_col: the id and text columns of a generic note table.
        subject_col: the subject column of a generic note table; used when the table has it
            (``"subject_id"`` by default), an error when another name is given and missing.
        labels: comma-separated label columns (generic tables: which columns are labels;
            MTSamples: a subset of the specialties; empty: every label the source has, which
            for a generic table is every boolean column).
        split_seed: seed of the text-group splits of note tables.

    Returns:
        the corpus.

    Raises:
        FileNotFoundError: no such path.
        NoteTableError: an unreadable table, missing columns (named), no notes, labels on MEDS
            notes, or unknown MTSamples specialties.
    """
    path = Path(path)
    wanted = _split_list(labels)
    if path.is_dir():
        if wanted:
            raise NoteTableError(
                f"{path}: MEDS notes carry no label columns (text_labels={labels!r}); "
                "label notes through a note table, or train --modality multimodal with --labels"
            )
        return _meds_notes(path, note_codes)
    if not path.is_file():
        raise FileNotFoundError(f"no note table or MEDS directory at {path}")
    columns = _table_columns(path)
    if _MTSAMPLES_COLUMNS <= set(columns):
        table = read_mtsamples(path)
        unknown = [w for w in wanted if w not in table.label_names]
        if unknown:
            raise NoteTableError(
                f"{path}: unknown MTSamples specialties {unknown}; known: "
                f"{', '.join(table.label_names)}"
            )
        names = tuple(wanted) or table.label_names
        frame = _with_splits(table.frame, table.splits(split_seed), names)
        return NoteCorpus(frame, names, "mtsamples", str(path))
    if subject_col is not None and subject_col not in columns:
        if subject_col != "subject_id":  # named on purpose, so its absence is an error
            raise NoteTableError(
                f"{path}: missing subject column {subject_col!r} (columns: {', '.join(columns)})"
            )
        subject_col = None
    table = read_note_table(
        path,
        id_col=id_col,
        text_col=text_col,
        label_col=wanted or None,
        subject_col=subject_col,
        boolean_labels=True,  # without text.labels, the table's boolean columns are its labels
    )
    frame = _with_splits(table.frame, table.splits(split_seed), table.label_names)
    return NoteCorpus(frame, table.label_names, "table", str(path))


def adjacent_note_pairs(corpus: NoteCorpus, rows: np.ndarray) -> pl.DataFrame:
    """Each note of ``rows`` with the same subject's next note in time (both in ``rows``).

    The note-level analogue of the EHR window pairs ``(t, t+1)``: the pair is the same subject
    at two adjacent times, so the subspace term rewards what is stable about a patient's notes.

    Returns:
        ``a``, ``b`` (Int64 row positions into ``corpus.frame``), one row per pair.

    Raises:
        NoteTableError: the corpus has no subjects and times (only MEDS notes do).
    """
    if "prediction_time" not in corpus.frame.columns or "subject_id" not in corpus.frame.columns:
        raise NoteTableError(
            f"{corpus.source}: adjacent-note pairs need notes with subjects and times (MEDS "
            "notes); use --set text.pairs=views for a note table"
        )
    sub = (
        corpus.frame.select("subject_id", "prediction_time", "note_id")
        .with_row_index("a")
        .with_columns(pl.col("a").cast(pl.Int64))
        .filter(pl.col("a").is_in(pl.Series(rows, dtype=pl.Int64).implode()))
        .filter(pl.col("prediction_time").is_not_null())
        .sort("subject_id", "prediction_time", "note_id")
    )
    return (
        sub.with_columns(b=pl.col("a").shift(-1).over("subject_id"))
        .drop_nulls("b")
        .select("a", "b")
    )
