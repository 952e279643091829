"""MEDS reading and writing: round trips, every bad input of issue 3, atomic output, splits, labels.

Every error test checks that the message names the offending file (or table) and column, and
every failed write that nothing is left at the output path (nor a temporary sibling).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import meds
import polars as pl
import pyarrow.parquet as pq
import pytest

import densefeat.data.meds as meds_io
import densefeat.data.meds.write as meds_write
from densefeat.data.meds import (
    EVENT_SCHEMA,
    MedsFormatError,
    read_labels,
    read_meds_dataset,
    write_meds_dataset,
)
from densefeat.data.splits import SPLIT_NAMES, make_subject_splits

T0 = dt.datetime(2020, 1, 1, 8, 30)


def day(n: int, seconds: int = 0) -> dt.datetime:
    return T0 + dt.timedelta(days=n, seconds=seconds)


def make_events() -> pl.DataFrame:
    """Three subjects, unsorted, with static events, numeric and text values, `//` codes."""
    return pl.DataFrame(
        {
            "subject_id": [3, 1, 1, 2, 1, 3, 2, 1],
            "time": [day(2), day(5), None, day(1), day(1), None, day(1), day(1)],
            "code": [
                "LAB//HR",
                "DX//ICD10//I10",
                "GENDER/F",
                "NOTE",
                "LAB//HR",
                "MEDS_BIRTH",
                "LAB//NA",
                "RX//1",
            ],
            "numeric_value": [80.0, None, None, None, 72.5, None, 140.0, None],
            "text_value": [None, None, None, "chest pain", None, None, None, None],
        },
        schema_overrides={"numeric_value": pl.Float32, "time": pl.Datetime("us")},
    )


def leftovers(out: Path) -> list[Path]:
    """The output path and any temporary sibling the writer may have left."""
    return [p for p in out.parent.iterdir() if out.name in p.name]


def write_shard(path: Path, frame: pl.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_meds_dataset(tmp_path / "ds", make_events(), dataset_name="toy")


# --------------------------------------------------------------------------------------------
# Round trips.


def test_round_trip_sorted_and_typed(dataset: Path) -> None:
    ds = read_meds_dataset(dataset)
    got = ds.data.collect()
    assert got.schema == pl.Schema(EVENT_SCHEMA)
    want = make_events().sort(["subject_id", "time"], nulls_last=False, maintain_order=True)
    assert got.equals(want)
    # Static events first within a subject; same-time events keep the caller's order.
    assert got.filter(pl.col("subject_id") == 1)["code"].to_list() == [
        "GENDER/F",
        "LAB//HR",
        "RX//1",
        "DX//ICD10//I10",
    ]


def test_written_files_follow_meds_schemas(dataset: Path) -> None:
    for f in (dataset / "data").glob("*.parquet"):
        meds.DataSchema.validate(pq.read_table(f))
    meds.CodeMetadataSchema.validate(pq.read_table(dataset / meds.code_metadata_filepath))
    meds.SubjectSplitSchema.validate(pq.read_table(dataset / meds.subject_splits_filepath))
    doc = json.loads((dataset / meds.dataset_metadata_filepath).read_text())
    meds.DatasetMetadataSchema.validate(doc)
    for key in ("dataset_name", "dataset_version", "etl_name", "etl_version", "meds_version"):
        assert doc[key]
    assert doc["dataset_name"] == "toy" and doc["meds_version"] == meds.__version__
    dt.datetime.fromisoformat(doc["created_at"])


def test_codes_kept_and_completed(tmp_path: Path) -> None:
    codes = pl.DataFrame(
        {"code": ["LAB//HR", "UNUSED"], "description": ["heart rate", "not in the data"]}
    )
    out = write_meds_dataset(tmp_path / "ds", make_events(), codes=codes, dataset_name="toy")
    got = read_meds_dataset(out).codes
    assert set(make_events()["code"]) <= set(got["code"])
    assert got.filter(pl.col("code") == "LAB//HR")["description"].item() == "heart rate"
    assert got.filter(pl.col("code") == "NOTE")["description"].item() is None
    assert got.schema == pl.Schema(meds_io.CODES_SCHEMA)


def test_shards_never_split_a_subject(tmp_path: Path) -> None:
    out = write_meds_dataset(tmp_path / "ds", make_events(), dataset_name="toy", shard_rows=2)
    ds = read_meds_dataset(out)
    assert len(ds.data_files) > 1
    seen: dict[int, Path] = {}
    for f in ds.data_files:
        for sid in pl.read_parquet(f)["subject_id"].unique():
            assert seen.setdefault(sid, f) == f
    assert ds.data.select(pl.len()).collect().item() == make_events().height


def test_optional_columns_may_be_absent(tmp_path: Path) -> None:
    events = make_events().drop("numeric_value", "text_value")
    out = write_meds_dataset(tmp_path / "ds", events, dataset_name="toy")
    got = read_meds_dataset(out).data.collect()
    assert got["numeric_value"].null_count() == got.height
    assert got.schema == pl.Schema(EVENT_SCHEMA)


def test_reader_accepts_other_writers_layout(tmp_path: Path) -> None:
    """Nested shards, other integer/time widths, extra columns, no metadata at all."""
    root = tmp_path / "other"
    frame = make_events().sort(["subject_id", "time"], nulls_last=False)
    first = frame.filter(pl.col("subject_id") < 3).with_columns(
        pl.col("subject_id").cast(pl.Int32),
        pl.col("time").cast(pl.Datetime("ns")),
        pl.col("numeric_value").cast(pl.Float64),
        extra=pl.lit("x"),
    )
    write_shard(root / "data" / "train" / "0.parquet", first)
    write_shard(root / "data" / "held_out" / "0.parquet", frame.filter(pl.col("subject_id") == 3))
    ds = read_meds_dataset(root)
    assert ds.data.collect().schema == pl.Schema(EVENT_SCHEMA)
    assert ds.data.select(pl.len()).collect().item() == frame.height
    assert ds.codes.height == 0 and ds.metadata == {} and not ds.splits_file


# --------------------------------------------------------------------------------------------
# Bad input on write: nothing is left behind.

BAD_FRAMES = {
    "misnamed column": (
        lambda e: e.rename({"subject_id": "patient_id"}),
        ["subject_id", "patient_id"],
    ),
    "missing column": (lambda e: e.drop("code"), ["code"]),
    "string subject_id": (
        lambda e: e.with_columns(pl.col("subject_id").cast(pl.Utf8)),
        ["subject_id", "String"],
    ),
    "tz-aware time": (
        lambda e: e.with_columns(pl.col("time").dt.replace_time_zone("UTC")),
        ["time", "UTC"],
    ),
    "date time": (lambda e: e.with_columns(pl.col("time").cast(pl.Date)), ["time", "Date"]),
    "numeric as text": (
        lambda e: e.with_columns(pl.col("numeric_value").cast(pl.Utf8)),
        ["numeric_value"],
    ),
    "null subject_id": (
        lambda e: e.with_columns(
            pl.when(pl.int_range(pl.len()) == 2)
            .then(None)
            .otherwise(pl.col("subject_id"))
            .alias("subject_id")
        ),
        ["subject_id", "null"],
    ),
    "null code": (
        lambda e: e.with_columns(
            pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.col("code")).alias("code")
        ),
        ["code", "null"],
    ),
    "empty": (lambda e: e.head(0), ["empty"]),
}


@pytest.mark.parametrize("case", list(BAD_FRAMES))
def test_write_rejects_bad_events(tmp_path: Path, case: str) -> None:
    transform, words = BAD_FRAMES[case]
    out = tmp_path / "ds"
    with pytest.raises(MedsFormatError) as info:
        write_meds_dataset(out, transform(make_events()), dataset_name="toy")
    for word in ["events", *words]:
        assert word in str(info.value), (case, str(info.value))
    assert leftovers(out) == []


def test_write_failure_midway_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}
    real = pq.write_table

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second file: data is already on disk
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(meds_write.pq, "write_table", flaky)
    out = tmp_path / "ds"
    with pytest.raises(OSError, match="disk full"):
        write_meds_dataset(out, make_events(), dataset_name="toy")
    assert leftovers(out) == []


def test_failed_overwrite_keeps_the_old_dataset(dataset: Path, monkeypatch) -> None:
    before = read_meds_dataset(dataset).data.collect()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(meds_write.pq, "write_table", broken)
    with pytest.raises(OSError):
        write_meds_dataset(dataset, make_events().head(2), dataset_name="x", overwrite=True)
    monkeypatch.undo()
    assert read_meds_dataset(dataset).data.collect().equals(before)
    assert [p.name for p in leftovers(dataset)] == [dataset.name]


def test_refuses_non_empty_out_dir_unless_overwrite(dataset: Path) -> None:
    with pytest.raises(MedsFormatError, match="not empty"):
        write_meds_dataset(dataset, make_events().head(3), dataset_name="new")
    write_meds_dataset(dataset, make_events().head(3), dataset_name="new", overwrite=True)
    ds = read_meds_dataset(dataset)
    assert ds.metadata["dataset_name"] == "new"
    assert ds.data.select(pl.len()).collect().item() == 3
    assert [p.name for p in leftovers(dataset)] == [dataset.name]


def test_empty_existing_dir_is_fine(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    write_meds_dataset(out, make_events(), dataset_name="toy")
    assert read_meds_dataset(out).data.select(pl.len()).collect().item() == make_events().height


# --------------------------------------------------------------------------------------------
# Bad input on read: the message names the file and the column.


def sorted_events() -> pl.DataFrame:
    return make_events().sort(["subject_id", "time"], nulls_last=False, maintain_order=True)


BAD_FILES = {
    "misnamed column": (lambda e: e.rename({"code": "concept"}), ["code", "concept"]),
    "missing column": (lambda e: e.drop("time"), ["time"]),
    "string subject_id": (
        lambda e: e.with_columns(pl.col("subject_id").cast(pl.Utf8)),
        ["subject_id"],
    ),
    "tz-aware time": (
        lambda e: e.with_columns(pl.col("time").dt.replace_time_zone("Europe/Paris")),
        ["time", "Europe/Paris"],
    ),
    "null subject_id": (
        lambda e: e.with_columns(
            pl.when(pl.int_range(pl.len()) == 1)
            .then(None)
            .otherwise(pl.col("subject_id"))
            .alias("subject_id")
        ),
        ["subject_id", "null"],
    ),
    "null code": (
        lambda e: e.with_columns(
            pl.when(pl.int_range(pl.len()) == 1).then(None).otherwise(pl.col("code")).alias("code")
        ),
        ["code", "null"],
    ),
    "unsorted times": (lambda e: e.reverse(), ["time", "not sorted"]),
    "no rows": (lambda e: e.head(0), ["empty"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_read_rejects_bad_files(tmp_path: Path, case: str) -> None:
    transform, words = BAD_FILES[case]
    path = write_shard(tmp_path / "ds" / "data" / "0.parquet", transform(sorted_events()))
    with pytest.raises(MedsFormatError) as info:
        read_meds_dataset(tmp_path / "ds")
    message = str(info.value)
    assert str(path) in message or case == "no rows", message
    for word in words:
        assert word in message, (case, message)


def test_read_rejects_interleaved_subjects(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {"subject_id": [1, 2, 1], "time": [day(0), day(0), day(1)], "code": ["a", "b", "c"]}
    )
    path = write_shard(tmp_path / "ds" / "data" / "0.parquet", frame)
    with pytest.raises(MedsFormatError, match="contiguous") as info:
        read_meds_dataset(tmp_path / "ds")
    assert str(path) in str(info.value) and "subject_id" in str(info.value)


def test_read_rejects_subject_in_two_files(tmp_path: Path) -> None:
    frame = sorted_events()
    write_shard(tmp_path / "ds" / "data" / "0.parquet", frame.filter(pl.col("subject_id") <= 2))
    second = write_shard(
        tmp_path / "ds" / "data" / "1.parquet", frame.filter(pl.col("subject_id") >= 2)
    )
    with pytest.raises(MedsFormatError, match="also appears") as info:
        read_meds_dataset(tmp_path / "ds")
    assert str(second) in str(info.value) and "subject_id" in str(info.value)


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_read_rejects_corrupt_parquet(tmp_path: Path, kind: str) -> None:
    good = write_shard(tmp_path / "ds" / "data" / "0.parquet", sorted_events())
    bad = tmp_path / "ds" / "data" / "1.parquet"
    if kind == "garbage":
        bad.write_bytes(b"this is not parquet at all" * 10)
    else:
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(MedsFormatError) as info:
        read_meds_dataset(tmp_path / "ds")
    assert str(bad) in str(info.value)


def test_read_rejects_missing_and_empty_dataset(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_meds_dataset(tmp_path / "absent")
    (tmp_path / "nodata").mkdir()
    with pytest.raises(FileNotFoundError, match="data"):
        read_meds_dataset(tmp_path / "nodata")
    (tmp_path / "empty" / "data").mkdir(parents=True)
    with pytest.raises(MedsFormatError, match="empty"):
        read_meds_dataset(tmp_path / "empty")


def test_read_rejects_bad_metadata(dataset: Path) -> None:
    (dataset / meds.dataset_metadata_filepath).write_text("{not json")
    with pytest.raises(MedsFormatError, match=r"dataset\.json"):
        read_meds_dataset(dataset)
    (dataset / meds.dataset_metadata_filepath).write_text('{"dataset_name": 3}')
    with pytest.raises(MedsFormatError, match=r"dataset\.json"):
        read_meds_dataset(dataset)


def test_read_rejects_bad_splits_file(dataset: Path) -> None:
    path = dataset / meds.subject_splits_filepath
    pl.DataFrame({"subject_id": ["1"], "split": ["train"]}).write_parquet(path)
    with pytest.raises(MedsFormatError) as info:
        read_meds_dataset(dataset)
    assert str(path) in str(info.value) and "subject_id" in str(info.value)
    pl.DataFrame({"subject_id": [1, 1], "split": ["train", "tuning"]}).write_parquet(path)
    with pytest.raises(MedsFormatError, match="twice"):
        read_meds_dataset(dataset)


# --------------------------------------------------------------------------------------------
# Splits.


def test_splits_deterministic_disjoint_and_covering() -> None:
    ids = list(range(1, 5001))
    a = make_subject_splits(ids, seed=7)
    b = make_subject_splits(list(reversed(ids)), seed=7)
    assert a.equals(b)  # independent of order
    assert a["subject_id"].is_unique().all() and a.height == len(ids)
    assert set(a["split"]) == set(SPLIT_NAMES)
    share = a["split"].value_counts().sort("split")
    counts = dict(zip(share["split"], share["count"], strict=True))
    assert abs(counts["train"] / len(ids) - 0.8) < 0.03
    # A subject's split does not depend on which other subjects are present.
    sub = make_subject_splits(ids[:100], seed=7)
    assert sub.equals(a.head(100))
    assert not make_subject_splits(ids, seed=8).equals(a)


def test_dataset_splits_by_hash_without_file(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_shard(root / "data" / "0.parquet", sorted_events())
    ds = read_meds_dataset(root, seed=3)
    assert not ds.splits_file
    assert ds.splits.equals(make_subject_splits([1, 2, 3], seed=3))


def test_dataset_honours_splits_file(tmp_path: Path) -> None:
    splits = pl.DataFrame({"subject_id": [1, 2, 3], "split": ["held_out", "train", "train"]})
    out = write_meds_dataset(tmp_path / "ds", make_events(), dataset_name="t", splits=splits)
    ds = read_meds_dataset(out, seed=123)
    assert ds.splits_file
    assert ds.splits.equals(splits)
    assert ds.split_ids("train").to_list() == [2, 3]
    held = ds.events("held_out").collect()
    assert set(held["subject_id"]) == {1}
    # Default writer splits are the hash splits of the seed.
    out2 = write_meds_dataset(tmp_path / "ds2", make_events(), dataset_name="t", seed=5)
    assert read_meds_dataset(out2).splits.equals(make_subject_splits([1, 2, 3], seed=5))


# --------------------------------------------------------------------------------------------
# Labels.


def write_labels(path: Path, **columns) -> Path:
    base = {"subject_id": [1, 2, 3], "prediction_time": [day(1), day(1), day(3)]}
    frame = pl.DataFrame(base | columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    return path


def test_read_labels_round_trip_and_aces_nulls(tmp_path: Path, dataset: Path) -> None:
    path = write_labels(
        tmp_path / "labels.parquet",
        boolean_value=[True, False, True],
        integer_value=pl.Series([None, None, None], dtype=pl.Int64),
        categorical_value=["a", "b", "a"],
    )
    labels = read_labels(path, dataset=read_meds_dataset(dataset))
    assert labels.columns == ["subject_id", "prediction_time", "boolean_value", "categorical_value"]
    assert labels.schema["prediction_time"] == pl.Datetime("us")
    assert labels["boolean_value"].to_list() == [True, False, True]


def test_read_labels_directory(tmp_path: Path) -> None:
    write_labels(tmp_path / "lab" / "0.parquet", float_value=[0.5, 1.0, 2.0])
    write_labels(tmp_path / "lab" / "sub" / "1.parquet", float_value=[1.5, 1.0, 2.0])
    labels = read_labels(tmp_path / "lab")
    assert labels.height == 6 and labels.schema["float_value"] == pl.Float32


BAD_LABELS = {
    "no prediction_time": (
        lambda p: pl.DataFrame({"subject_id": [1], "time": [day(1)], "boolean_value": [True]}),
        "prediction_time",
    ),
    "string subject_id": (
        lambda p: pl.DataFrame(
            {"subject_id": ["1"], "prediction_time": [day(1)], "boolean_value": [True]}
        ),
        "subject_id",
    ),
    "tz-aware": (
        lambda p: pl.DataFrame(
            {"subject_id": [1], "prediction_time": [day(1)], "boolean_value": [True]}
        ).with_columns(pl.col("prediction_time").dt.replace_time_zone("UTC")),
        "prediction_time",
    ),
    "no values": (
        lambda p: pl.DataFrame({"subject_id": [1], "prediction_time": [day(1)]}),
        "boolean_value",
    ),
    "null label": (
        lambda p: pl.DataFrame(
            {"subject_id": [1, 2], "prediction_time": [day(1)] * 2, "boolean_value": [True, None]}
        ),
        "boolean_value",
    ),
    "wrong value dtype": (
        lambda p: pl.DataFrame(
            {"subject_id": [1], "prediction_time": [day(1)], "boolean_value": ["yes"]}
        ),
        "boolean_value",
    ),
}


@pytest.mark.parametrize("case", list(BAD_LABELS))
def test_read_labels_rejects_bad_input(tmp_path: Path, case: str) -> None:
    make, column = BAD_LABELS[case]
    path = tmp_path / "labels.parquet"
    make(path).write_parquet(path)
    with pytest.raises(MedsFormatError) as info:
        read_labels(path)
    assert str(path) in str(info.value) and column in str(info.value), str(info.value)


def test_read_labels_corrupt_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "labels.parquet"
    path.write_bytes(b"PAR1 garbage")
    with pytest.raises(MedsFormatError, match=r"labels\.parquet"):
        read_labels(path)
    with pytest.raises(FileNotFoundError):
        read_labels(tmp_path / "absent.parquet")


def test_labels_checked_against_dataset(tmp_path: Path, dataset: Path) -> None:
    ds = read_meds_dataset(dataset)
    unknown = write_labels(tmp_path / "u.parquet", subject_id=[1, 2, 99], boolean_value=[True] * 3)
    with pytest.raises(MedsFormatError, match="99") as info:
        read_labels(unknown, dataset=ds)
    assert "subject_id" in str(info.value)
    # Subject 2's first timed event is at day(1): a second before it precedes all its events.
    early = write_labels(
        tmp_path / "e.parquet",
        prediction_time=[day(1), day(1, -1), day(3)],
        boolean_value=[True] * 3,
    )
    with pytest.raises(MedsFormatError, match="precede") as info:
        read_labels(early, dataset=ds)
    assert "prediction_time" in str(info.value)
