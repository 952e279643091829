"""Module forms of the dense-feature objectives, with global-batch statistics under DDP.

Each module holds hyperparameters and calls :mod:`densefeat.functional.objectives`; the only
thing it adds is the distributed reduction. With ``gather_distributed=True`` (the default) and
``torch.distributed`` initialised with more than one rank, the moments (means, covariances and
cross-covariance) are those of the global batch, all-reduced through the differentiable
collective of :func:`densefeat.losses.distributed.global_all_reduce`. Every rank then computes the
same loss value; each rank's gradient is ``world_size`` times the single-process gradient of its
rows until DDP averages it (see :mod:`densefeat.losses.distributed`). Ranks may hold different
numbers of rows. In a single process the modules equal their functional counterparts exactly.

Definitions (docs/design.md, Objectives; densefeat's own, the motivating paper publishes no
formulas):

- spectral balance: ``L_spec = 1 - logdet(I + a d C/trC) / (d log(1 + a))`` (coding rate of
  MCR^2, Yu et al. 2020) or the exact ``log d - H(p)``;
- feature orthogonality: mean squared off-diagonal correlation + VICReg's variance hinge;
- subspace consistency: ``"shrunk"`` (default) ``L_sub = 1 - CKA(za A^-1/2, zb B^-1/2)`` with
  ``A = C_a + g tr(C_a)/d I`` (shrinkage-whitened features), or ``"cca"``
  ``1 - ||La^-1 C_ab Lb^-T||_F^2 / d``, one minus the mean squared canonical correlation of the
  two windows (related to W-MSE and whitened Barlow Twins).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..functional.moments import moments, pooled_moments
from ..functional.objectives import (
    CONSISTENCY_FORMS,
    DEFAULT_CONSISTENCY,
    DEFAULT_SHRINKAGE,
    DEFAULT_WEIGHTS,
    dense_feature_loss_from_moments,
    feature_orthogonality_from_cov,
    spectral_balance_entropy_from_cov,
    spectral_balance_from_cov,
    subspace_consistency_from_moments,
    warn_small_batch,
)
from ._common import check_finite_number, check_top_k, local_matrix, local_pair
from .distributed import AllReduce, global_all_reduce

__all__ = [
    "DenseFeatureLoss",
    "FeatureOrthogonalityLoss",
    "SpectralBalanceLoss",
    "SubspaceConsistencyLoss",
]

_SPECTRAL_VARIANTS = ("coding_rate", "entropy")


def _check_variant(variant: str, name: str) -> str:
    if variant not in _SPECTRAL_VARIANTS:
        raise ValueError(f"{name} must be 'coding_rate' or 'entropy', got {variant!r}")
    return variant


def _check_consistency(consistency: str, shrinkage: float) -> tuple[str, float]:
    if consistency not in CONSISTENCY_FORMS:
        raise ValueError(f"consistency must be 'shrunk' or 'cca', got {consistency!r}")
    return consistency, check_finite_number(shrinkage, "shrinkage", nonnegative=True)


def _reducer(gather_distributed: bool, group: Any) -> AllReduce | None:
    # Resolved at every forward, not at construction: the module is usually built before
    # init_process_group runs.
    return global_all_reduce(group) if gather_distributed else None


class DenseFeatureLoss(nn.Module):
    """The dense-feature objective on paired embeddings (two windows, views or modalities).

    ``L = w_spec (L_spec(za) + L_spec(zb)) + w_orth (L_orth(za) + L_orth(zb))
    + w_sub L_sub(za, zb)``; see :func:`densefeat.functional.dense_feature_loss`. The moments
    are computed once per forward and shared by the three terms. Warns when the global batch
    has ``n < 2 max(d_a, d_b)`` rows.

    Args:
        w_spec, w_orth, w_sub: term weights (finite); 0 skips a term (ablations).
        top_k: top-k form of the subspace term (window a restricted to its top-k principal
            subspace, taken detached); ``None`` for the full form.
        spectral_variant: ``"coding_rate"`` (default, Cholesky only) or ``"entropy"``
            (``eigvalsh``; slower, for analysis).
        consistency: form of the subspace term, ``"shrunk"`` (default) or ``"cca"``.
        shrinkage: ``g >= 0`` of the ``"shrunk"`` form.
        momentum: ``0 <= momentum < 1``; above 0 the subspace term reads covariances pooled
            over recent batches by an exponential moving average (value pooled, gradient to
            this batch at full weight: :func:`densefeat.functional.moments.pooled_moments`),
            updated at every training-mode forward and kept in the module's state
            (``get_extra_state``), so checkpoints resume it. 0 (default): this batch only.
        gather_distributed: under ``torch.distributed``, use the global batch's moments.
        group: process group for the reduction (``None``: the default group).

    Returns (forward):
        ``(loss, terms)``: the 0-d loss and a dict of detached term values (``"loss"``,
        ``"spectral_balance"``, ``"feature_orthogonality"``, ``"subspace_consistency"``; a term
        with weight 0 is absent).
    """

    def __init__(
        self,
        w_spec: float = DEFAULT_WEIGHTS["w_spec"],
        w_orth: float = DEFAULT_WEIGHTS["w_orth"],
        w_sub: float = DEFAULT_WEIGHTS["w_sub"],
        top_k: int | None = None,
        spectral_variant: str = "coding_rate",
        consistency: str = DEFAULT_CONSISTENCY,
        shrinkage: float = DEFAULT_SHRINKAGE,
        *,
        momentum: float = 0.0,
        gather_distributed: bool = True,
        group: Any = None,
    ) -> None:
        super().__init__()
        self.consistency, self.shrinkage = _check_consistency(consistency, shrinkage)
        momentum = check_finite_number(momentum, "momentum", nonnegative=True)
        if momentum >= 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.momentum = momentum
        self._running: tuple[Tensor, Tensor, Tensor] | None = None
        self._updates = 0
        self.w_spec = check_finite_number(w_spec, "w_spec")
        self.w_orth = check_finite_number(w_orth, "w_orth")
        self.w_sub = check_finite_number(w_sub, "w_sub")
        self.top_k = check_top_k(top_k)
        self.spectral_variant = _check_variant(spectral_variant, "spectral_variant")
        self.gather_distributed = bool(gather_distributed)
        self.group = group

    def forward(self, za: Tensor, zb: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss and detached terms of the (global) batch ``(za, zb)``, each (n_local, d)."""
        ar = _reducer(self.gather_distributed, self.group)
        za, zb = local_pair(za, zb, distributed=ar is not None)
        m = moments(za, zb, all_reduce=ar)
        warn_small_batch(m.n, max(za.shape[1], zb.shape[1]))
        sub = None
        if self.momentum > 0.0 and self.w_sub != 0.0 and self.training:
            sub, self._running = pooled_moments(m, self._running, self._updates, self.momentum)
            self._updates += 1
        return dense_feature_loss_from_moments(
            m,
            sub_moments=sub,
            w_spec=self.w_spec,
            w_orth=self.w_orth,
            w_sub=self.w_sub,
            top_k=self.top_k,
            spectral_variant=self.spectral_variant,
            consistency=self.consistency,
            shrinkage=self.shrinkage,
        )

    def get_extra_state(self) -> dict[str, Any]:
        """The pooled statistics of ``momentum`` (empty without it), for checkpoints."""
        if self._running is None:
            return {"updates": 0}
        return {"updates": self._updates, "running": [r.detach().cpu() for r in self._running]}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        running = state.get("running")
        self._running = None if running is None else tuple(running)  # type: ignore[assignment]
        self._updates = int(state.get("updates", 0))

    def extra_repr(self) -> str:
        return (
            f"w_spec={self.w_spec}, w_orth={self.w_orth}, w_sub={self.w_sub}, "
            f"top_k={self.top_k}, spectral_variant={self.spectral_variant!r}, "
            f"consistency={self.consistency!r}, shrinkage={self.shrinkage}, "
            f"momentum={self.momentum}, gather_distributed={self.gather_distributed}"
        )


