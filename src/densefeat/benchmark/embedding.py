"""Embeddings of a trained run at the benchmark's rows: backbone and projector outputs.

The backbone output (the encoder's patient embedding) is what probes, robustness and temporal
stability are measured on; the projector output (methods trained through a projector:
dense, SimCLR, VICReg, Barlow Twins) is measured for its geometry only, because the objective
acts there and DESIGN.md asks for both.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import torch

from ..data.history import EventStore, HistoryBuilder
from ..models.heads import ProjectionHead
from ..train.checkpoint import latest_checkpoint, load_checkpoint, read_run_config
from ..train.config import TrainConfig
from ..train.loop import Network, build_network

__all__ = ["embed", "load_network"]


def load_network(run_dir: str | os.PathLike[str]) -> tuple[TrainConfig, HistoryBuilder, Network]:
    """The config, builder and full network (encoder + head) of a run, in eval mode on CPU."""
    run_dir = Path(run_dir)
    run = read_run_config(run_dir)
    cfg = TrainConfig.from_dict(run["train"])
    builder = HistoryBuilder.from_dict(json.loads((run_dir / "history.json").read_text()))
    weights, _, _ = load_checkpoint(latest_checkpoint(run_dir))
    net, _ = build_network(cfg, builder)
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{run_dir}: checkpoint does not fit its model: {exc}") from None
    net.eval()
    return cfg, builder, net


@torch.no_grad()
def embed(
    net: Network,
    store: EventStore,
    rows: pl.DataFrame,
    max_len: int,
    *,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(backbone, projector)`` float32 embeddings of ``rows`` (``subject_id,
    prediction_time``), in row order; ``projector`` is None for methods without one."""
    sid = rows["subject_id"].cast(pl.Int64).to_numpy()
    pt = rows["prediction_time"].cast(pl.Datetime("us")).cast(pl.Int64).to_numpy()
    head = net.head if isinstance(net.head, ProjectionHead) else None
    backbone, projector = [], []
    for lo in range(0, len(sid), batch_size):
        batch = store.gather(sid[lo : lo + batch_size], pt[lo : lo + batch_size], max_len)
        z = net.encoder(batch.to(device))
        backbone.append(z.float().cpu().numpy())
        if head is not None:
            projector.append(head(z).float().cpu().numpy())
    d = net.encoder.embed_dim
    zb = np.concatenate(backbone) if backbone else np.zeros((0, d), np.float32)
    zp = None
    if head is not None:
        zp = np.concatenate(projector) if projector else np.zeros((0, d), np.float32)
    return zb, zp
