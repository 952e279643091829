"""MEDS, the canonical on-disk format of densefeat: validated reading and atomic writing.

A MEDS dataset (Medical Event Data Standard, https://medical-event-data-standard.github.io) is a
directory::

    data/**/*.parquet                subject_id, time, code, numeric_value, text_value
    metadata/codes.parquet           code, description, parent_codes
    metadata/dataset.json            dataset_name, dataset_version, etl_name, ... (all optional)
    metadata/subject_splits.parquet  subject_id, split (train / tuning / held_out)

Names, split names and the Arrow schemas come from the ``meds`` package (0.4.x), so files we write
pass ``meds.DataSchema.validate``. The in-memory contract of densefeat is polars:

* events: ``subject_id`` Int64 (non-null), ``time`` Datetime("us") (null = static event),
  ``code`` Utf8 (non-null), ``numeric_value`` Float32, ``text_value`` Utf8; sorted by subject_id,
  then time with nulls (static events) first.
* codes: ``code`` Utf8, ``description`` Utf8, ``parent_codes`` List(Utf8).

Dtype rules (the same when writing a DataFrame and when reading a file):

* ``subject_id`` must be an integer column (any width; cast to Int64). A string column is refused
  rather than parsed: ids like ``"00123"`` and ``"123"`` would silently merge.
* ``time`` must be a *naive* Datetime (any unit; cast to microseconds), as MEDS's
  ``timestamp[us]`` has no timezone. A tz-aware column is refused, not converted: whether the
  naive times of a dataset mean local time or UTC is the data owner's call, and mixing the two
  across shards would shift events by hours. A Date column is refused too (say which time of
  day the events happened: convert it to Datetime first).
* ``code`` and ``text_value`` are strings (Utf8/Categorical/Enum); ``numeric_value`` any numeric
  type (cast to Float32). The two optional columns may be absent (they read as nulls).
* Extra columns are allowed by MEDS; the reader projects the five core columns only.
* Within each data file, the rows of a subject are contiguous and sorted by time (static, null
  times first), and no subject appears in two files (MEDS's two data properties). Subjects need
  not be in ascending order across or within files on read; files we write are fully sorted.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import meds
import polars as pl
import pyarrow.parquet as pq

from .splits import DEFAULT_FRACTIONS, SPLIT_NAMES, assign_subject_splits

__all__ = [
    "CODES_SCHEMA",
    "EVENT_SCHEMA",
    "LABEL_VALUE_COLUMNS",
    "MedsDataset",
    "MedsFormatError",
    "conform_codes",
    "conform_events",
    "empty_codes",
    "empty_events",
    "make_subject_splits",
    "read_labels",
    "read_meds_dataset",
    "write_meds_dataset",
]

#: The in-memory event schema (polars), in MEDS column order.
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "subject_id": pl.Int64(),
    "time": pl.Datetime("us"),
    "code": pl.Utf8(),
    "numeric_value": pl.Float32(),
    "text_value": pl.Utf8(),
}
#: The in-memory code-metadata schema (polars).
CODES_SCHEMA: dict[str, pl.DataType] = {
    "code": pl.Utf8(),
    "description": pl.Utf8(),
    "parent_codes": pl.List(pl.Utf8()),
}
#: MEDS LabelSchema's optional value columns and their polars dtypes.
LABEL_VALUE_COLUMNS: dict[str, pl.DataType] = {
    "boolean_value": pl.Boolean(),
    "integer_value": pl.Int64(),
    "float_value": pl.Float32(),
    "categorical_value": pl.Utf8(),
}
_REQUIRED_EVENT_COLUMNS = ("subject_id", "time", "code")
_STRING_TYPES = (pl.Utf8, pl.Categorical, pl.Enum)
DEFAULT_SHARD_ROWS = 1_000_000


class MedsFormatError(ValueError):
    """Input that is not valid MEDS; the message names the file (or table) and the column."""


# --------------------------------------------------------------------------------------------
# Schema conformance: one rule set for DataFrames handed to the writer and files on disk.


def _missing_column(name: str, columns: Sequence[str], source: str) -> MedsFormatError:
    hint = difflib.get_close_matches(name, columns, n=1, cutoff=0.5)
    did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ""
    return MedsFormatError(
        f"{source}: missing required column {name!r} (columns: {', '.join(columns) or 'none'})"
        f"{did_you_mean}"
    )


def _conform_column(name: str, dtype: pl.DataType, source: str) -> pl.Expr:
    """Cast expression of one core column to its MEDS dtype, or a clear error."""
    col = pl.col(name)
    where = f"{source}: column {name!r} has dtype {dtype}"
    if dtype == pl.Null:  # an all-null column written without a type
        return pl.lit(None, EVENT_SCHEMA[name]).alias(name)
    if name == "subject_id":
        if not dtype.is_integer():
            raise MedsFormatError(f"{where}; MEDS needs integer subject ids (Int64)")
        return col.cast(pl.Int64)
    if name == "time":
        if isinstance(dtype, pl.Datetime):
            if dtype.time_zone is not None:
                raise MedsFormatError(
                    f"{where} (timezone {dtype.time_zone!r}); MEDS times are naive "
                    "timestamp[us]: convert to naive local or UTC times before writing"
                )
            return col.cast(pl.Datetime("us"))
        raise MedsFormatError(f"{where}; MEDS needs a naive Datetime (timestamp[us])")
    if name in ("code", "text_value"):
        if not isinstance(dtype, _STRING_TYPES):
            raise MedsFormatError(f"{where}; MEDS needs a string column")
        return col.cast(pl.Utf8)
    if name == "numeric_value":
        if not dtype.is_numeric():
            raise MedsFormatError(f"{where}; MEDS needs a numeric (float32) column")
        return col.cast(pl.Float32)
    raise AssertionError(name)  # pragma: no cover


def _conform_exprs(schema: Mapping[str, pl.DataType], source: str) -> list[pl.Expr]:
    columns = list(schema)
    exprs = []
    for name in EVENT_SCHEMA:
        if name in schema:
            exprs.append(_conform_column(name, schema[name], source))
        elif name in _REQUIRED_EVENT_COLUMNS:
            raise _missing_column(name, columns, source)
        else:
            exprs.append(pl.lit(None, EVENT_SCHEMA[name]).alias(name))
    return exprs


def conform_events(frame: pl.LazyFrame, source: str = "events") -> pl.LazyFrame:
    """Project and cast a frame to the event schema (dtype rules in the module docstring).

    Only the schema is checked here; see :func:`_check_event_content` for row-level rules.

    Raises:
        MedsFormatError: a missing required column or a wrong dtype, naming ``source``.
    """
    return frame.select(_conform_exprs(frame.collect_schema(), source))


def conform_codes(codes: pl.DataFrame, source: str = "codes") -> pl.DataFrame:
    """Cast a code-metadata frame to :data:`CODES_SCHEMA`, one row per code.

    Raises:
        MedsFormatError: no ``code`` column, wrong dtypes or null codes.
    """
    if "code" not in codes.columns:
        raise _missing_column("code", codes.columns, source)
    exprs = []
    for name, dtype in CODES_SCHEMA.items():
        if name not in codes.columns or codes.schema[name] == pl.Null:
            exprs.append(pl.lit(None, dtype).alias(name))
            continue
        have = codes.schema[name]
        ok = (
            isinstance(have, pl.List) and isinstance(have.inner, _STRING_TYPES)
            if name == "parent_codes"
            else isinstance(have, _STRING_TYPES)
        )
        if not ok:
            raise MedsFormatError(f"{source}: column {name!r} has dtype {have}; want {dtype}")
        exprs.append(pl.col(name).cast(dtype))
    out = codes.select(exprs)
    if out["code"].null_count():
        raise MedsFormatError(f"{source}: column 'code' has {out['code'].null_count()} nulls")
    return out.unique("code", keep="first", maintain_order=True)


def empty_events() -> pl.DataFrame:
    """An event frame with no rows and the contract's schema."""
    return pl.DataFrame(schema=EVENT_SCHEMA)


