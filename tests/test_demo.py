"""`densefeat demo` end to end on the built-in default dataset (converted into a temp cache)."""

from __future__ import annotations

import json

import pytest

from densefeat.cli import main


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DENSEFEAT_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_demo_writes_results_for_every_method(cache, capsys):
    out = cache / "demo"
    assert main(["demo", "--out", str(out), "--steps", "100"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["methods"]) == {"random", "dense", "vicreg", "barlow", "simclr"}
    assert res["n_test"] > res["k"] and res["n_train"] > res["n_test"]
    for m in res["methods"].values():
        assert 1 <= m["effective_rank"] <= res["dim"]
        assert 0 <= m["temporal_subspace_distance"] <= 1
    # Every label-free objective spreads the embedding beyond a random linear map of the same
    # standardised counts: a measured property of this data, not a given.
    for name in ("dense", "vicreg", "barlow"):
        assert res["methods"][name]["effective_rank"] > res["methods"]["random"]["effective_rank"]
    assert "dense" in (out / "results.md").read_text()
    assert str(out / "results.md") in capsys.readouterr().err


def test_demo_bad_arguments_write_nothing(cache, capsys):
    out = cache / "demo-bad"
    assert main(["demo", "--out", str(out), "--k", "65", "--dim", "64"]) == 2
    assert "--k" in capsys.readouterr().err
    assert not out.exists()
    assert main(["demo", "--out", str(out), "--data", str(cache / "missing")]) == 2
    assert not out.exists()
