"""Module forms of the self-supervised baselines: VICReg, Barlow Twins and SimCLR / InfoNCE.

Thin wrappers over :mod:`densefeat.functional.baselines` that hold the hyperparameters and do
the distributed part the official implementations do, with ``gather_distributed=True`` (the
default) under ``torch.distributed``:

- :class:`VICRegLoss`, :class:`BarlowTwinsLoss`: covariance-type, so the global batch's moments
  are all-reduced (differentiably; :func:`~densefeat.losses.distributed.global_all_reduce`).
  That is what the official code computes (VICReg's ``FullGatherLayer``; Barlow Twins'
  SyncBatchNorm plus all-reduce of ``c``), at ``d x d`` per collective instead of the rows.
  Barlow Twins therefore standardises each view over the global batch.
- :class:`InfoNCELoss`: the rows themselves are gathered
  (:func:`~densefeat.losses.distributed.gather_rows`), so negatives come from the global batch.

Every rank computes the same global loss; its gradient is ``world_size`` times the single-process
gradient of its rows until DDP averages it (see :mod:`densefeat.losses.distributed`). In a single
process each module equals its functional counterpart exactly.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..functional.baselines import (
    barlow_twins_loss_from_moments,
    info_nce_loss,
    vicreg_loss_from_moments,
)
from ..functional.moments import moments
from ._common import check_finite_number, local_pair
from .distributed import gather_rows, global_all_reduce, world_size

__all__ = ["BarlowTwinsLoss", "InfoNCELoss", "VICRegLoss"]


class VICRegLoss(nn.Module):
    """VICReg: ``sim_coeff * mse(za, zb) + std_coeff * variance + cov_coeff * covariance``.

    variance ``= mean_j relu(1 - sqrt(Var z_j + eps))`` averaged over the two views; covariance
    ``= sum_{i != j} C_ij^2 / d`` summed over the two views. Reference: Bardes, Ponce & LeCun
    2022, "VICReg", ICLR; ``facebookresearch/vicreg``. See
    :func:`densefeat.functional.baselines.vicreg_loss`.

    Args:
        sim_coeff, std_coeff, cov_coeff: term weights (paper defaults 25 / 25 / 1).
        eps: added to the variance inside the square root (>= 0; official 1e-4).
        gather_distributed: under ``torch.distributed``, use the global batch's moments.
        group: process group for the reduction.
    """

    def __init__(
        self,
        sim_coeff: float = 25.0,
        std_coeff: float = 25.0,
        cov_coeff: float = 1.0,
        eps: float = 1e-4,
        *,
        gather_distributed: bool = True,
        group: Any = None,
    ) -> None:
        super().__init__()
        self.sim_coeff = check_finite_number(sim_coeff, "sim_coeff")
        self.std_coeff = check_finite_number(std_coeff, "std_coeff")
        self.cov_coeff = check_finite_number(cov_coeff, "cov_coeff")
        self.eps = check_finite_number(eps, "eps", nonnegative=True)
        self.gather_distributed = bool(gather_distributed)
        self.group = group

    def forward(self, za: Tensor, zb: Tensor) -> Tensor:
        """0-d loss of the (global) paired batch ``(za, zb)``, each (n_local, d)."""
        ar = global_all_reduce(self.group) if self.gather_distributed else None
        za, zb = local_pair(za, zb, distributed=ar is not None, same_d=True, promote=True)
        m = moments(za, zb, all_reduce=ar)
        return vicreg_loss_from_moments(m, self.sim_coeff, self.std_coeff, self.cov_coeff, self.eps)

    def extra_repr(self) -> str:
        return (
            f"sim_coeff={self.sim_coeff}, std_coeff={self.std_coeff}, cov_coeff={self.cov_coeff}, "
            f"eps={self.eps}, gather_distributed={self.gather_distributed}"
        )


class BarlowTwinsLoss(nn.Module):
    """Barlow Twins: ``sum_i (c_ii - 1)^2 + lambd * sum_{i != j} c_ij^2``.

    ``c`` is the cross-correlation of the two views, each standardised over the (global) batch
    as ``BatchNorm1d(affine=False)`` does (biased variance, ``bn_eps`` inside the square root).
    Reference: Zbontar et al. 2021, "Barlow Twins", ICML; ``facebookresearch/barlowtwins``. See
    :func:`densefeat.functional.baselines.barlow_twins_loss`.

    Args:
        lambd: weight of the off-diagonal (redundancy-reduction) term (paper default 5e-3).
        bn_eps: BatchNorm's eps (>= 0).
        gather_distributed: under ``torch.distributed``, standardise and correlate over the
            global batch.
        group: process group for the reduction.
    """

    def __init__(
        self,
        lambd: float = 5e-3,
        bn_eps: float = 1e-5,
        *,
        gather_distributed: bool = True,
        group: Any = None,
    ) -> None:
        super().__init__()
        self.lambd = check_finite_number(lambd, "lambd")
        self.bn_eps = check_finite_number(bn_eps, "bn_eps", nonnegative=True)
        self.gather_distributed = bool(gather_distributed)
        self.group = group

    def forward(self, za: Tensor, zb: Tensor) -> Tensor:
        """0-d loss of the (global) paired batch ``(za, zb)``, each (n_local, d)."""
        ar = global_all_reduce(self.group) if self.gather_distributed else None
        za, zb = local_pair(za, zb, distributed=ar is not None, same_d=True, promote=True)
        m = moments(za, zb, all_reduce=ar)
        return barlow_twins_loss_from_moments(m, self.lambd, self.bn_eps)

    def extra_repr(self) -> str:
        return (
            f"lambd={self.lambd}, bn_eps={self.bn_eps}, "
            f"gather_distributed={self.gather_distributed}"
        )


class InfoNCELoss(nn.Module):
    """SimCLR's NT-Xent over the (global) batch.

    ``loss = 1/(2N) sum_i -log(exp(s_i,p(i)) / sum_{k != i} exp(s_ik))`` with
    ``s_ik = u_i . u_k / temperature`` over the ``2N`` L2-normalised rows of ``[za; zb]``.
    Reference: Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
    Representations", ICML. See :func:`densefeat.functional.baselines.info_nce_loss`.

    Under ``torch.distributed`` with ``gather_distributed=True`` the rows of both views are
    all-gathered (differentiably), so each anchor's negatives are the other ``2N_global - 2``
    rows of the global batch, and every rank evaluates the full global loss (a
    ``2N_global x 2N_global`` similarity matrix per rank, as on one device with that batch).
    Ranks may hold different numbers of rows.

    Args:
        temperature: ``tau > 0`` (SimCLR's default for large batches is 0.1).
        eps: floor of the row norm in the L2 normalisation.
        gather_distributed: under ``torch.distributed``, take negatives from the global batch.
        group: process group for the gather.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        eps: float = 1e-8,
        *,
        gather_distributed: bool = True,
        group: Any = None,
    ) -> None:
        super().__init__()
        self.temperature = check_finite_number(temperature, "temperature", positive=True)
        self.eps = check_finite_number(eps, "eps", nonnegative=True)
        self.gather_distributed = bool(gather_distributed)
        self.group = group

    def forward(self, za: Tensor, zb: Tensor) -> Tensor:
        """0-d loss of the (global) paired batch ``(za, zb)``, each (n_local, d)."""
        distributed = self.gather_distributed and world_size(self.group) > 1
        za, zb = local_pair(za, zb, distributed=distributed, same_d=True, promote=True)
        if distributed:
            # Gathering each view separately keeps row i of za paired with row i of zb in the
            # global batch too (both are concatenated in rank order).
            za = gather_rows(za, self.group)
            zb = gather_rows(zb, self.group)
        return info_nce_loss(za, zb, self.temperature, eps=self.eps)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, eps={self.eps}, "
            f"gather_distributed={self.gather_distributed}"
        )
