"""Fair tuning (densefeat.benchmark.tuning): seeded search spaces, selection on the tuning split
only, resumable trials, the chosen configuration applied to the comparison's runs.

The end-to-end part runs real (tiny) trainings on the default dataset (Eunomia GiBleed).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

if not os.environ.get("CI"):
    pytest.importorskip("sklearn", reason="the benchmark needs the eval extra (scikit-learn)")

from densefeat.benchmark.config import DEFAULT_TRIALS, BenchmarkConfig
from densefeat.benchmark.run import run_benchmark
from densefeat.benchmark.sources.ehr import EHRSource
from densefeat.benchmark.tuning import (
    COMMON_SPACE,
    collapse_flags,
    draw_trials,
    search_space,
    select_trial,
    tune,
)
from densefeat.cli.benchmark import add_arguments
from densefeat.data.convert.eunomia import eunomia_meds

TASK = "peptic_ulcer"


# ---- the search: pure functions --------------------------------------------------------------


def test_draws_are_seeded_prefix_stable_and_share_the_common_settings() -> None:
    for method in ("dense", "simclr", "vicreg", "barlow", "masked", "masked+dense", "supervised"):
        four, eight = draw_trials(method, 4), draw_trials(method, 8)
        assert four == eight[:4] == draw_trials(method, 4)  # seeded; independent of N
        assert four[0] == {}  # trial 0: the defaults
        space = search_space(method)
        for trial in eight[1:]:
            assert set(trial) == set(space)
            for key, value in trial.items():
                assert space[key].low <= value <= space[key].high, (method, key, value)
    # Trial i's learning rate and weight decay are the same for every method ...
    for i in range(1, 6):
        common = {
            m: {k: draw_trials(m, 6)[i][k] for k in COMMON_SPACE}
            for m in ("dense", "vicreg", "supervised")
        }
        assert common["dense"] == common["vicreg"] == common["supervised"]
    # ... and they vary between trials; the method's own settings use their own stream.
    lrs = [t["optim.lr"] for t in draw_trials("dense", 6)[1:]]
    assert len(set(lrs)) == 5
    assert draw_trials("random", 6) == [{}]  # nothing to train, nothing to tune
    assert "masked.mask_p" not in search_space("masked")  # EHR next-event prediction
    assert "masked.mask_p" in search_space("masked", "text")
    assert set(search_space("masked+dense")) == {*COMMON_SPACE, "hybrid.w_dense"}
    with pytest.raises(ValueError, match="trials"):
        draw_trials("dense", 0)


def test_select_trial_ties_and_missing_scores() -> None:
    assert select_trial([0.7, 0.8, 0.8, None]) == 1
    assert select_trial([None, math.nan, 0.6]) == 2
    with pytest.raises(ValueError, match="finite"):
        select_trial([None])


def test_collapse_flag_uses_ten_percent_of_d() -> None:
    table = [{"method": "vicreg"}, {"method": "dense"}, {"method": "count_features"}]
    curves = [
        {"method": "vicreg", "d": 128, "effective_rank": [40.0, 12.0]},
        {"method": "vicreg", "d": 128, "effective_rank": [40.0, 13.0]},
        {"method": "dense", "d": 128, "effective_rank": [40.0, 60.0]},
    ]
    collapse_flags(table, curves)
    assert table[0]["collapsed"] is True and table[0]["final_effective_rank"] == 12.5
    assert table[1]["collapsed"] is False
    assert table[2]["collapsed"] is None


def test_default_trials_agree_between_cli_and_api() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--out", "x"])
    assert args.trials == DEFAULT_TRIALS == BenchmarkConfig().trials


# ---- end to end, tiny ------------------------------------------------------------------------


def _config(**changes: Any) -> BenchmarkConfig:
    base = dict(
        methods=("dense", "vicreg", "random"),
        ablations=("dense-no_sub",),
        seeds=1,
        budget=2,
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
            "monitor_size": 64,
            "checkpoint_every": 1,
        },
        k=4,
        max_eval_times=800,
        kshots=(2,),
        draws=1,
        bootstrap=30,
        perturbations=(),
        tasks=(TASK,),
        scale="smoke",
        trials=2,
        device="cpu",
    )
    base.update(changes)
    return BenchmarkConfig(**base)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    os.environ.setdefault("DENSEFEAT_CACHE", str(tmp_path_factory.mktemp("cache")))
    data = eunomia_meds()
    out = tmp_path_factory.mktemp("tuned")
    messages: list[str] = []
    res = run_benchmark(data, out, _config(), say=messages.append)
    again: list[str] = []
    res2 = run_benchmark(data, out, _config(), say=again.append)
    return {"data": data, "out": out, "res": res, "res2": res2, "again": again}


def test_every_method_gets_the_same_trials_and_its_choice_is_used(tuned) -> None:
    res, out = tuned["res"], tuned["out"]
    tuning = res["tuning"]
    assert tuning["trials"] == 2 and set(tuning["methods"]) == {"dense", "vicreg", "random"}
    for method in ("dense", "vicreg"):
        rec = tuning["methods"][method]
        assert len(rec["trials"]) == 2
        assert [t["overrides"] for t in rec["trials"]] == draw_trials(method, 2)
        best = max(t["auroc_macro"] for t in rec["trials"])
        assert rec["trials"][rec["chosen_trial"]]["auroc_macro"] == best
        assert rec["chosen"] == rec["trials"][rec["chosen_trial"]]["overrides"]
        cfg = json.loads((out / "runs" / method / "seed0" / "config.json").read_text())["train"]
        for key, value in rec["chosen"].items():
            section, name = key.split(".")
            assert cfg[section][name] == pytest.approx(value)
    # The ablation keeps its switch on top of dense's chosen weights.
    abl = json.loads((out / "runs" / "dense-no_sub" / "seed0" / "config.json").read_text())
    assert abl["train"]["dense"]["w_sub"] == 0.0
    assert tuning["methods"]["random"]["trials"] == [
        {"trial": 0, "overrides": {}, "auroc_macro": None}
    ]
    rows = {r["method"]: r for r in res["table"]}
    assert rows["dense"]["collapsed"] in (True, False)
    assert rows["count_features"]["collapsed"] is None
    assert "Tuning: chosen configurations" in (out / "results.md").read_text()


def test_trials_resume_and_their_scores_are_reused(tuned) -> None:
    again = " ".join(tuned["again"])
    assert again.count("score reused") == 4, tuned["again"]
    assert tuned["res2"]["tuning"] == tuned["res"]["tuning"]


def test_tuning_never_reads_held_out_rows(tuned) -> None:
    """Permuting every task's held-out labels changes nothing the tuning sees."""
    data, out = tuned["data"], tuned["out"]
    bench = _config()
    source = EHRSource(data, out, bench, None, lambda _: None, torch.device("cpu"))
    rng = np.random.default_rng(7)
    for task in source.tasks:
        rows = source.eval_rows.task_rows[task.name]
        held = (rows["split"] == "held_out").to_numpy()
        y = rows["boolean_value"].to_numpy().copy()
        y[held] = rng.permutation(y[held])
        assert not np.array_equal(y, rows["boolean_value"].to_numpy())
        source.eval_rows.task_rows[task.name] = rows.with_columns(
            boolean_value=pl.Series(y, dtype=pl.Boolean)
        )
        lab = task.labels
        lheld = (lab["split"] == "held_out").to_numpy()
        ly = lab["boolean_value"].to_numpy().copy()
        ly[lheld] = rng.permutation(ly[lheld])
        task.labels = lab.with_columns(boolean_value=pl.Series(ly, dtype=pl.Boolean))
    # New task fingerprints: the cached scores are NOT reused, every trial is re-scored.
    messages: list[str] = []
    section = tune(
        source,
        out,
        ["permuted", [t.fingerprint() for t in source.tasks]],
        ["dense", "vicreg", "random"],
        say=messages.append,
    )
    assert not any("score reused" in m for m in messages)
    before = tuned["res"]["tuning"]["methods"]
    for method in ("dense", "vicreg"):
        assert section["methods"][method]["chosen"] == before[method]["chosen"]
        assert [t["auroc_macro"] for t in section["methods"][method]["trials"]] == [
            t["auroc_macro"] for t in before[method]["trials"]
        ]
