"""The subspace-consistency term at training batch sizes (issue 11, items 1 and 3).

* planted fixture (the one of benchmarks/consistency_levers.py): the contrast shuffled - paired
  at n = 256, d = 128 as a share of the same form's contrast at n = 32,768;
* gradcheck of both forms in float64; values in [0, 1] and finite, bounded gradients on the
  degenerate suite (n < d, constant columns, repeated eigenvalues, all-zero);
* the monitored shuffled control equals the term on an explicitly permuted batch, and a short
  dense run on a toy dataset whose window pairs share planted traits logs both keys with the
  paired value below the shuffled one.

The 2-process equality of the new form is in tests/test_losses.py (cases ``subspace``,
``dense`` (default form), ``subspace_cca``, ``subspace_shrunk_g05``, ``dense_cca``).
"""

from __future__ import annotations

import datetime as dt
import json
import warnings

import numpy as np
import polars as pl
import pytest
import torch

import densefeat.functional as F
from densefeat.data.meds import write_meds_dataset
from densefeat.functional.moments import moments
from densefeat.functional.objectives import subspace_consistency_from_moments
from densefeat.train import TrainConfig, train
from densefeat.train.monitor import monitor_consistency, shuffled_rows

F64 = torch.float64


def planted_pair(n: int, seed: int, scale: float = 1.0, d: int = 128, k: int = 8):
    """8 shared directions (std ``scale``, noise 0.1), 120 independent, fixed rotations."""
    g = torch.Generator().manual_seed(seed)
    s = scale * torch.randn(n, k, generator=g, dtype=F64)
    sides = [
        torch.cat(
            [
                s + 0.1 * torch.randn(n, k, generator=g, dtype=F64),
                torch.randn(n, d - k, generator=g, dtype=F64),
            ],
            1,
        )
        for _ in range(2)
    ]
    gr = torch.Generator().manual_seed(1000)
    ra = torch.linalg.qr(torch.randn(d, d, generator=gr, dtype=F64))[0]
    rb = torch.linalg.qr(torch.randn(d, d, generator=gr, dtype=F64))[0]
    return sides[0] @ ra, sides[1] @ rb


def _contrast(n: int, draws: int, scale: float, **kw) -> float:
    out = []
    for seed in range(draws):
        za, zb = planted_pair(n, seed, scale)
        paired = subspace_consistency_from_moments(moments(za, zb), **kw)
        shuffled = subspace_consistency_from_moments(moments(za, zb[shuffled_rows(n, 99)]), **kw)
        out.append(float(shuffled - paired))
    return float(np.mean(out))


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_planted_contrast_at_the_training_batch_size(scale):
    """Measured (benchmarks/consistency_levers.py, 5 draws): the "cca" form keeps 0.235 of its
    n = 32,768 contrast at n = 256 on both fixtures; "shrunk" (g = 3) keeps 0.58 with equal-
    variance shared directions and 0.72 with shared directions of std 3. The issue's target
    (>= 0.8) is not reached by this stateless form on the equal-variance fixture; the bounds
    asserted here are what it does reach, with margin for 3 draws."""
    ratios = {}
    for form in ("cca", "shrunk"):
        small = _contrast(256, 3, scale, consistency=form)
        large = _contrast(32768, 1, scale, consistency=form)
        ratios[form] = small / large
    assert ratios["cca"] < 0.3, ratios
    assert ratios["shrunk"] > (0.5 if scale == 1.0 else 0.65), ratios
    assert ratios["shrunk"] > 2.0 * ratios["cca"], ratios


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"shrinkage": 0.0},
        {"shrinkage": 0.3},
        {"shrinkage": 10.0},
        {"consistency": "cca"},
    ],
    ids=["default", "g0", "g0.3", "g10", "cca"],
)
def test_gradcheck(kw):
    """Exact gradients (the top-k form is not here: its axes are detached by design, see
    tests/test_objectives.py::test_top_k_variant_gradient_uses_detached_axes)."""
    rng = np.random.default_rng(4)
    a = torch.tensor(rng.standard_normal((24, 5)) + 2, dtype=F64, requires_grad=True)
    b = torch.tensor(rng.standard_normal((24, 4)), dtype=F64)
    b = (b + 0.5 * a.detach()[:, :4]).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert torch.autograd.gradcheck(
            lambda x, y: F.subspace_consistency_loss(x, y, **kw), (a, b)
        )


