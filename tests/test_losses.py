"""Tests of the loss modules (``densefeat.losses``) and their distributed reduction.

Single process: each module must give *bitwise* the same value and gradients as its functional
counterpart (the module adds hyperparameters and validation, not arithmetic).

Two processes (gloo on 127.0.0.1, spawned with ``torch.multiprocessing.spawn``): each rank holds
a share of one fixed float64 global batch; the results travel back to this process through
``torch.save`` files in ``tmp_path`` and are asserted here against the single-process functional
loss of the concatenated batch.
"""

from __future__ import annotations

import math
import socket
import time
import warnings
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from densefeat.functional import (
    dense_feature_loss,
    feature_orthogonality_loss,
    spectral_balance_loss,
    subspace_consistency_loss,
)
from densefeat.functional.baselines import barlow_twins_loss, info_nce_loss, vicreg_loss
from densefeat.losses import (
    BarlowTwinsLoss,
    DenseFeatureLoss,
    FeatureOrthogonalityLoss,
    InfoNCELoss,
    SpectralBalanceLoss,
    SubspaceConsistencyLoss,
    VICRegLoss,
    gather_rows,
    global_all_reduce,
)
from densefeat.metrics import CovarianceAccumulator

F64 = torch.float64
N_GLOBAL, D = 40, 6
WORLD = 2
# Row shares of the global batch: equal halves, unequal shares (13 + 27 rows), and a rank with
# no rows at all (only meaningful with gather_distributed=True).
SPLITS = {"even": (0, 20, 40), "uneven": (0, 13, 40), "one_rank_empty": (0, 0, 40)}
LOCAL_SPLITS = ("even", "uneven")

# --------------------------------------------------------------------------------------------
# fixed data and the loss cases (module-level so that spawned workers can import them)
# --------------------------------------------------------------------------------------------


def global_batch(n: int = N_GLOBAL, d: int = D, offset: float = 5.0, seed: int = 0):
    """Paired float64 batch with a mean offset, distinct column scales and a linear relation."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.5, 2.0, d, dtype=F64)
    za = torch.randn(n, d, generator=g, dtype=F64) * scale + offset + torch.arange(d, dtype=F64)
    mix = torch.eye(d, dtype=F64) + 0.3 * torch.randn(d, d, generator=g, dtype=F64)
    zb = za @ mix + 0.5 * torch.randn(n, d, generator=g, dtype=F64) - offset
    return za, zb


# name -> (module factory taking gather_distributed, functional reference, paired?)
Case = tuple[Callable[[bool], torch.nn.Module], Callable[..., Any], bool]
CASES: dict[str, Case] = {
    "dense": (
        lambda g: DenseFeatureLoss(gather_distributed=g),
        lambda a, b: dense_feature_loss(a, b),
        True,
    ),
    "dense_topk": (
        lambda g: DenseFeatureLoss(top_k=3, gather_distributed=g),
        lambda a, b: dense_feature_loss(a, b, top_k=3),
        True,
    ),
    "dense_entropy_weights": (
        lambda g: DenseFeatureLoss(0.5, 2.0, 1.5, spectral_variant="entropy", gather_distributed=g),
        lambda a, b: dense_feature_loss(
            a, b, w_spec=0.5, w_orth=2.0, w_sub=1.5, spectral_variant="entropy"
        ),
        True,
    ),
    "spectral": (
        lambda g: SpectralBalanceLoss(gather_distributed=g),
        lambda z: spectral_balance_loss(z),
        False,
    ),
    "spectral_entropy": (
        lambda g: SpectralBalanceLoss("entropy", gather_distributed=g),
        lambda z: spectral_balance_loss(z, variant="entropy"),
        False,
    ),
    "orth": (
        lambda g: FeatureOrthogonalityLoss(gather_distributed=g),
        lambda z: feature_orthogonality_loss(z),
        False,
    ),
    "subspace": (
        lambda g: SubspaceConsistencyLoss(gather_distributed=g),
        lambda a, b: subspace_consistency_loss(a, b),
        True,
    ),
    "subspace_cca": (
        lambda g: SubspaceConsistencyLoss(consistency="cca", gather_distributed=g),
        lambda a, b: subspace_consistency_loss(a, b, consistency="cca"),
        True,
    ),
    "subspace_shrunk_g05": (
        lambda g: SubspaceConsistencyLoss(shrinkage=0.5, gather_distributed=g),
        lambda a, b: subspace_consistency_loss(a, b, shrinkage=0.5),
        True,
    ),
    "dense_cca": (
        lambda g: DenseFeatureLoss(consistency="cca", gather_distributed=g),
        lambda a, b: dense_feature_loss(a, b, consistency="cca"),
        True,
    ),
    "subspace_topk": (
        lambda g: SubspaceConsistencyLoss(top_k=2, gather_distributed=g),
        lambda a, b: subspace_consistency_loss(a, b, top_k=2),
        True,
    ),
    "vicreg": (lambda g: VICRegLoss(gather_distributed=g), vicreg_loss, True),
    "barlow": (lambda g: BarlowTwinsLoss(gather_distributed=g), barlow_twins_loss, True),
    "infonce": (
        lambda g: InfoNCELoss(temperature=0.5, gather_distributed=g),
        lambda a, b: info_nce_loss(a, b, 0.5),
        True,
    ),
}


def _loss_and_terms(out: Any) -> tuple[Tensor, dict[str, Tensor]]:
    """Split a module's output into the loss and its terms (empty for 0-d outputs)."""
    if isinstance(out, tuple):
        return out[0], dict(out[1])
    return out, {}


