"""Weighted ranking metrics (densefeat.eval.ranking) and the vectorised bootstrap.

References are independent: ``sklearn.metrics.roc_auc_score`` / ``average_precision_score``
(with ``sample_weight``) and the closed-form AUROC of a binormal model.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from densefeat.eval.bootstrap import (
    bootstrap_ci,
    bootstrap_metrics,
    paired_bootstrap_difference,
    resample_weights,
)
from densefeat.eval.ranking import weighted_auroc, weighted_average_precision


# --------------------------------------------------------------------------- fixtures
def _scored(rng: np.random.Generator, n: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    y = rng.random(n) < 0.35
    y[:2] = [True, False]
    s = rng.normal(size=n) + 0.8 * y
    if ties:
        s = np.round(s, 1)  # many exact ties, within and across classes
    return s, y


# --------------------------------------------------------------------------- weighted metrics
@pytest.mark.parametrize("ties", [False, True])
def test_weighted_metrics_match_sklearn(ties: bool) -> None:
    rng = np.random.default_rng(1)
    for trial in range(40):
        s, y = _scored(rng, int(rng.integers(5, 80)), ties)
        if trial % 3 == 0:
            w = rng.integers(0, 4, s.size).astype(float)  # bootstrap-like, with zeros
        else:
            w = rng.random(s.size) * 3
        w[:2] = 1.0  # keep both classes
        assert weighted_auroc(s, y, w) == pytest.approx(
            roc_auc_score(y, s, sample_weight=w), abs=1e-12
        )
        assert weighted_average_precision(s, y, w) == pytest.approx(
            average_precision_score(y, s, sample_weight=w), abs=1e-12
        )


def test_weight_matrix_rows_match_single_vectors() -> None:
    rng = np.random.default_rng(2)
    s, y = _scored(rng, 60, ties=True)
    W = rng.integers(0, 3, (7, 60)).astype(float)
    W[:, :2] = 1.0
    auc = weighted_auroc(s, y, W)
    ap = weighted_average_precision(s, y, W)
    assert auc.shape == ap.shape == (7,)
    for b in range(7):
        assert auc[b] == pytest.approx(roc_auc_score(y, s, sample_weight=W[b]), abs=1e-12)
        assert ap[b] == pytest.approx(average_precision_score(y, s, sample_weight=W[b]), abs=1e-12)


def test_unit_weights_equal_point_estimate() -> None:
    rng = np.random.default_rng(3)
    s, y = _scored(rng, 200, ties=True)
    ones = np.ones(s.size)
    assert (
        weighted_auroc(s, y, ones)
        == weighted_auroc(s, y)
        == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    )
    assert weighted_average_precision(s, y, ones) == pytest.approx(
        average_precision_score(y, s), abs=1e-12
    )
    ci = bootstrap_ci(s, y, groups=np.arange(s.size) // 2, n_resamples=50)
    assert ci["auroc"].estimate == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert ci["auprc"].estimate == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_undefined_resample_is_nan() -> None:
    s = np.array([0.1, 0.9, 0.3])
    y = np.array([0, 1, 0])
    out = weighted_auroc(s, y, np.array([[1.0, 0.0, 2.0], [1.0, 1.0, 1.0]]))
    assert math.isnan(out[0]) and out[1] == 1.0


# --------------------------------------------------------------------------- the bootstrap
def test_bootstrap_values_match_a_per_resample_sklearn_loop() -> None:
    rng = np.random.default_rng(4)
    s, y = _scored(rng, 150, ties=True)
    groups = rng.integers(0, 60, s.size)
    base = np.where(y, 1.0, 4.0)  # evaluation weights (e.g. 1 / r on subsampled negatives)
    got = bootstrap_metrics(s, y, groups, n_resamples=40, seed=7, weights=base)
    W = np.concatenate(list(resample_weights(groups, 40, seed=7))) * base
    for b in range(40):
        if W[b, y].sum() == 0 or W[b, ~y].sum() == 0:
            assert math.isnan(got["auroc"][b])
            continue
        assert got["auroc"][b] == pytest.approx(roc_auc_score(y, s, sample_weight=W[b]), abs=1e-12)
        assert got["auprc"][b] == pytest.approx(
            average_precision_score(y, s, sample_weight=W[b]), abs=1e-12
        )


def test_resamples_keep_subject_rows_together_and_are_deterministic() -> None:
    groups = np.repeat(np.arange(40), 3)[np.random.default_rng(5).permutation(120)]
    chunks = list(resample_weights(groups, 25, seed=3, chunk_size=4))
    W = np.concatenate(chunks)
    assert W.shape == (25, 120) and [c.shape[0] for c in chunks] == [4] * 6 + [1]
    for g in range(40):
        rows = W[:, groups == g]
        assert (rows == rows[:, :1]).all()  # one multiplicity per subject and resample
    # each resample draws as many subjects as there are: total multiplicity 40 per subject row
    np.testing.assert_array_equal(W.sum(axis=1), 3 * 40)
    np.testing.assert_array_equal(W, np.concatenate(list(resample_weights(groups, 25, seed=3))))


def test_bootstrap_does_not_depend_on_chunk_size() -> None:
    rng = np.random.default_rng(6)
    s, y = _scored(rng, 300, ties=False)
    groups = np.arange(300) // 3
    a = bootstrap_metrics(s, y, groups, n_resamples=100, seed=11)
    b = bootstrap_metrics(s, y, groups, n_resamples=100, seed=11, chunk_size=7)
    np.testing.assert_array_equal(a["auroc"], b["auroc"])
    np.testing.assert_array_equal(a["auprc"], b["auprc"])


def test_separable_scores_give_auroc_one() -> None:
    y = np.array([0] * 30 + [1] * 20)
    s = np.where(y == 1, 2.0, 0.0) + np.linspace(0, 1, 50)
    ci = bootstrap_ci(s, y, groups=np.arange(50), n_resamples=200)
    assert ci["auroc"].estimate == 1.0 and ci["auroc"].low == 1.0 and ci["auroc"].high == 1.0
    assert ci["auprc"].estimate == 1.0 and ci["auprc"].low == 1.0


def test_noise_scores_have_half_inside_the_ci() -> None:
    rng = np.random.default_rng(8)
    n = 2000
    y = rng.random(n) < 0.3
    s = rng.normal(size=n)
    ci = bootstrap_ci(s, y, groups=np.arange(n) // 2, n_resamples=500, seed=1)["auroc"]
    assert ci.low < 0.5 < ci.high
    assert ci.high - ci.low < 0.08  # about 4 SE of an AUROC at this n


def test_ci_coverage_of_a_known_auroc() -> None:
    """Binormal scores: AUROC = Phi(mu / sqrt 2). The 95% CI must cover it ~95% of the time."""
    mu = 1.0
    true_auc = 0.5 * (1 + math.erf(mu / 2))  # Phi(mu / sqrt(2))
    rng = np.random.default_rng(9)
    covered = 0
    for rep in range(100):
        y = np.r_[np.zeros(60, bool), np.ones(60, bool)]
        s = rng.normal(size=120) + mu * y
        ci = bootstrap_ci(s, y, n_resamples=300, seed=rep, metrics=("auroc",))["auroc"]
        covered += ci.low <= true_auc <= ci.high
    assert 85 <= covered <= 100


def test_patient_level_ci_is_wider_than_row_level_with_duplicated_rows() -> None:
    """Every subject's row 5 times: rows are not independent; only subjects are."""
    rng = np.random.default_rng(10)
    s1, y1 = _scored(rng, 150, ties=False)
    s, y = np.repeat(s1, 5), np.repeat(y1, 5)
    groups = np.repeat(np.arange(150), 5)
    patient = bootstrap_ci(s, y, groups, n_resamples=400, seed=0)["auroc"]
    row = bootstrap_ci(s, y, None, n_resamples=400, seed=0)["auroc"]
    once = bootstrap_ci(s1, y1, np.arange(150), n_resamples=400, seed=0)["auroc"]
    width = {k: v.high - v.low for k, v in (("patient", patient), ("row", row), ("once", once))}
    assert width["patient"] > 1.6 * width["row"]  # sqrt(5) = 2.2 expected
    assert width["patient"] == pytest.approx(width["once"], rel=0.25)
    assert patient.unit == "subject" and row.unit == "row"


