"""Streaming covariance accumulator: chunked and merged equals one pass, also with an offset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import densefeat.functional as F
from densefeat.metrics import CenteredNormAccumulator, CovarianceAccumulator


def _data(n=1003, d=12, offset=0.0, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + offset
    b = a[:, : d // 2] @ rng.standard_normal((d // 2, 7)) + rng.standard_normal((n, 7)) - offset
    return a, b


def _chunked(a, b=None, sizes=(1, 2, 97, 300, 5)):
    acc = CovarianceAccumulator(paired=b is not None)
    i, j = 0, 0
    while i < len(a):
        step = sizes[j % len(sizes)]
        acc.update(a[i : i + step], None if b is None else b[i : i + step])
        i, j = i + step, j + 1
    return acc


def test_chunks_equal_one_pass_with_numpy():
    a, b = _data()
    acc = _chunked(a, b)
    assert acc.n == len(a)
    np.testing.assert_allclose(acc.mean_a.numpy(), a.mean(0), rtol=1e-12)
    np.testing.assert_allclose(acc.covariance("a").numpy(), np.cov(a, rowvar=False), rtol=1e-11)
    np.testing.assert_allclose(acc.covariance("b").numpy(), np.cov(b, rowvar=False), rtol=1e-11)
    cross = (a - a.mean(0)).T @ (b - b.mean(0)) / (len(a) - 1)
    np.testing.assert_allclose(acc.cross_covariance().numpy(), cross, rtol=1e-10, atol=1e-12)


def test_large_offset_keeps_precision_where_raw_sums_fail():
    # float32 data with a common offset of 1e4 and unit spread: Chan's update keeps the
    # covariance to ~1e-10; raw power sums (sum x x^T / n - mean mean^T) lose it entirely.
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((4000, 6)) + 1e4).astype(np.float32)
    exact = np.cov(a.astype(np.float64), rowvar=False)
    acc = _chunked(a, sizes=(128,))
    np.testing.assert_allclose(acc.covariance().numpy(), exact, rtol=1e-9, atol=1e-10)
    a64 = a.astype(np.float64)
    raw = (a64.T @ a64 - len(a) * np.outer(a64.mean(0), a64.mean(0))) / (len(a) - 1)
    assert np.abs(raw - exact).max() > 1e-8  # the naive formula loses ~8 digits here


def test_merge_is_order_independent_and_equals_one_pass():
    a, b = _data(offset=50.0)
    parts = [slice(0, 400), slice(400, 401), slice(401, 1003)]
    accs = [CovarianceAccumulator(paired=True).update(a[s], b[s]) for s in parts]
    left = CovarianceAccumulator(paired=True).merge(accs[0]).merge(accs[1]).merge(accs[2])
    right = CovarianceAccumulator(paired=True).merge(accs[2]).merge(accs[0]).merge(accs[1])
    one = CovarianceAccumulator(paired=True).update(a, b)
    for acc in (left, right):
        for name in ("mean_a", "m2_a", "mean_b", "m2_b", "m2_ab"):
            torch.testing.assert_close(
                getattr(acc, name), getattr(one, name), rtol=1e-11, atol=1e-9
            )


def test_compute_matches_functional_metrics():
    a, b = _data(offset=3.0)
    res = _chunked(a, b).compute(k=5)
    ref = F.geometry(a)
    for key in (
        "effective_rank",
        "effective_rank_eig",
        "rankme",
        "participation_ratio",
        "stable_rank",
        "numerical_rank",
        "condition_number",
        "alpha_req",
    ):
        assert res[key] == pytest.approx(ref[key], rel=1e-8), key
    assert res["b"]["effective_rank"] == pytest.approx(F.effective_rank(b), rel=1e-8)
    assert res["subspace_distance"] == pytest.approx(F.subspace_distance(a, b, 5), rel=1e-8)
    assert res["linear_cka"] == pytest.approx(F.linear_cka(a, b), rel=1e-10)
    assert res["subspace_distance_chance"] == pytest.approx(F.chance_subspace_distance(len(a), 5))


def test_debiased_cka_second_pass():
    a, b = _data(offset=-7.0)
    acc = _chunked(a, b)
    norms = CenteredNormAccumulator(acc.mean_a, acc.mean_b)
    for s in range(0, len(a), 64):
        norms.update(a[s : s + 64], b[s : s + 64])
    assert norms.linear_cka_debiased(acc) == pytest.approx(F.linear_cka_debiased(a, b), rel=1e-9)


def test_bad_updates():
    acc = CovarianceAccumulator().update(np.ones((3, 4)) + np.eye(3, 4))
    with pytest.raises(ValueError, match="feature dimension changed"):
        acc.update(np.ones((3, 5)))
    with pytest.raises(ValueError, match="NaN or inf"):
        acc.update(np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="unpaired"):
        acc.update(np.ones((2, 4)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="same number of rows"):
        CovarianceAccumulator(paired=True).update(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        CovarianceAccumulator().update(np.ones((1, 3))).covariance()
