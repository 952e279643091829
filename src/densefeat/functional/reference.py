"""What an isotropic Gaussian matrix of the same shape scores on every metric.

Spectral numbers depend strongly on (n, d): an isotropic Gaussian matrix has condition number
2.9 at (540, 128) but 18.4 at (470, 384). A value means little without this reference beside it.

The reference is the mean of the metrics over a few (``draws``, 8 by default) independent,
seeded draws of an isotropic Gaussian matrix's singular values: a Monte Carlo estimate of the
expected metric, with the sampling error of that many draws. Each draw comes from the exact
distribution, cheaply for any n: the singular values of an ``m x d`` standard Gaussian matrix
(``m >= d``) are distributed as those of the ``d x d`` upper bidiagonal matrix with diagonal
``chi_m, chi_(m-1), ..., chi_(m-d+1)`` and superdiagonal ``chi_(d-1), ..., chi_1``
(Golub-Kahan bidiagonalisation of a Gaussian matrix; Silverstein 1985, Dumitriu & Edelman
2002). Centring n i.i.d. rows leaves a Gaussian matrix on the (n - 1)-dim complement of the
all-ones vector, so the centred spectrum uses ``m = n - 1`` and RankMe's uncentred one
``m = n``.

The singular values of the bidiagonal come from a tridiagonal eigensolver (LAPACK ``dsterf``
through SciPy), in O(d^2) time and O(d) memory whatever n is; the draws of one
``(n, d, draws, seed)`` are cached. Without SciPy a dense SVD of the bidiagonal gives the same
values in O(d^3).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .spectrum import Spectrum, condition_number_k, geometry
from .subspace import chance_subspace_distance

__all__ = ["bidiagonal_singular_values", "gaussian_singular_values", "isotropic_reference"]

#: The squared-matrix route is used when its eigenvalues span at most this ratio: its relative
#: error on ``s_i`` is about ``eps * (s_1 / s_i)^2``, here below ~1e-12.
_GRAM_MAX_RATIO = 1e4


def bidiagonal_singular_values(diag: Any, off: Any) -> np.ndarray:
    """Singular values (descending, float64) of the upper bidiagonal matrix ``diag``, ``off``.

    Two routes through LAPACK's root-free tridiagonal QR (``dsterf``), both O(d^2):

    * ``B^T B`` (tridiagonal, size d) when it is well conditioned: its eigenvalues are the
      squared singular values with absolute errors ~``eps s_1^2``, i.e. relative errors
      ~``eps (s_1 / s_i)^2`` on ``s_i``. Used when ``lambda_1 / lambda_d <= 1e4``: a Gaussian
      matrix with ``m >= 2 d`` rows is far inside that (``(s_1 / s_d)^2`` about 34);
    * otherwise the Golub-Kahan matrix (size 2d, zero diagonal, off-diagonal
      ``diag_1, off_1, diag_2, ..., diag_d``), whose eigenvalues are ``+-s_i``: absolute errors
      ~``eps s_1``, the accuracy of the dense SVD it replaces (measured against
      ``numpy.linalg.svd`` of the dense bidiagonal: <= 4e-13 relative at m = d + 1 = 513,
      where ``s_1 / s_d`` is ~2,400).

    Without SciPy, or if ``dsterf`` does not converge, the dense SVD is used.
    """
    a = np.asarray(diag, dtype=np.float64).reshape(-1)
    b = np.asarray(off, dtype=np.float64).reshape(-1)
    d = a.size
    if b.size != max(d - 1, 0):
        raise ValueError(f"off: expected {max(d - 1, 0)} values for a {d} x {d} bidiagonal")
    if d <= 1:
        return np.abs(a)
    try:
        from scipy.linalg.lapack import dsterf
    except ImportError:
        dsterf = None
    if dsterf is not None:
        gram_diag = np.square(a)
        gram_diag[1:] += np.square(b)
        lam, info = dsterf(gram_diag, a[:-1] * b)
        if info == 0 and lam[0] > 0.0 and lam[-1] <= _GRAM_MAX_RATIO * lam[0]:
            return np.sqrt(lam[::-1])
        gk = np.empty(2 * d - 1)
        gk[0::2] = a
        gk[1::2] = b
        lam, info = dsterf(np.zeros(2 * d), gk)
        if info == 0:
            # +-s_i pairs, ascending: the d largest are the singular values (zeros stay >= 0)
            return np.abs(lam[: d - 1 : -1])
    dense = np.diag(a) + np.diag(b, 1)
    return np.linalg.svd(dense, compute_uv=False)


def gaussian_singular_values(m: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """One draw of the singular values (descending, float64) of an ``m x d`` N(0, 1) matrix."""
    if m < 1 or d < 1:
        raise ValueError(f"need m >= 1 and d >= 1, got m={m}, d={d}")
    rows, cols = max(m, d), min(m, d)
    diag = np.sqrt(rng.chisquare(np.arange(rows, rows - cols, -1, dtype=np.float64)))
    off = np.empty(0)
    if cols > 1:
        off = np.sqrt(rng.chisquare(np.arange(cols - 1, 0, -1, dtype=np.float64)))
    return bidiagonal_singular_values(diag, off)


@functools.lru_cache(maxsize=16)
def _draws(n: int, d: int, draws: int, seed: int) -> tuple[Spectrum, ...]:
    """The ``draws`` spectra of the reference (centred ``m = n - 1``, uncentred ``m = n``),
    in the order the generator has always produced them."""
    rng = np.random.default_rng(seed)
    kk = min(n, d)
    out = []
    for _ in range(draws):
        s = gaussian_singular_values(n - 1, d, rng)
        su = gaussian_singular_values(n, d, rng)
        s = np.concatenate([s, np.zeros(kk - s.size)])  # n <= d: the centring zero
        out.append(Spectrum(s, n, d, min(n - 1, d), su[:kk], route="reference"))
    return tuple(out)


def isotropic_reference(
    n: int, d: int, *, k: int = 16, condition_k: int | None = None, draws: int = 8, seed: int = 0
) -> dict[str, Any]:
    """Mean of every single-matrix metric over ``draws`` isotropic Gaussian (n, d) matrices.

    A Monte Carlo estimate: the mean over ``draws`` exact draws of the singular-value
    distribution (module docstring), deterministic for a given seed, so it carries the
    sampling error of ``draws`` draws (small for the spectral averages at large d; larger for
    the extreme-value metrics ``condition_number`` and ``condition_number_k`` when n is close
    to d). Also reports the chance level of the sample-space subspace distance at ``k`` and the
    linear CKA expected between two independent such matrices (``d / (m + d + 1)`` with
    ``m = n - 1``, the ratio of expectations; the debiased CKA of independent matrices is 0).

    The draws are cached per ``(n, d, draws, seed)``: a second call (another ``k`` or
    ``condition_k``, the second file of a pair) costs only the metrics.

    Args:
        n: rows (>= 2).
        d: columns (>= 1).
        k: subspace dimension for the chance level of ``subspace_distance``.
        condition_k: report ``condition_number_k`` at this k (the k used for the measured
            matrix, so the two values compare), instead of at the reference's own
            ``round(effective_rank)``.
        draws: number of Monte Carlo draws of the spectrum.
        seed: seed of the generator.

    Returns:
        dict keyed by metric name; ``eigenvalues`` is the mean normalised spectrum (eigenvalues
        divided by their sum), descending, so it can be drawn beside any measured one.
    """
    if n < 2 or d < 1:
        raise ValueError(f"isotropic_reference needs n >= 2 and d >= 1, got n={n}, d={d}")
    try:
        spectra = _draws(n, d, draws, seed)
    except TypeError:  # an unhashable seed: no caching
        spectra = _draws.__wrapped__(n, d, draws, seed)
    per_draw = []
    eigenvalues = []
    for sp in spectra:
        g = geometry(sp)
        if condition_k is not None:
            kc = min(max(condition_k, 1), sp.max_rank)
            g["condition_number_k"] = condition_number_k(sp, kc)
            g["condition_number_k_at"] = kc
        eigenvalues.append(np.asarray(g.pop("eigenvalues"), dtype=np.float64))
        per_draw.append(g)
    out: dict[str, Any] = {"n": n, "d": d, "draws": draws}
    for key in per_draw[0]:
        vals = [g[key] for g in per_draw]
        if isinstance(vals[0], float):
            out[key] = float(np.mean(vals))
        elif isinstance(vals[0], int) and not isinstance(vals[0], bool):
            out[key] = round(float(np.mean(vals)))
    lam = np.stack(eigenvalues)
    out["eigenvalues"] = (lam / lam.sum(1, keepdims=True)).mean(0).tolist()
    kk = min(k, n - 1, d)
    out["subspace_distance"] = chance_subspace_distance(n, kk)
    out["subspace_distance_k"] = kk
    m = n - 1
    out["linear_cka"] = d / (m + d + 1)
    out["linear_cka_debiased"] = 0.0
    return out
