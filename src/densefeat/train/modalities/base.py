"""The modality contract: what the training loop, ``densefeat embed`` and the benchmark need
from one kind of data (EHR histories, notes, multimodal records).

A :class:`Modality` is a small record of functions, not a base class:

* ``session(cfg, data, labels, run_dir) -> Session``: read the data, build the training rows
  and pairs of the training split, fix the monitoring batch, and build the network (encoder +
  method head) initialised from ``cfg.seed``; ``run_dir`` is the run being resumed (its saved
  vocabulary is reused);
* ``build_network(cfg, run_dir, info) -> (network, builder)``: the network of a saved run
  (``info``: its ``config.json``), before its weights are loaded, and the run's history
  builder (None for text);
* ``embed(run, rows, *, device, batch_size) -> Embeddings``: frozen embeddings of rows in row
  order; what a row is belongs to the modality (a ``(subject, time)`` of an event store, a
  note's text, a multimodal record).

:mod:`densefeat.train.loop` runs any session; :func:`densefeat.train.runs.load_run` loads any
run; the benchmark's data sources (:mod:`densefeat.benchmark.sources`) call ``embed``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...data.ehr.builder import HistoryBuilder
from ...methods import Method
from ...models.heads import ProjectionHead
from ..config import TrainConfig

__all__ = ["MONITOR_SPLITS", "Embeddings", "Modality", "Network", "Run", "Session", "read_history"]

#: Splits the monitoring batch is taken from, in order of preference.
MONITOR_SPLITS = ("held_out", "tuning")


class Network(nn.Module):
    """Encoder + method head; ``forward(inputs)`` is the method's one encoder pass (DDP-able)."""

    def __init__(self, encoder: nn.Module, head: nn.Module | None, method: Method):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.method = method

    def forward(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.method.forward(self.encoder, self.head, inputs)

    @property
    def projector(self) -> ProjectionHead | None:
        """The projector of a pair method (None for the other heads); the hybrid's head is a
        ModuleDict whose ``"projector"`` is one."""
        if isinstance(self.head, nn.ModuleDict) and "projector" in self.head:
            return self.head["projector"]  # type: ignore[return-value]
        return self.head if isinstance(self.head, ProjectionHead) else None


@dataclass
class Session:
    """A modality's side of one training run.

    Attributes:
        net: encoder + method head, initialised from ``cfg.seed`` (resume loads weights later).
        n_rows: training rows (window pairs, note pairs, labelled rows, ...).
        inputs: ``(global row indices of this rank, step, device) -> inputs`` of the method's
            forward; a pure function of its arguments (exact resume, DDP = single process).
        monitor_n: rows of the fixed monitoring batch (0: no monitoring).
        monitor_embed: ``device -> (monitor_n, d)`` backbone embeddings of that batch.
        embed_dim: ``d`` of the backbone (the collapse rule reads it).
        run_info: what ``RUN/config.json`` records beside the config: the encoder configs and
            modality facts (e.g. a text run's label names and pretrained-backbone fingerprint).
        files: extra JSON files written into a new run directory (``history.json``).
        find_unused: DDP must look for parameters without gradient.
        monitor_pairs: ``device -> (za, zb)``, backbone embeddings (m, d) of both windows of
            fixed window pairs of held-out subjects, for the monitored subspace-consistency
            term and its shuffled control; ``None`` where the modality has no such pairs.
    """

    net: Network
    n_rows: int
    inputs: Callable[[np.ndarray, int, torch.device], dict[str, Any]]
    monitor_n: int
    monitor_embed: Callable[[torch.device], torch.Tensor]
    embed_dim: int
    run_info: dict[str, Any]
    files: dict[str, Any] = field(default_factory=dict)
    find_unused: bool = False
    monitor_pairs: Callable[[torch.device], tuple[torch.Tensor, torch.Tensor]] | None = None


@dataclass
class Run:
    """A trained run loaded for inference (eval mode, CPU until moved).

    Attributes:
        path: the run directory.
        cfg: its resolved config.
        net: encoder + head with the checkpoint's weights.
        builder: the run's history builder (vocabulary, normaliser, ``max_len``); None for text.
        info: its ``config.json``.
    """

    path: Path
    cfg: TrainConfig
    net: Network
    builder: HistoryBuilder | None
    info: dict[str, Any]

    @property
    def modality(self) -> Modality:
        """The run's modality."""
        from . import get_modality

        return get_modality(self.cfg.modality)

    def to(self, device: torch.device | str) -> Run:
        """Move the network to ``device`` (in place); returns self."""
        self.net.to(device)
        return self


@dataclass
class Embeddings:
    """Frozen embeddings of rows, in row order.

    Attributes:
        backbone: (n, d) float32, the encoder's output (what probes and metrics read).
        projector: (n, d') float32 through the projector of a pair method, else None.
        extra: modality-specific arrays (multimodal: ``codes``, ``notes``, ``static`` and
            ``has_notes``).
    """

    backbone: np.ndarray
    projector: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Modality:
    """One kind of data (module docstring)."""

    name: str
    session: Callable[[TrainConfig, Any, Any, Path | None], Session]
    build_network: Callable[[TrainConfig, Path, dict[str, Any]], tuple[Network, Any]]
    embed: Callable[..., Embeddings]
    description: str = ""


@torch.no_grad()
def project(head: ProjectionHead, z: np.ndarray, device: torch.device | str) -> np.ndarray:
    """``head(z)`` (float32) in eval mode, 1,024 rows at a time."""
    was_training = head.training
    head.eval()
    parts = [
        head(torch.from_numpy(z[lo : lo + 1024]).to(device)).float().cpu().numpy()
        for lo in range(0, len(z), 1024)
    ]
    head.train(was_training)
    return np.concatenate(parts) if parts else np.zeros((0, head.d_out), np.float32)


def read_history(run_dir: str | os.PathLike[str]) -> HistoryBuilder:
    """The history builder saved in ``RUN/history.json``.

    Raises:
        FileNotFoundError: the run has none (not an ehr or multimodal run directory).
    """
    path = Path(run_dir) / "history.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a densefeat run directory (no history.json)")
    return HistoryBuilder.from_dict(json.loads(path.read_text()))
