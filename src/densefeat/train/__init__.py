"""Training: a nested config, one readable loop, atomic checkpoints, and the modalities
(``ehr``, ``text``, ``multimodal``) the loop runs.

* :mod:`~densefeat.train.config`: :class:`TrainConfig` and ``--set`` parsing;
* :mod:`~densefeat.train.loop`: :func:`train`;
* :mod:`~densefeat.train.modalities`: the modality contract and its three implementations;
* :mod:`~densefeat.train.runs`: run directories and :func:`load_run`;
* :mod:`~densefeat.train.checkpoint`: atomic checkpoints;
* :mod:`~densefeat.train.monitor`: monitoring geometry and the collapse rule.
"""

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import MODALITIES, TrainConfig, parse_overrides
from .loop import resolve_epochs, train
from .modalities import Embeddings, Modality, Network, Run, Session, get_modality
from .monitor import monitor_geometry
from .runs import load_run, read_run_modality

__all__ = [
    "MODALITIES",
    "Embeddings",
    "Modality",
    "Network",
    "Run",
    "Session",
    "TrainConfig",
    "get_modality",
    "latest_checkpoint",
    "load_checkpoint",
    "load_run",
    "monitor_geometry",
    "parse_overrides",
    "read_run_modality",
    "resolve_epochs",
    "save_checkpoint",
    "train",
]
