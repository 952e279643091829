"""Benchmark fan-out (issue 14, item 6): 2 local worker processes, and a job list's runs then
merged, give the same results.json as the sequential benchmark (timing fields
aside), and the merge pass reuses every run the workers cached instead of retraining it.

Real data (Eunomia GiBleed), real runs, CI-sized budgets; one torch thread everywhere, so the
workers compute exactly what the sequential run computes.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path
from typing import Any

import pytest

if not os.environ.get("CI"):
    pytest.importorskip("sklearn", reason="the benchmark needs the eval extra (scikit-learn)")
    pytest.importorskip("matplotlib", reason="the benchmark needs the eval extra (matplotlib)")

from densefeat.benchmark.config import BenchmarkConfig, RunSpec
from densefeat.benchmark.fanout import (
    command_of,
    plan_commands,
    plan_keys,
    run_only,
    select_specs,
)
from densefeat.benchmark.run import run_benchmark
from densefeat.cli import main
from densefeat.cli.benchmark import add_arguments
from densefeat.data.convert.eunomia import eunomia_meds

TRAIN = {
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
}
# One thread in this process too: the workers get torch threads // workers = 1 each, and on
# CPU a run's float results depend on its thread count.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Fields that measure time, not results.
TIMING = ("created", "seconds", "run_seconds")


def _config() -> BenchmarkConfig:
    return BenchmarkConfig(
        methods=("dense", "supervised", "random"),
        ablations=(),
        seeds=2,
        budget=2,
        train=TRAIN,
        k=4,
        max_eval_times=800,
        kshots=(2,),
        draws=1,
        bootstrap=20,
        perturbations=(("event_dropout", 0.3),),
        tasks=("peptic_ulcer",),
        scale="smoke",
        trials=1,  # tuned runs are trained in the merging process (run_benchmark), not fanned out
    )


def _results(out: Path) -> dict[str, Any]:
    """results.json without its timing fields, the output directory's path written as OUT
    (task label files are named by where the benchmark wrote them)."""
    res = json.loads((out / "results.json").read_text().replace(str(out), "OUT"))
    res["machine"].pop("load_average", None)  # the machine's load, not a result
    return {k: v for k, v in res.items() if k not in TIMING}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ.setdefault("DENSEFEAT_CACHE", str(tmp_path_factory.mktemp("cache")))
    return eunomia_meds()


@pytest.fixture(scope="module")
def sequential(data: Path, tmp_path_factory: pytest.TempPathFactory, one_torch_thread) -> Path:
    out = tmp_path_factory.mktemp("sequential")
    run_benchmark(data, out, _config(), say=lambda _: None)
    return out


def test_two_workers_give_the_sequential_results(
    data: Path, sequential: Path, tmp_path: Path
) -> None:
    messages: list[str] = []
    res = run_benchmark(data, tmp_path, _config(), say=messages.append, workers=2)
    assert _results(tmp_path) == _results(sequential)
    keys = [f"{m}/seed{s}" for m in ("dense", "supervised", "random") for s in (0, 1)]
    text = "\n".join(messages)
    assert "6 runs in 2 worker processes" in text
    for key in keys:
        # Trained in a worker, only merged afterwards.
        assert any(m.startswith("[worker ") and f"{key}: trained" in m for m in messages), key
        assert any(m.startswith("[") and f"{key}: reused; evaluation reused" in m for m in messages)
    assert {m.split()[1] for m in messages if m.startswith("[worker ")} == {"0]", "1]"}
    assert set(res["run_seconds"]) == set(keys) and min(res["run_seconds"].values()) > 0


def test_job_list_then_merge_gives_the_sequential_results(
    data: Path, sequential: Path, tmp_path: Path
) -> None:
    """What the job list's lines do (``--only``: :func:`run_only`), in two jobs and in reverse
    order, then the plain benchmark merges: the sequential results, every run reused."""
    keys = plan_keys(data, tmp_path, _config(), say=lambda _: None)
    assert keys == [f"{m}/seed{s}" for m in ("dense", "supervised", "random") for s in (0, 1)]
    for job in (keys[3:][::-1], keys[:3]):
        seconds = run_only(data, tmp_path, _config(), job, say=lambda _: None)
        assert list(seconds) == job
        assert not (tmp_path / "results.json").exists()
    messages: list[str] = []
    run_benchmark(data, tmp_path, _config(), say=messages.append)
    assert _results(tmp_path) == _results(sequential)
    assert sum("reused; evaluation reused" in m for m in messages) == len(keys)


def test_plan_writes_one_cli_line_per_run(data: Path, tmp_path: Path) -> None:
    """``--plan``: one ``densefeat benchmark ... --only KEY`` line per run, each parsing to
    the planning command's own settings; nothing is trained."""
    out, jobs = tmp_path / "bench", tmp_path / "jobs.txt"
    args = ["benchmark", "--out", str(out), "--methods", "dense,random", "--ablations", ""]
    args += ["--seeds", "2", "--budget", "2", "--set", "batch_size=64", "--set", "d_model=32"]
    assert main([*args, "--plan", str(jobs), "--workers", "3"]) == 0
    lines = jobs.read_text().splitlines()
    assert [shlex.split(line)[-1] for line in lines] == [
        "dense/seed0", "dense/seed1", "random/seed0", "random/seed1"
    ]  # fmt: skip
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    planned = parser.parse_args(args[1:])
    for line in lines:
        argv = shlex.split(line)
        assert argv[:2] == ["densefeat", "benchmark"] and argv[-2] == "--only"
        job = parser.parse_args(argv[2:])
        assert vars(job) == {**vars(planned), "only": (argv[-1],)}
    assert not (out / "runs").exists() and not (out / "results.json").exists()


def test_select_specs_and_plan_lines() -> None:
    specs = [RunSpec("dense", "dense", 0), RunSpec("dense", "dense", 1)]
    assert select_specs(specs, ["dense/seed1"]) == [specs[1]]
    with pytest.raises(ValueError, match=r"vicreg/seed0.*dense/seed0, dense/seed1"):
        select_specs(specs, ["vicreg/seed0"])
    assert plan_commands(["densefeat", "x y"], ["a/seed0"]) == ["densefeat 'x y' --only a/seed0"]


def test_command_of_round_trips_the_arguments(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["--out", str(tmp_path / "o"), "--methods", "dense,random", "--ablations", ""]
    argv += ["--labels", str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
    argv += ["--set", "batch_size=8", "--set", "d_model=16", "--k", "3", "--plan", "j.txt"]
    args = parser.parse_args(argv)
    again = parser.parse_args(command_of(args, parser, {"plan"}))
    assert vars(again) == {**vars(args), "plan": None}
