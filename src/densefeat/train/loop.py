"""One readable training loop (in the spirit of nanoGPT's ``train.py``).

``train(cfg, data, out_dir)`` does, in order: build the modality's
:class:`~densefeat.train.modalities.Session` (read the data; fit the vocabulary and normaliser
on the training split; build the training rows of TRAINING subjects: window pairs, note pairs,
or labelled rows for ``supervised``; fix a monitoring batch of held-out subjects; build encoder
+ method head; :mod:`densefeat.train.modalities`), resolve ``epochs`` into ``max_steps``, then
loop: learning rate, seeded dropout, one batch, one encoder pass, loss, AdamW step, stats,
monitoring, checkpoint. The loop does not know the modality: a session hands it the network,
the number of training rows, a function from row indices to inputs and one from the encoder to
the monitoring batch's embeddings.

Monitoring (:mod:`densefeat.train.monitor`): every ``log.monitor_every`` steps, in
``stats.jsonl`` under ``monitor``, the geometry of the fixed monitoring batch (backbone and
projector), the collapse flag and, with window pairs (EHR), the subspace-consistency term on
held-out window pairs beside its row-shuffled control.

Determinism (what makes ``resume`` exact): the rows of step ``s`` are a function of
``(seed, s)`` only (:func:`step_rows`: a seeded permutation per epoch) and the dropout
generator is re-seeded from ``(seed, s, rank)`` before every step, so a resumed run does not
depend on how many batches or random numbers the killed run consumed. The optimizer state
comes from the checkpoint; the learning rate is a function of the step.

Distributed (``torchrun``, ``WORLD_SIZE > 1``): gloo on CPU, nccl on CUDA. The global batch of a
step is split into contiguous per-rank chunks; the network (encoder + head) is wrapped in DDP;
the covariance-type losses gather the global batch's statistics (``gather_distributed=True``),
so every rank computes the same loss and DDP's gradient average equals the single-process
gradient of the global batch. The projector uses LayerNorm by default (per-row: no cross-rank
statistics); ``projector.norm="batch"`` is converted to SyncBatchNorm (CUDA only in torch).
Mixed precision: bf16 autocast on CUDA only; the losses run in float32. Only rank 0 writes
files; :func:`train` returns None on the other ranks.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..io.atomic import write_json_atomic
from ..methods import get_method, load_loss_state, loss_state
from .checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_saved_weights,
    read_run_config,
    save_checkpoint,
    saved_weights,
)
from .config import TrainConfig
from .modalities import get_modality
from .monitor import CollapseMonitor, monitor_consistency, monitor_geometry
from .runs import run_record

__all__ = ["resolve_epochs", "step_rows", "train"]


def batch_slices(n_rows: int, batch_size: int, *, seed: int, epoch: int) -> list[np.ndarray]:
    """Row indices of every full batch of one epoch, in order.

    The permutation comes from ``torch.Generator().manual_seed(seed + epoch)``, so every rank
    computes the same one.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    gen = torch.Generator().manual_seed(int(seed) + int(epoch))
    order = torch.randperm(n_rows, generator=gen).numpy()
    stop = n_rows - n_rows % batch_size
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]


