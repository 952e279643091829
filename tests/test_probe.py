"""Linear probes (densefeat.eval.probe) and ``densefeat probe``.

References are independent: ``sklearn.metrics.roc_auc_score`` / ``average_precision_score``
and scikit-learn's own StandardScaler + LogisticRegression.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from densefeat.cli import main
from densefeat.eval.probe import (
    DEFAULT_CS,
    LinearProbe,
    kshot_probe,
    paired_probe_difference,
    probe_k_shot,
    probe_multilabel,
    probe_split,
    probe_task,
    sample_k_shot,
    whiten,
    zca_whitening,
)


# --------------------------------------------------------------------------- fixtures
def _table(
    n_subjects: int = 300, d: int = 8, seed: int = 0, signal: float = 1.5
) -> dict[str, np.ndarray]:
    """Rows (1-4 per subject) with a split per subject and a label driven by feature 0."""
    rng = np.random.default_rng(seed)
    per = rng.integers(1, 5, n_subjects)
    g = np.repeat(np.arange(n_subjects) + 1000, per)
    latent = rng.normal(size=n_subjects)[g - 1000]
    y = latent + 0.6 * rng.normal(size=g.size) > 0.7
    X = rng.normal(size=(g.size, d))
    X[:, 0] += signal * latent
    split_of = np.array(["train", "tuning", "held_out"])[
        np.searchsorted([0.6, 0.8], rng.random(n_subjects))
    ]
    return {"X": X, "y": y, "split": split_of[g - 1000], "groups": g}


# --------------------------------------------------------------------------- LinearProbe
def test_linear_probe_matches_sklearn_pipeline_and_selects_by_val_auroc() -> None:
    t = _table(d=6, seed=1)
    tr, tu = t["split"] == "train", t["split"] == "tuning"
    X = t["X"] * np.array([100.0, 1, 1, 0.01, 1, 1]) + 5.0  # scales that need standardising
    probe = LinearProbe().fit(X[tr], t["y"][tr], X[tu], t["y"][tu])
    aucs = []
    for c in DEFAULT_CS:
        ref = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))
        ref.fit(X[tr], t["y"][tr])
        aucs.append(roc_auc_score(t["y"][tu], ref.decision_function(X[tu])))
    np.testing.assert_allclose(probe.cv_results_["val_auroc"], aucs, atol=1e-9)
    assert probe.C_ == DEFAULT_CS[int(np.argmax(aucs))]
    assert probe.val_auroc_ == pytest.approx(max(aucs))
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=probe.C_, max_iter=1000))
    ref.fit(X[tr], t["y"][tr])
    np.testing.assert_allclose(probe.decision_function(X), ref.decision_function(X), atol=1e-6)
    np.testing.assert_allclose(
        X @ probe.coef_.T + probe.intercept_, probe.decision_function(X)[:, None]
    )
    proba = probe.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-probe.decision_function(X))))
    assert probe.converged_
    assert clone(probe).get_params()["C"] is None


def test_linear_probe_degenerate_input() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(12, 40))  # n < d
    y = np.arange(12) % 2
    X[:, 5] = 3.0  # a constant feature
    p = LinearProbe(C=1.0).fit(X, y)
    assert p.n_constant_features_ == 1 and np.isfinite(p.coef_).all()
    X2 = X.copy()
    X2[:, 5] = 7.0  # the constant feature carries no weight
    np.testing.assert_allclose(
        p.decision_function(X2) - p.decision_function(X), p.coef_[0, 5] * 4.0
    )
    assert abs(p.coef_[0, 5]) < 1e-12
    bad = X.copy()
    bad[3, 7] = np.nan
    with pytest.raises(ValueError, match="row 3, column 7"):
        LinearProbe(C=1.0).fit(bad, y)
    with pytest.raises(ValueError, match="single class"):
        LinearProbe(C=1.0).fit(X, np.ones(12))
    with pytest.raises(ValueError, match="pass X_val and y_val"):
        LinearProbe().fit(X, y)
    with pytest.raises(ValueError, match="y_val has a single class"):
        LinearProbe().fit(X, y, X[:4], np.zeros(4))
    with pytest.raises(ValueError, match="all 40 features"):
        LinearProbe(C=1.0).fit(np.ones((12, 40)), y)
    with pytest.raises(ValueError, match="features"):
        p.decision_function(X[:, :5])


# --------------------------------------------------------------------------- protocol
def test_probe_task_record_and_reference() -> None:
    t = _table()
    res = probe_task(t["X"], t["y"], t["split"], t["groups"], n_bootstrap=300, seed=2)
    rec = res.record
    te = t["split"] == "held_out"
    assert rec["k"] == "all" and rec["n_test"] == te.sum()
    assert rec["auroc"] == pytest.approx(roc_auc_score(t["y"][te], res.scores), abs=1e-12)
    assert rec["auprc"] == pytest.approx(average_precision_score(t["y"][te], res.scores), abs=1e-12)
    assert rec["auroc_ci"][0] < rec["auroc"] < rec["auroc_ci"][1]
    assert rec["auroc"] > 0.75 and rec["C"] in DEFAULT_CS
    assert rec["bootstrap"]["unit"] == "subject" and rec["bootstrap"]["n_resamples"] == 300
    json.dumps(rec, allow_nan=False)
    # probe_split on the same parts gives the same record
    tr, tu = t["split"] == "train", t["split"] == "tuning"
    rec2, _, scores2 = probe_split(
        t["X"][tr], t["y"][tr], t["X"][tu], t["y"][tu], t["X"][te], t["y"][te],
        groups=t["groups"][te], n_bootstrap=300, seed=2,
    )  # fmt: skip
    np.testing.assert_array_equal(scores2, res.scores)
    assert rec2 == rec
    # evaluation weights (1 / r on negatives kept at rate r) enter the point estimates
    w = np.where(t["y"][te], 1.0, 4.0)
    rec3, _, _ = probe_split(
        t["X"][tr], t["y"][tr], t["X"][tu], t["y"][tu], t["X"][te], t["y"][te],
        groups=t["groups"][te], weights=w, n_bootstrap=50,
    )  # fmt: skip
    assert rec3["weighted"] and rec3["auprc"] == pytest.approx(
        average_precision_score(t["y"][te], res.scores, sample_weight=w), abs=1e-12
    )
    assert rec3["auprc"] < rec["auprc"]  # 4x the negatives: lower precision
    assert paired_probe_difference(res, res, n_resamples=50).difference == 0.0


def test_probe_task_errors() -> None:
    t = _table()
    split = t["split"].copy()
    subject = 1000 + np.flatnonzero(np.bincount(t["groups"] - 1000) > 1)[0]
    rows = np.flatnonzero(t["groups"] == subject)
    split[rows[0]] = "held_out" if split[rows[1]] != "held_out" else "train"
    with pytest.raises(ValueError, match="more than one split"):
        probe_task(t["X"], t["y"], split, t["groups"], n_bootstrap=0)
    y = t["y"].copy()
    y[t["split"] == "tuning"] = False
    with pytest.raises(ValueError, match="tuning split has 0 positive"):
        probe_task(t["X"], y, t["split"], t["groups"], n_bootstrap=0)


def test_k_shot_draws_are_deterministic_and_distinct_subjects() -> None:
    t = _table(n_subjects=400)
    tr = np.flatnonzero(t["split"] == "train")
    for k in (1, 8, 32):
        a = sample_k_shot(t["y"], t["groups"], k, np.random.default_rng([0, k, 1]), rows=tr)
        b = sample_k_shot(t["y"], t["groups"], k, np.random.default_rng([0, k, 1]), rows=tr)
        np.testing.assert_array_equal(a, b)
        assert set(a) <= set(tr) and t["y"][a[:k]].all() and not t["y"][a[k:]].any()
        assert np.unique(t["groups"][a]).size == 2 * k  # 2k distinct patients
    # Two subjects only: the draw must reuse them, still k rows per class.
    y = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    g = np.array([1, 1, 1, 1, 2, 2, 2, 2])
    rows = sample_k_shot(y, g, 3, np.random.default_rng(0))
    assert y[rows[:3]].all() and not y[rows[3:]].any() and np.unique(rows).size == 6
    with pytest.raises(ValueError, match="shots requested"):
        sample_k_shot(y, g, 5, np.random.default_rng(0))


def test_probe_k_shot_protocol() -> None:
    t = _table(n_subjects=250)
    args = (t["X"], t["y"], t["split"], t["groups"])
    n_pos_train = int(t["y"][t["split"] == "train"].sum())
    recs = probe_k_shot(*args, ks=(2, 8, n_pos_train + 1), draws=3, seed=5)
    again = probe_k_shot(*args, ks=(8,), draws=3, seed=5)
    assert recs[1] == again[0]  # deterministic, and independent of the other k
    two, eight, big = recs
    assert two["C"] == 1.0 and all(d["C"] == 1.0 and d["n_val"] == 0 for d in two["draws"])
    assert eight["C"] is None and all(d["n_val"] == 16 for d in eight["draws"])
    assert all(d["C"] in DEFAULT_CS and d["n_train_subjects"] == 16 for d in eight["draws"])
    aurocs = [d["auroc"] for d in eight["draws"]]
    assert eight["auroc"] == pytest.approx(np.mean(aurocs))
    assert eight["auroc_sd"] == pytest.approx(np.std(aurocs, ddof=1))
    assert big["skipped"] and "exceeds" in big["reason"] and big["auroc"] is None
    # the same shots (hence the same numbers) from the split-array form
    parts = [t["split"] == s for s in ("train", "tuning", "held_out")]
    direct = kshot_probe(
        t["X"][parts[0]], t["y"][parts[0]], t["groups"][parts[0]],
        t["X"][parts[1]], t["y"][parts[1]], t["groups"][parts[1]],
        t["X"][parts[2]], t["y"][parts[2]], ks=(8,), draws=3, seed=5,
    )  # fmt: skip
    assert direct == again


def test_probe_multilabel() -> None:
    t = _table(n_subjects=250)
    rng = np.random.default_rng(3)
    Y = np.column_stack([t["y"], rng.random(t["y"].size) < 0.4, np.zeros(t["y"].size, bool)])
    out = probe_multilabel(
        t["X"], Y, t["split"], t["groups"], label_names=["a", "b", "c"], n_bootstrap=100
    )
    assert [r["label"] for r in out["labels"]] == ["a", "b"]
    assert out["skipped"] == [
        {"label": "c", "reason": f"the train split has 0 positive and "
         f"{int((t['split'] == 'train').sum())} negative rows"}
    ]  # fmt: skip
    assert out["macro_auroc"] == pytest.approx(np.mean([r["auroc"] for r in out["labels"]]))
    assert out["labels"][1]["auroc"] < out["labels"][0]["auroc"]  # b is noise
    lo, hi = out["macro_auroc_ci"]
    assert lo < out["macro_auroc"] < hi


def test_whitening_uses_train_statistics() -> None:
    rng = np.random.default_rng(4)
    A = rng.normal(size=(500, 5)) @ rng.normal(size=(5, 5)) + 3.0
    Xw = whiten(A[:400], A, eps=1e-10)
    np.testing.assert_allclose(np.cov(Xw[:400].T), np.eye(5), atol=1e-6)
    np.testing.assert_allclose(Xw[:400].mean(axis=0), 0.0, atol=1e-9)
    _, W = zca_whitening(A[:400])
    np.testing.assert_allclose(W, W.T)
    B = A.copy()
    B[400:] *= 10  # test rows do not change the transform
    np.testing.assert_allclose(whiten(A[:400], B)[:400], whiten(A[:400], A)[:400])
    with pytest.raises(ValueError, match="no variance"):
        zca_whitening(np.ones((10, 3)))


# --------------------------------------------------------------------------- CLI
def _write_files(
    tmp: Path, with_split: bool = True, n_subjects: int = 200
) -> tuple[Path, Path, pl.DataFrame]:
    t = _table(n_subjects=n_subjects, d=6, seed=3)
    t0 = dt.datetime(2020, 1, 1)
    order = np.argsort(t["groups"], kind="stable")
    rank = np.arange(t["groups"].size) - np.searchsorted(t["groups"][order], t["groups"][order])
    times = [t0 + dt.timedelta(days=365 * int(r)) for r in rank]
    emb = pl.DataFrame(
        {
            "subject_id": t["groups"].astype(np.int64),
            "prediction_time": times,
            **({"split": t["split"]} if with_split else {}),
            "embedding": t["X"].astype(np.float32).tolist(),
        },
        schema_overrides={"embedding": pl.List(pl.Float32)},
    )
    labels = pl.DataFrame(
        {"subject_id": emb["subject_id"], "prediction_time": times, "boolean_value": t["y"]}
    )
    emb_path, lab_path = tmp / "emb.parquet", tmp / "labels.parquet"
    emb.write_parquet(emb_path)
    labels.write_parquet(lab_path)
    return emb_path, lab_path, labels


def test_cli_probe_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    emb, lab, _ = _write_files(tmp_path)
    out = tmp_path / "probe.json"
    argv = ["probe", "--embeddings", str(emb), "--labels", str(lab), "--shots", "all", "2", "8"]
    argv += ["--draws", "2", "--bootstrap", "100", "--json", str(out)]
    assert main(argv) == 0
    text = out.read_text()
    result = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert result["kind"] == "densefeat.probe" and result["rows"]["matched"] > 0
    assert result["splits"]["source"].startswith("column 'split'")
    ks = [p["k"] for p in result["probes"]]
    assert ks == ["all", 2, 8]
    full = result["probes"][0]
    assert full["auroc_ci"][0] <= full["auroc"] <= full["auroc_ci"][1]
    assert "AUROC" in capsys.readouterr().out


def test_cli_probe_hash_splits_without_split_column(tmp_path: Path) -> None:
    emb, lab, _ = _write_files(tmp_path, with_split=False)
    out = tmp_path / "probe.json"
    argv = ["probe", "--embeddings", str(emb), "--labels", str(lab), "--bootstrap", "20"]
    assert main([*argv, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["splits"]["source"].startswith("hash of (split seed 0")


def _cli_error(argv: list[str], out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main([*argv, "--bootstrap", "10", "--json", str(out)]) == 2
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}*"))  # no temporary left behind
    return capsys.readouterr().err


def test_cli_probe_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    emb, lab, labels = _write_files(tmp_path)
    out = tmp_path / "out" / "probe.json"
    out.parent.mkdir()
    base = ["probe", "--embeddings", str(emb)]

    # labels whose prediction times match no embedding row
    shifted = tmp_path / "shifted.parquet"
    labels.with_columns(pl.col("prediction_time") + pl.duration(hours=1)).write_parquet(shifted)
    err = _cli_error([*base, "--labels", str(shifted)], out, capsys)
    assert "no label row matches" in err and f"0 of {labels.height} label rows" in err

    # a single-class label
    single = tmp_path / "single.parquet"
    labels.with_columns(pl.lit(False).alias("boolean_value")).write_parquet(single)
    err = _cli_error([*base, "--labels", str(single)], out, capsys)
    assert "single class" in err and "boolean_value" in err

    # k larger than the train split's smaller class
    err = _cli_error([*base, "--labels", str(lab), "--shots", "all", "100000"], out, capsys)
    assert "--shots 100000" in err and "largest possible k" in err

    # a missing column, named
    no_sid = tmp_path / "no_sid.parquet"
    pl.read_parquet(emb).drop("subject_id").write_parquet(no_sid)
    err = _cli_error(["probe", "--embeddings", str(no_sid), "--labels", str(lab)], out, capsys)
    assert "no column 'subject_id'" in err

    # labels without boolean_value
    ints = tmp_path / "ints.parquet"
    labels.rename({"boolean_value": "integer_value"}).with_columns(
        pl.col("integer_value").cast(pl.Int64)
    ).write_parquet(ints)
    err = _cli_error([*base, "--labels", str(ints)], out, capsys)
    assert "no 'boolean_value' column" in err

    # a missing file and a non-parquet embedding file
    err = _cli_error([*base, "--labels", str(tmp_path / "nope.parquet")], out, capsys)
    assert "nope.parquet" in err
    npy = tmp_path / "emb.npy"
    np.save(npy, np.zeros((4, 2), np.float32))
    err = _cli_error(["probe", "--embeddings", str(npy), "--labels", str(lab)], out, capsys)
    assert ".parquet" in err

    # a subject in two splits
    mixed = tmp_path / "mixed.parquet"
    e = pl.read_parquet(emb)
    sid = e.group_by("subject_id").len().filter(pl.col("len") > 1)["subject_id"][0]
    first = e.with_row_index().filter(pl.col("subject_id") == sid)["index"][0]
    other = "train" if e["split"][int(first)] != "train" else "held_out"
    e.with_columns(
        pl.when(pl.int_range(pl.len()) == first).then(pl.lit(other)).otherwise(pl.col("split"))
        .alias("split")
    ).write_parquet(mixed)  # fmt: skip
    err = _cli_error(["probe", "--embeddings", str(mixed), "--labels", str(lab)], out, capsys)
    assert "more than one split" in err


# --------------------------------------------------------------------------- import paths
def test_names_keep_their_import_paths() -> None:
    """The names of the former single modules stay importable where they were."""
    import densefeat.eval as ev
    from densefeat.eval import bootstrap, ranking
    from densefeat.eval.probe import files, probe_files

    assert bootstrap.weighted_auroc is ranking.weighted_auroc is ev.weighted_auroc
    assert bootstrap.weighted_average_precision is ranking.weighted_average_precision
    assert files.probe_files is probe_files
    for name in ev.__all__:
        assert getattr(ev, name) is not None


def test_import_eval_does_not_import_sklearn() -> None:
    import densefeat

    code = (
        "import sys, densefeat.eval, densefeat.eval.bootstrap, densefeat.cli.probe; "
        "print(densefeat.__file__, 'sklearn' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(densefeat.__file__).parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.split() == [densefeat.__file__, "False"]


def test_cli_probe_k_is_refused_and_names_shots(capsys: pytest.CaptureFixture[str]) -> None:
    # --k is the subspace dimension in analyze/benchmark/demo: probe says so rather than
    # taking it as shot sizes.
    assert main(["probe", "--embeddings", "e.parquet", "--labels", "l.parquet", "--k", "8"]) == 2
    err = capsys.readouterr().err
    assert "--k is the subspace dimension" in err and "--shots" in err


def test_k_shot_draw_of_identical_shots_scores_every_row_alike() -> None:
    """Two ICU stays with equal code counts at hour 6 once stopped a whole benchmark ("all 33
    features of X are constant"): such a draw now gives one score to every test row (AUROC
    0.5, AUPRC the weighted prevalence), is counted, and the other draws are untouched."""
    rng = np.random.default_rng(3)
    n = 60
    y = np.arange(n) % 2 == 0
    # Training rows: features carry the label, except one positive and one negative that are
    # identical copies of each other (the rows drawn at k = 1 below decide).
    X = rng.normal(size=(n, 4)) + y[:, None]
    X_te = rng.normal(size=(40, 4)) + (np.arange(40) % 2 == 0)[:, None]
    y_te = np.arange(40) % 2 == 0
    g = np.arange(n)
    one = kshot_probe(X, y, g, X[:0], y[:0], g[:0], X_te, y_te, ks=(1,), draws=4, seed=0)[0]
    assert one["n_uninformative_draws"] == 0
    shots = [sample_k_shot(y, g, 1, np.random.default_rng([0, 1, r])) for r in range(4)]
    X_same = X.copy()
    X_same[shots[2]] = X[shots[2][0]]  # draw 2's positive and negative become identical
    got = kshot_probe(X_same, y, g, X[:0], y[:0], g[:0], X_te, y_te, ks=(1,), draws=4, seed=0)
    (rec,) = got
    assert rec["n_uninformative_draws"] == 1
    draw = rec["draws"][2]
    assert draw["uninformative"] and draw["auroc"] == 0.5
    assert draw["auprc"] == pytest.approx(y_te.mean())
    # the other draws are fitted probes (informative features, AUROC well above chance)
    for r in (0, 1, 3):
        assert "uninformative" not in rec["draws"][r] and rec["draws"][r]["auroc"] > 0.6
    assert rec["auroc"] == pytest.approx(np.mean([d["auroc"] for d in rec["draws"]]))
