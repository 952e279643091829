"""First and second moments of one or two paired embedding matrices, computed once per batch.

Every covariance-type objective (spectral balance, orthogonality, subspace consistency, VICReg,
Barlow Twins) is a function of the means and (cross-)covariances below. Computing them once and
sharing them is what keeps ``dense_feature_loss`` at a few ``n x d x d`` matmuls, and it is also
the one place where the distributed reduction happens: with ``all_reduce`` given, the statistics
are those of the global batch (all ranks' rows), differentiably.

Notation (docs/design.md): ``Zc = Z - mean(Z, 0)``, ``C = Zc^T Zc / (n - 1)``,
``C_ab = Zac^T Zbc / (n - 1)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

__all__ = ["AllReduce", "Moments", "compute_dtype", "moments", "pooled_moments"]

#: An autograd-aware SUM over ranks (forward all-reduce, backward all-reduce of the gradient).
AllReduce = Callable[[Tensor], Tensor]


def compute_dtype(z: Tensor) -> torch.dtype:
    """dtype of the ``n x d`` products: the input's, but never below float32.

    Half-precision covariances lose the small eigenvalues that these objectives act on, so
    bf16/fp16 activations (AMP) are upcast before the matmul.
    """
    return torch.float32 if z.dtype in (torch.float16, torch.bfloat16) else z.dtype


@dataclass(frozen=True)
class Moments:
    """Batch statistics shared across loss terms.

    Attributes:
        n: number of rows of the (global) batch.
        mean_a, mean_b: column means, shape (d_a,), (d_b,).
        cov_a, cov_b: unbiased covariances ``Zc^T Zc / (n - 1)``.
        cov_ab: unbiased cross-covariance ``Zac^T Zbc / (n - 1)``, shape (d_a, d_b).
        centred_a, centred_b: this process's rows minus the global mean (for per-row terms).
    """

    n: int
    mean_a: Tensor
    cov_a: Tensor
    centred_a: Tensor
    mean_b: Tensor | None = None
    cov_b: Tensor | None = None
    cov_ab: Tensor | None = None
    centred_b: Tensor | None = None


class _Gram(torch.autograd.Function):
    """Second-moment blocks ``(Xa^T Xa, Xb^T Xb, Xa^T Xb)`` with a symmetric-aware backward.

    Autograd through ``x.T @ x`` runs one matmul per operand; the closed form
    ``dXa = Xa (Ga + Ga^T) + Xb Gab^T`` (and its twin for ``Xb``) needs one per block, which
    saves a third of the ``n x d x d`` work of a backward pass for every covariance loss.
    """

    @staticmethod
    def forward(ctx: Any, xa: Tensor, xb: Tensor | None) -> tuple[Tensor, ...]:
        ctx.save_for_backward(xa, xb)
        if xb is None:
            return (xa.T @ xa,)
        return xa.T @ xa, xb.T @ xb, xa.T @ xb

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        xa, xb = ctx.saved_tensors
        ga = grads[0]
        dxa = xa @ (ga + ga.T) if ga is not None else torch.zeros_like(xa)
        if xb is None:
            return dxa, None
        gb, gab = grads[1], grads[2]
        dxb = xb @ (gb + gb.T) if gb is not None else torch.zeros_like(xb)
        if gab is not None:
            dxa = torch.addmm(dxa, xb, gab.T)
            dxb = torch.addmm(dxb, xa, gab)
        return dxa, dxb


def moments(
    za: Tensor, zb: Tensor | None = None, *, all_reduce: AllReduce | None = None
) -> Moments:
    """Means and (cross-)covariances of ``za`` (and ``zb``), optionally over all ranks.

    The global mean is reduced first and every rank centres its rows with it before the second
    moments are reduced: this is the two-pass algorithm, so a large common offset in the
    features costs no precision (raw sums of squares would lose ~8 digits at offset 50).

    Args:
        za: (n_local, d_a) embeddings.
        zb: optional (n_local, d_b) embeddings paired row by row with ``za``.
        all_reduce: autograd-aware SUM across ranks; ``None`` for a single process.

    Returns:
        :class:`Moments` of the global batch, in :func:`compute_dtype` of ``za``.
    """
    # Under AMP the matmuls below would silently run in bf16/fp16: the statistics these
    # objectives act on (small eigenvalues, whitening) need at least float32.
    with torch.autocast(device_type=za.device.type, enabled=False):
        return _moments(za, zb, all_reduce)


def _moments(za: Tensor, zb: Tensor | None, all_reduce: AllReduce | None) -> Moments:
    dt = compute_dtype(za)
    za = za.to(dt)
    zb = zb.to(dt) if zb is not None else None
    n_local = za.shape[0]
    da = za.shape[1]

    # One collective for the counts and the column sums of both matrices.
    first = [za.sum(0)] + ([zb.sum(0)] if zb is not None else [])
    first.append(za.new_tensor([float(n_local)]))
    flat = torch.cat(first)
    if all_reduce is not None:
        flat = all_reduce(flat)
    # The global row count needs the reduced value (one host sync); a single process knows it.
    n = n_local if all_reduce is None else round(float(flat[-1].detach()))
    if n < 2:
        raise ValueError(f"need at least 2 rows in the (global) batch, got n={n}")
    mean_a = flat[:da] / n
    mean_b = flat[da:-1] / n if zb is not None else None

    zac = za - mean_a
    zbc = zb - mean_b if zb is not None else None
    # One collective for every second moment.
    blocks = list(_Gram.apply(zac, zbc))
    shapes = [b.shape for b in blocks]
    flat2 = torch.cat([b.reshape(-1) for b in blocks])
    if all_reduce is not None:
        flat2 = all_reduce(flat2)
    flat2 = flat2 / (n - 1)
    parts = torch.split(flat2, [s.numel() for s in shapes])
    covs = [p.reshape(s) for p, s in zip(parts, shapes, strict=True)]
    if zbc is None:
        return Moments(n=n, mean_a=mean_a, cov_a=covs[0], centred_a=zac)
    return Moments(
        n=n,
        mean_a=mean_a,
        cov_a=covs[0],
        centred_a=zac,
        mean_b=mean_b,
        cov_b=covs[1],
        cov_ab=covs[2],
        centred_b=zbc,
    )


#: Running second moments ``(cov_a, cov_b, cov_ab)`` in float64, before bias correction.
Running = tuple[Tensor, Tensor, Tensor]


def pooled_moments(
    m: Moments, running: Running | None, updates: int, momentum: float
) -> tuple[Moments, Running]:
    """Paired moments pooled over recent batches by an exponential moving average.

    A statistic that needs ``n >> d`` rows (the canonical correlations behind the subspace term)
    is noisy at a training batch of ``n ~ 2d``; pooling the covariances of the last
    ``~1 / (1 - momentum)`` batches estimates it from that many times more rows. With
    ``S_t`` this batch's ``(C_a, C_b, C_ab)`` and ``R_0 = 0``::

        R_t = momentum R_{t-1} + (1 - momentum) S_t        (S_t detached)
        value:    S~_t = R_t / (1 - momentum^t)            (Adam's bias correction)
        gradient: dS~_t / dS_t = I                         (straight through)

    so a loss of ``S~_t`` has the *value* of the pooled statistics and sends its gradient,
    taken at the pooled point, to this batch's rows at full weight (the earlier batches' rows
    are gone; their encoder has moved on). This is the running-statistics estimator of
    decorrelated / iterative batch normalisation (Huang et al. 2018, 2019) used inside the
    loss rather than only at evaluation. The pooled value lags an encoder that changes fast:
    ``momentum`` trades that staleness against noise. Identical batches give ``S~_t = S_t``.

    Under DDP ``m`` holds global-batch moments, so every rank's running statistics are equal.

    Args:
        m: this batch's paired moments (``cov_b`` and ``cov_ab`` present).
        running: ``R_{t-1}`` (float64, detached), ``None`` before the first update.
        updates: ``t - 1``, the number of earlier updates.
        momentum: ``0 <= momentum < 1``; 0 returns ``m``'s statistics (in float64) unchanged.

    Returns:
        ``(moments with (C_a, C_b, C_ab) replaced by S~_t in float64, R_t)``.
    """
    if m.cov_b is None or m.cov_ab is None:
        raise ValueError("pooled_moments needs paired moments (za and zb)")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    current = (m.cov_a.double(), m.cov_b.double(), m.cov_ab.double())
    if running is None or any(r.shape != c.shape for r, c in zip(running, current, strict=True)):
        running, updates = tuple(torch.zeros_like(c.detach()) for c in current), 0  # type: ignore[assignment]
    new = tuple(
        momentum * r.to(c.device) + (1.0 - momentum) * c.detach()
        for r, c in zip(running, current, strict=True)  # type: ignore[arg-type]
    )
    correction = 1.0 - momentum ** (updates + 1)
    pooled = [c + (r / correction - c).detach() for c, r in zip(current, new, strict=True)]
    out = replace(m, cov_a=pooled[0], cov_b=pooled[1], cov_ab=pooled[2])
    return out, new  # type: ignore[return-value]
