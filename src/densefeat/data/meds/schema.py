"""The MEDS schemas as polars dtypes, and the conformance checks every reader and writer applies.

The dtype rules are those of :mod:`densefeat.data.meds` (package docstring).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

#: Codes of the events that open and close an observation period (data coverage, not clinical
#: events: censoring reads them, models never see them).
OBSERVATION_START_CODE = "MEDS_OBSERVATION_START"
OBSERVATION_END_CODE = "MEDS_OBSERVATION_END"

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


STRING_TYPES = (pl.Utf8, pl.Categorical, pl.Enum)


class MedsFormatError(ValueError):
    """Input that is not valid MEDS; the message names the file (or table) and the column."""


def missing_column(name: str, columns: Sequence[str], source: str) -> MedsFormatError:
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
        if not isinstance(dtype, STRING_TYPES):
            raise MedsFormatError(f"{where}; MEDS needs a string column")
        return col.cast(pl.Utf8)
    if name == "numeric_value":
        if not dtype.is_numeric():
            raise MedsFormatError(f"{where}; MEDS needs a numeric (float32) column")
        return col.cast(pl.Float32)
    raise AssertionError(name)  # pragma: no cover


def conform_exprs(schema: Mapping[str, pl.DataType], source: str) -> list[pl.Expr]:
    columns = list(schema)
    exprs = []
    for name in EVENT_SCHEMA:
        if name in schema:
            exprs.append(_conform_column(name, schema[name], source))
        elif name in _REQUIRED_EVENT_COLUMNS:
            raise missing_column(name, columns, source)
        else:
            exprs.append(pl.lit(None, EVENT_SCHEMA[name]).alias(name))
    return exprs


def conform_events(frame: pl.LazyFrame, source: str = "events") -> pl.LazyFrame:
    """Project and cast a frame to the event schema (dtype rules in the module docstring).

    Only the schema is checked here; see :func:`check_event_content` for row-level rules.

    Raises:
        MedsFormatError: a missing required column or a wrong dtype, naming ``source``.
    """
    return frame.select(conform_exprs(frame.collect_schema(), source))


def conform_codes(codes: pl.DataFrame, source: str = "codes") -> pl.DataFrame:
    """Cast a code-metadata frame to :data:`CODES_SCHEMA`, one row per code.

    Raises:
        MedsFormatError: no ``code`` column, wrong dtypes or null codes.
    """
    if "code" not in codes.columns:
        raise missing_column("code", codes.columns, source)
    exprs = []
    for name, dtype in CODES_SCHEMA.items():
        if name not in codes.columns or codes.schema[name] == pl.Null:
            exprs.append(pl.lit(None, dtype).alias(name))
            continue
        have = codes.schema[name]
        ok = (
            isinstance(have, pl.List) and isinstance(have.inner, STRING_TYPES)
            if name == "parent_codes"
            else isinstance(have, STRING_TYPES)
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


def check_event_content(frame: pl.LazyFrame, source: str, *, require_rows: bool) -> int:
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


def conform_splits(splits: pl.DataFrame, source: str) -> pl.DataFrame:
    for name in ("subject_id", "split"):
        if name not in splits.columns:
            raise missing_column(name, splits.columns, source)
    if not splits.schema["subject_id"].is_integer():
        raise MedsFormatError(
            f"{source}: column 'subject_id' has dtype {splits.schema['subject_id']}; want Int64"
        )
    if not isinstance(splits.schema["split"], STRING_TYPES):
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


def guarded_read(source: Path, action: Callable[[], Any]) -> Any:
    """Run a parquet read; unreadable files become an error naming the file."""
    try:
        return action()
    except MedsFormatError:
        raise
    except Exception as exc:  # polars/pyarrow raise many types for corrupt files
        raise MedsFormatError(f"{source}: not a readable parquet file ({exc})") from exc


def lazy_events(events: pl.DataFrame | pl.LazyFrame, source: str = "events") -> pl.LazyFrame:
    """``events`` as a LazyFrame conformed to :data:`EVENT_SCHEMA` (see :func:`conform_events`)."""
    return conform_events(events.lazy(), source)