def _evaluate(fn: Callable[..., Any], za: Tensor, zb: Tensor, paired: bool) -> dict[str, Any]:
    """Loss, terms and gradients w.r.t. the given rows (fresh leaves, so nothing accumulates)."""
    za = za.detach().clone().requires_grad_(True)
    zb = zb.detach().clone().requires_grad_(True)
    loss, terms = _loss_and_terms(fn(za, zb) if paired else fn(za))
    loss.backward()
    return {
        "loss": loss.detach(),
        "terms": {k: v.detach() for k, v in terms.items()},
        "grad_a": za.grad,
        "grad_b": zb.grad if paired else None,
    }


# --------------------------------------------------------------------------------------------
# (a) single process: modules equal the functional code exactly
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("name", sorted(CASES))
def test_module_equals_functional_single_process(name: str, dtype: torch.dtype) -> None:
    make, ref, paired = CASES[name]
    za, zb = global_batch()
    za, zb = za.to(dtype), zb.to(dtype)
    for gather in (True, False):  # without torch.distributed the flag must change nothing
        got = _evaluate(make(gather), za, zb, paired)
        want = _evaluate(ref, za, zb, paired)
        assert got["loss"].dtype == dtype
        assert torch.equal(got["loss"], want["loss"])
        assert got["terms"].keys() == want["terms"].keys()
        for key in got["terms"]:
            assert torch.equal(got["terms"][key], want["terms"][key])
        assert torch.equal(got["grad_a"], want["grad_a"])
        if paired:
            assert torch.equal(got["grad_b"], want["grad_b"])


def test_single_process_collectives_are_identity() -> None:
    z = torch.randn(5, 3, dtype=F64, requires_grad=True)
    assert global_all_reduce() is None
    assert gather_rows(z) is z
    with pytest.raises(ValueError, match="row dimension"):
        gather_rows(torch.tensor(1.0))


def test_missing_autograd_formula_is_an_error() -> None:
    from densefeat.losses.distributed import _funcol

    _funcol("_c10d_functional::all_reduce")  # registered in the installed torch
    # broadcast has no autograd formula; an operator this torch lacks counts as missing.
    with pytest.raises(RuntimeError, match="no autograd formula"):
        _funcol("_c10d_functional::broadcast", "_c10d_functional_autograd::no_such_op")


