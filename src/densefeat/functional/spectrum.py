"""Spectral geometry metrics of an embedding matrix (docs/design.md, Metrics).

Every metric here is a function of one :class:`Spectrum`: the singular values ``s`` of the
centred matrix ``Zc`` (and, for RankMe, of the uncentred ``Z``). A spectrum comes from one of
two routes:

* :func:`spectrum` — the rows are at hand: ``s = svdvals(Zc)`` in float64;
* :func:`spectrum_from_covariance` — only streamed statistics are (``densefeat.metrics``):
  ``s_i = sqrt((n - 1) * lambda_i(C))``.

The two agree to ~1e-8 on well-conditioned input. They differ near singularity, because
eigenvalues of ``C`` are accurate only to ``eps * lambda_1`` (so singular values to
``sqrt(eps) * s_1``): each route applies the numerical-rank rule ``x_i > x_1 * max(n, d) * eps``
to the matrix it decomposes (``Zc`` for SVD, ``C`` for the covariance route).

Public metric functions accept a torch tensor or a NumPy array (n, d) and return Python floats
computed in float64. Nothing returns NaN silently: undefined cases are ``inf`` with a reason
(:func:`condition_number_reason`) or raise ``ValueError``.

A :class:`Spectrum` holds NumPy float64 vectors, and everything after the decomposition is
NumPy: the covariance route (:func:`spectrum_from_covariance`, :func:`geometry` of a
:class:`Spectrum`) never imports torch, so a streaming analysis can run without it. Only
:func:`spectrum` (rows at hand, any tensor) imports torch, when called. The d x d
eigendecompositions run on one BLAS thread (:func:`one_blas_thread`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "AlphaReq",
    "Spectrum",
    "alpha_req",
    "condition_number",
    "condition_number_k",
    "condition_number_reason",
    "effective_rank",
    "effective_rank_eig",
    "geometry",
    "numerical_rank",
    "one_blas_thread",
    "participation_ratio",
    "rankme",
    "spectral_entropy",
    "spectrum",
    "spectrum_from_covariance",
    "stable_rank",
]

_EPS64 = float(np.finfo(np.float64).eps)
#: RankMe's additive constant (Garrido et al. 2023, eq. 1).
RANKME_EPS = 1e-7


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the NumPy/SciPy BLAS and LAPACK calls inside on one thread (if threadpoolctl is
    installed; otherwise this does nothing).

    For the small d x d problems of the metrics (eigendecompositions of a 512 x 512
    covariance: ~10-30 ms) extra threads buy little on a quiet machine and cost a lot on a
    busy one, where they spin-wait for cores that other processes hold: measured on a shared
    2-core machine at load averages 3-6, ``numpy.linalg.eigvalsh`` of 512 x 512 took 44-139 ms
    with OpenBLAS's 2 threads and 23-44 ms with one. The n x d products (the covariance
    accumulation) keep every thread.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # an optional speed-up, not a dependency
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


def _as_vector64(x: Any) -> np.ndarray:
    """A float64 NumPy copy of a vector given as an array, a sequence or a torch tensor."""
    if hasattr(x, "detach"):  # a torch tensor, possibly on an accelerator or with a gradient
        x = x.detach().cpu().double().numpy()
    return np.array(x, dtype=np.float64)


def _frozen(x: Any) -> np.ndarray:
    v = _as_vector64(x).reshape(-1)
    v.flags.writeable = False
    return v


@dataclass(frozen=True)
class Spectrum:
    """Singular values of ``Zc`` (and optionally of ``Z``) with the matrix shape.

    Attributes:
        singular_values: float64 NumPy vector (read-only), descending, length
            ``min(n, d)``; singular values of ``Zc``. A tensor or a sequence given to the
            constructor is converted.
        n: rows of the matrix.
        d: columns of the matrix.
        numerical_rank: count of singular values above the route's tolerance.
        uncentred: float64 descending singular values of ``Z`` itself (RankMe), or ``None``.
        route: ``"svd"``, ``"covariance"`` or ``"reference"``, how the values were obtained.
    """

    singular_values: np.ndarray
    n: int
    d: int
    numerical_rank: int
    uncentred: np.ndarray | None = None
    route: str = "svd"

    def __post_init__(self) -> None:
        object.__setattr__(self, "singular_values", _frozen(self.singular_values))
        if self.uncentred is not None:
            object.__setattr__(self, "uncentred", _frozen(self.uncentred))

    @property
    def eigenvalues(self) -> np.ndarray:
        """Covariance eigenvalues ``lambda_i = s_i^2 / (n - 1)``, descending, float64."""
        return np.square(self.singular_values) / (self.n - 1)

    @property
    def max_rank(self) -> int:
        """Largest rank ``Zc`` can have: centring removes one dimension, ``min(n - 1, d)``."""
        return min(self.n - 1, self.d)


def _rank_from_values(values: np.ndarray, n: int, d: int) -> int:
    """Count ``values_i > values_1 * max(n, d) * eps(float64)``; zero when all are zero."""
    if values.size == 0 or float(values[0]) <= 0.0:
        return 0
    tol = float(values[0]) * max(n, d) * _EPS64
    return int(np.count_nonzero(values > tol))


def spectrum(z: Any, *, uncentred: bool = True, name: str = "z") -> Spectrum:
    """Spectrum of an (n, d) matrix from its rows, through the SVD of the centred matrix.

    Args:
        z: (n, d) float tensor or array.
        uncentred: also compute singular values of the uncentred ``z`` (needed by RankMe).
        name: argument name for error messages.
    """
    import torch

    from ._validation import as_matrix

    z = as_matrix(z, name)
    n, d = z.shape
    z64 = z.to(torch.float64)
    s = torch.linalg.svdvals(z64 - z64.mean(0)).cpu().numpy()
    su = torch.linalg.svdvals(z64).cpu().numpy() if uncentred else None
    return Spectrum(s, n, d, _rank_from_values(s, n, d), su, "svd")


def _as_matrix64(x: Any) -> np.ndarray:
    """A float64 NumPy view or copy of a matrix given as an array or a torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _eigvalsh_desc(sym: Any) -> np.ndarray:
    """Eigenvalues of a symmetric PSD matrix, descending, float64, on one BLAS thread.

    ``eigvalsh`` of a PSD matrix can return tiny negatives from rounding: they are clipped to
    zero.
    """
    a = np.ascontiguousarray(_as_matrix64(sym))
    with one_blas_thread():
        lam = np.linalg.eigvalsh(a)
    return lam[::-1].clip(min=0.0)


