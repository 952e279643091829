"""The EHR modality: patient histories of a MEDS dataset (``--modality ehr``, the default).

Training data (:func:`prepare_data`): the vocabulary and normaliser are fitted on the training
split (or reused from the run being resumed); the rows are window pairs ``(t, t + window_days)``
of TRAINING subjects (:func:`~densefeat.data.ehr.windows.window_pairs`), or the labels of
training subjects for ``supervised``; the monitoring batch is the first ``log.monitor_size``
held-out subjects (else tuning) at the end of their record.

One encoder pass per pair: the history at ``t1`` is gathered once and the causal encoder embeds
it at both cut-offs (:meth:`~densefeat.models.ehr.EHREncoder.forward_at`).

:func:`encode_histories` is the one gather-and-encode loop of the EHR side (training monitor,
``densefeat embed``, the benchmark's embeddings, perturbed and half-window embeddings): it cuts
each ``(subject, time)`` from an :class:`~densefeat.data.ehr.EventStore` (to the store's
``max_len``), optionally transforms the batch (a test-time perturbation, validated to hold no
event after its prediction time), and embeds it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from ...data.ehr.batch import EventBatch
from ...data.ehr.buckets import CPU_MAX_POSITIONS, GPU_MAX_POSITIONS, length_buckets
from ...data.ehr.builder import HistoryBuilder
from ...data.ehr.store import EventStore
from ...data.ehr.views import keyed_uniforms, unknown_codes
from ...data.ehr.windows import periodic_cuts, window_pairs
from ...data.meds import MedsDataset, read_labels, read_meds_dataset
from ...methods import Method, get_method
from ...models.ehr import EHREncoder, EHREncoderConfig
from ...models.heads import ProjectionHead
from ..config import TrainConfig
from ..views import future_pair, pair_kind, view_generator, view_pair
from .base import MONITOR_SPLITS, Embeddings, Modality, Network, Run, Session, read_history

__all__ = [
    "EHR",
    "TrainData",
    "build_ehr_network",
    "ehr_encoder_config",
    "encode_histories",
    "open_training",
    "prepare_data",
    "row_times",
]


@dataclass
class TrainData:
    """What an EHR run samples from.

    Attributes:
        store: encoded events of all subjects (monitoring needs held-out ones).
        rows: training rows: window pairs (``subject_id, time_t, time_t1``) or labels
            (``subject_id, prediction_time, boolean_value``) of training subjects only.
        monitor: ``subject_id, prediction_time`` of the fixed monitoring batch (may be empty).
        monitor_pairs: ``subject_id, time_t, time_t1``: fixed window pairs of the monitoring
            subjects, the latest of each (:func:`monitor_window_pairs`; may be empty).
    """

    store: EventStore
    rows: pl.DataFrame
    monitor: pl.DataFrame
    monitor_pairs: pl.DataFrame | None = None


def row_times(rows: pl.DataFrame, column: str = "prediction_time") -> tuple[np.ndarray, ...]:
    """``(subject_id, time)`` of ``rows`` as int64 arrays (time in microseconds)."""
    sid = rows["subject_id"].cast(pl.Int64).to_numpy()
    return sid, rows[column].cast(pl.Datetime("us")).cast(pl.Int64).to_numpy()


def monitor_rows(ds: Any, store: EventStore, size: int) -> pl.DataFrame:
    """The fixed monitoring rows: the first ``size`` held-out (else tuning) subjects at the end
    of their record (an empty frame when neither split has subjects)."""
    end = store.end_of_record()
    for split in MONITOR_SPLITS:
        ids = ds.split_ids(split)
        if ids.len():
            return end.filter(pl.col("subject_id").is_in(ids.implode())).head(size)
    return end.head(0)


def monitor_window_pairs(
    store: EventStore, monitor: pl.DataFrame, window_days: float
) -> pl.DataFrame:
    """Window pairs of the monitoring subjects, one per subject (its latest), in the
    monitoring batch's subject order: the rows of the monitored subspace-consistency term.
    Subjects with a single window contribute nothing (empty frame when none has two)."""
    ids = monitor["subject_id"].cast(pl.Int64).unique(maintain_order=True)
    if ids.len() == 0:
        return pl.DataFrame(
            schema={
                "subject_id": pl.Int64,
                "time_t": pl.Datetime("us"),
                "time_t1": pl.Datetime("us"),
            }
        )
    pairs = window_pairs(store, periodic_cuts(store, window_days, subjects=ids.to_numpy()))
    last = pairs.group_by("subject_id", maintain_order=True).last()
    order = pl.DataFrame({"subject_id": ids}).with_row_index("_order")
    return (
        last.join(order, on="subject_id").sort("_order").select("subject_id", "time_t", "time_t1")
    )


@torch.no_grad()
def encode_window_pairs(
    encoder: nn.Module,
    store: EventStore,
    pairs: pl.DataFrame,
    *,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone embeddings ``(za, zb)`` (n, d), float32 on the CPU, of both windows of
    ``pairs`` (``subject_id, time_t, time_t1``), the encoder in eval mode (then restored);
    one history per pair, cut at ``t1`` and embedded at both cut-offs, as in training."""
    sid, t = row_times(pairs, "time_t")
    _, t1 = row_times(pairs, "time_t1")
    was_training = encoder.training
    encoder.eval()
    out = []
    try:
        for lo in range(0, len(sid), batch_size):
            sl = slice(lo, lo + batch_size)
            batch = store.gather(sid[sl], t1[sl])
            cutoffs = torch.from_numpy(np.stack([t[sl], t1[sl]], axis=1))
            out.append(encoder.forward_at(batch.to(device), cutoffs.to(device)).float().cpu())
    finally:
        encoder.train(was_training)
    z = torch.cat(out) if out else torch.zeros(0, 2, int(encoder.embed_dim))
    return z[:, 0], z[:, 1]