def test_dense_terms_and_ablation() -> None:
    za, zb = global_batch()
    loss, terms = DenseFeatureLoss()(za, zb)
    assert set(terms) == {
        "loss",
        "spectral_balance",
        "feature_orthogonality",
        "subspace_consistency",
    }
    assert torch.equal(terms["loss"], loss.detach())
    _, terms0 = DenseFeatureLoss(w_orth=0.0)(za, zb)
    assert "feature_orthogonality" not in terms0


def test_small_batch_warning() -> None:
    za, zb = global_batch(n=10, d=D)
    with pytest.warns(RuntimeWarning, match="n >= 2d"):
        DenseFeatureLoss()(za, zb)
    with pytest.warns(RuntimeWarning, match="n >= 2d"):
        SubspaceConsistencyLoss()(za, zb)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: DenseFeatureLoss(w_spec=float("nan")), "w_spec must be finite"),
        (lambda: DenseFeatureLoss(top_k=0), "top_k"),
        (lambda: DenseFeatureLoss(top_k=2.5), "top_k"),
        (lambda: DenseFeatureLoss(spectral_variant="trace"), "spectral_variant"),
        (lambda: SpectralBalanceLoss("sum_p2"), "variant"),
        (lambda: SpectralBalanceLoss(a=0.0), "a must be > 0"),
        (lambda: SubspaceConsistencyLoss(top_k=-1), "top_k"),
        (lambda: VICRegLoss(eps=-1.0), "eps must be >= 0"),
        (lambda: VICRegLoss(sim_coeff="x"), "sim_coeff must be a number"),
        (lambda: BarlowTwinsLoss(bn_eps=-1e-5), "bn_eps"),
        (lambda: BarlowTwinsLoss(lambd=float("inf")), "lambd"),
        (lambda: InfoNCELoss(temperature=0.0), "temperature must be > 0"),
    ],
)
def test_bad_hyperparameters(factory: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory()


def test_bad_inputs() -> None:
    za, zb = global_batch()
    with pytest.raises(ValueError, match="same number of rows"):
        DenseFeatureLoss()(za, zb[:-1])
    with pytest.raises(ValueError, match="same feature dimension"):
        VICRegLoss()(za, zb[:, :-1])
    with pytest.raises(ValueError, match="same feature dimension"):
        InfoNCELoss()(za, zb[:, :-1])
    with pytest.raises(ValueError, match="2-D"):
        SpectralBalanceLoss()(za[0])
    with pytest.raises(ValueError, match="at least 2 rows"):
        FeatureOrthogonalityLoss()(za[:1])
    with pytest.raises(ValueError, match="floating-point"):
        BarlowTwinsLoss()(za.long(), zb.long())
    bad = za.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        SubspaceConsistencyLoss()(bad, zb)
    with pytest.raises(ValueError, match="top_k must be in"):
        DenseFeatureLoss(top_k=D + 1)(za, zb)


# --------------------------------------------------------------------------------------------
# (b) two processes over gloo
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(split: str, rank: int) -> slice:
    bounds = SPLITS[split]
    return slice(bounds[rank], bounds[rank + 1])


def _accumulator_state(acc: CovarianceAccumulator) -> dict[str, Any]:
    return {k: getattr(acc, k) for k in ("n", "mean_a", "m2_a", "mean_b", "m2_b", "m2_ab")}


def _momentum_two_steps(gather: bool = True) -> Callable[[Tensor, Tensor], Any]:
    """``DenseFeatureLoss(momentum=0.7)`` after one earlier step on an element-wise transform of
    the same rows (element-wise, so the ranks' shares of it are the shares of the global one)."""
    module = DenseFeatureLoss(momentum=0.7, gather_distributed=gather)

    def fn(za: Tensor, zb: Tensor) -> Any:
        module(torch.sin(3.0 * za.detach()), torch.cos(2.0 * zb.detach()) + zb.detach())
        return module(za, zb)

    return fn


def _worker(rank: int, port: int, out_dir: str) -> None:
    """One rank: evaluate every case on its share of the global batch and save the results."""
    import torch.distributed as dist

    torch.set_num_threads(1)  # tiny matrices: two ranks on few cores should not oversubscribe
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=timedelta(seconds=60),
    )
    try:
        t0 = time.perf_counter()
        za, zb = global_batch()
        results: dict[str, Any] = {}
        for split in SPLITS:
            rows = _rows(split, rank)
            for name, (make, _, paired) in CASES.items():
                for gather in (True, False) if split in LOCAL_SPLITS else (True,):
                    results[f"{split}/{name}/{gather}"] = _evaluate(
                        make(gather), za[rows], zb[rows], paired
                    )

        # The n < 2d warning sees the global n: 20 local rows < 2 * 12 <= 40 global rows.
        wa, wb = global_batch(d=12, seed=1)
        rows = _rows("even", rank)
        warned = {}
        for gather in (True, False):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                DenseFeatureLoss(gather_distributed=gather)(wa[rows], wb[rows])
            warned[gather] = any("n >= 2d" in str(w.message) for w in caught)
        results["warned"] = warned

        # dense.momentum: the pooled statistics are those of the global batches on every rank.
        for split in LOCAL_SPLITS:
            rows = _rows(split, rank)
            results[f"momentum/{split}"] = _evaluate(
                _momentum_two_steps(), za[rows], zb[rows], True
            )

        # A one-rank group is "not distributed": no reduction, no gather.
        singles = [dist.new_group([r]) for r in range(WORLD)]
        results["single_group_is_local"] = (
            global_all_reduce(singles[rank]) is None and gather_rows(za, singles[rank]) is za
        )

        # Streaming accumulator with a large common offset, unequal shares, two chunks per rank.
        xa, xb = global_batch(offset=1e3, seed=2)
        rows = _rows("uneven", rank)
        acc = CovarianceAccumulator(paired=True)
        mid = (rows.start + rows.stop) // 2
        acc.update(xa[rows.start : mid], xb[rows.start : mid]).update(
            xa[mid : rows.stop], xb[mid : rows.stop]
        )
        results["accumulator"] = _accumulator_state(acc.all_reduce())
        results["seconds"] = time.perf_counter() - t0
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def dist_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("dist")
    t0 = time.perf_counter()
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    wall = time.perf_counter() - t0
    res = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    print(
        f"\n2-rank gloo run: {wall:.1f} s wall, compute per rank "
        f"{[round(r['seconds'], 2) for r in res]} s"
    )
    return res


