"""Comparing two embedding matrices: principal angles, subspace distances and linear CKA.

Two notions of "the same subspace" appear in docs/design.md and must not be confused:

* **sample space** (:func:`subspace_distance`) — the rows of ``Za`` and ``Zb`` pair up (the
  same subjects at two time windows, or two modalities): compare the top-k *left* singular
  vectors, i.e. which patterns over subjects the two matrices express. Valid across different
  models and feature dimensions. Computed from the d x d statistics ``C_a, C_b, C_ab`` — never
  an n x n matrix — so it streams (``densefeat.metrics``).
* **feature space** (:func:`subspace_distance_feature`) — the top-k principal *axes*; only
  meaningful when both matrices come from the same model (same coordinates).

All results are float64. Inputs are torch tensors or NumPy arrays. The functions of d x d
statistics (``*_from_covariances``, ``*_from_stats``, :func:`chance_subspace_distance`) are
NumPy only and never import torch, so a streaming analysis can run without it; the functions
that take rows import torch when called.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from .spectrum import _as_matrix64, one_blas_thread

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "chance_subspace_distance",
    "linear_cka",
    "linear_cka_debiased",
    "linear_cka_debiased_from_stats",
    "linear_cka_from_covariances",
    "principal_angles",
    "sample_space_cosines",
    "subspace_distance",
    "subspace_distance_feature",
    "subspace_distance_from_covariances",
]

_EPS64 = float(np.finfo(np.float64).eps)


def _orth(a: Tensor) -> Tensor:
    """Orthonormal basis of the column space (rank by ``s > s_1 * max(m, n) * eps``)."""
    import torch

    u, s, _ = torch.linalg.svd(a, full_matrices=False)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return u[:, :0]
    tol = float(s[0]) * max(a.shape) * _EPS64
    return u[:, : int((s > tol).sum())]


def principal_angles(a: Any, b: Any) -> Tensor:
    """Principal angles (radians, descending) between the column spaces of ``a`` and ``b``.

    Björck & Golub (1973) with Knyazev & Argentati's (2002) sine-based refinement for small
    angles: cosines from ``svd(Qa^T Qb)``, sines from the singular values of the part of one
    basis orthogonal to the other, and each angle taken from its sine where its own
    ``cos^2 >= 1/2`` (``theta <= pi/4``), from its cosine elsewhere: ``arccos`` loses digits
    near 0 (``1 - cos theta ~ theta^2 / 2``) and ``arcsin`` near ``pi/2``, so both ends keep
    an absolute accuracy of ~1e-16.

    This is the algorithm of ``scipy.linalg.subspace_angles`` with one difference: scipy (1.17
    and earlier) tests ``cos^2 >= 1/2`` on the cosines in descending order but applies the
    test to the angles in descending order, i.e. to the reversed list. When small and large
    angles mix, its small angles then come from ``arccos`` (errors ~1e-8) and its angles near
    ``pi/2`` from ``arcsin``. Here the test is made per angle. The two agree when every angle
    is on the same side of ``pi/4``.

    Args:
        a: (n, p) matrix.
        b: (n, q) matrix with the same number of rows.

    Returns:
        float64 tensor of ``min(rank a, rank b)`` angles in ``[0, pi/2]``, largest first.
    """
    import torch

    from ._validation import as_matrix, check_pair

    a = as_matrix(a, "a", min_rows=1).to(torch.float64)
    b = as_matrix(b, "b", min_rows=1).to(torch.float64)
    check_pair(a, b, ("a", "b"))
    qa, qb = _orth(a), _orth(b)
    if qa.shape[1] == 0 or qb.shape[1] == 0:
        raise ValueError("principal_angles: one of the matrices is zero (no column space)")
    cross = qa.T @ qb
    sigma = torch.linalg.svdvals(cross)
    # Residual of the larger basis projected on the smaller one: its singular values are the
    # sines of the angles.
    resid = qb - qa @ cross if qa.shape[1] >= qb.shape[1] else qa - qb @ cross.T
    # Both lists in the order of the angles, largest first: the cosines ascending and the
    # sines descending. The i-th angle uses its own cosine for the choice of formula.
    cos = sigma.flip(0).clamp(-1.0, 1.0)
    small = cos.square() >= 0.5
    if bool(small.any()):
        sin = torch.linalg.svdvals(resid)[: sigma.numel()].clamp(-1.0, 1.0)
        return torch.where(small, torch.arcsin(sin), torch.arccos(cos))
    return torch.arccos(cos)


def _cov64(za: Tensor, zb: Tensor | None = None) -> tuple[Tensor, ...]:
    import torch

    za = za.to(torch.float64)
    zac = za - za.mean(0)
    n = za.shape[0]
    if zb is None:
        return (zac.T @ zac / (n - 1),)
    zb = zb.to(torch.float64)
    zbc = zb - zb.mean(0)
    return zac.T @ zac / (n - 1), zbc.T @ zbc / (n - 1), zac.T @ zbc / (n - 1)


def _eigh_desc(cov: Any) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors (columns, same order) of a symmetric matrix,
    float64, on one BLAS thread."""
    c = np.ascontiguousarray(_as_matrix64(cov))
    with one_blas_thread():
        lam, vec = np.linalg.eigh(c)
    return lam[::-1], vec[:, ::-1]


