"""PhysioNet/CinC Challenge 2019 (early prediction of sepsis) -> MEDS, with three ICU tasks.

Source
------
The challenge's training data (Reyna et al., Critical Care Medicine 48(2):210-217, 2020;
https://physionet.org/content/challenge-2019/1.0.0/): one pipe-separated file per ICU stay
(``p000001.psv``; set A ``p0xxxxx``, set B ``p1xxxxx``), a header line and one row per ICU hour
with 41 columns. ``NaN`` (or an empty field) means "not measured in that hour". Accepted ``SRC``:
a directory searched recursively for ``*.psv``, a single ``.psv`` file, or a tar archive
(``.tar``, ``.tar.gz``, ``.tar.xz``, ...) whose ``*.psv`` members are read in memory (nothing is
extracted). macOS resource forks (``._p000001.psv``) are skipped.

Subjects: ``subject_id`` is the number in the file name (``p000001.psv`` -> 1,
``p100001.psv`` -> 100001, so set A and set B keep distinct ids). One stay per subject.

Time
----
The files have no dates, only ``ICULOS`` ("ICU length-of-stay, hours since ICU admit"), an
integer that starts at 1 in most files and increases by one per row. Every stay is placed on one
documented, fictitious clock: ICU admission is :data:`REFERENCE_TIME` (2000-01-01T00:00) and the
row with ``ICULOS = h`` gets the time ``REFERENCE_TIME + h hours``.

Why ``+ h`` and not ``+ (h - 1)``: the challenge binned the measurements into hourly windows
(several measurements in one hour are summarised), so the row ``ICULOS = h`` describes the
``h``-th hour of the stay, the interval ``(h - 1, h]`` hours after admission. Its values are
complete only at its end, ``h`` hours after admission; the time of the row is that end, the
earliest moment all its values are known. ``ICULOS = 0`` would be the moment of admission (time
``REFERENCE_TIME``); it does not occur in set A. This is also the challenge's own protocol: the
prediction at row ``t`` may use rows ``<= t``. So a prediction time ``REFERENCE_TIME + t h``
includes the row of hour ``t`` (``EventStore.gather`` keeps events with ``time <=
prediction_time``), and nothing later.

Events (``NaN`` = no event; ``SepsisLabel`` never becomes an event, it is the outcome)
----------------------------------------------------------------------------------------
* one event per measured value of the 34 hourly variables, ``numeric_value`` = the value as
  written (float32), at the row's time. The grouping is the challenge documentation's: columns
  1-8 are vital signs, ``VITAL//<name>`` (HR, O2Sat, Temp, SBP, MAP, DBP, Resp, EtCO2); columns
  9-34 are laboratory values, ``LAB//<name>`` (BaseExcess ... Platelets, names as in the header,
  e.g. ``LAB//Lactate``, ``LAB//Bilirubin_direct``). Units are not converted; the documented unit
  is in ``metadata/codes.parquet`` (MEDS's codes table has no unit column, so the unit is part of
  the description).
* static events (null time), from columns 35-39 ("demographics"), which are constant within a
  file (checked): ``DEMOGRAPHIC//Age`` (numeric_value = Age in years), ``GENDER/F``
  (Gender = 0) or ``GENDER/M`` (Gender = 1), the same gender codes as the OMOP and FHIR
  converters; ``ICU_UNIT//MICU`` where Unit1 = 1 and ``ICU_UNIT//SICU`` where Unit2 = 1 (both
  are NaN for about half the stays: then no unit event); ``DEMOGRAPHIC//HospAdmTime``
  (numeric_value = hours between hospital and ICU admission, negative when the hospital admission
  came first).
* ``MEDS_BIRTH`` at ``REFERENCE_TIME - Age * 365.25 days``: the encoder
  (:mod:`densefeat.data.ehr`) learns age only from the ``MEDS_BIRTH`` event, as
  ``(time - birth) / 365.25 days``, so with this birth time the age it computes at ICU admission
  is exactly the file's Age, and the age at any event is Age plus the hours since admission. It
  is an approximation of a birth date that the data does not have (ages are fractional years
  with two decimals, and Age = 100 stands for 90 or older in the challenge's documentation;
  set A's oldest patient is 89).

Tasks (MEDS label parquet, ``subject_id, prediction_time, boolean_value``)
--------------------------------------------------------------------------
Sepsis onset. The challenge defines ``SepsisLabel = 1`` for rows with ``t >= t_sepsis - 6`` and
0 before (Sepsis-3 onset ``t_sepsis``; labels are shifted 6 h *early*, and once 1 they stay 1).
So, in hours since admission, ``onset = ICULOS of the first row with SepsisLabel = 1, + 6``,
exact to the hour when an earlier row of the file has ``SepsisLabel = 0``. When the *first* row
of a file already has ``SepsisLabel = 1``, ``t_sepsis <= first ICULOS + 6`` and the onset may
have been before admission or before the record starts: the onset is unknown and the subject is
*prevalent* for every onset task (excluded, neither positive nor negative). In the challenge data
a septic stay ends at most 3 h after its onset (every septic file of set A ends 5-9 rows after
its first ``SepsisLabel = 1``; 1,129 of the 1,790 exactly 9), so the end of a septic record is
not its ICU discharge; 2 records end one hour before their onset hour.

A prediction time ``t`` (hours) is always the time of an existing row ``ICULOS = t`` of the
stay, with the patient still in the ICU after it (a row with ``ICULOS > t`` exists; a patient
whose last row is ``t`` left the ICU during that hour). Statuses, as in :mod:`.tasks`:
``prevalent`` and ``censored`` are excluded from the label files.

* ``sepsis_6h``: sepsis onset within the next 6 hours. Prediction times every 6 hours of the
  stay (``t = 6, 12, 18, ...``) while the patient is not yet septic. ``prevalent`` if the onset
  is unknown (first row labelled) or ``onset <= t``; ``positive`` if ``t < onset <= t + 6``;
  ``censored`` if neither and the stay ends before the window does (last ``ICULOS < t + 6``):
  sepsis in the rest of the window would not be in the data (the patient left the ICU, died or
  the record stops), so a negative cannot be told from "not observed" (docs/design.md's censoring
  rule). ``negative`` otherwise. A positive counts even when the record ends before the onset
  hour (the label says the onset came).
* ``sepsis_later``: sepsis at any later time of the stay, predicted at ``t = 6``.
  ``prevalent`` as above (``onset <= 6`` happens only with a labelled first row); ``positive`` if
  the stay has an onset after hour 6; ``negative`` if no row of the stay has
  ``SepsisLabel = 1``. The horizon is the recorded stay (at most 336 hours in the challenge
  data), which is observed by construction, so nothing is censored.
* ``los_72h``: ICU stay longer than 72 hours, predicted at ``t = 24``. ``positive`` if the
  patient is still in the ICU after hour 72 (last ``ICULOS >= 73``); ``negative`` if the last
  ``ICULOS <= 72`` and the stay is not septic; ``censored`` if the last ``ICULOS <= 72`` and the
  stay is septic: the challenge cut septic records shortly after onset, so their true ICU stay
  may be longer than the record.

Artifacts of the challenge data (set A, measured; the labels above are right for the records,
but the records were curated)
------------------------------------------------------------------------------------------
* Non-septic records never reach ICULOS 60 (last ICULOS <= 59 in 18,538 of 18,546 non-septic
  stays; the other 8 end at 336), with no pile-up at 59: longer non-septic stays were left out,
  while septic records run to onset + 3 h (up to 336 h). So ``los_72h`` is degenerate on this
  data: 532 of its 538 positives are septic stays; among non-septic stays "longer than 72 h"
  almost never happens (6 positives). Treat it as a sanity task, not as length-of-stay prediction.
* For the same reason ``sepsis_6h`` prediction times after hour 54 come almost only from stays
  that turn septic: prevalence 9.0% at t > 54 against 1.0% at t <= 54 (609 of the 1,586
  positives). A model that can tell the hours since admission gains from it.
* ``ICULOS`` does not start at 1 in 37% of the files (up to 304): the record starts later in the
  stay. Prediction times need the row of their hour, so such stays lose the early tasks.

Errors
------
``FileNotFoundError`` for a missing ``SRC``; :class:`PhysioNetFormatError` (a ``ValueError``)
naming the file (``archive[member]`` inside a tar) and, where there is one, the line, for: a
file name that is not ``p<digits>.psv``, two files with the same subject, an empty or header-only
file, a header other than the 41 documented columns in their order, a line with another number
of fields, a value that is not a number (or is infinite), an ``ICULOS`` that is missing,
negative, fractional or not increasing, a ``SepsisLabel`` other than 0/1 or going from 1 back to
0, Gender/Unit1/Unit2 other than 0/1, a negative Age, and demographics that change within a
file. A directory or archive without ``.psv`` files is an error too. The output is written
atomically (:func:`convert_physionet2019`): on any error nothing is left at the output directory.
"""

