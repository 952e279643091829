"""One readable training loop (in the spirit of nanoGPT's ``train.py``).

``train(cfg, data_dir, out_dir)`` does, in order: read the MEDS dataset; fit the vocabulary and
normaliser on the training split; build window pairs ``(t, t + window_days)`` of TRAINING
subjects (or read the labels of training subjects for ``supervised``); fix a monitoring batch
of held-out subjects; build encoder + method head; then loop: learning rate, seeded dropout,
one batch, one encoder pass, loss, AdamW step, stats, monitoring, checkpoint.

Determinism (what makes ``resume`` exact): the rows of step ``s`` are a function of
``(seed, s)`` only (a seeded permutation per epoch, :func:`~densefeat.data.history.batch_slices`)
and the dropout generator is re-seeded from ``(seed, s, rank)`` before every step, so a resumed
run does not depend on how many batches or random numbers the killed run consumed. The
optimizer state comes from the checkpoint; the learning rate is a function of the step.

Distributed (``torchrun``, ``WORLD_SIZE > 1``): gloo on CPU, nccl on CUDA. The global batch of a
step is split into contiguous per-rank chunks; the network (encoder + head) is wrapped in DDP;
the covariance-type losses gather the global batch's statistics (``gather_distributed=True``),
so every rank computes the same loss and DDP's gradient average equals the single-process
gradient of the global batch. The projector uses LayerNorm by default (per-row: no cross-rank
statistics); ``projector_norm="batch"`` is converted to SyncBatchNorm (CUDA only in torch).
Mixed precision: bf16 autocast on CUDA only; the losses run in float32.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from ..data.history import EventStore, HistoryBuilder, batch_slices
from ..data.meds import read_labels, read_meds_dataset
from ..data.windows import periodic_cuts, window_pairs
from ..functional import condition_number, effective_rank
from ..methods import Method, get_method
from ..models.ehr import EHREncoder, EHREncoderConfig
from .checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    read_run_config,
    save_checkpoint,
    write_json_atomic,
)
from .config import TrainConfig

__all__ = ["Network", "TrainData", "embed_rows", "load_run", "prepare_data", "train"]

MONITOR_SPLITS = ("held_out", "tuning")


# --------------------------------------------------------------------------------------------
# Data.


@dataclass
class TrainData:
    """What the loop samples from.

    Attributes:
        store: encoded events of all subjects (monitoring needs held-out ones).
        rows: training rows: window pairs (``subject_id, time_t, time_t1``) or labels
            (``subject_id, prediction_time, boolean_value``) of training subjects only.
        monitor: ``subject_id, prediction_time`` of the fixed monitoring batch (may be empty).
    """

    store: EventStore
    rows: pl.DataFrame
    monitor: pl.DataFrame


def _check_modality(cfg: TrainConfig) -> None:
    if cfg.modality != "ehr":
        raise ValueError(
            f"modality {cfg.modality!r} is not yet supported by densefeat train (only 'ehr')"
        )


def prepare_data(
    cfg: TrainConfig,
    data_dir: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None,
    builder: HistoryBuilder | None = None,
) -> tuple[HistoryBuilder, TrainData]:
    """Fit (or reuse) the builder and build the training rows and the monitoring rows.

    Raises:
        ValueError: a method that needs labels without them, labels that are not binary, or
            fewer training rows than ``batch_size`` (named).
    """
    method = get_method(cfg.method)
    if method.needs_labels and labels is None:
        raise ValueError(f"method {cfg.method!r} needs --labels (a MEDS label file)")
    ds = read_meds_dataset(data_dir)
    train_ids = ds.split_ids("train")
    if train_ids.len() == 0:
        raise ValueError(f"{data_dir}: the dataset has no 'train' split subjects")
    if builder is None:
        # Vocabulary and normalisation from the training split only (no leakage).
        builder = HistoryBuilder.fit(
            ds, split="train", max_len=cfg.max_len, min_subjects=cfg.min_code_subjects
        )
    store = builder.encode(ds)
    if method.inputs == "labels":
        table = read_labels(labels, dataset=ds)  # type: ignore[arg-type]
        if "boolean_value" not in table.columns:
            raise ValueError(f"{labels}: supervised training needs boolean_value labels")
        rows = table.filter(pl.col("subject_id").is_in(train_ids.implode())).select(
            "subject_id", "prediction_time", "boolean_value"
        )
        what = "labelled rows of training subjects"
    else:
        cuts = periodic_cuts(store, cfg.window_days, subjects=train_ids.to_numpy())
        rows = window_pairs(store, cuts)
        what = f"window pairs ({cfg.window_days:g}-day windows) of training subjects"
    if method.trains and rows.height < cfg.batch_size:
        raise ValueError(
            f"too few training rows for batch_size {cfg.batch_size}: {rows.height} {what} "
            f"(from {train_ids.len()} training subjects); lower it with --set batch_size=N"
        )
    monitor = pl.DataFrame(schema={"subject_id": pl.Int64, "prediction_time": pl.Datetime("us")})
    for split in MONITOR_SPLITS:
        ids = ds.split_ids(split)
        if ids.len():
            # Fixed: the first monitor_size held-out subjects at the end of their record.
            end = store.end_of_record()
            monitor = end.filter(pl.col("subject_id").is_in(ids.implode())).head(cfg.monitor_size)
            break
    return builder, TrainData(store, rows, monitor)


def _step_rows(cfg: TrainConfig, n_rows: int, step: int) -> np.ndarray:
    """Global row indices of ``step``: a function of ``(seed, step)`` only."""
    per_epoch = n_rows // cfg.batch_size
    epoch, index = divmod(step, per_epoch)
    slices = batch_slices(
        n_rows, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch, drop_last=True
    )
    return slices[index]


def _inputs(
    cfg: TrainConfig, method: Method, data: TrainData, rows: np.ndarray, device: torch.device
) -> dict[str, Any]:
    table = data.rows[rows]
    sid = table["subject_id"].to_numpy()
    if method.inputs == "labels":
        pt = table["prediction_time"].cast(pl.Int64).to_numpy()
        batch = data.store.gather(sid, pt, cfg.max_len)
        labels = torch.from_numpy(table["boolean_value"].to_numpy().astype(np.float32))
        return {"batch": batch.to(device), "labels": labels.to(device)}
    t = table["time_t"].cast(pl.Int64).to_numpy()
    t1 = table["time_t1"].cast(pl.Int64).to_numpy()
    # One history (at t1) per pair; the encoder embeds it at both cut-offs in one pass.
    batch = data.store.gather(sid, t1, cfg.max_len)
    cutoffs = torch.from_numpy(np.stack([t, t1], axis=1))
    return {"batch": batch.to(device), "cutoffs": cutoffs.to(device)}


# --------------------------------------------------------------------------------------------
# Model.


class Network(nn.Module):
    """Encoder + method head; ``forward(inputs)`` is the method's one encoder pass (DDP-able)."""

    def __init__(self, encoder: EHREncoder, head: nn.Module | None, method: Method):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.method = method

    def forward(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.method.forward(self.encoder, self.head, inputs)


def build_network(cfg: TrainConfig, builder: HistoryBuilder) -> tuple[Network, EHREncoderConfig]:
    """The encoder and head of ``cfg.method``, initialised from ``cfg.seed``."""
    method = get_method(cfg.method)
    enc_cfg = EHREncoderConfig.from_builder(
        builder,
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        dropout=cfg.dropout,
        max_len=cfg.max_len,
    )
    torch.manual_seed(cfg.seed)
    encoder = EHREncoder(enc_cfg)
    head = method.build_head(cfg, enc_cfg.d_model, enc_cfg.vocab_size)
    return Network(encoder, head, method), enc_cfg


def _lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10% of ``lr`` at ``max_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(cfg.max_steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def _distributed(device: torch.device) -> tuple[int, int]:
    """``(rank, world_size)``; initialises the default process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


# --------------------------------------------------------------------------------------------
# Monitoring.


@torch.no_grad()
def embed_rows(
    encoder: EHREncoder,
    store: EventStore,
    rows: pl.DataFrame,
    max_len: int,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Backbone embeddings (n, d) float32 of ``rows`` (``subject_id, prediction_time``)."""
    was_training = encoder.training
    encoder.eval()
    out = []
    sid = rows["subject_id"].cast(pl.Int64).to_numpy()
    pt = rows["prediction_time"].cast(pl.Datetime("us")).cast(pl.Int64).to_numpy()
    for lo in range(0, len(sid), batch_size):
        batch = store.gather(sid[lo : lo + batch_size], pt[lo : lo + batch_size], max_len)
        out.append(encoder(batch.to(device)).float().cpu().numpy())
    encoder.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, encoder.embed_dim), np.float32)