def spectrum_from_covariance(
    cov: Any, n: int, mean: Any | None = None, *, eigenvalues: Any | None = None
) -> Spectrum:
    """Spectrum from the unbiased covariance ``C`` of ``n`` rows (and their mean, for RankMe).

    ``s_i = sqrt((n - 1) lambda_i(C))``; the numerical rank counts
    ``lambda_i > lambda_1 * max(n, d) * eps``. With ``mean`` given, the uncentred second
    moment ``Z^T Z = (n - 1) C + n mu mu^T`` yields the uncentred singular values.

    Args:
        cov: (d, d) covariance (array or tensor).
        n: number of rows it was computed from (>= 2).
        mean: optional (d,) mean of the rows, for the uncentred spectrum (RankMe).
        eigenvalues: the eigenvalues of ``cov`` if already computed (any order; e.g. from an
            ``eigh`` whose vectors are needed elsewhere), so that they are not computed twice.
    """
    c = _as_matrix64(cov)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"cov: expected a square matrix, got shape {tuple(c.shape)}")
    if n < 2:
        raise ValueError(f"need at least 2 rows, got n={n}")
    if not np.isfinite(c).all():
        raise ValueError("cov: contains NaN or inf")
    d = c.shape[0]
    if eigenvalues is None:
        lam = _eigvalsh_desc(c)
    else:
        lam = np.sort(_as_vector64(eigenvalues).reshape(-1))[::-1].clip(min=0.0)
        if lam.size != d:
            raise ValueError(f"eigenvalues: expected {d} values, got {lam.size}")
    rank = _rank_from_values(lam, n, d)
    k = min(n, d)
    s = np.sqrt((n - 1) * lam[:k])
    su = None
    if mean is not None:
        mu = _as_vector64(mean).reshape(-1)
        second = (n - 1) * c + n * np.outer(mu, mu)
        su = np.sqrt(_eigvalsh_desc(second)[:k])
    return Spectrum(s, n, d, rank, su, "covariance")


def _as_spectrum(z: Any, *, uncentred: bool = False) -> Spectrum:
    if isinstance(z, Spectrum):
        if uncentred and z.uncentred is None:
            raise ValueError("this Spectrum has no uncentred singular values (needed by rankme)")
        return z
    return spectrum(z, uncentred=uncentred)


def _entropy(p: np.ndarray) -> float:
    """Shannon entropy in nats with ``0 log 0 = 0``."""
    q = p[p > 0]
    return float(-(q * np.log(q)).sum())


