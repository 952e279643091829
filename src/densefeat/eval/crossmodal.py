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

**Confidence intervals** (:func:`alignment_resamples`): a subject-level bootstrap of the rows
(a drawn subject brings all its rows, as in :mod:`densefeat.eval.bootstrap`); on each resample
the five numbers of the table (distance at the fixed k, at k = round(erank), over the whole
space, the mean principal angle at the fixed k, debiased CKA) are recomputed *at the k of the
point estimate*, so the interval is that of one quantity; percentile 95% intervals
(Efron & Tibshirani 1993, ch. 13). The resample is drawn over **all** held-out subjects with a
fixed seed and then restricted to a pair's rows, so every pair and every method sees the same
resamples: :func:`paired_alignment_differences` takes ``dense - method`` per resample (a paired
bootstrap).

**Recentring.** A resample holds only ~63% distinct subjects (the rest are duplicates), and
every number here depends on how many distinct rows there are: chance itself is
``sqrt(1 - k/(n - 1))``, and duplicated rows are shared patterns both modalities express, so a
resample's distance is biased *down* (CKA up) by more than its spread (measured: 200 resamples
of 3,000 rows, independent embeddings, distance 0.9973 against a resample range of
0.993-0.995). A plain percentile interval then misses its own point estimate. The intervals are
therefore percentile intervals of the resample values **shifted by the bootstrap estimate of
the bias**, ``theta*_b - (mean_b theta*_b - theta_hat)`` (Efron & Tibshirani 1993, §10.6): the
bootstrap supplies the spread over subjects, the point estimate the location. The bias is
recorded (``<metric>_bias``). The paired differences are recentred the same way (two identical
methods give exactly [0, 0]).
"""

from __future__ import annotations

import warnings
from itertools import combinations
from typing import Any

import numpy as np

from ..functional import chance_subspace_distance, effective_rank, subspace_distance
from ..functional.subspace import _eigh_desc, _sample_space_cosines, linear_cka_debiased_from_stats
from .bootstrap import resample_weights
from .temporal import seed_alignment

__all__ = [
    "CI_METRICS",
    "MAX_RESAMPLES",
    "RESAMPLE_SEED",
    "alignment_resamples",
    "modality_alignment",
    "modality_alignment_records",
    "paired_alignment_differences",
]

#: Resamples for the cross-modal CIs: ``min(--bootstrap, this)`` (each resample recomputes two
#: d x d eigendecompositions per pair; docs/design.md §7 gives the timing).
MAX_RESAMPLES = 200

#: The resampling seed of the cross-modal CIs (one for every run, so resamples are shared).
RESAMPLE_SEED = 12345

#: The table's numbers that get a bootstrap CI (record keys).
CI_METRICS = (
    "subspace_distance",
    "subspace_distance_erank",
    "subspace_distance_whole",
    "mean_angle_deg",
    "linear_cka_debiased",
)


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
    *,
    groups: Any | None = None,
    n_resamples: int = 0,
    seed: int = 0,
    confidence: float = 0.95,
    arrays: dict[str, np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """One record per pair of modalities (in order), on the rows where both are present.

    Args:
        per: modality -> (n, d) embeddings of the same n rows.
        present: modality -> (n,) bool (a modality missing here is present on every row).
        k: the fixed subspace dimension.
        base: keys every record starts with (``method``, ``seed``).
        errors: receives ``"a vs b: reason"`` for a pair that cannot be measured (too few
            shared rows, zero variance) instead of raising.
        groups: (n,) subject id of every row: with ``n_resamples > 0``, a subject-level
            bootstrap CI for each of :data:`CI_METRICS` (module docstring). The resamples are
            drawn over all n rows' subjects with ``seed``, then restricted to a pair's rows,
            so the same ``groups`` and ``seed`` give every pair and every run the same ones.
        n_resamples: B (0: no intervals).
        seed: the resampling seed.
        confidence: nominal coverage of the percentile intervals.
        arrays: receives ``crossmodal/<a>/<b>``: the (B, 5) resample values, for
            :func:`paired_alignment_differences`.

    Returns:
        records ``{**base, "kind": "modalities", "a", "b", "n_rows", **modality_alignment}``,
        plus ``<metric>_ci`` ([low, high] or None), ``<metric>_bias`` (mean resample minus
        point estimate), ``ci_resamples`` and ``ci_valid`` with ``n_resamples > 0``.
    """
    records = []
    pairs = list(combinations(per, 2))
    if not pairs:
        return records
    n_all = per[pairs[0][0]].shape[0]
    weights = None
    if n_resamples > 0:
        if groups is None:
            raise ValueError("modality_alignment_records: pass groups (subject ids) for CIs")
        if np.asarray(groups).shape != (n_all,):
            raise ValueError(f"groups must have shape ({n_all},), got {np.asarray(groups).shape}")
        # One (B, n) matrix for all pairs: the held-out split is a few thousand rows at most.
        weights = np.concatenate(list(resample_weights(groups, n_resamples, seed)))
    for ma, mb in pairs:
        both = present.get(ma, np.ones(n_all, bool)) & present.get(mb, np.ones(n_all, bool))
        try:
            al = modality_alignment(per[ma][both], per[mb][both], k)
        except (ValueError, ArithmeticError, RuntimeError, np.linalg.LinAlgError) as e:
            if errors is not None:
                errors.append(f"{ma} vs {mb}: {e}")
            continue
        rec = {**base, "kind": "modalities", "a": ma, "b": mb, "n_rows": int(n_all), **al}
        if weights is not None:
            ks = (
                al["k"],
                al["k_erank"],
                al["k_whole"] if al["subspace_distance_whole"] is not None else None,
            )
            boot = alignment_resamples(per[ma][both], per[mb][both], ks, weights[:, both])
            rec |= _ci_fields(boot, al, confidence)
            if arrays is not None:
                arrays[f"crossmodal/{ma}/{mb}"] = boot
        records.append(rec)
    return records


def _alignment_values(a: np.ndarray, b: np.ndarray, ks: tuple[int, int, int | None]) -> np.ndarray:
    """The :data:`CI_METRICS` of ``a, b`` at the given (fixed, erank, whole) k, from the d x d
    statistics (one eigendecomposition per side for the three k); NaN where undefined."""
    n = a.shape[0]
    ac, bc = a - a.mean(0), b - b.mean(0)
    ca, cb, cab = ac.T @ ac / (n - 1), bc.T @ bc / (n - 1), ac.T @ bc / (n - 1)
    eig_a, eig_b = _eigh_desc(ca), _eigh_desc(cb)
    out = np.full(len(CI_METRICS), np.nan)
    cos_fixed = None
    for j, k in enumerate(ks):
        if k is None or not 1 <= k <= min(n - 1, ca.shape[0], cb.shape[0]):
            continue
        cos = _sample_space_cosines(ca, cb, cab, n, k, eig_a, eig_b)
        # k is clipped to a resample's numerical rank (a resample of few distinct subjects):
        # the distance is then that of the clipped k, as the point estimate would be.
        out[j] = np.sqrt(max(0.0, 1.0 - float(np.square(cos).sum()) / cos.size))
        if j == 0:
            cos_fixed = cos
    if cos_fixed is not None:
        out[3] = float(np.degrees(np.arccos(cos_fixed)).mean())
    if n >= 4:
        na, nb = np.square(ac).sum(1), np.square(bc).sum(1)
        try:
            out[4] = linear_cka_debiased_from_stats(
                ca, cb, cab, n, float(na @ nb), float(na @ na), float(nb @ nb)
            )
        except ValueError:  # zero variance on this resample
            pass
    return out


def alignment_resamples(
    z_a: Any,
    z_b: Any,
    ks: tuple[int, int, int | None],
    weights: np.ndarray,
) -> np.ndarray:
    """The :data:`CI_METRICS` on each bootstrap resample of the rows.

    Args:
        z_a, z_b: (n, d_a), (n, d_b) embeddings of the same rows.
        ks: the point estimate's (``k``, ``k_erank``, ``k_whole`` or None) — kept fixed.
        weights: (B, n) row multiplicities of B subject-level resamples
            (:func:`densefeat.eval.bootstrap.resample_weights`, restricted to these rows).

    Returns:
        (B, 5) float64, NaN where a resample leaves a number undefined (fewer than 3 rows).
    """
    a = np.asarray(z_a, dtype=np.float64)
    b = np.asarray(z_b, dtype=np.float64)
    counts = np.rint(np.asarray(weights)).astype(np.int64)
    out = np.full((counts.shape[0], len(CI_METRICS)), np.nan)
    with warnings.catch_warnings():
        # A resample of few distinct subjects can fall below k: clipped, one warning each.
        warnings.simplefilter("ignore", RuntimeWarning)
        for i, c in enumerate(counts):
            idx = np.repeat(np.arange(a.shape[0]), c)
            if idx.size >= 3:
                out[i] = _alignment_values(a[idx], b[idx], ks)
    return out


def _interval(
    values: np.ndarray, estimate: float | None, confidence: float
) -> tuple[list[float] | None, float | None]:
    """The recentred percentile interval (module docstring) and the bootstrap bias."""
    v = values[np.isfinite(values)]
    if v.size == 0 or estimate is None or not np.isfinite(estimate):
        return None, None
    bias = float(v.mean() - estimate)
    alpha = 100 * (1.0 - confidence) / 2.0
    lo, hi = np.percentile(v - bias, [alpha, 100 - alpha])
    return [float(lo), float(hi)], bias


def _ci_fields(boot: np.ndarray, point: dict[str, Any], confidence: float) -> dict[str, Any]:
    """``<metric>_ci`` and ``<metric>_bias`` for each metric plus the resample counts."""
    out: dict[str, Any] = {}
    for j, m in enumerate(CI_METRICS):
        out[f"{m}_ci"], out[f"{m}_bias"] = _interval(boot[:, j], point.get(m), confidence)
    out["ci_resamples"] = int(boot.shape[0])
    out["ci_valid"] = int(np.isfinite(boot[:, 0]).sum())
    return out


def paired_alignment_differences(
    records: list[dict[str, Any]],
    arrays: dict[tuple[str, int], dict[str, np.ndarray]],
    reference: str = "dense",
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """``reference - method`` on every number of the cross-modal table, with a paired CI.

    Per method and modality pair: the seed mean of each metric, and per resample the seed mean
    of its resampled values (every run's resample ``b`` draws the same subjects, see the module
    docstring), so ``reference - method`` on resample ``b`` is a paired difference; the CI is
    its percentile interval, recentred on the point difference (module docstring). Identical
    methods give exactly ``[0, 0]``.

    Args:
        records: ``alignment`` records (kind ``"modalities"`` are used).
        arrays: (method, seed) -> the run's arrays, with ``crossmodal/<a>/<b>`` (B, 5)
            resample values (:func:`modality_alignment_records` with ``arrays``).
        reference: the method every other one is compared with.

    Returns:
        ``[{"reference", "method", "a", "b", "n_resamples", "<metric>": {"difference",
        "difference_ci"}}]``, one per (method, pair) with both sides measured.
    """
    recs = [r for r in records if r.get("kind") == "modalities"]
    by: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in recs:
        by.setdefault((r["method"], r["a"], r["b"]), []).append(r)

    def side(method: str, a: str, b: str) -> tuple[np.ndarray, np.ndarray] | None:
        group = by.get((method, a, b))
        if not group:
            return None
        boots = [arrays.get((method, r["seed"]), {}).get(f"crossmodal/{a}/{b}") for r in group]
        if any(x is None for x in boots):
            return None
        point = np.array(
            [[np.nan if r.get(m) is None else r[m] for m in CI_METRICS] for r in group]
        ).mean(0)
        return point, np.mean(np.stack(boots), axis=0)

    out = []
    for method, a, b in by:
        if method == reference:
            continue
        ref, other = side(reference, a, b), side(method, a, b)
        if ref is None or other is None or ref[1].shape != other[1].shape:
            continue
        rec: dict[str, Any] = {
            "reference": reference,
            "method": method,
            "a": a,
            "b": b,
            "n_resamples": int(ref[1].shape[0]),
        }
        for j, m in enumerate(CI_METRICS):
            diff = float(ref[0][j] - other[0][j])
            finite = bool(np.isfinite(diff))
            ci, _ = _interval(ref[1][:, j] - other[1][:, j], diff if finite else None, confidence)
            rec[m] = {"difference": diff if finite else None, "difference_ci": ci}
        out.append(rec)
    return out
