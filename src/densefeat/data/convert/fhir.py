"""FHIR bulk-export NDJSON -> MEDS events and codes.

``read_fhir_bulk(src)`` reads a directory of FHIR R4 bulk-export files (``Patient.000.ndjson``,
``Encounter.001.ndjson.gz``, ...; plain or gzipped, one resource per line) and returns the two
tables of the project's MEDS contract:

- events: ``subject_id`` Int64, ``time`` Datetime("us") (null = static), ``code`` Utf8,
  ``numeric_value`` Float32, ``text_value`` Utf8; sorted by subject_id, then time with nulls
  first (ties keep file order).
- codes: ``code``, ``description`` (the first ``display``/``text`` met for the code),
  ``parent_codes`` (always null: FHIR resources carry no hierarchy).

What becomes an event (the time field used, in order of preference):

=================  ==========================================  ===============================
resource           code                                        time
=================  ==========================================  ===============================
Patient            ``MEDS_BIRTH``, ``GENDER/<gender>``,        birthDate (date -> midnight);
                   ``RACE/<code>``, ``ETHNICITY/<code>``       null (static) without one
                   (US Core extensions, ombCategory)
Patient            ``MEDS_DEATH``                              deceasedDateTime
Encounter          ``ENCOUNTER_CLASS/<class code>`` and the    period.start
                   first coding of ``type[0]``
Condition          code                                        onsetDateTime, onsetPeriod.start,
                                                               recordedDate
MedicationRequest  medicationCodeableConcept (or the           authoredOn
                   Medication it references)
Procedure          code                                        performedDateTime,
                                                               performedPeriod.start
Immunization       vaccineCode                                 occurrenceDateTime
Observation        code; each ``component`` as its own event   effectiveDateTime,
                   (a panel with components and no value of    effectivePeriod.start,
                   its own gives only the components)          effectiveInstant, issued
DocumentReference  ``NOTE//<type code>``, text_value = the     date, context.period.start
                   decoded ``text/*`` attachment
=================  ==========================================  ===============================

Values: ``valueQuantity.value``, ``valueInteger`` and ``valueBoolean`` (1/0) -> numeric_value
(units are not converted); ``valueCodeableConcept`` -> text_value as ``SYSTEM/CODE`` (its text
when it has no coding); ``valueString`` -> text_value. DocumentReference uses ``date`` (when the
note was written) before ``context.period.start`` (the encounter start), because a note must not
be visible before it exists.

Codes are ``SYSTEM/CODE`` with the first coding of a CodeableConcept (FHIR lists the preferred
coding first). System URIs map to short names through ``SYSTEM_NAMES`` (SNOMED, LOINC, RxNorm,
CVX, ICD10CM, ... also in their ``urn:oid`` forms); an unknown system becomes the last segment of
its URI, upper-cased with non-alphanumerics as ``_``; a coding without system uses ``NO_SYSTEM``.
Pass ``system_names`` to add or override names.

Times: a dateTime with an offset is converted to UTC and stored naive (the whole time column is
naive UTC); a dateTime without offset is taken as UTC; a date (or ``YYYY``/``YYYY-MM``) becomes
midnight of its first day, with no zone conversion (a date has no zone).

Subjects: a FHIR Patient id (a string, usually a UUID) maps to
``subject_id = int.from_bytes(sha256(id)[:8], "big") & (2**63 - 1)`` (``fhir_subject_id``): the
same patient gets the same id in every run and every subset of an export. A collision between
two ids of one export raises ``ValueError``. ``subject_id_map(src)`` returns the mapping
(``fhir_id``, ``subject_id``). References may be ``Patient/<id>``, ``urn:uuid:<id>``, absolute
URLs or ``.../_history/<n>``.

Skipped on purpose: resources with status ``entered-in-error``; Procedure/Immunization
``not-done``; Observation ``cancelled``; Condition verificationStatus ``refuted``; resource
types not listed above (their files are not even parsed when the file name says their type).
Resources whose subject is not a Patient of the export (or not a Patient at all), and
MedicationRequests referencing a Medication absent from the export, are dropped with one
``UserWarning`` giving the counts (``on_unknown_patient="error"`` raises instead).

Errors (``ValueError`` naming file and line): a malformed JSON line, a missing subject, code or
time, an unparsable date; also a directory without NDJSON files or without any Patient.
Files are streamed line by line (``gzip``/``json`` from the standard library).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import re
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import polars as pl

__all__ = [
    "SYSTEM_NAMES",
    "fhir_subject_id",
    "read_fhir_bulk",
    "subject_id_map",
]

# Short names of the code systems; OMOP vocabulary ids where one exists, so FHIR and OMOP
# conversions of the same data share codes.
SYSTEM_NAMES: dict[str, str] = {
    "http://snomed.info/sct": "SNOMED",
    "urn:oid:2.16.840.1.113883.6.96": "SNOMED",
    "http://loinc.org": "LOINC",
    "urn:oid:2.16.840.1.113883.6.1": "LOINC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "urn:oid:2.16.840.1.113883.6.88": "RxNorm",
    "http://hl7.org/fhir/sid/cvx": "CVX",
    "urn:oid:2.16.840.1.113883.12.292": "CVX",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD10CM",
    "urn:oid:2.16.840.1.113883.6.90": "ICD10CM",
    "http://hl7.org/fhir/sid/icd-10": "ICD10",
    "urn:oid:2.16.840.1.113883.6.3": "ICD10",
    "http://hl7.org/fhir/sid/icd-9-cm": "ICD9CM",
    "urn:oid:2.16.840.1.113883.6.103": "ICD9CM",
    "http://www.cms.gov/Medicare/Coding/ICD10": "ICD10PCS",
    "urn:oid:2.16.840.1.113883.6.4": "ICD10PCS",
    "http://www.ama-assn.org/go/cpt": "CPT4",
    "urn:oid:2.16.840.1.113883.6.12": "CPT4",
    "http://hl7.org/fhir/sid/ndc": "NDC",
    "urn:oid:2.16.840.1.113883.6.69": "NDC",
    "http://unitsofmeasure.org": "UCUM",
    "urn:oid:2.16.840.1.113883.6.238": "CDCREC",
    "http://terminology.hl7.org/CodeSystem/v3-ActCode": "ACTCODE",
    "http://nucc.org/provider-taxonomy": "NUCC",
    "http://www.nubc.org/patient-discharge": "NUBC",
}

# Encounter.class in R4 usually carries no display; these are HL7 v3 ActEncounterCode names.
_ENCOUNTER_CLASS_NAMES = {
    "AMB": "ambulatory",
    "EMER": "emergency",
    "FLD": "field",
    "HH": "home health",
    "IMP": "inpatient encounter",
    "ACUTE": "inpatient acute",
    "NONAC": "inpatient non-acute",
    "OBSENC": "observation encounter",
    "PRENC": "pre-admission",
    "SS": "short stay",
    "VR": "virtual",
}

_US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
_PATIENT_EXTENSIONS = {
    _US_CORE + "us-core-race": "RACE",
    _US_CORE + "us-core-ethnicity": "ETHNICITY",
}

# Types handled; a file whose name starts with another FHIR type is skipped unread.
_SUPPORTED = (
    "Patient",
    "Encounter",
    "Condition",
    "MedicationRequest",
    "Medication",
    "Procedure",
    "Immunization",
    "Observation",
    "DocumentReference",
)
_TYPE_IN_NAME = re.compile(r"^([A-Z][A-Za-z]+)(?:[._-]|$)")
_EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)
_MASK63 = (1 << 63) - 1

# The MEDS codes contract (as in data/meds.py; repeated so this module stands alone).
_CODES_SCHEMA: dict[str, pl.DataType] = {
    "code": pl.Utf8(),
    "description": pl.Utf8(),
    "parent_codes": pl.List(pl.Utf8()),
}


class _FieldError(ValueError):
    """A problem inside one resource; the reader adds file and line before re-raising."""


# --------------------------------------------------------------------------- subject ids


def fhir_subject_id(fhir_id: str) -> int:
    """The MEDS subject_id of a FHIR Patient id.

    The first 8 bytes of SHA-256(id), big-endian, masked to 63 bits so that it fits a
    non-negative Int64. Depends on the id only, so it is stable across runs and subsets.

    Args:
        fhir_id: the Patient resource's ``id``.

    Returns:
        An integer in ``[0, 2**63)``.
    """
    digest = hashlib.sha256(fhir_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & _MASK63


def _subject_ids(fhir_ids: list[str]) -> dict[str, int]:
    """Map ids to subject ids, raising on a hash collision (odds ~n^2 / 2^64)."""
    mapping = {fid: fhir_subject_id(fid) for fid in fhir_ids}
    if len(set(mapping.values())) != len(mapping):
        seen: dict[int, str] = {}
        for fid, sid in mapping.items():
            if sid in seen:
                raise ValueError(
                    f"FHIR Patient ids {seen[sid]!r} and {fid!r} hash to the same subject_id {sid}"
                )
            seen[sid] = fid
    return mapping


def _patient_id(reference: Any) -> str | None:
    """The Patient id of a Reference, or None when it does not point to a Patient.

    Bulk exports write ``Patient/<id>``; bundles converted to NDJSON keep ``urn:uuid:<id>``
    (which names no type, so it is taken as a Patient and checked against the export later).
    """
    if not isinstance(reference, dict):
        return None
    ref = reference.get("reference")
    if not isinstance(ref, str) or not ref:
        return None
    if ref.startswith("Patient/") and ref.count("/") == 1:  # the bulk-export form: fast path
        return ref[8:]
    if ref.startswith("urn:uuid:"):
        return ref[len("urn:uuid:") :]
    parts = ref.split("/")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "Patient" and i + 1 < len(parts):
            return parts[i + 1]
    return None


# --------------------------------------------------------------------------- fields


def _parse_time(value: Any, what: str) -> int:
    """A FHIR date/dateTime/instant as microseconds since 1970-01-01 in naive UTC."""
    if not isinstance(value, str):
        raise _FieldError(f"{what}: expected a date string, got {value!r}")
    try:
        if len(value) == 4:  # YYYY: partial dates start at their first day
            dt = datetime(int(value), 1, 1)
        elif len(value) == 7:  # YYYY-MM
            dt = datetime(int(value[:4]), int(value[5:7]), 1)
        else:
            dt = datetime.fromisoformat(value)
            if dt.tzinfo is not None:
                dt = dt.astimezone(UTC).replace(tzinfo=None)
    except ValueError as exc:
        raise _FieldError(f"{what}: invalid date/time {value!r}") from exc
    return (dt - _EPOCH) // _US


def _first_time(resource: dict, paths: tuple[str, ...]) -> int:
    """The first present time among dotted ``paths`` (e.g. ``period.start``); required."""
    for path in paths:
        node: Any = resource
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            return _parse_time(node, path)
    raise _FieldError(f"missing time (one of {', '.join(paths)})")


def _system_name(system: Any, names: Mapping[str, str]) -> str:
    if not isinstance(system, str) or not system:
        return "NO_SYSTEM"
    name = names.get(system)
    if name is None:
        tail = system.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        name = re.sub(r"[^A-Za-z0-9]+", "_", tail).upper() or "NO_SYSTEM"
    return name


def _coding_code(coding: Any, names: Mapping[str, str]) -> tuple[str, str | None] | None:
    """``(SYSTEM/CODE, display)`` of a Coding, or None without a code."""
    if not isinstance(coding, dict):
        return None
    code = coding.get("code")
    if code is None or code == "":
        return None
    return f"{_system_name(coding.get('system'), names)}/{code}", coding.get("display")


def _concept_code(concept: Any, names: Mapping[str, str]) -> tuple[str, str | None] | None:
    """``(SYSTEM/CODE, description)`` from the first coding of a CodeableConcept."""
    if not isinstance(concept, dict):
        return None
    for coding in concept.get("coding") or ():
        found = _coding_code(coding, names)
        if found is not None:
            code, display = found
            return code, display or concept.get("text")
    return None


def _required_concept(resource: dict, key: str, names: Mapping[str, str]) -> tuple[str, Any]:
    found = _concept_code(resource.get(key), names)
    if found is None:
        raise _FieldError(f"missing {key} (a CodeableConcept with a coding that has a code)")
    return found


def _number(value: Any, what: str) -> float:
    # bool is an int in Python: refuse it where FHIR wants a number
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _FieldError(f"{what}: expected a number, got {value!r}")
    return float(value)


def _value(node: dict, names: Mapping[str, str]) -> tuple[float | None, str | None]:
    """``(numeric_value, text_value)`` of an Observation or component ``value[x]``."""
    quantity = node.get("valueQuantity")
    if isinstance(quantity, dict) and quantity.get("value") is not None:
        return _number(quantity["value"], "valueQuantity.value"), None
    if node.get("valueInteger") is not None:
        return _number(node["valueInteger"], "valueInteger"), None
    if isinstance(node.get("valueBoolean"), bool):
        return float(node["valueBoolean"]), None
    if node.get("valueString") is not None:
        return None, str(node["valueString"])
    concept = node.get("valueCodeableConcept")
    if isinstance(concept, dict):
        found = _concept_code(concept, names)
        return None, found[0] if found else concept.get("text")
    return None, None


# --------------------------------------------------------------------------- accumulation


@dataclass
class _Events:
    """Column lists filled while streaming; patients stay FHIR ids until the end."""

    names: Mapping[str, str]
    patient: list[str] = field(default_factory=list)
    time: list[int | None] = field(default_factory=list)
    code: list[str] = field(default_factory=list)
    numeric: list[float | None] = field(default_factory=list)
    text: list[str | None] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    descriptions: dict[str, str | None] = field(default_factory=dict)
    patient_ids: list[str] = field(default_factory=list)
    medications: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    # (row, Medication id) of requests whose code lives in a Medication resource
    pending_medications: list[tuple[int, str]] = field(default_factory=list)
    non_patient: Counter = field(default_factory=Counter)

    def add(
        self,
        patient: str,
        time: int | None,
        code: str,
        source: str,
        description: str | None = None,
        numeric: float | None = None,
        text: str | None = None,
    ) -> None:
        self.patient.append(patient)
        self.time.append(time)
        self.code.append(code)
        self.numeric.append(numeric)
        self.text.append(text)
        self.source.append(source)
        # The first non-empty description wins: deterministic given the sorted file order.
        if not self.descriptions.get(code):
            self.descriptions[code] = description


def _subject(resource: dict, events: _Events) -> str | None:
    """The Patient id a resource is about; None (counted) when it is about something else."""
    for key in ("subject", "patient"):
        if key in resource:
            pid = _patient_id(resource[key])
            if pid is None:
                if isinstance(resource[key], dict) and resource[key].get("reference"):
                    events.non_patient[resource["resourceType"]] += 1
                    return None
                raise _FieldError(f"{key} has no reference")
            return pid
    raise _FieldError("missing subject/patient reference")


# --------------------------------------------------------------------------- resources


def _patient(r: dict, ev: _Events) -> None:
    pid = r.get("id")
    if not isinstance(pid, str) or not pid:
        raise _FieldError("Patient without id")
    ev.patient_ids.append(pid)
    birth = _parse_time(r["birthDate"], "birthDate") if r.get("birthDate") else None
    if birth is not None:
        ev.add(pid, birth, "MEDS_BIRTH", "Patient", "Birth")
    if r.get("gender"):
        ev.add(
            pid, birth, f"GENDER/{r['gender']}", "Patient", f"Administrative gender {r['gender']}"
        )
    for ext in r.get("extension") or ():
        prefix = _PATIENT_EXTENSIONS.get(ext.get("url")) if isinstance(ext, dict) else None
        if prefix is None:
            continue
        for sub in ext.get("extension") or ():
            coding = sub.get("valueCoding") if sub.get("url") == "ombCategory" else None
            if isinstance(coding, dict) and coding.get("code"):
                code = f"{prefix}/{coding['code']}"
                ev.add(pid, birth, code, "Patient", coding.get("display"))
    if r.get("deceasedDateTime"):
        # deceasedBoolean alone gives no time; a static death event would read as "always dead".
        ev.add(
            pid,
            _parse_time(r["deceasedDateTime"], "deceasedDateTime"),
            "MEDS_DEATH",
            "Patient",
            "Death",
        )


def _encounter_class(r: dict) -> tuple[str, str | None] | None:
    cls = r.get("class")
    if isinstance(cls, list):  # R5: a list of CodeableConcepts
        cls = (cls[0].get("coding") or [None])[0] if cls and isinstance(cls[0], dict) else None
    if not isinstance(cls, dict) or not cls.get("code"):
        return None
    code = cls["code"]
    return f"ENCOUNTER_CLASS/{code}", cls.get("display") or _ENCOUNTER_CLASS_NAMES.get(code)


def _encounter(r: dict, ev: _Events) -> None:
    pid = _subject(r, ev)
    if pid is None:
        return
    cls = _encounter_class(r)
    types = r.get("type") or []
    typ = _concept_code(types[0], ev.names) if types else None
    if cls is None and typ is None:
        raise _FieldError("missing class and type")
    time = _first_time(r, ("period.start",))
    for found in (cls, typ):
        if found is not None:
            ev.add(pid, time, found[0], "Encounter", found[1])


def _coded(code_key: str, time_paths: tuple[str, ...]) -> Callable[[dict, _Events], None]:
    """Handler for a resource that is one coded event at one time."""

    def handle(r: dict, ev: _Events) -> None:
        pid = _subject(r, ev)
        if pid is None:
            return
        code, description = _required_concept(r, code_key, ev.names)
        ev.add(pid, _first_time(r, time_paths), code, r["resourceType"], description)

    return handle


_condition_event = _coded("code", ("onsetDateTime", "onsetPeriod.start", "recordedDate"))


def _condition(r: dict, ev: _Events) -> None:
    status = r.get("verificationStatus") or {}
    codes = {c.get("code") for c in status.get("coding") or () if isinstance(c, dict)}
    if codes & {"refuted", "entered-in-error"}:  # a diagnosis ruled out is not an event
        return
    _condition_event(r, ev)


def _medication(r: dict, ev: _Events) -> None:
    if r.get("id") and (found := _concept_code(r.get("code"), ev.names)) is not None:
        ev.medications[r["id"]] = found


def _medication_request(r: dict, ev: _Events) -> None:
    pid = _subject(r, ev)
    if pid is None:
        return
    time = _first_time(r, ("authoredOn",))
    found = _concept_code(r.get("medicationCodeableConcept"), ev.names)
    if found is not None:
        ev.add(pid, time, found[0], "MedicationRequest", found[1])
        return
    ref = (r.get("medicationReference") or {}).get("reference")
    if not isinstance(ref, str) or not ref:
        raise _FieldError("missing medicationCodeableConcept/medicationReference")
    if ref.startswith("#"):  # a contained Medication: resolve now
        for contained in r.get("contained") or ():
            if contained.get("id") == ref[1:]:
                code, description = _required_concept(contained, "code", ev.names)
                ev.add(pid, time, code, "MedicationRequest", description)
                return
        raise _FieldError(f"contained Medication {ref} not found")
    # A Medication resource may come later in another file: resolve after the pass.
    ev.pending_medications.append((len(ev.code), ref.rsplit("/", 1)[-1]))
    ev.add(pid, time, "", "MedicationRequest")


def _observation(r: dict, ev: _Events) -> None:
    if r.get("status") == "cancelled":
        return
    pid = _subject(r, ev)
    if pid is None:
        return
    code, description = _required_concept(r, "code", ev.names)
    time = _first_time(
        r, ("effectiveDateTime", "effectivePeriod.start", "effectiveInstant", "issued")
    )
    numeric, text = _value(r, ev.names)
    components = r.get("component") or []
    # A panel (blood pressure) has its values only in components: its own code adds nothing.
    if numeric is not None or text is not None or not components:
        ev.add(pid, time, code, "Observation", description, numeric, text)
    for comp in components:
        found = _concept_code(comp.get("code"), ev.names)
        if found is None:
            raise _FieldError("Observation.component without a coded code")
        numeric, text = _value(comp, ev.names)
        ev.add(pid, time, found[0], "Observation", found[1], numeric, text)


def _note_text(r: dict) -> str | None:
    """The first inline ``text/*`` attachment of a DocumentReference, decoded."""
    for content in r.get("content") or ():
        att = content.get("attachment") or {}
        ctype = str(att.get("contentType") or "text/plain")
        if not ctype.lower().startswith("text/") or not att.get("data"):
            continue
        charset = re.search(r"charset=([\w.-]+)", ctype)
        try:
            raw = base64.b64decode(att["data"], validate=False)
        except (binascii.Error, ValueError) as exc:
            raise _FieldError(f"attachment.data is not valid base64: {exc}") from exc
        try:
            return raw.decode(charset.group(1) if charset else "utf-8", errors="replace")
        except LookupError:  # unknown charset name: utf-8 is the usual truth
            return raw.decode("utf-8", errors="replace")
    return None


def _document_reference(r: dict, ev: _Events) -> None:
    pid = _subject(r, ev)
    if pid is None:
        return
    typ = _concept_code(r.get("type"), ev.names)
    code = f"NOTE//{typ[0]}" if typ else "NOTE"
    description = f"Note: {typ[1]}" if typ and typ[1] else "Note"
    time = _first_time(r, ("date", "context.period.start"))
    ev.add(pid, time, code, "DocumentReference", description, text=_note_text(r))


_HANDLERS: dict[str, Callable[[dict, _Events], None]] = {
    "Patient": _patient,
    "Encounter": _encounter,
    "Condition": _condition,
    "MedicationRequest": _medication_request,
    "Medication": _medication,
    "Procedure": _coded("code", ("performedDateTime", "performedPeriod.start")),
    "Immunization": _coded("vaccineCode", ("occurrenceDateTime",)),
    "Observation": _observation,
    "DocumentReference": _document_reference,
}
_SKIP_STATUS = {
    "Procedure": {"not-done"},
    "Immunization": {"not-done"},
}


# --------------------------------------------------------------------------- files


def _ndjson_files(src: Path) -> list[Path]:
    if not src.is_dir():
        raise FileNotFoundError(f"FHIR source {src} is not a directory")
    files = sorted(
        p for p in src.iterdir() if p.is_file() and p.name.endswith((".ndjson", ".ndjson.gz"))
    )
    if not files:
        raise ValueError(f"{src}: no FHIR NDJSON files (*.ndjson, *.ndjson.gz)")
    return files


def _wanted(path: Path, types: tuple[str, ...]) -> bool:
    """Bulk-export files are named by type: skip other types' files without parsing them."""
    match = _TYPE_IN_NAME.match(path.name)
    return match is None or match.group(1) in types


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a plain or gzipped file, streamed."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            yield from enumerate(fh, start=1)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from exc


def _read_file(path: Path, ev: _Events, types: tuple[str, ...]) -> None:
    for lineno, line in _lines(path):
        if line.isspace() or not line:  # no strip(): it would copy every (long) note line
            continue
        try:
            resource = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from exc
        if not isinstance(resource, dict):
            raise ValueError(f"{path}:{lineno}: a line is not a JSON object")
        rtype = resource.get("resourceType")
        if rtype not in types:  # also lines without resourceType (e.g. an export log)
            continue
        status = resource.get("status")
        if status == "entered-in-error" or status in _SKIP_STATUS.get(rtype, ()):
            continue
        try:
            _HANDLERS[rtype](resource, ev)
        except _FieldError as exc:
            rid = resource.get("id", "?")
            raise ValueError(f"{path}:{lineno}: {rtype}/{rid}: {exc}") from None


def _scan(src: str | Path, types: tuple[str, ...], names: Mapping[str, str]) -> _Events:
    ev = _Events(names=names)
    for path in _ndjson_files(Path(src)):
        if _wanted(path, types):
            _read_file(path, ev, types)
    if not ev.patient_ids:
        raise ValueError(f"{src}: no Patient resources; every event needs its patient")
    return ev


# --------------------------------------------------------------------------- assembly


def _resolve_medications(ev: _Events) -> set[int]:
    """Fill codes of MedicationRequests that reference a Medication; return unresolved rows."""
    missing: set[int] = set()
    for row, med_id in ev.pending_medications:
        found = ev.medications.get(med_id)
        if found is None:
            missing.add(row)
            continue
        ev.code[row] = found[0]
        if not ev.descriptions.get(found[0]):
            ev.descriptions[found[0]] = found[1]
    return missing


def _drop_report(
    ev: _Events, unknown: Counter, missing_med: int, policy: Literal["drop", "error"]
) -> None:
    parts = []
    if unknown:
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(unknown.items()))
        parts.append(f"{sum(unknown.values())} events referencing a patient absent ({detail})")
    if ev.non_patient:
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(ev.non_patient.items()))
        parts.append(f"{sum(ev.non_patient.values())} resources about a non-Patient ({detail})")
    if missing_med:
        parts.append(f"{missing_med} MedicationRequests whose Medication is absent")
    if not parts:
        return
    message = "FHIR export: dropped " + "; ".join(parts)
    if policy == "error":
        raise ValueError(message)
    warnings.warn(message, UserWarning, stacklevel=3)


def _frames(ev: _Events, keep: list[bool], mapping: dict[str, int]) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "patient": ev.patient,
            "time": ev.time,
            "code": ev.code,
            "numeric_value": ev.numeric,
            "text_value": ev.text,
            "keep": keep,
        },
        schema={
            "patient": pl.Utf8,
            "time": pl.Int64,
            "code": pl.Utf8,
            "numeric_value": pl.Float64,
            "text_value": pl.Utf8,
            "keep": pl.Boolean,
        },
    )
    return (
        frame.filter("keep")
        .select(
            pl.col("patient").replace_strict(mapping, return_dtype=pl.Int64).alias("subject_id"),
            pl.col("time").cast(pl.Datetime("us")),
            "code",
            pl.col("numeric_value").cast(pl.Float32),
            "text_value",
        )
        .sort(["subject_id", "time"], nulls_last=False, maintain_order=True)
    )


def _codes(events: pl.DataFrame, descriptions: Mapping[str, str | None]) -> pl.DataFrame:
    codes = sorted(events.get_column("code").unique().to_list())
    return pl.DataFrame(
        {
            "code": codes,
            "description": [descriptions.get(c) or None for c in codes],
            "parent_codes": [None] * len(codes),
        },
        schema=_CODES_SCHEMA,
    )


def read_fhir_bulk(
    src: str | Path,
    *,
    on_unknown_patient: Literal["drop", "error"] = "drop",
    system_names: Mapping[str, str] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read a FHIR bulk-export directory into MEDS ``(events, codes)``.

    See the module docstring for what each resource becomes, the code names and time rules.

    Args:
        src: directory with ``<Type>.<n>.ndjson`` / ``.ndjson.gz`` files.
        on_unknown_patient: ``"drop"`` (default) drops events whose patient is not among the
            export's Patient resources (and MedicationRequests whose Medication is absent)
            with one ``UserWarning`` giving counts per resource type; ``"error"`` raises.
        system_names: extra or overriding ``{system URI: short name}`` entries.

    Returns:
        ``(events, codes)``: events with columns subject_id, time, code, numeric_value,
        text_value (sorted by subject_id, time; nulls first); codes with code, description,
        parent_codes. ``subject_id`` is ``fhir_subject_id(Patient.id)``; ``subject_id_map``
        gives the mapping.

    Raises:
        FileNotFoundError: ``src`` is not a directory.
        ValueError: no NDJSON files or no Patient; a malformed line or a resource missing its
            subject, code or time (the message names the file and line); a subject_id
            collision; dropped events with ``on_unknown_patient="error"``.
    """
    if on_unknown_patient not in ("drop", "error"):
        raise ValueError(
            f"on_unknown_patient must be 'drop' or 'error', not {on_unknown_patient!r}"
        )
    names = {**SYSTEM_NAMES, **(system_names or {})}
    ev = _scan(src, _SUPPORTED, names)
    mapping = _subject_ids(sorted(set(ev.patient_ids)))
    missing_med = _resolve_medications(ev)
    keep = [p in mapping for p in ev.patient]
    unknown = Counter(s for s, k in zip(ev.source, keep, strict=True) if not k)
    for row in missing_med:
        keep[row] = False
    _drop_report(ev, unknown, len(missing_med), on_unknown_patient)
    events = _frames(ev, keep, mapping)
    return events, _codes(events, ev.descriptions)


def subject_id_map(src: str | Path) -> pl.DataFrame:
    """The FHIR Patient id -> subject_id mapping of an export.

    Args:
        src: the same directory as for ``read_fhir_bulk``; only Patient files are parsed.

    Returns:
        DataFrame ``fhir_id`` (Utf8), ``subject_id`` (Int64), sorted by ``fhir_id``.

    Raises:
        ValueError: as ``read_fhir_bulk`` for Patient resources, or on a collision.
    """
    ev = _scan(src, ("Patient",), SYSTEM_NAMES)
    mapping = _subject_ids(sorted(set(ev.patient_ids)))
    return pl.DataFrame(
        {"fhir_id": list(mapping), "subject_id": list(mapping.values())},
        schema={"fhir_id": pl.Utf8, "subject_id": pl.Int64},
    )