from __future__ import annotations

import datetime as _dt
import io
import itertools
import os
import re
import shutil
import tarfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import meds
import numpy as np
import polars as pl

from ..meds import write_meds_dataset
from ..meds.write import prepare_output_dir, publish_dataset_dir
from ..tasks import STATUSES, write_labels

if TYPE_CHECKING:
    from ..ehr.store import EventStore

__all__ = [
    "COLUMNS",
    "DEMOGRAPHICS",
    "LABS",
    "REFERENCE_TIME",
    "TASKS",
    "VITALS",
    "PhysioNetConversion",
    "PhysioNetFormatError",
    "PhysioNetRows",
    "convert_physionet2019",
    "physionet_codes",
    "physionet_events",
    "read_physionet2019",
    "stay_summary",
    "stay_window_cuts",
    "task_status",
]

#: ICU admission of every stay on the converted clock (ICULOS = 0).
REFERENCE_TIME = _dt.datetime(2000, 1, 1)
_US_PER_HOUR = 3_600_000_000
_US_PER_YEAR = 365.25 * 24 * _US_PER_HOUR  # the encoder's year (history.DAYS_PER_YEAR)
_REFERENCE_US = (REFERENCE_TIME - _dt.datetime(1970, 1, 1)) // _dt.timedelta(microseconds=1)

