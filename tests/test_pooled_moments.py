"""Pooled statistics of the subspace term (``dense.momentum``).

The value must equal the subspace term evaluated at the bias-corrected exponential moving
average of the batches' covariances, computed here in NumPy; the gradient must be the gradient
at that pooled point sent to this batch's covariances; identical batches must reduce to the
plain term; state must survive a checkpoint (``get_extra_state``) and a resumed training run.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from densefeat.functional import dense_feature_loss
from densefeat.functional.moments import Moments, moments, pooled_moments
from densefeat.functional.objectives import subspace_consistency_from_moments
from densefeat.losses import DenseFeatureLoss

F64 = torch.float64
N, D, BETA = 48, 6, 0.8


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(N, 3, generator=g, dtype=F64)
    za = torch.cat([shared, torch.randn(N, D - 3, generator=g, dtype=F64)], 1)
    zb = torch.cat([shared + 0.3 * torch.randn(N, 3, generator=g, dtype=F64)] * 2, 1)
    return za + 2.0, zb @ torch.randn(D, D, generator=g, dtype=F64)


def _np_cov(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)).T @ (y - y.mean(0)) / (len(x) - 1)


def _np_pooled(batches: list[tuple[torch.Tensor, torch.Tensor]], beta: float) -> list[np.ndarray]:
    """Bias-corrected EMA of (C_a, C_b, C_ab) over the batches, written out as a weighted sum."""
    t = len(batches)
    weights = [(1 - beta) * beta ** (t - 1 - i) for i in range(t)]
    total = 1 - beta**t
    out = []
    for pick in ((0, 0), (1, 1), (0, 1)):
        acc = sum(
            w * _np_cov(b[pick[0]].numpy(), b[pick[1]].numpy())
            for w, b in zip(weights, batches, strict=True)
        )
        out.append(acc / total)
    return out


def _sub_term_at(covs: list[torch.Tensor], m: Moments) -> torch.Tensor:
    pooled = replace(m, cov_a=covs[0], cov_b=covs[1], cov_ab=covs[2])
    return subspace_consistency_from_moments(pooled)


def _leaves(za: torch.Tensor, zb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return za.clone().requires_grad_(True), zb.clone().requires_grad_(True)


def test_value_and_gradient_equal_the_pooled_reference() -> None:
    batches = [_batch(s) for s in range(3)]
    module = DenseFeatureLoss(momentum=BETA)
    for za, zb in batches[:-1]:
        module(za, zb)
    za, zb = _leaves(*batches[-1])
    _, terms = module(za, zb)
    want_covs = [torch.from_numpy(c) for c in _np_pooled(batches, BETA)]

    # Value: the subspace term at the NumPy-pooled covariances (rows of no single batch).
    m = moments(*batches[-1])
    torch.testing.assert_close(
        terms["subspace_consistency"], _sub_term_at(want_covs, m), rtol=1e-12, atol=0
    )
    # Spectral and orthogonality terms still read this batch only.
    _, plain = dense_feature_loss(*batches[-1])
    for key in ("spectral_balance", "feature_orthogonality"):
        torch.testing.assert_close(terms[key], plain[key], rtol=1e-12, atol=0)
    assert abs(float(terms["subspace_consistency"] - plain["subspace_consistency"])) > 1e-3

    # Gradient: dL/dS at the pooled point, pushed through this batch's covariances.
    only_sub = DenseFeatureLoss(w_spec=0.0, w_orth=0.0, momentum=BETA)
    for b in batches[:-1]:
        only_sub(*b)
    loss, _ = only_sub(za, zb)
    ga, gb = torch.autograd.grad(loss, (za, zb))
    covs = [c.clone().requires_grad_(True) for c in want_covs]
    g_cov = torch.autograd.grad(_sub_term_at(covs, m), covs)
    xa, xb = _leaves(*batches[-1])
    mx = moments(xa, xb)
    surrogate = sum(
        (g * c).sum() for g, c in zip(g_cov, (mx.cov_a, mx.cov_b, mx.cov_ab), strict=True)
    )
    ra, rb = torch.autograd.grad(surrogate, (xa, xb))
    torch.testing.assert_close(ga, ra, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gb, rb, rtol=1e-9, atol=1e-12)


def test_repeated_batch_and_first_step_equal_the_plain_loss() -> None:
    za, zb = _batch(0)
    module = DenseFeatureLoss(momentum=0.95)
    for step in range(3):  # step 0: bias correction alone; later: the EMA of equal statistics
        a, b = _leaves(za, zb)
        loss, _ = module(a, b)
        loss.backward()
        pa, pb = _leaves(za, zb)
        want, _ = dense_feature_loss(pa, pb)
        want.backward()
        torch.testing.assert_close(loss, want, rtol=1e-12, atol=0)
        torch.testing.assert_close(a.grad, pa.grad, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(b.grad, pb.grad, rtol=1e-10, atol=1e-14)
        assert module._updates == step + 1


def test_eval_mode_reads_this_batch_and_state_round_trips() -> None:
    first, second, third = _batch(0), _batch(1), _batch(2)
    module = DenseFeatureLoss(momentum=BETA)
    module(*first)
    module(*second)
    copy = DenseFeatureLoss(momentum=BETA)
    copy.load_state_dict(module.state_dict())
    # Continued from the saved state, the copy computes what the original computes.
    torch.testing.assert_close(copy(*third)[1], module(*third)[1], rtol=0, atol=0)
    # In eval mode the statistics are this batch's and nothing is updated.
    module.eval()
    before = module._updates
    torch.testing.assert_close(module(*third)[1], dense_feature_loss(*third)[1], rtol=1e-12, atol=0)
    assert module._updates == before
    # momentum = 0 keeps no state and is the plain loss.
    plain = DenseFeatureLoss()
    torch.testing.assert_close(plain(*third)[1], dense_feature_loss(*third)[1], rtol=0, atol=0)
    assert plain.state_dict()["_extra_state"] == {"updates": 0}


def test_pooled_moments_rejects_bad_input() -> None:
    m = moments(*_batch(0))
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        pooled_moments(m, None, 0, 1.0)
    with pytest.raises(ValueError, match="paired moments"):
        pooled_moments(moments(_batch(0)[0]), None, 0, 0.5)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        DenseFeatureLoss(momentum=1.0)
    # A change of width (another head) restarts the average instead of mixing shapes.
    out, running = pooled_moments(m, (torch.ones(2, 2),) * 3, 5, 0.5)
    torch.testing.assert_close(out.cov_ab, m.cov_ab.double(), rtol=1e-15, atol=0)
    assert running[0].shape == (D, D)
