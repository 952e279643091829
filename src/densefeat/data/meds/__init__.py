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

from .dataset import MedsDataset, read_meds_dataset
from .labels import read_labels
from .schema import (
    CODES_SCHEMA,
    EVENT_SCHEMA,
    LABEL_VALUE_COLUMNS,
    OBSERVATION_END_CODE,
    OBSERVATION_START_CODE,
    MedsFormatError,
    conform_codes,
    conform_events,
    empty_codes,
    empty_events,
    lazy_events,
)
from .write import write_meds_dataset

__all__ = [
    "CODES_SCHEMA",
    "EVENT_SCHEMA",
    "LABEL_VALUE_COLUMNS",
    "OBSERVATION_END_CODE",
    "OBSERVATION_START_CODE",
    "MedsDataset",
    "MedsFormatError",
    "conform_codes",
    "conform_events",
    "empty_codes",
    "empty_events",
    "lazy_events",
    "read_labels",
    "read_meds_dataset",
    "write_meds_dataset",
]
