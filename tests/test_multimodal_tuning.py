"""``densefeat benchmark --modality multimodal --trials 2`` end to end at a tiny budget: the
fair-tuning search runs through the multimodal source (its fused embedding of the training
and tuning rows), the ``tuning`` section lists every tuned method's trials and choice, the
choice is the best tuning-split AUROC, and the comparison's runs are trained with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sklearn")

from _grouped_cohort import grouped_cohort
from densefeat.benchmark.tuning import draw_trials
from densefeat.cli import main

_SETTINGS = {
    "d_model": 16,
    "n_heads": 2,
    "n_layers": 1,
    "proj_hidden": 16,
    "proj_dim": 16,
    "max_len": 32,
    "multimodal.groups": "vitals=VITAL//,labs=LAB//",
    "multimodal.static": "true",
}


@pytest.fixture(scope="module")
def tuned_mm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("mmtune")
    data = grouped_cohort(root, n_subjects=80)
    out = root / "out"
    argv = [
        "benchmark",
        "--modality", "multimodal",
        "--data", str(data),
        "--out", str(out),
        "--methods", "dense,vicreg,random",
        "--ablations", "",
        "--seeds", "1",
        "--budget", "2",
        "--trials", "2",
        "--bootstrap", "20",
        "--device", "cpu",
        *(x for key, value in _SETTINGS.items() for x in ("--set", f"{key}={value}")),
    ]  # fmt: skip
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    return {"res": res, "out": out}


def test_multimodal_tuning_lists_trials_and_chooses_the_best_tuning_auroc(tuned_mm) -> None:
    res, out = tuned_mm["res"], tuned_mm["out"]
    assert res["config"]["modality"] == "multimodal" and res["errors"] == []
    tuning = res["tuning"]
    assert tuning is not None and "skipped" not in tuning
    assert tuning["trials"] == 2 and tuning["selected_on"] == "tuning_auroc_macro"
    assert set(tuning["methods"]) == {"dense", "vicreg", "random"}
    for method in ("dense", "vicreg"):
        rec = tuning["methods"][method]
        trials = rec["trials"]
        # Both trials listed, with the seeded draws (trial 0 = the defaults) and their scores.
        assert [t["trial"] for t in trials] == [0, 1]
        assert [t["overrides"] for t in trials] == draw_trials(method, 2, "multimodal")
        assert trials[0]["overrides"] == {} and trials[1]["overrides"]
        scores = [t["auroc_macro"] for t in trials]
        assert all(s is not None and 0.0 <= s <= 1.0 for s in scores), scores
        for t in trials:  # the macro is the mean of the per-task tuning AUROCs
            assert t["auroc_macro"] == pytest.approx(np.mean(list(t["auroc"].values())))
        # The chosen trial is the best tuning-split AUROC (ties: the lower index).
        best = int(np.argmax(scores))
        assert rec["chosen_trial"] == best
        assert rec["chosen"] == trials[best]["overrides"]
        # ... and the comparison's run is trained with it.
        cfg = json.loads((out / "runs" / method / "seed0" / "config.json").read_text())["train"]
        for key, value in rec["chosen"].items():
            section, name = key.split(".")
            assert cfg[section][name] == pytest.approx(value)
        # Each trial is a normal run under OUT/tuning (reused on a rerun).
        for i in (0, 1):
            assert (out / "tuning" / "runs" / method / f"trial{i}" / "seed0").is_dir()
    assert tuning["methods"]["random"]["trials"] == [
        {"trial": 0, "overrides": {}, "auroc_macro": None}
    ]
    md = (out / "results.md").read_text()
    assert "Tuning: chosen configurations" in md


def test_multimodal_tuning_scores_never_embed_held_out_rows(
    tuned_mm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The multimodal source's tuning embedding is asked for training and tuning rows only."""
    import torch

    from densefeat.benchmark.config import BenchmarkConfig
    from densefeat.benchmark.sources.multimodal import MultimodalSource
    from densefeat.benchmark.tuning import tuning_score

    res, out = tuned_mm["res"], tuned_mm["out"]
    bench = BenchmarkConfig(
        modality="multimodal",
        methods=("dense",),
        ablations=(),
        seeds=1,
        budget=2,
        bootstrap=20,
        trials=2,
        device="cpu",
        train={k: (v == "true" if v in ("true", "false") else v) for k, v in _SETTINGS.items()},
    )
    source = MultimodalSource(
        Path(res["dataset"]["path"]), out, bench, None, lambda _: None, torch.device("cpu")
    )
    seen: list[set[str]] = []
    real = source.tuning_embed

    def spy(run_dir: Path, rows: Any) -> Any:
        seen.append(set(rows["split"].to_list()))
        return real(run_dir, rows)

    monkeypatch.setattr(source, "tuning_embed", spy)
    run_dir = out / "tuning" / "runs" / "dense" / "trial1" / "seed0"
    score = tuning_score(source, run_dir)
    assert seen == [{"train", "tuning"}]
    rec = res["tuning"]["methods"]["dense"]["trials"][1]
    assert score["auroc_macro"] == pytest.approx(rec["auroc_macro"], abs=1e-9)
