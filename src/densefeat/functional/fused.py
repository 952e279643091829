"""The default dense objective in one autograd node: fused forward, closed-form backward.

:func:`fused_dense_terms` computes ``w_spec (L_spec(C_a) + L_spec(C_b)) + w_orth (L_orth(C_a) +
L_orth(C_b)) + w_sub L_sub`` for the default variants (coding-rate spectral balance, "shrunk"
subspace consistency, no ``top_k``) from the three covariances, with the same formulas as the
per-term reference path of :mod:`~densefeat.functional.objectives` (docs/design.md §3-§5), and
returns one ``d x d`` gradient per covariance. Why a fused node: at (n, d) = (2048, 512) on a
CPU core the reference path spent more time in ~100 elementwise passes over float64 ``d x d``
matrices (autograd of the scalar algebra, dtype round-trips, gradient accumulation) than in its
factorisations; here every term's gradient is accumulated into one matrix per covariance.

Precision (issue 14): traces and scalars are float64 (``1 / tr C`` overflows float32 on a
collapsed batch). The ``d x d`` factorisations, inverses and products run in float32 when the
embeddings are float32 (or half) *and* the matrix factored has a condition number bounded by
construction below :data:`F32_MAX_COND`: the coding-rate matrix ``I + a d C / tr C`` has
eigenvalues in ``[1, 1 + a d]`` and the shrunk ``C / t + (g + 1e-4) I`` (``t = tr C / d``) in
``[g + 1e-4, d + g + 1e-4]``. Otherwise, and for float64 embeddings, they run in float64.
tests/test_fused.py states the tolerance against the float64 reference.

Per covariance ``C`` (``d x d``, ``T = tr C + 1e-30``) the gradients are:

- spectral, ``M = I + (a d / T) C``:
  ``dL/dC = -[(a d / T) M^-1 - ((d - tr M^-1) / T) I] / (d log(1 + a))``;
- orthogonality, ``w = 1 / (diag C + rho)``, ``rho = 1e-4 T / d``,
  ``R = diag(w)^1/2 C diag(w)^1/2`` with a zero diagonal, ``D = d (d - 1)``:
  ``dL/dC_ij = 2 R_ij sqrt(w_i w_j) / D`` off the diagonal, and on it
  ``-(rowsum_i + colsum_i)(R o R) w_i / D`` plus the hinge's and ``rho``'s shares;
- shrunk consistency: :class:`~densefeat.functional.objectives._ShrunkCKA`'s closed form, with
  ``f_aa = ||I - s A^-1||_F^2 = d - 2 s tr A^-1 + s^2 ||A^-1||_F^2`` (no product) and the trace
  normalisation ``C / t`` differentiated exactly (its share vanishes up to the 1e-30 floors by
  scale invariance, but it is kept so that the value and the gradient agree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ._numerics import RIDGE, SHIFT_FLOOR, TINY, VAR_EPS, cholesky

__all__ = ["F32_MAX_COND", "FusedConfig", "factor_dtype", "fused_dense_terms"]

#: Largest condition-number bound for which a factorisation runs in float32 (float32 rounding
#: times this bound stays below ~2.5e-4 relative in the worst case; ~2e-6 measured on the
#: gradients at d = 64, tests/test_fused.py).
F32_MAX_COND = 4096.0

F64 = torch.float64


@dataclass(frozen=True)
class FusedConfig:
    """Hyper-parameters of the fused default objective (weights 0 skip a term)."""

    w_spec: float
    w_orth: float
    w_sub: float
    shrinkage: float
    a: float = 1.0


def factor_dtype(products: torch.dtype, cond_bound: float) -> torch.dtype:
    """float32 for float32/half embeddings whose factored matrix has a bounded condition."""
    if products == F64 or cond_bound > F32_MAX_COND:
        return F64
    return torch.float32


def _trace(c: Tensor) -> Tensor:
    return c.diagonal().sum(dtype=F64)


def _dot(x: Tensor, y: Tensor) -> Tensor:
    """``sum(x * y)`` in one pass (BLAS dot), as a float64 scalar."""
    return torch.dot(x.reshape(-1), y.reshape(-1)).to(F64)


def _scaled(c: Tensor, scale: Tensor, dtype: torch.dtype) -> Tensor:
    """``c * scale`` (``scale`` a float64 scalar) in ``dtype``: a new tensor, safe to modify."""
    out = c * scale.to(c.dtype)
    return out.to(dtype) if out.dtype != dtype else out


class _Spectral:
    """Coding-rate spectral balance ``1 - logdet(I + a d C / T) / (d log(1 + a))``."""

    def __init__(self, c: Tensor, a: float, dtype: torch.dtype) -> None:
        d = c.shape[0]
        self.d, self.a, self.t = d, a, _trace(c) + TINY
        self.k = (a * d) / self.t
        m = _scaled(c, self.k, dtype)
        m.diagonal().add_(1.0)
        self.chol = cholesky(m, "spectral_balance_loss")
        logdet = 2.0 * self.chol.diagonal().log().sum(dtype=F64)
        self.value = 1.0 - logdet / (d * math.log1p(self.a))

    def grad(self, go: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha, M^-1)``, ``beta``: ``dL/dC = alpha M^-1 + beta I`` times ``go``."""
        minv = torch.cholesky_inverse(self.chol)
        scale = -go / (self.d * math.log1p(self.a))
        beta = -scale * (self.d - _trace(minv)) / self.t
        return minv.mul_((scale * self.k).to(minv.dtype)), beta


