"""Tests of the baseline losses against transcriptions of the official implementations.

The references below are written the long way, from the papers / official repositories, and share
no code with ``densefeat.functional.baselines`` (which works from moments only):

- VICReg: ``facebookresearch/vicreg`` ``main_vicreg.py`` ``VICReg.forward`` (torch.var,
  F.mse_loss, off_diagonal), single process.
- Barlow Twins: ``facebookresearch/barlowtwins`` ``main.py`` ``BarlowTwins.forward`` with
  ``nn.BatchNorm1d(affine=False)`` in train mode.
- NT-Xent: Chen et al. 2020 eq. 1 with explicit loops over anchors and candidates.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from densefeat.functional.baselines import (
    barlow_twins_loss,
    barlow_twins_loss_from_moments,
    info_nce_loss,
    vicreg_loss,
    vicreg_loss_from_moments,
    vicreg_terms_from_moments,
)
from densefeat.functional.moments import moments

F64 = torch.float64

# --------------------------------------------------------------------------------------------
# reference implementations
# --------------------------------------------------------------------------------------------


def ref_off_diagonal(x: torch.Tensor) -> torch.Tensor:
    # verbatim from facebookresearch/vicreg and facebookresearch/barlowtwins
    n, m = x.shape
    assert n == m
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def ref_vicreg(x, y, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, eps=1e-4):
    # facebookresearch/vicreg main_vicreg.py VICReg.forward, without the projector and gather.
    batch_size, num_features = x.shape
    repr_loss = F.mse_loss(x, y)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + eps)
    std_y = torch.sqrt(y.var(dim=0) + eps)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    cov_x = (x.T @ x) / (batch_size - 1)
    cov_y = (y.T @ y) / (batch_size - 1)
    cov_loss = ref_off_diagonal(cov_x).pow(2).sum().div(num_features) + ref_off_diagonal(cov_y).pow(
        2
    ).sum().div(num_features)
    loss = sim_coeff * repr_loss + std_coeff * std_loss + cov_coeff * cov_loss
    return loss, {"invariance": repr_loss, "variance": std_loss, "covariance": cov_loss}


def ref_barlow(z1, z2, lambd=5e-3, bn_eps=1e-5):
    # facebookresearch/barlowtwins main.py BarlowTwins.forward, single process.
    batch_size, d = z1.shape
    bn = torch.nn.BatchNorm1d(d, affine=False, eps=bn_eps, dtype=z1.dtype)
    bn.train()
    c = bn(z1).T @ bn(z2)
    c = c / batch_size
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = ref_off_diagonal(c).pow(2).sum()
    return on_diag + lambd * off_diag


def ref_nt_xent(za, zb, temperature=0.1):
    # Chen et al. 2020 eq. 1:
    #   l(i, j) = -log exp(sim(z_i, z_j)/t) / sum_{k != i} exp(sim(z_i, z_k)/t),
    # averaged over all 2N anchors, sim = cosine similarity. One explicit pass per anchor, the
    # self term dropped by index (no masking tricks), no log-sum-exp stabilisation.
    z = torch.cat([za, zb])
    two_n = z.shape[0]
    n = two_n // 2
    norms = torch.sqrt((z * z).sum(1))
    total = z.new_zeros(())
    for i in range(two_n):
        pos = (i + n) % two_n
        cos = (z @ z[i]) / (norms * norms[i])  # sim(z_i, z_k) for every k
        others = [k for k in range(two_n) if k != i]
        denom = torch.exp(cos[others] / temperature).sum()
        total = total - torch.log(torch.exp(cos[pos] / temperature) / denom)
    return total / two_n


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def make_pair(n, d, seed=0, dtype=F64, offset=3.0, corr=0.7):
    """Correlated views with a mean offset and per-column scales straddling 1 (hinge active)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=g, dtype=F64)
    scale = torch.linspace(0.3, 2.0, d, dtype=F64)
    za = base * scale + offset
    noise = torch.randn(n, d, generator=g, dtype=F64)
    zb = (corr * base + math.sqrt(1 - corr**2) * noise) * scale.flip(0) - 0.5 * offset
    return za.to(dtype), zb.to(dtype)


SHAPES = [(64, 8), (16, 32), (5, 2), (3, 3), (200, 16), (2, 4)]

LOSSES = {
    "vicreg": (vicreg_loss, lambda a, b: ref_vicreg(a, b)[0]),
    "barlow": (barlow_twins_loss, ref_barlow),
    "infonce": (info_nce_loss, ref_nt_xent),
}


