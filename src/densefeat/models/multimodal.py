"""Multimodal patient encoder: one encoder per modality, fused into one patient embedding.

Modalities of a :class:`~densefeat.data.multimodal.MultimodalBatch` row:

* ``"codes"``: the EHR encoder over the coded events (any module mapping an
  :class:`~densefeat.data.ehr.EventBatch` to ``(B, d_ehr)``, normally
  :class:`densefeat.models.ehr.EHREncoder`);
* ``"notes"``: the text encoder over each of the row's notes, then the masked mean over the
  row's notes; a row without notes gets a learned "no notes" vector instead (and the fusion MLP
  gets a 0/1 "has notes" flag, so it can tell the two apart);
* ``"static"`` (optional): a small MLP over ``EventBatch.static`` (static-code indicators, age).

Each modality is projected by its own Linear layer to the same width ``d_out``, so the
per-modality embeddings are comparable matrices: the subspace distance or CKA between
``per_modality["codes"]`` and ``per_modality["notes"]`` (rows with notes only, see
:meth:`MultimodalEncoder.present`) measures how aligned the modalities are, and the dense
objective's subspace term can pair them. Fusion is either ``"concat-mlp"`` (concatenate the
projected modalities and the flag, then a 2-layer MLP) or ``"mean"`` (the mean of the present
modalities; a row without notes averages the others, the "no notes" vector never enters).

Identical notes within a batch (the same subject at several prediction times shares its older
notes) are encoded once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from ..data.ehr.batch import STATIC_EXTRA, EventBatch
from ..data.multimodal import MultimodalBatch

__all__ = ["FUSIONS", "MultimodalConfig", "MultimodalEncoder", "infer_output_dim"]

FUSIONS = ("concat-mlp", "mean")
#: Age enters the static MLP in centuries, so its scale is that of the 0/1 indicators.
_AGE_SCALE = 0.01


@dataclass
class MultimodalConfig:
    """Configuration of the fusion part of :class:`MultimodalEncoder` (JSON-able).

    Attributes:
        d_out: width of every per-modality embedding and of the fused embedding.
        fusion: ``"concat-mlp"`` or ``"mean"``.
        fusion_hidden: hidden width of the concat-MLP.
        use_static: add the ``"static"`` modality (an MLP over ``EventBatch.static``).
        dropout: dropout in the fusion and static MLPs.
    """

    d_out: int = 128
    fusion: str = "concat-mlp"
    fusion_hidden: int = 256
    use_static: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> MultimodalConfig:
        """Check every field; raises ValueError naming the field. Returns self."""
        if self.fusion not in FUSIONS:
            raise ValueError(f"MultimodalConfig.fusion: {self.fusion!r}, want one of {FUSIONS}")
        for name in ("d_out", "fusion_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MultimodalConfig.{name}: {value!r}, want an integer >= 1")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"MultimodalConfig.dropout: {self.dropout!r}, want 0 <= p < 1")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of the fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MultimodalConfig:
        """Inverse of :meth:`to_dict`; an unknown key is an error, not ignored."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"MultimodalConfig: unknown key(s) {unknown}; known keys: {sorted(names)}"
            )
        return cls(**dict(data))


def infer_output_dim(module: nn.Module, what: str) -> int:
    """Output width of an encoder, read from its ``embed_dim``/``d_out``/... attribute or config's.

    :class:`~densefeat.models.ehr.EHREncoder` has ``embed_dim``, the text encoders ``d_out``.

    Raises:
        ValueError: none found; pass the width explicitly then.
    """
    for owner in (module, getattr(module, "config", None)):
        for name in ("embed_dim", "d_out", "out_dim", "output_dim"):
            value = getattr(owner, name, None) if owner is not None else None
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    raise ValueError(
        f"cannot tell the output width of the {what} encoder {type(module).__name__}: give it "
        f"explicitly ({what}_dim=...)"
    )