class SpectralBalanceLoss(nn.Module):
    """Spectral balance ("spreading") of one embedding matrix.

    ``coding_rate``: ``L = 1 - logdet(I + a d C/trC) / (d log(1 + a))``, in [0, 1), 0 iff ``C``
    is isotropic (MCR^2's coding rate, Yu et al. 2020, on the trace-normalised covariance).
    ``entropy``: ``L = log d - H(p)``, ``p = eig(C)/trC``. See
    :func:`densefeat.functional.spectral_balance_loss`.

    Args:
        variant: ``"coding_rate"`` (default) or ``"entropy"``.
        a: coding-rate distortion constant (> 0); unused by ``"entropy"``.
        gather_distributed: under ``torch.distributed``, use the global batch's covariance.
        group: process group for the reduction.
    """

    def __init__(
        self,
        variant: str = "coding_rate",
        a: float = 1.0,
        *,
        gather_distributed: bool = True,
        group: Any = None,
    ) -> None:
        super().__init__()
        self.variant = _check_variant(variant, "variant")
        self.a = check_finite_number(a, "a", positive=True)
        self.gather_distributed = bool(gather_distributed)
        self.group = group

    def forward(self, z: Tensor) -> Tensor:
        """0-d loss of the (global) batch ``z``, (n_local, d)."""
        ar = _reducer(self.gather_distributed, self.group)
        z = local_matrix(z, "z", distributed=ar is not None)
        cov = moments(z, all_reduce=ar).cov_a
        if self.variant == "coding_rate":
            return spectral_balance_from_cov(cov, self.a)
        return spectral_balance_entropy_from_cov(cov)

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, a={self.a}, gather_distributed={self.gather_distributed}"