def empty_codes() -> pl.DataFrame:
    """A code-metadata frame with no rows and the contract's schema."""
    return pl.DataFrame(schema=CODES_SCHEMA)


# --------------------------------------------------------------------------------------------
# Row-level checks.


def _check_event_content(frame: pl.LazyFrame, source: str, *, require_rows: bool) -> int:
    """Nulls, contiguity and time order of conformed events in one pass; returns the row count.

    Raises:
        MedsFormatError: naming ``source``, the column and the first offending row.
    """
    # Null times sort first: map them to the smallest Int64 so one comparison checks both rules.
    key = pl.col("time").cast(pl.Int64).fill_null(-(2**63))
    same = pl.col("subject_id") == pl.col("subject_id").shift(1)
    bad_time = same & (key < key.shift(1))
    stats = frame.select(
        n=pl.len(),
        null_subject=pl.col("subject_id").null_count(),
        null_code=pl.col("code").null_count(),
        runs=(~same.fill_null(False)).sum(),
        n_subjects=pl.col("subject_id").n_unique(),
        n_bad_time=bad_time.sum(),
        first_bad_time=bad_time.arg_max(),
    ).collect()
    row = stats.row(0, named=True)
    if require_rows and row["n"] == 0:
        raise MedsFormatError(f"{source}: no events (an empty dataset)")
    for col in ("subject", "code"):
        name = "subject_id" if col == "subject" else "code"
        if row[f"null_{col}"]:
            raise MedsFormatError(
                f"{source}: column {name!r} has {row[f'null_{col}']} null values; "
                "MEDS requires it non-null"
            )
    if row["runs"] != row["n_subjects"]:
        raise MedsFormatError(
            f"{source}: column 'subject_id' is not sorted: the rows of a subject must be "
            "contiguous (sort by subject_id, then time)"
        )
    if row["n_bad_time"]:
        i = row["first_bad_time"]
        subject = frame.select(pl.col("subject_id").gather(i)).collect().item()
        raise MedsFormatError(
            f"{source}: column 'time' is not sorted within subject {subject} (row {i}; "
            f"{row['n_bad_time']} rows out of order): sort by subject_id, then time with "
            "static (null) times first"
        )
    return int(row["n"])


