"""Notes stored as ``text_value`` events of a MEDS dataset (e.g. FHIR DocumentReference notes under
``NOTE//...`` codes).
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from ..meds import MedsDataset
from .note_table import NoteTableError, as_name_list, require_columns

#: Code prefix of notes written by densefeat's FHIR converter (``NOTE`` or ``NOTE//<type>``).
NOTE_CODE_PREFIX = "NOTE"


def _note_filter(code_prefixes: str | Sequence[str] | None) -> pl.Expr:
    keep = pl.col("text_value").is_not_null() & (pl.col("text_value").str.strip_chars() != "")
    prefixes = as_name_list(code_prefixes)
    if prefixes:
        # "NOTE" matches NOTE and NOTE//..., not NOTEBOOK: prefixes end at a `//` level.
        by_code = pl.any_horizontal(
            [(pl.col("code") == p) | pl.col("code").str.starts_with(p + "//") for p in prefixes]
        )
        keep = keep & by_code
    return keep


def notes_from_meds(
    dataset: MedsDataset | pl.LazyFrame | pl.DataFrame,
    prediction_times: pl.DataFrame | None = None,
    *,
    code_prefixes: str | Sequence[str] | None = None,
    max_notes: int | None = None,
) -> pl.DataFrame:
    """Notes (``text_value`` events) of a MEDS dataset, optionally as of prediction times.

    Without ``prediction_times``: one row per note, ``subject_id, time, code, text`` sorted by
    subject and time (static notes, with a null time, first).

    With ``prediction_times`` (``subject_id``, ``prediction_time``): one row per prediction time,
    in the order given, with the subject's notes at or before it, oldest first: ``subject_id,
    prediction_time, note_times`` (List[Datetime]), ``notes.codes`` (List[Utf8]) and ``notes``
    (List[Utf8], empty when the subject has none yet). The no-leakage guarantee: a note with
    ``time > prediction_time`` is never returned. Static notes (null time) are left out here,
    since nothing shows they were written before the prediction time.

    Args:
        dataset: an opened MEDS dataset, or its events (the MEDS contract's columns).
        prediction_times: rows of ``subject_id`` (integer) and ``prediction_time`` (naive
            Datetime), e.g. a MEDS label table.
        code_prefixes: keep only events whose code is a prefix in this list or sits under it at a
            ``//`` level (e.g. ``"NOTE"`` for notes written by densefeat's FHIR converter).
            None keeps every non-empty ``text_value``; real datasets also use text_value for
            free-text lab results, so name the note codes where you know them.
        max_notes: keep only the most recent this many notes per prediction time.

    Returns:
        the polars DataFrame described above.

    Raises:
        NoteTableError: ``prediction_times`` without its columns or with wrong dtypes.
    """
    events = dataset.data if isinstance(dataset, MedsDataset) else dataset.lazy()
    notes = (
        events.filter(_note_filter(code_prefixes))
        .select("subject_id", "time", "code", pl.col("text_value").alias("text"))
        .sort(["subject_id", "time"], nulls_last=False, maintain_order=True)
    )
    if prediction_times is None:
        return notes.collect()
    queries = _conform_prediction_times(prediction_times)
    # Join each query with its subject's timed notes, then keep only notes at or before the
    # prediction time. ``_row`` keeps the caller's row order and duplicate prediction times apart.
    matched = (
        queries.lazy()
        .join(notes.filter(pl.col("time").is_not_null()), on="subject_id", how="left")
        .filter(pl.col("time").is_null() | (pl.col("time") <= pl.col("prediction_time")))
        .sort(["_row", "time"], maintain_order=True)
    )
    if max_notes is not None:
        if max_notes < 1:
            raise ValueError(f"max_notes must be >= 1, got {max_notes}")
        matched = matched.filter(
            pl.int_range(pl.len()).over("_row") >= pl.len().over("_row") - max_notes
        )
    grouped = matched.group_by("_row").agg(
        pl.col("time").drop_nulls().alias("note_times"),
        pl.col("code").drop_nulls().alias("note_codes"),
        pl.col("text").drop_nulls().alias("notes"),
    )
    out = (
        queries.lazy()
        .join(grouped, on="_row", how="left")
        .sort("_row")
        .select("subject_id", "prediction_time", "note_times", "note_codes", "notes")
        .collect()
    )
    # A subject with no note at all may come back null from the join: make it an empty list.
    return out.with_columns(
        pl.col(c).fill_null(pl.lit([], out.schema[c]))
        for c in ("note_times", "note_codes", "notes")
    )


def _conform_prediction_times(frame: pl.DataFrame) -> pl.DataFrame:
    source = "prediction_times"
    require_columns(frame, ["subject_id", "prediction_time"], source)
    sid, ptime = frame.schema["subject_id"], frame.schema["prediction_time"]
    if not sid.is_integer():
        raise NoteTableError(f"{source}: column 'subject_id' has dtype {sid}; want Int64")
    if not isinstance(ptime, pl.Datetime) or ptime.time_zone is not None:
        raise NoteTableError(
            f"{source}: column 'prediction_time' has dtype {ptime}; want a naive Datetime"
        )
    out = frame.select(
        pl.col("subject_id").cast(pl.Int64), pl.col("prediction_time").cast(pl.Datetime("us"))
    )
    for name in out.columns:
        if out[name].null_count():
            raise NoteTableError(f"{source}: column {name!r} has {out[name].null_count()} nulls")
    return out.with_row_index("_row")