def _nonzero_or_raise(s: np.ndarray, what: str) -> None:
    if s.size == 0 or float(s[0]) <= 0.0:
        raise ValueError(
            f"{what} is undefined for a zero-variance matrix (every column is constant)"
        )


def effective_rank(z: Any) -> float:
    """Effective rank (Roy & Vetterli 2007): ``exp(H(q))``, ``q = s / sum(s)``.

    ``s`` are the singular values of the centred matrix ``Zc``. Ranges from 1 (rank one) to
    ``min(n - 1, d)`` (all singular values equal).
    """
    s = _as_spectrum(z).singular_values
    _nonzero_or_raise(s, "effective_rank")
    return math.exp(_entropy(s / s.sum()))


def spectral_entropy(z: Any) -> float:
    """Entropy ``H(p)`` in nats of the normalised covariance spectrum ``p = lambda / tr C``."""
    lam = _as_spectrum(z).eigenvalues
    _nonzero_or_raise(lam, "spectral_entropy")
    return _entropy(lam / lam.sum())


def effective_rank_eig(z: Any) -> float:
    """Effective rank of the covariance eigenvalues: ``exp(H(p))``, ``p = lambda / tr C``.

    Not the same number as :func:`effective_rank` (singular values vs their squares): on one
    spectrum the two can differ several-fold, so never report one under the other's name.
    """
    return math.exp(spectral_entropy(z))


def rankme(z: Any) -> float:
    """RankMe (Garrido et al. 2023): ``exp(-sum p_k log p_k)``, ``p_k = s_k / ||s||_1 + 1e-7``.

    Uses singular values of the *uncentred* ``Z``, as the paper does.
    """
    su = _as_spectrum(z, uncentred=True).uncentred
    assert su is not None
    _nonzero_or_raise(su, "rankme")
    p = su / su.sum() + RANKME_EPS
    return math.exp(-float((p * np.log(p)).sum()))


def participation_ratio(z: Any) -> float:
    """Participation ratio ``1 / sum p_i^2`` of ``p = lambda / tr C`` (= (tr C)^2 / ||C||_F^2)."""
    lam = _as_spectrum(z).eigenvalues
    _nonzero_or_raise(lam, "participation_ratio")
    p = lam / lam.sum()
    return float(1.0 / np.square(p).sum())


def stable_rank(z: Any) -> float:
    """Stable rank ``||Zc||_F^2 / s_1^2`` (= tr C / lambda_1)."""
    s = _as_spectrum(z).singular_values
    _nonzero_or_raise(s, "stable_rank")
    return float(np.square(s).sum() / s[0] ** 2)


def numerical_rank(z: Any) -> int:
    """Count of singular values of ``Zc`` above ``s_1 * max(n, d) * eps(float64)``.

    From a covariance-route :class:`Spectrum` the rule is applied to the eigenvalues of ``C``.
    The tolerance is float64's (docs/design.md): a direction that is exactly null in real arithmetic
    but was rounded in float32 (e.g. the all-ones direction of a float32 LayerNorm output)
    sits near ``1e-7 s_1`` and still counts, so condition numbers of 1e6-1e8 on float32
    embeddings flag the same degeneracy as ``inf`` does on float64 ones.
    """
    return _as_spectrum(z).numerical_rank


def condition_number_reason(z: Any) -> str | None:
    """Why :func:`condition_number` is infinite, or ``None`` when it is finite."""
    sp = _as_spectrum(z)
    if sp.numerical_rank < sp.max_rank:
        return (
            f"rank-deficient: numerical_rank {sp.numerical_rank} < min(n - 1, d) = {sp.max_rank}"
            " (a constant or linearly dependent direction, e.g. the null direction of a"
            " LayerNorm output)"
        )
    return None


def condition_number(z: Any) -> float:
    """Condition number ``s_1 / s_min`` of ``Zc``, ``s_min`` the ``min(n - 1, d)``-th value.

    Returns ``inf`` when the numerical rank is below ``min(n - 1, d)``; the reason is given by
    :func:`condition_number_reason`. Compare only at equal (n, d): an isotropic Gaussian
    matrix measures 2.9 at (540, 128) and 18.4 at (470, 384) (see ``isotropic_reference``).
    """
    sp = _as_spectrum(z)
    _nonzero_or_raise(sp.singular_values, "condition_number")
    if sp.numerical_rank < sp.max_rank:
        return math.inf
    s = sp.singular_values
    return float(s[0] / s[sp.max_rank - 1])


