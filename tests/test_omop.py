"""OMOP -> MEDS: Synthea27Nj and Eunomia counts against their sources, a CSV/parquet directory
built here, bad sources, the Eunomia cache and the ``densefeat convert`` CLI.

Expected counts are computed from the sources independently of the converter (the zip's CSVs
with the standard library, Eunomia with DuckDB SQL).
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import meds
import polars as pl
import pyarrow.parquet as pq
import pytest

from _paths import SHARED_DATA
from densefeat.cli import main
from densefeat.data.convert.eunomia import eunomia_meds, eunomia_path
from densefeat.data.convert.omop import convert_omop, omop_to_meds
from densefeat.data.meds import (
    OBSERVATION_END_CODE,
    OBSERVATION_START_CODE,
    MedsFormatError,
    read_meds_dataset,
)

SYNTHEA = SHARED_DATA / "synthea27nj_omop" / "Synthea27Nj_5.4.zip"
CLINICAL = (
    "visit_occurrence",
    "condition_occurrence",
    "drug_exposure",
    "procedure_occurrence",
    "measurement",
    "observation",
    "death",
)
needs_synthea = pytest.mark.skipif(not SYNTHEA.is_file(), reason="shared Synthea27Nj zip absent")


def zip_tables(path: Path) -> dict[str, list[dict[str, str]]]:
    """Rows of every CSV in the zip, by lower-case table name (macOS forks skipped)."""
    out = {}
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            base = Path(name).name
            if name.startswith("__MACOSX") or base.startswith("._") or not base.endswith(".csv"):
                continue
            text = io.TextIOWrapper(zf.open(name), encoding="utf-8")
            out[base[:-4].lower()] = list(csv.DictReader(text))
    return out


def event_count(root: Path) -> int:
    return read_meds_dataset(root).data.select(pl.len()).collect().item()


# --------------------------------------------------------------------------------------------
# Synthea27Nj (OMOP 5.4, zip of CSVs).


@pytest.fixture(scope="module")
def synthea(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthea") / "meds"
    report = convert_omop(SYNTHEA, out)
    return out, report, zip_tables(SYNTHEA)


@needs_synthea
def test_synthea_counts_match_source(synthea) -> None:
    out, report, src = synthea
    ds = read_meds_dataset(out)
    events = ds.data.collect()
    persons = {int(r["person_id"]) for r in src["person"]}
    assert len(persons) == 28
    assert set(events["subject_id"].unique()) == persons
    for table in CLINICAL:
        assert report.source_rows[table] == len(src[table]), table
        assert report.events_per_table[table] == len(src[table]), table
    # person: one birth per person plus gender, race and ethnicity where the concept is not 0.
    demographics = sum(
        r[c] not in ("", "0")
        for r in src["person"]
        for c in ("gender_concept_id", "race_concept_id", "ethnicity_concept_id")
    )
    assert report.events_per_table["person"] == len(persons) + demographics
    assert events.height == report.events == sum(report.events_per_table.values())
    numeric = sum(r["value_as_number"] != "" for r in src["measurement"] + src["observation"])
    assert events["numeric_value"].is_not_null().sum() == numeric == 9107
    assert events.filter(pl.col("code") == meds.death_code).height == len(src["death"]) == 3
    assert events.filter(pl.col("code") == meds.birth_code).height == 28
    assert events.filter(pl.col("time").is_null()).height == demographics


@needs_synthea
def test_synthea_codes_from_concept_table(synthea) -> None:
    out, _, src = synthea
    ds = read_meds_dataset(out)
    events = ds.data.collect()
    concepts = {r["concept_id"]: r for r in src["concept"]}
    first = src["condition_occurrence"][0]
    concept = concepts[first["condition_concept_id"]]
    code = f"{concept['vocabulary_id']}/{concept['concept_code']}"
    assert code in set(events["code"])
    desc = ds.codes.filter(pl.col("code") == code)["description"].item()
    assert desc == concept["concept_name"]
    assert set(events["code"]) <= set(ds.codes["code"])
    assert {"GENDER/M", "GENDER/F"} <= set(events["code"])
    for f in ds.data_files:
        meds.DataSchema.validate(pq.read_table(f))


# --------------------------------------------------------------------------------------------
# A CSV / parquet directory built here.


def write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def cdm_dir(tmp_path: Path) -> Path:
    root = tmp_path / "cdm"
    root.mkdir()
    write_csv(
        root / "PERSON.csv",
        [
            {
                "PERSON_ID": 1,
                "GENDER_CONCEPT_ID": 8532,
                "YEAR_OF_BIRTH": 1970,
                "MONTH_OF_BIRTH": 5,
                "DAY_OF_BIRTH": "",
                "BIRTH_DATETIME": "",
                "RACE_CONCEPT_ID": 0,
                "ETHNICITY_CONCEPT_ID": 0,
            },
            {
                "PERSON_ID": 2,
                "GENDER_CONCEPT_ID": 8507,
                "YEAR_OF_BIRTH": 1980,
                "MONTH_OF_BIRTH": 1,
                "DAY_OF_BIRTH": 2,
                "BIRTH_DATETIME": "1980-01-02 03:04:05",
                "RACE_CONCEPT_ID": 8527,
                "ETHNICITY_CONCEPT_ID": 38003564,
            },
        ],
    )
    write_csv(
        root / "condition_occurrence.csv",
        [
            {
                "person_id": 1,
                "condition_concept_id": 201826,
                "condition_start_date": "2010-03-01",
                "condition_start_datetime": "",
            },
            {
                "person_id": 2,
                "condition_concept_id": 201826,
                "condition_start_date": "2011-03-01",
                "condition_start_datetime": "2011-03-01 10:30:00",
            },
            {
                "person_id": "",
                "condition_concept_id": 201826,
                "condition_start_date": "2011-03-01",
                "condition_start_datetime": "",
            },  # no person: dropped
            {
                "person_id": 3,
                "condition_concept_id": 201826,
                "condition_start_date": "2011-03-01",
                "condition_start_datetime": "",
            },  # person not in the person table: dropped
        ],
    )
    (root / "measurement").mkdir()  # a table sharded into a folder of parquet files
    pl.DataFrame(
        {
            "person_id": [1, 2],
            "measurement_concept_id": [3025315, 0],
            "measurement_date": pl.Series(["2012-01-01", "2012-02-01"]).str.to_date(),
            "value_as_number": [48.1, None],
        }
    ).write_parquet(root / "measurement" / "000.parquet")
    pl.DataFrame(
        {
            "person_id": [2],
            "measurement_concept_id": [3025315],
            "measurement_date": pl.Series(["2013-01-01"]).str.to_date(),
            "value_as_number": [50.0],
        }
    ).write_parquet(root / "measurement" / "001.parquet")
    write_csv(
        root / "Observation.csv",
        [
            {
                "person_id": 2,
                "observation_concept_id": 4,
                "observation_date": "2014-01-01",
                "value_as_number": "",
                "value_as_string": "smoker",
            }
        ],
    )
    write_csv(root / "death.csv", [{"person_id": 1, "death_date": "2015-06-01"}])
    return root


def test_csv_directory_conversion(cdm_dir: Path, tmp_path: Path) -> None:
    report = convert_omop(cdm_dir, tmp_path / "out")
    assert report.source_rows == {
        "person": 2,
        "condition_occurrence": 4,
        "measurement": 3,
        "observation": 1,
        "death": 1,
    }
    assert report.events_per_table["condition_occurrence"] == 2
    assert report.dropped_per_table["condition_occurrence"] == 2
    events = read_meds_dataset(tmp_path / "out").data.collect()
    one = events.filter(pl.col("subject_id") == 1)
    assert one["code"].to_list() == [
        "GENDER/F",
        "MEDS_BIRTH",
        "CONDITION/201826",
        "MEASUREMENT/3025315",
        "MEDS_DEATH",
    ]  # race and ethnicity concept 0: no event
    assert one["time"][0] is None
    assert str(one["time"][1]) == "1970-05-01 00:00:00"
    two = events.filter(pl.col("subject_id") == 2)
    assert str(two.filter(pl.col("code") == "MEDS_BIRTH")["time"].item()) == "1980-01-02 03:04:05"
    assert str(two.filter(pl.col("code") == "CONDITION/201826")["time"].item()) == (
        "2011-03-01 10:30:00"
    )
    assert {"RACE/5", "ETHNICITY/Not Hispanic", "MEASUREMENT/0"} <= set(two["code"])
    assert two["numeric_value"].drop_nulls().to_list() == [50.0]
    assert two.filter(pl.col("code") == "OBSERVATION/4")["text_value"].item() == "smoker"
    assert events.height == report.events == 13


def test_observation_periods(cdm_dir: Path) -> None:
    write_csv(
        cdm_dir / "observation_period.csv",
        [
            {
                "person_id": 1,
                "observation_period_start_date": "2009-01-01",
                "observation_period_end_date": "2015-06-01",
            },
            {
                "person_id": 2,
                "observation_period_start_date": "2010-01-01",
                "observation_period_end_date": "2009-01-01",
            },  # ends before it starts: dropped
            {
                "person_id": 3,
                "observation_period_start_date": "2010-01-01",
                "observation_period_end_date": "2012-01-01",
            },  # unknown person: dropped
            {
                "person_id": 2,
                "observation_period_start_date": "2011-01-01",
                "observation_period_end_date": "",
            },  # no end: dropped whole
        ],
    )
    events, codes, report = omop_to_meds(cdm_dir)
    assert report.source_rows["observation_period"] == 4
    assert report.dropped_per_table["observation_period"] == 3
    assert report.events_per_table["observation_period"] == 2
    marks = events.filter(pl.col("code").str.starts_with("MEDS_OBSERVATION"))
    assert marks["subject_id"].to_list() == [1, 1]
    assert [str(t) for t in marks["time"]] == ["2009-01-01 00:00:00", "2015-06-01 00:00:00"]
    assert marks["code"].to_list() == [OBSERVATION_START_CODE, OBSERVATION_END_CODE]
    assert codes.filter(pl.col("code") == OBSERVATION_END_CODE)["description"].item()


def test_zip_equals_directory(cdm_dir: Path, tmp_path: Path) -> None:
    archive = tmp_path / "cdm.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in cdm_dir.rglob("*"):
            if f.is_file():
                zf.write(f, Path("export") / f.relative_to(cdm_dir))
        zf.writestr("__MACOSX/._PERSON.csv", b"\x00\x05junk")
    a, codes_a, _ = omop_to_meds(cdm_dir)
    b, codes_b, _ = omop_to_meds(archive)
    assert a.equals(b) and codes_a.equals(codes_b)


def test_bad_sources(cdm_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        omop_to_meds(tmp_path / "absent")
    corrupt = tmp_path / "bad.zip"
    corrupt.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    with pytest.raises(MedsFormatError, match=r"bad\.zip"):
        convert_omop(corrupt, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (cdm_dir / "PERSON.csv").unlink()
    with pytest.raises(MedsFormatError, match="no person table"):
        omop_to_meds(cdm_dir)


def test_missing_column_names_table_and_column(cdm_dir: Path) -> None:
    write_csv(cdm_dir / "death.csv", [{"person_id": 1, "date_of_death": "2015-06-01"}])
    with pytest.raises(MedsFormatError, match=r"death.*death_date"):
        omop_to_meds(cdm_dir)


def test_truncated_zip_member(cdm_dir: Path, tmp_path: Path) -> None:
    archive = tmp_path / "cdm.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(cdm_dir / "PERSON.csv", "PERSON.csv")
    data = bytearray(archive.read_bytes())
    data[40:60] = b"\xff" * 20  # damage the compressed member
    archive.write_bytes(bytes(data))
    with pytest.raises(MedsFormatError, match=r"cdm\.zip"):
        convert_omop(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# Eunomia (DuckDB), cached once per module.


@pytest.fixture(scope="module")
def eunomia(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return eunomia_meds(cache), cache


def duckdb_counts() -> dict[str, int]:
    import duckdb

    con = duckdb.connect(str(eunomia_path()), read_only=True)
    try:
        counts = {}
        for table in ("person", *CLINICAL, "observation_period"):
            columns = [r[0].lower() for r in con.sql(f"DESCRIBE {table}").fetchall()]
            # Eunomia stores empty tables as one row holding the column names.
            n = con.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            counts[table] = 0 if "person_id" not in columns else n
        return counts
    finally:
        con.close()


def test_eunomia_counts_match_duckdb(eunomia) -> None:
    path, _ = eunomia
    ds = read_meds_dataset(path)
    events = ds.data.collect()
    counts = duckdb_counts()
    assert counts["person"] == 2694
    assert events["subject_id"].n_unique() == 2694
    assert counts["death"] == 0 and counts["visit_occurrence"] == 1037
    # Every clinical table maps one row to one event; tell the tables apart by their codes.
    codes = ds.codes
    assert set(events["code"]) <= set(codes["code"])
    clinical = (
        events.height
        - events.filter(
            pl.col("code").str.contains(
                r"^(MEDS_BIRTH|MEDS_OBSERVATION_START|MEDS_OBSERVATION_END|GENDER/|RACE/|ETHNICITY/)"
            )
        ).height
    )
    assert clinical == sum(counts[t] for t in CLINICAL)
    # One observation period per person; 2,649 more rows point to persons not in the table.
    for code in (OBSERVATION_START_CODE, OBSERVATION_END_CODE):
        assert events.filter(pl.col("code") == code)["subject_id"].n_unique() == 2694
    assert events.filter(pl.col("code") == meds.birth_code).height == 2694
    assert events["numeric_value"].is_not_null().sum() == 0  # Eunomia has no values
    assert ds.metadata["dataset_name"] == "eunomia-gibleed"
    assert ds.splits.height == 2694


def test_eunomia_per_table_counts(tmp_path: Path) -> None:
    _, _, report = omop_to_meds(eunomia_path())
    counts = duckdb_counts()
    for table in CLINICAL:
        assert report.source_rows.get(table, 0) == counts[table], table
        assert report.events_per_table.get(table, 0) == counts[table], table
    assert report.source_rows["observation_period"] == counts["observation_period"] == 5343
    assert report.dropped_per_table["observation_period"] == 2649  # persons not in the table
    assert report.events_per_table["observation_period"] == 2 * (5343 - 2649)


def test_eunomia_cache_is_reused(eunomia, monkeypatch) -> None:
    path, cache = eunomia
    stamp = (path / "metadata" / "dataset.json").stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr("densefeat.data.convert.omop.convert_omop", fail)
    assert eunomia_meds(cache) == path
    monkeypatch.setenv("DENSEFEAT_CACHE", str(cache))
    assert eunomia_meds() == path
    assert (path / "metadata" / "dataset.json").stat().st_mtime_ns == stamp
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temporary leftovers


# --------------------------------------------------------------------------------------------
# CLI.


def test_cli_convert_omop(cdm_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["convert", "omop", str(cdm_dir), "--out", str(out)]) == 0
    assert "2 subjects, 13 events" in capsys.readouterr().out
    assert event_count(out) == 13
    # A second run refuses the non-empty directory ...
    assert main(["convert", "omop", str(cdm_dir), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    # ... unless told to overwrite.
    assert main(["convert", "omop", str(cdm_dir), "--out", str(out), "--overwrite"]) == 0


def test_cli_errors(tmp_path: Path, capsys) -> None:
    assert main(["convert", "omop", str(tmp_path / "absent"), "--out", str(tmp_path / "o")]) == 2
    assert "densefeat convert: error:" in capsys.readouterr().err
    corrupt = tmp_path / "bad.zip"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["convert", "omop", str(corrupt), "--out", str(tmp_path / "o")]) == 2
    assert "bad.zip" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["convert", "omop"]) == 2  # argparse: missing SRC


def test_cli_convert_eunomia(tmp_path: Path, capsys) -> None:
    out = tmp_path / "eunomia"
    assert main(["convert", "eunomia", "--out", str(out)]) == 0
    assert "2,694 subjects" in capsys.readouterr().out
    assert event_count(out) > 200_000


def test_cli_convert_fhir(tmp_path: Path, capsys) -> None:
    pytest.importorskip("densefeat.data.convert.fhir")
    src = SHARED_DATA / "synthea_fhir_10"
    if not src.is_dir():
        pytest.skip("shared FHIR sample absent")
    out = tmp_path / "fhir"
    assert main(["convert", "fhir", str(src), "--out", str(out)]) == 0
    assert event_count(out) > 0
    assert main(["convert", "fhir", str(tmp_path / "absent"), "--out", str(tmp_path / "x")]) == 2