def step_rows(cfg: TrainConfig, n_rows: int, step: int) -> np.ndarray:
    """Global row indices of ``step``: a function of ``(seed, step)`` only."""
    epoch, index = divmod(step, n_rows // cfg.batch_size)
    return batch_slices(n_rows, cfg.batch_size, seed=cfg.seed, epoch=epoch)[index]


def _lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10% of ``lr`` at ``max_steps``."""
    if step < cfg.optim.warmup_steps:
        return cfg.optim.lr * (step + 1) / cfg.optim.warmup_steps
    span = max(cfg.max_steps - cfg.optim.warmup_steps, 1)
    progress = min((step - cfg.optim.warmup_steps) / span, 1.0)
    return cfg.optim.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


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


def resolve_epochs(cfg: TrainConfig, n_rows: int) -> TrainConfig:
    """``cfg`` with ``max_steps = max(1, round(epochs * (n_rows // batch_size)))`` if epochs set."""
    if cfg.epochs is None:
        return cfg
    per_epoch = n_rows // cfg.batch_size
    return cfg.replace(max_steps=max(1, round(cfg.epochs * per_epoch)))


def train(
    cfg: TrainConfig,
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> Path | None:
    """Train ``cfg.method`` on ``data_dir`` (modality ``cfg.modality``) and write the run.

    Args:
        cfg: the configuration (with ``resume``, the run's saved config is used instead except
            for ``max_steps``, ``epochs``, ``progress`` and ``device``, taken from ``cfg``).
        data_dir: a MEDS dataset directory (ehr, multimodal; text: a MEDS directory or a note
            table file, see :mod:`densefeat.data.text.corpus`).
        out_dir: the run directory (created; must not already hold a run unless ``resume``).
        labels: MEDS labels (``supervised`` on ehr/multimodal only).
        resume: continue from the latest checkpoint of ``out_dir``.
        on_step: called with the number of steps done after every step (tests interrupt here).

    Returns:
        the latest checkpoint directory (rank 0; None on the other ranks of a DDP run).

    Raises:
        ValueError / FileNotFoundError: bad input, named (see the modalities' sessions),
            including resuming a run of another modality.
    """
    out = Path(out_dir)
    method = get_method(cfg.method)
    device = _resolve_device(cfg)
    rank, world = _distributed(device)
    run_dir = None
    if resume:
        run = read_run_config(out)
        saved = TrainConfig.from_run(run["train"])
        if saved.modality != cfg.modality:
            raise ValueError(
                f"{out}: is a {saved.modality} run, which --modality {cfg.modality} cannot "
                f"resume (use --modality {saved.modality})"
            )
        cfg = saved.replace(
            max_steps=cfg.max_steps, epochs=cfg.epochs, progress=cfg.log.progress, device=cfg.device
        )
        method = get_method(cfg.method)
        labels = run["labels"] if labels is None else labels
        run_dir = out
    elif rank == 0 and (out / "config.json").exists():
        raise ValueError(f"{out}: already holds a run; use --resume or another --out")

    def record_of(c: TrainConfig) -> dict[str, Any]:
        return run_record(c, data_dir, labels, session.run_info)

    session = get_modality(cfg.modality).session(cfg, data_dir, labels, run_dir)
    cfg = resolve_epochs(cfg, session.n_rows)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must be a multiple of WORLD_SIZE {world}")
    net = session.net
    net.to(device)
    params = [p for p in net.parameters() if p.requires_grad]
    # No weight decay on norms, biases and embeddings' padding rows (the usual AdamW split).
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.optim.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.optim.lr,
        eps=cfg.optim.adam_eps,
    )
    start = 0
    loss_states: list[dict[str, Any]] = []
    stats_path = out / "stats.jsonl"
    if resume:
        weights, _, state = load_checkpoint(latest_checkpoint(out))
        load_saved_weights(net, weights)
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start = int(state["step"])
        loss_states = state.get("loss", [])
        if rank == 0:
            _truncate_stats(stats_path, start)
    elif rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        for name, content in session.files.items():
            write_json_atomic(out / name, content)
        write_json_atomic(out / "config.json", record_of(cfg))

    model: nn.Module = net
    if world > 1:
        if cfg.projector.norm == "batch":
            if device.type != "cuda":
                raise ValueError(
                    "projector.norm='batch' under DDP needs SyncBatchNorm, which torch runs on "
                    "CUDA only; use --set projector.norm=layer on CPU"
                )
            model = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        model = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=session.find_unused,
        )
    loss_fn = method.build_loss(cfg) if method.build_loss is not None else None
    if resume and loss_states:  # checkpoints written before losses had state hold none
        load_loss_state(loss_fn, loss_states)
    use_amp = cfg.amp and device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else nullcontext
    local = cfg.batch_size // world
    collapse_rule = CollapseMonitor(session.embed_dim, session.monitor_n)

    def checkpoint(step: int) -> Path:
        state = {
            "step": step,
            "optimizer": opt.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "loss": loss_state(loss_fn),
        }
        return save_checkpoint(out, step, saved_weights(net), record_of(cfg), state)

    def log(record: dict[str, Any]) -> None:
        with stats_path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def monitor(step: int) -> dict[str, Any]:
        if session.monitor_n < 2:
            return {}
        geo = monitor_geometry(session.monitor_embed(device), net.head)
        if session.monitor_pairs is not None:
            za, zb = session.monitor_pairs(device)
            geo.update(
                monitor_consistency(
                    za,
                    zb,
                    net.head,
                    consistency=cfg.dense.consistency,
                    shrinkage=cfg.dense.shrinkage,
                )
            )
        er = geo["effective_rank"]
        collapse = collapse_rule.update(er)
        if collapse:
            warnings.warn(
                f"step {step}: representation collapse? monitoring effective rank {er:.1f} "
                f"(d={session.embed_dim}, best {collapse_rule.best:.1f})",
                RuntimeWarning,
                stacklevel=2,
            )
        return {"monitor": {**geo, "n": session.monitor_n, "collapse": collapse}}

    last_ckpt = latest_checkpoint(out, missing_ok=True) if rank == 0 else None
    if not method.trains or start >= cfg.max_steps:
        if rank == 0:
            if not method.trains:
                log({"step": 0, "method": cfg.method, **monitor(0)})
            last_ckpt = checkpoint(start)
        return last_ckpt  # type: ignore[return-value]

    progress = None
    if cfg.log.progress and rank == 0:
        from rich.console import Console
        from rich.progress import Progress

        # stderr: stdout carries results only (`densefeat train ... > out.txt` stays clean).
        progress = Progress(console=Console(stderr=True), transient=False)
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
            rows = step_rows(cfg, session.n_rows, step)[rank * local : (rank + 1) * local]
            inputs = session.inputs(rows, step, device)
            with autocast():
                outputs = model(inputs)
            loss, terms = loss_fn(outputs, inputs)  # type: ignore[misc]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            opt.step()
            done = step + 1
            loss_value = float(loss.detach())
            if rank == 0:
                if not math.isfinite(loss_value):
                    raise FloatingPointError(f"step {done}: non-finite loss {loss_value}")
                record: dict[str, Any] = {}
                if cfg.log.monitor_every and (done % cfg.log.monitor_every == 0 or done == 1):
                    record.update(monitor(done))
                if record or done % max(cfg.log.log_every, 1) == 0 or done == cfg.max_steps:
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
                if done % cfg.log.checkpoint_every == 0 or done == cfg.max_steps:
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
