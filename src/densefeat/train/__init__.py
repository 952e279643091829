"""Training: a config dataclass, one readable loop, atomic checkpoints."""

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import MODALITIES, TrainConfig, parse_overrides
from .loop import Network, TrainData, embed_rows, load_run, prepare_data, train

__all__ = [
    "MODALITIES",
    "Network",
    "TrainConfig",
    "TrainData",
    "embed_rows",
    "latest_checkpoint",
    "load_checkpoint",
    "load_run",
    "parse_overrides",
    "prepare_data",
    "save_checkpoint",
    "train",
]
