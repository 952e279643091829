"""Small cohorts: subject-grouped cross-fitting of the probe, and the whole benchmark on a
60-subject MEDS dataset (windows, batch, k and probes adapted to the data, never an error)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sklearn")

from _small_cohort import small_cohort
from densefeat.eval.probe.crossfit import crossfit_probe, subject_folds


def _data(n_subjects: int = 40, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_subjects), rng.integers(1, 4, n_subjects))
    sick = rng.random(n_subjects) < 0.35
    y = sick[groups] & (rng.random(groups.size) < 0.8)
    X = rng.normal(size=(groups.size, 6)) + 1.0 * y[:, None]
    w = np.where(y, 1.0, rng.choice([1.0, 3.0], groups.size))
    return X, y, groups, w


def test_folds_keep_subjects_whole_and_spread_positives() -> None:
    _, y, groups, _ = _data()
    folds = subject_folds(groups, y, 5, seed=3)
    for g in np.unique(groups):
        assert np.unique(folds[groups == g]).size == 1
    pos_subjects = {f: np.unique(groups[(folds == f) & y]).size for f in range(5)}
    assert max(pos_subjects.values()) - min(pos_subjects.values()) <= 1
    with pytest.raises(ValueError, match="needs >= 5 subjects"):
        subject_folds(groups[:3], y[:3], 5)


def test_crossfit_never_scores_a_subject_with_a_probe_that_saw_it() -> None:
    """Changing every feature of one fold's subjects leaves that fold's probe unchanged (it
    never saw them), and its scores are that probe applied to the new features; the other
    folds' probes do change (they trained on those rows)."""
    X, y, groups, w = _data()
    _, cf = crossfit_probe(X, y, groups, k=5, weights=w, n_bootstrap=0, n_null=0, seed=1)
    for f, seen in enumerate(cf.train_subjects):
        assert not np.isin(groups[cf.folds == f], seen).any()
    f0 = cf.folds == 0
    X2 = X.copy()
    X2[f0] = np.random.default_rng(9).normal(size=(int(f0.sum()), X.shape[1])) * 5
    _, cf2 = crossfit_probe(X2, y, groups, k=5, weights=w, n_bootstrap=0, n_null=0, seed=1)
    assert np.array_equal(cf2.folds, cf.folds)
    np.testing.assert_allclose(cf2.scores[f0], cf.probes[0].decision_function(X2[f0]), rtol=1e-10)
    np.testing.assert_allclose(cf2.probes[0].coef_, cf.probes[0].coef_)
    assert not np.allclose(cf2.scores[~f0], cf.scores[~f0])


def test_crossfit_metrics_equal_sklearn_with_weights() -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    X, y, groups, w = _data(seed=4)
    rec, cf = crossfit_probe(X, y, groups, k=4, weights=w, n_bootstrap=200, n_null=3, seed=2)
    assert rec["auroc"] == pytest.approx(roc_auc_score(y, cf.scores, sample_weight=w), abs=1e-12)
    assert rec["auprc"] == pytest.approx(
        average_precision_score(y, cf.scores, sample_weight=w), abs=1e-12
    )
    assert rec["auroc_ci"][0] <= rec["auroc"] <= rec["auroc_ci"][1]
    assert rec["auroc"] > 0.65  # a real signal
    assert abs(rec["null_auroc_mean"] - 0.5) < 0.2 and rec["n_null"] == 3
    assert rec["chance_auprc"] == pytest.approx(w[y].sum() / w.sum())
    assert rec["n_test"] == y.size and rec["n_pos_test"] == int(y.sum())


@pytest.fixture(scope="module")
def small_bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from densefeat.benchmark.config import BenchmarkConfig
    from densefeat.benchmark.run import run_benchmark

    root = tmp_path_factory.mktemp("small")
    data = small_cohort(root)
    bench = BenchmarkConfig(
        methods=("dense", "vicreg", "supervised", "random"),
        ablations=("dense-no_sub",),
        seeds=2,
        budget=2,
        train={"d_model": 32, "n_heads": 2, "n_layers": 1, "proj_hidden": 32, "proj_dim": 32},
        kshots=(2, 4),
        draws=2,
        bootstrap=50,
        device="cpu",
        trials=2,  # tuning runs on a small cohort too (2 trials keep the test short)
    )
    messages: list[str] = []
    site_b = small_cohort(root / "site_b", seed=1, new_codes=2)
    res = run_benchmark(data, root / "out", bench, say=messages.append, external=site_b)
    return {"res": res, "out": root / "out", "messages": messages, "site_b": site_b}


