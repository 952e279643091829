"""Geometry metrics against NumPy/SciPy, closed forms, invariances and degenerate input."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import scipy.linalg
import torch

import densefeat.functional as F

RTOL = 1e-8


def _wellcond(n: int, d: int, seed: int = 0, offset: float = 3.0) -> np.ndarray:
    """A well-conditioned matrix with a decaying but bounded spectrum and a mean offset."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    scales = np.linspace(1.0, 0.2, d)
    return rng.standard_normal((n, d)) @ (q * scales) + offset


# ----------------------------------------------------------------- NumPy reference (independent)
def _np_metrics(z: np.ndarray) -> dict[str, float]:
    n, d = z.shape
    zc = z - z.mean(0)
    s = np.linalg.svd(zc, compute_uv=False)
    lam = np.linalg.eigvalsh(zc.T @ zc / (n - 1))[::-1].clip(min=0)
    q = s / s.sum()
    p = lam / lam.sum()
    su = np.linalg.svd(z, compute_uv=False)
    pu = su / su.sum() + 1e-7
    ent = lambda x: -np.sum(x[x > 0] * np.log(x[x > 0]))  # noqa: E731
    er = math.exp(ent(q))
    k = max(1, round(er))
    m = min(n - 1, d)
    return {
        "effective_rank": er,
        "effective_rank_eig": math.exp(ent(p)),
        "spectral_entropy": ent(p),
        "rankme": math.exp(-np.sum(pu * np.log(pu))),
        "participation_ratio": 1.0 / np.sum(p**2),
        "stable_rank": np.sum(s**2) / s[0] ** 2,
        "numerical_rank": int(np.linalg.matrix_rank(zc)),
        "condition_number": s[0] / s[m - 1],
        "condition_number_k": s[0] / s[k - 1],
    }


@pytest.mark.parametrize("shape", [(300, 20), (64, 64), (40, 100)])
def test_metrics_match_numpy(shape):
    z = _wellcond(*shape)
    ref = _np_metrics(z)
    got = F.geometry(z)
    for key, val in ref.items():
        assert got[key] == pytest.approx(val, rel=RTOL), key
    # the function API agrees with geometry()
    assert F.effective_rank(z) == got["effective_rank"]
    assert F.rankme(torch.from_numpy(z)) == pytest.approx(ref["rankme"], rel=RTOL)
    assert F.numerical_rank(z) == ref["numerical_rank"]


def test_eigenvalues_descending_and_match_numpy():
    z = _wellcond(200, 16)
    lam = np.array(F.geometry(z)["eigenvalues"])
    ref = np.linalg.eigvalsh(np.cov(z, rowvar=False))[::-1]
    np.testing.assert_allclose(lam, ref, rtol=1e-10)
    assert np.all(np.diff(lam) <= 0)


def test_alpha_req_recovers_power_law():
    # Spectrum lambda_r = r^-1.5 exactly: construct Z with those covariance eigenvalues.
    n, d, alpha = 2000, 200, 1.5
    rng = np.random.default_rng(1)
    u, _ = np.linalg.qr(rng.standard_normal((n, d)))
    u -= u.mean(0)
    u, _ = np.linalg.qr(u)  # orthonormal and centred columns (up to rounding)
    lam = np.arange(1, d + 1, dtype=float) ** -alpha
    z = u * np.sqrt(lam * (n - 1))
    res = F.alpha_req(z)
    assert res.alpha == pytest.approx(alpha, rel=1e-6)
    assert res.r2 == pytest.approx(1.0, abs=1e-9)
    assert (res.first_rank, res.last_rank) == (5, 99)
    assert res.reason is None


def test_alpha_req_matches_weighted_least_squares():
    z = _wellcond(500, 150, seed=3)
    lam = np.linalg.eigvalsh(np.cov(z, rowvar=False))[::-1]
    r = np.arange(5, 100, dtype=float)
    slope, _ = np.polyfit(np.log(r), np.log(lam[4:99]), 1, w=np.sqrt(1 / r))
    assert F.alpha_req(z).alpha == pytest.approx(-slope, rel=1e-8)


