"""The PhysioNet/CinC 2019 converter (``densefeat.data.physionet2019``) on real challenge files.

Nine files of training set A are read from the shared tarball with ``tarfile`` (nothing is
extracted to disk but these nine) and converted with ``densefeat convert physionet2019``. Every
event is checked against an independent pass over the raw ``.psv`` text with the ``csv`` module,
and the task labels against values worked out by hand from the files (rows quoted below).
The whole set A is read once to pin its counts to the ones published in SOURCES.md.
"""

from __future__ import annotations

import csv
import io
import tarfile
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from _paths import SHARED_DATA
from densefeat.cli import main
from densefeat.data.convert import physionet2019 as pn
from densefeat.data.ehr import HistoryBuilder
from densefeat.data.ehr.windows import window_pairs
from densefeat.data.meds import read_labels, read_meds_dataset

TARBALL = SHARED_DATA / "physionet2019" / "training_setA.tar.xz"
needs_tarball = pytest.mark.skipif(not TARBALL.is_file(), reason=f"{TARBALL} not present")

REF = datetime(2000, 1, 1)
#: Hand-picked stays (first ICULOS .. last ICULOS, SepsisLabel string as in the file):
#:  1: 1..54,  never septic; Unit1/Unit2 NaN.
#:  9: 1..258, first SepsisLabel=1 at ICULOS 249 -> onset 255.
#: 10: 3..25,  never septic (record starts at hour 3); Unit2 = 1.
#: 11: 2..35,  labels 0 at ICULOS 2..25, 1 from 26 -> onset 32.
#: 15: 1..15,  "000001111111111": first 1 at ICULOS 6 -> onset 12 (labelled at 6, septic at 12).
#: 58: 1..8,   "11111111": septic from the first row -> onset unknown, prevalent.
#: 211: 2..9,  "11111111": septic from its first row (ICULOS 2) -> prevalent.
#: 4905: 1..336, never septic, the longest record (one of 8 non-septic stays beyond 59 h).
#: 13777: 2..9, never septic; HospAdmTime NaN (the only one in set A).
SUBJECTS = (1, 9, 10, 11, 15, 58, 211, 4905, 13777)
MEMBERS = {f"training_setA/p{sid:06d}.psv" for sid in SUBJECTS}


def _hours(*hours: int) -> list[datetime]:
    return [REF + timedelta(hours=h) for h in hours]


#: (subject, prediction hour) -> label, worked out from the rows above with the rules of the
#: module docstring. Anything not listed has no label (excluded or not a prediction time).
EXPECTED_LABELS: dict[str, dict[int, dict[int, bool]]] = {
    # every 6 h with a row at t and the patient still there after t; censored when the stay
    # ends before t + 6 without onset (1: t=54 is its last row; 10: t=24, last 25 < 30).
    "sepsis_6h": {
        1: dict.fromkeys(range(6, 49, 6), False),
        9: {**dict.fromkeys(range(6, 247, 6), False), 252: True},  # onset 255 in (252, 258]
        10: dict.fromkeys((6, 12, 18), False),
        11: {6: False, 12: False, 18: False, 24: False, 30: True},  # onset 32 in (30, 36]
        15: {6: True},  # onset 12 in (6, 12]; at t=12 it is prevalent
        4905: dict.fromkeys(range(6, 331, 6), False),
        # 58, 211: prevalent at every time; 13777: t=6 censored (last row 9 < 12)
    },
    "sepsis_later": {
        1: {6: False},
        9: {6: True},
        10: {6: False},
        11: {6: True},
        15: {6: True},  # SepsisLabel is already 1 at hour 6, but onset is hour 12
        4905: {6: False},
        13777: {6: False},
        # 58, 211: prevalent
    },
    "los_72h": {
        1: {24: False},
        9: {24: True},  # septic, but its record already runs past hour 72
        10: {24: False},  # row 24 exists and the stay goes on to 25
        4905: {24: True},
        # 11: septic, record ends at 35 (cut after onset): censored; 15, 58, 211, 13777: no
        # row at hour 24
    },
}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def raw() -> dict[str, bytes]:
    """The nine members' bytes, read from the tarball in one streaming pass."""
    if not TARBALL.is_file():
        pytest.skip(f"{TARBALL} not present")
    out = {}
    with tarfile.open(TARBALL, "r:xz") as archive:
        for member in archive:
            if member.name in MEMBERS:
                out[member.name.rsplit("/", 1)[1]] = archive.extractfile(member).read()
    assert len(out) == len(SUBJECTS)
    return out


