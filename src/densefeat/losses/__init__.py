"""Loss modules: thin ``torch.nn.Module`` wrappers over :mod:`densefeat.functional`.

Each module holds hyperparameters, validates its inputs and, with ``gather_distributed=True``
under ``torch.distributed``, computes its loss on the global batch through the autograd-aware
collectives of :mod:`densefeat.losses.distributed` (covariance-type losses all-reduce their
moments; InfoNCE gathers rows). Single-process results equal the functional ones exactly.
"""

from .baselines import BarlowTwinsLoss, InfoNCELoss, VICRegLoss
from .dense import (
    DenseFeatureLoss,
    FeatureOrthogonalityLoss,
    SpectralBalanceLoss,
    SubspaceConsistencyLoss,
)
from .distributed import gather_rows, global_all_reduce

__all__ = [
    "BarlowTwinsLoss",
    "DenseFeatureLoss",
    "FeatureOrthogonalityLoss",
    "InfoNCELoss",
    "SpectralBalanceLoss",
    "SubspaceConsistencyLoss",
    "VICRegLoss",
    "gather_rows",
    "global_all_reduce",
]