def test_small_cohort_runs_the_whole_benchmark(small_bench: dict[str, Any]) -> None:
    res, out = small_bench["res"], small_bench["out"]
    cfg = res["config"]
    assert res["errors"] == []
    notes = " | ".join(cfg["adaptations"])
    # Every adaptation is said: windows, batch, k and the cross-fitted task.
    assert "windows" in notes and "batch_size 256 ->" in notes and "k 16 ->" in notes
    assert "cross-fitting" in notes and cfg["crossfit_tasks"].keys() == {"outcome"}
    assert cfg["k_requested"] == 16 and cfg["k"] < 16 and cfg["window_days"] < 365
    assert any(m.startswith("windows:") for m in small_bench["messages"])
    # ICU-stay data (the fixture is a PhysioNet 2019 conversion) trains on future pairs of
    # hour tokens that carry each variable's state.
    assert "ICU-stay data: data.pairs windows -> future" in notes
    assert "ICU-stay data: data.tokens events -> hours" in notes
    assert "ICU-stay data: data.max_len 256 -> 64" in notes
    for method in ("dense", "vicreg"):
        run_cfg = json.loads((out / "runs" / method / "seed0" / "config.json").read_text())
        assert run_cfg["train"]["data"]["pairs"] == "future"
        assert run_cfg["train"]["data"]["tokens"] == "hours"
        assert run_cfg["train"]["data"]["max_len"] == 64
        assert run_cfg["train"]["encoder"]["carry_forward"] is True
    full = [p for p in res["probes"] if p["k"] == "all"]
    assert {p["method"] for p in full} >= {"dense", "vicreg", "supervised", "random"}
    assert {p["method"] for p in full} >= {"dense-no_sub", "count_features"}
    assert all(p["protocol"] == "crossfit" and p["folds"] == 5 for p in full)
    assert all(p["auroc_ci"] is not None for p in full)
    assert {r["method"] for r in res["robustness"]} >= {"dense", "random"}
    assert all(r["auroc_ci"] and r["auroc_drop_ci"] for r in res["robustness"])
    assert res["comparison"]["robustness_auroc"]["best_baseline"] != "dense"
    temporal_keys = {"subspace_distance_erank", "floor_erank", "chance_erank", "k_whole"}
    assert all(temporal_keys <= set(r) for r in res["temporal"])
    text = json.dumps(res)
    assert "NaN" not in text and "Infinity" not in text
    md = (out / "results.md").read_text()
    assert "cross-fitting" in md and "cross-fit null (permuted labels)" in md
    assert "Adapted to the data" in md and (out / "report.html").exists()
    assert "AUROC under perturbation (primary)" in md
    for row in res["table"]:
        assert row["probe_auroc"] is not None and math.isfinite(row["probe_auroc"])


def test_cli_probe_folds_reaches_the_config(tmp_path: Path) -> None:
    from densefeat.benchmark.config import BenchmarkConfig

    assert BenchmarkConfig().probe_folds == 5
    with pytest.raises(ValueError, match="--probe-folds"):
        BenchmarkConfig(probe_folds=1)


def test_perturbed_auroc_cis_are_paired_with_the_clean_scores() -> None:
    """A perturbation that keeps the ranking (a monotone map of the scores) has a drop CI of
    exactly [0, 0]: clean and perturbed are scored on the same resamples; the AUROC CI is the
    patient-level interval of the perturbed scores."""
    from sklearn.metrics import roc_auc_score

    from densefeat.benchmark.evaluate import perturbed_cis

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 2)
    y = rng.random(60) < 0.4
    clean = rng.normal(size=60) + y
    te = {"y": y.astype(np.int64), "groups": groups}
    same = perturbed_cis(clean, 3 * clean + 1, te, 300, seed=5)
    assert same["auroc_drop_ci"] == [0.0, 0.0]
    lo, hi = same["auroc_ci"]
    assert lo < roc_auc_score(y, clean) < hi
    noisy = perturbed_cis(clean, clean + 2 * rng.normal(size=60), te, 300, seed=5)
    assert noisy["auroc_drop_ci"][1] > 0 and noisy["auroc_drop_ci"][0] < noisy["auroc_drop_ci"][1]