def _sort_events(events: pl.DataFrame) -> pl.DataFrame:
    # maintain_order: events at the same time keep the caller's order (deterministic output).
    return events.sort(["subject_id", "time"], nulls_last=False, maintain_order=True)


# --------------------------------------------------------------------------------------------
# Splits.


def make_subject_splits(
    subject_ids: pl.Series | Sequence[int], seed: int = 0, fractions=DEFAULT_FRACTIONS
) -> pl.DataFrame:
    """Deterministic ``subject_id, split`` for the given subjects (hash of seed and subject_id).

    Args:
        subject_ids: integer subject ids (duplicates are collapsed).
        seed: split seed.
        fractions: shares of train, tuning and held_out.

    Returns:
        DataFrame sorted by subject_id, MEDS SubjectSplitSchema columns.
    """
    ids = pl.Series("subject_id", subject_ids, dtype=pl.Int64).unique().sort()
    names = assign_subject_splits(ids.to_list(), seed, tuple(fractions), SPLIT_NAMES)
    return pl.DataFrame({"subject_id": ids, "split": pl.Series(names, dtype=pl.Utf8)})


def _conform_splits(splits: pl.DataFrame, source: str) -> pl.DataFrame:
    for name in ("subject_id", "split"):
        if name not in splits.columns:
            raise _missing_column(name, splits.columns, source)
    if not splits.schema["subject_id"].is_integer():
        raise MedsFormatError(
            f"{source}: column 'subject_id' has dtype {splits.schema['subject_id']}; want Int64"
        )
    if not isinstance(splits.schema["split"], _STRING_TYPES):
        raise MedsFormatError(
            f"{source}: column 'split' has dtype {splits.schema['split']}; want a string"
        )
    out = splits.select(pl.col("subject_id").cast(pl.Int64), pl.col("split").cast(pl.Utf8))
    for name in out.columns:
        if out[name].null_count():
            raise MedsFormatError(f"{source}: column {name!r} has null values")
    if out["subject_id"].is_duplicated().any():
        dup = out.filter(pl.col("subject_id").is_duplicated())["subject_id"][0]
        raise MedsFormatError(f"{source}: column 'subject_id' lists subject {dup} twice")
    return out.sort("subject_id")


# --------------------------------------------------------------------------------------------
# Writing.


