"""Atomic writing of a MEDS dataset (sorted, sharded, validated with the ``meds`` package)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import meds
import polars as pl
import pyarrow.parquet as pq

from ..splits import make_subject_splits
from .schema import MedsFormatError, conform_codes, conform_events, conform_splits, empty_codes

DEFAULT_SHARD_ROWS = 1_000_000


def _sort_events(events: pl.DataFrame) -> pl.DataFrame:
    # maintain_order: events at the same time keep the caller's order (deterministic output).
    return events.sort(["subject_id", "time"], nulls_last=False, maintain_order=True)


def prepare_output_dir(out_dir: Path, overwrite: bool) -> None:
    """Fail before a (long) conversion when ``out_dir`` is a file, or holds files and not
    ``overwrite``."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise MedsFormatError(f"{out_dir} exists and is not a directory")
        if any(out_dir.iterdir()) and not overwrite:
            raise MedsFormatError(
                f"{out_dir} exists and is not empty; choose another directory or overwrite "
                "it (--overwrite)"
            )


def publish_dataset_dir(tmp: Path, out_dir: Path, overwrite: bool) -> None:
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
    from ... import __version__

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
    prepare_output_dir(out_dir, overwrite)
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
        make_subject_splits(subjects, seed) if splits is None else conform_splits(splits, "splits")
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
        publish_dataset_dir(tmp, out_dir, overwrite)
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