def _cov_rank(lam_desc: np.ndarray, n: int) -> int:
    if float(lam_desc[0]) <= 0.0:
        return 0
    return int(np.count_nonzero(lam_desc > float(lam_desc[0]) * max(n, lam_desc.size) * _EPS64))


def _sample_space_cosines(
    cov_a: Any,
    cov_b: Any,
    cov_ab: Any,
    n: int,
    k: int,
    eigh_a: tuple[np.ndarray, np.ndarray] | None = None,
    eigh_b: tuple[np.ndarray, np.ndarray] | None = None,
    stacklevel: int = 3,
) -> np.ndarray:
    """:func:`sample_space_cosines` in NumPy; ``eigh_a``/``eigh_b``: the descending
    eigendecompositions of ``cov_a``/``cov_b`` (:func:`_eigh_desc`) if already computed."""
    ca, cb, cab = _as_matrix64(cov_a), _as_matrix64(cov_b), _as_matrix64(cov_ab)
    if cab.shape != (ca.shape[0], cb.shape[0]):
        raise ValueError(
            f"cov_ab has shape {tuple(cab.shape)}, expected {(ca.shape[0], cb.shape[0])}"
        )
    kmax = min(n - 1, ca.shape[0], cb.shape[0])
    if not 1 <= k <= kmax:
        raise ValueError(f"k must be in [1, min(n - 1, d_a, d_b) = {kmax}], got k={k}")
    lam_a, va = eigh_a if eigh_a is not None else _eigh_desc(ca)
    lam_b, vb = eigh_b if eigh_b is not None else _eigh_desc(cb)
    rank = min(_cov_rank(lam_a, n), _cov_rank(lam_b, n))
    if rank == 0:
        raise ValueError("subspace comparison is undefined for a zero-variance matrix")
    if k > rank:
        warnings.warn(
            f"k={k} exceeds the numerical rank {rank} of the compared matrices; using k={rank}",
            RuntimeWarning,
            stacklevel=stacklevel,
        )
        k = rank
    m = (va[:, :k].T @ cab @ vb[:, :k]) / np.outer(np.sqrt(lam_a[:k]), np.sqrt(lam_b[:k]))
    with one_blas_thread():
        cos = np.linalg.svd(m, compute_uv=False)
    return cos.clip(0.0, 1.0)


def sample_space_cosines(cov_a: Any, cov_b: Any, cov_ab: Any, n: int, k: int) -> Tensor:
    """Cosines of the principal angles between the top-k sample-space subspaces.

    With ``Ua = Zac Va Sa^-1`` (top-k left singular vectors),
    ``Ua^T Ub = La^-1/2 Va^T C_ab Vb Lb^-1/2`` where ``La, Va`` are the top-k eigenpairs of
    ``C_a`` (the ``n - 1`` factors cancel). ``k`` is clipped to the numerical ranks of both
    covariances, with a warning: beyond them the "singular vectors" are rounding noise.

    The angles ``arccos(cos)`` resolve nothing below ~1e-8 rad: from d x d statistics a
    cosine is known to ~1e-16, and ``cos theta = 1 - theta^2 / 2``. The angles between
    matrices at hand are accurate to ~1e-16 with :func:`principal_angles`.

    Returns:
        float64 cosines in [0, 1], descending, length ``k`` (after clipping).
    """
    import torch

    return torch.from_numpy(_sample_space_cosines(cov_a, cov_b, cov_ab, n, k))


