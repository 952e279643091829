"""The FHIR bulk-export converter (``densefeat.data.fhir``).

On the shared Synthea sample (13 patients, no Observation), every count is checked against an
independent pass over the NDJSON done here with ``gzip``/``json``; Observation handling, time
zones and bad inputs are checked on small exports written by the tests.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from _paths import SHARED_DATA
from densefeat.data.convert import fhir
from densefeat.data.convert.fhir import fhir_subject_id, read_fhir_bulk, subject_id_map

SAMPLE = SHARED_DATA / "synthea_fhir_10"
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"{SAMPLE} not present")

EVENT_SCHEMA = {
    "subject_id": pl.Int64,
    "time": pl.Datetime("us"),
    "code": pl.Utf8,
    "numeric_value": pl.Float32,
    "text_value": pl.Utf8,
}
SHORT = {
    "http://snomed.info/sct": "SNOMED",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://hl7.org/fhir/sid/cvx": "CVX",
    "http://loinc.org": "LOINC",
}


# --------------------------------------------------------------------------- helpers


def _raw(resource_type: str) -> list[dict]:
    """All resources of one type in the sample, read independently of the module."""
    out: list[dict] = []
    for path in sorted(SAMPLE.glob(f"{resource_type}.*.ndjson.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            out.extend(json.loads(line) for line in fh if line.strip())
    return out


def _code(concept: dict) -> str:
    coding = concept["coding"][0]
    return f"{SHORT[coding['system']]}/{coding['code']}"


def _utc(value: str) -> datetime:
    dt = datetime.fromisoformat(value)
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo else dt


def _write(directory: Path, name: str, resources: list[Any], gz: bool = False) -> Path:
    """Write resources (dicts, or raw strings for broken lines) as one NDJSON file."""
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in resources)
    path = directory / name
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _patient(pid: str = "p1", **extra: Any) -> dict:
    return {"resourceType": "Patient", "id": pid, "birthDate": "1980-02-03", **extra}


def _obs(**fields: Any) -> dict:
    base = {
        "resourceType": "Observation",
        "id": "o",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0", "display": "Glu"}]},
        "effectiveDateTime": "2020-01-01T10:00:00Z",
    }
    base.update(fields)
    return base


def _loinc(code: str, display: str | None = None) -> dict:
    return {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]}


# --------------------------------------------------------------------------- shared sample


@pytest.fixture(scope="module")
def sample() -> tuple[pl.DataFrame, pl.DataFrame]:
    if not SAMPLE.is_dir():
        pytest.skip(f"{SAMPLE} not present")
    return read_fhir_bulk(SAMPLE)


@needs_sample
def test_schema_and_order(sample: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    events, codes = sample
    assert dict(events.schema) == EVENT_SCHEMA
    assert events["subject_id"].null_count() == 0 and events["code"].null_count() == 0
    assert events.equals(events.sort(["subject_id", "time"], nulls_last=False, maintain_order=True))
    assert dict(codes.schema) == {
        "code": pl.Utf8,
        "description": pl.Utf8,
        "parent_codes": pl.List(pl.Utf8),
    }
    assert codes["code"].is_unique().all()
    assert set(codes["code"]) == set(events["code"])


@needs_sample
def test_subjects(sample: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    events, _ = sample
    patients = _raw("Patient")
    assert len(patients) == 13
    expected = {
        int.from_bytes(hashlib.sha256(p["id"].encode()).digest()[:8], "big") & (2**63 - 1)
        for p in patients
    }
    assert set(events["subject_id"]) == expected
    mapping = subject_id_map(SAMPLE)
    assert mapping.height == 13
    assert dict(zip(mapping["fhir_id"], mapping["subject_id"], strict=True)) == {
        p["id"]: fhir_subject_id(p["id"]) for p in patients
    }


@needs_sample
def test_event_counts_match_source(sample: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    events, _ = sample
    expected: Counter[str] = Counter()
    for r in _raw("Condition") + _raw("Procedure"):
        expected[_code(r["code"])] += 1
    for r in _raw("MedicationRequest"):
        expected[_code(r["medicationCodeableConcept"])] += 1
    for r in _raw("Immunization"):
        expected[_code(r["vaccineCode"])] += 1
    for r in _raw("Encounter"):
        expected[_code(r["type"][0])] += 1
        expected[f"ENCOUNTER_CLASS/{r['class']['code']}"] += 1
    for r in _raw("DocumentReference"):
        expected[f"NOTE//{_code(r['type'])}"] += 1
    for p in _raw("Patient"):
        expected["MEDS_BIRTH"] += 1
        expected[f"GENDER/{p['gender']}"] += 1
        expected["MEDS_DEATH"] += "deceasedDateTime" in p
        for ext in p["extension"]:
            prefix = {"us-core-race": "RACE", "us-core-ethnicity": "ETHNICITY"}.get(
                ext["url"].rsplit("/", 1)[-1]
            )
            if prefix:
                omb = next(e for e in ext["extension"] if e["url"] == "ombCategory")
                expected[f"{prefix}/{omb['valueCoding']['code']}"] += 1
    assert Counter(events["code"].to_list()) == expected
    assert events.height == 8217  # measured; equals the independent total above
    assert sum(expected.values()) == events.height
    assert events["numeric_value"].null_count() == events.height  # no Observation here


@needs_sample
def test_event_times_match_source(sample: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    events, codes = sample

    def sid(ref: dict) -> int:
        return fhir_subject_id(ref["reference"].split("/")[1])

    expected: Counter[tuple[int, datetime, str]] = Counter()
    for r in _raw("Condition"):
        expected[sid(r["subject"]), _utc(r["onsetDateTime"]), _code(r["code"])] += 1
    for r in _raw("Procedure"):
        expected[sid(r["subject"]), _utc(r["performedPeriod"]["start"]), _code(r["code"])] += 1
    for r in _raw("MedicationRequest"):
        key = (sid(r["subject"]), _utc(r["authoredOn"]), _code(r["medicationCodeableConcept"]))
        expected[key] += 1
    for r in _raw("Immunization"):
        expected[sid(r["patient"]), _utc(r["occurrenceDateTime"]), _code(r["vaccineCode"])] += 1
    for r in _raw("Encounter"):
        start = _utc(r["period"]["start"])
        expected[sid(r["subject"]), start, _code(r["type"][0])] += 1
        expected[sid(r["subject"]), start, f"ENCOUNTER_CLASS/{r['class']['code']}"] += 1
    for r in _raw("DocumentReference"):
        expected[sid(r["subject"]), _utc(r["date"]), f"NOTE//{_code(r['type'])}"] += 1
    clinical = events.filter(~pl.col("code").str.contains(r"^(MEDS_|GENDER/|RACE/|ETHNICITY/)"))
    assert Counter(clinical.select("subject_id", "time", "code").rows()) == expected
    desc = dict(zip(codes["code"], codes["description"], strict=True))
    assert desc["SNOMED/91302008"] == "Sepsis (disorder)"
    assert desc["MEDS_BIRTH"] == "Birth"
    assert desc["ENCOUNTER_CLASS/AMB"] == "ambulatory"
    assert desc["NOTE//LOINC/34117-2"] == "Note: History and physical note"


@needs_sample
def test_birth_and_death(sample: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    events, _ = sample
    births = events.filter(pl.col("code") == "MEDS_BIRTH")
    deaths = events.filter(pl.col("code") == "MEDS_DEATH")
    patients = _raw("Patient")
    assert dict(zip(births["subject_id"], births["time"], strict=True)) == {
        fhir_subject_id(p["id"]): datetime.fromisoformat(p["birthDate"]) for p in patients
    }
    assert dict(zip(deaths["subject_id"], deaths["time"], strict=True)) == {
        fhir_subject_id(p["id"]): _utc(p["deceasedDateTime"])
        for p in patients
        if "deceasedDateTime" in p
    }
    assert deaths.height == 3
    # demographics sit at birth, so nothing of theirs precedes it
    first = events.group_by("subject_id").agg(pl.col("time").min())
    assert dict(zip(first["subject_id"], first["time"], strict=True)) == dict(
        zip(births["subject_id"], births["time"], strict=True)
    )


@needs_sample
def test_notes_decoded(sample: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    events, _ = sample
    notes = events.filter(pl.col("code").str.starts_with("NOTE//"))
    docs = _raw("DocumentReference")
    assert notes.height == len(docs) == 1215
    assert notes["text_value"].null_count() == 0
    expected = Counter(
        base64.b64decode(d["content"][0]["attachment"]["data"]).decode("utf-8") for d in docs
    )
    assert Counter(notes["text_value"].to_list()) == expected
    assert notes["text_value"].str.contains("# Chief Complaint").all()
    doc = docs[0]
    row = notes.filter(
        (pl.col("subject_id") == fhir_subject_id(doc["subject"]["reference"].split("/")[1]))
        & (pl.col("time") == _utc(doc["date"]))
    )
    assert base64.b64decode(doc["content"][0]["attachment"]["data"]).decode() in set(
        row["text_value"]
    )
    # only notes carry text on this sample
    assert events.filter(pl.col("text_value").is_not_null()).height == 1215


# --------------------------------------------------------------------------- built exports


def test_observation_values_and_components(tmp_path: Path) -> None:
    bp = _obs(
        id="bp",
        code=_loinc("85354-9", "Blood pressure panel"),
        component=[
            {"code": _loinc("8480-6", "Systolic"), "valueQuantity": {"value": 120, "unit": "mm"}},
            {"code": _loinc("8462-4", "Diastolic"), "valueQuantity": {"value": 80.5}},
        ],
    )
    resources = [
        _obs(id="q", valueQuantity={"value": 5.4, "unit": "mmol/L"}),
        bp,
        _obs(id="s", code=_loinc("8251-1"), valueString="feels fine"),
        _obs(
            id="c",
            code=_loinc("72166-2"),
            valueCodeableConcept={
                "coding": [{"system": "http://snomed.info/sct", "code": "8517006"}]
            },
        ),
        _obs(id="b", code=_loinc("1111-1"), valueBoolean=True),
        _obs(id="n", code=_loinc("2222-2")),  # no value: still an event
        _obs(id="x", code=_loinc("3333-3"), status="cancelled", valueInteger=3),
    ]
    _write(tmp_path, "Patient.000.ndjson", [_patient()])
    _write(tmp_path, "Observation.000.ndjson.gz", resources, gz=True)
    events, codes = read_fhir_bulk(tmp_path)
    obs = events.filter(pl.col("code").str.starts_with("LOINC/"))
    got = {c: (n, t) for c, n, t in obs.select("code", "numeric_value", "text_value").rows()}
    assert got == {
        "LOINC/2339-0": (pytest.approx(5.4), None),
        "LOINC/8480-6": (120.0, None),
        "LOINC/8462-4": (80.5, None),
        "LOINC/8251-1": (None, "feels fine"),
        "LOINC/72166-2": (None, "SNOMED/8517006"),
        "LOINC/1111-1": (1.0, None),
        "LOINC/2222-2": (None, None),
    }
    assert "LOINC/85354-9" not in set(events["code"])  # panel without own value
    assert (obs["time"] == datetime(2020, 1, 1, 10)).all()
    desc = dict(zip(codes["code"], codes["description"], strict=True))
    assert desc["LOINC/8480-6"] == "Systolic"
    assert events.schema["numeric_value"] == pl.Float32


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2020-03-01T23:30:00+05:30", datetime(2020, 3, 1, 18, 0)),
        ("2020-03-01T22:30:00-05:00", datetime(2020, 3, 2, 3, 30)),  # crosses midnight
        ("2020-03-01T10:00:00.123456789Z", datetime(2020, 3, 1, 10, 0, 0, 123456)),
        ("2020-03-01T10:00:00", datetime(2020, 3, 1, 10)),  # no offset: taken as UTC
        ("2020-03-01", datetime(2020, 3, 1)),  # date: midnight, no shift
        ("2020-03", datetime(2020, 3, 1)),
        ("2020", datetime(2020, 1, 1)),
    ],
)
def test_time_zones(tmp_path: Path, value: str, expected: datetime) -> None:
    _write(tmp_path, "Patient.ndjson", [_patient()])
    _write(tmp_path, "Observation.ndjson", [_obs(effectiveDateTime=value)])
    events, _ = read_fhir_bulk(tmp_path)
    assert events.filter(pl.col("code") == "LOINC/2339-0")["time"].to_list() == [expected]


def test_references_statuses_and_medications(tmp_path: Path) -> None:
    rx = {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "314076"}
    _write(
        tmp_path, "Patient.000.ndjson", [_patient("p1"), {"resourceType": "Patient", "id": "p2"}]
    )
    _write(
        tmp_path,
        "Immunization.000.ndjson",
        [
            {
                "resourceType": "Immunization",
                "status": "completed",
                "vaccineCode": {
                    "coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "62"}]
                },
                "patient": {"reference": "urn:uuid:p1"},
                "occurrenceDateTime": "2014-08-19",
            },
            {
                "resourceType": "Immunization",
                "status": "not-done",
                "vaccineCode": {
                    "coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "08"}]
                },
                "patient": {"reference": "Patient/p1"},
                "occurrenceDateTime": "2014-08-19",
            },
        ],
    )
    _write(
        tmp_path,
        "MedicationRequest.000.ndjson",
        [
            {
                "resourceType": "MedicationRequest",
                "subject": {"reference": "https://x.org/fhir/Patient/p2/_history/3"},
                "medicationReference": {"reference": "Medication/m1"},
                "authoredOn": "2001-01-01T00:00:00+01:00",
            }
        ],
    )
    _write(
        tmp_path,
        "Medication.000.ndjson",
        [{"resourceType": "Medication", "id": "m1", "code": {"coding": [rx], "text": "lisin"}}],
    )
    events, codes = read_fhir_bulk(tmp_path)
    rows = events.select("subject_id", "time", "code").rows()
    assert (fhir_subject_id("p1"), datetime(2014, 8, 19), "CVX/62") in rows
    assert (fhir_subject_id("p2"), datetime(2000, 12, 31, 23), "RxNorm/314076") in rows
    assert "CVX/08" not in set(events["code"])  # not-done is no vaccination
    # p2 has no birthDate: its gender-less record has no static events at all
    assert events.filter(pl.col("subject_id") == fhir_subject_id("p2")).height == 1
    assert dict(zip(codes["code"], codes["description"], strict=True))["RxNorm/314076"] == "lisin"


def test_non_numeric_value_rejected(tmp_path: Path) -> None:
    _write(tmp_path, "Patient.ndjson", [_patient()])
    _write(tmp_path, "Observation.ndjson", [_obs(valueQuantity={"value": "high"})])
    with pytest.raises(ValueError, match=r"Observation\.ndjson:1: .*expected a number"):
        read_fhir_bulk(tmp_path)


def test_static_events_without_birth_date(tmp_path: Path) -> None:
    _write(tmp_path, "Patient.ndjson", [{"resourceType": "Patient", "id": "p", "gender": "male"}])
    events, _ = read_fhir_bulk(tmp_path)
    assert events.rows() == [(fhir_subject_id("p"), None, "GENDER/male", None, None)]


def test_system_names(tmp_path: Path) -> None:
    concept = {"coding": [{"system": "http://example.org/CodeSystem/local-lab", "code": "A1"}]}
    _write(tmp_path, "Patient.ndjson", [_patient()])
    _write(tmp_path, "Observation.ndjson", [_obs(code=concept)])
    assert "LOCAL_LAB/A1" in set(read_fhir_bulk(tmp_path)[0]["code"])
    names = {"http://example.org/CodeSystem/local-lab": "LAB"}
    assert "LAB/A1" in set(read_fhir_bulk(tmp_path, system_names=names)[0]["code"])


# --------------------------------------------------------------------------- bad input


def test_missing_or_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_fhir_bulk(tmp_path / "absent")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no FHIR NDJSON"):
        read_fhir_bulk(tmp_path)


def test_no_patient(tmp_path: Path) -> None:
    _write(tmp_path, "Observation.ndjson", [_obs()])
    with pytest.raises(ValueError, match="no Patient"):
        read_fhir_bulk(tmp_path)


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    _write(tmp_path, "Patient.ndjson", [_patient()])
    _write(tmp_path, "Observation.000.ndjson.gz", [_obs(), "", '{"resourceType": "Obs'], gz=True)
    with pytest.raises(ValueError, match=r"Observation\.000\.ndjson\.gz:3: malformed JSON"):
        read_fhir_bulk(tmp_path)


def test_corrupt_gzip(tmp_path: Path) -> None:
    _write(tmp_path, "Patient.ndjson", [_patient()])
    (tmp_path / "Observation.000.ndjson.gz").write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(ValueError, match=r"Observation\.000\.ndjson\.gz: cannot read"):
        read_fhir_bulk(tmp_path)


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("code", "missing code"),
        ("effectiveDateTime", "missing time"),
        ("subject", "missing subject"),
    ],
)
def test_missing_required_field(tmp_path: Path, drop: str, message: str) -> None:
    broken = _obs(id="bad")
    del broken[drop]
    _write(tmp_path, "Patient.ndjson", [_patient()])
    _write(tmp_path, "Observation.ndjson", [_obs(), broken])
    with pytest.raises(ValueError, match=rf"Observation\.ndjson:2: Observation/bad: {message}"):
        read_fhir_bulk(tmp_path)


def test_invalid_date(tmp_path: Path) -> None:
    _write(tmp_path, "Patient.ndjson", [_patient(birthDate="1980-13-45")])
    with pytest.raises(ValueError, match=r"Patient\.ndjson:1: .*invalid date/time '1980-13-45'"):
        read_fhir_bulk(tmp_path)


def test_unknown_patient_dropped_with_warning(tmp_path: Path) -> None:
    _write(tmp_path, "Patient.ndjson", [_patient()])
    ghost = {"reference": "Patient/ghost"}
    _write(tmp_path, "Observation.ndjson", [_obs(), _obs(subject=ghost), _obs(subject=ghost)])
    with pytest.warns(UserWarning, match=r"dropped 2 events .*Observation: 2"):
        events, _ = read_fhir_bulk(tmp_path)
    assert set(events["subject_id"]) == {fhir_subject_id("p1")}
    assert events.filter(pl.col("code") == "LOINC/2339-0").height == 1
    with pytest.raises(ValueError, match="Observation: 2"):
        read_fhir_bulk(tmp_path, on_unknown_patient="error")


def test_subject_id_collision_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "Patient.ndjson", [_patient("a"), _patient("b")])
    monkeypatch.setattr(fhir, "fhir_subject_id", lambda _id: 7)
    with pytest.raises(ValueError, match="same subject_id"):
        read_fhir_bulk(tmp_path)


def test_subject_id_is_stable() -> None:
    # a fixed value: changing the hash would silently re-key every converted dataset
    assert fhir_subject_id("129c6ac7-8d06-89de-ad63-0204a93e76c3") == 6508387642064427162
    assert 0 <= fhir_subject_id("") < 2**63