class _Orthogonality:
    """Mean squared off-diagonal correlation plus the variance hinge (std >= 1)."""

    def __init__(self, c: Tensor, dtype: torch.dtype) -> None:
        d = c.shape[0]
        self.d = d
        var = c.diagonal().to(F64)
        self.rho = RIDGE * var.sum() / d + TINY
        self.w = 1.0 / (var + self.rho)
        self.sw = self.w.sqrt()
        sw = self.sw.to(dtype)
        # Row scaling first, then columns: |C_ij sqrt(w_i)| <= sqrt(var_j), so no intermediate
        # overflows float32 whatever the data's scale; |R_ij| <= 1.
        if c.dtype == dtype:
            r = c * sw[:, None]
        else:  # scale in the wider dtype first, then round (no float32 overflow)
            r = (c * self.sw.to(c.dtype)[:, None]).to(dtype)
        r.mul_(sw[None, :])
        r.diagonal().zero_()
        self.r = r
        self.big_d = max(d * (d - 1), 1)
        self.std = (var + VAR_EPS).sqrt()
        hinge = torch.relu(1.0 - self.std).mean()
        self.value = _dot(r, r) / self.big_d + hinge

    def grad(self, go: Tensor) -> tuple[Tensor, Tensor]:
        """``(elementwise part, diagonal vector)`` of ``dL/dC`` times ``go``."""
        sq = self.r.square()
        sums = (sq.sum(1) + sq.sum(0)).to(F64)
        # d off / d var_k through w_k (the diagonal of R is zero), and the ridge's share.
        d_var = -sums * self.w / self.big_d
        d_rho = d_var.sum()
        hinge = torch.where(1.0 - self.std > 0, -0.5 / (self.d * self.std), 0.0)
        diag = go * (d_var + hinge + d_rho * (RIDGE / self.d))
        sw = self.sw.to(self.r.dtype)
        el = self.r * sw[:, None]
        el.mul_(sw[None, :] * (2.0 * go / self.big_d).to(el.dtype))
        return el, diag


class _ShrunkSide:
    """One side of the shrunk form: ``A = C / t + s I``, ``t = tr C / d + 1e-30``."""

    def __init__(self, c: Tensor, g: float, dtype: torch.dtype) -> None:
        d = c.shape[0]
        self.d, self.k = d, g + RIDGE
        tr = _trace(c)
        self.u = 1.0 / (tr / d + TINY)
        self.s = self.k * (tr * self.u) / d + SHIFT_FLOOR
        a = _scaled(c, self.u, dtype)
        a.diagonal().add_(self.s.to(dtype))
        self.a = a
        self.inv = torch.cholesky_inverse(cholesky(a, "subspace_consistency_loss"))
        self.tr_inv = _trace(self.inv)
        self.sq_inv = _dot(self.inv, self.inv)
        # f = ||I - s A^-1||_F^2 = tr((A^-1 C/t)^2), without forming I - s A^-1.
        self.f = d - 2.0 * self.s * self.tr_inv + self.s.square() * self.sq_inv

    def grad(self, cross: Tensor, c_self: Tensor, z_dot_cab: Tensor) -> Tensor:
        """``dL/dC`` of this side; ``cross`` is ``d f_ab / dA`` times the caller's factor.

        ``d f_aa / dA = 2 s A^-1 (I - s A^-1) A^-1`` accumulates into ``cross`` (one addmm),
        ``s``'s explicit share is ``-2 tr((I - s A^-1) A^-1)``, then ``s = k tr(C/t) / d``
        and ``C / t`` are differentiated (``z_dot_cab``: ``<d/dC_ab~, C_ab~>``, the cross
        covariance's share of ``t``).
        """
        coef = 2.0 * c_self * self.s
        p = self.inv * (-coef * self.s).to(self.inv.dtype)
        p.diagonal().add_(coef.to(p.dtype))
        g_a = torch.addmm(cross, self.inv, p @ self.inv)
        g_s = _trace(g_a) - 2.0 * c_self * (self.tr_inv - self.s * self.sq_inv)
        g_a.diagonal().add_((g_s * self.k / self.d).to(g_a.dtype))
        # C~ = A - s I: <G, C~> = <G, A> - s tr G.
        share = _dot(g_a, self.a) - self.s * _trace(g_a) + 0.5 * z_dot_cab
        g_a.mul_(self.u.to(g_a.dtype))
        g_a.diagonal().sub_((self.u / self.d * share).to(g_a.dtype))
        return g_a


