"""`densefeat demo`: the benchmark at smoke scale on the built-in default dataset.

The full demo (every method, 60 steps) takes about 5 minutes here; this runs the same command
with a tiny budget and two methods, so it checks the demo's wiring (defaults, smoke label,
report path) while tests/test_benchmark.py checks the benchmark itself.
"""

from __future__ import annotations

import json

import pytest

from densefeat.cli import main
from densefeat.cli.demo import SMOKE_TASKS


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DENSEFEAT_CACHE", str(tmp_path / "cache"))
    return tmp_path


TINY = ["--budget", "2", "--methods", "dense,random", "--bootstrap", "20", "--k", "4"]
TINY += ["--set", "d_model=16", "--set", "n_heads=2", "--set", "n_layers=1"]
TINY += ["--set", "proj_hidden=32", "--set", "proj_dim=16", "--set", "batch_size=32"]


def test_demo_runs_the_smoke_benchmark_and_says_so(cache, capsys):
    out = cache / "demo"
    assert main(["demo", "--out", str(out), *TINY]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["scale"] == "smoke"
    assert [t["name"] for t in res["tasks"]] == sorted(SMOKE_TASKS)
    assert [r["method"] for r in res["table"]] == [
        "dense",
        "random",
        "count_features",
        "counts_only",
    ]
    assert res["config"]["train"]["data"]["max_len"] == 32  # the smoke setting, kept under --set
    assert "Smoke scale" in (out / "results.md").read_text()
    captured = capsys.readouterr()
    # results on stdout (a compact table, no markdown), progress on stderr
    stdout = captured.out
    assert f"report: {(out / 'report.html').resolve()}" in stdout
    assert "densefeat demo (smoke scale)" in stdout and "Primary endpoints:" in stdout
    table = stdout.split("\n\n")[1].splitlines()
    assert table[0].split()[:2] == ["method", "seeds"]
    assert [line.split()[0] for line in table[2:5]] == ["dense", "random", "count_features"]
    assert max(len(line) for line in stdout.splitlines() if str(out) not in line) <= 100
    assert "|" not in stdout and "[^" not in stdout  # not markdown
    assert "densefeat demo" in captured.err  # the progress


def test_demo_bad_arguments_write_nothing(cache, capsys):
    out = cache / "demo-bad"
    assert main(["demo", "--out", str(out), "--methods", "dense,unknown"]) == 2
    assert "unknown" in capsys.readouterr().err
    assert not out.exists()
    assert main(["demo", "--out", str(out), "--data", str(cache / "missing")]) == 2
    assert not out.exists()
    assert main(["demo", "--out", str(out), "--budget", "0"]) == 2
    assert not out.exists()