def require_rows(cfg: TrainConfig, method: Method, n_rows: int, what: str, where: str) -> None:
    """Refuse fewer training rows than one batch (named, with the way out).

    Raises:
        ValueError: a training method with fewer than ``batch_size`` rows.
    """
    if method.trains and n_rows < cfg.batch_size:
        raise ValueError(
            f"too few training rows for batch_size {cfg.batch_size}: {n_rows} {what} "
            f"({where}); lower it with --set batch_size=N"
        )


@dataclass
class Training:
    """What every MEDS-based modality opens first (ehr, multimodal)."""

    dataset: MedsDataset
    train_ids: pl.Series
    builder: HistoryBuilder
    store: EventStore


def open_training(
    cfg: TrainConfig,
    data_dir: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None,
    builder: HistoryBuilder | None = None,
) -> Training:
    """Read the dataset, fit (or reuse) the history builder on the training split and encode
    every subject.

    Raises:
        ValueError: a method that needs labels without them, or no training subjects.
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
            ds,
            split="train",
            max_len=cfg.data.max_len,
            min_subjects=cfg.data.min_code_subjects,
            # Hour tokens are an EHR-encoder input; the multimodal encoder reads events.
            tokens=cfg.data.tokens if cfg.modality == "ehr" else "events",
        )
    return Training(ds, train_ids, builder, builder.encode(ds))


def training_labels(labels: str | os.PathLike[str], opened: Training) -> pl.DataFrame:
    """``subject_id, prediction_time, boolean_value`` of the training subjects' labels.

    Raises:
        ValueError: labels without ``boolean_value`` (supervised training is binary).
    """
    table = read_labels(labels, dataset=opened.dataset)
    if "boolean_value" not in table.columns:
        raise ValueError(f"{labels}: supervised training needs boolean_value labels")
    return table.filter(pl.col("subject_id").is_in(opened.train_ids.implode())).select(
        "subject_id", "prediction_time", "boolean_value"
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
    opened = open_training(cfg, data_dir, labels, builder)
    store = opened.store
    if method.inputs == "labels":
        rows = training_labels(labels, opened)  # type: ignore[arg-type]
        what = "labelled rows of training subjects"
    else:
        cuts = periodic_cuts(store, cfg.data.window_days, subjects=opened.train_ids.to_numpy())
        rows = window_pairs(store, cuts)
        what = f"window pairs ({cfg.data.window_days:g}-day windows) of training subjects"
    where = f"from {opened.train_ids.len()} training subjects"
    require_rows(cfg, method, rows.height, what, where)
    monitor = monitor_rows(opened.dataset, store, cfg.log.monitor_size)
    pairs = monitor_window_pairs(store, monitor, cfg.data.window_days)
    return opened.builder, TrainData(store, rows, monitor, pairs)


def _unknown(
    batch: EventBatch, unk: tuple[float, torch.Tensor, int] | None, rows: np.ndarray, step: int
) -> EventBatch:
    """The batch with a seeded share of codes replaced by parent/UNK (``data.unk_rate``)."""
    if unk is None or unk[0] == 0.0:
        return batch
    rate, parents, seed = unk
    # Draws keyed by (seed, step, global row): the same on any world size or after a resume.
    keys = np.asarray(rows, dtype=np.int64) + np.int64(step) * np.int64(1 << 32)
    # Hour tokens: one draw pair per (hour, variable), the measurements the encoder reads.
    n = batch.seq_len * (batch.bin_values.shape[-1] if batch.is_binned else 1)
    draws = keyed_uniforms(keys, (2, n), seed)
    return unknown_codes(batch, rate, parents, draws)


def _inputs(
    method: Method,
    data: TrainData,
    rows: np.ndarray,
    device: torch.device,
    cfg: TrainConfig | None = None,
    step: int = 0,
    unk: tuple[float, torch.Tensor, int] | None = None,
) -> dict:
    table = data.rows[rows]
    if method.inputs == "labels":
        batch = _unknown(data.store.gather(*row_times(table)), unk, rows, step)
        labels = torch.from_numpy(table["boolean_value"].to_numpy().astype(np.float32))
        return {"batch": batch.to(device), "labels": labels.to(device)}
    sid, t = row_times(table, "time_t")
    _, t1 = row_times(table, "time_t1")
    # One history (at t1) per pair; the encoder embeds it at both cut-offs in one pass.
    batch = _unknown(data.store.gather(sid, t1), unk, rows, step)
    kind = pair_kind(cfg.data.pairs, step) if cfg is not None else "windows"
    if kind == "views":
        # Two views of the history at t1 (densefeat.train.views); "batch" stays the full
        # history for next-event prediction, which does not use pairs.
        gen = view_generator(cfg.seed, step, int(rows[0]) if len(rows) else 0)
        views = view_pair(batch, gen, cfg.data).validate()
        return {"batch": batch.to(device), "views": views.to(device)}
    if kind == "future":
        # The history at t against the events of (t, t1] alone (densefeat.train.views).
        past = _unknown(data.store.gather(sid, t), unk, rows, step)
        days = torch.from_numpy((t1 - t).astype(np.float64) / 86_400e6)
        views = future_pair(past, batch, days).validate()
        return {"batch": batch.to(device), "views": views.to(device)}
    cutoffs = torch.from_numpy(np.stack([t, t1], axis=1))
    return {"batch": batch.to(device), "cutoffs": cutoffs.to(device)}


def ehr_encoder_config(cfg: TrainConfig, builder: HistoryBuilder) -> EHREncoderConfig:
    """The EHR encoder's config: sizes (vocabulary, static codes, ``max_len``) from the
    builder, widths from ``cfg.encoder``."""
    e = cfg.encoder
    return EHREncoderConfig.from_builder(
        builder,
        d_model=e.d_model,
        n_layers=e.n_layers,
        n_heads=e.n_heads,
        dropout=e.dropout,
        value_embedding=e.value_embedding,
        # A state of hour tokens; event tokens have no per-variable channels to carry.
        carry_forward=e.carry_forward and builder.tokens == "hours",
    )


def build_ehr_network(cfg: TrainConfig, builder: HistoryBuilder) -> Network:
    """The EHR encoder and the head of ``cfg.method``, initialised from ``cfg.seed``."""
    method = get_method(cfg.method)
    enc_cfg = ehr_encoder_config(cfg, builder)
    torch.manual_seed(cfg.seed)
    encoder = EHREncoder(enc_cfg)
    # Next-hour prediction on hour tokens: a presence logit and a value per variable.
    n_out = 2 * enc_cfg.n_variables if enc_cfg.tokens == "hours" else enc_cfg.vocab_size
    head = method.build_head(cfg, enc_cfg.d_model, n_out)
    return Network(encoder, head, method)


def encode_histories(
    encoder: nn.Module,
    store: EventStore,
    subject_id: np.ndarray,
    prediction_time: np.ndarray,
    *,
    head: ProjectionHead | None = None,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    transform: Callable[[EventBatch], EventBatch] | None = None,
    bucket: bool = True,
    max_positions: int | None = None,
) -> Embeddings:
    """Embeddings of rows ``(subject_id[i], prediction_time[i])`` cut from ``store``.

    Rows are batched by history length (:func:`~densefeat.data.ehr.buckets.length_buckets`)
    under :func:`torch.inference_mode`, and returned in the given order: the same embeddings
    as batching them in order (each row depends on its own events only; float rounding
    aside, ~1e-7), at a fraction of the cost when lengths vary.

    Args:
        encoder: an EHR encoder (put in eval mode for the call, then restored).
        store: the events, encoded with the encoder's vocabulary (its ``max_len`` applies).
        subject_id, prediction_time: (n,) int64 rows (time in microseconds).
        head: a projector to also pass the embeddings through (batch by batch; in eval mode
            too, so a BatchNorm uses its running statistics and rows do not depend on their
            batch-mates).
        batch_size: the most rows per forward pass.
        device: where the encoder runs.
        transform: maps each gathered (CPU) batch to the batch the encoder sees (a test-time
            perturbation); its output is validated (:meth:`EventBatch.validate`: no event after
            its prediction time) before it reaches the encoder. It must treat rows
            independently of their batch-mates (as :class:`~densefeat.eval.perturb.KeyedRandom`
            perturbations do), since bucketing regroups the rows.
        bucket: sort rows into batches of similar length (False: batches in row order).
        max_positions: the most token positions per pass; None: ``CPU_MAX_POSITIONS`` on CPU,
            ``GPU_MAX_POSITIONS`` elsewhere.

    Returns:
        backbone (n, d) and, with ``head``, projector embeddings, float32, in row order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    subject_id = np.asarray(subject_id, dtype=np.int64)
    prediction_time = np.asarray(prediction_time, dtype=np.int64)
    n = len(subject_id)
    if bucket:
        if max_positions is None:
            on_cpu = torch.device(device).type == "cpu"
            max_positions = CPU_MAX_POSITIONS if on_cpu else GPU_MAX_POSITIONS
        lengths = store.history_lengths(subject_id, prediction_time)
        batches = length_buckets(lengths, batch_size, max_positions)
    else:
        batches = [np.arange(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size)]
    modules = [encoder] + ([head] if head is not None else [])
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    d = int(encoder.embed_dim)
    zb = np.zeros((n, d), np.float32)
    zp = np.zeros((n, head.d_out), np.float32) if head is not None else None
    try:
        with torch.inference_mode():
            for rows in batches:
                batch = store.gather(subject_id[rows], prediction_time[rows])
                if transform is not None:
                    batch = transform(batch).validate()
                z = encoder(batch.to(device))
                zb[rows] = z.float().cpu().numpy()
                if zp is not None:
                    zp[rows] = head(z).float().cpu().numpy()
    finally:
        for m, mode in zip(modules, was_training, strict=True):
            m.train(mode)
    return Embeddings(zb) if zp is None else Embeddings(zb, zp)


