"""Monitoring during training: the geometry of a fixed held-out batch, and the collapse rule.

Every ``log.monitor_every`` steps the loop embeds the same monitoring rows (held-out subjects,
never trained on) and records in ``stats.jsonl`` under ``monitor``: ``effective_rank`` and
``condition_number`` of the backbone embeddings and, for the pair methods,
``projector_effective_rank`` and ``projector_condition_number`` of the same rows through the
projector (eval mode): the design asks for the geometry of both.

Collapse (docs/design.md): the monitoring effective rank falls below 10% of ``d`` or below half
its best value so far. Centring caps the rank at ``n - 1``, so a monitoring batch smaller than
``d`` is judged against ``min(d, n - 1)`` (3 held-out subjects cannot show a rank above 2).
"""

from __future__ import annotations

import torch
from torch import nn

from ..functional import condition_number, effective_rank
from ..models.heads import ProjectionHead

__all__ = ["CollapseMonitor", "monitor_geometry"]


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
