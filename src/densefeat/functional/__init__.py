"""Pure tensor functions: geometry metrics, dense-feature objectives and baseline losses.

Imports torch (and NumPy for array inputs) only. Names are imported on first use: the covariance
route of the metrics (:mod:`~densefeat.functional.spectrum`,
:mod:`~densefeat.functional.subspace`, :mod:`~densefeat.functional.reference`) is NumPy, so
``densefeat analyze`` never pays for importing torch. Metrics take (n, d) tensors or arrays and
return float64 Python numbers; objectives take tensors and return 0-d tensors.
"""

from __future__ import annotations

from .._lazy import lazy_exports

#: Public name -> the submodule that defines it.
_EXPORTS: dict[str, str] = {
    "AlphaReq": "spectrum",
    "DEFAULT_WEIGHTS": "objectives",
    "Moments": "moments",
    "Spectrum": "spectrum",
    "alpha_req": "spectrum",
    "barlow_twins_loss": "baselines",
    "chance_subspace_distance": "subspace",
    "condition_number": "spectrum",
    "condition_number_k": "spectrum",
    "condition_number_reason": "spectrum",
    "dense_feature_loss": "objectives",
    "dense_feature_loss_from_moments": "objectives",
    "effective_rank": "spectrum",
    "effective_rank_eig": "spectrum",
    "feature_orthogonality_loss": "objectives",
    "geometry": "spectrum",
    "info_nce_loss": "baselines",
    "isotropic_reference": "reference",
    "linear_cka": "subspace",
    "linear_cka_debiased": "subspace",
    "moments": "moments",
    "numerical_rank": "spectrum",
    "participation_ratio": "spectrum",
    "principal_angles": "subspace",
    "rankme": "spectrum",
    "spectral_balance_loss": "objectives",
    "spectral_entropy": "spectrum",
    "spectrum": "spectrum",
    "spectrum_from_covariance": "spectrum",
    "stable_rank": "spectrum",
    "subspace_consistency_loss": "objectives",
    "subspace_distance": "subspace",
    "subspace_distance_feature": "subspace",
    "vicreg_loss": "baselines",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