#: Columns 1-8 of the files, with the documented meaning and unit.
VITALS: dict[str, str] = {
    "HR": "Heart rate (beats per minute)",
    "O2Sat": "Pulse oximetry (%)",
    "Temp": "Temperature (Deg C)",
    "SBP": "Systolic BP (mm Hg)",
    "MAP": "Mean arterial pressure (mm Hg)",
    "DBP": "Diastolic BP (mm Hg)",
    "Resp": "Respiration rate (breaths per minute)",
    "EtCO2": "End tidal carbon dioxide (mm Hg)",
}
#: Columns 9-34: laboratory values (units as documented by the challenge, not checked).
LABS: dict[str, str] = {
    "BaseExcess": "Measure of excess bicarbonate (mmol/L)",
    "HCO3": "Bicarbonate (mmol/L)",
    "FiO2": "Fraction of inspired oxygen (%)",
    "pH": "pH (no unit)",
    "PaCO2": "Partial pressure of carbon dioxide from arterial blood (mm Hg)",
    "SaO2": "Oxygen saturation from arterial blood (%)",
    "AST": "Aspartate transaminase (IU/L)",
    "BUN": "Blood urea nitrogen (mg/dL)",
    "Alkalinephos": "Alkaline phosphatase (IU/L)",
    "Calcium": "Calcium (mg/dL)",
    "Chloride": "Chloride (mmol/L)",
    "Creatinine": "Creatinine (mg/dL)",
    "Bilirubin_direct": "Bilirubin direct (mg/dL)",
    "Glucose": "Serum glucose (mg/dL)",
    "Lactate": "Lactic acid (mg/dL)",
    "Magnesium": "Magnesium (mmol/dL)",
    "Phosphate": "Phosphate (mg/dL)",
    "Potassium": "Potassium (mmol/L)",
    "Bilirubin_total": "Total bilirubin (mg/dL)",
    "TroponinI": "Troponin I (ng/mL)",
    "Hct": "Hematocrit (%)",
    "Hgb": "Hemoglobin (g/dL)",
    "PTT": "Partial thromboplastin time (seconds)",
    "WBC": "Leukocyte count (count*10^3/uL)",
    "Fibrinogen": "Fibrinogen (mg/dL)",
    "Platelets": "Platelets (count*10^3/uL)",
}
#: Columns 35-40.
DEMOGRAPHICS = ("Age", "Gender", "Unit1", "Unit2", "HospAdmTime", "ICULOS")
#: The 41 columns of a file, in order (column 41 is the outcome, never an event).
COLUMNS: tuple[str, ...] = (*VITALS, *LABS, *DEMOGRAPHICS, "SepsisLabel")
_MEASURED = (*VITALS, *LABS)
_STATIC = ("Age", "Gender", "Unit1", "Unit2", "HospAdmTime")
_BINARY = ("Gender", "Unit1", "Unit2")
_MEASURED_CODES = tuple([f"VITAL//{name}" for name in VITALS] + [f"LAB//{name}" for name in LABS])
_STATIC_CODES: dict[str, str] = {
    "DEMOGRAPHIC//Age": "Age at ICU admission (years; 100 stands for 90 or above)",
    "GENDER/F": "Female (Gender = 0)",
    "GENDER/M": "Male (Gender = 1)",
    "ICU_UNIT//MICU": "ICU unit: medical ICU (Unit1 = 1)",
    "ICU_UNIT//SICU": "ICU unit: surgical ICU (Unit2 = 1)",
    "DEMOGRAPHIC//HospAdmTime": "Hours between hospital admit and ICU admit (HospAdmTime)",
    meds.birth_code: "Birth, approximated as ICU admission - Age * 365.25 days",
}

#: Task name -> one-line definition (the module docstring has the exact rules).
TASKS: dict[str, str] = {
    "sepsis_6h": "sepsis onset within the next 6 hours, every 6 h while not yet septic",
    "sepsis_later": "sepsis onset at any later time of the stay, predicted at hour 6",
    "los_72h": "ICU stay longer than 72 hours, predicted at hour 24",
}
#: Hours before onset at which the challenge's SepsisLabel turns 1.
LABEL_LEAD_HOURS = 6
SEPSIS_6H_EVERY = 6
SEPSIS_6H_HORIZON = 6
SEPSIS_LATER_AT = 6
LOS_AT = 24
LOS_HOURS = 72

_NAME = re.compile(r"p(\d+)\.psv")
_HEADER = "|".join(COLUMNS)
_PIPE, _NEWLINE = ord("|"), ord("\n")