def test_shrunk_form_is_bounded_and_invariant():
    rng = np.random.default_rng(7)
    for trial in range(20):
        n, d = int(rng.integers(3, 60)), int(rng.integers(1, 20))
        spread = np.exp(rng.normal(0, 3, d))  # condition numbers up to ~1e8
        za = rng.standard_normal((n, d)) * spread
        zb = za @ rng.standard_normal((d, d)) + rng.standard_normal((n, d)) * rng.random()
        for g in (0.0, 1.0, 3.0, 100.0):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                v = F.subspace_consistency_loss(torch.tensor(za), torch.tensor(zb), shrinkage=g)
            assert -1e-9 <= float(v) <= 1 + 1e-9, (trial, g, float(v))
    za = torch.tensor(rng.standard_normal((50, 6)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert float(F.subspace_consistency_loss(za, za)) == pytest.approx(0.0, abs=1e-12)
        q = torch.linalg.qr(torch.randn(6, 6, dtype=F64))[0]
        zb = za + 0.5 * torch.tensor(rng.standard_normal((50, 6)))
        base = float(F.subspace_consistency_loss(za, zb))
        moved = float(F.subspace_consistency_loss(za, 3.0 * zb @ q - 7.0))
    assert moved == pytest.approx(base, rel=1e-10)  # rotation, scale, shift of one side


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
        "ties-shuffled": (ties, ties[::-1].copy()),
        "duplicated-rows": (dup, dup[::-1].copy()),
        "all-zero": (zeros, zeros),
    }


@pytest.mark.parametrize("case", list(_degenerate_cases()))
@pytest.mark.parametrize("form", ["shrunk", "cca"])
def test_degenerate_inputs_finite_bounded(case, form):
    za, zb = _degenerate_cases()[case]
    for dtype in (F64, torch.float32):
        a = torch.tensor(za, dtype=dtype, requires_grad=True)
        b = torch.tensor(zb, dtype=dtype, requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            loss = F.subspace_consistency_loss(a, b, consistency=form)
        loss.backward()
        value = float(loss.detach())
        assert np.isfinite(value) and -1e-6 <= value <= 1 + 1e-6, (case, value)
        for g in (a.grad, b.grad):
            assert torch.isfinite(g).all()
            assert g.abs().max() < 1e3, (case, dtype, g.abs().max())


def test_shuffled_control_equals_the_term_on_a_permuted_batch():
    za, zb = planted_pair(300, 0, d=32)
    za, zb = za.float(), zb.float()
    got = monitor_consistency(za, zb, consistency="shrunk", shrinkage=3.0, seed=5)
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(5))
    want_p = F.subspace_consistency_loss(za.double(), zb.double())
    want_s = F.subspace_consistency_loss(za.double(), zb.double()[perm])
    assert got["subspace_consistency"] == float(want_p)
    assert got["subspace_consistency_shuffled"] == float(want_s)
    assert got["subspace_consistency"] < got["subspace_consistency_shuffled"] - 0.1
    cca = monitor_consistency(za, zb, consistency="cca")
    assert cca["subspace_consistency"] == float(
        F.subspace_consistency_loss(za.double(), zb.double(), consistency="cca")
    )


def _trait_events(n: int, n_traits: int, seed: int = 0) -> pl.DataFrame:
    """Subjects with independent binary traits that recur every year (what adjacent windows
    share), of widely spread ages (tests/test_train.py builds the same fixture)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(1, n + 1):
        traits = np.flatnonzero(rng.random(n_traits) < 0.5)
        rows.append((s, dt.datetime(1920 + int(rng.integers(0, 90)), 1, 1), "MEDS_BIRTH"))
        for year in range(6):
            start = dt.datetime(2010, 1, 1) + dt.timedelta(days=365 * year)
            for k in traits:
                rows.append(
                    (s, start + dt.timedelta(days=10 * int(k) + int(rng.integers(0, 5))), f"T{k}")
                )
            rows.append((s, start + dt.timedelta(days=200), "VISIT"))
    return pl.DataFrame(
        rows,
        schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.Utf8},
        orient="row",
    )


@pytest.mark.usefixtures("one_torch_thread")
def test_monitor_records_log_the_term_and_its_shuffled_control(tmp_path):
    n = 96
    ids = list(range(1, n + 1))
    splits = pl.DataFrame(
        {"subject_id": ids, "split": ["train" if i <= 48 else "held_out" for i in ids]}
    )
    data = write_meds_dataset(
        tmp_path / "meds", _trait_events(n, 12), dataset_name="traits", splits=splits
    )
    cfg = TrainConfig.from_dict(
        dict(
            d_model=16,
            n_heads=2,
            n_layers=1,
            max_len=32,
            proj_hidden=32,
            proj_dim=16,
            dropout=0.0,
            min_code_subjects=1,
            progress=False,
            monitor_size=48,
            monitor_every=10,
            log_every=10,
            checkpoint_every=100,
            lr=3e-3,
            warmup_steps=0,
            device="cpu",
            batch_size=64,
            max_steps=30,
            window_days=365.0,
        )
    )
    train(cfg, data, tmp_path / "dense")
    recs = [json.loads(x) for x in (tmp_path / "dense" / "stats.jsonl").read_text().splitlines()]
    mons = [r["monitor"] for r in recs if "monitor" in r]
    assert len(mons) >= 3
    for mon in mons:
        for key in ("subspace_consistency", "subspace_consistency_shuffled"):
            assert 0.0 <= mon[key] <= 1.0, mon
        assert 3 <= mon["subspace_consistency_n"] <= 48, mon
    last = mons[-1]
    assert last["subspace_consistency"] < last["subspace_consistency_shuffled"] - 0.05, last


@pytest.mark.parametrize("spread", [0.0, 4.0], ids=["well-conditioned", "ill-conditioned"])
def test_float32_products_match_float64(spread):
    """The "shrunk" form's d x d products run in float32 for float32 embeddings (the shrinkage
    bounds the condition number by 1 + d/g). Stated tolerance against float64 products on the
    same float32 data: loss 1e-5 absolute, gradients 1e-3 of their largest entry; measured
    <1e-8 and <3e-6 (condition numbers of C up to ~e^8 here)."""
    rng = np.random.default_rng(11)
    n, d = 600, 64
    scale = np.exp(np.linspace(0, spread, d))
    za = rng.standard_normal((n, d)) * scale
    zb = za @ rng.standard_normal((d, d)) / 8 + rng.standard_normal((n, d))
    za32 = torch.tensor(za, dtype=torch.float32)
    zb32 = torch.tensor(zb, dtype=torch.float32)
    out = {}
    for name, dtype in (("f32", torch.float32), ("f64", F64)):
        a = za32.to(dtype).clone().requires_grad_()
        b = zb32.to(dtype).clone().requires_grad_()
        loss = F.subspace_consistency_loss(a, b)
        loss.backward()
        out[name] = (float(loss.detach()), a.grad.double(), b.grad.double())
    assert abs(out["f32"][0] - out["f64"][0]) < 1e-5, (out["f32"][0], out["f64"][0])
    for i in (1, 2):
        err = (out["f32"][i] - out["f64"][i]).abs().max() / out["f64"][i].abs().max()
        assert err < 1e-3, err
