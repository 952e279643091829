"""Cross-modal alignment: how much two modality embeddings of the same rows share.

For two modality embeddings ``Za`` (n, d_a) and ``Zb`` (n, d_b) of the same rows (the same
stays at the same prediction time, only rows where both modalities are present), at three
subspace dimensions as the temporal endpoint (:func:`densefeat.eval.temporal.other_k_fields`,
docs/design.md §3.3):

* ``k`` (the benchmark's fixed k, 16): ``D = sqrt(1 - ||Ua^T Ub||_F^2 / k)``, the sample-space
  distance of the top-k left singular subspaces (0 = the two modalities order the rows along
  the same k patterns);
* ``k = round(effective rank)``: the smaller of the two embeddings' entropy effective ranks
  (Roy & Vetterli 2007), the dimension both modalities actually spread over;
* the whole space, ``k = min(d_a, d_b)``: ``sqrt(1 - mean_j rho_j^2)`` with ``rho_j`` the
  canonical correlations, invariant to any invertible linear map of either modality
  (undefined when ``d >= n - 1``: null with a reason).

Beside each: **chance** ``sqrt(1 - k / (n - 1))``, the expected distance of two unrelated
k-dim subspaces of the centred sample space, and the **floor** 0, what two identical (or
linearly equivalent, for the whole space) embeddings score: unlike temporal stability there is
no "same modality split in halves" view, so the floor is the exact lower bound, stated as such.
Also the principal angles between the top-k subspaces (Björck & Golub 1973) and the debiased
linear CKA (Kornblith et al. 2019 with Song et al. 2012's unbiased HSIC, as in Nguyen et al.
2021): ~0 for independent matrices, 1 for identical ones up to rotation and isotropic scale.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

from ..functional import chance_subspace_distance, effective_rank, subspace_distance
from .temporal import seed_alignment

__all__ = ["modality_alignment", "modality_alignment_records"]


def _erank(z: np.ndarray) -> float:
    try:
        return float(effective_rank(z))
    except ValueError:  # zero variance: no spectrum to take a rank from
        return 1.0


def _numerical_rank(z: np.ndarray) -> int:
    """Rank of the centred matrix by the tolerance of :func:`densefeat.functional.
    subspace_distance` (eigenvalues of the covariance above ``lam_1 max(n, d) eps``): a static
    modality, constant within a stay, has fewer distinct rows than d, and beyond its rank the
    "singular vectors" are rounding noise."""
    zc = z - z.mean(0)
    lam = np.linalg.eigvalsh(zc.T @ zc)[::-1]
    if lam.size == 0 or lam[0] <= 0.0:
        return 0
    eps = float(np.finfo(np.float64).eps)
    return int(np.count_nonzero(lam > lam[0] * max(z.shape[0], lam.size) * eps))


def modality_alignment(z_a: Any, z_b: Any, k: int = 16) -> dict[str, Any]:
    """Alignment of two modality embeddings of the same rows (module docstring).

    Args:
        z_a, z_b: (n, d_a), (n, d_b) embeddings, row i the same record.
        k: the fixed subspace dimension (clipped to ``min(n - 1, d_a, d_b)``).

    Returns:
        ``seed_alignment``'s keys at the fixed k (``subspace_distance``, ``chance``,
        ``linear_cka_debiased``, ``principal_angles_deg``, ``mean_angle_deg``, ...) plus
        ``floor`` (0), ``k_requested``, ``effective_rank_a``, ``effective_rank_b``,
        ``k_erank``, ``subspace_distance_erank``, ``floor_erank``, ``chance_erank``,
        ``k_whole``, ``subspace_distance_whole``, ``floor_whole``, ``chance_whole`` (null with
        ``whole_reason`` when ``d >= n - 1``). ``d`` here is ``min(d_a, d_b)`` clipped to the
        numerical ranks of both (a static modality's rank is its number of distinct rows).

    Raises:
        ValueError: shapes that differ in n, or fewer than 3 rows.
    """
    a = np.asarray(z_a, dtype=np.float64)
    b = np.asarray(z_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"z_a, z_b must be (n, d) with the same n, got {a.shape}, {b.shape}")
    n = a.shape[0]
    if n < 3:
        raise ValueError(f"modality alignment needs at least 3 rows, got {n}")
    # Every k is clipped to the numerical ranks (see _numerical_rank) as well as to n - 1 and d.
    d = min(a.shape[1], b.shape[1], _numerical_rank(a), _numerical_rank(b))
    if d == 0:
        raise ValueError("modality alignment is undefined for a zero-variance embedding")
    k_fixed = int(min(k, n - 1, d))
    out: dict[str, Any] = {**seed_alignment(a, b, k_fixed), "k_requested": int(k), "floor": 0.0}
    er_a, er_b = _erank(a), _erank(b)
    k_er = int(min(max(1, round(min(er_a, er_b))), n - 1, d))
    out |= {
        "effective_rank_a": er_a,
        "effective_rank_b": er_b,
        "k_erank": k_er,
        "subspace_distance_erank": subspace_distance(a, b, k_er),
        "floor_erank": 0.0,
        "chance_erank": chance_subspace_distance(n, k_er),
        "k_whole": int(d),
    }
    if d < n - 1:
        out |= {
            "subspace_distance_whole": subspace_distance(a, b, d),
            "floor_whole": 0.0,
            "chance_whole": chance_subspace_distance(n, d),
        }
    else:
        out |= {
            "subspace_distance_whole": None,
            "floor_whole": None,
            "chance_whole": None,
            "whole_reason": f"d = {d} >= n - 1 = {n - 1}: both spans are the whole sample space",
        }
    return out


def modality_alignment_records(
    per: dict[str, np.ndarray],
    present: dict[str, np.ndarray],
    k: int,
    base: dict[str, Any],
    errors: list[str] | None = None,
) -> list[dict[str, Any]]:
    """One record per pair of modalities (in order), on the rows where both are present.

    Args:
        per: modality -> (n, d) embeddings of the same n rows.
        present: modality -> (n,) bool (a modality missing here is present on every row).
        k: the fixed subspace dimension.
        base: keys every record starts with (``method``, ``seed``).
        errors: receives ``"a vs b: reason"`` for a pair that cannot be measured (too few
            shared rows, zero variance) instead of raising.

    Returns:
        records ``{**base, "kind": "modalities", "a", "b", "n_rows", **modality_alignment}``.
    """
    records = []
    for ma, mb in combinations(per, 2):
        n_all = per[ma].shape[0]
        both = present.get(ma, np.ones(n_all, bool)) & present.get(mb, np.ones(n_all, bool))
        try:
            al = modality_alignment(per[ma][both], per[mb][both], k)
        except (ValueError, ArithmeticError, RuntimeError, np.linalg.LinAlgError) as e:
            if errors is not None:
                errors.append(f"{ma} vs {mb}: {e}")
            continue
        records.append({**base, "kind": "modalities", "a": ma, "b": mb, "n_rows": int(n_all), **al})
    return records
