"""Dense-feature objectives: NumPy references, closed forms, gradcheck, distinct terms, degenerate
input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import densefeat.functional as F
from densefeat.functional.objectives import (
    feature_orthogonality_from_cov,
)


def _t(x: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64, requires_grad=grad)


def _pair(n=400, d=12, seed=0, noise=0.3):
    rng = np.random.default_rng(seed)
    za = rng.standard_normal((n, d)) * np.linspace(2, 0.5, d) + 1.5
    zb = za @ rng.standard_normal((d, d)) / math.sqrt(d) + noise * rng.standard_normal((n, d))
    return za, zb


# ----------------------------------------------------------------- NumPy references
def _np_cov(z):
    return np.cov(z, rowvar=False)


def _np_spec(z, a=1.0):
    c = _np_cov(z)
    d = c.shape[0]
    _, logdet = np.linalg.slogdet(np.eye(d) + a * d * c / np.trace(c))
    return 1 - logdet / (d * math.log1p(a))


def _np_spec_entropy(z):
    lam = np.linalg.eigvalsh(_np_cov(z)).clip(min=0)
    p = lam / lam.sum()
    return math.log(len(p)) + np.sum(p * np.log(p + 1e-12))


def _np_orth(z):
    c = _np_cov(z)
    d = c.shape[0]
    sd = np.sqrt(np.diag(c) + 1e-4 * np.trace(c) / d)
    r = c / np.outer(sd, sd)
    off = (np.sum(r**2) - np.sum(np.diag(r) ** 2)) / (d * (d - 1))
    return off + np.mean(np.maximum(0, 1 - np.sqrt(np.diag(c) + 1e-4)))


def _inv_sqrt(c):
    lam, v = np.linalg.eigh(c)
    return v @ np.diag(lam**-0.5) @ v.T


def _np_sub(za, zb):
    n = za.shape[0]
    ca, cb = _np_cov(za), _np_cov(zb)
    cab = (za - za.mean(0)).T @ (zb - zb.mean(0)) / (n - 1)
    ea = 1e-4 * np.trace(ca) / ca.shape[0]
    eb = 1e-4 * np.trace(cb) / cb.shape[0]
    t = _inv_sqrt(ca + ea * np.eye(len(ca))) @ cab @ _inv_sqrt(cb + eb * np.eye(len(cb)))
    return 1 - np.linalg.norm(t) ** 2 / min(ca.shape[0], cb.shape[0])


def _np_sub_shrunk(za, zb, g=3.0):
    """Independent reference of the "shrunk" form: whiten each side by the eigh inverse square
    root of its shrunk covariance, then 1 - linear CKA of the whitened features (rows)."""
    wa_ = _inv_sqrt(
        _np_cov(za) + (g + 1e-4) * np.trace(_np_cov(za)) / za.shape[1] * np.eye(za.shape[1])
    )
    wb_ = _inv_sqrt(
        _np_cov(zb) + (g + 1e-4) * np.trace(_np_cov(zb)) / zb.shape[1] * np.eye(zb.shape[1])
    )
    ua = (za - za.mean(0)) @ wa_
    ub = (zb - zb.mean(0)) @ wb_
    cka = np.linalg.norm(ua.T @ ub) ** 2 / (np.linalg.norm(ua.T @ ua) * np.linalg.norm(ub.T @ ub))
    return 1 - cka


def test_objectives_match_numpy():
    za, zb = _pair()
    assert F.spectral_balance_loss(_t(za)).item() == pytest.approx(_np_spec(za), rel=1e-10)
    assert F.spectral_balance_loss(_t(za), a=0.3).item() == pytest.approx(
        _np_spec(za, 0.3), rel=1e-10
    )
    assert F.spectral_balance_loss(_t(za), variant="entropy").item() == pytest.approx(
        _np_spec_entropy(za), rel=1e-8
    )
    assert F.feature_orthogonality_loss(_t(za)).item() == pytest.approx(_np_orth(za), rel=1e-10)
    cca = {"consistency": "cca"}
    assert F.subspace_consistency_loss(_t(za), _t(zb), **cca).item() == pytest.approx(
        _np_sub(za, zb), rel=1e-9
    )
    # different widths: canonical correlations over min(d_a, d_b)
    assert F.subspace_consistency_loss(_t(za), _t(zb[:, :5]), **cca).item() == pytest.approx(
        _np_sub(za, zb[:, :5]), rel=1e-9
    )
    # the default "shrunk" form against whitening by eigh + CKA on rows, any g, any widths
    for g in (0.0, 0.5, 3.0, 30.0):
        got = F.subspace_consistency_loss(_t(za), _t(zb), shrinkage=g).item()
        assert got == pytest.approx(_np_sub_shrunk(za, zb, g), rel=1e-9)
    assert F.subspace_consistency_loss(_t(za), _t(zb[:, :5])).item() == pytest.approx(
        _np_sub_shrunk(za, zb[:, :5]), rel=1e-9
    )
    loss, terms = F.dense_feature_loss(
        _t(za), _t(zb), w_spec=0.5, w_orth=2.0, w_sub=3.0, consistency="cca"
    )
    ref = (
        0.5 * (_np_spec(za) + _np_spec(zb))
        + 2.0 * (_np_orth(za) + _np_orth(zb))
        + 3.0 * _np_sub(za, zb)
    )
    assert loss.item() == pytest.approx(ref, rel=1e-10)
    assert terms["subspace_consistency"].item() == pytest.approx(_np_sub(za, zb), rel=1e-9)
    _, terms = F.dense_feature_loss(_t(za), _t(zb))
    assert terms["subspace_consistency"].item() == pytest.approx(_np_sub_shrunk(za, zb), rel=1e-9)
    assert not any(v.requires_grad for v in terms.values())


# ----------------------------------------------------------------- closed forms
def test_spectral_balance_closed_forms():
    n, d = 256, 16
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, d))
    x -= x.mean(0)
    q, _ = np.linalg.qr(x)  # isotropic covariance exactly
    assert F.spectral_balance_loss(_t(q * 7)).item() == pytest.approx(0.0, abs=1e-12)
    assert F.spectral_balance_loss(_t(q), variant="entropy").item() == pytest.approx(0, abs=1e-10)
    # rank one: logdet(I + d e e^T) = log(1 + d) -> L = 1 - log(1 + d) / (d log 2)
    r1 = np.outer(rng.standard_normal(n), rng.standard_normal(d))
    assert F.spectral_balance_loss(_t(r1)).item() == pytest.approx(
        1 - math.log1p(d) / (d * math.log(2)), rel=1e-8
    )
    # bounded in [0, 1) on arbitrary input
    za, _ = _pair()
    assert 0 < F.spectral_balance_loss(_t(za)).item() < 1


def test_subspace_consistency_paired_vs_shuffled():
    za, zb = _pair(n=2000, d=8, noise=0.1)
    paired = F.subspace_consistency_loss(_t(za), _t(zb)).item()
    rng = np.random.default_rng(2)
    shuffled = F.subspace_consistency_loss(_t(za), _t(zb[rng.permutation(len(zb))])).item()
    same = F.subspace_consistency_loss(_t(za), _t(za)).item()
    assert same < 1e-3
    assert paired < 0.3
    assert shuffled > 0.98
    # invariant to rotation, scale and shift of either side (the eps ridge scales with tr C)
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    assert F.subspace_consistency_loss(_t(za), _t(3 * zb @ q + 4)).item() == pytest.approx(
        paired, rel=1e-9
    )


def test_feature_orthogonality_closed_forms():
    n, d = 256, 8
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, d))
    x -= x.mean(0)
    q, _ = np.linalg.qr(x)
    z = q * math.sqrt(n - 1) * np.linspace(1, 3, d)  # uncorrelated, every std >= 1
    assert F.feature_orthogonality_loss(_t(z)).item() == pytest.approx(0.0, abs=1e-12)
    # one duplicated column: correlation 1 between two of d columns
    z2 = z.copy()
    z2[:, 1] = z2[:, 0]
    c2 = np.cov(z2, rowvar=False)
    r01 = 1 / (1 + 1e-4 * np.trace(c2) / d / c2[0, 0])  # correlation of the copies, with ridge
    expected = 2 * r01**2 / (d * (d - 1))
    c = torch.tensor(c2)
    assert feature_orthogonality_from_cov(c).item() == pytest.approx(expected, rel=1e-10)


def test_top_k_variant_gradient_uses_detached_axes():
    za, zb = _pair(n=300, d=6)
    k = 3
    a, b = _t(za, True), _t(zb, True)
    F.subspace_consistency_loss(a, b, top_k=k).backward()
    # Reference: the same loss with the top-k axes of window t frozen as constants.
    v = torch.linalg.eigh(torch.tensor(_np_cov(za)))[1][:, -k:]
    a2, b2 = _t(za, True), _t(zb, True)
    F.subspace_consistency_loss(a2 @ v, b2).backward()
    assert torch.allclose(a.grad, a2.grad, rtol=1e-8, atol=1e-12)
    assert torch.allclose(b.grad, b2.grad, rtol=1e-8, atol=1e-12)


# ----------------------------------------------------------------- gradients
@pytest.mark.parametrize(
    "fn",
    [
        lambda a, b: F.spectral_balance_loss(a),
        lambda a, b: F.spectral_balance_loss(a, variant="entropy"),
        lambda a, b: F.feature_orthogonality_loss(a),
        lambda a, b: F.subspace_consistency_loss(a, b),
        lambda a, b: F.dense_feature_loss(a, b)[0],
        lambda a, b: F.dense_feature_loss(a, b, spectral_variant="entropy")[0],
    ],
    ids=["spec", "spec-entropy", "orth", "sub", "dense", "dense-entropy"],
)
def test_gradcheck(fn):
    rng = np.random.default_rng(4)
    a = _t(rng.standard_normal((24, 5)) + 2, True)
    b = _t(rng.standard_normal((24, 5)), True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert torch.autograd.gradcheck(fn, (a, b))


def _degenerate_cases():
    rng = np.random.default_rng(5)
    n_lt_d = rng.standard_normal((10, 32))
    const = np.c_[rng.standard_normal((100, 5)), np.full((100, 3), 4.0)]
    rank1 = np.outer(rng.standard_normal(100), rng.standard_normal(8))
    x = rng.standard_normal((100, 8))
    x -= x.mean(0)
    ties = np.linalg.qr(x)[0]  # every covariance eigenvalue equal
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
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"spectral_variant": "entropy"}, {"top_k": 2}],
    ids=["default", "entropy", "topk"],
)
def test_degenerate_inputs_give_finite_bounded_gradients(case, kwargs):
    za, zb = _degenerate_cases()[case]
    for dtype in (torch.float64, torch.float32):
        a = torch.tensor(za, dtype=dtype, requires_grad=True)
        b = torch.tensor(zb, dtype=dtype, requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            loss, terms = F.dense_feature_loss(a, b, **kwargs)
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(v) for v in terms.values())
        for g in (a.grad, b.grad):
            assert torch.isfinite(g).all()
            # eigh gradients reach 1e12 at ties; ours must stay at the scale of the data
            assert g.abs().max() < 1e3, (case, dtype, g.abs().max())


def test_small_batch_warns_but_stays_finite():
    rng = np.random.default_rng(6)
    a, b = _t(rng.standard_normal((20, 16))), _t(rng.standard_normal((20, 16)))
    with pytest.warns(RuntimeWarning, match="n >= 2d"):
        loss, _ = F.dense_feature_loss(a, b)
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    ("za", "zb", "match"),
    [
        (np.full((5, 2), np.nan), np.ones((5, 2)), "NaN or inf"),
        (np.ones((5, 2)), np.ones((6, 2)), "same number of rows"),
        (np.ones((1, 2)), np.ones((1, 2)), "at least 2 rows"),
    ],
)
def test_bad_input(za, zb, match):
    with pytest.raises(ValueError, match=match):
        F.dense_feature_loss(_t(za), _t(zb))


def test_bad_arguments():
    z = torch.randn(50, 4)
    with pytest.raises(ValueError, match=r"integer|floating"):
        F.spectral_balance_loss(torch.ones(5, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="variant"):
        F.spectral_balance_loss(z, variant="nope")
    with pytest.raises(ValueError, match="top_k"):
        F.subspace_consistency_loss(z, z, top_k=9)


def test_low_precision_inputs():
    za, zb = _pair(n=512, d=16)
    ref, _ = F.dense_feature_loss(_t(za), _t(zb))
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.tensor(za, dtype=dtype, requires_grad=True)
        loss, _ = F.dense_feature_loss(a, torch.tensor(zb, dtype=dtype))
        assert loss.dtype == torch.float32  # bf16 is upcast for the covariance
        loss.backward()
        assert a.grad.dtype == dtype
        tol = 1e-5 if dtype == torch.float32 else 3e-2
        assert loss.item() == pytest.approx(ref.item(), rel=tol)


def test_autocast_does_not_lower_the_precision_of_the_statistics():
    za, zb = _pair(n=512, d=16)
    a = torch.tensor(za, dtype=torch.float32)
    b = torch.tensor(zb, dtype=torch.float32)
    ref, _ = F.dense_feature_loss(a, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = F.dense_feature_loss(a, b)
        vic = F.vicreg_loss(a, b)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    assert vic.item() == pytest.approx(F.vicreg_loss(a, b).item(), rel=1e-6)


def test_zero_weight_skips_term():
    za, zb = _pair()
    loss, terms = F.dense_feature_loss(_t(za), _t(zb), w_orth=0.0)
    assert "feature_orthogonality" not in terms
    assert loss.item() == pytest.approx(
        terms["spectral_balance"].item() + terms["subspace_consistency"].item(), rel=1e-12
    )


# ----------------------------------------------------------------- each term changes the optimum
def _train(weights, init, steps=400, seed=0):
    """Fit a linear encoder on two noisy windows of a shared 6-dim signal in 16 dims."""
    g = torch.Generator().manual_seed(seed)
    n, d_in, d = 1024, 16, 6
    shared = torch.randn(n, 6, generator=g) @ torch.randn(6, d_in, generator=g) * 0.5
    xa = shared + 0.8 * torch.randn(n, d_in, generator=g)
    xb = shared + 0.8 * torch.randn(n, d_in, generator=g)
    # unequal initial column scales: only the terms themselves can fix scale and balance
    w = (init * torch.randn(d_in, d, generator=g) * torch.linspace(0.2, 2, d)).requires_grad_()
    opt = torch.optim.Adam([w], lr=0.01)
    for _ in range(steps):
        loss, _ = F.dense_feature_loss(xa @ w, xb @ w, **weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        za, zb = xa @ w, xb @ w
        return {
            "spec": F.spectral_balance_loss(za).item(),
            "sub": F.subspace_consistency_loss(za, zb).item(),
            "min_std": za.std(0).min().item(),
        }


def test_each_term_changes_the_optimum():
    full = _train({}, init=0.05)
    # without the paired term nothing learns which directions the windows share
    assert _train({"w_sub": 0.0}, init=0.05)["sub"] > full["sub"] + 0.1
    # without spectral balance, variances above the hinge stay unequal (with the hinge binding
    # at std = 1 everywhere, orthogonality alone would make C isotropic: the terms overlap there)
    assert _train({"w_spec": 0.0}, init=0.05)["spec"] > 5 * full["spec"]
    # spectral balance and subspace consistency are scale-free: only the variance hinge of the
    # orthogonality term lifts a small initial scale to std >= 1
    assert _train({}, init=0.005)["min_std"] > 0.95
    assert _train({"w_orth": 0.0}, init=0.005)["min_std"] < 0.6