def embed(
    run: Run,
    rows: pl.DataFrame,
    *,
    store: EventStore,
    device: torch.device | str = "cpu",
    batch_size: int = 512,
    projector: bool = True,
) -> Embeddings:
    """Backbone (and projector) embeddings of ``rows`` (``subject_id, prediction_time``) of a
    run, from ``store`` (the dataset encoded with ``run.builder``)."""
    head = run.net.projector if projector else None
    return encode_histories(
        run.net.encoder, store, *row_times(rows), head=head, batch_size=batch_size, device=device
    )


def session(
    cfg: TrainConfig,
    data_dir: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None,
    run_dir: Path | None,
) -> Session:
    """The EHR session (``run_dir``: the run being resumed, whose vocabulary is reused)."""
    builder = read_history(run_dir) if run_dir is not None else None
    builder, data = prepare_data(cfg, data_dir, labels, builder)
    method = get_method(cfg.method)
    net = build_ehr_network(cfg, builder)
    sid, pt = row_times(data.monitor)
    unk = (cfg.data.unk_rate, torch.from_numpy(builder.vocabulary.parent_ids()), cfg.seed)

    def monitor_embed(device: torch.device) -> torch.Tensor:
        z = encode_histories(net.encoder, data.store, sid, pt, device=device).backbone
        return torch.from_numpy(z)

    def monitor_pairs(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return encode_window_pairs(net.encoder, data.store, data.monitor_pairs, device=device)

    # Fewer than 3 pairs: no covariance to compare (the term needs n >= 2 rows per side).
    has_pairs = data.monitor_pairs is not None and data.monitor_pairs.height >= 3

    return Session(
        net=net,
        n_rows=data.rows.height,
        inputs=lambda rows, step, device: _inputs(
            method, data, rows, device, cfg=cfg, unk=unk, step=step
        ),
        monitor_n=data.monitor.height,
        monitor_embed=monitor_embed,
        embed_dim=cfg.encoder.d_model,
        run_info={"encoder": ehr_encoder_config(cfg, builder).to_dict()},
        files={"history.json": builder.to_dict()},
        find_unused=not method.uses_all_parameters,
        monitor_pairs=monitor_pairs if has_pairs else None,
    )


def _build_network(cfg: TrainConfig, run_dir: Path, info: dict[str, Any]) -> tuple:
    builder = read_history(run_dir)
    return build_ehr_network(cfg, builder), builder


EHR = Modality(
    name="ehr",
    session=session,
    build_network=_build_network,
    embed=embed,
    description="patient histories of a MEDS dataset (window pairs of one subject)",
)
