"""Tasks and labels: hand-checked subjects for every hygiene rule, the prediction-time rules, the
built-in Eunomia tasks checked independently of the label code, and ``densefeat tasks``.

The small datasets are date-only (every event at midnight), like Eunomia: a prediction time on
day D is D 23:59:59.999999, and with a 365-day horizon the outcome window is days D+1 .. D+365.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import meds
import polars as pl
import pyarrow.parquet as pq
import pytest

from densefeat.cli import main
from densefeat.data.meds import (
    OBSERVATION_END_CODE,
    OBSERVATION_START_CODE,
    MedsFormatError,
    read_labels,
    read_meds_dataset,
    write_meds_dataset,
)
from densefeat.data.tasks import (
    EUNOMIA_TASKS,
    TaskDefinition,
    build_task_labels,
    describe_labels,
    is_date_only,
    label_task,
    observation_bounds,
    prediction_times,
    subject_uniform,
    write_labels,
)

TASK = TaskDefinition("outcome", ("DX/OUT",), 365, "test outcome")
D = dt.datetime(2010, 1, 1)  # the prediction day of the hand-checked subjects
PT = D + dt.timedelta(days=1) - dt.timedelta(microseconds=1)  # end of day D


def day(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def subject(sid: int, *, end: str | None = "2015-01-01", extra=()) -> list[tuple]:
    """Observation from 2000-01-01, an unrelated visit on D, ``extra`` (time, code) events."""
    rows = [(sid, None, "GENDER/F"), (sid, day("1990-01-01"), meds.birth_code)]
    rows.append((sid, day("2000-01-01"), OBSERVATION_START_CODE))
    rows.append((sid, D, "DX/OTHER"))
    rows += [(sid, None if t is None else day(t), code) for t, code in extra]
    if end is not None:
        rows.append((sid, day(end), OBSERVATION_END_CODE))
    return rows


#: subject id -> (its events, expected status at PT). Each line is one hand-checked rule.
CASES = {
    1: (subject(1, extra=[("2005-06-01", "DX/OUT")]), "prevalent"),  # outcome years before
    2: (subject(2, end="2010-06-01"), "censored"),  # observed 151 days after, no outcome
    3: (subject(3, extra=[("2011-01-01", "DX/OUT")]), "positive"),  # day D+365: inside
    4: (subject(4, extra=[("2011-01-02", "DX/OUT")]), "negative"),  # day D+366: outside
    5: (subject(5, extra=[("2010-01-01", "DX/OUT")]), "prevalent"),  # same day = history
    6: (subject(6, end="2010-03-05", extra=[("2010-03-01", "DX/OUT")]), "positive"),  # seen
    7: (subject(7), "negative"),
    8: (subject(8, end="2011-01-01"), "negative"),  # observed through day D+365: enough
    9: (subject(9, end="2010-12-31"), "censored"),  # observed through day D+364 only
    10: (subject(10, extra=[(None, "DX/OUT")]), "prevalent"),  # a static outcome
    # No observation markers: the last clinical event ends observation.
    11: (subject(11, end=None, extra=[("2010-12-31", "DX/OTHER")]), "censored"),
    12: (subject(12, end=None, extra=[("2011-01-01", "DX/OTHER")]), "negative"),
    13: (subject(13, extra=[("2010-05-01", "DX/OUT"), ("2009-01-01", "DX/OUT")]), "prevalent"),
}


def events_frame(rows: list[tuple]) -> pl.DataFrame:
    frame = pl.DataFrame(
        rows,
        schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.Utf8},
        orient="row",
    )
    return frame.sort(["subject_id", "time"], nulls_last=False, maintain_order=True)


@pytest.fixture
def hand_events() -> pl.DataFrame:
    return events_frame([row for rows, _ in CASES.values() for row in rows])


@pytest.fixture
def hand_dir(tmp_path: Path, hand_events: pl.DataFrame) -> Path:
    return write_meds_dataset(tmp_path / "hand", hand_events, dataset_name="hand-checked")


def test_hand_checked_statuses(hand_events: pl.DataFrame) -> None:
    times = pl.DataFrame({"subject_id": list(CASES), "prediction_time": [PT] * len(CASES)})
    got = label_task(hand_events, TASK, times)
    assert got["subject_id"].to_list() == list(CASES)
    assert dict(zip(got["subject_id"], got["status"], strict=True)) == {
        sid: want for sid, (_, want) in CASES.items()
    }
    # Only positives and negatives carry a label, and it says which.
    labelled = got.filter(pl.col("boolean_value").is_not_null())
    assert set(labelled["status"]) == {"positive", "negative"}
    assert (labelled["boolean_value"] == (labelled["status"] == "positive")).all()


def test_date_only_detection_and_bounds(hand_events: pl.DataFrame) -> None:
    assert is_date_only(hand_events)
    bounds = observation_bounds(hand_events).filter(pl.col("subject_id").is_in([2, 11]))
    # Observed through the end of the last day (marker, else last clinical event).
    assert bounds["obs_end"].to_list() == [
        day("2010-06-01") + dt.timedelta(days=1, microseconds=-1),
        day("2010-12-31") + dt.timedelta(days=1, microseconds=-1),
    ]
    assert bounds["obs_start"].to_list() == [day("2000-01-01"), day("2000-01-01")]
    # A birth time of day does not make the data timed; a clinical time does.
    timed = hand_events.with_columns(
        time=pl.when(pl.col("code") == meds.birth_code)
        .then(pl.col("time") + pl.duration(hours=3))
        .otherwise(pl.col("time"))
    )
    assert is_date_only(timed)
    clock = events_frame(subject(1, extra=[("2010-02-01 10:30:00", "DX/OTHER")]))
    assert not is_date_only(clock)
    end = observation_bounds(clock)["obs_end"].item()
    assert end == day("2015-01-01")  # timed data: the end marker is taken as it is


def test_timed_outcome_same_day_after_prediction_time() -> None:
    # Timed data, a user-given prediction time at noon: an outcome at 13:00 the same day is a
    # future event (positive), one at 11:00 is history (prevalent).
    noon = D + dt.timedelta(hours=12)
    after = events_frame(subject(1, extra=[("2010-01-01 13:00:00", "DX/OUT")]))
    before = events_frame(subject(2, extra=[("2010-01-01 11:00:00", "DX/OUT")]))
    for frame, want in ((after, "positive"), (before, "prevalent")):
        sid = frame["subject_id"][0]
        times = pl.DataFrame({"subject_id": [sid], "prediction_time": [noon]})
        assert label_task(frame, TASK, times)["status"].item() == want


def test_yearly_prediction_times() -> None:
    rows = [
        (1, day("2000-03-15"), OBSERVATION_START_CODE),
        (1, day("2000-03-15"), "DX/OTHER"),
        (1, day("2003-06-01"), OBSERVATION_END_CODE),
        (2, day("2000-01-01"), "DX/OTHER"),  # observed for 200 days only: no time
        (2, day("2000-07-19"), "DX/OTHER"),
    ]
    times = prediction_times(events_frame(rows), rule="yearly")
    eod = dt.timedelta(days=1, microseconds=-1)
    assert times["subject_id"].to_list() == [1, 1, 1]
    assert times["prediction_time"].to_list() == [
        day(f"{y}-03-15") + eod for y in (2001, 2002, 2003)
    ]
    # Two years of required history drop the first anniversary.
    longer = prediction_times(events_frame(rows), rule="yearly", min_history_days=730)
    assert longer["prediction_time"].to_list() == [day(f"{y}-03-15") + eod for y in (2002, 2003)]


def test_sampled_prediction_times(hand_events: pl.DataFrame) -> None:
    rows = [(sid, day(f"{2000 + k}-06-01"), "DX/OTHER") for sid in range(1, 41) for k in range(8)]
    events = events_frame(rows)
    a = prediction_times(events, rule="sampled", seed=0)
    assert a.equals(prediction_times(events, rule="sampled", seed=0))  # deterministic
    assert a["subject_id"].to_list() == list(range(1, 41))  # one per subject
    # Eligible: >= 365 days after the first event, >= 365 days before the last one.
    eod = dt.timedelta(days=1, microseconds=-1)
    allowed = {day(f"{2000 + k}-06-01") + eod for k in range(1, 7)}
    assert set(a["prediction_time"]) <= allowed
    assert len(set(a["prediction_time"])) > 3  # spread over the eligible days
    b = prediction_times(events, rule="sampled", seed=1)
    assert not a.equals(b)
    # A subject's time does not depend on which other subjects are present.
    alone = prediction_times(events.filter(pl.col("subject_id") == 7), rule="sampled", seed=0)
    assert alone.row(0) == a.filter(pl.col("subject_id") == 7).row(0)
    u = subject_uniform(pl.Series([1, 2, 3, -5]), 0)
    assert ((u >= 0) & (u < 1)).all() and u.n_unique() == 4
    with pytest.raises(ValueError, match="unknown prediction-time rule"):
        prediction_times(events, rule="monthly")  # type: ignore[arg-type]


def test_task_definition_validation() -> None:
    task = TaskDefinition("x_1", ["A/1"])  # a list is stored as a tuple (hashable)
    assert task.outcome_codes == ("A/1",) and hash(task)
    with pytest.raises(ValueError, match="task name"):
        TaskDefinition("Bad Name", ("A/1",))
    with pytest.raises(ValueError, match="outcome_codes"):
        TaskDefinition("x", ())
    with pytest.raises(ValueError, match="horizon"):
        TaskDefinition("x", ("A/1",), 0)


def test_build_write_and_read_back(hand_dir: Path, tmp_path: Path) -> None:
    ds = read_meds_dataset(hand_dir)
    out = tmp_path / "labels"
    build = build_task_labels(ds, [TASK], out_dir=out)
    (result,) = build.tasks
    assert result.path == out / "outcome.parquet"
    assert [p.name for p in out.iterdir()] == ["outcome.parquet"]  # no temporary leftovers
    meds.LabelSchema.validate(pq.read_table(result.path))
    back = read_labels(result.path, dataset=ds)
    assert back.equals(result.labels)
    total = result.counts.filter(pl.col("split") == "total").row(0, named=True)
    status = result.status["status"].value_counts()
    for name in ("positive", "negative", "prevalent", "censored"):
        n = status.filter(pl.col("status") == name)["count"].sum()
        assert total[f"{name}s" if name in ("positive", "negative") else name] == n
    assert total["labels"] == back.height == total["positives"] + total["negatives"]
    assert total["prediction_times"] == build.times.height
    # Misspelt outcome codes are refused rather than giving a task with no positives.
    with pytest.raises(MedsFormatError, match="none of its outcome codes"):
        build_task_labels(ds, [TaskDefinition("typo", ("DX/OUTT",))])
    with pytest.raises(ValueError, match="no built-in tasks"):
        build_task_labels(ds)


def test_write_labels_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "l.parquet"
    good = pl.DataFrame(
        {"subject_id": [1], "prediction_time": [PT], "boolean_value": [True]},
        schema={
            "subject_id": pl.Int64,
            "prediction_time": pl.Datetime("us"),
            "boolean_value": bool,
        },
    )
    write_labels(good, path)
    bad = good.with_columns(prediction_time=pl.lit("not a time"))
    with pytest.raises(Exception):  # noqa: B017 - any schema error; the point is the file
        write_labels(bad, path)
    assert read_labels(path).equals(good)  # the old file survives
    assert [p.name for p in tmp_path.iterdir()] == ["l.parquet"]


# --------------------------------------------------------------------------------------------
# The built-in Eunomia tasks (cached conversion shared by this module).


@pytest.fixture(scope="module")
def eunomia_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DENSEFEAT_CACHE", str(cache))
        from densefeat.data.convert.eunomia import eunomia_meds

        eunomia_meds()
    return cache


@pytest.fixture
def eunomia(eunomia_cache: Path, monkeypatch) -> Path:
    monkeypatch.setenv("DENSEFEAT_CACHE", str(eunomia_cache))
    from densefeat.data.convert.eunomia import eunomia_meds

    return eunomia_meds()


def test_eunomia_builtin_tasks(eunomia: Path, tmp_path: Path) -> None:
    ds = read_meds_dataset(eunomia)
    build = build_task_labels(ds, out_dir=tmp_path)
    assert len(build.tasks) >= 5 and build.date_only and build.subjects == 2694
    events = ds.data.select("subject_id", "time", "code").collect()
    for result in build.tasks:
        task = result.task
        labels = read_labels(result.path, dataset=ds)
        outcomes = events.filter(pl.col("code").is_in(task.outcome_codes))
        # Independent re-derivation: a labelled time never has an outcome at or before it ...
        history = labels.join(outcomes, on="subject_id").filter(
            pl.col("time").is_null() | (pl.col("time") <= pl.col("prediction_time"))
        )
        assert history.height == 0, task.name
        # ... and it is positive exactly when an outcome falls in the next 365 days.
        window = (
            labels.join(outcomes, on="subject_id")
            .filter(pl.col("time") <= pl.col("prediction_time") + pl.duration(days=365))
            .select("subject_id", "prediction_time")
            .unique()
        )
        positives = labels.filter(pl.col("boolean_value"))
        assert positives.height == window.height > 0, task.name
        assert (
            positives.select("subject_id", "prediction_time")
            .sort(pl.all())
            .equals(window.sort(pl.all()))
        )
        # Each onset is seen once: at most one positive per subject.
        assert positives["subject_id"].n_unique() == positives.height
    # Deterministic across runs.
    again = build_task_labels(ds)
    for a, b in zip(build.tasks, again.tasks, strict=True):
        assert a.status.equals(b.status) and a.counts.equals(b.counts)


def test_eunomia_sampled_rule_counts(eunomia: Path) -> None:
    ds = read_meds_dataset(eunomia)
    build = build_task_labels(ds, EUNOMIA_TASKS[:2], rule="sampled", seed=3)
    assert build.times["subject_id"].n_unique() == build.times.height  # one per subject
    for result in build.tasks:
        total = result.counts.filter(pl.col("split") == "total").row(0, named=True)
        assert total["censored"] == 0  # the sampled rule requires a full horizon of follow-up


# --------------------------------------------------------------------------------------------
# CLI.


def test_cli_default_dataset(eunomia: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "labels"
    assert main(["tasks", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "gastrointestinal_hemorrhage" in text and "Gastrointestinal hemorrhage" in text
    assert "prevalent" in text and "censored" in text and "held_out" in text
    assert sorted(p.stem for p in out.iterdir()) == sorted(t.name for t in EUNOMIA_TASKS)
    # The same through --default, and a written file described back with --labels.
    assert main(["tasks", "--default", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["tasks", str(eunomia), "--labels", str(out / "peptic_ulcer.parquet")]) == 0
    assert "prevalence" in capsys.readouterr().out


def test_cli_dataset_without_builtin_tasks(hand_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["tasks", str(hand_dir), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "densefeat tasks: error:" in err and "no built-in tasks" in err and "--labels" in err
    assert not (tmp_path / "o").exists()


def test_cli_user_labels(hand_dir: Path, tmp_path: Path, capsys) -> None:
    def labels(path: Path, sid: int, when: dt.datetime, value: bool = True) -> Path:
        pl.DataFrame(
            {"subject_id": [sid], "prediction_time": [when], "boolean_value": [value]}
        ).write_parquet(path)
        return path

    good = labels(tmp_path / "good.parquet", 7, PT)
    assert main(["tasks", str(hand_dir), "--labels", str(good)]) == 0
    out = capsys.readouterr().out
    assert "1 labels of 1 subjects" in out and "prevalence" in out
    # ACES writes every value column (unused ones all null) and may add columns: same result.
    aces = tmp_path / "aces"
    aces.mkdir()
    pl.DataFrame(
        {
            "subject_id": [7, 12],
            "prediction_time": [PT, PT],
            "boolean_value": [False, True],
            "integer_value": pl.Series([None, None], dtype=pl.Int64),
            "float_value": pl.Series([None, None], dtype=pl.Float32),
            "categorical_value": pl.Series([None, None], dtype=pl.Utf8),
            "window_summary": ["x", "y"],
        }
    ).write_parquet(aces / "shard0.parquet")
    assert main(["tasks", str(hand_dir), "--labels", str(aces)]) == 0
    assert "2 labels of 2 subjects" in capsys.readouterr().out
    unknown = labels(tmp_path / "unknown.parquet", 999, PT)
    assert main(["tasks", str(hand_dir), "--labels", str(unknown)]) == 2
    assert "not in the dataset" in capsys.readouterr().err
    early = labels(tmp_path / "early.parquet", 7, day("1980-01-01"))
    assert main(["tasks", str(hand_dir), "--labels", str(early)]) == 2
    assert "precede all events" in capsys.readouterr().err
    assert main(["tasks", str(hand_dir), "--labels", str(tmp_path / "absent.parquet")]) == 2
    assert "no label file" in capsys.readouterr().err


def test_cli_bad_arguments(hand_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["tasks", str(tmp_path / "missing")]) == 2
    assert "no MEDS dataset directory" in capsys.readouterr().err
    assert main(["tasks", str(hand_dir), "--default"]) == 2
    assert "either DIR or --default" in capsys.readouterr().err
    assert main(["tasks", "--rule", "monthly"]) == 2


def test_describe_labels_value_types(hand_events: pl.DataFrame) -> None:
    splits = pl.DataFrame({"subject_id": [1, 2, 3], "split": ["train", "train", "held_out"]})
    labels = pl.DataFrame(
        {
            "subject_id": [1, 2, 3, 4],
            "prediction_time": [PT] * 4,
            "boolean_value": [True, False, True, False],
            "categorical_value": ["a", "b", "a", "c"],
        }
    )
    got = describe_labels(labels, splits)
    assert got["split"].to_list() == ["train", "held_out", "(none)", "total"]
    total = got.filter(pl.col("split") == "total").row(0, named=True)
    assert total["labels"] == 4 and total["positives"] == 2 and total["prevalence"] == 0.5
    assert total["categories"] == 3