def _leaf(*ts):
    return [t.detach().clone().requires_grad_(True) for t in ts]


# --------------------------------------------------------------------------------------------
# parity with the references: values and gradients
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(LOSSES))
def test_matches_reference_value_and_grad(name, shape):
    ours, ref = LOSSES[name]
    n, d = shape
    za, zb = make_pair(n, d, seed=n * 100 + d)
    a1, b1 = _leaf(za, zb)
    a2, b2 = _leaf(za, zb)
    got = ours(a1, b1)
    want = ref(a2, b2)
    assert got.ndim == 0 and got.dtype == F64
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    got.backward()
    want.backward()
    torch.testing.assert_close(a1.grad, a2.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(b1.grad, b2.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_vicreg_terms_match_reference(shape):
    za, zb = make_pair(*shape, seed=7)
    got = vicreg_terms_from_moments(moments(za, zb))
    _, want = ref_vicreg(za, zb)
    assert set(got) == {"invariance", "variance", "covariance"}
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-10, atol=1e-13)


def test_vicreg_variance_hinge_is_exercised():
    # The parity data must have columns on both sides of std = 1, or the hinge goes untested.
    za, zb = make_pair(64, 8)
    t = vicreg_terms_from_moments(moments(za, zb))
    assert t["variance"] > 0
    sd = za.std(0)
    assert (sd < 1).any() and (sd > 1).any()


@pytest.mark.parametrize(
    "coeffs", [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (2.0, 3.0, 5.0)]
)
@pytest.mark.parametrize("eps", [1e-4, 1e-2])
def test_vicreg_coefficients_and_eps(coeffs, eps):
    za, zb = make_pair(32, 6, seed=3)
    got = vicreg_loss(za, zb, *coeffs, eps=eps)
    want, _ = ref_vicreg(za, zb, *coeffs, eps=eps)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("lambd", [0.0, 5e-3, 1.0])
@pytest.mark.parametrize("bn_eps", [1e-5, 1e-1])
def test_barlow_lambda_and_eps(lambd, bn_eps):
    za, zb = make_pair(32, 6, seed=4)
    got = barlow_twins_loss(za, zb, lambd=lambd, bn_eps=bn_eps)
    want = ref_barlow(za, zb, lambd=lambd, bn_eps=bn_eps)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5, 2.0])
def test_infonce_temperatures(temperature):
    za, zb = make_pair(8, 5, seed=5)
    got = info_nce_loss(za, zb, temperature=temperature)
    want = ref_nt_xent(za, zb, temperature=temperature)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_from_moments_equals_plain_function():
    za, zb = make_pair(40, 7, seed=9)
    m = moments(za, zb)
    assert vicreg_loss_from_moments(m) == vicreg_loss(za, zb)
    assert barlow_twins_loss_from_moments(m) == barlow_twins_loss(za, zb)


def test_from_moments_uses_only_global_statistics():
    # A distributed caller hands moments of the global batch while centred_a/b hold only its
    # own rows: the loss must not read the per-row tensors. Replace them by garbage and check.
    za, zb = make_pair(40, 7, seed=10)
    m = moments(za, zb)
    fake = type(m)(
        n=m.n, mean_a=m.mean_a, cov_a=m.cov_a, centred_a=za[:3] * 0 + float("nan"),
        mean_b=m.mean_b, cov_b=m.cov_b, cov_ab=m.cov_ab, centred_b=zb[:3] * 0 + float("nan"),
    )  # fmt: skip
    assert vicreg_loss_from_moments(fake) == vicreg_loss_from_moments(m)
    assert barlow_twins_loss_from_moments(fake) == barlow_twins_loss_from_moments(m)


