"""External validation: site A's probe tested on every labelled row of site B."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

pytest.importorskip("sklearn")

from densefeat.cli import main
from densefeat.eval.external import external_files, external_validation
from densefeat.eval.probe.estimator import DEFAULT_CS


def _site(n_subjects: int, shift: float, first_id: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(first_id, first_id + n_subjects), 2)
    y = rng.random(groups.size) < 0.3
    X = rng.normal(size=(groups.size, 5)) + np.outer(y, [1.0, 0.5, 0, 0, 0]) + shift
    split = np.array(["train", "train", "train", "tuning", "held_out"])[(groups - first_id) % 5]
    return {"X": X, "y": y, "groups": groups, "split": split}


def _by_hand(a: dict, b: dict) -> float:
    """Fit on A's train rows standardised with A-train statistics, C by AUROC on A's tuning
    rows (ties to the smallest C), score every B row: plain scikit-learn."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    tr, tu = a["split"] == "train", a["split"] == "tuning"
    mu, sd = a["X"][tr].mean(0), a["X"][tr].std(0)
    best, best_auc = None, -1.0
    for c in DEFAULT_CS:
        m = LogisticRegression(C=c, max_iter=1000).fit((a["X"][tr] - mu) / sd, a["y"][tr])
        auc = roc_auc_score(a["y"][tu], m.decision_function((a["X"][tu] - mu) / sd))
        if auc > best_auc + 1e-12:
            best, best_auc = m, auc
    return roc_auc_score(b["y"], best.decision_function((b["X"] - mu) / sd))


def test_transfer_equals_a_hand_computed_fit_on_a_score_on_b() -> None:
    a, b = _site(150, 0.0, 0, 1), _site(80, 0.4, 10_000, 2)
    rec = external_validation(
        a["X"], a["y"], a["split"], b["X"], b["y"], b["groups"], n_bootstrap=200, seed=0
    )
    assert rec["transfer_auroc"] == pytest.approx(_by_hand(a, b), abs=1e-6)
    assert rec["n_b"] == b["y"].size and rec["n_pos_b"] == int(b["y"].sum())
    assert rec["auroc_drop"] == pytest.approx(rec["within_auroc"] - rec["transfer_auroc"])
    lo, hi = rec["transfer_auroc_ci"]
    assert lo < rec["transfer_auroc"] < hi
    lo, hi = rec["auroc_drop_ci"]
    assert lo <= rec["auroc_drop"] <= hi


def _write(site: dict, path: Path) -> tuple[Path, Path]:
    t0 = dt.datetime(2020, 1, 1)
    times = [t0 + dt.timedelta(days=i) for i in range(site["y"].size)]
    emb = pl.DataFrame(
        {
            "subject_id": site["groups"].astype(np.int64),
            "prediction_time": times,
            "split": site["split"],
            "embedding": site["X"].astype(np.float32).tolist(),
        }
    )
    emb.write_parquet(path / "emb.parquet")
    lab = pl.DataFrame(
        {
            "subject_id": site["groups"].astype(np.int64),
            "prediction_time": times,
            "boolean_value": site["y"],
        }
    )
    lab.write_parquet(path / "labels.parquet")
    return path / "emb.parquet", path / "labels.parquet"


def test_probe_cli_test_embeddings(tmp_path: Path, capsys) -> None:
    a, b = _site(150, 0.0, 0, 1), _site(80, 0.4, 10_000, 2)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ea, la = _write(a, tmp_path / "a")
    eb, lb = _write(b, tmp_path / "b")
    rec = external_files(ea, la, eb, lb, n_bootstrap=50)
    assert rec["transfer_auroc"] == pytest.approx(_by_hand(a, b), abs=1e-5)  # float32 file
    out = tmp_path / "res.json"
    code = main(
        ["probe", "--embeddings", str(ea), "--labels", str(la), "--test-embeddings", str(eb),
         "--test-labels", str(lb), "--bootstrap", "50", "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    assert "external validation on 160 rows" in capsys.readouterr().out
    import json

    assert json.loads(out.read_text())["external"]["transfer_auroc"] == pytest.approx(
        rec["transfer_auroc"]
    )
    with pytest.raises(ValueError, match="also in --embeddings"):
        external_files(ea, la, ea, la, n_bootstrap=0)