def subspace_distance_from_covariances(
    cov_a: Any, cov_b: Any, cov_ab: Any, n: int, k: int
) -> float:
    """Sample-space subspace distance ``sqrt(1 - ||Ua^T Ub||_F^2 / k)`` from d x d statistics."""
    cos = _sample_space_cosines(cov_a, cov_b, cov_ab, n, k)
    return _distance_from_cosines(cos)


def _distance_from_cosines(cos: np.ndarray) -> float:
    return math.sqrt(max(0.0, 1.0 - float(np.square(cos).sum()) / cos.size))


def subspace_distance(za: Any, zb: Any, k: int = 16) -> float:
    """Sample-space subspace distance between paired matrices (rows are the same samples).

    ``Ua, Ub`` = top-k left singular vectors of ``Zac, Zbc``;
    ``D = sqrt(1 - ||Ua^T Ub||_F^2 / k)`` in [0, 1]: 0 when the two matrices span the same
    k patterns over samples, ``sqrt(1 - k/(n-1))`` in expectation for unrelated ones
    (:func:`chance_subspace_distance`). ``d_a`` and ``d_b`` may differ.

    Args:
        za: (n, d_a) matrix.
        zb: (n, d_b) matrix, row i the same sample as row i of ``za``.
        k: subspace dimension (clipped to the numerical rank with a warning).
    """
    from ._validation import as_matrix, check_pair

    za = as_matrix(za, "za")
    zb = as_matrix(zb, "zb")
    check_pair(za, zb)
    ca, cb, cab = _cov64(za, zb)
    return _distance_from_cosines(_sample_space_cosines(ca, cb, cab, za.shape[0], k))


def chance_subspace_distance(n: int, k: int) -> float:
    """Expected sample-space distance of two unrelated k-dim subspaces: ``sqrt(1 - k/(n-1))``.

    Centred samples live in the (n - 1)-dim complement of the all-ones vector, and two
    uniformly random k-dim subspaces there have ``E ||Ua^T Ub||_F^2 = k^2 / (n - 1)``.
    (docs/design.md writes ``sqrt(1 - k/n)``; the two agree to O(k / n^2).)
    """
    return math.sqrt(max(0.0, 1.0 - k / (n - 1)))


def subspace_distance_feature(za: Any, zb: Any, k: int = 16) -> float:
    """Feature-space distance of the top-k principal axes: ``sqrt(1 - ||Va^T Vb||_F^2 / k)``.

    Only meaningful for two matrices in the same coordinates (one model at two times); rows
    need not pair up, and ``n_a`` may differ from ``n_b``.
    """
    from ._validation import as_matrix

    za = as_matrix(za, "za")
    zb = as_matrix(zb, "zb")
    if za.shape[1] != zb.shape[1]:
        raise ValueError(
            f"subspace_distance_feature needs the same feature dimension, got {za.shape[1]} "
            f"and {zb.shape[1]}"
        )
    if not 1 <= k <= za.shape[1]:
        raise ValueError(f"k must be in [1, d = {za.shape[1]}], got k={k}")
    va = _eigh_desc(_cov64(za)[0])[1][:, :k]
    vb = _eigh_desc(_cov64(zb)[0])[1][:, :k]
    return math.sqrt(max(0.0, 1.0 - float(np.square(va.T @ vb).sum()) / k))


def linear_cka_from_covariances(cov_a: Any, cov_b: Any, cov_ab: Any) -> float:
    """Linear CKA ``||C_ab||_F^2 / (||C_a||_F ||C_b||_F)`` (Kornblith et al. 2019)."""
    ca, cb, cab = _as_matrix64(cov_a), _as_matrix64(cov_b), _as_matrix64(cov_ab)
    denom = float(np.linalg.norm(ca) * np.linalg.norm(cb))
    if denom == 0.0:
        raise ValueError("linear_cka is undefined for a zero-variance matrix")
    return float(np.square(cab).sum() / denom)