@pytest.mark.parametrize("name", list(LOSSES))
def test_gradcheck(name):
    fn = LOSSES[name][0]
    za, zb = make_pair(5, 3, seed=11)
    a, b = _leaf(za, zb)
    assert torch.autograd.gradcheck(fn, (a, b), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_vicreg_all_terms_active():
    # Unit-scale data so that every std sits below 1 (hinge active everywhere).
    za, zb = make_pair(6, 3, seed=12)
    a, b = _leaf(za / 4, zb / 4)
    assert torch.autograd.gradcheck(vicreg_loss, (a, b), eps=1e-6, atol=1e-7, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# closed forms
# --------------------------------------------------------------------------------------------


def whitened(n, d, seed=0, ddof=0):
    """Zero-mean Z with orthogonal columns and Z^T Z / (n - ddof) = I."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    x = x - x.mean(0)
    q, _ = torch.linalg.qr(x)  # columns span a subspace orthogonal to the ones vector
    return q * math.sqrt(n - ddof)


@pytest.mark.parametrize("shape", [(50, 8), (9, 8), (300, 32)])
def test_barlow_zero_for_identical_whitened_views(shape):
    z = whitened(*shape)
    torch.testing.assert_close(z.T @ z / shape[0], torch.eye(shape[1], dtype=F64))
    torch.testing.assert_close(z.mean(0), torch.zeros(shape[1], dtype=F64), atol=1e-12, rtol=0)
    assert barlow_twins_loss(z, z.clone(), bn_eps=0.0) < 1e-24
    # With the default eps, c = I / (1 + eps) exactly: loss = d * (eps / (1 + eps))^2.
    eps = 1e-5
    want = shape[1] * (eps / (1 + eps)) ** 2
    assert barlow_twins_loss(z, z.clone()) == pytest.approx(want, rel=1e-6)


def test_barlow_penalises_a_permuted_view():
    z = whitened(50, 8)
    # Same columns in another order: c is a permutation matrix, so diag(c) = 0 for moved
    # features and each moved feature contributes 1 + lambd.
    perm = torch.tensor([1, 0, 2, 3, 4, 5, 6, 7])
    got = barlow_twins_loss(z, z[:, perm], bn_eps=0.0)
    assert got.item() == pytest.approx(2 * (1 + 5e-3), rel=1e-10)


def test_vicreg_invariance_zero_for_identical_views():
    za, _ = make_pair(37, 9, seed=13)
    t = vicreg_terms_from_moments(moments(za, za.clone()))
    assert abs(t["invariance"].item()) < 1e-12
    # ... and a pure mean shift costs exactly ||shift||^2 / d.
    shift = torch.linspace(-1, 1, 9, dtype=F64)
    t = vicreg_terms_from_moments(moments(za, za + shift))
    assert t["invariance"].item() == pytest.approx(shift.pow(2).mean().item(), rel=1e-10)


def test_vicreg_zero_for_identical_whitened_views():
    # Unbiased covariance I: std = sqrt(1 + eps) > 1 (no hinge), no off-diagonal covariance.
    z = whitened(40, 6, ddof=1)
    t = vicreg_terms_from_moments(moments(z, z.clone()))
    for key, value in t.items():
        assert abs(value.item()) < 1e-12, key
    assert abs(vicreg_loss(z, z.clone()).item()) < 1e-10


def test_vicreg_collapse_costs_full_hinge():
    # Constant embeddings: std = sqrt(eps) = 0.01, hinge 0.99 per view, averaged over views.
    z = torch.full((10, 4), 2.0, dtype=F64)
    t = vicreg_terms_from_moments(moments(z, z.clone()))
    assert t["variance"].item() == pytest.approx(1 - math.sqrt(1e-4), rel=1e-12)
    assert t["covariance"].item() == 0.0


@pytest.mark.parametrize("temperature", [0.5, 0.1, 0.01])
def test_infonce_separated_identical_views(temperature):
    # Orthogonal rows, identical views: positive logit 1/t, 2N-2 negatives at 0, so
    # loss = log(1 + (2N - 2) exp(-1/t)) -> 0 as t -> 0.
    n, d = 4, 8
    z = 3.0 * torch.eye(d, dtype=F64)[:n]
    got = info_nce_loss(z, z.clone(), temperature=temperature)
    want = math.log1p((2 * n - 2) * math.exp(-1 / temperature))
    # abs: at t = 0.01 the exact value is 2e-43, below float64's resolution of logsumexp ~ 100.
    assert got.item() == pytest.approx(want, rel=1e-10, abs=1e-14)
    if temperature == 0.01:
        assert 0.0 <= got.item() < 1e-14


def test_infonce_uninformative_views_give_log_2n_minus_1():
    n = 16
    za, zb = make_pair(n, 6, seed=14)
    # Huge temperature: every logit ~ 0, the loss is the entropy of a uniform choice among 2N-1.
    got = info_nce_loss(za, zb, temperature=1e8)
    assert got.item() == pytest.approx(math.log(2 * n - 1), abs=1e-7)
    # Independent high-dimensional views at t = 1: cosines ~ 1/sqrt(d), near chance.
    g = torch.Generator().manual_seed(15)
    a = torch.randn(n, 4096, generator=g, dtype=F64)
    b = torch.randn(n, 4096, generator=g, dtype=F64)
    assert info_nce_loss(a, b, temperature=1.0).item() == pytest.approx(
        math.log(2 * n - 1), abs=0.05
    )


def test_infonce_is_symmetric_in_views():
    za, zb = make_pair(12, 5, seed=16)
    torch.testing.assert_close(info_nce_loss(za, zb), info_nce_loss(zb, za), rtol=1e-12, atol=0)


# --------------------------------------------------------------------------------------------
# degenerate inputs: finite loss, finite and bounded gradients
# --------------------------------------------------------------------------------------------


def _degenerate(kind, dtype):
    g = torch.Generator().manual_seed(17)
    if kind == "constant_columns":
        za, zb = make_pair(32, 8, seed=18)
        za[:, [1, 4]] = 5.0
        zb[:, [0, 4, 7]] = -2.0
    elif kind == "rank_one":
        u = torch.randn(32, 1, generator=g, dtype=F64)
        za = u @ torch.randn(1, 8, generator=g, dtype=F64) + 1.0
        zb = 2 * u @ torch.randn(1, 8, generator=g, dtype=F64)
    elif kind == "n_less_than_d":
        za, zb = make_pair(4, 64, seed=19)
    elif kind == "duplicated_rows":
        za, zb = make_pair(6, 8, seed=20)
        idx = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3, 4, 5, 5, 5])
        za, zb = za[idx], zb[idx]
    elif kind == "all_rows_identical":
        row = torch.randn(1, 8, generator=g, dtype=F64)
        za, zb = row.repeat(10, 1), (2 * row).repeat(10, 1)
    elif kind == "two_rows":
        za, zb = make_pair(2, 8, seed=21)
    else:  # pragma: no cover
        raise AssertionError(kind)
    return za.to(dtype), zb.to(dtype)


DEGENERATE = [
    "constant_columns",
    "rank_one",
    "n_less_than_d",
    "duplicated_rows",
    "all_rows_identical",
    "two_rows",
]


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("kind", DEGENERATE)
@pytest.mark.parametrize("name", list(LOSSES))
def test_degenerate_inputs_finite_and_bounded(name, kind, dtype):
    fn = LOSSES[name][0]
    za, zb = _degenerate(kind, dtype)
    a, b = _leaf(za, zb)
    loss = fn(a, b)
    assert torch.isfinite(loss)
    loss.backward()
    for grad in (a.grad, b.grad):
        assert torch.isfinite(grad).all()
        assert grad.abs().max() < 1e6


@pytest.mark.parametrize("kind", DEGENERATE)
@pytest.mark.parametrize("name", ["vicreg", "barlow"])
def test_degenerate_inputs_match_reference(name, kind):
    # The moments route and the official formulation agree on degenerate batches too.
    ours, ref = LOSSES[name]
    za, zb = _degenerate(kind, F64)
    a1, b1 = _leaf(za, zb)
    a2, b2 = _leaf(za, zb)
    got, want = ours(a1, b1), ref(a2, b2)
    torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)
    got.backward()
    want.backward()
    torch.testing.assert_close(a1.grad, a2.grad, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(b1.grad, b2.grad, rtol=1e-6, atol=1e-8)


def test_infonce_zero_row_is_finite():
    za, zb = make_pair(6, 4, seed=22)
    za[2] = 0.0
    a, b = _leaf(za, zb)
    loss = info_nce_loss(a, b)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    # The zero row's unit vector is 0: all its logits are 0, so its anchor term is log(2N - 1).
    z = torch.cat([za, zb])
    u = z / z.norm(dim=1, keepdim=True).clamp_min(1e-8)
    logits = (u @ u.T / 0.1).fill_diagonal_(float("-inf"))
    assert -torch.log_softmax(logits[2], 0)[8].item() == pytest.approx(math.log(11), rel=1e-12)


def test_infonce_tiny_temperature_has_finite_gradient():
    za, zb = make_pair(8, 5, seed=23)
    a, b = _leaf(za, zb)
    loss = info_nce_loss(a, b, temperature=1e-3)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------

ALL_FNS = [vicreg_loss, barlow_twins_loss, info_nce_loss]


@pytest.mark.parametrize("fn", ALL_FNS)
def test_nan_rows_rejected(fn):
    za, zb = make_pair(8, 4)
    za[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"za: 1 row\(s\) contain NaN"):
        fn(za, zb)
    za, zb = make_pair(8, 4)
    zb[5, 0] = float("inf")
    with pytest.raises(ValueError, match=r"zb: .*NaN or inf"):
        fn(za, zb)


@pytest.mark.parametrize("fn", ALL_FNS)
def test_mismatched_rows_rejected(fn):
    za, zb = make_pair(8, 4)
    with pytest.raises(ValueError, match="same number of rows"):
        fn(za, zb[:7])


@pytest.mark.parametrize("fn", ALL_FNS)
def test_mismatched_d_rejected(fn):
    za, zb = make_pair(8, 4)
    with pytest.raises(ValueError, match="same feature dimension, got 4 and 3"):
        fn(za, zb[:, :3])


@pytest.mark.parametrize("fn", ALL_FNS)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_dtype_rejected(fn, dtype):
    za, zb = make_pair(8, 4)
    with pytest.raises(ValueError, match="expected a floating-point matrix"):
        fn(za.to(dtype), zb)
    with pytest.raises(ValueError, match="zb: expected a floating-point matrix"):
        fn(za, zb.to(dtype))


@pytest.mark.parametrize("fn", ALL_FNS)
def test_wrong_shape_and_too_few_rows_rejected(fn):
    za, zb = make_pair(8, 4)
    with pytest.raises(ValueError, match="2-D"):
        fn(za[0], zb[0])
    with pytest.raises(ValueError, match="at least 2 rows"):
        fn(za[:1], zb[:1])


@pytest.mark.parametrize("temperature", [0.0, -0.1, float("nan"), float("inf")])
def test_infonce_bad_temperature(temperature):
    za, zb = make_pair(8, 4)
    with pytest.raises(ValueError, match="temperature"):
        info_nce_loss(za, zb, temperature=temperature)


def test_negative_eps_rejected():
    za, zb = make_pair(8, 4)
    with pytest.raises(ValueError, match="eps"):
        vicreg_loss(za, zb, eps=-1e-4)
    with pytest.raises(ValueError, match="bn_eps"):
        barlow_twins_loss(za, zb, bn_eps=-1.0)


def test_from_moments_needs_paired_equal_d():
    za, zb = make_pair(8, 4)
    single = moments(za)
    for fn in (vicreg_loss_from_moments, barlow_twins_loss_from_moments):
        with pytest.raises(ValueError, match="two paired views"):
            fn(single)
        with pytest.raises(ValueError, match="same feature dimension"):
            fn(moments(za, zb[:, :3]))


# --------------------------------------------------------------------------------------------
# precision
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", list(LOSSES))
def test_low_precision_inputs(name, dtype):
    fn = LOSSES[name][0]
    za, zb = make_pair(64, 16, seed=24)
    za_lo, zb_lo = za.to(dtype), zb.to(dtype)
    a, b = _leaf(za_lo, zb_lo)
    got = fn(a, b)
    assert got.dtype == torch.float32 and got.ndim == 0
    got.backward()
    assert a.grad.dtype == dtype
    assert torch.isfinite(a.grad.float()).all() and torch.isfinite(b.grad.float()).all()
    # Same (rounded) inputs in float64: only the compute precision differs (float32 for both).
    exact_on_rounded = fn(za_lo.to(F64), zb_lo.to(F64))
    assert got.item() == pytest.approx(exact_on_rounded.item(), rel=1e-4)
    # Against the unrounded float64 inputs, bf16's 8-bit mantissa dominates: a loose tolerance.
    exact = fn(za, zb)
    assert got.item() == pytest.approx(exact.item(), rel=5e-2 if dtype == torch.bfloat16 else 1e-4)


def test_mixed_precision_views_promote():
    za, zb = make_pair(16, 4, seed=25)
    got = vicreg_loss(za.float(), zb)  # the float64 view must not be rounded to float32
    assert got.dtype == F64
    torch.testing.assert_close(got, vicreg_loss(za.float().double(), zb), rtol=1e-12, atol=0)


def test_large_offset_keeps_precision_float32():
    # Two-pass moments: a mean offset of 50 must not wreck the float32 loss.
    za, zb = make_pair(256, 8, seed=26, offset=50.0)
    for fn in (vicreg_loss, barlow_twins_loss):
        got = fn(za.float(), zb.float()).item()
        want = fn(za.float().double(), zb.float().double()).item()
        assert got == pytest.approx(want, rel=1e-4)