def test_external_site_is_validated_for_every_run(small_bench: dict[str, Any]) -> None:
    """--external: one record per run and task, B's unseen-code share counted by hand."""
    from densefeat.data.meds import read_meds_dataset

    res = small_bench["res"]
    ext = res["external"]
    # Every trained run and both count baselines (not the ICU control, not a baseline).
    runs = {
        (p["method"], p["seed"]) for p in res["probes"] if p["method"] != "hours_since_admission"
    }
    assert {(r["method"], r["seed"]) for r in ext} == runs
    assert {("count_features", 0), ("counts_only", 0)} <= runs
    events = read_meds_dataset(small_bench["site_b"]).events().collect()
    timed = events.filter(events["time"].is_not_null())
    new = timed["code"].str.starts_with("LAB//NEW").sum()
    assert res["external_site"]["unseen_code_event_share"] == pytest.approx(new / timed.height)
    for r in ext:
        assert "error" not in r, r.get("error")
        assert r["n_b"] == 120 and 0 <= r["transfer_auroc"] <= 1
        assert r["auroc_drop"] == pytest.approx(r["within_auroc"] - r["transfer_auroc"])
        assert (
            r["transfer_auroc_ci"] is not None
            and r["unk_event_share"] >= r["unseen_code_event_share"] - 1e-12
        )
    md = (small_bench["out"] / "results.md").read_text()
    assert "External validation on meds" in md


def _hand_counts(events: Any, rows: Any, vocab: list[str]) -> np.ndarray:
    """log(1 + count) of each vocabulary code among a subject's static events and events at or
    before the cut-off, by plain Python loops (independent of code_count_features)."""
    by_subject: dict[int, list[tuple[Any, str]]] = {}
    for sid, t, code in events.select("subject_id", "time", "code").iter_rows():
        by_subject.setdefault(sid, []).append((t, code))
    col = {c: j for j, c in enumerate(vocab)}
    out = np.zeros((rows.height, len(vocab)))
    for i, (sid, cutoff) in enumerate(rows.select("subject_id", "prediction_time").iter_rows()):
        for t, code in by_subject.get(sid, ()):
            if code in col and (t is None or t <= cutoff):
                out[i, col[code]] += 1
    return np.log1p(out)


def test_count_features_transfer_equals_a_hand_built_fit_on_a_score_on_b(
    small_bench: dict[str, Any],
) -> None:
    """counts_only on site B: A-train vocabulary, counts by hand on both sites, scikit-learn's
    logistic regression fitted on A's train rows (standardised with A-train statistics, C by
    AUROC on A's tuning rows, ties to the smallest C), AUROC on every B row."""
    import polars as pl
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from densefeat.data.ehr.builder import HistoryBuilder
    from densefeat.data.meds import read_meds_dataset
    from densefeat.eval.probe.estimator import DEFAULT_CS

    res = small_bench["res"]
    data_a, data_b = Path(res["dataset"]["path"]), small_bench["site_b"]
    ds_a, ds_b = read_meds_dataset(data_a), read_meds_dataset(data_b)
    data_cfg = res["config"]["train"]["data"]  # the run's settings, as the benchmark fitted
    voc = HistoryBuilder.fit(
        ds_a,
        split="train",
        max_len=data_cfg["max_len"],
        min_subjects=data_cfg["min_code_subjects"],
        tokens=data_cfg["tokens"],
    ).vocabulary
    parents = set(voc.parent_codes_)
    vocab = [c for c in voc.code_table()["code"].to_list() if not c.startswith("MEDS_")]
    vocab = [c for c in vocab if c not in parents]

    def rows(ds: Any, data: Path) -> Any:
        lab = pl.read_parquet(data / "labels" / "outcome.parquet")
        return lab.join(ds.splits, on="subject_id").sort("subject_id", "prediction_time")

    rows_a, rows_b = rows(ds_a, data_a), rows(ds_b, data_b)
    xa = _hand_counts(ds_a.events().collect(), rows_a, vocab)
    xb = _hand_counts(ds_b.events().collect(), rows_b, vocab)
    ya, yb = rows_a["boolean_value"].to_numpy(), rows_b["boolean_value"].to_numpy()
    tr = (rows_a["split"] == "train").to_numpy()
    tu = (rows_a["split"] == "tuning").to_numpy()
    mu, sd = xa[tr].mean(0), xa[tr].std(0)
    sd = np.where(sd <= 1e-10 * np.maximum(1.0, np.abs(mu)), 1.0, sd)
    best, best_auc = None, -1.0
    for c in DEFAULT_CS:
        m = LogisticRegression(C=c, max_iter=1000).fit((xa[tr] - mu) / sd, ya[tr])
        auc = roc_auc_score(ya[tu], m.decision_function((xa[tu] - mu) / sd))
        if auc > best_auc + 1e-12:
            best, best_auc = m, auc
    expected = roc_auc_score(yb, best.decision_function((xb - mu) / sd))
    (rec,) = [r for r in res["external"] if r["method"] == "counts_only"]
    assert rec["n_b"] == yb.size and rec["n_pos_b"] == int(yb.sum())
    assert rec["transfer_auroc"] == pytest.approx(expected, abs=1e-6)
    assert rec["auroc_drop"] == pytest.approx(rec["within_auroc"] - rec["transfer_auroc"])
    # B's renamed labs have no count column: they are in the unknown share.
    assert rec["unk_event_share"] >= rec["unseen_code_event_share"] > 0.0
    (full,) = [r for r in res["external"] if r["method"] == "count_features"]
    assert "error" not in full and 0.0 <= full["transfer_auroc"] <= 1.0
    md = (small_bench["out"] / "results.md").read_text()
    assert "counts_only" in md.split("External validation on meds")[1]


