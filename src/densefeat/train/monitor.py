"""Monitoring during training: the geometry of a fixed held-out batch, and the collapse rule.

Every ``log.monitor_every`` steps the loop embeds the same monitoring rows (held-out subjects,
never trained on) and records in ``stats.jsonl`` under ``monitor``: ``effective_rank`` and
``condition_number`` of the backbone embeddings and, for the pair methods,
``projector_effective_rank`` and ``projector_condition_number`` of the same rows through the
projector (eval mode): the design asks for the geometry of both.

Pairing (issue 11): where the modality has window pairs (EHR), the same record gains
``subspace_consistency``, the subspace-consistency term (``dense.consistency`` and
``dense.shrinkage``) on fixed window pairs of held-out subjects, and
``subspace_consistency_shuffled``, the same with the second window's rows permuted by a fixed
seed: the control that says whether the term sees which rows pair up. Both are taken on what
the pair methods' loss sees, the projector output (eval mode), or on the backbone without one;
``subspace_consistency_n`` is the number of pairs (one per monitoring subject with two windows).

Collapse (docs/design.md): the monitoring effective rank falls below 10% of ``d`` or below half
its best value so far. Centring caps the rank at ``n - 1``, so a monitoring batch smaller than
``d`` is judged against ``min(d, n - 1)`` (3 held-out subjects cannot show a rank above 2).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..functional import condition_number, effective_rank
from ..functional.objectives import (
    DEFAULT_CONSISTENCY,
    DEFAULT_SHRINKAGE,
    subspace_consistency_loss,
)
from ..models.heads import ProjectionHead

__all__ = ["CollapseMonitor", "monitor_consistency", "monitor_geometry", "shuffled_rows"]

#: Seed of the row permutation of the shuffled control (fixed: the same control every step).
SHUFFLE_SEED = 0


def shuffled_rows(n: int, seed: int = SHUFFLE_SEED) -> torch.Tensor:
    """The fixed permutation of ``n`` rows used by the shuffled control."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def monitor_consistency(
    za: torch.Tensor,
    zb: torch.Tensor,
    head: nn.Module | None = None,
    *,
    consistency: str = DEFAULT_CONSISTENCY,
    shrinkage: float = DEFAULT_SHRINKAGE,
    seed: int = SHUFFLE_SEED,
) -> dict[str, float]:
    """The subspace-consistency term on paired monitoring rows and its shuffled control.

    Args:
        za, zb: (n, d) backbone embeddings of the two windows of the same n pairs.
        head: a :class:`ProjectionHead` to pass both through first (eval mode, restored), as
            the pair methods' loss does; anything else is ignored.
        consistency, shrinkage: the form of the term
            (:func:`densefeat.functional.subspace_consistency_loss`).
        seed: seed of the row permutation of ``zb`` (:func:`shuffled_rows`).

    Returns:
        ``subspace_consistency`` (rows paired) and ``subspace_consistency_shuffled`` (``zb``'s
        rows permuted), floats; the shuffled value is the term's chance level on this batch.
        ``subspace_consistency_n``: the number of pairs.
    """
    if isinstance(head, ProjectionHead):
        was_training = head.training
        head.eval()
        device = next(head.parameters()).device
        za, zb = head(za.to(device)), head(zb.to(device))
        head.train(was_training)
    za = za.detach().to("cpu", torch.float64)
    zb = zb.detach().to("cpu", torch.float64)
    perm = shuffled_rows(za.shape[0], seed)
    kw = {"consistency": consistency, "shrinkage": shrinkage}
    with warnings.catch_warnings():
        # n < 2d is the monitoring batch's size, reported once by the shuffled control itself.
        warnings.simplefilter("ignore", RuntimeWarning)
        paired = subspace_consistency_loss(za, zb, **kw)
        shuffled = subspace_consistency_loss(za, zb[perm], **kw)
    return {
        "subspace_consistency": float(paired),
        "subspace_consistency_shuffled": float(shuffled),
        "subspace_consistency_n": int(za.shape[0]),
    }


@torch.no_grad()
def monitor_geometry(z: torch.Tensor, head: nn.Module | None) -> dict[str, float]:
    """Geometry of monitoring embeddings ``z`` (n, d), and of ``head(z)`` for a projector.

    Returns:
        ``effective_rank`` and ``condition_number`` of the backbone embeddings; with a
        :class:`ProjectionHead`, also ``projector_effective_rank`` and
        ``projector_condition_number`` of its output (computed in eval mode, so a BatchNorm
        projector uses its running statistics, and restored to its mode afterwards).
    """
    z = z.float()
    out = {"effective_rank": effective_rank(z.cpu()), "condition_number": condition_number(z.cpu())}
    if isinstance(head, ProjectionHead):
        was_training = head.training
        head.eval()
        device = next(head.parameters()).device
        p = head(z.to(device)).float().cpu()
        head.train(was_training)
        out["projector_effective_rank"] = effective_rank(p)
        out["projector_condition_number"] = condition_number(p)
    return out


class CollapseMonitor:
    """The collapse rule over a run's monitoring steps (module docstring).

    Args:
        d: the backbone's width.
        n: rows of the monitoring batch.
    """

    def __init__(self, d: int, n: int):
        self.cap = min(d, n - 1)
        self.best = 0.0

    def update(self, effective_rank: float) -> bool:
        """Record one monitoring step; True when it looks collapsed."""
        self.best = max(self.best, effective_rank)
        return effective_rank < 0.1 * self.cap or effective_rank < 0.5 * self.best
