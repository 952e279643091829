"""The dense-feature objectives: spectral balance, feature orthogonality, subspace consistency.

These are densefeat's own definitions (the paper that motivates them publishes no formulas);
docs/design.md, Objectives, fixes them. Each is a function of the batch moments
(:mod:`densefeat.functional.moments`), so :func:`dense_feature_loss` computes every covariance
once and the distributed losses reuse the same code on global-batch moments.

Numerics: the ``n x d`` products stay in the input precision (never below float32); the
``d x d`` algebra (Cholesky, inverses, eigenvalues) runs in float64, and the loss is returned
in the products' dtype. The default path uses Cholesky and matmuls only: no
eigendecomposition, whose gradients blow up at repeated eigenvalues and which costs ~20x a
VICReg step on a GPU.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from ..choices import CONSISTENCY_FORMS, DEFAULT_CONSISTENCY, DEFAULT_SHRINKAGE, DEFAULT_WEIGHTS
from ._numerics import RIDGE, SHIFT_FLOOR, TINY, VAR_EPS, cholesky
from ._validation import as_matrix, check_pair
from .fused import FusedConfig, fused_dense_terms
from .moments import Moments, moments

__all__ = [
    "CONSISTENCY_FORMS",
    "DEFAULT_CONSISTENCY",
    "DEFAULT_SHRINKAGE",
    "DEFAULT_WEIGHTS",
    "dense_feature_loss",
    "dense_feature_loss_from_moments",
    "feature_orthogonality_from_cov",
    "feature_orthogonality_loss",
    "spectral_balance_entropy_from_cov",
    "spectral_balance_from_cov",
    "spectral_balance_loss",
    "subspace_consistency_from_moments",
    "subspace_consistency_loss",
    "warn_small_batch",
]

# DEFAULT_WEIGHTS (equal term weights), CONSISTENCY_FORMS ("shrunk" default, "cca") and
# DEFAULT_SHRINKAGE (g in C + g tr(C)/d I) are defined in densefeat.choices, imported above,
# so that parsers read them without importing torch.

# The constants and the checked Cholesky live in ._numerics, shared with the fused path.
_VAR_EPS, _RIDGE, _TINY, _SHIFT_FLOOR = VAR_EPS, RIDGE, TINY, SHIFT_FLOOR
_cholesky = cholesky


def warn_small_batch(n: int, d: int) -> None:
    """Warn when ``n < 2d``: covariance objectives are near-trivial or noisy there.

    With fewer rows than about twice the dimension the whitened cross-covariance of two windows
    is close to the identity whatever the encoder does (n - 1 canonical correlations are 1 when
    n <= d), and covariance spectra are dominated by sampling noise.
    """
    if n < 2 * d:
        warnings.warn(
            f"batch of n={n} rows for d={d} features: covariance objectives want n >= 2d "
            f"(= {2 * d}); the subspace-consistency term is near-trivial below that",
            RuntimeWarning,
            stacklevel=3,
        )


def _ridge(c: Tensor) -> Tensor:
    d = c.shape[0]
    return _RIDGE * c.diagonal().sum() / d + _TINY


class _LogdetSPD(torch.autograd.Function):
    """``logdet(M)`` of a symmetric positive definite ``M`` by Cholesky.

    Backward is the closed form ``d logdet(M) / dM = M^-1`` (one ``cholesky_inverse``), about
    half the work of differentiating through the Cholesky factorisation itself.
    """

    @staticmethod
    def forward(ctx: Any, m: Tensor) -> Tensor:
        chol = _cholesky(m, "spectral_balance_loss")
        ctx.save_for_backward(chol)
        return 2.0 * chol.diagonal().log().sum()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (chol,) = ctx.saved_tensors
        return grad * torch.cholesky_inverse(chol)


def spectral_balance_from_cov(cov: Tensor, a: float = 1.0) -> Tensor:
    """Coding-rate spectral balance of a covariance: ``1 - logdet(I + a d C/trC) / (d log(1+a))``.

    Follows MCR^2's coding rate (Yu et al. 2020) on the trace-normalised covariance. By
    concavity of logdet at fixed trace it is 0 iff ``C`` is isotropic and lies in [0, 1);
    the gradient ``(I + a d C/trC)^-1`` is bounded by construction and largest along the
    smallest eigenvalues, which it lifts first. Computed by Cholesky, eigen-free, in float64
    (the ``1 / tr C`` factors overflow float32 on a collapsed batch).
    """
    c = cov.to(torch.float64)
    d = c.shape[0]
    tr = c.diagonal().sum() + _TINY
    m = torch.eye(d, dtype=c.dtype, device=c.device) + (a * d / tr) * c
    return (1.0 - _LogdetSPD.apply(m) / (d * math.log1p(a))).to(cov.dtype)


def spectral_balance_entropy_from_cov(cov: Tensor, eps: float = 1e-12) -> Tensor:
    """Exact spectral-entropy balance of a covariance: ``log d - H(p)``, ``p = eig(C) / tr C``.

    ``eigvalsh``'s backward uses the eigenvalues' own gradients only (``v_i v_i^T``), which stay
    bounded at ties; the log is guarded by ``eps`` so a zero eigenvalue (n < d, constant
    columns) gives a gradient of ``-log(eps) ~ 28``, not inf.
    """
    c = cov.to(torch.float64)
    d = c.shape[0]
    lam = torch.linalg.eigvalsh(c).clamp_min(0.0)
    p = lam / (lam.sum() + _TINY)
    h = -(p * (p + eps).log()).sum()
    return (math.log(d) - h).to(cov.dtype)


def spectral_balance_loss(z: Tensor, *, variant: str = "coding_rate", a: float = 1.0) -> Tensor:
    """Spectral balance ("spreading") of one embedding matrix.

    Variants:
        ``coding_rate`` (default): ``L = 1 - logdet(I + a d C/trC) / (d log(1 + a))``, in [0, 1),
        0 iff ``C`` is isotropic. Cholesky only.
        ``entropy``: ``L = log d - H(p)``, ``p = eig(C) / trC``, in [0, log d]; exact spectral
        entropy through ``eigvalsh`` (a d^3 eigensolver per step: slower, for analysis).

    Not ``d sum p^2 - 1``: on standardised features that equals the mean squared off-diagonal
    correlation, i.e. VICReg's covariance term, and would make this term redundant.

    Args:
        z: (n, d) embeddings.
        variant: ``"coding_rate"`` or ``"entropy"``.
        a: coding-rate distortion constant (``a = d / (n eps^2)`` in MCR^2), 1 by default.
    """
    z = as_matrix(z, "z")
    cov = moments(z).cov_a
    if variant == "coding_rate":
        return spectral_balance_from_cov(cov, a)
    if variant == "entropy":
        return spectral_balance_entropy_from_cov(cov)
    raise ValueError(f"variant must be 'coding_rate' or 'entropy', got {variant!r}")


def feature_orthogonality_from_cov(cov: Tensor, var_eps: float = _VAR_EPS) -> Tensor:
    """Mean squared off-diagonal correlation plus VICReg's variance hinge (std >= 1).

    ``L = sum_{i != j} R_ij^2 / (d (d - 1)) + mean_j relu(1 - sqrt(C_jj + 1e-4))`` with
    ``R = D^-1/2 C D^-1/2``, ``D = diag(C) + 1e-4 tr(C)/d``. This is VICReg's variance and
    covariance terms (Bardes et al. 2022) taken on correlations instead of covariances, so the
    decorrelation is scale-free and the hinge alone fixes the scale. It is kept for decorrelated,
    axis-aligned (interpretable) features; spectral balance alone is rotation-invariant.
    """
    c = cov.to(torch.float64)
    d = c.shape[0]
    var = c.diagonal()
    w = 1.0 / (var + _ridge(c))
    # sum_ij R_ij^2 = w^T (C o C) w with w = 1 / diag(D): two matrix-vector products instead of
    # materialising R (this term is elementwise work on d x d, keep it off the hot path).
    total = w @ c.square() @ w
    off = (total - (var * w).square().sum()) / max(d * (d - 1), 1)
    hinge = torch.relu(1.0 - (var + var_eps).sqrt()).mean()
    return (off + hinge).to(cov.dtype)


def feature_orthogonality_loss(z: Tensor) -> Tensor:
    """Feature orthogonality of one embedding matrix; see :func:`feature_orthogonality_from_cov`."""
    z = as_matrix(z, "z")
    return feature_orthogonality_from_cov(moments(z).cov_a)


class _WhitenedCrossSq(torch.autograd.Function):
    """``f = ||La^-1 B Lc^-T||_F^2 = tr(A^-1 B C^-1 B^T)`` for SPD ``A = La La^T``, ``C = Lc Lc^T``.

    Triangular solves only (no explicit inverse), with the closed-form backward: with
    ``T = La^-1 B Lc^-T``, ``U = La^-T T`` and ``V = Lc^-T T^T``,
    ``df/dA = -U U^T``, ``df/dC = -V V^T`` and ``df/dB = 2 A^-1 B C^-1 = 2 U Lc^-1``.
    About half the work of autograd through the factorisations and solves.
    """

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, c: Tensor) -> Tensor:
        la = _cholesky(a, "subspace_consistency_loss")
        lc = _cholesky(c, "subspace_consistency_loss")
        t = torch.linalg.solve_triangular(la, b, upper=False)
        t = torch.linalg.solve_triangular(lc.mT, t, upper=True, left=False)  # (La^-1 B) Lc^-T
        ctx.save_for_backward(la, lc, t)
        return t.square().sum()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        la, lc, t = ctx.saved_tensors
        u = torch.linalg.solve_triangular(la.mT, t, upper=True)
        v = torch.linalg.solve_triangular(lc.mT, t.mT, upper=True)
        q = torch.linalg.solve_triangular(lc, u, upper=False, left=False)  # U Lc^-1
        return -grad * (u @ u.mT), 2.0 * grad * q, -grad * (v @ v.mT)


def _whitened_cross_sq(ca: Tensor, cb: Tensor, cab: Tensor) -> Tensor:
    """``||La^-1 C_ab Lb^-T||_F^2`` with ``La La^T = C_a + eps_a I`` (sum of squared CCs)."""
    eye_a = torch.eye(ca.shape[0], dtype=ca.dtype, device=ca.device)
    eye_b = torch.eye(cb.shape[0], dtype=cb.dtype, device=cb.device)
    return _WhitenedCrossSq.apply(ca + _ridge(ca) * eye_a, cab, cb + _ridge(cb) * eye_b)


class _ShrunkCKA(torch.autograd.Function):
    """``r = tr(A^-1 C_ab B^-1 C_ab^T) / sqrt(tr((A^-1 C_a)^2) tr((B^-1 C_b)^2))``.

    ``A = C_a + s_a I``, ``s_a = (g + 1e-4) tr(C_a) / d_a`` (``B`` likewise): linear CKA of the
    shrinkage-whitened features (:func:`subspace_consistency_loss`). One Cholesky factorisation
    and one ``cholesky_inverse`` per side; ``A^-1 C_a = I - s_a A^-1``, so the normalisers are
    elementwise. The backward is the closed form, with ``X = A^-1 C_ab``, ``Y = C_ab B^-1``,
    ``Z = X B^-1``, ``P_a = I - s_a A^-1`` and ``f_aa = ||P_a||_F^2``:
    ``d f_ab / dA = -Z X^T``, ``d f_ab / dB = -Z^T Y``, ``d f_ab / dC_ab = 2 Z``,
    ``d f_aa / dA = 2 s_a A^-1 P_a A^-1`` and ``d f_aa / ds_a = -2 tr(P_a A^-1)`` (explicit
    ``s_a``), ``s_a`` entering ``A`` as ``s_a I`` and depending on ``tr C_a``. Nine ``d x d``
    matmuls in all, about half of autograd's.

    The ``d x d`` products run in ``mm_dtype`` (float32 for float32 embeddings), the
    factorisations, inverses and sums in float64: the shrinkage bounds the condition number of
    ``A`` by ``1 + d / g``, so float32 products lose ~1e-6 relative (tests/test_consistency.py
    states the tolerance), where the unshrunk ``"cca"`` form (condition up to 1e4 d) could not.
    """

    @staticmethod
    def forward(ctx: Any, ca: Tensor, cb: Tensor, cab: Tensor, g: float, mm_dtype: Any) -> Tensor:
        # Autocast would lower the float32 products to bf16/fp16: the precision is set here.
        with torch.autocast(ca.device.type, enabled=False):
            return _ShrunkCKA._forward(ctx, ca, cb, cab, g, mm_dtype)

    @staticmethod
    def _forward(ctx: Any, ca: Tensor, cb: Tensor, cab: Tensor, g: float, mm_dtype: Any) -> Tensor:
        def side(c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            d = c.shape[0]
            s = (g + _RIDGE) * c.diagonal().sum() / d + _SHIFT_FLOOR
            eye = torch.eye(d, dtype=c.dtype, device=c.device)
            inv = torch.cholesky_inverse(_cholesky(c + s * eye, "subspace_consistency_loss"))
            return s, inv, eye - s * inv

        sa, ainv, pa = side(ca)
        sb, binv, pb = side(cb)
        x = ainv.to(mm_dtype) @ cab.to(mm_dtype)
        y = cab.to(mm_dtype) @ binv.to(mm_dtype)
        f_ab = (x.to(ca.dtype) * y.to(ca.dtype)).sum()
        f_aa, f_bb = pa.square().sum(), pb.square().sum()
        # An all-constant batch has f_ab = f_aa = f_bb = 0: the floor keeps r = 0 and finite.
        denom_sq = f_aa * f_bb + _TINY**2
        r = f_ab / denom_sq.sqrt()
        ctx.save_for_backward(sa, sb, ainv, binv, pa, pb, x, y, f_aa, f_bb, denom_sq, r)
        ctx.g, ctx.mm_dtype = g, mm_dtype
        return r

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        with torch.autocast(grad.device.type, enabled=False):
            return _ShrunkCKA._backward(ctx, grad)

    @staticmethod
    def _backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        sa, sb, ainv, binv, pa, pb, x, y, f_aa, f_bb, denom_sq, r = ctx.saved_tensors
        mm, f64 = ctx.mm_dtype, ainv.dtype
        c_ab = grad / denom_sq.sqrt()
        c_aa = -0.5 * grad * r * f_bb / denom_sq
        c_bb = -0.5 * grad * r * f_aa / denom_sq
        ainv_m, binv_m = ainv.to(mm), binv.to(mm)
        z = x @ binv_m

        def side(s, inv, inv_m, p, cross, c_self):
            # d/dM of the f_ab and f_aa parts (M = C + s I), then s's share through tr(C).
            g_m = -c_ab * cross.to(f64) + (2.0 * c_self * s) * (inv_m @ (p.to(mm) @ inv_m)).to(f64)
            g_s = g_m.diagonal().sum() - 2.0 * c_self * (p * inv).sum()
            d = inv.shape[0]
            return g_m + (g_s * (ctx.g + _RIDGE) / d) * torch.eye(d, dtype=f64, device=inv.device)

        grad_ca = side(sa, ainv, ainv_m, pa, z @ x.mT, c_aa)
        grad_cb = side(sb, binv, binv_m, pb, z.mT @ y, c_bb)
        return grad_ca, grad_cb, (2.0 * c_ab) * z.to(f64), None, None


def _shrunk_cka(ca: Tensor, cb: Tensor, cab: Tensor, shrinkage: float, mm_dtype: Any) -> Tensor:
    """``tr(A^-1 C_ab B^-1 C_ab^T) / sqrt(tr((A^-1 C_a)^2) tr((B^-1 C_b)^2))``, by
    :class:`_ShrunkCKA`.

    Equal to linear CKA between the whitened features ``za A^-1/2`` and ``zb B^-1/2`` (their
    covariances are ``A^-1/2 C_a A^-1/2``, and ``tr(A^-1 C_a A^-1 C_a)`` is its squared
    Frobenius norm), so it lies in [0, 1] by Cauchy-Schwarz. No square root of a matrix is
    formed.

    The ratio is invariant to the scale of either side, so each side is first divided by its
    mean variance ``tr(C)/d``: the inverses are then bounded by ``1 / g`` whatever the data's
    units (no float32 overflow in the products), and an all-constant batch meets the floor
    ``s >= 1e-12`` instead of a near-zero shift.
    """
    ta = ca.diagonal().sum() / ca.shape[0] + _TINY
    tb = cb.diagonal().sum() / cb.shape[0] + _TINY
    return _ShrunkCKA.apply(ca / ta, cb / tb, cab / (ta * tb).sqrt(), float(shrinkage), mm_dtype)


def _check_consistency(consistency: str, shrinkage: float) -> None:
    if consistency not in CONSISTENCY_FORMS:
        raise ValueError(f"consistency must be one of {CONSISTENCY_FORMS}, got {consistency!r}")
    if not (math.isfinite(shrinkage) and shrinkage >= 0.0):
        raise ValueError(f"shrinkage must be a finite number >= 0, got {shrinkage!r}")


def subspace_consistency_from_moments(
    m: Moments,
    top_k: int | None = None,
    consistency: str = DEFAULT_CONSISTENCY,
    shrinkage: float = DEFAULT_SHRINKAGE,
    *,
    products_dtype: torch.dtype | None = None,
) -> Tensor:
    """Subspace-consistency loss from paired moments; see :func:`subspace_consistency_loss`.

    ``products_dtype``: the dtype of the embeddings' products when ``m`` already holds float64
    covariances (:func:`dense_feature_loss_from_moments` converts them once); by default that
    of ``m.cov_a``. It sets the precision of the ``"shrunk"`` form's ``d x d`` products.
    """
    if m.cov_b is None or m.cov_ab is None:
        raise ValueError("subspace consistency needs paired moments (za and zb)")
    _check_consistency(consistency, shrinkage)
    ca = m.cov_a.to(torch.float64)
    cb = m.cov_b.to(torch.float64)
    cab = m.cov_ab.to(torch.float64)
    k = min(ca.shape[0], cb.shape[0])
    if top_k is not None:
        if not 1 <= top_k <= ca.shape[0]:
            raise ValueError(f"top_k must be in [1, d_a = {ca.shape[0]}], got {top_k}")
        # Top-k principal axes of window t, detached: no eigenvector gradients, which are
        # unbounded at repeated eigenvalues. Only window t is restricted; window t+1 keeps all
        # of its dimensions, so the loss asks how much of t's leading subspace t+1 explains.
        with torch.no_grad():
            _, vec = torch.linalg.eigh(ca)
            v = vec[:, -top_k:]
        ca = v.T @ ca @ v
        cab = v.T @ cab
        k = top_k
    if consistency == "shrunk":
        # float32 embeddings: float32 d x d products (see _ShrunkCKA); float64 stays float64.
        dtype = products_dtype or m.cov_a.dtype
        mm = torch.float64 if dtype == torch.float64 else torch.float32
        loss = 1.0 - _shrunk_cka(ca, cb, cab, shrinkage, mm)
    else:
        loss = 1.0 - _whitened_cross_sq(ca, cb, cab) / k
    return loss.to(m.cov_a.dtype)


def subspace_consistency_loss(
    za: Tensor,
    zb: Tensor,
    *,
    top_k: int | None = None,
    consistency: str = DEFAULT_CONSISTENCY,
    shrinkage: float = DEFAULT_SHRINKAGE,
) -> Tensor:
    """Subspace consistency of paired embeddings (two time windows, views or modalities).

    It is the term that sees which rows pair up: without it a random encoder plus whitening
    minimises everything. Near 0 when one side is a linear function of the other, near its
    chance level when the rows are unrelated (row-shuffled). Two forms (``consistency``):

    ``"shrunk"`` (default): with the shrunk covariances ``A = C_a + g tr(C_a)/d_a I`` and
    ``B = C_b + g tr(C_b)/d_b I`` (``g = shrinkage``, 3 by default; a ``1e-4 tr(C)/d`` ridge
    is added to ``g``),
    ``L_sub = 1 - tr(A^-1 C_ab B^-1 C_ab^T) / sqrt(tr((A^-1 C_a)^2) tr((B^-1 C_b)^2))``,
    i.e. one minus linear CKA (Kornblith et al. 2019) between the shrinkage-whitened features
    ``za A^-1/2`` and ``zb B^-1/2``. In [0, 1] by Cauchy-Schwarz, 0 when ``zb = za``. ``g -> 0``
    is the sum of squared canonical correlations over its own maximum; ``g -> inf`` is linear
    CKA of ``za`` and ``zb``. Why shrink: sample canonical correlations of unrelated windows
    are large unless ``n >> d`` (the smallest covariance eigenvalues are noise, and full
    whitening amplifies them), so the ``"cca"`` form's paired-vs-shuffled gap at n = 256,
    d = 128 is ~1/4 of its large-n gap; shrinkage keeps more (benchmarks/consistency_levers.py,
    docs/design.md §4). Cholesky, ``cholesky_inverse`` and matmuls only (eigen-free).

    ``"cca"``: ``L_sub = 1 - ||La^-1 C_ab Lb^-T||_F^2 / min(d_a, d_b)`` with ``La, Lb`` the
    Cholesky factors of ``C_a + eps I``, ``C_b + eps I``, ``eps = 1e-4 tr(C)/d``: one minus
    the mean squared canonical correlation, invariant to invertible linear maps of either side.
    Related to W-MSE (Ermolov et al. 2021) and Barlow Twins on whitened features.

    Both are invariant to rotations, scale and shifts of either side, so the two sides may come
    from different encoders and ``d_a`` may differ from ``d_b``.

    Args:
        za: (n, d_a) embeddings at window t (or view/modality a).
        zb: (n, d_b) embeddings of the same rows at window t+1.
        top_k: restrict window t to its top-k principal subspace (taken detached).
        consistency: ``"shrunk"`` (default) or ``"cca"``.
        shrinkage: ``g >= 0`` of the ``"shrunk"`` form (unused by ``"cca"``).
    """
    za = as_matrix(za, "za")
    zb = as_matrix(zb, "zb")
    check_pair(za, zb)
    warn_small_batch(za.shape[0], max(za.shape[1], zb.shape[1]))
    return subspace_consistency_from_moments(moments(za, zb), top_k, consistency, shrinkage)


def dense_feature_loss_from_moments(
    m: Moments,
    *,
    w_spec: float = DEFAULT_WEIGHTS["w_spec"],
    w_orth: float = DEFAULT_WEIGHTS["w_orth"],
    w_sub: float = DEFAULT_WEIGHTS["w_sub"],
    top_k: int | None = None,
    spectral_variant: str = "coding_rate",
    consistency: str = DEFAULT_CONSISTENCY,
    shrinkage: float = DEFAULT_SHRINKAGE,
    sub_moments: Moments | None = None,
    reference: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """:func:`dense_feature_loss` on precomputed (possibly global-batch) moments.

    ``sub_moments``: the moments the subspace term reads instead of ``m`` (the pooled
    statistics of :func:`densefeat.functional.moments.pooled_moments`); the spectral and
    orthogonality terms always read this batch's ``m``.

    ``reference``: compute term by term with float64 factorisations (the reference of the
    tests) instead of the fused node of :mod:`densefeat.functional.fused`, which the default
    variants (coding-rate spectral balance, "shrunk" consistency, no ``top_k``) use otherwise.
    """
    if m.cov_b is None:
        raise ValueError("dense_feature_loss needs paired moments (za and zb)")
    if spectral_variant not in ("coding_rate", "entropy"):
        raise ValueError(
            f"spectral_variant must be 'coding_rate' or 'entropy', got {spectral_variant!r}"
        )
    _check_consistency(consistency, shrinkage)
    spec_fn = (
        spectral_balance_from_cov
        if spectral_variant == "coding_rate"
        else spectral_balance_entropy_from_cov
    )
    out_dtype = m.cov_a.dtype
    fused_ok = spectral_variant == "coding_rate" and (
        w_sub == 0.0 or (consistency == "shrunk" and top_k is None)
    )
    if fused_ok and not reference:
        return _fused_loss(m, sub_moments, w_spec, w_orth, w_sub, shrinkage)
    # Every term works on float64 d x d matrices: convert them once, not once per term.
    m = replace(
        m,
        cov_a=m.cov_a.to(torch.float64),
        cov_b=m.cov_b.to(torch.float64),
        cov_ab=m.cov_ab.to(torch.float64) if m.cov_ab is not None else None,
    )
    parts: dict[str, Tensor] = {}
    total = m.cov_a.new_zeros(())
    # A weight of exactly 0 skips the term (ablations pay nothing for it).
    if w_spec != 0.0:
        parts["spectral_balance"] = spec_fn(m.cov_a) + spec_fn(m.cov_b)
        total = total + w_spec * parts["spectral_balance"]
    if w_orth != 0.0:
        parts["feature_orthogonality"] = feature_orthogonality_from_cov(
            m.cov_a
        ) + feature_orthogonality_from_cov(m.cov_b)
        total = total + w_orth * parts["feature_orthogonality"]
    if w_sub != 0.0:
        parts["subspace_consistency"] = subspace_consistency_from_moments(
            m if sub_moments is None else sub_moments,
            top_k,
            consistency,
            shrinkage,
            products_dtype=out_dtype,
        )
        total = total + w_sub * parts["subspace_consistency"]
    terms = {name: value.detach().to(out_dtype) for name, value in parts.items()}
    terms["loss"] = total.detach().to(out_dtype)
    return total.to(out_dtype), terms


def _fused_loss(
    m: Moments,
    sub_moments: Moments | None,
    w_spec: float,
    w_orth: float,
    w_sub: float,
    shrinkage: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The default variants through :func:`densefeat.functional.fused.fused_dense_terms`."""
    assert m.cov_b is not None and m.cov_ab is not None
    cfg = FusedConfig(w_spec=w_spec, w_orth=w_orth, w_sub=w_sub, shrinkage=float(shrinkage))
    out_dtype = m.cov_a.dtype
    sub = None
    if sub_moments is not None and w_sub != 0.0:
        if sub_moments.cov_b is None or sub_moments.cov_ab is None:
            raise ValueError("subspace consistency needs paired moments (za and zb)")
        sub = (sub_moments.cov_a, sub_moments.cov_b, sub_moments.cov_ab)
    total, parts = fused_dense_terms(m.cov_a, m.cov_b, m.cov_ab, cfg, out_dtype, sub=sub)
    terms = {name: value.to(out_dtype) for name, value in parts.items()}
    terms["loss"] = total.detach().to(out_dtype)
    return total.to(out_dtype), terms