# ----------------------------------------------------------------- closed forms and invariances
def test_orthonormal_columns_have_full_effective_rank():
    n, d = 256, 32
    rng = np.random.default_rng(2)
    x = rng.standard_normal((n, d))
    x -= x.mean(0)
    q, _ = np.linalg.qr(x)  # centred, orthonormal columns: all singular values equal
    for name in ("effective_rank", "effective_rank_eig", "participation_ratio", "stable_rank"):
        assert getattr(F, name)(q) == pytest.approx(d, rel=1e-10), name
    assert F.condition_number(q) == pytest.approx(1.0, rel=1e-10)
    assert F.spectral_entropy(q) == pytest.approx(math.log(d), rel=1e-10)


def test_rank_one_matrix():
    rng = np.random.default_rng(3)
    z = np.outer(rng.standard_normal(100), rng.standard_normal(8))
    g = F.geometry(z)
    for name in ("effective_rank", "effective_rank_eig", "participation_ratio", "stable_rank"):
        assert g[name] == pytest.approx(1.0, abs=1e-6), name
    assert g["numerical_rank"] == 1
    assert g["condition_number"] == math.inf
    assert "rank-deficient" in g["condition_number_reason"]
    assert g["alpha_req"] == math.inf and g["alpha_req_reason"]
    assert math.isfinite(g["condition_number_k"])


def test_rotation_and_translation_invariance():
    z = _wellcond(150, 12, seed=4)
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    moved = z @ q + 100.0
    a, b = F.geometry(z), F.geometry(moved)
    for key in (
        "effective_rank",
        "effective_rank_eig",
        "stable_rank",
        "condition_number",
        "participation_ratio",
        "alpha_req",
    ):
        assert a[key] == pytest.approx(b[key], rel=1e-8), key


def test_scale_invariance_of_ranks():
    z = _wellcond(150, 12)
    assert F.effective_rank(z * 1e3) == pytest.approx(F.effective_rank(z), rel=1e-10)


def test_metric_names_are_distinct_on_one_spectrum():
    # docs/design.md: the rank measures differ a lot on a decaying spectrum; none may alias another.
    n, d = 1000, 256
    rng = np.random.default_rng(6)
    z = rng.standard_normal((n, d)) * np.arange(1, d + 1) ** -1.0
    g = F.geometry(z)
    assert g["effective_rank"] > g["effective_rank_eig"] > g["participation_ratio"]


# ----------------------------------------------------------------- degenerate input
@pytest.mark.parametrize(
    "make",
    [
        lambda r: r.standard_normal((10, 50)),  # n < d
        lambda r: np.c_[r.standard_normal((60, 5)), np.full((60, 3), 7.0)],  # constant columns
        lambda r: np.outer(r.standard_normal(40), r.standard_normal(6)),  # rank one
        lambda r: np.repeat(r.standard_normal((1, 6)), 30, 0) + np.eye(30, 6),  # tied values
        lambda r: np.vstack([r.standard_normal((20, 6))] * 3),  # duplicated rows
    ],
    ids=["n<d", "constant-columns", "rank-1", "ties", "duplicated-rows"],
)
def test_degenerate_inputs_give_finite_or_explained_values(make):
    z = make(np.random.default_rng(7))
    g = F.geometry(z)
    for key, val in g.items():
        if key.endswith("_reason") or key in ("eigenvalues", "alpha_req_ranks"):
            continue
        if val == math.inf:
            reason = g.get(f"{key}_reason")
            assert reason, f"{key} is inf without a reason"
        else:
            assert math.isfinite(val), key
    assert all(math.isfinite(v) for v in g["eigenvalues"])


