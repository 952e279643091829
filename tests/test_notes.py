"""Note tables, MTSamples, notes inside MEDS (no leakage) and chunking of long notes.

Note tables are built in the tests. MTSamples is read from the shared data folder only (its
licence is unverified: never copy it into fixtures); those tests skip when it is absent.
"""

from __future__ import annotations

import datetime as dt
import lzma
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from _paths import SHARED_DATA
from densefeat.data.meds import read_meds_dataset, write_meds_dataset
from densefeat.data.splits import make_subject_splits
from densefeat.data.text import (
    NoteTableError,
    chunk_text,
    normalize_whitespace,
    note_table_from_frame,
    notes_from_meds,
    read_mtsamples,
    read_note_table,
    sentence_spans,
    split_sentences,
    text_group_key,
)

MTSAMPLES = SHARED_DATA / "mtsamples" / "mtsamples.csv.xz"
T0 = dt.datetime(2021, 3, 1, 9, 0)


def notes_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": [10, 11, 12, 13],
            "text": [
                "Chest pain. No fever.",
                "Cough for two days.",
                "Chest  pain.\nNo fever.",
                "x",
            ],
            "label": [True, False, True, False],
            "severity": [2.0, 1.0, 2.5, 0.0],
            "subject_id": [1, 2, 3, 3],
        }
    )


# --------------------------------------------------------------------------------------------
# Reading note tables.


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".csv.gz", ".csv.xz", ".tsv"])
def test_read_note_table_formats(tmp_path: Path, suffix: str) -> None:
    frame = notes_frame()
    path = tmp_path / f"notes{suffix}"
    if suffix == ".parquet":
        frame.write_parquet(path)
    else:
        raw = frame.write_csv(separator="\t" if suffix == ".tsv" else ",").encode()
        if suffix == ".csv.gz":
            import gzip

            raw = gzip.compress(raw)
        elif suffix == ".csv.xz":
            raw = lzma.compress(raw)
        path.write_bytes(raw)
    table = read_note_table(path, label_col=["label", "severity"], subject_col="subject_id")
    assert table.frame.columns == ["note_id", "text", "subject_id", "label", "severity"]
    assert table.texts == frame["text"].to_list()
    assert table.ids.to_list() == [10, 11, 12, 13]
    assert table.label_names == ("label", "severity")
    assert table.label_matrix().dtype == np.float64
    assert table.source == str(path)
    assert table.counts == {"rows_read": 4, "empty_dropped": 0, "rows": 4}


def test_boolean_labels_give_a_bool_matrix() -> None:
    table = note_table_from_frame(notes_frame(), label_col="label")
    matrix = table.label_matrix()
    assert matrix.dtype == bool
    assert matrix[:, 0].tolist() == [True, False, True, False]


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    path = tmp_path / "notes.parquet"
    notes_frame().rename({"text": "body"}).write_parquet(path)
    with pytest.raises(NoteTableError, match=r"notes\.parquet.*missing column 'text'"):
        read_note_table(path)
    with pytest.raises(NoteTableError, match="missing column 'outcome'"):
        read_note_table(path, text_col="body", label_col="outcome")
    csv = tmp_path / "notes.csv"
    csv.write_text("id,body\n1,hello\n")
    with pytest.raises(NoteTableError, match=r"notes\.csv: missing column 'text'"):
        read_note_table(csv)


def test_empty_text_is_an_error_unless_dropped(tmp_path: Path) -> None:
    frame = notes_frame().with_columns(
        pl.Series("text", ["Chest pain.", "   ", None, "ok"], dtype=pl.Utf8)
    )
    path = tmp_path / "notes.parquet"
    frame.write_parquet(path)
    with pytest.raises(NoteTableError, match=r"notes\.parquet.*'text' is empty for 2 notes"):
        read_note_table(path)
    table = read_note_table(path, drop_empty=True)
    assert table.ids.to_list() == [10, 13]
    assert table.counts["empty_dropped"] == 2


