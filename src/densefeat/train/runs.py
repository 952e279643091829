"""Run directories: what ``RUN/config.json`` records, and loading any run for inference.

A run directory (written by :func:`densefeat.train.train`)::

    RUN/config.json        kind, version, the resolved config (nested), encoder configs, data
    RUN/history.json       the fitted history builder (ehr, multimodal)
    RUN/stats.jsonl        one JSON object per logged step
    RUN/checkpoints/...    atomic checkpoints (:mod:`densefeat.train.checkpoint`)

:func:`load_run` is the one loader of every modality: it rebuilds the network from the config
(through the run's modality), checks the pretrained-backbone fingerprint, and loads the latest
checkpoint's weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .checkpoint import (
    check_fingerprint,
    latest_checkpoint,
    load_checkpoint,
    load_saved_weights,
    read_run_config,
)
from .config import TrainConfig
from .modalities import Run, get_modality

__all__ = ["RUN_KIND", "load_run", "read_run_modality", "run_record"]

RUN_KIND = "densefeat.run"


def run_record(cfg: TrainConfig, data: Any, labels: Any, info: dict[str, Any]) -> dict[str, Any]:
    """The JSON of ``RUN/config.json``: kind, version, the resolved config, the data, ``info``
    (encoder configs and modality facts, from the session), and the torch version."""
    return {
        "kind": RUN_KIND,
        "version": 1,
        "train": cfg.to_dict(),
        "data": str(data),
        "labels": None if labels is None else str(labels),
        "torch": torch.__version__,
        **info,
    }


def read_run_modality(run_dir: str | os.PathLike[str]) -> str:
    """The modality of a run directory (``"ehr"``, ``"text"`` or ``"multimodal"``).

    Raises:
        FileNotFoundError / ValueError: not a run directory (see :func:`read_run_config`).
    """
    run = read_run_config(Path(run_dir))
    return str(run.get("train", {}).get("modality", "ehr"))


def load_run(run_dir: str | os.PathLike[str], modality: str | None = None) -> Run:
    """The config, network (encoder + head, latest weights, eval mode, CPU) and builder of a run.

    Args:
        run_dir: a run directory.
        modality: when given, the run must be of this modality.

    Raises:
        FileNotFoundError: not a run directory, no checkpoint, or (text) the offline model is
            not installed.
        ValueError: a run of another modality than ``modality``, a checkpoint that does not fit
            its model, or a different pretrained text backbone than the run was trained on.
    """
    run_dir = Path(run_dir)
    info = read_run_config(run_dir)
    cfg = TrainConfig.from_run(info["train"])
    if modality is not None and cfg.modality != modality:
        raise ValueError(
            f"{run_dir}: is a {cfg.modality} run, and this loader reads {modality} runs (load it "
            "with densefeat.train.load_run(RUN) without a modality)"
        )
    weights, _, _ = load_checkpoint(latest_checkpoint(run_dir))
    net, builder = get_modality(cfg.modality).build_network(cfg, run_dir, info)
    check_fingerprint(info.get("text", {}).get("backbone"), net, run_dir)
    try:
        load_saved_weights(net, weights)
    except ValueError as exc:
        raise ValueError(f"{run_dir}: {exc}") from None
    net.eval()
    return Run(run_dir, cfg, net, builder, info)