def condition_number_k(z: Any, k: int | None = None) -> float:
    """``s_1 / s_k``; by default at ``k = round(effective_rank)``.

    The full condition number is dominated by the smallest, noisiest direction; this variant
    asks how balanced the directions that carry the spectrum's mass are. ``inf`` when ``s_k``
    lies below the numerical-rank tolerance.
    """
    sp = _as_spectrum(z)
    s = sp.singular_values
    _nonzero_or_raise(s, "condition_number_k")
    if k is None:
        k = max(1, round(effective_rank(sp)))
    if not 1 <= k <= s.size:
        raise ValueError(f"k must be in [1, min(n, d) = {s.size}], got k={k}")
    if k > sp.numerical_rank:
        return math.inf
    return float(s[0] / s[k - 1])


class AlphaReq(NamedTuple):
    """Power-law decay exponent of the covariance spectrum and its fit quality.

    Attributes:
        alpha: minus the slope of ``log lambda_r`` against ``log r``.
        r2: weighted coefficient of determination of that fit.
        first_rank, last_rank: the 1-based ranks used in the fit.
        reason: why the fit used a fallback range or is undefined, else ``None``.
    """

    alpha: float
    r2: float
    first_rank: int
    last_rank: int
    reason: str | None = None


def alpha_req(z: Any, first_rank: int = 5, last_rank: int = 99) -> AlphaReq:
    """alpha-ReQ (Agrawal et al. 2022): eigenspectrum decay exponent, ``lambda_r ~ r^-alpha``.

    Weighted least squares of ``log lambda_r`` on ``log r`` with weights ``1 / r`` (so each
    octave of ranks weighs about the same), over ranks ``first_rank..last_rank`` clipped to the
    numerical rank. When fewer than 3 ranks remain, ranks ``1..numerical_rank`` are used (with
    a ``reason``); with a numerical rank of 1 the decay is infinitely steep: ``alpha = inf``,
    ``r2 = 1`` and a reason.
    """
    sp = _as_spectrum(z)
    lam = sp.eigenvalues
    _nonzero_or_raise(lam, "alpha_req")
    rank = sp.numerical_rank
    lo, hi = first_rank, min(last_rank, rank)
    reason = None
    if hi - lo + 1 < 3:
        lo, hi = 1, min(last_rank, rank)
        reason = (
            f"numerical rank {rank} leaves fewer than 3 ranks in [{first_rank}, {last_rank}]:"
            f" fitted ranks 1..{hi}"
        )
    if hi < 2:
        return AlphaReq(
            math.inf,
            1.0,
            1,
            hi,
            "numerical rank 1: one nonzero eigenvalue, the spectrum decays infinitely fast",
        )
    r = np.arange(lo, hi + 1, dtype=np.float64)
    x = np.log(r)
    y = np.log(lam[lo - 1 : hi])
    w = 1.0 / r
    w = w / w.sum()
    xm, ym = (w * x).sum(), (w * y).sum()
    sxx = (w * np.square(x - xm)).sum()
    slope = (w * (x - xm) * (y - ym)).sum() / sxx
    resid = y - (ym + slope * (x - xm))
    ss_tot = (w * np.square(y - ym)).sum()
    r2 = 1.0 if float(ss_tot) == 0.0 else float(1.0 - (w * np.square(resid)).sum() / ss_tot)
    return AlphaReq(float(-slope), r2, lo, hi, reason)


def geometry(z: Any) -> dict[str, Any]:
    """Every single-matrix metric of docs/design.md in one dict, keyed by its design-doc name.

    Accepts a matrix or a :class:`Spectrum` (from either route). Infinite condition numbers
    come with ``condition_number_reason``; ``eigenvalues`` are the covariance eigenvalues,
    descending.
    """
    sp = _as_spectrum(z, uncentred=not isinstance(z, Spectrum))
    er = effective_rank(sp)
    k = max(1, round(er))
    a = alpha_req(sp)
    out: dict[str, Any] = {
        "n": sp.n,
        "d": sp.d,
        "effective_rank": er,
        "effective_rank_eig": effective_rank_eig(sp),
        "spectral_entropy": spectral_entropy(sp),
        "participation_ratio": participation_ratio(sp),
        "stable_rank": stable_rank(sp),
        "numerical_rank": sp.numerical_rank,
        "condition_number": condition_number(sp),
        "condition_number_reason": condition_number_reason(sp),
        "condition_number_k": condition_number_k(sp, k),
        "condition_number_k_at": k,
        "alpha_req": a.alpha,
        "alpha_req_r2": a.r2,
        "alpha_req_ranks": [a.first_rank, a.last_rank],
        "alpha_req_reason": a.reason,
    }
    if sp.uncentred is not None:
        out["rankme"] = rankme(sp)
    out["eigenvalues"] = sp.eigenvalues.tolist()
    return out
