"""Multimodal batches: events and notes aligned by (subject_id, prediction_time), no leakage."""

from __future__ import annotations

import dataclasses
import datetime as dt

import polars as pl
import pytest
import torch

from densefeat.data.ehr import HistoryBuilder
from densefeat.data.meds import read_meds_dataset, write_meds_dataset
from densefeat.data.multimodal import MultimodalBatch, align_notes, build_multimodal_batch
from densefeat.data.text import notes_from_meds

T0 = dt.datetime(2022, 5, 1, 8, 0)


def at(days: float) -> dt.datetime:
    return T0 + dt.timedelta(days=days)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    rows = [
        (1, None, "GENDER//F", None, None),
        (1, at(-20000), "MEDS_BIRTH", None, None),
        (1, at(0), "LAB//HR", 80.0, None),
        (1, at(1), "NOTE//progress", None, "day one note"),
        (1, at(2), "LAB//HR", 95.0, None),
        (1, at(3), "NOTE//discharge", None, "day three note"),
        (2, at(0), "DX//I10", None, None),
        (2, at(5), "LAB//HR", 70.0, None),
        (3, at(0), "NOTE//progress", None, "subject three first"),
        (3, at(0.5), "LAB//NA", 140.0, None),
        (3, at(1), "NOTE//progress", None, "subject three second"),
    ]
    events = pl.DataFrame(
        rows,
        schema={
            "subject_id": pl.Int64,
            "time": pl.Datetime("us"),
            "code": pl.Utf8,
            "numeric_value": pl.Float32,
            "text_value": pl.Utf8,
        },
        orient="row",
    )
    root = write_meds_dataset(tmp_path_factory.mktemp("mm") / "meds", events, dataset_name="mm")
    return read_meds_dataset(root)


@pytest.fixture(scope="module")
def builder(dataset) -> HistoryBuilder:
    # A toy dataset: fit on all events (the split rule is tested with the history builder).
    return HistoryBuilder.fit(dataset.data, split=None, min_subjects=1, min_values=1)


def queries() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "subject_id": [3, 1, 2, 1, 1],
            "prediction_time": [at(1), at(2), at(5), at(3) - dt.timedelta(seconds=1), at(3)],
        }
    )


def test_rows_are_aligned_and_notes_never_leak(dataset, builder) -> None:
    batch = build_multimodal_batch(builder, dataset.data, queries(), dataset, code_prefixes="NOTE")
    assert isinstance(batch, MultimodalBatch)
    assert batch.events.subject_id.tolist() == [3, 1, 2, 1, 1]
    assert batch.notes == [
        ["subject three first", "subject three second"],
        ["day one note"],
        [],
        ["day one note"],  # the discharge note is one second too late
        ["day one note", "day three note"],
    ]
    assert batch.max_notes == 2
    assert batch.note_mask.tolist() == [
        [True, True],
        [False, True],
        [False, False],
        [False, True],
        [True, True],
    ]
    assert batch.has_notes.tolist() == [True, True, False, True, True]
    days = batch.note_time_before_prediction
    assert days[0].tolist() == [1.0, 0.0]  # a note exactly at the prediction time is kept
    assert days[4].tolist() == [2.0, 0.0]
    assert (days[batch.note_mask] >= 0).all()
    # The event part is the history builder's own batch for the same rows.
    alone = builder.build_batch(dataset.data, queries())
    assert torch.equal(batch.events.codes, alone.codes)
    assert torch.equal(batch.events.prediction_time, alone.prediction_time)


def test_flat_notes_fill_the_mask_row_major(dataset, builder) -> None:
    batch = build_multimodal_batch(builder, dataset.data, queries(), dataset, code_prefixes="NOTE")
    flat = batch.flat_notes()
    assert int(batch.note_mask.sum()) == len(flat)
    ids = torch.arange(len(flat), dtype=torch.float32)
    placed = torch.full(batch.note_mask.shape, -1.0)
    placed[batch.note_mask] = ids
    # Row 4's notes, oldest first, end at the last position.
    assert [flat[int(i)] for i in placed[4]] == ["day one note", "day three note"]
    assert flat[int(placed[1, 1])] == "day one note"


def test_align_notes_uses_keys_not_positions(dataset, builder) -> None:
    events = builder.build_batch(dataset.data, queries())
    notes = notes_from_meds(dataset, queries(), code_prefixes="NOTE")
    shuffled = notes.reverse()
    aligned = align_notes(events, shuffled)
    assert aligned.notes == align_notes(events, notes).notes
    with pytest.raises(ValueError, match="no row for 1 batch rows"):
        align_notes(events, notes.filter(pl.col("subject_id") != 2))
    clash = pl.concat([notes, notes.head(1).with_columns(notes=pl.lit(["other"]))])
    with pytest.raises(ValueError, match="two different note lists for subject 3"):
        align_notes(events, clash)
    with pytest.raises(ValueError, match="missing column 'note_times'"):
        align_notes(events, notes.drop("note_times"))


def test_batch_without_any_notes_and_max_notes(dataset, builder) -> None:
    rows = pl.DataFrame({"subject_id": [2, 1], "prediction_time": [at(5), at(0)]})
    batch = build_multimodal_batch(builder, dataset.data, rows, dataset, code_prefixes="NOTE")
    assert batch.notes == [[], []]
    assert batch.note_mask.shape == (2, 0)
    latest = build_multimodal_batch(
        builder, dataset.data, queries(), dataset, code_prefixes="NOTE", max_notes=1
    )
    assert latest.notes[4] == ["day three note"]
    assert latest.max_notes == 1


def test_validate_catches_broken_batches(dataset, builder) -> None:
    batch = build_multimodal_batch(builder, dataset.data, queries(), dataset, code_prefixes="NOTE")
    assert batch.to("cpu").notes == batch.notes
    with pytest.raises(ValueError, match="rows"):
        dataclasses.replace(batch, notes=batch.notes[:-1]).validate()
    with pytest.raises(ValueError, match="row counts"):
        dataclasses.replace(batch, notes=[[], *batch.notes[1:]]).validate()
    leaked = batch.note_time_before_prediction.clone()
    leaked[0, 0] = -0.5
    with pytest.raises(ValueError, match="leakage"):
        dataclasses.replace(batch, note_time_before_prediction=leaked).validate()
    right_padded = batch.note_mask.clone()
    right_padded[1] = torch.tensor([True, False])
    with pytest.raises(ValueError, match="left padding"):
        dataclasses.replace(batch, note_mask=right_padded).validate()
