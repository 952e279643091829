"""What an isotropic Gaussian matrix of the same shape scores on every metric.

Spectral numbers depend strongly on (n, d): an isotropic Gaussian matrix has condition number
2.9 at (540, 128) but 18.4 at (470, 384). A value means little without this reference beside it.

The reference is exact in distribution and cheap for any n: the singular values of an
``m x d`` standard Gaussian matrix (``m >= d``) are distributed as those of the ``d x d`` upper
bidiagonal matrix with diagonal ``chi_m, chi_(m-1), ..., chi_(m-d+1)`` and superdiagonal
``chi_(d-1), ..., chi_1`` (Golub-Kahan bidiagonalisation of a Gaussian matrix; Silverstein
1985, Dumitriu & Edelman 2002). Centring n i.i.d. rows leaves a Gaussian matrix on the
(n - 1)-dim complement of the all-ones vector, so the centred spectrum uses ``m = n - 1`` and
RankMe's uncentred one ``m = n``. Memory and time are O(d^2) whatever n is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .spectrum import Spectrum, condition_number_k, geometry
from .subspace import chance_subspace_distance

__all__ = ["gaussian_singular_values", "isotropic_reference"]


def gaussian_singular_values(m: int, d: int, rng: np.random.Generator) -> torch.Tensor:
    """One draw of the singular values (descending, float64) of an ``m x d`` N(0, 1) matrix."""
    if m < 1 or d < 1:
        raise ValueError(f"need m >= 1 and d >= 1, got m={m}, d={d}")
    rows, cols = max(m, d), min(m, d)
    diag = np.sqrt(rng.chisquare(np.arange(rows, rows - cols, -1, dtype=np.float64)))
    b = np.diag(diag)
    if cols > 1:
        off = np.sqrt(rng.chisquare(np.arange(cols - 1, 0, -1, dtype=np.float64)))
        b += np.diag(off, 1)
    return torch.linalg.svdvals(torch.from_numpy(b))


def isotropic_reference(
    n: int, d: int, *, k: int = 16, condition_k: int | None = None, draws: int = 8, seed: int = 0
) -> dict[str, Any]:
    """Mean of every single-matrix metric over ``draws`` isotropic Gaussian (n, d) matrices.

    Deterministic for a given seed. Also reports the chance level of the sample-space subspace
    distance at ``k`` and the linear CKA expected between two independent such matrices
    (``d / (m + d + 1)`` with ``m = n - 1``, the ratio of expectations; the debiased
    CKA of independent matrices is 0).

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
    rng = np.random.default_rng(seed)
    per_draw = []
    spectra = []
    for _ in range(draws):
        s = gaussian_singular_values(n - 1, d, rng)
        su = gaussian_singular_values(n, d, rng)
        kk = min(n, d)
        s = torch.cat([s, s.new_zeros(kk - s.numel())])  # n <= d: the centring zero
        sp = Spectrum(s, n, d, min(n - 1, d), su[:kk], route="reference")
        g = geometry(sp)
        if condition_k is not None:
            kc = min(max(condition_k, 1), sp.max_rank)
            g["condition_number_k"] = condition_number_k(sp, kc)
            g["condition_number_k_at"] = kc
        spectra.append(torch.tensor(g.pop("eigenvalues")))
        per_draw.append(g)
    out: dict[str, Any] = {"n": n, "d": d, "draws": draws}
    for key in per_draw[0]:
        vals = [g[key] for g in per_draw]
        if isinstance(vals[0], float):
            out[key] = float(np.mean(vals))
        elif isinstance(vals[0], int) and not isinstance(vals[0], bool):
            out[key] = round(float(np.mean(vals)))
    lam = torch.stack(spectra)
    out["eigenvalues"] = (lam / lam.sum(1, keepdim=True)).mean(0).tolist()
    kk = min(k, n - 1, d)
    out["subspace_distance"] = chance_subspace_distance(n, kk)
    out["subspace_distance_k"] = kk
    m = n - 1
    out["linear_cka"] = d / (m + d + 1)
    out["linear_cka_debiased"] = 0.0
    return out