def test_duplicate_and_null_ids(tmp_path: Path) -> None:
    path = tmp_path / "notes.parquet"
    notes_frame().with_columns(id=pl.Series([1, 2, 2, 3])).write_parquet(path)
    with pytest.raises(NoteTableError, match=r"notes\.parquet.*column 'id' has 1 duplicate ids"):
        read_note_table(path)
    with pytest.raises(NoteTableError, match="null ids"):
        note_table_from_frame(notes_frame().with_columns(id=pl.Series([1, None, 2, 3])))


def test_non_string_text(tmp_path: Path) -> None:
    path = tmp_path / "notes.parquet"
    notes_frame().with_columns(text=pl.Series([1, 2, 3, 4])).write_parquet(path)
    with pytest.raises(NoteTableError, match=r"notes\.parquet.*column 'text' has dtype Int64"):
        read_note_table(path)


def test_numeric_looking_csv_text_stays_text(tmp_path: Path) -> None:
    path = tmp_path / "notes.csv"
    path.write_text("id,text\n1,120\n2,80\n")
    assert read_note_table(path).texts == ["120", "80"]


def test_bad_subjects_labels_and_files(tmp_path: Path) -> None:
    frame = notes_frame()
    with pytest.raises(NoteTableError, match="column 'subject_id' has dtype String"):
        note_table_from_frame(
            frame.with_columns(pl.col("subject_id").cast(pl.Utf8)), subject_col="subject_id"
        )
    with pytest.raises(NoteTableError, match="label column 'label' has 1 nulls"):
        note_table_from_frame(
            frame.with_columns(label=pl.Series([True, None, False, True])), label_col="label"
        )
    with pytest.raises(NoteTableError, match="clash"):
        note_table_from_frame(frame, label_col="text")
    with pytest.raises(NoteTableError, match="label column 'kind' has dtype String"):
        note_table_from_frame(frame.with_columns(kind=pl.lit("a")), label_col="kind").label_matrix()
    with pytest.raises(FileNotFoundError):
        read_note_table(tmp_path / "absent.csv")
    (tmp_path / "notes.json").write_text("{}")
    with pytest.raises(NoteTableError, match="unsupported file type"):
        read_note_table(tmp_path / "notes.json")
    (tmp_path / "corrupt.parquet").write_bytes(b"not parquet")
    with pytest.raises(NoteTableError, match=r"corrupt\.parquet: not a readable note table"):
        read_note_table(tmp_path / "corrupt.parquet")


# --------------------------------------------------------------------------------------------
# Splits: identical texts together, subjects together.


def test_identical_texts_share_a_split() -> None:
    texts = [f"Note number {i}." for i in range(200)]
    texts += [t.replace(" ", "  ") + "\n" for t in texts[:50]]  # same texts, other whitespace
    table = note_table_from_frame(pl.DataFrame({"id": range(len(texts)), "text": texts}))
    splits = table.splits(seed=3).to_list()
    assert all(splits[200 + i] == splits[i] for i in range(50))
    assert set(splits) == {"train", "tuning", "held_out"}
    assert table.splits(seed=3).to_list() == splits  # deterministic
    assert table.splits(seed=4).to_list() != splits  # and seeded
    assert text_group_key("a  b\n") == text_group_key(" a b")


def test_subject_and_text_groups_are_joined() -> None:
    # Subject 1 and 2 share a text, subject 2 and 3 share a text: all five rows are one group.
    frame = pl.DataFrame(
        {
            "id": [1, 2, 3, 4, 5, 6],
            "text": ["shared a", "own 1", "shared a", "shared b", "shared b", "alone"],
            "subject_id": [1, 1, 2, 2, 3, 4],
        }
    )
    keys = note_table_from_frame(frame, subject_col="subject_id").group_keys()
    assert keys[:5] == ["1"] * 5
    assert keys[5] == "4"
    # The key does not depend on row order.
    reversed_keys = note_table_from_frame(frame.reverse(), subject_col="subject_id").group_keys()
    assert reversed_keys == keys[::-1]