class PhysioNetFormatError(ValueError):
    """Input that is not PhysioNet 2019 data; the message names the file and line."""


# --------------------------------------------------------------------------------------------
# Reading the files.


@dataclass(frozen=True)
class _File:
    name: str  # for messages: the path, or "archive[member]"
    subject_id: int
    data: bytes


def _subject_id(basename: str, where: str) -> int:
    match = _NAME.fullmatch(basename)
    if match is None:
        raise PhysioNetFormatError(
            f"{where}: the file name must be p<digits>.psv (the subject id), got {basename!r}"
        )
    return int(match.group(1))


def _wanted(basename: str) -> bool:
    return basename.endswith(".psv") and not basename.startswith("._")


def _is_archive(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".tar", ".tgz", ".txz", ".tbz2")) or ".tar." in name


def _iter_files(src: Path) -> Iterator[_File]:
    if src.is_dir():
        for path in sorted(p for p in src.rglob("*.psv") if p.is_file()):
            if _wanted(path.name):
                yield _File(str(path), _subject_id(path.name, str(path)), path.read_bytes())
        return
    if src.suffix == ".psv":
        yield _File(str(src), _subject_id(src.name, str(src)), src.read_bytes())
        return
    if not _is_archive(src):
        raise PhysioNetFormatError(
            f"{src}: not a directory, a .psv file or a tar archive (.tar, .tar.gz, .tar.xz)"
        )
    try:
        with tarfile.open(src, "r:*") as archive:
            for member in archive:
                basename = member.name.rsplit("/", 1)[-1]
                if not (member.isfile() and _wanted(basename)):
                    continue
                where = f"{src}[{member.name}]"
                handle = archive.extractfile(member)
                assert handle is not None  # a regular file always has one
                yield _File(where, _subject_id(basename, where), handle.read())
    except (tarfile.TarError, EOFError, OSError) as exc:  # lzma/gzip errors are OSError/EOF
        raise PhysioNetFormatError(f"{src}: not a readable tar archive ({exc})") from exc


def _read_files(src: Path) -> list[_File]:
    if not src.exists():
        raise FileNotFoundError(f"no PhysioNet 2019 source at {src}")
    files = list(_iter_files(src))
    if not files:
        raise PhysioNetFormatError(f"{src}: no .psv files found")
    files.sort(key=lambda f: f.subject_id)
    for a, b in itertools.pairwise(files):
        if a.subject_id == b.subject_id:
            raise PhysioNetFormatError(
                f"{b.name}: subject {b.subject_id} also comes from {a.name} (one file per stay)"
            )
    return files


def _header_problem(header: str) -> str:
    have = header.split("|")
    missing = [c for c in COLUMNS if c not in have]
    extra = [c for c in have if c not in COLUMNS]
    if missing or extra:
        parts = []
        if missing:
            shown = ", ".join(missing[:5]) + (
                f" and {len(missing) - 5} more" if missing[5:] else ""
            )
            parts.append(f"missing {shown}")
        if extra:
            parts.append(f"unexpected {', '.join(repr(c) for c in extra)}")
        return "; ".join(parts)
    return "the columns are in another order than the challenge's 41 columns"


def _body(file: _File) -> bytes:
    """The data lines of one file (header checked and removed), each ending in a newline."""
    data = file.data
    if not data.strip():
        raise PhysioNetFormatError(f"{file.name}: empty file (expected a header and rows)")
    end = data.find(b"\n")
    header_bytes = data if end < 0 else data[:end]
    try:
        header = header_bytes.decode("utf-8-sig").strip()  # a BOM is not part of a name
    except UnicodeDecodeError as exc:
        raise PhysioNetFormatError(f"{file.name}:1: the header is not UTF-8 text") from exc
    if header != _HEADER:
        raise PhysioNetFormatError(
            f"{file.name}:1: not the PhysioNet 2019 header ({_header_problem(header)})"
        )
    body = b"" if end < 0 else data[end + 1 :]
    if b"\r" in body:
        body = body.replace(b"\r\n", b"\n")
    body = body.rstrip(b"\n")
    if not body:
        raise PhysioNetFormatError(f"{file.name}: no data rows after the header")
    return body + b"\n"


@dataclass(frozen=True)
class PhysioNetRows:
    """Every row of every file, parsed and checked.

    Attributes:
        rows: one row per file line: ``subject_id`` Int64, ``hour`` Int64 (ICULOS), the 41
            columns as Float64 (nulls where ``NaN``), sorted by subject and hour.
        files: the file names, by subject (as in error messages).
    """

    rows: pl.DataFrame
    files: tuple[str, ...]

    @property
    def n_subjects(self) -> int:
        """Number of stays (files)."""
        return len(self.files)


def _where(files: Sequence[_File], file_idx: int, line: int) -> str:
    return f"{files[file_idx].name}:{line}"