def test_layernorm_null_direction_gives_inf_condition_number():
    z = torch.nn.functional.layer_norm(torch.randn(500, 32, dtype=torch.float64), (32,))
    assert F.condition_number(z) == math.inf
    assert F.numerical_rank(z) == 31


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.array([[1.0, np.nan], [2.0, 3.0], [4.0, 5.0]]), "NaN or inf"),
        (np.array([[1.0, np.inf], [2.0, 3.0]]), "NaN or inf"),
        (np.ones((1, 4)), "at least 2 rows"),
        (np.ones((5, 0)), "feature dimension is empty"),
        (np.ones((5, 3), dtype=np.int64), "floating-point"),
        (np.ones((5, 3), dtype=np.complex128), "complex"),
        (np.ones(5), "2-D"),
        (np.full((5, 3), 2.0), "zero-variance"),
    ],
)
def test_bad_input_raises(bad, match):
    with pytest.raises(ValueError, match=match):
        F.geometry(bad)


# ----------------------------------------------------------------- pair metrics
def _planted_angles(theta, extra_a=0, n=50, seed=16):
    """Orthonormal A (p = len(theta) + extra_a columns) and B (len(theta) columns) whose
    principal angles are exactly ``theta`` (up to the rounding of B's entries, ~1e-16)."""
    q_count = len(theta)
    p = q_count + extra_a
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, p + q_count)))
    a = q[:, :p]
    b = np.cos(theta) * q[:, :q_count] + np.sin(theta) * q[:, p : p + q_count]
    return a, b


def test_principal_angles_closed_form_small_and_large_mixed():
    # Issue 17, input 1: one angle near 0 and one near pi/2. Each must come from the formula
    # that is accurate for it (arcsin near 0, arccos near pi/2): errors ~1e-17, where taking
    # the formula by the reversed mask (scipy's subspace_angles) errs by 4e-11 and 1e-9.
    t, s = 1e-6, math.pi / 2 - 1e-9
    a, b = _planted_angles(np.array([t, s]))
    got = F.principal_angles(a, b).numpy()
    np.testing.assert_allclose(got, [s, t], rtol=0, atol=1e-15)
    assert abs(got[1] - t) / t < 1e-9


@pytest.mark.parametrize("extra_a", [0, 3])
def test_principal_angles_closed_form_across_pi_over_4(extra_a):
    theta = np.array([1e-9, 1e-6, 0.3, math.pi / 4 - 1e-3, math.pi / 4 + 1e-3, 1.2, 1.5707963])
    a, b = _planted_angles(theta, extra_a)
    want = np.sort(theta)[::-1]
    # the column space, not the basis, matters: mix the columns with a well-conditioned map
    mix = np.eye(b.shape[1]) + 0.1 * np.random.default_rng(17).standard_normal((b.shape[1],) * 2)
    for x, y in [(a, b), (b, a), (a * 3.0, b @ mix)]:
        np.testing.assert_allclose(F.principal_angles(x, y).numpy(), want, rtol=0, atol=1e-14)


def test_principal_angles_shared_subspace_gives_exact_zeros():
    # Issue 17, input 2: span(b) contains span(a[:, :3]). The three shared directions have
    # angle 0 exactly (previously [1.5e-8, 0, 0] from arccos). The other three are the angles
    # between the parts of a[:, 3:] and b[:, 3:] orthogonal to the shared span (both spaces
    # contain it), computed here by a separate route.
    rng = np.random.default_rng(18)
    a = rng.standard_normal((100, 6))
    shared = a[:, :3] @ rng.standard_normal((3, 3))
    b = np.c_[shared, rng.standard_normal((100, 3))]
    got = F.principal_angles(a, b).numpy()
    assert np.all(got[3:] < 1e-14), got[3:]
    s_basis = np.linalg.qr(a[:, :3])[0]
    rest_a = np.linalg.qr(a[:, 3:] - s_basis @ (s_basis.T @ a[:, 3:]))[0]
    rest_b = np.linalg.qr(b[:, 3:] - s_basis @ (s_basis.T @ b[:, 3:]))[0]
    cos = np.linalg.svd(rest_a.T @ rest_b, compute_uv=False)
    assert cos.max() ** 2 < 0.5  # all three beyond pi/4: arccos is accurate for them
    np.testing.assert_allclose(got[:3], np.arccos(cos[::-1]), rtol=0, atol=1e-13)


