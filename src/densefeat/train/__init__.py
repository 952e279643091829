"""Training: a config dataclass, one readable loop, atomic checkpoints; ehr, text, multimodal."""

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import MODALITIES, TrainConfig, parse_overrides
from .loop import (
    Network,
    Session,
    TrainData,
    build_network,
    embed_rows,
    load_run,
    monitor_geometry,
    prepare_data,
    read_run_modality,
    resolve_epochs,
    train,
)
from .multimodal import embed_multimodal, load_multimodal_run, prepare_multimodal_data
from .text import embed_texts, load_text_run, prepare_text_data

__all__ = [
    "MODALITIES",
    "Network",
    "Session",
    "TrainConfig",
    "TrainData",
    "build_network",
    "embed_multimodal",
    "embed_rows",
    "embed_texts",
    "latest_checkpoint",
    "load_checkpoint",
    "load_multimodal_run",
    "load_run",
    "load_text_run",
    "monitor_geometry",
    "parse_overrides",
    "prepare_data",
    "prepare_multimodal_data",
    "prepare_text_data",
    "read_run_modality",
    "resolve_epochs",
    "save_checkpoint",
    "train",
]
