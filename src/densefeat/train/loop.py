"""One readable training loop (in the spirit of nanoGPT's ``train.py``).

``train(cfg, data_dir, out_dir)`` does, in order: build the modality's :class:`Session` (for
EHR: read the MEDS dataset; fit the vocabulary and normaliser on the training split; build
window pairs ``(t, t + window_days)`` of TRAINING subjects, or read the labels of training
subjects for ``supervised``; fix a monitoring batch of held-out subjects; build encoder +
method head; text and multimodal sessions live in :mod:`densefeat.train.text` and
:mod:`densefeat.train.multimodal`); resolve ``epochs`` into ``max_steps``; then loop: learning
rate, seeded dropout, one batch, one encoder pass, loss, AdamW step, stats, monitoring,
checkpoint. The loop itself does not know the modality: a session hands it the network, the
number of training rows, a function from row indices to inputs and one from the encoder to the
monitoring batch's embeddings.

Monitoring (every ``monitor_every`` steps, in ``stats.jsonl`` under ``monitor``):
``effective_rank`` and ``condition_number`` of the backbone embeddings of the fixed monitoring
batch, and, for the pair methods, ``projector_effective_rank`` and
``projector_condition_number`` of the same rows through the projector (eval mode), since
DESIGN.md asks for the geometry of both; the collapse warning reads the backbone's.

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
from ..models.heads import ProjectionHead
from .checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    read_run_config,
    save_checkpoint,
    write_json_atomic,
)
from .config import TrainConfig

__all__ = [
    "Network",
    "Session",
    "TrainData",
    "build_network",
    "embed_rows",
    "load_run",
    "prepare_data",
    "read_run_modality",
    "train",
]

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


def prepare_data(
    cfg: TrainConfig,
    data_dir: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None,
    builder: HistoryBuilder | None = None,
) -> tuple[HistoryBuilder, TrainData]:
    """Fit (or reuse) the builder and build the training rows and the monitoring rows.

    Raises:
        ValueError: a method that needs labels without them, labels that are not binary, or
            fewer training rows than ``batch_size`` (named), or a non-EHR config.
    """
    if cfg.modality != "ehr":
        raise ValueError(
            f"prepare_data is the EHR data path; modality {cfg.modality!r} has its own "
            "(densefeat.train.text / densefeat.train.multimodal)"
        )
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
    """Encoder + method head; ``forward(inputs)`` is the method's one encoder pass (DDP-able).

    The encoder is an :class:`EHREncoder`, a text encoder or a
    :class:`~densefeat.models.multimodal.MultimodalEncoder`, by modality.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module | None, method: Method):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.method = method

    def forward(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.method.forward(self.encoder, self.head, inputs)


def build_network(cfg: TrainConfig, builder: HistoryBuilder) -> tuple[Network, EHREncoderConfig]:
    """The EHR encoder and head of ``cfg.method``, initialised from ``cfg.seed``."""
    method = get_method(cfg.method)
    enc_cfg = ehr_encoder_config(cfg, builder)
    torch.manual_seed(cfg.seed)
    encoder = EHREncoder(enc_cfg)
    head = method.build_head(cfg, enc_cfg.d_model, enc_cfg.vocab_size)
    return Network(encoder, head, method), enc_cfg


def ehr_encoder_config(cfg: TrainConfig, builder: HistoryBuilder) -> EHREncoderConfig:
    """The EHR encoder's config: sizes from ``builder``, widths from ``cfg``."""
    return EHREncoderConfig.from_builder(
        builder,
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        dropout=cfg.dropout,
        max_len=cfg.max_len,
        value_embedding=cfg.value_embedding,
    )


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


@torch.no_grad()
def monitor_geometry(z: torch.Tensor, head: nn.Module | None) -> dict[str, float]:
    """Geometry of monitoring embeddings ``z`` (n, d), and of ``head(z)`` for a projector.

    Returns:
        ``effective_rank`` and ``condition_number`` of the backbone embeddings; with a
        :class:`ProjectionHead`, also ``projector_effective_rank`` and
        ``projector_condition_number`` of its output (computed in eval mode, so a BatchNorm
        projector uses its running statistics, and restored to its mode afterwards).
    """
    z = z.float()
    out = {"effective_rank": effective_rank(z.cpu()), "condition_number": condition_number(z.cpu())}
    if isinstance(head, ProjectionHead):
        was_training = head.training
        head.eval()
        device = next(head.parameters()).device
        p = head(z.to(device)).float().cpu()
        head.train(was_training)
        out["projector_effective_rank"] = effective_rank(p)
        out["projector_condition_number"] = condition_number(p)
    return out


# --------------------------------------------------------------------------------------------
# Sessions: what the loop needs from a modality.


@dataclass
class Session:
    """A modality's side of a training run (built by ``ehr_session``, ``text_session``, ...).

    Attributes:
        net: encoder + method head, initialised from ``cfg.seed`` (resume loads weights later).
        n_rows: training rows (window pairs, note pairs, labelled rows, ...).
        inputs: ``(global row indices of this rank, step, device) -> inputs`` of the method's
            forward; a pure function of its arguments (exact resume, DDP = single process).
        monitor_n: rows of the fixed monitoring batch (0: no monitoring).
        monitor_embed: ``device -> (monitor_n, d)`` backbone embeddings of that batch.
        embed_dim: ``d`` of the backbone (the collapse rule reads it).
        run_config: ``cfg -> the JSON of RUN/config.json`` (also stored in each checkpoint).
        files: extra JSON files written into a new run directory (``history.json``).
        saved_weights: ``net -> weights to checkpoint`` (the text sessions leave out a frozen
            pretrained backbone).
        load_weights: ``(net, weights) -> None``; raises ValueError on a mismatch.
        find_unused: DDP must look for parameters without gradient.
    """

    net: Network
    n_rows: int
    inputs: Callable[[np.ndarray, int, torch.device], dict[str, Any]]
    monitor_n: int
    monitor_embed: Callable[[torch.device], torch.Tensor]
    embed_dim: int
    run_config: Callable[[TrainConfig], dict[str, Any]]
    files: dict[str, Any]
    saved_weights: Callable[[nn.Module], dict[str, torch.Tensor]]
    load_weights: Callable[[nn.Module, dict[str, torch.Tensor]], None]
    find_unused: bool


def run_config(
    cfg: TrainConfig, encoder: dict[str, Any], data_dir: Any, labels: Any, **extra: Any
) -> dict[str, Any]:
    """The JSON of ``RUN/config.json``: kind, version, the resolved config, encoder config."""
    return {
        "kind": "densefeat.run",
        "version": 1,
        "train": cfg.to_dict(),
        "encoder": encoder,
        "data": str(data_dir),
        "labels": None if labels is None else str(labels),
        "torch": torch.__version__,
        **extra,
    }


def _run_config(cfg: TrainConfig, enc_cfg: EHREncoderConfig, data_dir, labels) -> dict:
    return run_config(cfg, enc_cfg.to_dict(), data_dir, labels)


def _all_weights(net: nn.Module) -> dict[str, torch.Tensor]:
    return dict(net.state_dict())


def _load_weights(net: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"checkpoint does not fit this model: {exc}") from None


def ehr_session(
    cfg: TrainConfig,
    data_dir: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None,
    run_dir: Path | None,
) -> Session:
    """The EHR session (``run_dir``: the run being resumed, whose vocabulary is reused)."""
    builder = None
    if run_dir is not None:
        builder = HistoryBuilder.from_dict(json.loads((run_dir / "history.json").read_text()))
    builder, data = prepare_data(cfg, data_dir, labels, builder)
    method = get_method(cfg.method)
    net, enc_cfg = build_network(cfg, builder)

    def monitor_embed(device: torch.device) -> torch.Tensor:
        z = embed_rows(net.encoder, data.store, data.monitor, cfg.max_len, device=device)
        return torch.from_numpy(z)

    return Session(
        net=net,
        n_rows=data.rows.height,
        inputs=lambda rows, step, device: _inputs(cfg, method, data, rows, device),
        monitor_n=data.monitor.height,
        monitor_embed=monitor_embed,
        embed_dim=enc_cfg.d_model,
        run_config=lambda c: _run_config(c, enc_cfg, data_dir, labels),
        files={"history.json": builder.to_dict()},
        saved_weights=_all_weights,
        load_weights=_load_weights,
        find_unused=not method.uses_all_parameters,
    )


def _session(cfg: TrainConfig, data_dir: Any, labels: Any, run_dir: Path | None) -> Session:
    if cfg.modality == "text":
        from .text import text_session

        return text_session(cfg, data_dir, labels, run_dir)
    if cfg.modality == "multimodal":
        from .multimodal import multimodal_session

        return multimodal_session(cfg, data_dir, labels, run_dir)
    return ehr_session(cfg, data_dir, labels, run_dir)


# --------------------------------------------------------------------------------------------
# The loop.


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


def read_run_modality(run_dir: str | os.PathLike[str]) -> str:
    """The modality of a run directory (``"ehr"``, ``"text"`` or ``"multimodal"``).

    Raises:
        FileNotFoundError / ValueError: not a run directory (see :func:`read_run_config`).
    """
    run = read_run_config(Path(run_dir))
    return str(run.get("train", {}).get("modality", "ehr"))


def train(
    cfg: TrainConfig,
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> Path:
    """Train ``cfg.method`` on ``data_dir`` (modality ``cfg.modality``) and write the run.

    Args:
        cfg: the configuration (with ``resume``, the run's saved config is used instead except
            for ``max_steps``, ``epochs``, ``progress`` and ``device``, taken from ``cfg``).
        data_dir: a MEDS dataset directory (ehr, multimodal; text: a MEDS directory or a note
            table file, see :mod:`densefeat.data.note_corpus`).
        out_dir: the run directory (created; must not already hold a run unless ``resume``).
        labels: MEDS labels (``supervised`` on ehr/multimodal only).
        resume: continue from the latest checkpoint of ``out_dir``.
        on_step: called with the number of steps done after every step (tests interrupt here).

    Returns:
        the latest checkpoint directory.

    Raises:
        ValueError / FileNotFoundError: bad input, named (see :func:`prepare_data` and the
            text/multimodal sessions), including resuming a run of another modality.
    """
    out = Path(out_dir)
    method = get_method(cfg.method)
    device = _resolve_device(cfg)
    rank, world = _distributed(device)
    run_dir = None
    if resume:
        run = read_run_config(out)
        saved = TrainConfig.from_dict(run["train"])
        if saved.modality != cfg.modality:
            raise ValueError(
                f"{out}: is a {saved.modality} run, which --modality {cfg.modality} cannot "
                f"resume (use --modality {saved.modality})"
            )
        cfg = saved.replace(
            max_steps=cfg.max_steps, epochs=cfg.epochs, progress=cfg.progress, device=cfg.device
        )
        method = get_method(cfg.method)
        labels = run["labels"] if labels is None else labels
        run_dir = out
    elif rank == 0 and (out / "config.json").exists():
        raise ValueError(f"{out}: already holds a run; use --resume or another --out")
    session = _session(cfg, data_dir, labels, run_dir)
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
        session.load_weights(net, weights)
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start = int(state["step"])
        if rank == 0:
            _truncate_stats(stats_path, start)
    elif rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        for name, content in session.files.items():
            write_json_atomic(out / name, content)
        write_json_atomic(out / "config.json", session.run_config(cfg))

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
            find_unused_parameters=session.find_unused,
        )
    loss_fn = method.build_loss(cfg) if method.build_loss is not None else None
    use_amp = cfg.amp and device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else nullcontext
    local = cfg.batch_size // world
    best_rank = 0.0

    def checkpoint(step: int) -> Path:
        state = {
            "step": step,
            "optimizer": opt.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        return save_checkpoint(
            out, step, session.saved_weights(net), session.run_config(cfg), state
        )

    def log(record: dict[str, Any]) -> None:
        with stats_path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def monitor(step: int) -> dict[str, Any]:
        nonlocal best_rank
        if session.monitor_n < 2:
            return {}
        geo = monitor_geometry(session.monitor_embed(device), net.head)
        er = geo["effective_rank"]
        best_rank = max(best_rank, er)
        # DESIGN.md: collapse when the effective rank < 10% of d or < half its best value.
        # Centring caps the rank at n - 1, so a monitoring batch smaller than d is judged
        # against min(d, n - 1) (3 held-out subjects cannot show a rank above 2).
        cap = min(session.embed_dim, session.monitor_n - 1)
        collapse = er < 0.1 * cap or er < 0.5 * best_rank
        if collapse:
            warnings.warn(
                f"step {step}: representation collapse? monitoring effective rank {er:.1f} "
                f"(d={session.embed_dim}, best {best_rank:.1f})",
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
            rows = _step_rows(cfg, session.n_rows, step)[rank * local : (rank + 1) * local]
            inputs = session.inputs(rows, step, device)
            with autocast():
                outputs = model(inputs)
            loss, terms = loss_fn(outputs, inputs)  # type: ignore[misc]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
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


def _require_modality(run: dict[str, Any], run_dir: Path, modality: str) -> TrainConfig:
    cfg = TrainConfig.from_dict(run["train"])
    if cfg.modality != modality:
        loader = {
            "ehr": "densefeat.train.load_run",
            "text": "densefeat.train.text.load_text_run",
            "multimodal": "densefeat.train.multimodal.load_multimodal_run",
        }[cfg.modality]
        raise ValueError(
            f"{run_dir}: is a {cfg.modality} run, and this loader reads {modality} runs (load it "
            f"with {loader})"
        )
    return cfg


def load_run(run_dir: str | os.PathLike[str]) -> tuple[TrainConfig, HistoryBuilder, EHREncoder]:
    """The config, builder and trained encoder (eval mode, CPU) of an EHR run directory.

    Raises:
        FileNotFoundError: not a run directory, or no checkpoint.
        ValueError: a checkpoint that does not fit its model, or a text/multimodal run (their
            loaders are named in the message).
    """
    run_dir = Path(run_dir)
    run = read_run_config(run_dir)
    cfg = _require_modality(run, run_dir, "ehr")
    hist = run_dir / "history.json"
    if not hist.is_file():
        raise FileNotFoundError(f"{run_dir}: not a densefeat run directory (no history.json)")
    builder = HistoryBuilder.from_dict(json.loads(hist.read_text()))
    weights, _, _ = load_checkpoint(latest_checkpoint(run_dir))
    net, _ = build_network(cfg, builder)
    _load_weights(net, weights)
    net.encoder.eval()
    return cfg, builder, net.encoder
