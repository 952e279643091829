"""Streaming covariance accumulator: chunked and merged equals one pass, also with an offset."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

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


# ----------------------------------------------------------------- against independent NumPy
_EPS = np.finfo(np.float64).eps
_GEOMETRY_KEYS = (
    "effective_rank",
    "effective_rank_eig",
    "spectral_entropy",
    "participation_ratio",
    "stable_rank",
    "condition_number",
    "condition_number_k",
    "alpha_req",
    "rankme",
)


def _np_covariance_geometry(x: np.ndarray) -> dict:
    """The covariance-route metrics written out in NumPy: two-pass float64 covariance
    (``np.cov``), ``eigvalsh``, the uncentred second moment straight from ``X^T X``."""
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    lam = np.linalg.eigvalsh(np.cov(x, rowvar=False))[::-1].clip(min=0)
    kk = min(n, d)
    s = np.sqrt((n - 1) * lam[:kk])
    su = np.sqrt(np.linalg.eigvalsh(x.T @ x)[::-1].clip(min=0)[:kk])
    rank = int((lam > lam[0] * max(n, d) * _EPS).sum())

    def ent(v):
        v = v[v > 0]
        return float(-(v * np.log(v)).sum())

    q, p = s / s.sum(), lam / lam.sum()
    er = math.exp(ent(q))
    k = max(1, round(er))
    r = np.arange(5, min(99, rank) + 1, dtype=float)
    slope = np.polyfit(np.log(r), np.log(lam[4 : len(r) + 4]), 1, w=np.sqrt(1 / r))[0]
    pu = su / su.sum() + 1e-7
    return {
        "effective_rank": er,
        "effective_rank_eig": math.exp(ent(p)),
        "spectral_entropy": ent(p),
        "participation_ratio": 1 / float((p**2).sum()),
        "stable_rank": float((s**2).sum() / s[0] ** 2),
        "numerical_rank": rank,
        "condition_number": s[0] / s[min(n - 1, d) - 1] if rank == min(n - 1, d) else math.inf,
        "condition_number_k": s[0] / s[k - 1],
        "alpha_req": -slope,
        "rankme": math.exp(-float((pu * np.log(pu)).sum())),
        "eigenvalues": lam,
    }


def _ill_conditioned(n=3000, d=40, seed=20):
    # singular values spread over 3 decades (covariance eigenvalues over 6), offset 10
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return rng.standard_normal((n, d)) @ (q * np.logspace(0, -3, d)) + 10.0


def _rank_deficient(n=3000, d=40, seed=21):
    x = np.random.default_rng(seed).standard_normal((n, d)) + 2.0
    x[:, 5] = 2 * x[:, 3] - x[:, 1]  # one exact linear dependency
    return x


CASES = {
    "float32-offset-50": lambda: _data(n=2500, d=24, offset=50.0)[0].astype(np.float32),
    "ill-conditioned": _ill_conditioned,
    "rank-deficient": _rank_deficient,
    "n<d": lambda: np.random.default_rng(22).standard_normal((30, 50)) * 3 - 1,
}


@pytest.mark.parametrize("case", list(CASES))
def test_compute_matches_independent_numpy(case):
    x = CASES[case]()
    got = _chunked(x).compute()
    want = _np_covariance_geometry(x)
    assert got["numerical_rank"] == want["numerical_rank"]
    null = want["numerical_rank"] < min(x.shape)  # a null direction among the min(n, d) kept
    for key in _GEOMETRY_KEYS:
        rel = 1e-8
        if null and key in ("effective_rank", "rankme"):
            # On any covariance route a null direction's eigenvalue is rounding noise of size
            # ~eps lambda_1, so its singular value is ~sqrt(eps) s_1 = 1e-8 s_1, different
            # noise for each computation; the metrics of singular values feel it at ~1e-8.
            rel = 1e-7
        assert got[key] == pytest.approx(want[key], rel=rel), key
    lam = np.asarray(got["eigenvalues"])
    ref = want["eigenvalues"][: lam.size]
    big = ref > 1e-6 * ref[0]
    np.testing.assert_allclose(lam[big], ref[big], rtol=1e-8)
    if math.isinf(want["condition_number"]):
        assert "rank-deficient" in got["condition_number_reason"]


def test_float32_chunks_equal_float64_one_pass():
    # Widening each float32 chunk while centring it loses nothing against widening first.
    x32 = _data(n=4001, d=32, offset=1e3)[0].astype(np.float32)
    acc32 = _chunked(x32, sizes=(1000, 333, 7))
    acc64 = CovarianceAccumulator().update(x32.astype(np.float64))
    np.testing.assert_allclose(acc32.mean("a"), acc64.mean("a"), rtol=1e-14)
    np.testing.assert_allclose(
        acc32.covariance().numpy(), acc64.covariance().numpy(), rtol=1e-11, atol=1e-13
    )


def test_paired_compute_matches_numpy_rows():
    a, b = _data(n=1500, d=16, offset=20.0)
    acc = _chunked(a, b)
    k = 5
    res = acc.compute(k=k)
    ua = np.linalg.svd(a - a.mean(0), full_matrices=False)[0][:, :k]
    ub = np.linalg.svd(b - b.mean(0), full_matrices=False)[0][:, :k]
    cos = np.linalg.svd(ua.T @ ub, compute_uv=False)
    assert res["subspace_distance"] == pytest.approx(math.sqrt(1 - (cos**2).sum() / k), rel=1e-8)
    assert cos.max() < 1 - 1e-4  # angles > ~0.014 rad: arccos keeps 1e-8 relative there
    np.testing.assert_allclose(res["principal_angles"], np.arccos(cos[::-1]), rtol=1e-8)
    ac, bc = a - a.mean(0), b - b.mean(0)
    cka = np.linalg.norm(ac.T @ bc) ** 2 / (np.linalg.norm(ac.T @ ac) * np.linalg.norm(bc.T @ bc))
    assert res["linear_cka"] == pytest.approx(cka, rel=1e-10)
    for key in _GEOMETRY_KEYS:
        assert res[key] == pytest.approx(_np_covariance_geometry(a)[key], rel=1e-8), key
        assert res["b"][key] == pytest.approx(_np_covariance_geometry(b)[key], rel=1e-8), key
    norms = CenteredNormAccumulator.for_accumulator(acc)
    for s in range(0, len(a), 200):
        norms.update(a[s : s + 200], b[s : s + 200])
    assert norms.linear_cka_debiased(acc) == pytest.approx(F.linear_cka_debiased(a, b), rel=1e-9)


def _count_calls(monkeypatch, module, names):
    calls = dict.fromkeys(names, 0)
    for name in names:
        original = getattr(module, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    return calls


def test_each_covariance_is_decomposed_once(monkeypatch):
    a, b = _data()
    single, paired = _chunked(a), _chunked(a, b)
    calls = _count_calls(monkeypatch, np.linalg, ("eigvalsh", "eigh"))
    single.compute()
    # C and the uncentred second moment (RankMe): one eigvalsh each
    assert calls == {"eigvalsh": 2, "eigh": 0}
    calls.update(eigvalsh=0, eigh=0)
    paired.compute(k=4)
    # C_a, C_b: one eigh each, shared by the spectra and the subspace metrics; + 2 uncentred
    assert calls == {"eigvalsh": 2, "eigh": 2}


def test_chunk_types_give_the_same_state():
    x = _data(n=300, d=6, offset=4.0)[0].astype(np.float16)
    ref = CovarianceAccumulator().update(x.astype(np.float32))
    variants = [
        x,  # float16 array: widened to float32
        torch.from_numpy(x.astype(np.float32)).requires_grad_(),
        torch.from_numpy(x),
        x.astype(np.float32).tolist(),
        np.asfortranarray(x.astype(np.float32)),
    ]
    for v in variants:
        acc = CovarianceAccumulator().update(v)
        np.testing.assert_allclose(acc.covariance().numpy(), ref.covariance().numpy(), rtol=1e-12)
    bf16 = torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16)
    acc = CovarianceAccumulator().update(bf16)
    np.testing.assert_allclose(acc.mean("a"), bf16.float().double().mean(0).numpy(), rtol=1e-14)


def test_state_is_exposed_as_tensor_copies():
    a, b = _data(n=50)
    acc = CovarianceAccumulator(paired=True).update(a, b)
    m = acc.m2_a
    assert isinstance(m, torch.Tensor) and m.dtype == torch.float64
    m.zero_()
    assert float(acc.m2_a.abs().sum()) > 0  # the copy did not change the state
    mean = acc.mean("b")
    mean[:] = 0.0
    assert np.abs(acc.mean("b")).sum() > 0
    with pytest.raises(ValueError, match="no stream 'c'"):
        acc.mean("c")


def test_non_finite_and_overflowing_chunks_name_the_problem():
    acc = CovarianceAccumulator(paired=True)
    bad = np.ones((4, 3))
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match=r"b: 1 row\(s\) contain NaN or inf \(first rows: \[2\]"):
        acc.update(np.eye(4, 3), bad)
    with pytest.raises(ValueError, match="overflow"), np.errstate(over="ignore"):
        CovarianceAccumulator().update(np.full((4, 2), 1e308))
    assert acc.n == 0  # a rejected chunk leaves the state alone
    with pytest.raises(ValueError, match="feature dimension changed"):
        CovarianceAccumulator().init_empty(3).update(np.eye(4, 5))


def test_covariance_route_runs_without_torch():
    # densefeat analyze streams NumPy chunks: the accumulator, every metric it computes and
    # the isotropic reference must run with torch absent. The package __init__ modules of
    # densefeat.functional and densefeat.metrics import torch for other reasons (objectives),
    # so the modules are loaded here without them.
    code = textwrap.dedent(
        """
        import sys, types
        from pathlib import Path
        sys.modules["torch"] = None  # any `import torch` raises ImportError
        import densefeat
        import numpy as np
        root = Path(densefeat.__file__).parent
        for name in ("functional", "metrics"):
            pkg = types.ModuleType(f"densefeat.{name}")
            pkg.__path__ = [str(root / name)]
            sys.modules[f"densefeat.{name}"] = pkg
        from densefeat.functional.reference import isotropic_reference
        from densefeat.metrics.accumulator import CenteredNormAccumulator, CovarianceAccumulator
        rng = np.random.default_rng(0)
        a = rng.standard_normal((500, 8)).astype(np.float32) + 3
        b = np.c_[a[:, :4], rng.standard_normal((500, 2))]
        single = CovarianceAccumulator().update(a[:200]).update(a[200:]).compute()
        acc = CovarianceAccumulator(paired=True).update(a, b)
        pair = acc.compute(k=3)
        norms = CenteredNormAccumulator.for_accumulator(acc).update(a, b)
        ref = isotropic_reference(500, 8, condition_k=single["condition_number_k_at"])
        print(single["effective_rank"], pair["subspace_distance"],
              norms.linear_cka_debiased(acc), ref["effective_rank"])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_child_env()
    )
    assert out.returncode == 0, out.stderr
    values = [float(v) for v in out.stdout.split()]
    assert len(values) == 4 and all(math.isfinite(v) for v in values)


def _child_env() -> dict:
    src = str(Path(F.__file__).resolve().parents[2])  # the src/ this test imports
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    return env