class _Shrunk:
    """``L_sub = 1 - tr(A^-1 C_ab~ B^-1 C_ab~^T) / sqrt(f_aa f_bb)`` (the "shrunk" form)."""

    def __init__(self, ca: Tensor, cb: Tensor, cab: Tensor, g: float, dtype: torch.dtype) -> None:
        self.sa = _ShrunkSide(ca, g, dtype)
        self.sb = _ShrunkSide(cb, g, dtype)
        self.root = (self.sa.u * self.sb.u).sqrt()
        self.cab = _scaled(cab, self.root, dtype)
        self.x = self.sa.inv @ self.cab
        self.y = self.cab @ self.sb.inv
        self.f_ab = _dot(self.x, self.y)
        # An all-constant batch has f_ab = f_aa = f_bb = 0: the floor keeps r = 0 and finite.
        self.denom_sq = self.sa.f * self.sb.f + TINY**2
        self.r = self.f_ab / self.denom_sq.sqrt()
        self.value = 1.0 - self.r

    def grad(self, go: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        dr = -go
        c_ab = dr / self.denom_sq.sqrt()
        c_aa = -0.5 * dr * self.r * self.sb.f / self.denom_sq
        c_bb = -0.5 * dr * self.r * self.sa.f / self.denom_sq
        # d f_ab / dA = -Z X^T, / dB = -Z^T Y, / dC_ab~ = 2 Z with Z = A^-1 C_ab~ B^-1.
        zs = (self.x @ self.sb.inv).mul_((-c_ab).to(self.x.dtype))
        z_dot_cab = -2.0 * _dot(zs, self.cab)
        g_a = self.sa.grad(zs @ self.x.mT, c_aa, z_dot_cab)
        g_b = self.sb.grad(zs.mT @ self.y, c_bb, z_dot_cab)
        return g_a, g_b, zs.mul_((-2.0 * self.root).to(zs.dtype))


class _FusedDense(torch.autograd.Function):
    """``(total, spec, orth, sub)`` of the default objective; only ``total`` is differentiable.

    Inputs: ``ca, cb`` (spectral and orthogonality terms) and ``sa, sb, sab`` (subspace term;
    ``None`` for ``sa, sb`` when they are ``ca, cb``, so that each covariance gets one gradient).
    """

    @staticmethod
    def forward(ctx: Any, ca: Tensor, cb: Tensor, sa: Any, sb: Any, sab: Tensor, cfg: Any) -> Any:
        # Autocast would lower float32 products to bf16/fp16: the precision is set here.
        with torch.autocast(ca.device.type, enabled=False):
            return _FusedDense._forward(ctx, ca, cb, sa, sb, sab, cfg)

    @staticmethod
    def _forward(ctx: Any, ca: Tensor, cb: Tensor, sa: Any, sb: Any, sab: Tensor, cfg: Any) -> Any:
        cfg, products = cfg
        zero = torch.zeros((), dtype=F64, device=ca.device)
        spec = orth = sub = zero
        dmax = max(ca.shape[0], cb.shape[0])
        pooled = sa is not None
        ctx.cfg, ctx.pooled = cfg, pooled
        sides = (sa.dtype, sb.dtype) if pooled else (None, None)
        ctx.dtypes = (ca.dtype, cb.dtype, *sides, sab.dtype)
        ctx.spec = ctx.orth = ctx.sub = None
        if cfg.w_spec != 0.0:
            dt = factor_dtype(products, 1.0 + cfg.a * dmax)
            ctx.spec = (_Spectral(ca, cfg.a, dt), _Spectral(cb, cfg.a, dt))
            spec = ctx.spec[0].value + ctx.spec[1].value
        if cfg.w_orth != 0.0:
            dt = factor_dtype(products, 1.0)
            ctx.orth = (_Orthogonality(ca, dt), _Orthogonality(cb, dt))
            orth = ctx.orth[0].value + ctx.orth[1].value
        if cfg.w_sub != 0.0:
            dt = factor_dtype(products, 1.0 + dmax / (cfg.shrinkage + RIDGE))
            pa, pb = (sa, sb) if pooled else (ca, cb)
            ctx.sub = _Shrunk(pa, pb, sab, cfg.shrinkage, dt)
            sub = ctx.sub.value
        total = cfg.w_spec * spec + cfg.w_orth * orth + cfg.w_sub * sub
        terms = (spec.clone(), orth.clone(), sub.clone())
        ctx.mark_non_differentiable(*terms)
        return (total, *terms)

    @staticmethod
    def backward(ctx: Any, grad: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
        with torch.autocast(grad.device.type, enabled=False):
            return _FusedDense._backward(ctx, grad.to(F64))

    @staticmethod
    def _backward(ctx: Any, go: Tensor) -> tuple[Tensor | None, ...]:
        cfg = ctx.cfg
        grads: list[Tensor | None] = [None, None]
        g_sub: tuple[Tensor, Tensor, Tensor] | None = None
        if ctx.sub is not None:
            g_sub = ctx.sub.grad(go * cfg.w_sub)
        for i in (0, 1):
            total: Tensor | None = None
            diag: Tensor | None = None
            if g_sub is not None and not ctx.pooled:
                total = g_sub[i]
            if ctx.spec is not None:
                minv, beta = ctx.spec[i].grad(go * cfg.w_spec)
                total = minv if total is None else total.add_(minv.to(total.dtype))
                diag = beta
            if ctx.orth is not None:
                el, d_orth = ctx.orth[i].grad(go * cfg.w_orth)
                total = el if total is None else total.add_(el.to(total.dtype))
                diag = d_orth if diag is None else diag + d_orth
            if total is not None and diag is not None:
                total.diagonal().add_(diag.to(total.dtype))
            grads[i] = None if total is None else total.to(ctx.dtypes[i])
        out: list[Tensor | None] = [grads[0], grads[1], None, None, None, None]
        if g_sub is not None:
            if ctx.pooled:
                out[2], out[3] = g_sub[0].to(ctx.dtypes[2]), g_sub[1].to(ctx.dtypes[3])
            out[4] = g_sub[2].to(ctx.dtypes[4])
        return tuple(out)


def fused_dense_terms(
    ca: Tensor,
    cb: Tensor,
    cab: Tensor,
    cfg: FusedConfig,
    products: torch.dtype,
    *,
    sub: tuple[Tensor, Tensor, Tensor] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The default dense objective from covariances, in one autograd node.

    Args:
        ca, cb: covariances of the two sides (``d_a x d_a``, ``d_b x d_b``).
        cab: cross-covariance (``d_a x d_b``); unused when ``sub`` is given.
        cfg: weights and the shrinkage ``g``.
        products: dtype of the embeddings' products (float32 selects float32 factorisations
            where the conditioning allows, see :func:`factor_dtype`).
        sub: ``(C_a, C_b, C_ab)`` the subspace term reads instead (pooled statistics).

    Returns:
        ``(total, parts)``: the float64 0-d loss and its non-zero-weight terms (detached).
    """
    sa, sb, sab = (None, None, cab) if sub is None else sub
    total, spec, orth, sub_v = _FusedDense.apply(ca, cb, sa, sb, sab, (cfg, products))
    parts: dict[str, Tensor] = {}
    if cfg.w_spec != 0.0:
        parts["spectral_balance"] = spec
    if cfg.w_orth != 0.0:
        parts["feature_orthogonality"] = orth
    if cfg.w_sub != 0.0:
        parts["subspace_consistency"] = sub_v
    return total, parts