def test_principal_angles_match_scipy_where_scipy_is_right():
    # scipy.linalg.subspace_angles applies its cos^2 >= 1/2 test to the reversed list of
    # angles (issue 17). That is harmless exactly when every angle lies on the same side of
    # pi/4: all from arccos (random subspaces of R^60) or all from arcsin (nearly identical
    # subspaces). Only such cases are compared with scipy; mixed ones use closed forms above.
    rng = np.random.default_rng(8)
    for p, q in [(7, 4), (3, 9), (5, 5)]:
        a, b = rng.standard_normal((60, p)), rng.standard_normal((60, q))
        got = F.principal_angles(a, b).numpy()
        assert np.all(got > math.pi / 4)
        np.testing.assert_allclose(got, scipy.linalg.subspace_angles(a, b), atol=1e-12)
    # nearly identical subspaces: small angles must be accurate (the arcsin branch)
    a = rng.standard_normal((60, 4))
    b = a + 1e-9 * rng.standard_normal((60, 4))
    got = F.principal_angles(a, b).numpy()
    assert np.all(got < math.pi / 4)
    np.testing.assert_allclose(got, scipy.linalg.subspace_angles(a, b), atol=1e-15)


def _np_sample_subspace_distance(za, zb, k):
    ua = np.linalg.svd(za - za.mean(0), full_matrices=False)[0][:, :k]
    ub = np.linalg.svd(zb - zb.mean(0), full_matrices=False)[0][:, :k]
    return math.sqrt(1 - np.linalg.norm(ua.T @ ub) ** 2 / k)


def test_subspace_distance_matches_svd_definition():
    za = _wellcond(400, 24, seed=9)
    rng = np.random.default_rng(10)
    zb = za @ rng.standard_normal((24, 16)) + 0.5 * rng.standard_normal((400, 16)) - 4
    for k in (1, 5, 16):
        assert F.subspace_distance(za, zb, k) == pytest.approx(
            _np_sample_subspace_distance(za, zb, k), rel=1e-8
        )


def test_subspace_distance_closed_forms():
    za = _wellcond(300, 10)
    rng = np.random.default_rng(11)
    q, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    assert F.subspace_distance(za, za @ q * 3 + 1, k=10) == pytest.approx(0.0, abs=1e-7)
    # unrelated matrices: near the chance level sqrt(1 - k/(n-1))
    n, k = 2000, 8
    vals = [
        F.subspace_distance(rng.standard_normal((n, 8)), rng.standard_normal((n, 8)), k)
        for _ in range(5)
    ]
    assert np.mean(vals) == pytest.approx(F.chance_subspace_distance(n, k), abs=2e-3)


def test_subspace_distance_feature():
    za = _wellcond(300, 10)
    assert F.subspace_distance_feature(za, za[::-1] * 2, k=4) == pytest.approx(0.0, abs=1e-7)
    va = np.linalg.eigh(np.cov(za, rowvar=False))[1][:, ::-1][:, :3]
    zb = _wellcond(200, 10, seed=12)
    vb = np.linalg.eigh(np.cov(zb, rowvar=False))[1][:, ::-1][:, :3]
    ref = math.sqrt(1 - np.linalg.norm(va.T @ vb) ** 2 / 3)
    assert F.subspace_distance_feature(za, zb, k=3) == pytest.approx(ref, rel=1e-8)


def _np_cka(x, y):
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def _np_hsic_unbiased(k, l):  # noqa: E741 - Song et al. (2012), eq. 5, written out on n x n
    n = k.shape[0]
    k, l = k.copy(), l.copy()  # noqa: E741
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one = np.ones(n)
    return (
        np.trace(k @ l)
        + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * one @ k @ l @ one
    ) / (n * (n - 3))


def test_linear_cka_against_references():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((80, 12)) + 5
    y = x @ rng.standard_normal((12, 7)) + rng.standard_normal((80, 7))
    assert F.linear_cka(x, y) == pytest.approx(_np_cka(x, y), rel=1e-10)
    xc, yc = x - x.mean(0), y - y.mean(0)
    kx, ky = xc @ xc.T, yc @ yc.T
    ref = _np_hsic_unbiased(kx, ky) / math.sqrt(
        _np_hsic_unbiased(kx, kx) * _np_hsic_unbiased(ky, ky)
    )
    assert F.linear_cka_debiased(x, y) == pytest.approx(ref, rel=1e-9)
    assert F.linear_cka(x, x) == pytest.approx(1.0, rel=1e-12)
    assert F.linear_cka_debiased(x, x) == pytest.approx(1.0, rel=1e-12)


