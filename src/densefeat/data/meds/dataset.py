"""Reading a MEDS dataset directory: :class:`MedsDataset` and :func:`read_meds_dataset`."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import meds
import polars as pl

from ..splits import make_subject_splits
from .schema import (
    MedsFormatError,
    check_event_content,
    conform_codes,
    conform_exprs,
    conform_splits,
    empty_codes,
    guarded_read,
)


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


def _data_files(root: Path) -> list[Path]:
    data_dir = root / meds.data_subdirectory
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{root} is not a MEDS dataset: no {meds.data_subdirectory}/")
    files = sorted(p for p in data_dir.rglob("*.parquet") if p.is_file())
    if not files:
        raise MedsFormatError(f"{data_dir}: no parquet files (an empty dataset)")
    return files


def _scan_file(path: Path) -> pl.LazyFrame:
    schema = guarded_read(path, lambda: pl.read_parquet_schema(path))
    return pl.scan_parquet(path).select(conform_exprs(schema, str(path)))


def _check_files(scans: Sequence[tuple[Path, pl.LazyFrame]]) -> None:
    total = 0
    owners = []
    for i, (path, scan) in enumerate(scans):
        total += guarded_read(
            path, lambda s=scan, p=path: check_event_content(s, str(p), require_rows=False)
        )
        ids = guarded_read(path, lambda s=scan: s.select(pl.col("subject_id").unique()).collect())
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
    return conform_codes(guarded_read(path, lambda: pl.read_parquet(path)), str(path))


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
        raw = guarded_read(splits_path, lambda: pl.read_parquet(splits_path))
        splits = conform_splits(raw, str(splits_path))
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