def _close(got: Tensor, want: Tensor, rtol: float = 1e-10) -> None:
    # atol relative to the largest entry: single gradient entries may be ~0 by cancellation.
    atol = rtol * float(want.abs().max()) if want.numel() else 0.0
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


@pytest.mark.slow
@pytest.mark.parametrize("split", sorted(SPLITS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_distributed_equals_global_batch(
    dist_results: list[dict[str, Any]], name: str, split: str
) -> None:
    """With ``gather_distributed=True`` every rank holds the loss of the concatenated batch.

    Loss value (and every term) on every rank equals the single-process functional loss of the
    concatenated global batch to rtol 1e-10. Gradients are checked *before* any DDP averaging:
    every rank computes the same global loss and the collective's backward (all-reduce SUM for
    the moments, reduce-scatter SUM for InfoNCE's gather) adds the ``world_size`` identical
    per-rank contributions, so the gradient w.r.t. a rank's local rows is ``world_size`` times
    the single-process gradient of those rows. After DDP-style averaging (divide by
    ``world_size``) it therefore equals the single-process gradient. Holds for equal and for
    unequal local batch sizes (13 + 27 rows, and 0 + 40 rows).
    """
    _, ref, paired = CASES[name]
    za, zb = global_batch()
    want = _evaluate(ref, za, zb, paired)
    for rank, res in enumerate(dist_results):
        got = res[f"{split}/{name}/True"]
        rows = _rows(split, rank)
        _close(got["loss"], want["loss"])
        assert got["terms"].keys() == want["terms"].keys()
        for key in got["terms"]:
            _close(got["terms"][key], want["terms"][key])
        _close(got["grad_a"] / WORLD, want["grad_a"][rows])
        if paired:
            _close(got["grad_b"] / WORLD, want["grad_b"][rows])


@pytest.mark.slow
@pytest.mark.parametrize("split", LOCAL_SPLITS)
def test_distributed_momentum_equals_global_batch(
    dist_results: list[dict[str, Any]], split: str
) -> None:
    """The pooled statistics of ``dense.momentum`` are reduced like the batch's: after two steps
    every rank's loss, terms and (DDP-averaged) gradients equal one process on the global rows."""
    za, zb = global_batch()
    want = _evaluate(_momentum_two_steps(), za, zb, True)
    plain = _evaluate(CASES["dense"][1], za, zb, True)
    # Pooling changes the subspace term, so the comparison below can tell it apart.
    assert (
        abs(float(want["terms"]["subspace_consistency"] - plain["terms"]["subspace_consistency"]))
        > 1e-4
    )
    for rank, res in enumerate(dist_results):
        got, rows = res[f"momentum/{split}"], _rows(split, rank)
        _close(got["loss"], want["loss"])
        for key in want["terms"]:
            _close(got["terms"][key], want["terms"][key])
        _close(got["grad_a"] / WORLD, want["grad_a"][rows])
        _close(got["grad_b"] / WORLD, want["grad_b"][rows])


@pytest.mark.slow
@pytest.mark.parametrize("split", LOCAL_SPLITS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_distributed_without_gather_is_local(
    dist_results: list[dict[str, Any]], name: str, split: str
) -> None:
    """With ``gather_distributed=False`` each rank computes the loss of its local rows only."""
    _, ref, paired = CASES[name]
    za, zb = global_batch()
    for rank, res in enumerate(dist_results):
        rows = _rows(split, rank)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # 13 local rows < 2d for split uneven
            want = _evaluate(ref, za[rows], zb[rows], paired)
        got = res[f"{split}/{name}/False"]
        _close(got["loss"], want["loss"], rtol=1e-12)
        _close(got["grad_a"], want["grad_a"], rtol=1e-12)
        if paired:
            _close(got["grad_b"], want["grad_b"], rtol=1e-12)
    # The two ranks' local losses differ: the flag really switched the reduction off.
    losses = [res[f"{split}/{name}/False"]["loss"] for res in dist_results]
    assert not torch.equal(losses[0], losses[1])


@pytest.mark.slow
def test_distributed_small_batch_warning_uses_global_n(
    dist_results: list[dict[str, Any]],
) -> None:
    for res in dist_results:
        assert res["warned"] == {True: False, False: True}
        assert res["single_group_is_local"]


@pytest.mark.slow
def test_distributed_accumulator_all_reduce(dist_results: list[dict[str, Any]]) -> None:
    """``CovarianceAccumulator.all_reduce`` over 2 ranks (13 + 27 rows, offset 1e3) equals one
    accumulator over all rows, and the exact two-pass float64 statistics."""
    xa, xb = global_batch(offset=1e3, seed=2)
    one = _accumulator_state(CovarianceAccumulator(paired=True).update(xa, xb))
    ca, cb = xa - xa.mean(0), xb - xb.mean(0)
    exact = {"m2_a": ca.T @ ca, "m2_b": cb.T @ cb, "m2_ab": ca.T @ cb}
    for res in dist_results:
        got = res["accumulator"]
        assert got["n"] == one["n"] == N_GLOBAL
        for key in ("mean_a", "mean_b"):
            _close(got[key], one[key], rtol=1e-14)
        for key in ("m2_a", "m2_b", "m2_ab"):
            _close(got[key], one[key], rtol=1e-11)
            _close(got[key], exact[key], rtol=1e-11)
    # Both ranks end with the same state.
    for key in ("mean_a", "m2_a", "m2_ab"):
        assert torch.equal(dist_results[0]["accumulator"][key], dist_results[1]["accumulator"][key])
    assert math.isfinite(float(dist_results[0]["accumulator"]["m2_ab"].sum()))