def test_debiased_cka_removes_the_bias_of_independent_matrices():
    # docs/design.md anchor: independent matrices at n=50, d=384 score ~0.886 with the biased form.
    rng = np.random.default_rng(14)
    biased, debiased = [], []
    for _ in range(10):
        x, y = rng.standard_normal((50, 384)), rng.standard_normal((50, 384))
        biased.append(F.linear_cka(x, y))
        debiased.append(F.linear_cka_debiased(x, y))
    assert np.mean(biased) == pytest.approx(0.886, abs=0.01)
    assert abs(np.mean(debiased)) < 0.02
    assert F.isotropic_reference(50, 384)["linear_cka"] == pytest.approx(np.mean(biased), abs=0.01)


def test_pair_metrics_reject_mismatched_rows():
    with pytest.raises(ValueError, match="same number of rows"):
        F.subspace_distance(np.ones((5, 2)) + np.eye(5, 2), np.ones((6, 2)) + np.eye(6, 2))
    with pytest.raises(ValueError, match="same number of rows"):
        F.linear_cka(np.eye(5, 2), np.eye(6, 2))


# ----------------------------------------------------------------- isotropic reference
def test_isotropic_reference_matches_monte_carlo():
    n, d = 300, 40
    ref = F.isotropic_reference(n, d, draws=16)
    rng = np.random.default_rng(15)
    mc = [F.geometry(rng.standard_normal((n, d))) for _ in range(16)]
    for key in (
        "effective_rank",
        "effective_rank_eig",
        "rankme",
        "participation_ratio",
        "stable_rank",
        "condition_number",
        "alpha_req",
    ):
        mc_mean = np.mean([g[key] for g in mc])
        mc_sd = np.std([g[key] for g in mc]) / math.sqrt(16)
        # two independent means of 16 draws: 5 standard errors is a generous band
        assert abs(ref[key] - mc_mean) < 5 * mc_sd * math.sqrt(2) + 1e-9, key
    assert ref["numerical_rank"] == d


def test_isotropic_reference_condition_number_anchors():
    # docs/design.md: 2.9 at (540, 128) and 18.4 at (470, 384); Marchenko-Pastur edge ratio
    # (1 + sqrt(d/n)) / (1 - sqrt(d/n)) gives 2.90 and 19.8.
    assert F.isotropic_reference(540, 128)["condition_number"] == pytest.approx(2.9, rel=0.05)
    assert F.isotropic_reference(470, 384)["condition_number"] == pytest.approx(18.4, rel=0.1)


def test_isotropic_reference_is_cheap_for_huge_n():
    ref = F.isotropic_reference(10_000_000, 64, draws=2)
    assert ref["effective_rank"] == pytest.approx(64, rel=1e-3)
    assert ref["condition_number"] == pytest.approx(1.0, abs=0.01)


def test_isotropic_reference_condition_number_at_a_given_k():
    ref = F.isotropic_reference(300, 40)
    at = F.isotropic_reference(300, 40, condition_k=10)
    assert at["condition_number_k_at"] == 10
    assert F.isotropic_reference(300, 40, condition_k=1)["condition_number_k"] == 1.0
    # s_1 / s_10 < s_1 / s_40 for any spectrum with distinct values
    assert 1.0 < at["condition_number_k"] < ref["condition_number"]