def test_paired_difference() -> None:
    rng = np.random.default_rng(12)
    s, y = _scored(rng, 400, ties=True)
    groups = np.arange(400) // 4
    same = paired_bootstrap_difference(s, s, y, groups, n_resamples=200)
    assert same.difference == 0.0 and same.low == 0.0 and same.high == 0.0
    assert same.std == 0.0 and same.fraction_le_zero == 1.0
    worse = s + rng.normal(size=400) * 2
    diff = paired_bootstrap_difference(s, worse, y, groups, "auprc", n_resamples=300, seed=4)
    a = bootstrap_metrics(s, y, groups, 300, seed=4, metrics=("auprc",))["auprc"]
    b = bootstrap_metrics(worse, y, groups, 300, seed=4, metrics=("auprc",))["auprc"]
    d = a - b  # the same resamples for both methods
    assert diff.mean == pytest.approx(d.mean(), abs=1e-12)
    assert diff.fraction_le_zero == pytest.approx((d <= 0).mean())
    assert diff.difference == pytest.approx(
        average_precision_score(y, s) - average_precision_score(y, worse), abs=1e-12
    )
    assert diff.low < diff.difference < diff.high and diff.low > 0


def test_bootstrap_errors() -> None:
    with pytest.raises(ValueError, match="single class"):
        bootstrap_ci(np.arange(5.0), np.ones(5), n_resamples=10)
    with pytest.raises(ValueError, match="NaN or inf"):
        bootstrap_ci(np.array([0.1, np.nan, 0.3]), np.array([0, 1, 0]), n_resamples=10)
    with pytest.raises(ValueError, match="binary"):
        weighted_auroc(np.arange(3.0), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="groups has shape"):
        bootstrap_metrics(np.arange(4.0), np.array([0, 1, 0, 1]), groups=np.arange(3))
