"""Training: a nested config, one readable loop, atomic checkpoints, and the modalities
(``ehr``, ``text``, ``multimodal``) the loop runs.

* :mod:`~densefeat.train.config`: :class:`TrainConfig` and ``--set`` parsing;
* :mod:`~densefeat.train.loop`: :func:`train`;
* :mod:`~densefeat.train.modalities`: the modality contract and its three implementations;
* :mod:`~densefeat.train.runs`: run directories and :func:`load_run`;
* :mod:`~densefeat.train.checkpoint`: atomic checkpoints;
* :mod:`~densefeat.train.monitor`: monitoring geometry and the collapse rule.

Names are imported on first use (PEP 562): ``densefeat train --help`` reads
:mod:`~densefeat.train.config` alone, which must not import torch.
"""

from __future__ import annotations

from .._lazy import lazy_exports

#: Public name -> the submodule that defines it.
_EXPORTS: dict[str, str] = {
    "MODALITIES": "config",
    "Embeddings": "modalities",
    "Modality": "modalities",
    "Network": "modalities",
    "Run": "modalities",
    "Session": "modalities",
    "TrainConfig": "config",
    "get_modality": "modalities",
    "latest_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_run": "runs",
    "monitor_geometry": "monitor",
    "parse_overrides": "config",
    "read_run_modality": "runs",
    "resolve_epochs": "loop",
    "save_checkpoint": "checkpoint",
    "train": "loop",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