@pytest.fixture(scope="module")
def src_dir(raw, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("psv")
    for name, data in raw.items():
        (root / name).write_bytes(data)
    return root


@pytest.fixture(scope="module")
def converted(src_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("meds") / "physionet"
    assert main(["convert", "physionet2019", str(src_dir), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def dataset(converted):
    return read_meds_dataset(converted)


def _raw_rows(data: bytes) -> tuple[list[str], list[list[str]]]:
    reader = csv.reader(io.StringIO(data.decode()), delimiter="|")
    header = next(reader)
    return header, list(reader)


def _expected_events(raw: dict[str, bytes]) -> list[tuple]:
    """(subject, time, code, float32 value) of every measured value, independently of pn."""
    out = []
    for name, data in raw.items():
        sid = int(name[1:-4])
        header, rows = _raw_rows(data)
        for row in rows:
            when = REF + timedelta(hours=int(row[header.index("ICULOS")]))
            for k, column in enumerate(header[:34]):
                if row[k] != "NaN":
                    group = "VITAL" if k < 8 else "LAB"
                    out.append((sid, when, f"{group}//{column}", float(np.float32(row[k]))))
    return out


# --------------------------------------------------------------------------- events


def test_every_value_is_one_event(converted, dataset, raw) -> None:
    events = dataset.data.collect()
    measured = events.filter(pl.col("code").str.contains("^(VITAL|LAB)//"))
    got = [
        (s, t, c, float(v))
        for s, t, c, v in measured.select("subject_id", "time", "code", "numeric_value").rows()
    ]
    want = _expected_events(raw)
    # Same multiset and the same order (subject, hour, column order of the file).
    assert got == sorted(want, key=lambda e: (e[0], e[1]))
    assert len(got) == 5_048  # 9 files (awk agrees): non-NaN values of the 34 hourly variables
    assert measured["text_value"].null_count() == measured.height
    # SepsisLabel, ICULOS and the demographics never appear as timed values.
    assert not events["code"].str.contains("Sepsis|ICULOS").any()


def test_counts_and_static_events(dataset, raw) -> None:
    events = dataset.data.collect()
    assert sorted(events["subject_id"].unique().to_list()) == list(SUBJECTS)
    static = events.filter(pl.col("time").is_null())
    by_subject = {
        sid: dict(zip(g["code"], g["numeric_value"], strict=True))
        for (sid,), g in static.group_by("subject_id")
    }
    for name, data in raw.items():
        sid = int(name[1:-4])
        header, rows = _raw_rows(data)
        age, gender, unit1, unit2, hosp = (rows[0][header.index(c)] for c in pn.DEMOGRAPHICS[:5])
        want = {"DEMOGRAPHIC//Age": float(np.float32(age))}
        want["GENDER/M" if gender == "1" else "GENDER/F"] = None
        if unit1 == "1":
            want["ICU_UNIT//MICU"] = None
        if unit2 == "1":
            want["ICU_UNIT//SICU"] = None
        if hosp != "NaN":
            want["DEMOGRAPHIC//HospAdmTime"] = float(np.float32(hosp))
        assert by_subject[sid] == want, name
    # Hand-checked: 13777 has no HospAdmTime, 1 has no unit, 10 is in the SICU.
    assert "DEMOGRAPHIC//HospAdmTime" not in by_subject[13777]
    assert not any(c.startswith("ICU_UNIT") for c in by_subject[1])
    assert "ICU_UNIT//SICU" in by_subject[10]
    # One birth per subject, ages before every hourly event; totals add up.
    births = events.filter(pl.col("code") == "MEDS_BIRTH")
    assert births.height == len(SUBJECTS)
    n_static = sum(len(v) for v in by_subject.values())
    assert events.height == 5_048 + n_static + len(SUBJECTS)


def test_birth_gives_the_encoder_the_file_age(dataset) -> None:
    builder = HistoryBuilder.fit(dataset.data, split=None, min_subjects=1)
    store = builder.encode(dataset)
    # p000001: Age 83.14; at hour 24 the encoder's age is 83.14 + 24 h.
    batch = store.gather(np.array([1]), np.array([_us(REF + timedelta(hours=24))]), 8)
    assert bool(batch.age_known[0])
    age_now = float(batch.static[0, -2])
    assert age_now == pytest.approx(83.14 + 24 / (365.25 * 24), abs=1e-5)


def test_codes_table(dataset) -> None:
    codes = dict(dataset.codes.select("code", "description").rows())
    assert codes["VITAL//HR"] == "Vital sign: Heart rate (beats per minute)"
    assert codes["LAB//Lactate"] == "Laboratory value: Lactic acid (mg/dL)"
    assert sum(c.startswith("VITAL//") for c in codes) == 8
    assert sum(c.startswith("LAB//") for c in codes) == 26
    assert all(codes[c] for c in codes)  # every code described, EtCO2 too (never measured)


def _us(when: datetime) -> int:
    return (when - datetime(1970, 1, 1)) // timedelta(microseconds=1)


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize("task", list(pn.TASKS))
def test_labels_hand_checked(converted, dataset, task) -> None:
    labels = read_labels(converted / "labels" / f"{task}.parquet", dataset=dataset)
    got = {
        (sid, t): value for sid, t, value in labels.select(
            "subject_id", "prediction_time", "boolean_value"
        ).rows()
    }  # fmt: skip
    want = {
        (sid, REF + timedelta(hours=h)): value
        for sid, per_hour in EXPECTED_LABELS[task].items()
        for h, value in per_hour.items()
    }
    assert got == want


def test_excluded_statuses(src_dir) -> None:
    data = pn.read_physionet2019(src_dir)
    status = {
        task: {
            (sid, int((t - REF) / timedelta(hours=1))): s
            for sid, t, s in pn.task_status(data, task)
            .select("subject_id", "prediction_time", "status")
            .rows()
        }
        for task in pn.TASKS
    }
    # Septic from the first row: prevalent at every onset-task time, whatever its first hour.
    assert status["sepsis_6h"][(58, 6)] == "prevalent"
    assert status["sepsis_6h"][(211, 6)] == "prevalent"
    assert status["sepsis_later"][(58, 6)] == "prevalent"
    assert status["sepsis_6h"][(15, 12)] == "prevalent"  # after its onset at 12
    # Censoring: the stay ends before the window does.
    assert status["sepsis_6h"][(10, 24)] == "censored"
    assert status["sepsis_6h"][(13777, 6)] == "censored"
    assert status["los_72h"][(11, 24)] == "censored"  # septic record cut at onset + 3 h
    # Not prediction times at all: the last row (patient gone) and hours without a row.
    assert (1, 54) not in status["sepsis_6h"]
    assert (15, 24) not in status["los_72h"]
    summary = pn.stay_summary(data).filter(pl.col("subject_id").is_in([9, 11, 15, 58]))
    assert summary.sort("subject_id")["onset_hour"].to_list() == [255, 32, 12, None]


def test_no_event_after_a_prediction_time(converted, dataset, raw) -> None:
    builder = HistoryBuilder.fit(dataset.data, split=None, min_subjects=1)
    store = builder.encode(dataset)
    hours = {
        int(name[1:-4]): [int(r[39]) for r in _raw_rows(data)[1]] for name, data in raw.items()
    }
    values = {}
    for name, data in raw.items():
        _, rows = _raw_rows(data)
        values[int(name[1:-4])] = [sum(v != "NaN" for v in r[:34]) for r in rows]
    for task in pn.TASKS:
        labels = read_labels(converted / "labels" / f"{task}.parquet")
        batch = builder.build_batch(store, labels, max_len=8192)
        pt = batch.prediction_time.numpy()
        for i, sid in enumerate(labels["subject_id"].to_list()):
            times = _batch_times(batch, i)
            assert times.max() <= pt[i]
            # Exactly the birth and every value of the rows at or before the prediction hour:
            # the row of the prediction hour itself is included (it is complete at that time).
            hour = (pt[i] - _us(REF)) // 3_600_000_000
            n_rows = sum(h <= hour for h in hours[sid])
            assert len(times) == 1 + sum(values[sid][:n_rows]), (task, sid, hour)
            if values[sid][n_rows - 1]:
                assert times.max() == pt[i]


def _batch_times(batch, i: int) -> np.ndarray:
    """Absolute times (us) of row ``i``'s events, from time_before_prediction (days)."""
    mask = batch.mask[i].numpy()
    before = batch.time_before_prediction[i].numpy()[mask].astype(np.float64)
    return batch.prediction_time[i].item() - np.round(before * 86_400e6).astype(np.int64)


def test_labels_directory_is_tolerated(converted, dataset) -> None:
    assert sorted(p.name for p in (converted / "labels").iterdir()) == [
        f"{t}.parquet" for t in sorted(pn.TASKS)
    ]
    assert sorted(p.name for p in converted.iterdir()) == ["data", "labels", "metadata"]
    assert dataset.metadata["dataset_name"] == "physionet2019"
    assert dataset.splits.height == len(SUBJECTS)


def test_tar_archive_equals_directory(raw, dataset, tmp_path) -> None:
    archive = tmp_path / "some.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in raw.items():
            info = tarfile.TarInfo(f"training_setA/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        mac = tarfile.TarInfo("training_setA/._p000001.psv")  # macOS fork: skipped
        tar.addfile(mac, io.BytesIO(b""))
    from_tar = pn.physionet_events(pn.read_physionet2019(archive))
    assert from_tar.equals(dataset.data.collect())


def test_set_b_ids_stay_distinct(raw, tmp_path) -> None:
    # Set B names its files p100001.psv ...: the id is the whole number, not its last digits.
    (tmp_path / "p000001.psv").write_bytes(raw["p000001.psv"])
    (tmp_path / "p100001.psv").write_bytes(raw["p000009.psv"])
    data = pn.read_physionet2019(tmp_path)
    assert data.rows.group_by("subject_id").len().sort("subject_id").rows() == [
        (1, 54),
        (100001, 258),
    ]


def test_windows_every_12_hours_of_the_stay(dataset) -> None:
    builder = HistoryBuilder.fit(dataset.data, split=None, min_subjects=1)
    store = builder.encode(dataset)
    cuts = pn.stay_window_cuts(store, every_hours=12)
    per = {
        sid: [int((t - REF) / timedelta(hours=1)) for t in g.sort("time")["time"]]
        for (sid,), g in cuts.group_by("subject_id")
    }
    assert per[1] == [12, 24, 36, 48]  # last event at hour 54
    assert per[10] == [12, 24]  # rows 3..25
    assert per[4905] == list(range(12, 325, 12))  # rows 1..336: the cut at 336 adds nothing
    assert 58 not in per and 13777 not in per  # stays shorter than 12 h
    pairs = window_pairs(store, cuts)
    assert pairs.filter(pl.col("subject_id") == 1)["window"].to_list() == [1, 2, 3]
    assert ((pairs["time_t1"] - pairs["time_t"]) == timedelta(hours=12)).all()


# --------------------------------------------------------------------------- whole set A


@needs_tarball
def test_whole_set_a_counts() -> None:
    data = pn.read_physionet2019(TARBALL)
    # SOURCES.md: 20,336 patients, 790,215 rows, 1,790 septic.
    assert data.n_subjects == 20_336
    assert data.rows.height == 790_215
    summary = pn.stay_summary(data)
    assert int(summary["septic"].sum()) == 1_790
    assert int(summary["prevalent"].sum()) == 203
    counts = {t: pn._counts(pn.task_status(data, t)) for t in pn.TASKS}
    assert counts["sepsis_6h"] == {
        "positive": 1_586, "negative": 104_363, "prevalent": 889, "censored": 15_386
    }  # fmt: skip
    assert counts["sepsis_later"] == {
        "positive": 1_549, "negative": 18_104, "prevalent": 200, "censored": 0
    }  # fmt: skip
    assert counts["los_72h"] == {
        "positive": 538, "negative": 14_625, "prevalent": 0, "censored": 599
    }  # fmt: skip


# --------------------------------------------------------------------------- bad input


def _header(raw) -> str:
    return raw["p000001.psv"].decode().split("\n", 1)[0]


def _with_line(raw, line: int, edit) -> bytes:
    """p000001.psv with its ``line``-th line (1 = header) passed through ``edit``."""
    lines = raw["p000001.psv"].decode().split("\n")
    lines[line - 1] = edit(lines[line - 1])
    return "\n".join(lines).encode()


def _set_field(column: str, value: str):
    def edit(line: str) -> str:
        fields = line.split("|")
        fields[pn.COLUMNS.index(column)] = value
        return "|".join(fields)

    return edit


BAD_FILES = {
    "header": (lambda raw: _with_line(raw, 1, lambda h: h.replace("HR|", "HeartRate|")),
               "p000001.psv:1: not the PhysioNet 2019 header (missing HR; unexpected 'HeartRate')"),
    "non_numeric": (lambda raw: _with_line(raw, 5, _set_field("Temp", "36,6")),
                    "p000001.psv:5: column 'Temp': '36,6' is not a number"),
    "negative_iculos": (lambda raw: _with_line(raw, 2, _set_field("ICULOS", "-1")),
                        "p000001.psv:2: column 'ICULOS' is negative"),
    "fractional_iculos": (lambda raw: _with_line(raw, 3, _set_field("ICULOS", "2.5")),
                          "p000001.psv:3: column 'ICULOS' is not a whole number"),
    "iculos_repeats": (lambda raw: _with_line(raw, 4, _set_field("ICULOS", "2")),
                       "p000001.psv:4: column 'ICULOS' does not increase"),
    "label_back_to_0": (lambda raw: _with_line(raw, 10, _set_field("SepsisLabel", "1")),
                        "p000001.psv:11: column 'SepsisLabel' goes from 1 back to 0"),
    "short_line": (lambda raw: _with_line(raw, 7, lambda line: line.rsplit("|", 1)[0]),
                   "p000001.psv:7: 40 fields, expected 41"),
    "changing_age": (lambda raw: _with_line(raw, 6, _set_field("Age", "84")),
                     "p000001.psv:6: column 'Age' changes within the file"),
    "empty": (lambda raw: b"", "p000001.psv: empty file"),
    "header_only": (lambda raw: (_header(raw) + "\n").encode(), "p000001.psv: no data rows"),
}  # fmt: skip


def _run_fails(src: Path, tmp_path: Path, capsys) -> str:
    parent = tmp_path / "out"
    parent.mkdir()
    out = parent / "meds"
    code = main(["convert", "physionet2019", str(src), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("densefeat convert: error: ")
    assert not out.exists() and not any(parent.iterdir())  # nothing written, no temp dirs
    return err


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_names_file_and_line(raw, tmp_path, capsys, case) -> None:
    make, message = BAD_FILES[case]
    src = tmp_path / "src"
    src.mkdir()
    (src / "p000001.psv").write_bytes(make(raw))
    (src / "p000009.psv").write_bytes(raw["p000009.psv"])  # a good file beside it
    err = _run_fails(src, tmp_path, capsys)
    assert f"{src / 'p000001.psv'}" in err
    assert message in err


def test_bad_sources(raw, tmp_path, capsys) -> None:
    err = _run_fails(tmp_path / "missing.tar.xz", tmp_path, capsys)
    assert "no PhysioNet 2019 source at" in err and "missing.tar.xz" in err
    (tmp_path / "out").rmdir()

    archive = tmp_path / "nothing.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("training_setA/README.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    assert "nothing.tar.gz: no .psv files found" in _run_fails(archive, tmp_path, capsys)
    (tmp_path / "out").rmdir()

    broken = tmp_path / "broken.tar.xz"
    broken.write_bytes(TARBALL.read_bytes()[:4096] if TARBALL.is_file() else b"\xfd7zXZ\x00")
    assert "broken.tar.xz: not a readable tar archive" in _run_fails(broken, tmp_path, capsys)
    (tmp_path / "out").rmdir()

    two = tmp_path / "two"
    (two / "a").mkdir(parents=True)
    (two / "b").mkdir()
    (two / "a" / "p000001.psv").write_bytes(raw["p000001.psv"])
    (two / "b" / "p1.psv").write_bytes(raw["p000001.psv"])
    assert "subject 1 also comes from" in _run_fails(two, tmp_path, capsys)
    (tmp_path / "out").rmdir()

    named = tmp_path / "named"
    named.mkdir()
    (named / "patient1.psv").write_bytes(raw["p000001.psv"])
    assert "must be p<digits>.psv" in _run_fails(named, tmp_path, capsys)


def test_existing_output_is_kept(src_dir, tmp_path, capsys) -> None:
    out = tmp_path / "meds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["convert", "physionet2019", str(src_dir), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