def _prepare_output(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise MedsFormatError(f"{out_dir} exists and is not a directory")
        if any(out_dir.iterdir()) and not overwrite:
            raise MedsFormatError(
                f"{out_dir} exists and is not empty; choose another directory or overwrite "
                "it (--overwrite)"
            )


def _atomic_publish(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` tree to ``out_dir`` with renames only."""
    trash = None
    if out_dir.exists() and (overwrite or not any(out_dir.iterdir())):
        # Rename the old tree aside first, so out_dir is never a mix of old and new files.
        trash = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out_dir, trash)
    try:
        os.replace(tmp, out_dir)
    except OSError as exc:
        if trash is not None:
            os.replace(trash, out_dir)
        # Someone else filled out_dir meanwhile (e.g. a concurrent conversion).
        raise MedsFormatError(f"could not move the new dataset to {out_dir}: {exc}") from exc
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def _shard_index(events: pl.DataFrame, shard_rows: int) -> pl.Series:
    """Shard number of each (sorted) row: whole subjects, about ``shard_rows`` rows a shard."""
    per_subject = events.group_by("subject_id", maintain_order=True).len()
    start = per_subject["len"].cum_sum() - per_subject["len"]
    shard = per_subject.select("subject_id", shard=(start // max(shard_rows, 1)).cast(pl.Int64))
    return events.select("subject_id").join(
        shard, on="subject_id", how="left", maintain_order="left"
    )["shard"]


def _write_data(events: pl.DataFrame, data_dir: Path, shard_rows: int) -> list[Path]:
    data_dir.mkdir(parents=True)
    target = meds.DataSchema.schema()
    paths = []
    shards = events.with_columns(_shard=_shard_index(events, shard_rows))
    for (shard,), part in shards.group_by("_shard", maintain_order=True):
        table = part.drop("_shard").to_arrow().cast(target)
        meds.DataSchema.validate(table)  # belt and braces: exactly MEDS's Arrow types
        path = data_dir / f"{int(shard)}.parquet"
        pq.write_table(table, path, compression="zstd")
        paths.append(path)
    return paths


def _dataset_json(
    dataset_name: str, dataset_version: str, etl_name: str, etl_version: str | None
) -> dict[str, Any]:
    from .. import __version__

    doc = {
        "dataset_name": dataset_name,
        "dataset_version": dataset_version,
        "etl_name": etl_name,
        "etl_version": etl_version or __version__,
        "meds_version": meds.__version__,
        "created_at": _dt.datetime.now(_dt.UTC).replace(tzinfo=None).isoformat(),
    }
    meds.DatasetMetadataSchema.validate(doc)
    return doc


def write_meds_dataset(
    out_dir: str | os.PathLike[str],
    data: pl.DataFrame,
    *,
    codes: pl.DataFrame | None = None,
    dataset_name: str,
    dataset_version: str = "unknown",
    etl_name: str = "densefeat",
    etl_version: str | None = None,
    splits: pl.DataFrame | None = None,
    seed: int = 0,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    overwrite: bool = False,
) -> Path:
    """Validate events and write them as a MEDS dataset, atomically.

    Everything is written into a hidden sibling directory first and renamed to ``out_dir`` at the
    end, so on any error nothing is left at ``out_dir`` (and an existing dataset there survives).

    Args:
        out_dir: the dataset directory to create; must be absent or empty unless ``overwrite``.
        data: events in the contract's schema (dtype rules in the module docstring); sorted here.
        codes: code metadata; codes of ``data`` missing from it are added with null description.
        dataset_name: ``dataset.json``'s dataset_name.
        dataset_version: ``dataset.json``'s dataset_version.
        etl_name: ``dataset.json``'s etl_name.
        etl_version: ``dataset.json``'s etl_version; densefeat's version by default.
        splits: ``subject_id, split``; by default deterministic train/tuning/held_out
            (80/10/10 by a hash of ``seed`` and subject_id).
        seed: split seed, used only when ``splits`` is None.
        shard_rows: approximate rows per data file; a subject is never split across files.
        overwrite: replace a non-empty ``out_dir``.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        MedsFormatError: invalid events, codes or splits, or a non-empty ``out_dir``.
    """
    out_dir = Path(out_dir)
    _prepare_output(out_dir, overwrite)
    events = data.lazy().pipe(conform_events, "events").collect()
    for name in ("subject_id", "code"):
        if events[name].null_count():
            raise MedsFormatError(
                f"events: column {name!r} has {events[name].null_count()} null values"
            )
    if events.height == 0:
        raise MedsFormatError("events: no events (an empty dataset)")
    events = _sort_events(events)
    code_table = _complete_codes(codes, events)
    subjects = events["subject_id"].unique()
    split_table = (
        make_subject_splits(subjects, seed) if splits is None else _conform_splits(splits, "splits")
    )
    metadata = _dataset_json(dataset_name, dataset_version, etl_name, etl_version)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        _write_data(events, tmp / meds.data_subdirectory, shard_rows)
        (tmp / "metadata").mkdir()
        pq.write_table(
            code_table.to_arrow().cast(meds.CodeMetadataSchema.schema()),
            tmp / meds.code_metadata_filepath,
        )
        pq.write_table(
            split_table.to_arrow().cast(meds.SubjectSplitSchema.schema()),
            tmp / meds.subject_splits_filepath,
        )
        (tmp / meds.dataset_metadata_filepath).write_text(json.dumps(metadata, indent=2) + "\n")
        _atomic_publish(tmp, out_dir, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _complete_codes(codes: pl.DataFrame | None, events: pl.DataFrame) -> pl.DataFrame:
    # MEDS: every code of the data appears in codes.parquet.
    table = empty_codes() if codes is None else conform_codes(codes)
    used = events.select(pl.col("code").unique().sort())
    missing = used.join(table.select("code"), on="code", how="anti")
    if missing.height:
        table = pl.concat(
            [
                table,
                missing.with_columns(
                    pl.lit(None, pl.Utf8).alias("description"),
                    pl.lit(None, pl.List(pl.Utf8)).alias("parent_codes"),
                ),
            ]
        )
    return table.sort("code")


# --------------------------------------------------------------------------------------------
# Reading.


@dataclass
class MedsDataset:
    """A MEDS dataset opened lazily: events as a LazyFrame, metadata in memory.

    Attributes:
        root: the dataset directory.
        data_files: the data parquet files, sorted by path.
        data: all events in the contract's schema (one scan over ``data_files``).
        codes: ``metadata/codes.parquet`` (empty if the dataset has none).
        metadata: ``metadata/dataset.json`` (empty if the dataset has none).
        splits_file: whether ``metadata/subject_splits.parquet`` exists (then it is honoured).
        seed: the split seed used when the dataset has no splits file.
    """

    root: Path
    data_files: tuple[Path, ...]
    data: pl.LazyFrame
    codes: pl.DataFrame
    metadata: dict[str, Any]
    splits_file: bool
    seed: int = 0
    _splits: pl.DataFrame | None = field(default=None, repr=False)

    @cached_property
    def subject_ids(self) -> pl.Series:
        """All subject ids of the data, sorted."""
        return self.data.select(pl.col("subject_id").unique().sort()).collect()["subject_id"]

    @cached_property
    def splits(self) -> pl.DataFrame:
        """``subject_id, split``: the dataset's splits file, else deterministic hash splits.

        A splits file is used as it is: subjects it does not list belong to no split.
        """
        if self._splits is not None:
            return self._splits
        return make_subject_splits(self.subject_ids, self.seed)

    def split_ids(self, split: str) -> pl.Series:
        """Subject ids of one split (e.g. ``"train"``)."""
        return self.splits.filter(pl.col("split") == split)["subject_id"]

    def events(self, split: str | None = None) -> pl.LazyFrame:
        """Events, of one split's subjects only when ``split`` is given."""
        if split is None:
            return self.data
        ids = self.split_ids(split)
        return self.data.filter(pl.col("subject_id").is_in(ids.implode()))


def _guard(source: Path, action: Callable[[], Any]) -> Any:
    """Run a parquet read; unreadable files become an error naming the file."""
    try:
        return action()
    except MedsFormatError:
        raise
    except Exception as exc:  # polars/pyarrow raise many types for corrupt files
        raise MedsFormatError(f"{source}: not a readable parquet file ({exc})") from exc


def _data_files(root: Path) -> list[Path]:
    data_dir = root / meds.data_subdirectory
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{root} is not a MEDS dataset: no {meds.data_subdirectory}/")
    files = sorted(p for p in data_dir.rglob("*.parquet") if p.is_file())
    if not files:
        raise MedsFormatError(f"{data_dir}: no parquet files (an empty dataset)")
    return files


def _scan_file(path: Path) -> pl.LazyFrame:
    schema = _guard(path, lambda: pl.read_parquet_schema(path))
    return pl.scan_parquet(path).select(_conform_exprs(schema, str(path)))


def _check_files(scans: Sequence[tuple[Path, pl.LazyFrame]]) -> None:
    total = 0
    owners = []
    for i, (path, scan) in enumerate(scans):
        total += _guard(
            path, lambda s=scan, p=path: _check_event_content(s, str(p), require_rows=False)
        )
        ids = _guard(path, lambda s=scan: s.select(pl.col("subject_id").unique()).collect())
        owners.append(ids.with_columns(file=pl.lit(i, pl.Int32)))
    # A subject in two files, found with one group-by instead of a Python loop over ids.
    shared = (
        pl.concat(owners)
        .group_by("subject_id")
        .agg(pl.col("file").sort())
        .filter(pl.col("file").list.len() > 1)
    )
    if shared.height:
        sid, files = shared.sort("subject_id").row(0)
        first, second = scans[files[0]][0], scans[files[1]][0]
        raise MedsFormatError(
            f"{second}: column 'subject_id': subject {sid} also appears in {first}; MEDS keeps "
            "each subject in one file"
        )
    if total == 0:
        raise MedsFormatError(f"{scans[0][0].parent}: no events (an empty dataset)")


def _read_codes(root: Path) -> pl.DataFrame:
    path = root / meds.code_metadata_filepath
    if not path.is_file():
        return empty_codes()
    return conform_codes(_guard(path, lambda: pl.read_parquet(path)), str(path))


def _read_dataset_json(root: Path) -> dict[str, Any]:
    path = root / meds.dataset_metadata_filepath
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MedsFormatError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise MedsFormatError(f"{path}: expected a JSON object")
    try:
        meds.DatasetMetadataSchema.validate(doc)
    except Exception as exc:
        raise MedsFormatError(f"{path}: does not follow MEDS's dataset metadata ({exc})") from exc
    return doc


def read_meds_dataset(
    path: str | os.PathLike[str], *, validate: bool = True, seed: int = 0
) -> MedsDataset:
    """Open a MEDS dataset directory lazily, validating it first.

    Args:
        path: the dataset directory (holding ``data/`` and usually ``metadata/``).
        validate: check every data file's rows (nulls, contiguity and time order, subjects in one
            file). Schemas are always checked. Reads the subject_id, time and code columns once.
        seed: split seed for datasets without ``metadata/subject_splits.parquet``.

    Returns:
        the opened dataset.

    Raises:
        FileNotFoundError: no such directory or no ``data/`` in it.
        MedsFormatError: any violation of the rules in the module docstring, naming the file
            and column.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"no MEDS dataset directory at {root}")
    files = _data_files(root)
    scans = [(f, _scan_file(f)) for f in files]
    if validate:
        _check_files(scans)
    splits_path = root / meds.subject_splits_filepath
    splits = None
    if splits_path.is_file():
        raw = _guard(splits_path, lambda: pl.read_parquet(splits_path))
        splits = _conform_splits(raw, str(splits_path))
    data = pl.concat([s for _, s in scans], how="vertical") if len(scans) > 1 else scans[0][1]
    return MedsDataset(
        root=root,
        data_files=tuple(files),
        data=data,
        codes=_read_codes(root),
        metadata=_read_dataset_json(root),
        splits_file=splits is not None,
        seed=seed,
        _splits=splits,
    )


# --------------------------------------------------------------------------------------------
# Labels.


def _label_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if not files:
            raise MedsFormatError(f"{path}: no label parquet files")
        return files
    raise FileNotFoundError(f"no label file or directory at {path}")


def _conform_labels(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    for name in ("subject_id", "prediction_time"):
        if name not in frame.columns:
            raise _missing_column(name, frame.columns, source)
    sid, ptime = frame.schema["subject_id"], frame.schema["prediction_time"]
    if not sid.is_integer():
        raise MedsFormatError(f"{source}: column 'subject_id' has dtype {sid}; want Int64")
    if not isinstance(ptime, pl.Datetime) or ptime.time_zone is not None:
        raise MedsFormatError(
            f"{source}: column 'prediction_time' has dtype {ptime}; want a naive Datetime"
        )
    exprs = [pl.col("subject_id").cast(pl.Int64), pl.col("prediction_time").cast(pl.Datetime("us"))]
    for name, dtype in LABEL_VALUE_COLUMNS.items():
        if name not in frame.columns or frame[name].null_count() == frame.height:
            continue  # ACES writes every value column, all-null where unused
        have = frame.schema[name]
        ok = {
            "boolean_value": have == pl.Boolean,
            "integer_value": have.is_integer(),
            "float_value": have.is_numeric(),
            "categorical_value": isinstance(have, _STRING_TYPES),
        }[name]
        if not ok:
            raise MedsFormatError(f"{source}: column {name!r} has dtype {have}; want {dtype}")
        if frame[name].null_count():
            raise MedsFormatError(
                f"{source}: column {name!r} has {frame[name].null_count()} null labels"
            )
        exprs.append(pl.col(name).cast(dtype))
    if len(exprs) == 2:
        raise MedsFormatError(
            f"{source}: no label values: expected one of {', '.join(LABEL_VALUE_COLUMNS)}"
        )
    out = frame.select(exprs)
    for name in ("subject_id", "prediction_time"):
        if out[name].null_count():
            raise MedsFormatError(f"{source}: column {name!r} has {out[name].null_count()} nulls")
    return out


def _check_labels_against(labels: pl.DataFrame, dataset: MedsDataset, source: str) -> None:
    first = (
        dataset.data.filter(pl.col("time").is_not_null())
        .group_by("subject_id")
        .agg(first_time=pl.col("time").min())
        .collect()
    )
    known = dataset.subject_ids.implode()
    unknown = labels.filter(~pl.col("subject_id").is_in(known))
    if unknown.height:
        ids = unknown["subject_id"].unique().sort().head(5).to_list()
        raise MedsFormatError(
            f"{source}: column 'subject_id': {unknown['subject_id'].n_unique()} subjects not in "
            f"the dataset {dataset.root} (e.g. {ids})"
        )
    early = labels.join(first, on="subject_id", how="left").filter(
        pl.col("first_time").is_null() | (pl.col("prediction_time") < pl.col("first_time"))
    )
    if early.height:
        row = early.row(0, named=True)
        raise MedsFormatError(
            f"{source}: column 'prediction_time': {early.height} labels precede all events of "
            f"their subject (e.g. subject {row['subject_id']} at {row['prediction_time']}, first "
            f"timed event {row['first_time']})"
        )


def read_labels(
    path: str | os.PathLike[str], *, dataset: MedsDataset | None = None
) -> pl.DataFrame:
    """Read MEDS label parquet (a file, or a directory of them, e.g. ACES output).

    Args:
        path: a label parquet file or a directory searched recursively.
        dataset: when given, every label's subject must be in it and its prediction_time at or
            after the subject's first timed event.

    Returns:
        ``subject_id`` Int64, ``prediction_time`` Datetime("us") and each value column that
        holds labels (boolean_value Boolean, integer_value Int64, float_value Float32,
        categorical_value Utf8), sorted by subject_id and prediction_time. Extra columns are
        dropped (MEDS's LabelSchema allows none).

    Raises:
        FileNotFoundError: no such path.
        MedsFormatError: unreadable file, missing/misnamed column, wrong dtype, null or no
            labels, or labels that do not fit ``dataset``; naming the file and column.
    """
    root = Path(path)
    frames = []
    for f in _label_files(root):
        frames.append(_conform_labels(_guard(f, lambda f=f: pl.read_parquet(f)), str(f)))
    try:
        labels = pl.concat(frames, how="diagonal_relaxed")
    except Exception as exc:
        raise MedsFormatError(f"{root}: label files disagree on their value columns") from exc
    if labels.height == 0:
        raise MedsFormatError(f"{root}: no labels (an empty label file)")
    for name in LABEL_VALUE_COLUMNS:
        if name in labels.columns and labels[name].null_count():
            raise MedsFormatError(f"{root}: column {name!r} is missing from some label files")
    if dataset is not None:
        _check_labels_against(labels, dataset, str(root))
    return labels.sort(["subject_id", "prediction_time"], maintain_order=True)