class FeatureOrthogonalityLoss(nn.Module):
    """Feature orthogonality: mean squared off-diagonal correlation + VICReg's variance hinge.

    ``L = sum_{i != j} R_ij^2 / (d (d - 1)) + mean_j relu(1 - sqrt(C_jj + 1e-4))``, ``R`` the
    correlation matrix: VICReg's variance and covariance terms (Bardes et al. 2022) taken on
    correlations. See :func:`densefeat.functional.feature_orthogonality_loss`.

    Args:
        gather_distributed: under ``torch.distributed``, use the global batch's covariance.
        group: process group for the reduction.
    """

    def __init__(self, *, gather_distributed: bool = True, group: Any = None) -> None:
        super().__init__()
        self.gather_distributed = bool(gather_distributed)
        self.group = group

    def forward(self, z: Tensor) -> Tensor:
        """0-d loss of the (global) batch ``z``, (n_local, d)."""
        ar = _reducer(self.gather_distributed, self.group)
        z = local_matrix(z, "z", distributed=ar is not None)
        return feature_orthogonality_from_cov(moments(z, all_reduce=ar).cov_a)

    def extra_repr(self) -> str:
        return f"gather_distributed={self.gather_distributed}"


class SubspaceConsistencyLoss(nn.Module):
    """Subspace consistency of paired embeddings (two windows, views or modalities).

    ``"shrunk"`` (default): ``1 - CKA(za A^-1/2, zb B^-1/2)``, linear CKA of the features
    whitened by the shrunk covariances ``A = C_a + g tr(C_a)/d I``, ``B`` likewise; in [0, 1].
    ``"cca"``: ``1 - ||La^-1 C_ab Lb^-T||_F^2 / d``, one minus the mean squared canonical
    correlation (``La, Lb`` Cholesky factors of ``C_a + eps I``, ``C_b + eps I``,
    ``eps = 1e-4 tr C / d``); related to W-MSE (Ermolov et al. 2021) and Barlow Twins on
    whitened features. See :func:`densefeat.functional.subspace_consistency_loss`. Warns when
    the global batch has ``n < 2 max(d_a, d_b)`` rows.

    Args:
        top_k: restrict window a to its top-k principal subspace (taken detached).
        consistency: ``"shrunk"`` (default) or ``"cca"``.
        shrinkage: ``g >= 0`` of the ``"shrunk"`` form.
        gather_distributed: under ``torch.distributed``, use the global batch's moments.
        group: process group for the reduction.
    """

    def __init__(
        self,
        top_k: int | None = None,
        consistency: str = DEFAULT_CONSISTENCY,
        shrinkage: float = DEFAULT_SHRINKAGE,
        *,
        gather_distributed: bool = True,
        group: Any = None,
    ) -> None:
        super().__init__()
        self.top_k = check_top_k(top_k)
        self.consistency, self.shrinkage = _check_consistency(consistency, shrinkage)
        self.gather_distributed = bool(gather_distributed)
        self.group = group

    def forward(self, za: Tensor, zb: Tensor) -> Tensor:
        """0-d loss of the (global) paired batch ``(za, zb)``, each (n_local, d)."""
        ar = _reducer(self.gather_distributed, self.group)
        za, zb = local_pair(za, zb, distributed=ar is not None)
        m = moments(za, zb, all_reduce=ar)
        warn_small_batch(m.n, max(za.shape[1], zb.shape[1]))
        return subspace_consistency_from_moments(m, self.top_k, self.consistency, self.shrinkage)

    def extra_repr(self) -> str:
        return (
            f"top_k={self.top_k}, consistency={self.consistency!r}, shrinkage={self.shrinkage}, "
            f"gather_distributed={self.gather_distributed}"
        )
