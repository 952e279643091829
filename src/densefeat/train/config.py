"""The training configuration: small nested sections, saved resolved beside every checkpoint.

A :class:`TrainConfig` holds the run-level settings (modality, method, seed, budget, device)
and one section per concern, each a small frozen-in-spirit dataclass:

============  ===============================================================================
section       settings
============  ===============================================================================
``optim``     AdamW and its schedule: ``lr``, ``adam_eps``, ``weight_decay``,
              ``warmup_steps``, ``grad_clip``
``data``      EHR histories and pairs: ``max_len``, ``min_code_subjects``, ``window_days``,
              ``pairs`` (windows / views / mixed / future), ``view_dropout``, ``view_crop``,
              ``view_noise``
``encoder``   the encoder's size: ``d_model``, ``n_layers``, ``n_heads``, ``dropout``,
              ``value_embedding`` (also sizes the small text encoder and the multimodal one)
``projector`` the pair methods' projector: ``hidden``, ``dim``, ``layers``, ``norm``
``dense``     the dense objective: ``w_spec``, ``w_orth``, ``w_sub``, ``top_k``,
              ``consistency`` (``shrunk``|``cca``), ``shrinkage``
``simclr``    ``temperature``
``vicreg``    ``sim``, ``std``, ``cov``
``barlow``    ``lambd`` (the off-diagonal weight lambda of Barlow Twins)
``masked``    ``mask_p`` (masked-token prediction on text)
``hybrid``    ``w_dense`` (``masked+dense``: masked + w_dense * dense)
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

from .sections import (
    MM_PAIRS,
    MODALITIES,
    SECTIONS,
    TEXT_ENCODERS,
    TEXT_PAIRS,
    BarlowConfig,
    DataConfig,
    DenseConfig,
    EncoderSection,
    HybridConfig,
    LogConfig,
    MaskedConfig,
    MultimodalConfig,
    NotesConfig,
    OptimConfig,
    ProjectorConfig,
    SimCLRConfig,
    TextConfig,
    VICRegConfig,
    check_choice,
    check_min,
)

__all__ = [
    "FLAT_ALIASES",
    "MM_PAIRS",
    "MODALITIES",
    "TEXT_ENCODERS",
    "TEXT_PAIRS",
    "TrainConfig",
    "parse_overrides",
]

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
    **{k: f"dense.{k}" for k in ("w_spec", "w_orth", "w_sub", "top_k", "consistency", "shrinkage")},
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
        optim, data, encoder, projector, dense, simclr, vicreg, barlow, masked, hybrid, log, text,
            notes, multimodal: the sections (module docstring).
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
    hybrid: HybridConfig = field(default_factory=HybridConfig)
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
        check_choice("device", self.device, ("auto", "cpu", "cuda"))
        check_min("max_steps", self.max_steps, 0)
        check_min("epochs", self.epochs, 0.0, strict=True)
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
    def from_run(cls, state: dict[str, Any]) -> TrainConfig:
        """The config of a saved run (its ``config.json`` ``train`` section).

        Settings whose default changed after a run was written take the value of its time:
        ``encoder.carry_forward`` (on since it was added; a run without the key read each hour
        token alone). Runs written in the flat 0.1 form predate hour tokens.
        """
        encoder = state.get("encoder")
        if isinstance(encoder, dict) and "carry_forward" not in encoder:
            state = {**state, "encoder": {**encoder, "carry_forward": False}}
        return cls.from_dict(state)

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
