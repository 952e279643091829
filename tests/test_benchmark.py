"""`densefeat benchmark` end to end on the default dataset at a tiny budget (CPU, CI-sized).

Real data (Eunomia GiBleed as MEDS), real training runs, real probes: only the sizes are
small. Checks that every file and table entry exists and is finite, that a rerun reuses the
finished parts, that an interrupted run resumes, that stale settings are recomputed, and
that the real report renders in headless Chromium.
"""

from __future__ import annotations

import json
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

from densefeat.benchmark.config import BenchmarkConfig
from densefeat.benchmark.rows import select_eval_rows
from densefeat.benchmark.run import run_benchmark
from densefeat.cli import main
from densefeat.data.convert.eunomia import eunomia_meds

TASK = "peptic_ulcer"


def _config(**changes: Any) -> BenchmarkConfig:
    base = dict(
        methods=("dense", "vicreg", "supervised", "random"),
        ablations=("dense-no_sub",),
        seeds=2,
        budget=3,
        train={
            "batch_size": 64,
            "max_len": 16,
            "d_model": 32,
            "n_heads": 2,
            "n_layers": 1,
            "proj_hidden": 64,
            "proj_dim": 32,
            "warmup_steps": 1,
            "monitor_every": 1,
            "monitor_size": 128,
            "checkpoint_every": 1,
        },
        k=4,
        max_eval_times=1500,
        kshots=(2, 8),
        draws=2,
        bootstrap=60,
        perturbations=(("event_dropout", 0.3), ("code_noise", 0.1)),
        tasks=(TASK,),
        scale="smoke",
    )
    base.setdefault("trials", 1)  # tuning has its own test (tests/test_tuning.py)
    base.update(changes)
    return BenchmarkConfig(**base)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ.setdefault("DENSEFEAT_CACHE", str(tmp_path_factory.mktemp("cache")))
    return eunomia_meds()


class _Interrupt(Exception):
    pass


class _Progress:
    """A stand-in for rich's Progress that interrupts the benchmark at one run's step."""

    def __init__(self, stop_in: str | None = None, at: int = 2):
        self.stop_in, self.at, self.names = stop_in, at, {}

    def add_task(self, name: str, total: int) -> int:
        self.names[len(self.names)] = name
        return len(self.names) - 1

    def update(self, task: int, completed: int) -> None:
        if self.stop_in and self.stop_in in self.names[task] and completed == self.at:
            raise _Interrupt(self.names[task])


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