def _locate(files: Sequence[_File], starts: np.ndarray, row: int) -> str:
    """``name:line`` of a global row index (line 1 is the header)."""
    f = int(np.searchsorted(starts, row, side="right") - 1)
    return _where(files, f, int(row - starts[f]) + 2)


def _check_fields(blob: bytes, files: Sequence[_File], starts: np.ndarray) -> None:
    """Every line has exactly 41 fields (40 separators), found without a Python loop."""
    arr = np.frombuffer(blob, dtype=np.uint8)
    newlines = np.flatnonzero(arr == _NEWLINE)
    pipes = np.flatnonzero(arr == _PIPE)
    per_line = np.diff(np.concatenate([[0], np.searchsorted(pipes, newlines)]))
    bad = np.flatnonzero(per_line != len(COLUMNS) - 1)
    if bad.size:
        row = int(bad[0])
        raise PhysioNetFormatError(
            f"{_locate(files, starts, row)}: {per_line[row] + 1} fields, expected "
            f"{len(COLUMNS)} separated by '|'"
        )


def _parse(blob: bytes, dtype: type[pl.DataType]) -> pl.DataFrame:
    return pl.read_csv(
        io.BytesIO(blob),
        separator="|",
        has_header=False,
        new_columns=list(COLUMNS),
        schema=dict.fromkeys(COLUMNS, dtype),
        null_values=["NaN"],
        quote_char=None,
    )


def _bad_value(blob: bytes, files: Sequence[_File], starts: np.ndarray) -> PhysioNetFormatError:
    """Find the first field that is not a number (the slow path, taken only on an error)."""
    try:
        text = _parse(blob, pl.Utf8)
    except pl.exceptions.PolarsError:
        try:
            blob.decode("utf-8")
        except UnicodeDecodeError as exc:  # the usual reason: find its line
            row = blob.count(b"\n", 0, exc.start)
            return PhysioNetFormatError(f"{_locate(files, starts, row)}: not UTF-8 text")
        raise
    first: tuple[int, str, str] | None = None
    for name in COLUMNS:
        col = text[name]
        bad = col.is_not_null() & col.cast(pl.Float64, strict=False).is_null()
        if bad.any():
            row = int(bad.arg_max())
            if first is None or row < first[0]:
                first = (row, name, col[row])
    if first is None:  # pragma: no cover - polars failed for another reason
        return PhysioNetFormatError("could not parse the .psv files")
    row, name, value = first
    return PhysioNetFormatError(
        f"{_locate(files, starts, row)}: column {name!r}: {value!r} is not a number"
    )


def _first_bad(rows: pl.DataFrame, bad: pl.Expr) -> int | None:
    bad = bad.fill_null(False)
    first, anything = rows.select(bad.arg_max().alias("i"), bad.any().alias("any")).row(0)
    return int(first) if anything else None


def _validate(rows: pl.DataFrame, files: Sequence[_File], starts: np.ndarray) -> None:
    """Row-level rules (module docstring), each checked vectorised; first violation raised."""
    same = pl.col("_file") == pl.col("_file").shift(1)
    hour, label = pl.col("ICULOS"), pl.col("SepsisLabel")
    rules: list[tuple[str, pl.Expr, str]] = [
        (c, pl.col(c).is_infinite(), "is infinite; expected a number or NaN") for c in COLUMNS
    ]
    rules += [
        ("ICULOS", hour.is_null(), "is missing; every row needs its hour"),
        ("ICULOS", hour < 0, "is negative; hours since ICU admission are >= 0"),
        ("ICULOS", hour != hour.round(), "is not a whole number of hours"),
        ("ICULOS", same & (hour <= hour.shift(1)), "does not increase from the row before"),
        ("SepsisLabel", label.is_null(), "is missing"),
        ("SepsisLabel", ~label.is_in([0.0, 1.0]), "must be 0 or 1"),
        ("SepsisLabel", same & (label < label.shift(1)), "goes from 1 back to 0"),
        ("Age", pl.col("Age") < 0, "is negative"),
    ]
    rules += [(c, ~pl.col(c).is_in([0.0, 1.0]), "must be 0, 1 or NaN") for c in _BINARY]
    rules += [
        (c, same & pl.col(c).ne_missing(pl.col(c).shift(1)), "changes within the file (per stay)")
        for c in _STATIC
    ]
    for column, bad, message in rules:
        row = _first_bad(rows, bad)
        if row is not None:
            value = rows[column][row]
            shown = "NaN" if value is None else f"{value:g}"
            raise PhysioNetFormatError(
                f"{_locate(files, starts, row)}: column {column!r} {message} (value {shown})"
            )