# Values of the previous implementation (dense SVDs of the bidiagonals, through torch) at the
# same seeds, before the O(d^2) route: the same draws must give the same numbers. Scalars to
# 1e-12; the mean normalised eigenvalues to 2e-7 only, because the previous implementation
# stacked them in float32 (torch.tensor of a list of floats), which was a bug: they are now
# float64 throughout. ``eigenvalues`` entries: first, middle, last.
_PREVIOUS_REFERENCE = {
    (300, 40, ()): (
        {
            "effective_rank": 39.30312257489223,
            "effective_rank_eig": 37.42337522259213,
            "spectral_entropy": 3.6222893493097246,
            "participation_ratio": 35.31916459135146,
            "stable_rank": 22.609051485277277,
            "numerical_rank": 40,
            "condition_number": 2.0725129801238253,
            "condition_number_k": 1.943868736510629,
            "condition_number_k_at": 39,
            "alpha_req": 0.48158787368216627,
            "alpha_req_r2": 0.8908772023322826,
            "rankme": 39.30791070048026,
        },
        [0.0442686453461647, 0.02376488596200943, 0.010314051061868668],
    ),
    # n - 1 = d: square Gaussian matrices, condition numbers in the hundreds (the 2d route)
    (41, 40, ()): (
        {
            "effective_rank": 32.040760415083916,
            "effective_rank_eig": 24.296592202842977,
            "spectral_entropy": 3.1901751608601345,
            "participation_ratio": 20.124065481816114,
            "stable_rank": 10.845571403034306,
            "numerical_rank": 40,
            "condition_number": 384.5844236674915,
            "condition_number_k": 6.115509463078244,
            "condition_number_k_at": 32,
            "alpha_req": 2.128636752993713,
            "alpha_req_r2": 0.6126088050007051,
            "rankme": 32.44248515852388,
        },
        [0.09296432137489319, 0.015268764458596706, 8.211101885535754e-06],
    ),
    (30, 50, ()): (  # n < d: the centring zero
        {
            "effective_rank": 26.350186376598636,
            "effective_rank_eig": 21.606967754851624,
            "participation_ratio": 18.28102306543971,
            "numerical_rank": 29,
            "condition_number": 6.789959373818069,
            "condition_number_k": 4.089919143811636,
            "alpha_req": 1.373769181396876,
            "rankme": 27.11157655882043,
        },
        [0.09864150732755661, 0.025708382949233055, 0.0],
    ),
    (540, 128, (("condition_k", 7), ("k", 5))): (
        {
            "effective_rank": 123.87065219017697,
            "condition_number": 2.8017326816259054,
            "condition_number_k": 1.0610018217904464,
            "condition_number_k_at": 7,
            "alpha_req": 0.34244300118767,
            "rankme": 123.88215493893641,
            "subspace_distance": 0.9953509743563491,
            "subspace_distance_k": 5,
        },
        [0.01673024892807007, 0.007155971135944128, 0.002135100308805704],
    ),
    (10_000_000, 64, (("draws", 2), ("seed", 3))): (
        {
            "effective_rank": 63.999945505864275,
            "participation_ratio": 63.99956406234134,
            "condition_number": 1.0049710679063057,
            "alpha_req": 0.002855584395621279,
            "alpha_req_r2": 0.9092751672585557,
            "rankme": 64.0012407912271,
        },
        [0.015701208263635635, 0.01562461070716381, 0.015546261332929134],
    ),
}