def linear_cka(za: Any, zb: Any) -> float:
    """Linear CKA on centred features (Kornblith et al. 2019, eq. 4).

    ``||Zb_c^T Za_c||_F^2 / (||Za_c^T Za_c||_F ||Zb_c^T Zb_c||_F)``. Biased towards 1 when d is
    not small against n: independent Gaussian matrices at n=50, d=384 score ~0.89. Use
    :func:`linear_cka_debiased` there.
    """
    from ._validation import as_matrix, check_pair

    za = as_matrix(za, "za")
    zb = as_matrix(zb, "zb")
    check_pair(za, zb)
    return linear_cka_from_covariances(*_cov64(za, zb))


def _hsic_debiased(xty_sq: float, sum_ab: float, sum_a: float, sum_b: float, n: int) -> float:
    # Song et al. (2012) unbiased HSIC for linear kernels on centred features, up to the
    # common factor 1 / (n (n - 3)) which cancels in CKA (the form of Kornblith et al.'s code):
    # ||X^T Y||^2 - n/(n-2) sum_i a_i b_i + (sum a)(sum b) / ((n-1)(n-2)), a_i = ||x_i||^2.
    return xty_sq - n / (n - 2) * sum_ab + sum_a * sum_b / ((n - 1) * (n - 2))


def linear_cka_debiased_from_stats(
    cov_a: Any,
    cov_b: Any,
    cov_ab: Any,
    n: int,
    sum_sq_norm_ab: float,
    sum_sq_norm_aa: float,
    sum_sq_norm_bb: float,
) -> float:
    """Debiased linear CKA from streamable statistics.

    Args:
        cov_a, cov_b, cov_ab: unbiased (cross-)covariances.
        n: number of paired rows (>= 4).
        sum_sq_norm_ab: ``sum_i ||xa_i - mean_a||^2 ||xb_i - mean_b||^2``.
        sum_sq_norm_aa: ``sum_i ||xa_i - mean_a||^4``.
        sum_sq_norm_bb: ``sum_i ||xb_i - mean_b||^4``.
    """
    if n < 4:
        raise ValueError(f"linear_cka_debiased needs n >= 4 rows, got n={n}")
    ca, cb, cab = _as_matrix64(cov_a), _as_matrix64(cov_b), _as_matrix64(cov_ab)
    f = float(n - 1) ** 2
    sum_a = float(np.trace(ca)) * (n - 1)
    sum_b = float(np.trace(cb)) * (n - 1)
    xy = _hsic_debiased(float(np.square(cab).sum()) * f, sum_sq_norm_ab, sum_a, sum_b, n)
    xx = _hsic_debiased(float(np.square(ca).sum()) * f, sum_sq_norm_aa, sum_a, sum_a, n)
    yy = _hsic_debiased(float(np.square(cb).sum()) * f, sum_sq_norm_bb, sum_b, sum_b, n)
    if xx <= 0.0 or yy <= 0.0:
        raise ValueError(
            "linear_cka_debiased is undefined here: the unbiased HSIC of a matrix with itself "
            f"is not positive (n={n}; zero-variance or too few rows)"
        )
    return xy / math.sqrt(xx * yy)


def linear_cka_debiased(za: Any, zb: Any) -> float:
    """Linear CKA with the unbiased HSIC estimator (Song et al. 2012; Kornblith et al. 2019).

    Removes the finite-sample bias of :func:`linear_cka`: independent matrices score ~0 instead
    of ~d / (n + d). Needs n >= 4. Can be slightly negative for unrelated matrices.
    """
    import torch

    from ._validation import as_matrix, check_pair

    za = as_matrix(za, "za")
    zb = as_matrix(zb, "zb")
    check_pair(za, zb)
    n = za.shape[0]
    ca, cb, cab = _cov64(za, zb)
    a = (za.to(torch.float64) - za.to(torch.float64).mean(0)).square().sum(1)
    b = (zb.to(torch.float64) - zb.to(torch.float64).mean(0)).square().sum(1)
    return linear_cka_debiased_from_stats(
        ca, cb, cab, n, float((a * b).sum()), float(a.square().sum()), float(b.square().sum())
    )