def dense_feature_loss(
    za: Tensor,
    zb: Tensor,
    *,
    w_spec: float = DEFAULT_WEIGHTS["w_spec"],
    w_orth: float = DEFAULT_WEIGHTS["w_orth"],
    w_sub: float = DEFAULT_WEIGHTS["w_sub"],
    top_k: int | None = None,
    spectral_variant: str = "coding_rate",
    consistency: str = DEFAULT_CONSISTENCY,
    shrinkage: float = DEFAULT_SHRINKAGE,
    reference: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The dense-feature objective on a pair of windows/views/modalities.

    ``L = w_spec (L_spec(za) + L_spec(zb)) + w_orth (L_orth(za) + L_orth(zb))
    + w_sub L_sub(za, zb)``. No labels, no reconstruction. Each matrix's covariance (and the
    cross-covariance) is computed once and shared by the three terms.

    Args:
        za, zb: (n, d) paired embeddings (``d_a`` may differ from ``d_b``).
        w_spec, w_orth, w_sub: term weights; 0 removes a term (ablations).
        top_k: top-k form of the subspace term (see :func:`subspace_consistency_loss`).
        spectral_variant: ``"coding_rate"`` (default) or ``"entropy"``.
        consistency: form of the subspace term, ``"shrunk"`` (default) or ``"cca"``.
        shrinkage: ``g`` of the ``"shrunk"`` form.
        reference: the per-term float64 path instead of the fused one (tests' reference; see
            :func:`dense_feature_loss_from_moments`).

    Returns:
        ``(loss, terms)``: the 0-d loss and a dict of detached term values (unweighted sums over
        the two matrices) plus ``"loss"``, for logging.
    """
    za = as_matrix(za, "za")
    zb = as_matrix(zb, "zb")
    check_pair(za, zb)
    warn_small_batch(za.shape[0], max(za.shape[1], zb.shape[1]))
    return dense_feature_loss_from_moments(
        moments(za, zb),
        w_spec=w_spec,
        w_orth=w_orth,
        w_sub=w_sub,
        top_k=top_k,
        spectral_variant=spectral_variant,
        consistency=consistency,
        shrinkage=shrinkage,
        reference=reference,
    )