def read_physionet2019(src: str | os.PathLike[str]) -> PhysioNetRows:
    """Read and check every ``.psv`` file of ``src`` (directory, file or tar archive).

    The files are parsed in bulk: their data lines are joined into one buffer (the header of each
    checked on the way) and parsed by one polars CSV read, so 20,000 small files cost about as
    much as one big one. Field counts are checked with numpy on the raw bytes first, because a
    CSV reader would pad a short line with nulls.

    Args:
        src: see the module docstring.

    Returns:
        the parsed rows.

    Raises:
        FileNotFoundError: no ``src``.
        PhysioNetFormatError: any rule of the module docstring, naming file and line.
    """
    files = _read_files(Path(src))
    bodies = [_body(f) for f in files]
    files = [_File(f.name, f.subject_id, b"") for f in files]  # the bytes live in `bodies` now
    counts = np.array([b.count(b"\n") for b in bodies], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    blob = b"".join(bodies)
    del bodies
    _check_fields(blob, files, starts)
    try:
        parsed = _parse(blob, pl.Float64)
    except pl.exceptions.PolarsError:
        raise _bad_value(blob, files, starts) from None
    del blob
    file_idx = np.repeat(np.arange(len(files), dtype=np.int32), counts)
    subject = np.array([f.subject_id for f in files], dtype=np.int64)[file_idx]
    # "nan" spelt otherwise than "NaN" parses as a float NaN: it means "not measured" too.
    rows = parsed.with_columns(pl.col(c).fill_nan(None) for c in COLUMNS).with_columns(
        _file=pl.Series(file_idx)
    )
    _validate(rows, files, starts)
    rows = rows.select(
        pl.Series("subject_id", subject),
        pl.col("ICULOS").cast(pl.Int64).alias("hour"),
        *COLUMNS,
    )
    return PhysioNetRows(rows=rows, files=tuple(f.name for f in files))


# --------------------------------------------------------------------------------------------
# Events and codes.


def _hours_to_time(hours: pl.Expr) -> pl.Expr:
    return (pl.lit(_REFERENCE_US) + hours.cast(pl.Int64) * _US_PER_HOUR).cast(pl.Datetime("us"))


def physionet_events(data: PhysioNetRows) -> pl.DataFrame:
    """The MEDS events of parsed rows (rules in the module docstring).

    Returns:
        ``subject_id, time, code, numeric_value, text_value`` sorted by subject, then time
        (static events first, then ``MEDS_BIRTH``), and within an hour in column order.
    """
    rows = data.rows
    values = rows.select(_MEASURED).to_numpy()  # nulls become NaN
    r, j = np.nonzero(~np.isnan(values))  # row-major: sorted by row, then column
    hours = rows["hour"].to_numpy()
    code_of = dict(enumerate(_MEASURED_CODES))
    timed = pl.DataFrame(
        {
            "subject_id": rows["subject_id"].to_numpy()[r],
            "time": _REFERENCE_US + hours[r] * _US_PER_HOUR,
            "code": pl.Series(j, dtype=pl.Int64).replace_strict(code_of, return_dtype=pl.Utf8),
            "numeric_value": pl.Series(values[r, j], dtype=pl.Float32),
        }
    ).with_columns(pl.col("time").cast(pl.Datetime("us")))
    del values, r, j

    first = rows.group_by("subject_id", maintain_order=True).first()
    no_value = pl.lit(None, pl.Float64)
    birth = pl.lit(_REFERENCE_US) - (pl.col("Age") * _US_PER_YEAR).round().cast(pl.Int64)
    gender = pl.when(pl.col("Gender") == 1).then(pl.lit("GENDER/M")).otherwise(pl.lit("GENDER/F"))
    # (rows kept, code, numeric_value, time); static events have a null time.
    specs: list[tuple[pl.Expr, pl.Expr, pl.Expr, pl.Expr | None]] = [
        (pl.col("Age").is_not_null(), pl.lit("DEMOGRAPHIC//Age"), pl.col("Age"), None),
        (pl.col("Gender").is_not_null(), gender, no_value, None),
        (pl.col("Unit1") == 1, pl.lit("ICU_UNIT//MICU"), no_value, None),
        (pl.col("Unit2") == 1, pl.lit("ICU_UNIT//SICU"), no_value, None),
        (pl.col("HospAdmTime").is_not_null(), pl.lit("DEMOGRAPHIC//HospAdmTime"),
         pl.col("HospAdmTime"), None),
        (pl.col("Age").is_not_null(), pl.lit(meds.birth_code), no_value, birth),
    ]  # fmt: skip
    parts = [
        first.filter(keep).select(
            "subject_id",
            time=pl.lit(None, pl.Int64) if when is None else when,
            code=code,
            numeric_value=value,
            order=pl.lit(i),
        )
        for i, (keep, code, value, when) in enumerate(specs)
    ]
    head = (
        pl.concat(parts)
        .sort(["subject_id", "order"])
        .drop("order")
        .with_columns(
            pl.col("time").cast(pl.Datetime("us")), pl.col("numeric_value").cast(pl.Float32)
        )
    )
    events = pl.concat([head, timed]).with_columns(text_value=pl.lit(None, pl.Utf8))
    # Stable: per subject the static rows (null time), the birth, then the hours in order.
    return events.sort(["subject_id", "time"], nulls_last=False, maintain_order=True)


def physionet_codes() -> pl.DataFrame:
    """``metadata/codes.parquet`` of the conversion: every code with its documented meaning."""
    rows = [(f"VITAL//{k}", f"Vital sign: {v}") for k, v in VITALS.items()]
    rows += [(f"LAB//{k}", f"Laboratory value: {v}") for k, v in LABS.items()]
    rows += list(_STATIC_CODES.items())
    return pl.DataFrame(
        {
            "code": [c for c, _ in rows],
            "description": [d for _, d in rows],
            "parent_codes": pl.Series([None] * len(rows), dtype=pl.List(pl.Utf8)),
        }
    )


# --------------------------------------------------------------------------------------------
# Tasks.


def stay_summary(data: PhysioNetRows) -> pl.DataFrame:
    """Per stay: ``subject_id, first_hour, last_hour, septic, prevalent, onset_hour``.

    ``septic``: some row has SepsisLabel = 1. ``prevalent``: the first row already has it (onset
    unknown). ``onset_hour``: first labelled ICULOS + 6 for septic, non-prevalent stays, else
    null.
    """
    label = pl.col("SepsisLabel") == 1
    return (
        data.rows.group_by("subject_id", maintain_order=True)
        .agg(
            first_hour=pl.col("hour").first(),
            last_hour=pl.col("hour").last(),
            septic=label.any(),
            prevalent=label.first(),
            first_label_hour=pl.col("hour").filter(label).first(),
        )
        .with_columns(
            onset_hour=pl.when(pl.col("septic") & ~pl.col("prevalent")).then(
                pl.col("first_label_hour") + LABEL_LEAD_HOURS
            )
        )
        .drop("first_label_hour")
    )


def _status(prevalent: pl.Expr, positive: pl.Expr, censored: pl.Expr | None = None) -> pl.Expr:
    chain = pl.when(prevalent).then(pl.lit("prevalent")).when(positive).then(pl.lit("positive"))
    if censored is not None:
        chain = chain.when(censored).then(pl.lit("censored"))
    return chain.otherwise(pl.lit("negative"))


def task_status(data: PhysioNetRows, task: str) -> pl.DataFrame:
    """Status and label of ``task`` at each of its prediction times (module docstring).

    Returns:
        ``subject_id, prediction_time, status`` (one of ``positive, negative, prevalent,
        censored``), ``boolean_value`` (null unless positive or negative), sorted.
    """
    summary = stay_summary(data)
    hour = pl.col("hour")
    if task == "sepsis_6h":
        at = (hour > 0) & (hour % SEPSIS_6H_EVERY == 0)
    elif task == "sepsis_later":
        at = hour == SEPSIS_LATER_AT
    elif task == "los_72h":
        at = hour == LOS_AT
    else:
        raise ValueError(f"unknown PhysioNet 2019 task {task!r}: use one of {', '.join(TASKS)}")
    # Prediction times: existing rows at the task's hours, the patient still in the ICU after.
    times = (
        data.rows.select("subject_id", "hour")
        .filter(at)
        .join(summary, on="subject_id", how="left", maintain_order="left")
        .filter(pl.col("last_hour") > hour)
    )
    onset, last = pl.col("onset_hour"), pl.col("last_hour")
    prevalent = pl.col("prevalent") | (onset <= hour).fill_null(False)
    if task == "sepsis_6h":
        positive = (onset <= hour + SEPSIS_6H_HORIZON).fill_null(False)
        status = _status(prevalent, positive, last < hour + SEPSIS_6H_HORIZON)
    elif task == "sepsis_later":
        status = _status(prevalent, pl.col("septic"))
    else:
        status = _status(pl.lit(False), last > LOS_HOURS, pl.col("septic"))
    return (
        times.select("subject_id", prediction_time=_hours_to_time(hour), status=status)
        .with_columns(
            boolean_value=pl.when(pl.col("status").is_in(["positive", "negative"])).then(
                pl.col("status") == "positive"
            )
        )
        .sort(["subject_id", "prediction_time"])
    )


def _counts(status: pl.DataFrame) -> dict[str, int]:
    got = dict(status.group_by("status").len().iter_rows())
    return {name: int(got.get(name, 0)) for name in STATUSES}


# --------------------------------------------------------------------------------------------
# Conversion.


@dataclass
class PhysioNetConversion:
    """What a conversion did.

    Attributes:
        out_dir: the MEDS dataset written.
        files: ``.psv`` files read (= subjects).
        rows: hourly rows read.
        events: events written (static, birth and measured values).
        measured_events: events from measured values (= non-NaN values of the 34 variables).
        task_counts: per task, the count of each status (``positive, negative, prevalent,
            censored``); the label file holds the positives and negatives.
        read_seconds: reading and checking the files.
        seconds: wall time of the whole conversion including writing.
    """

    out_dir: Path
    files: int
    rows: int
    events: int
    measured_events: int
    task_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    read_seconds: float = 0.0
    seconds: float = 0.0


def convert_physionet2019(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    dataset_name: str = "physionet2019",
    seed: int = 0,
    overwrite: bool = False,
) -> PhysioNetConversion:
    """Convert PhysioNet 2019 ``.psv`` files to a MEDS dataset with task labels.

    Writes ``out_dir`` (MEDS 0.4: ``data/``, ``metadata/codes.parquet``, ``dataset.json``,
    ``subject_splits.parquet`` with deterministic train/tuning/held_out splits by ``seed``) and
    ``out_dir/labels/<task>.parquet`` for each task of :data:`TASKS` (MEDS label parquet).
    ``read_meds_dataset`` reads only ``data/`` and ``metadata/``, so ``labels/`` does not
    disturb it. Everything is built in a hidden sibling directory and renamed into place at the
    end: on any error nothing is left at ``out_dir`` (an existing dataset survives).

    Args:
        src: a directory of ``.psv`` files, one ``.psv`` file or a tar archive of them.
        out_dir: the dataset directory; absent or empty unless ``overwrite``.
        dataset_name: ``dataset.json``'s dataset_name.
        seed: split seed.
        overwrite: replace a non-empty ``out_dir``.

    Raises:
        FileNotFoundError: no ``src``.
        PhysioNetFormatError: bad input (see the module docstring).
        MedsFormatError: ``out_dir`` exists and is not empty (without ``overwrite``).
    """
    start = time.perf_counter()
    out = Path(out_dir)
    prepare_output_dir(out, overwrite)  # fail before the (long) read
    data = read_physionet2019(src)
    read_seconds = time.perf_counter() - start
    events = physionet_events(data)
    statuses = {task: task_status(data, task) for task in TASKS}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.physionet-{uuid.uuid4().hex[:8]}")
    try:
        write_meds_dataset(
            tmp,
            events,
            codes=physionet_codes(),
            dataset_name=dataset_name,
            etl_name="densefeat.physionet2019",
            seed=seed,
        )
        for task, status in statuses.items():
            write_labels(status, tmp / "labels" / f"{task}.parquet")
        publish_dataset_dir(tmp, out, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    n_static = int(events["time"].null_count()) + int((events["code"] == meds.birth_code).sum())
    return PhysioNetConversion(
        out_dir=out,
        files=data.n_subjects,
        rows=data.rows.height,
        events=events.height,
        measured_events=events.height - n_static,
        task_counts={task: _counts(status) for task, status in statuses.items()},
        read_seconds=read_seconds,
        seconds=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------------------------
# Windows on the ICU clock.


def stay_window_cuts(store: EventStore, every_hours: float = 12.0) -> pl.DataFrame:
    """Cut-offs every ``every_hours`` since ICU admission, for :func:`~.windows.window_pairs`.

    :func:`~densefeat.data.ehr.windows.periodic_cuts` anchors its grid at a subject's first timed
    event, which in this data is ``MEDS_BIRTH`` decades before the stay: one 12-hour cut per 12
    hours of age, ~50,000 per subject, all but a few before admission. This anchors the grid at
    ICU admission (:data:`REFERENCE_TIME`) instead: cuts at ``admission + k * every_hours``
    from the first one at or after the subject's first ICU row (``k >= 1``) up to, strictly
    before, its last event.
    Same columns as ``periodic_cuts``.

    Args:
        store: an :class:`~densefeat.data.ehr.EventStore` of the converted data.
        every_hours: the period (12 for the project's ICU windows).

    Returns:
        ``subject_id`` Int64, ``window`` Int64 (``k``), ``time`` Datetime("us"), sorted.
    """
    period = round(float(every_hours) * _US_PER_HOUR)
    if period <= 0:
        raise ValueError(f"every_hours must be positive, got {every_hours!r}")
    idx = np.flatnonzero(store.end > store.start)
    last = store.last_time()[idx]
    # First ICU row: the first event at or after admission (birth is always before it).
    before = store.count_at_or_before(idx, np.full(idx.size, _REFERENCE_US - 1, np.int64))
    has_icu = store.start[idx] + before < store.end[idx]
    idx, last, before = idx[has_icu], last[has_icu], before[has_icu]
    first_icu = store.time[store.start[idx] + before]
    k_lo = np.maximum(1, -((_REFERENCE_US - first_icu) // period))  # ceil division
    k_hi = -((_REFERENCE_US - last) // period) - 1  # last k with a cut before `last`
    count = np.maximum(k_hi - k_lo + 1, 0)
    rows = np.repeat(np.arange(idx.size), count)
    k = k_lo[rows] + np.arange(rows.size) - np.repeat(np.cumsum(count) - count, count)
    return pl.DataFrame(
        {
            "subject_id": pl.Series(store.subject_ids[idx][rows], dtype=pl.Int64),
            "window": pl.Series(k, dtype=pl.Int64),
            "time": pl.Series(_REFERENCE_US + k * period, dtype=pl.Int64).cast(pl.Datetime("us")),
        }
    )