@pytest.mark.parametrize("case", list(_PREVIOUS_REFERENCE), ids=str)
def test_isotropic_reference_equals_previous_implementation(case):
    n, d, kwargs = case
    scalars, eig = _PREVIOUS_REFERENCE[case]
    ref = F.isotropic_reference(n, d, **dict(kwargs))
    for key, want in scalars.items():
        if isinstance(want, int):
            assert ref[key] == want, key
        else:
            assert ref[key] == pytest.approx(want, rel=1e-12), key
    lam = ref["eigenvalues"]
    np.testing.assert_allclose([lam[0], lam[len(lam) // 2], lam[-1]], eig, rtol=2e-7, atol=0)


def _dense_bidiagonal_svd(diag, off):
    """The previous route: every singular value of the dense bidiagonal matrix."""
    return np.linalg.svd(np.diag(diag) + np.diag(off, 1), compute_uv=False)


def _mp_bidiagonal_svd(diag, off, digits=50):
    """Singular values to ~50 digits (mpmath), the ground truth for small matrices."""
    mpmath = pytest.importorskip("mpmath")

    with mpmath.workdps(digits):
        b = mpmath.matrix(np.diag(diag) + np.diag(off, 1))
        s = mpmath.svd_r(b, compute_uv=False)
        return np.sort(np.array([float(v) for v in s]))[::-1]


@pytest.mark.parametrize(("m", "d"), [(200, 30), (61, 30), (31, 30), (30, 30), (30, 45)])
def test_bidiagonal_singular_values_against_high_precision(m, d):
    from densefeat.functional.reference import bidiagonal_singular_values

    rng = np.random.default_rng(m * 100 + d)
    rows, cols = max(m, d), min(m, d)
    diag = np.sqrt(rng.chisquare(np.arange(rows, rows - cols, -1, dtype=float)))
    off = np.sqrt(rng.chisquare(np.arange(cols - 1, 0, -1, dtype=float)))
    truth = _mp_bidiagonal_svd(diag, off)
    got = bidiagonal_singular_values(diag, off)
    dense = _dense_bidiagonal_svd(diag, off)
    # Both routes have absolute errors ~eps * s_1: relative error on s_i ~ eps * s_1 / s_i.
    tol = 50 * np.finfo(float).eps * truth[0] / truth
    assert np.all(np.abs(got - truth) / truth <= tol), (got - truth) / truth
    assert np.all(np.abs(dense - truth) / truth <= tol)
    assert np.all(np.diff(got) <= 0)


def test_bidiagonal_singular_values_without_scipy(monkeypatch):
    # SciPy is optional at run time: without it the dense SVD gives the same values.
    from densefeat.functional.reference import bidiagonal_singular_values

    rng = np.random.default_rng(19)
    diag, off = rng.uniform(0.5, 2.0, 64), rng.uniform(0.0, 1.0, 63)
    with_scipy = bidiagonal_singular_values(diag, off)
    monkeypatch.setitem(sys.modules, "scipy.linalg.lapack", None)  # `import` now fails
    without = bidiagonal_singular_values(diag, off)
    np.testing.assert_allclose(without, with_scipy, rtol=1e-13)
    np.testing.assert_allclose(without, _dense_bidiagonal_svd(diag, off), rtol=0, atol=0)
    assert bidiagonal_singular_values([3.0], []).tolist() == [3.0]
    with pytest.raises(ValueError, match="values for a"):
        bidiagonal_singular_values(diag, off[:-1])


def test_isotropic_reference_is_cached_per_shape_and_seed():
    from densefeat.functional import reference

    reference._draws.cache_clear()
    first = F.isotropic_reference(2000, 96, k=8)
    hits = reference._draws.cache_info().hits
    again = F.isotropic_reference(2000, 96, k=8, condition_k=3)  # same draws, other metric k
    assert reference._draws.cache_info().hits == hits + 1
    assert again["condition_number_k_at"] == 3
    for key in ("effective_rank", "rankme", "condition_number", "eigenvalues"):
        assert again[key] == first[key], key
    first["effective_rank"] = -1.0  # results are fresh dicts: the cache cannot be corrupted
    assert F.isotropic_reference(2000, 96, k=8)["effective_rank"] == again["effective_rank"]
    assert F.isotropic_reference(2000, 96, seed=1)["effective_rank"] != again["effective_rank"]
    spectra = reference._draws(2000, 96, 8, 0)
    assert not spectra[0].singular_values.flags.writeable  # cached arrays are read-only


def test_one_blas_thread_is_optional(monkeypatch):
    # threadpoolctl only makes the d x d decompositions single-threaded; without it they run
    # on the default threads and give the same values.
    z = _wellcond(200, 30, seed=23)
    with_it = F.geometry(F.spectrum_from_covariance(np.cov(z, rowvar=False), 200, z.mean(0)))
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    without = F.geometry(F.spectrum_from_covariance(np.cov(z, rowvar=False), 200, z.mean(0)))
    for key in ("effective_rank", "rankme", "condition_number", "alpha_req"):
        assert without[key] == pytest.approx(with_it[key], rel=1e-12), key