def test_notes_of_a_subject_follow_its_meds_split() -> None:
    subjects = list(range(1, 301))
    frame = pl.DataFrame(
        {"id": subjects, "text": [f"note of {s}" for s in subjects], "subject_id": subjects}
    )
    table = note_table_from_frame(frame, subject_col="subject_id")
    expected = make_subject_splits(subjects, seed=5)["split"].to_list()
    assert table.splits(seed=5).to_list() == expected


# --------------------------------------------------------------------------------------------
# MTSamples (shared file; never copied).

needs_mtsamples = pytest.mark.skipif(not MTSAMPLES.is_file(), reason="shared MTSamples missing")


@pytest.fixture(scope="module")
def mtsamples():
    return read_mtsamples(MTSAMPLES)


@needs_mtsamples
def test_mtsamples_counts(mtsamples) -> None:
    assert mtsamples.counts == {
        "rows_read": 4999,
        "empty_dropped": 33,
        "no_specialty_dropped": 0,
        "rows": 2357,
        "multi_specialty_texts": 2148,
        "specialties": 40,
    }
    labels = mtsamples.label_matrix()
    assert labels.shape == (2357, 40) and labels.dtype == bool
    assert labels.any(axis=1).all()
    assert (labels.sum(axis=1) > 1).mean() > 0.9  # DESIGN: 91% under several specialties
    assert mtsamples.frame["n_source_rows"].sum() == 4999 - 33
    assert mtsamples.frame["note_id"].is_unique().all()
    # One row per distinct text.
    assert mtsamples.frame["text"].map_elements(normalize_whitespace, pl.Utf8).is_unique().all()
    assert "Surgery" in mtsamples.label_names


@needs_mtsamples
def test_mtsamples_labels_match_source_rows(mtsamples) -> None:
    raw = pl.read_csv(lzma.open(MTSAMPLES).read()).drop_nulls("transcription")
    frame = mtsamples.frame.explode("source_note_ids")
    merged = frame.join(raw, left_on="source_note_ids", right_on="note_id")
    assert merged.height == raw.height
    # Every source row's specialty is a positive label of its distinct text.
    for specialty in mtsamples.label_names[:10]:
        rows = merged.filter(pl.col("medical_specialty").str.strip_chars() == specialty)
        assert rows[specialty].all()


@needs_mtsamples
def test_mtsamples_identical_texts_share_a_split(mtsamples) -> None:
    raw = pl.read_csv(lzma.open(MTSAMPLES).read()).drop_nulls("transcription")
    split = mtsamples.splits(seed=0)
    assert split.value_counts()["count"].min() > 150  # about 80/10/10 of 2,357
    exploded = mtsamples.frame.with_columns(split=split).explode("source_note_ids")
    rows = raw.join(
        exploded.select("source_note_ids", "split"), left_on="note_id", right_on="source_note_ids"
    )
    per_text = rows.group_by(pl.col("transcription").map_elements(normalize_whitespace, pl.Utf8))
    assert (per_text.agg(pl.col("split").n_unique())["split"] == 1).all()


# --------------------------------------------------------------------------------------------
# Notes inside MEDS: ordered, and never after the prediction time.


@pytest.fixture
def meds_with_notes(tmp_path: Path):
    events = pl.DataFrame(
        {
            "subject_id": [1, 1, 1, 1, 1, 2, 2, 3],
            "time": [
                None,
                T0,
                T0 + dt.timedelta(hours=5),
                T0 + dt.timedelta(days=1, seconds=1),
                T0 + dt.timedelta(days=1),
                T0,
                T0 + dt.timedelta(hours=2),
                T0,
            ],
            "code": [
                "NOTE//static",
                "NOTE//progress",
                "LAB//comment",
                "NOTE//discharge",
                "NOTE//progress",
                "DX//I10",
                "NOTE//progress",
                "DX//I10",
            ],
            "text_value": [
                "undated note",
                "first note",
                "free-text lab result",
                "one second too late",
                "at the prediction time",
                None,
                "subject two note",
                None,
            ],
        }
    )
    return read_meds_dataset(write_meds_dataset(tmp_path / "meds", events, dataset_name="t"))