@pytest.fixture(scope="module")
def bench(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    messages: list[str] = []
    # First attempt is killed in the middle of vicreg/seed1's training.
    with pytest.raises(_Interrupt):
        run_benchmark(data, out, _config(), say=messages.append, progress=_Progress("vicreg/seed1"))
    assert not (out / "results.json").exists()
    first = list(messages)
    messages.clear()
    res = run_benchmark(data, out, _config(), say=messages.append, progress=_Progress())
    return {"out": out, "res": res, "first": first, "second": list(messages)}


def test_interrupted_benchmark_resumes_finished_parts(bench: dict[str, Any]) -> None:
    second = "\n".join(bench["second"])
    assert "dense/seed0: reused; evaluation reused" in second
    assert "vicreg/seed0: reused; evaluation reused" in second
    assert "vicreg/seed1: resumed" in second
    assert "supervised/seed0: trained" in second  # never started before the interruption
    stats = (bench["out"] / "runs" / "vicreg" / "seed1" / "stats.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in stats]
    assert steps == sorted(steps) and steps[-1] == 3


def test_every_file_and_table_entry_exists_and_is_finite(bench: dict[str, Any]) -> None:
    out, res = bench["out"], bench["res"]
    for name in ("results.json", "results.md", "report.html", f"labels/{TASK}.parquet"):
        assert (out / name).is_file(), name
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["table"] == res["table"]
    rows = [r["method"] for r in res["table"]]
    assert rows == [
        "dense",
        "vicreg",
        "supervised",
        "random",
        "dense-no_sub",
        "count_features",
        "counts_only",
    ]
    for row in res["table"]:
        assert _finite(row["probe_auroc"]) and 0 <= row["probe_auroc"] <= 1, row
        if row["method"] in ("count_features", "counts_only"):
            continue
        assert row["n_seeds"] == 2
        for key in (
            "effective_rank",
            "condition_number_k",
            "temporal_subspace_distance",
            "robustness_drop",
            "seed_alignment_cka",
            "probe_auroc_sd",
        ):
            assert _finite(row[key]), (row["method"], key)
        assert row["condition_number"] is None or _finite(row["condition_number"])
        assert 1 <= row["effective_rank"] <= 32
    # Every section has records for every run, with seeds, and the reference of every shape.
    for section in ("geometry", "training_curves", "probes", "robustness", "temporal"):
        got = {(r["method"], r["seed"]) for r in res[section]}
        assert {("dense", 0), ("dense", 1), ("random", 1)} <= got, section
    shapes = {(g["n"], g["d"]) for g in res["geometry"]}
    assert shapes <= {(r["n"], r["d"]) for r in res["reference"]}
    projector = {g["method"] for g in res["geometry"] if g["output"] == "projector"}
    assert projector == {"dense", "vicreg", "dense-no_sub"}
    kinds = {(p["embedding"], p["k"]) for p in res["probes"] if p["method"] == "dense"}
    assert kinds == {("raw", "all"), ("whitened", "all"), ("raw", 2), ("raw", 8)}
    cmp = res["comparison"]
    assert cmp["best_baseline"] in ("vicreg", "supervised", "count_features", "counts_only")
    assert cmp["difference"] == pytest.approx(cmp["dense"] - cmp["best_baseline_value"])
    lo, hi = cmp["difference_ci"]
    assert lo <= hi and _finite(lo) and _finite(hi)
    assert res["config"]["supervised_task"] == TASK
    assert res["scale"] == "smoke" and "torch" in res["versions"]
    md = (out / "results.md").read_text()
    assert "nan" not in md.lower().split() and "dense-no_sub" in md


def test_probe_records_agree_with_sklearn(bench: dict[str, Any]) -> None:
    """The held-out AUROC of a run equals sklearn's on the scores saved beside it, and its
    AUPRC sklearn's average precision with the same weights (1 / rate on sampled negatives),
    as printed in results.md's AUPRC table."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    out, res = bench["out"], bench["res"]
    rec = next(
        p
        for p in res["probes"]
        if p["method"] == "dense" and p["seed"] == 1 and p["k"] == "all" and p["embedding"] == "raw"
    )
    scores = np.load(out / "eval" / "dense" / "seed1.npz")[f"scores/{TASK}"]
    rows = select_eval_rows_for(bench)
    held = rows.filter(pl.col("split") == "held_out")
    y, w = held["boolean_value"].to_numpy(), held["weight"].to_numpy()
    assert rec["auroc"] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert w.min() < w.max()  # negatives are subsampled here: the weights matter
    assert rec["weighted"] and rec["auprc"] == pytest.approx(
        average_precision_score(y, scores, sample_weight=w), abs=1e-12
    )
    assert rec["n_pos_test"] == int(y.sum())
    dense = [
        p["auprc"]
        for p in res["probes"]
        if p["method"] == "dense" and p["k"] == "all" and p["embedding"] == "raw"
    ]
    md = (out / "results.md").read_text().split("Linear probes per task: AUPRC")[1]
    dense_row = next(line for line in md.splitlines() if line.startswith("| **dense**"))
    assert f"{np.mean(dense):.3f}" in dense_row
    counts = next(line for line in md.splitlines() if "held-out positives / rows" in line)
    assert f"{int(y.sum())} / {y.size}" in counts


def select_eval_rows_for(bench: dict[str, Any]) -> pl.DataFrame:
    from densefeat.benchmark.rows import load_tasks
    from densefeat.data.meds import read_meds_dataset

    ds = read_meds_dataset(bench["res"]["dataset"]["path"])
    tasks = load_tasks(ds, bench["res"]["dataset"]["path"], None, bench["out"], (TASK,))
    return select_eval_rows(tasks, 1500).task_rows[TASK]


def test_changed_settings_are_recomputed_not_mixed(bench: dict[str, Any], data: Path) -> None:
    out = bench["out"]
    copy = out.parent / "bench-changed"
    shutil.copytree(out, copy)
    messages: list[str] = []
    cfg = _config(methods=("dense", "random"), ablations=(), seeds=1, budget=4)
    res = run_benchmark(data, copy, cfg, say=messages.append)
    # Another budget: trained again (the learning-rate schedule depends on it), not reused.
    assert "dense/seed0: trained; evaluating" in "\n".join(messages)
    assert [r["method"] for r in res["table"]] == [
        "dense",
        "random",
        "count_features",
        "counts_only",
    ]
    dense_curve = next(c for c in res["training_curves"] if c["method"] == "dense")
    assert dense_curve["step"][-1] == 4
    # The monitored subspace-consistency term and its shuffled control travel with the curve.
    for key in ("subspace_consistency", "subspace_consistency_shuffled"):
        assert len(dense_curve[key]) == len(dense_curve["step"]), key
        assert all(0.0 <= v <= 1.0 for v in dense_curve[key]), key
    # Same runs, other evaluation settings: the runs are reused, the evaluations redone.
    messages.clear()
    res2 = run_benchmark(data, copy, _config(**{**cfg.to_dict(), "draws": 3}), say=messages.append)
    assert "dense/seed0: reused; evaluating" in "\n".join(messages)
    kshot = [p for p in res2["probes"] if p["k"] == 2 and p["method"] == "dense"]
    assert kshot and all(p["n_draws"] == 3 for p in kshot)
    # Nothing of the earlier, 3-step benchmark survives in the results.
    assert {c["step"][-1] for c in res2["training_curves"]} <= {0, 4}


def test_real_report_renders_in_headless_chromium(bench: dict[str, Any]) -> None:
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
        figures = page.locator("figure svg, figure img")
        sizes = [figures.nth(i).bounding_box() for i in range(figures.count())]
        browser.close()
    assert not errors
    assert rows == len(bench["res"]["table"])
    assert len(sizes) >= 4 and all(b and b["width"] > 0 and b["height"] > 0 for b in sizes)


def test_benchmark_cli_bad_input_exits_2_and_writes_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "b"
    assert main(["benchmark", "--out", str(out), "--methods", "dense,nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["benchmark", "--out", str(out), "--modality", "text"]) == 2
    assert main(["benchmark", "--out", str(out), "--set", "seed=3"]) == 2
    assert not out.exists()


def test_a_run_is_reused_only_under_the_same_identity(bench: dict[str, Any]) -> None:
    """Config, dataset content, labels and benchmark version all gate reuse (runs._state)."""
    from densefeat.benchmark.config import RunSpec
    from densefeat.benchmark.runs import _state, run_config

    out, res = bench["out"], bench["res"]
    run_dir = out / "runs" / "dense" / "seed0"
    identity = json.loads((run_dir / "benchmark.json").read_text())
    assert set(identity) == {"benchmark_version", "dataset"}
    cfg = run_config(RunSpec("dense", "dense", 0), _config())
    data = res["dataset"]["path"]
    assert _state(run_dir, cfg, data, None, identity) == "done"
    assert _state(run_dir, cfg, data, None, {**identity, "dataset": "other"}) == "fresh"
    assert _state(run_dir, cfg.replace(max_steps=5), data, None, identity) == "fresh"
    assert _state(run_dir, cfg, data + "/elsewhere", None, identity) == "fresh"
    sup = json.loads((out / "runs" / "supervised" / "seed0" / "benchmark.json").read_text())
    assert sup["labels"].startswith(f"{TASK}:")  # the supervised labels' content hash


def test_dataset_fingerprint_sees_a_reconversion(data: Path, tmp_path: Path) -> None:
    from densefeat.benchmark.cache import files_fingerprint

    copy = tmp_path / "meds"
    shutil.copytree(data, copy)
    before = files_fingerprint(copy)
    assert before == files_fingerprint(copy)
    first = sorted((copy / "data").rglob("*.parquet"))[0]
    frame = pl.read_parquet(first)
    frame.head(frame.height - 1).write_parquet(first)  # one event fewer, same path
    assert files_fingerprint(copy) != before


@pytest.mark.parametrize("key", ["epochs", "max_steps", "seed", "method", "modality"])
def test_benchmark_refuses_overrides_that_break_the_equal_budget(key: str) -> None:
    with pytest.raises(ValueError, match=key):
        _config(train={key: 2})