def test_icu_hours_control_alone_and_added_to_every_method(small_bench: dict[str, Any]) -> None:
    res = small_bench["res"]
    full = [p for p in res["probes"] if p["k"] == "all"]
    alone = [p for p in full if p["method"] == "hours_since_admission"]
    assert len(alone) == 1 and alone[0]["embedding"] == "raw"
    added = {p["method"] for p in full if p["embedding"] == "raw+hours_since_admission"}
    assert added >= {"dense", "random", "supervised", "count_features"}
    assert res["comparison"]["best_baseline"] != "hours_since_admission"
    assert "hours_since_admission" not in res["config"]["methods"]


def test_hours_since_admission_by_hand(tmp_path: Path) -> None:
    import datetime as dt

    import polars as pl

    from densefeat.benchmark.icu import hours_since_admission
    from densefeat.data.meds import read_meds_dataset

    ds = read_meds_dataset(small_cohort(tmp_path, n_subjects=8))
    first = ds.events().filter(pl.col("time").is_not_null()).collect()
    t0 = first.filter(pl.col("subject_id") == 3)["time"].min()
    rows = pl.DataFrame(
        {"subject_id": [3, 3], "prediction_time": [t0, t0 + dt.timedelta(hours=5, minutes=30)]}
    )
    np.testing.assert_allclose(hours_since_admission(ds, rows)[:, 0], [0.0, 5.5])
    with pytest.raises(ValueError, match="no timed event"):
        hours_since_admission(ds, rows.with_columns(prediction_time=pl.lit(t0 - dt.timedelta(1))))


def test_icu_settings_yield_to_the_user_and_other_data() -> None:
    from types import SimpleNamespace

    from densefeat.benchmark.config import BenchmarkConfig
    from densefeat.benchmark.small import ICU_HOURS_MAX_LEN, ICU_PAIRS, ICU_TOKENS, _icu_settings

    icu = SimpleNamespace(ds=SimpleNamespace(metadata={"etl_name": "densefeat.physionet2019"}))
    other = SimpleNamespace(ds=SimpleNamespace(metadata={"etl_name": "densefeat.eunomia"}))
    said: list[str] = []
    bench, notes = _icu_settings(icu, BenchmarkConfig(), said.append)
    assert bench.train == {
        "data.pairs": ICU_PAIRS,
        "data.tokens": ICU_TOKENS,
        "data.max_len": ICU_HOURS_MAX_LEN,
    }
    assert notes == said and len(notes) == 3
    # The user's choice is kept, setting by setting (flat aliases included).
    user = BenchmarkConfig(train={"data.pairs": "views", "max_len": 128})
    bench, notes = _icu_settings(icu, user, said.append)
    assert bench.train == {"data.pairs": "views", "max_len": 128, "data.tokens": ICU_TOKENS}
    assert len(notes) == 1
    # Event tokens chosen by the user keep the event-sized default history.
    user = BenchmarkConfig(train={"data.tokens": "events"})
    bench, notes = _icu_settings(icu, user, said.append)
    assert bench.train == {"data.tokens": "events", "data.pairs": ICU_PAIRS} and len(notes) == 1
    user = BenchmarkConfig(train={"data.pairs": "windows", "data.tokens": "events"})
    assert _icu_settings(icu, user, said.append) == (user, [])
    assert _icu_settings(other, BenchmarkConfig(), said.append) == (BenchmarkConfig(), [])
