"""Code-group multimodal encoder: one EHR encoder per code group (+ static), fused.

The modalities of a stay are groups of its own coded events (``multimodal.groups``, e.g. vitals
``VITAL//`` and labs ``LAB//`` of PhysioNet 2019, :mod:`densefeat.data.ehr.groups`) and,
optionally, its static values (``"static"``: the MLP over ``EventBatch.static`` that
:class:`~densefeat.models.multimodal.MultimodalEncoder` uses). Each group is encoded by its own
EHR encoder over its own events only, then projected to ``d_out``; the fused embedding is the
mean of the modalities present in the row (a group with no event by the prediction time is
absent, like a row without notes). Same call contract as ``MultimodalEncoder``:
``forward(batch) -> (fused, per_modality)`` and :meth:`present`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data.ehr.batch import STATIC_EXTRA, EventBatch
from ..data.ehr.groups import group_view
from ..data.multimodal import MultimodalBatch
from .multimodal import _AGE_SCALE, infer_output_dim

__all__ = ["CodeGroupEncoder", "FusedHistories"]


class CodeGroupEncoder(nn.Module):
    """Per-group EHR encoders (+ static MLP) fused by the mean of the present modalities.

    Args:
        encoders: group name -> EHR encoder (``EventBatch -> (B, d_ehr)``), in group order.
        group_of_id: (V,) int64, the group index of each vocabulary id (-1: none).
        d_out: width of every per-modality and of the fused embedding.
        static_dim: width of ``EventBatch.static`` to add the ``"static"`` modality (None: no).
        dropout: dropout of the static MLP.
    """

    def __init__(
        self,
        encoders: dict[str, nn.Module],
        group_of_id: torch.Tensor,
        d_out: int = 128,
        *,
        static_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not encoders:
            raise ValueError("CodeGroupEncoder: no group")
        if len(encoders) + (static_dim is not None) < 2:
            raise ValueError(
                "CodeGroupEncoder: at least two modalities are needed (two groups, or one "
                "group and multimodal.static=true)"
            )
        self.groups = tuple(encoders)
        self.encoders = nn.ModuleDict(encoders)
        self.register_buffer("group_of_id", group_of_id.to(torch.int64), persistent=False)
        self._d_out = int(d_out)
        self.proj = nn.ModuleDict(
            {g: nn.Linear(infer_output_dim(e, g), d_out) for g, e in encoders.items()}
        )
        self.static_dim = static_dim
        if static_dim is not None:
            self.static_mlp = nn.Sequential(
                nn.Linear(static_dim, d_out), nn.GELU(), nn.Dropout(dropout)
            )
            self.proj["static"] = nn.Linear(d_out, d_out)

    @property
    def d_out(self) -> int:
        """Width of the fused and per-modality embeddings."""
        return self._d_out

    @property
    def modalities(self) -> tuple[str, ...]:
        """Names of the per-modality embeddings, in fusion order."""
        return tuple(self.proj.keys())

    @staticmethod
    def _events(batch: MultimodalBatch | EventBatch) -> EventBatch:
        return batch.events if isinstance(batch, MultimodalBatch) else batch

    def views(self, batch: MultimodalBatch | EventBatch) -> dict[str, EventBatch]:
        """Each group's view of the batch (only its events, same prediction times)."""
        events = self._events(batch)
        table = self.group_of_id.to(events.codes.device)
        return {g: group_view(events, table, i) for i, g in enumerate(self.groups)}

    def present(self, batch: MultimodalBatch | EventBatch) -> dict[str, torch.Tensor]:
        """(B,) bool per modality: the group has at least one event by the prediction time
        (static: always). Measure alignment on rows where both modalities are present."""
        events = self._events(batch)
        table = self.group_of_id.to(events.codes.device)
        out = {
            g: ((table[events.codes] == i) & events.mask).any(1) for i, g in enumerate(self.groups)
        }
        if self.static_dim is not None:
            out["static"] = torch.ones_like(events.mask[:, 0], dtype=torch.bool)
        return out

    def _static(self, events: EventBatch) -> torch.Tensor:
        x = events.static
        if x.shape[1] != self.static_dim:
            raise ValueError(
                f"CodeGroupEncoder: EventBatch.static has {x.shape[1]} columns, the encoder "
                f"was built for static_dim={self.static_dim}"
            )
        age_col = x.shape[1] - len(STATIC_EXTRA)
        if age_col >= 0:  # age in centuries, the scale of the 0/1 indicators
            scale = torch.ones(x.shape[1], dtype=x.dtype, device=x.device)
            scale[age_col] = _AGE_SCALE
            x = x * scale
        return self.proj["static"](self.static_mlp(x))

    def forward(
        self, batch: MultimodalBatch | EventBatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(fused, per_modality)``, each (B, d_out); fused = mean over present modalities
        (a row with no modality present, possible only without static, gets zeros)."""
        events = self._events(batch)
        per: dict[str, Any] = {}
        for g, view in self.views(events).items():
            per[g] = self.proj[g](self.encoders[g](view))
        if self.static_dim is not None:
            per["static"] = self._static(events)
        present = self.present(events)
        stacked = torch.stack([per[m] for m in self.modalities], dim=1)  # (B, M, d)
        w = torch.stack([present[m] for m in self.modalities], dim=1).to(stacked.dtype)
        fused = (stacked * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp(min=1.0)
        return fused, per


class FusedHistories(nn.Module):
    """The fused embedding of a :class:`CodeGroupEncoder` as a plain EHR encoder
    (``EventBatch -> (B, d_out)``, with ``embed_dim`` and ``config``), so the EHR evaluations
    (temporal stability, test-time perturbations of the events) run on code-group runs
    unchanged: a perturbation of the record reaches every group through its own view."""

    def __init__(self, encoder: CodeGroupEncoder) -> None:
        super().__init__()
        self.inner = encoder
        self.embed_dim = encoder.d_out
        self.config = next(iter(encoder.encoders.values())).config

    def forward(self, batch: EventBatch) -> torch.Tensor:
        return self.inner(batch)[0]
