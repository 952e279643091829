"""Reading task labels in the MEDS label schema (``subject_id, prediction_time, boolean_value``)."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from .dataset import MedsDataset
from .schema import LABEL_VALUE_COLUMNS, STRING_TYPES, MedsFormatError, guarded_read, missing_column

#: Label file types: MEDS's Parquet, and CSV / TSV typed the same way (densefeat.io.tables:
#: ``true``/``false`` booleans, ISO datetimes), then validated by the same checks.
_LABEL_SUFFIXES = (".parquet", ".csv", ".tsv")


def _read_label_file(path: Path) -> pl.DataFrame:
    if path.suffix.lower() in (".csv", ".tsv"):
        from ...io.tables import read_text_table

        try:
            return read_text_table(path)
        except ValueError as exc:
            raise MedsFormatError(str(exc)) from exc
    return pl.read_parquet(path)


def _label_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _LABEL_SUFFIXES
        )
        if not files:
            raise MedsFormatError(f"{path}: no label files (.parquet, .csv or .tsv)")
        return files
    raise FileNotFoundError(f"no label file or directory at {path}")


def _conform_labels(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    for name in ("subject_id", "prediction_time"):
        if name not in frame.columns:
            raise missing_column(name, frame.columns, source)
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
            "categorical_value": isinstance(have, STRING_TYPES),
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
    """Read MEDS labels (a file, or a directory of them, e.g. ACES output).

    Args:
        path: a label file (``.parquet``, or ``.csv`` / ``.tsv`` with the same columns,
            ``prediction_time`` as ISO datetimes and ``boolean_value`` as true/false) or a
            directory searched recursively.
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
        frames.append(_conform_labels(guarded_read(f, lambda f=f: _read_label_file(f)), str(f)))
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