def _monitor(encoder: EHREncoder, data: TrainData, cfg: TrainConfig, device) -> dict[str, Any]:
    z = torch.from_numpy(embed_rows(encoder, data.store, data.monitor, cfg.max_len, device=device))
    return {"effective_rank": effective_rank(z), "condition_number": condition_number(z)}


# --------------------------------------------------------------------------------------------
# The loop.


def _run_config(cfg: TrainConfig, enc_cfg: EHREncoderConfig, data_dir, labels) -> dict:
    return {
        "kind": "densefeat.run",
        "version": 1,
        "train": cfg.to_dict(),
        "encoder": enc_cfg.to_dict(),
        "data": str(data_dir),
        "labels": None if labels is None else str(labels),
        "torch": torch.__version__,
    }


def _truncate_stats(path: Path, step: int) -> None:
    """Drop records past ``step`` (logged by a killed run after its last checkpoint)."""
    if not path.is_file():
        return
    keep = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= step
    ]
    path.write_text("".join(line + "\n" for line in keep))


def train(
    cfg: TrainConfig,
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> Path:
    """Train ``cfg.method`` on ``data_dir`` and write the run to ``out_dir``.

    Args:
        cfg: the configuration (with ``resume``, the run's saved config is used instead except
            for ``max_steps``, ``progress`` and ``device``, taken from ``cfg``).
        data_dir: a MEDS dataset directory.
        out_dir: the run directory (created; must not already hold a run unless ``resume``).
        labels: MEDS labels (``supervised`` only).
        resume: continue from the latest checkpoint of ``out_dir``.
        on_step: called with the number of steps done after every step (tests interrupt here).

    Returns:
        the latest checkpoint directory.

    Raises:
        ValueError / FileNotFoundError: bad input, named (see :func:`prepare_data`).
    """
    out = Path(out_dir)
    _check_modality(cfg)
    method = get_method(cfg.method)
    device = _resolve_device(cfg)
    rank, world = _distributed(device)
    builder = None
    if resume:
        run = read_run_config(out)
        saved = TrainConfig.from_dict(run["train"])
        cfg = saved.replace(max_steps=cfg.max_steps, progress=cfg.progress, device=cfg.device)
        method = get_method(cfg.method)
        builder = HistoryBuilder.from_dict(json.loads((out / "history.json").read_text()))
        labels = run["labels"] if labels is None else labels
    elif rank == 0 and (out / "config.json").exists():
        raise ValueError(f"{out}: already holds a run; use --resume or another --out")
    builder, data = prepare_data(cfg, data_dir, labels, builder)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must be a multiple of WORLD_SIZE {world}")
    net, enc_cfg = build_network(cfg, builder)
    net.to(device)
    params = [p for p in net.parameters() if p.requires_grad]
    # No weight decay on norms, biases and embeddings' padding rows (the usual AdamW split).
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        eps=cfg.adam_eps,
    )
    start = 0
    stats_path = out / "stats.jsonl"
    if resume:
        weights, _, state = load_checkpoint(latest_checkpoint(out))
        _load_weights(net, weights)
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start = int(state["step"])
        if rank == 0:
            _truncate_stats(stats_path, start)
    elif rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "history.json", builder.to_dict())
        write_json_atomic(out / "config.json", _run_config(cfg, enc_cfg, data_dir, labels))

    model: nn.Module = net
    if world > 1:
        if cfg.projector_norm == "batch":
            if device.type != "cuda":
                raise ValueError(
                    "projector_norm='batch' under DDP needs SyncBatchNorm, which torch runs on "
                    "CUDA only; use --set projector_norm=layer on CPU"
                )
            model = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        model = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=not method.uses_all_parameters,
        )
    loss_fn = method.build_loss(cfg) if method.build_loss is not None else None
    use_amp = cfg.amp and device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else nullcontext
    local = cfg.batch_size // world
    enc = net.encoder
    best_rank = 0.0

    def checkpoint(step: int) -> Path:
        weights = {k: v for k, v in net.state_dict().items()}
        state = {
            "step": step,
            "optimizer": opt.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        run = _run_config(cfg, enc_cfg, data_dir, labels)
        return save_checkpoint(out, step, weights, run, state)

    def log(record: dict[str, Any]) -> None:
        with stats_path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def monitor(step: int) -> dict[str, Any]:
        nonlocal best_rank
        if data.monitor.height < 2:
            return {}
        geo = _monitor(enc, data, cfg, device)
        er = geo["effective_rank"]
        best_rank = max(best_rank, er)
        # DESIGN.md: collapse when the effective rank < 10% of d or < half its best value.
        collapse = er < 0.1 * enc_cfg.d_model or er < 0.5 * best_rank
        if collapse:
            warnings.warn(
                f"step {step}: representation collapse? monitoring effective rank {er:.1f} "
                f"(d={enc_cfg.d_model}, best {best_rank:.1f})",
                RuntimeWarning,
                stacklevel=2,
            )
        return {"monitor": {**geo, "n": data.monitor.height, "collapse": collapse}}

    last_ckpt = latest_checkpoint(out, missing_ok=True) if rank == 0 else None
    if not method.trains or start >= cfg.max_steps:
        if rank == 0:
            if not method.trains:
                log({"step": 0, "method": cfg.method, **monitor(0)})
            last_ckpt = checkpoint(start)
        return last_ckpt  # type: ignore[return-value]

    progress = None
    if cfg.progress and rank == 0:
        from rich.progress import Progress

        progress = Progress(transient=False)
        progress.start()
        task = progress.add_task(f"train {cfg.method}", total=cfg.max_steps, completed=start)
    t_start = time.perf_counter()
    model.train()
    try:
        for step in range(start, cfg.max_steps):
            lr = _lr_at(cfg, step)
            for group in opt.param_groups:
                group["lr"] = lr
            # Dropout randomness as a function of (seed, step, rank): exact resume.
            torch.manual_seed((cfg.seed * 1_000_003 + step) * 1024 + rank)
            rows = _step_rows(cfg, data.rows.height, step)[rank * local : (rank + 1) * local]
            inputs = _inputs(cfg, method, data, rows, device)
            with autocast():
                outputs = model(inputs)
            loss, terms = loss_fn(outputs, inputs)  # type: ignore[misc]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            opt.step()
            done = step + 1
            loss_value = float(loss.detach())
            if rank == 0:
                if not math.isfinite(loss_value):
                    raise FloatingPointError(f"step {done}: non-finite loss {loss_value}")
                record: dict[str, Any] = {}
                if cfg.monitor_every and (done % cfg.monitor_every == 0 or done == 1):
                    record.update(monitor(done))
                if record or done % max(cfg.log_every, 1) == 0 or done == cfg.max_steps:
                    log(
                        {
                            "step": done,
                            "loss": loss_value,
                            "terms": {k: float(v) for k, v in terms.items()},
                            "lr": lr,
                            "seconds": time.perf_counter() - t_start,
                            **record,
                        }
                    )
                if done % cfg.checkpoint_every == 0 or done == cfg.max_steps:
                    last_ckpt = checkpoint(done)
                if progress is not None:
                    progress.update(
                        task,
                        completed=done,
                        description=(f"train {cfg.method} loss {loss_value:.4f}"),
                    )
            if on_step is not None:
                on_step(done)
    finally:
        if progress is not None:
            progress.stop()
    return last_ckpt  # type: ignore[return-value]


def _load_weights(net: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"checkpoint does not fit this model: {exc}") from None


def load_run(run_dir: str | os.PathLike[str]) -> tuple[TrainConfig, HistoryBuilder, EHREncoder]:
    """The config, builder and trained encoder (eval mode, CPU) of a run directory.

    Raises:
        FileNotFoundError: not a run directory, or no checkpoint.
        ValueError: a checkpoint that does not fit its model.
    """
    run_dir = Path(run_dir)
    run = read_run_config(run_dir)
    cfg = TrainConfig.from_dict(run["train"])
    hist = run_dir / "history.json"
    if not hist.is_file():
        raise FileNotFoundError(f"{run_dir}: not a densefeat run directory (no history.json)")
    builder = HistoryBuilder.from_dict(json.loads(hist.read_text()))
    weights, _, _ = load_checkpoint(latest_checkpoint(run_dir))
    net, _ = build_network(cfg, builder)
    _load_weights(net, weights)
    net.encoder.eval()
    return cfg, builder, net.encoder
