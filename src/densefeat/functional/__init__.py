"""Pure tensor functions: geometry metrics, dense-feature objectives and baseline losses.

Imports torch (and NumPy for array inputs) only. Metrics take (n, d) tensors or arrays and
return float64 Python numbers; objectives take tensors and return 0-d tensors.
"""

from .baselines import barlow_twins_loss, info_nce_loss, vicreg_loss
from .moments import Moments, moments
from .objectives import (
    DEFAULT_WEIGHTS,
    dense_feature_loss,
    dense_feature_loss_from_moments,
    feature_orthogonality_loss,
    spectral_balance_loss,
    subspace_consistency_loss,
)
from .reference import isotropic_reference
from .spectrum import (
    AlphaReq,
    Spectrum,
    alpha_req,
    condition_number,
    condition_number_k,
    condition_number_reason,
    effective_rank,
    effective_rank_eig,
    geometry,
    numerical_rank,
    participation_ratio,
    rankme,
    spectral_entropy,
    spectrum,
    spectrum_from_covariance,
    stable_rank,
)
from .subspace import (
    chance_subspace_distance,
    linear_cka,
    linear_cka_debiased,
    principal_angles,
    subspace_distance,
    subspace_distance_feature,
)

__all__ = [
    "DEFAULT_WEIGHTS",
    "AlphaReq",
    "Moments",
    "Spectrum",
    "alpha_req",
    "barlow_twins_loss",
    "chance_subspace_distance",
    "condition_number",
    "condition_number_k",
    "condition_number_reason",
    "dense_feature_loss",
    "dense_feature_loss_from_moments",
    "effective_rank",
    "effective_rank_eig",
    "feature_orthogonality_loss",
    "geometry",
    "info_nce_loss",
    "isotropic_reference",
    "linear_cka",
    "linear_cka_debiased",
    "moments",
    "numerical_rank",
    "participation_ratio",
    "principal_angles",
    "rankme",
    "spectral_balance_loss",
    "spectral_entropy",
    "spectrum",
    "spectrum_from_covariance",
    "stable_rank",
    "subspace_consistency_loss",
    "subspace_distance",
    "subspace_distance_feature",
    "vicreg_loss",
]
