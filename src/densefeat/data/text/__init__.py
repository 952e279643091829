"""Clinical notes: note tables, MTSamples, notes inside MEDS, and chunking of long notes.

Three sources of text, one in-memory contract (:class:`NoteTable`, a polars frame):

* a note table the user brings (CSV, optionally ``.gz``/``.xz``/``.bz2``/``.zst``, or parquet)
  with an id column, a text column, optional label columns and an optional subject column
  (:func:`read_note_table`);
* MTSamples medical transcriptions (:func:`read_mtsamples`), read only from a path the user
  gives: the original site's licence is unverified, so densefeat never ships or copies it;
* notes stored as ``text_value`` events of a MEDS dataset, e.g. FHIR DocumentReference notes
  written by :mod:`densefeat.data.convert.fhir` under ``NOTE//...`` codes (:func:`notes_from_meds`).

Splits of text follow docs/design.md ("Text: group identical texts"): rows whose
whitespace-normalised texts are identical always share a split, and so do rows of one subject when a
subject column is
present. The split of a group is a hash of ``(seed, group key)``, so it does not depend on which
other rows are present.
"""

from .chunks import (
    chunk_text,
    normalize_whitespace,
    sentence_spans,
    split_sentences,
    text_group_key,
)
from .corpus import NOTE_KINDS, NoteCorpus, adjacent_note_pairs, load_note_corpus
from .meds_notes import NOTE_CODE_PREFIX, notes_from_meds
from .note_table import (
    NoteTable,
    NoteTableError,
    note_table_from_frame,
    read_mtsamples,
    read_note_table,
)
from .views import TextViewConfig, perturb_texts, random_view

__all__ = [
    "NOTE_CODE_PREFIX",
    "NOTE_KINDS",
    "NoteCorpus",
    "NoteTable",
    "NoteTableError",
    "TextViewConfig",
    "adjacent_note_pairs",
    "chunk_text",
    "load_note_corpus",
    "normalize_whitespace",
    "note_table_from_frame",
    "notes_from_meds",
    "perturb_texts",
    "random_view",
    "read_mtsamples",
    "read_note_table",
    "sentence_spans",
    "split_sentences",
    "text_group_key",
]
