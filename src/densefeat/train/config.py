"""The training configuration: one flat dataclass, saved resolved beside every checkpoint.

Flat on purpose: ``--set key=value`` addresses any field, including a method's hyperparameters
(``--set w_sub=0`` is the subspace-term ablation of ``dense``), and a config file is a JSON
object with the same keys. Unknown keys are errors that name the key.

Defaults are sized so that ``densefeat train`` on the default dataset (Eunomia GiBleed, 2,694
patients) finishes in about 3 minutes on a 2-core CPU: the DESIGN.md encoder (d_model 128,
2 layers, 4 heads, 128-d embedding, batch 256 >= 2 d) but histories capped at the last 64
events instead of 256, and 250 optimizer steps (about 0.55 s each; 2 min 18 s in all, measured).
Scale up with ``--max-steps`` and ``--set max_len=256``.
"""

from __future__ import annotations

import json
import os
import types
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..functional.objectives import DEFAULT_WEIGHTS

__all__ = ["MODALITIES", "TrainConfig", "parse_overrides"]

#: Modalities the CLI accepts; only ``ehr`` trains yet.
MODALITIES = ("ehr", "text", "multimodal")


@dataclass
class TrainConfig:
    """Every knob of one training run.

    Attributes:
        modality: ``"ehr"`` (``"text"`` and ``"multimodal"`` are not supported yet).
        method: a key of :data:`densefeat.methods.METHODS`.
        seed: seeds initialisation, data order and dropout (all functions of seed and step).
        max_steps: optimizer steps.
        batch_size: GLOBAL rows per step (window pairs, or labelled rows); split over ranks.
        lr, adam_eps, weight_decay, warmup_steps, grad_clip: AdamW with linear warm-up then
            cosine decay to 10% of ``lr`` at ``max_steps`` (so extending a run with ``--resume
            --max-steps`` changes the schedule from there on); gradient-norm clipping (0
            disables it).
        max_len: events per history (the most recent ones).
        d_model, n_layers, n_heads, dropout: the EHR encoder.
        min_code_subjects: a code enters the vocabulary when at least this many training
            subjects have it.
        window_days: period of the window cut-offs (pairs ``(t, t + window_days)``).
        proj_hidden, proj_dim, proj_layers, projector_norm: the projector of the pair methods.
            ``projector_norm="layer"`` (default) is per-row, so a DDP step equals the
            single-process step on every backend; ``"batch"`` (the reference projector of
            SimCLR/VICReg/Barlow) becomes SyncBatchNorm under DDP, which torch supports on
            CUDA only.
        w_spec, w_orth, w_sub, top_k: ``dense`` term weights and top-k subspace form.
        temperature: ``simclr``. vicreg_sim, vicreg_std, vicreg_cov: ``vicreg``.
        barlow_lambda: ``barlow``.
        log_every: steps between JSON-lines stats records.
        monitor_every: steps between monitoring-batch geometry (0 disables it).
        monitor_size: rows of the fixed monitoring batch (held-out subjects).
        checkpoint_every: steps between checkpoints (one is always written at the end).
        amp: bf16 autocast on CUDA (ignored on CPU).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        progress: show a progress bar.
    """

    modality: str = "ehr"
    method: str = "dense"
    seed: int = 0
    max_steps: int = 250
    batch_size: int = 256
    lr: float = 1e-3
    adam_eps: float = 1e-8
    weight_decay: float = 0.05
    warmup_steps: int = 25
    grad_clip: float = 1.0
    max_len: int = 64
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    dropout: float = 0.1
    min_code_subjects: int = 5
    window_days: float = 365.0
    proj_hidden: int = 512
    proj_dim: int = 128
    proj_layers: int = 2
    projector_norm: str = "layer"
    w_spec: float = DEFAULT_WEIGHTS["w_spec"]
    w_orth: float = DEFAULT_WEIGHTS["w_orth"]
    w_sub: float = DEFAULT_WEIGHTS["w_sub"]
    top_k: int | None = None
    temperature: float = 0.1
    vicreg_sim: float = 25.0
    vicreg_std: float = 25.0
    vicreg_cov: float = 1.0
    barlow_lambda: float = 5e-3
    log_every: int = 10
    monitor_every: int = 50
    monitor_size: int = 512
    checkpoint_every: int = 50
    amp: bool = True
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"unknown modality {self.modality!r}; choose one of {MODALITIES}")
        for name in ("max_steps", "warmup_steps", "log_every", "monitor_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "max_len", "checkpoint_every", "monitor_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError("TrainConfig.batch_size must be >= 2 (batch statistics)")
        if self.window_days <= 0:
            raise ValueError(f"TrainConfig.window_days must be > 0, got {self.window_days}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"TrainConfig.device must be auto, cpu or cuda, got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are errors naming them."""
        unknown = sorted(set(state) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}")
        return cls(**state)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **overrides: Any) -> TrainConfig:
        """A config from a JSON file (a subset of the keys), then ``overrides``."""
        try:
            state = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a JSON config ({exc})") from None
        if not isinstance(state, dict):
            raise ValueError(f"{path}: a config file must hold a JSON object")
        return cls.from_dict({**state, **overrides})

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` (validated like a new config)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in fields(TrainConfig)}


def _convert(key: str, text: str, annotation: Any) -> Any:
    options = (
        typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    )
    if type(None) in options and text.lower() in ("none", "null"):
        return None
    for kind in options:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
        elif kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                continue
        elif kind is str:
            return text
    names = " or ".join(getattr(k, "__name__", str(k)) for k in options)
    raise ValueError(f"--set {key}={text}: expected {names}")


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` -> typed overrides of :class:`TrainConfig` fields.

    Raises:
        ValueError: a malformed item, an unknown key (named) or a value of the wrong type.
    """
    types_ = _field_types()
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        if key not in types_:
            raise ValueError(f"unknown config key {key!r} (in --set {item})")
        out[key] = _convert(key, value.strip(), types_[key])
    return out