class MultimodalEncoder(nn.Module):
    """Fuse the EHR, notes (and static) modalities of a multimodal batch into one embedding.

    Args:
        ehr_encoder: module mapping an ``EventBatch`` to ``(B, ehr_dim)``.
        text_encoder: module mapping ``list[str]`` to ``(N, text_dim)``, e.g.
            :class:`~densefeat.models.text.PretrainedTextEncoder`; ``None`` leaves notes out.
        d_out: width of every per-modality embedding and of the fused one.
        fusion: ``"concat-mlp"`` or ``"mean"`` (see the module docstring).
        ehr_dim: output width of ``ehr_encoder`` (inferred from ``d_out``-type attributes if
            ``None``).
        text_dim: output width of ``text.encoder`` (inferred likewise).
        static_dim: width ``S`` of ``EventBatch.static`` to add the ``"static"`` modality;
            ``None`` leaves it out.
        fusion_hidden: hidden width of the concat-MLP.
        dropout: dropout in the fusion and static MLPs.
    """

    def __init__(
        self,
        ehr_encoder: nn.Module,
        text_encoder: nn.Module | None = None,
        d_out: int = 128,
        fusion: str = "concat-mlp",
        *,
        ehr_dim: int | None = None,
        text_dim: int | None = None,
        static_dim: int | None = None,
        fusion_hidden: int = 256,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.config = MultimodalConfig(
            d_out=d_out,
            fusion=fusion,
            fusion_hidden=fusion_hidden,
            use_static=static_dim is not None,
            dropout=dropout,
        )
        if static_dim is not None and (isinstance(static_dim, bool) or static_dim < 1):
            raise ValueError(f"MultimodalEncoder: static_dim {static_dim!r}, want >= 1")
        self.ehr_encoder = ehr_encoder
        self.text_encoder = text_encoder
        self.static_dim = static_dim
        self.ehr_dim = ehr_dim or infer_output_dim(ehr_encoder, "ehr")
        self.proj = nn.ModuleDict({"codes": nn.Linear(self.ehr_dim, d_out)})
        self.text_dim: int | None = None
        if text_encoder is not None:
            self.text_dim = text_dim or infer_output_dim(text_encoder, "text")
            self.proj["notes"] = nn.Linear(self.text_dim, d_out)
            # Learned stand-in for rows without notes, in the projected space; small init so it
            # starts near the centre of the notes' embeddings rather than far out.
            self.no_notes = nn.Parameter(torch.randn(d_out) * 0.02)
        if static_dim is not None:
            self.static_mlp = nn.Sequential(
                nn.Linear(static_dim, d_out), nn.GELU(), nn.Dropout(dropout)
            )
            self.proj["static"] = nn.Linear(d_out, d_out)
        self.fusion = fusion
        if fusion == "concat-mlp":
            n_in = d_out * len(self.proj) + (1 if text_encoder is not None else 0)
            self.fusion_mlp = nn.Sequential(
                nn.Linear(n_in, fusion_hidden),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(fusion_hidden, d_out),
            )

    @classmethod
    def from_config(
        cls,
        config: MultimodalConfig,
        ehr_encoder: nn.Module,
        text_encoder: nn.Module | None = None,
        *,
        static_dim: int | None = None,
        ehr_dim: int | None = None,
        text_dim: int | None = None,
    ) -> MultimodalEncoder:
        """Build from a :class:`MultimodalConfig` (``static_dim`` is needed if ``use_static``)."""
        if config.use_static and static_dim is None:
            raise ValueError("MultimodalConfig.use_static needs static_dim (EventBatch.static)")
        return cls(
            ehr_encoder,
            text_encoder,
            config.d_out,
            config.fusion,
            ehr_dim=ehr_dim,
            text_dim=text_dim,
            static_dim=static_dim if config.use_static else None,
            fusion_hidden=config.fusion_hidden,
            dropout=config.dropout,
        )

    @property
    def d_out(self) -> int:
        """Width of the fused and per-modality embeddings."""
        return self.config.d_out

    @property
    def modalities(self) -> tuple[str, ...]:
        """Names of the per-modality embeddings, in fusion order."""
        return tuple(self.proj.keys())

    def present(self, batch: MultimodalBatch) -> dict[str, torch.Tensor]:
        """(B,) bool per modality: rows where the modality has real data.

        ``"notes"`` is False on rows without notes (their embedding is the "no notes" vector):
        compute modality alignment on ``per_modality[m][present[m] & present[n]]``.
        """
        ones = torch.ones(batch.batch_size, dtype=torch.bool, device=batch.note_mask.device)
        out = {"codes": ones}
        if self.text_encoder is not None:
            out["notes"] = batch.has_notes
        if self.static_dim is not None:
            out["static"] = ones
        return out

    def _notes(self, batch: MultimodalBatch, device: torch.device) -> torch.Tensor:
        """(B, d_out) projected masked mean of each row's note embeddings."""
        assert self.text_encoder is not None and self.text_dim is not None
        b = batch.batch_size
        mask = batch.note_mask.to(device)
        flat = batch.flat_notes()
        pooled = torch.zeros(b, self.text_dim, device=device)
        if flat:
            unique = list(dict.fromkeys(flat))
            position = {text: i for i, text in enumerate(unique)}
            z_unique = self.text_encoder(unique).to(device)
            z = z_unique[torch.tensor([position[t] for t in flat], device=device)]
            # Row of each flat note: boolean-mask order is row-major, as flat_notes() is.
            rows = mask.nonzero(as_tuple=True)[0]
            pooled = pooled.to(z.dtype).index_add(0, rows, z)
            counts = mask.sum(dim=1).clamp(min=1).to(z.dtype)
            pooled = pooled / counts.unsqueeze(1)
        projected = self.proj["notes"](pooled)
        has = mask.any(dim=1, keepdim=True)
        return torch.where(has, projected, self.no_notes.to(projected.dtype))

    def _static(self, events: EventBatch) -> torch.Tensor:
        x = events.static
        if self.static_dim is not None and x.shape[1] != self.static_dim:
            raise ValueError(
                f"MultimodalEncoder: EventBatch.static has {x.shape[1]} columns, the encoder "
                f"was built for static_dim={self.static_dim}"
            )
        age_col = x.shape[1] - len(STATIC_EXTRA)
        if age_col >= 0:
            # Age in years (0..110) next to 0/1 indicators would dominate the first layer.
            scale = torch.ones(x.shape[1], dtype=x.dtype, device=x.device)
            scale[age_col] = _AGE_SCALE
            x = x * scale
        return self.proj["static"](self.static_mlp(x))

    def forward(self, batch: MultimodalBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Fused and per-modality embeddings.

        Args:
            batch: B multimodal rows (events and notes aligned row by row).

        Returns:
            ``(fused, per_modality)``: fused is (B, d_out); per_modality maps each name of
            :attr:`modalities` to (B, d_out). Rows without notes hold the learned "no notes"
            vector under ``"notes"`` (see :meth:`present`).
        """
        codes = self.ehr_encoder(batch.events)
        if codes.ndim != 2 or codes.shape[0] != batch.batch_size:
            raise ValueError(
                f"MultimodalEncoder: the EHR encoder returned {tuple(codes.shape)}, want "
                f"({batch.batch_size}, {self.ehr_dim})"
            )
        device = codes.device
        per: dict[str, torch.Tensor] = {"codes": self.proj["codes"](codes)}
        if self.text_encoder is not None:
            per["notes"] = self._notes(batch, device)
        if self.static_dim is not None:
            per["static"] = self._static(batch.events)
        stacked = [per[name] for name in self.modalities]
        if self.fusion == "concat-mlp":
            extra = []
            if self.text_encoder is not None:
                extra.append(batch.has_notes.to(device=device, dtype=stacked[0].dtype)[:, None])
            fused = self.fusion_mlp(torch.cat([*stacked, *extra], dim=1))
        else:
            present = self.present(batch)
            weights = torch.stack(
                [
                    present[name].to(device=device, dtype=stacked[0].dtype)
                    for name in self.modalities
                ],
                dim=1,
            )  # (B, M); codes are always present, so every row's weight sum is >= 1
            fused = (torch.stack(stacked, dim=1) * weights[..., None]).sum(1) / weights.sum(
                1, keepdim=True
            )
        return fused, per