def test_notes_from_meds_lists_notes_in_time_order(meds_with_notes) -> None:
    notes = notes_from_meds(meds_with_notes, code_prefixes="NOTE")
    assert notes.columns == ["subject_id", "time", "code", "text"]
    assert notes["text"].to_list() == [
        "undated note",
        "first note",
        "at the prediction time",
        "one second too late",
        "subject two note",
    ]
    every = notes_from_meds(meds_with_notes)  # no filter: the lab comment counts too
    assert "free-text lab result" in every["text"].to_list()


def test_notes_from_meds_never_leaks(meds_with_notes) -> None:
    cut = T0 + dt.timedelta(days=1)
    queries = pl.DataFrame(
        {
            "subject_id": [1, 2, 3, 1, 1],
            "prediction_time": [cut, cut, cut, T0 - dt.timedelta(seconds=1), cut],
        }
    )
    out = notes_from_meds(meds_with_notes, queries, code_prefixes=["NOTE"])
    assert out["subject_id"].to_list() == [1, 2, 3, 1, 1]  # one row per query, in order
    assert out["notes"].to_list() == [
        ["first note", "at the prediction time"],
        ["subject two note"],
        [],
        [],
        ["first note", "at the prediction time"],
    ]
    assert out["note_codes"][0].to_list() == ["NOTE//progress", "NOTE//progress"]
    # The guarantee, stated generally: no returned note is after its prediction time.
    times = out.explode("note_times").drop_nulls("note_times")
    assert (times["note_times"] <= times["prediction_time"]).all()
    latest = notes_from_meds(meds_with_notes, queries, code_prefixes="NOTE", max_notes=1)
    assert latest["notes"][0].to_list() == ["at the prediction time"]


def test_notes_from_meds_bad_prediction_times(meds_with_notes) -> None:
    with pytest.raises(NoteTableError, match="missing column 'prediction_time'"):
        notes_from_meds(meds_with_notes, pl.DataFrame({"subject_id": [1]}))
    bad = pl.DataFrame({"subject_id": [1], "prediction_time": [T0]}).with_columns(
        pl.col("prediction_time").dt.replace_time_zone("UTC")
    )
    with pytest.raises(NoteTableError, match="'prediction_time' has dtype"):
        notes_from_meds(meds_with_notes, bad)


# --------------------------------------------------------------------------------------------
# Sentences and chunks.


def test_sentence_spans_cover_the_text() -> None:
    text = "  DIAGNOSIS: , Obesity.,PROCEDURE: , Bypass.  The patient did well!\nPlan: follow up?"
    spans = sentence_spans(text)
    assert "".join(text[a:b] for a, b in spans) == text
    assert split_sentences(text) == [
        "DIAGNOSIS: , Obesity.,",
        "PROCEDURE: , Bypass.",
        "The patient did well!",
        "Plan: follow up?",
    ]
    assert split_sentences("3.5 mg daily. Next") == ["3.5 mg daily.", "Next"]
    assert sentence_spans("") == []


@pytest.mark.parametrize(
    "limits", [{"max_words": 8}, {"max_chars": 40}, {"max_words": 3, "max_chars": 12}]
)
def test_chunk_text_respects_limits_and_keeps_every_word(limits: dict) -> None:
    text = (
        "One two three four five. Six seven eight nine ten eleven twelve thirteen fourteen. "
        "Fifteen. A-very-long-hyphenated-word-that-exceeds-forty-characters-easily end."
    )
    chunks = chunk_text(text, **limits)
    assert chunks and all(c.strip() for c in chunks)
    for chunk in chunks:
        if "max_words" in limits:
            assert len(chunk.split()) <= limits["max_words"]
        if "max_chars" in limits:
            assert len(chunk) <= limits["max_chars"]
    assert "".join(chunks).replace(" ", "") == text.replace(" ", "")


def test_chunk_text_packs_whole_sentences() -> None:
    assert chunk_text("A b. C d. E f g h.", max_words=4) == ["A b. C d.", "E f g h."]
    assert chunk_text("   ", max_words=4) == []
    with pytest.raises(ValueError, match="max_words or max_chars"):
        chunk_text("text")
    with pytest.raises(ValueError, match="max_chars must be >= 1"):
        chunk_text("text", max_chars=0)
