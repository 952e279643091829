"""Helpers shared by the test modules (fixtures are in conftest.py)."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any

import polars as pl

#: Column types of event rows ``(subject_id, time, code[, numeric_value[, text_value]])``.
EVENT_COLUMNS = {
    "subject_id": pl.Int64,
    "time": pl.Datetime("us"),
    "code": pl.Utf8,
    "numeric_value": pl.Float32,
    "text_value": pl.Utf8,
}


def events_frame(rows: Sequence[tuple[Any, ...]], value_dtype: Any = pl.Float32) -> pl.DataFrame:
    """MEDS events from row tuples ``(subject_id, time, code[, numeric_value[, text_value]])``
    (the columns the tuples have; ``numeric_value`` as ``value_dtype``)."""
    width = len(rows[0]) if rows else 4
    schema = dict(list(EVENT_COLUMNS.items())[:width])
    if "numeric_value" in schema:
        schema["numeric_value"] = value_dtype
    return pl.DataFrame(rows, schema=schema, orient="row")


def free_port() -> int:
    """A free TCP port on the loopback interface (a torch.distributed rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_train_worker(rank: int, world: int, port: int, data: str, out: str, cfg: dict) -> None:
    """One rank of a ``densefeat.train`` run under torch.distributed (gloo, one thread), as
    torchrun would start it (its environment variables)."""
    import torch
    import torch.distributed as dist

    from densefeat.train import TrainConfig, train

    os.environ.update(
        {
            "WORLD_SIZE": str(world),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    try:
        train(TrainConfig.from_dict(cfg), data, out)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
