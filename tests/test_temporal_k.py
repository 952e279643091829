"""Temporal stability at k = round(effective rank) and over the whole space (canonical form)."""

from __future__ import annotations

import numpy as np
import pytest

from densefeat.eval.temporal import other_k_fields
from densefeat.functional import chance_subspace_distance, effective_rank


def _canonical_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Independent reference: singular values of Qa^T Qb (QR of the centred matrices)."""
    qa, _ = np.linalg.qr(a - a.mean(0))
    qb, _ = np.linalg.qr(b - b.mean(0))
    return np.linalg.svd(qa.T @ qb, compute_uv=False)


def _views(n: int = 80, d: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d))
    return {
        "z_t": z,
        "z_t1": z + 0.7 * rng.normal(size=(n, d)),
        "z_a": z + 0.3 * rng.normal(size=(n, d)),
        "z_b": z + 0.3 * rng.normal(size=(n, d)),
    }


def test_whole_space_distance_is_the_canonical_correlation_form_and_whitening_invariant() -> None:
    z = _views()
    out = other_k_fields(z, 80)
    rho = _canonical_correlations(z["z_t"], z["z_t1"])
    assert out["k_whole"] == 6
    assert out["subspace_distance_whole"] == pytest.approx(np.sqrt(1 - np.mean(rho**2)), abs=1e-9)
    assert out["chance_whole"] == pytest.approx(chance_subspace_distance(80, 6))
    # Any invertible linear map of either matrix (e.g. whitening) leaves it unchanged.
    rng = np.random.default_rng(1)
    mixed = dict(z, z_t=z["z_t"] @ rng.normal(size=(6, 6)) * np.array([100, 1, 1, 1, 1, 0.01]))
    assert other_k_fields(mixed, 80)["subspace_distance_whole"] == pytest.approx(
        out["subspace_distance_whole"], abs=1e-8
    )
    assert 0 <= out["floor_whole"] < out["subspace_distance_whole"] < out["chance_whole"]


def test_effective_rank_k_and_undefined_whole_space() -> None:
    z = _views(n=40, d=12, seed=3)
    z["z_t"] = z["z_t"] * np.r_[np.full(3, 10.0), np.full(9, 0.1)]
    out = other_k_fields(z, 40)
    assert out["k_erank"] == round(effective_rank(z["z_t"]))
    assert 1 <= out["k_erank"] <= 12 and out["chance_erank"] == pytest.approx(
        chance_subspace_distance(40, out["k_erank"])
    )
    small = other_k_fields(_views(n=6, d=12), 6)
    assert small["subspace_distance_whole"] is None and "n - 1" in small["whole_reason"]
    assert small["k_erank"] <= 5
