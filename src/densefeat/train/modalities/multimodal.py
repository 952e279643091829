"""Training and embedding on multimodal MEDS records: coded events + notes (``--modality
multimodal``).

Data: a MEDS dataset whose notes are ``text_value`` events under ``notes.codes`` (the FHIR
converter writes Synthea's DocumentReference notes as ``NOTE//LOINC/...``); everything else is
the coded side (codes, numeric values, times, static codes), encoded exactly as for ``ehr``
(vocabulary and normaliser fitted on the training split). A record of subject ``s`` at time
``t`` is the last ``max_len`` events and the last ``multimodal.max_notes`` notes at or before ``t``
(:class:`~densefeat.data.multimodal.MultimodalBatch`; no leakage by construction).

Encoder: :class:`~densefeat.models.multimodal.MultimodalEncoder` over the EHR encoder (sized by
the EHR keys) and the text encoder (``text`` section, the pretrained MiniLM + adapter by
default), each projected to ``d_model`` and fused (``multimodal.fusion``: ``"mean"`` by default,
which has no parameters); ``multimodal.static`` adds the static modality.

Pairs of the pair methods, ``multimodal.pairs``:

* ``"modalities"`` (default): the ``codes`` and ``notes`` embeddings of the same record at the
  same time (periodic cut-offs every ``window_days`` of training subjects, kept when the subject
  has at least one note by then): cross-modal alignment, one encoder pass per row. The fused
  embedding is the mean of the two, so it is trained too; with
  ``multimodal.fusion="concat-mlp"`` the fusion MLP gets no gradient from these pairs (stated, not
  hidden).
* ``"windows"``: the fused embedding at ``t`` and at ``t + window_days`` (the EHR window pairs),
  both records in one call over 2B rows. Limit: the multimodal encoder has no multi-cut-off
  pass, so this costs two EHR passes per pair where ``--modality ehr`` needs one.

``supervised`` classifies the fused embedding at the label rows' prediction times (``--labels``);
``masked`` is next-event code prediction on the codes encoder only (the notes encoder and
fusion get no gradient); ``random`` saves the untrained encoder.

Embeddings (:func:`embed_multimodal`): the fused embedding and every per-modality one, plus
``has_notes`` (the ``notes`` embedding of a row without notes is the learned "no notes" vector:
measure cross-modal alignment on rows with notes only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from ...data.ehr.builder import HistoryBuilder
from ...data.ehr.store import EventStore
from ...data.ehr.windows import periodic_cuts, window_pairs
from ...data.meds import MedsDataset
from ...data.multimodal import align_notes
from ...data.text.meds_notes import notes_from_meds
from ...methods import get_method
from ...models.code_groups import CodeGroupEncoder
from ...models.ehr import EHREncoder
from ...models.multimodal import MultimodalEncoder
from ...models.text import build_text_encoder
from ..checkpoint import backbone_fingerprint, check_fingerprint, read_run_config
from ..config import TrainConfig
from .base import Embeddings, Modality, Network, Run, Session, read_history
from .ehr import (
    ehr_encoder_config,
    monitor_rows,
    open_training,
    require_rows,
    row_times,
    training_labels,
)
from .text import text_encoder_config

__all__ = [
    "MULTIMODAL",
    "MultimodalData",
    "build_multimodal_network",
    "embed_multimodal",
    "multimodal_inputs",
    "prepare_multimodal_data",
]

_NOTE_COLS = ("note_times", "notes")


def _grouped(cfg: TrainConfig) -> bool:
    """Code-group modalities (``multimodal.groups``) instead of codes + notes."""
    return bool(cfg.multimodal.groups.strip())


def _prefixes(cfg: TrainConfig) -> list[str] | None:
    return [p.strip() for p in cfg.notes.codes.split(",") if p.strip()] or None


def _notes_at(
    ds: MedsDataset, cfg: TrainConfig, sid: pl.Series, times: pl.Series, suffix: str = ""
) -> pl.DataFrame:
    """``note_times{suffix}``, ``notes{suffix}`` of each (subject, time), in order (empty lists
    under ``multimodal.groups``: code-group runs read no notes)."""
    if _grouped(cfg):
        return pl.DataFrame(
            {
                "note_times" + suffix: pl.Series([[]] * len(sid), dtype=pl.List(pl.Datetime("us"))),
                "notes" + suffix: pl.Series([[]] * len(sid), dtype=pl.List(pl.Utf8)),
            }
        )
    queries = pl.DataFrame(
        {"subject_id": sid.cast(pl.Int64), "prediction_time": times.cast(pl.Datetime("us"))}
    )
    notes = notes_from_meds(
        ds, queries, code_prefixes=_prefixes(cfg), max_notes=cfg.multimodal.max_notes
    )
    return notes.select(pl.col(c).alias(c + suffix) for c in _NOTE_COLS)


@dataclass
class MultimodalData:
    """What a multimodal run samples from.

    Attributes:
        dataset: the MEDS dataset.
        store: encoded events of all subjects.
        rows: training rows of TRAINING subjects: ``subject_id``, ``prediction_time`` (the row's
            record time; ``t1`` of a window pair), ``note_times``, ``notes``; window pairs add
            ``time_t``, ``note_times_t``, ``notes_t``; labelled rows ``boolean_value``.
        monitor: held-out subjects at the end of their record, with their notes.
        pairs: ``"modalities"`` or ``"windows"`` (what the pair methods pair).
    """

    dataset: MedsDataset
    store: EventStore
    rows: pl.DataFrame
    monitor: pl.DataFrame
    pairs: str


def prepare_multimodal_data(
    cfg: TrainConfig,
    data_dir: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None,
    builder: HistoryBuilder | None = None,
) -> tuple[HistoryBuilder, MultimodalData]:
    """Fit (or reuse) the builder; build the training rows with their notes and the monitor.

    Raises:
        ValueError: no notes in the dataset, ``supervised`` without labels, no training
            subjects, or fewer training rows than ``batch_size`` (named).
    """
    method = get_method(cfg.method)
    opened = open_training(cfg, data_dir, labels, builder)
    ds, train_ids, builder, store = opened.dataset, opened.train_ids, opened.builder, opened.store
    if _grouped(cfg) and cfg.method in ("masked", "masked+dense"):
        raise ValueError(
            f"--method {cfg.method}: next-event prediction trains one EHR encoder; under "
            "multimodal.groups every group has its own (use a pair method or supervised)"
        )
    all_notes = None if _grouped(cfg) else notes_from_meds(ds, code_prefixes=_prefixes(cfg))
    if all_notes is not None and all_notes.height == 0:
        raise ValueError(
            f"{data_dir}: no notes (non-empty text_value events with a code under "
            f"{cfg.notes.codes!r}); a multimodal run needs notes (--set notes.codes=PREFIX, "
            "empty for any text_value) or use --modality ehr"
        )
    pairs = cfg.multimodal.pairs
    if method.inputs == "labels":
        rows = training_labels(labels, opened)  # type: ignore[arg-type]
        rows = pl.concat(
            [rows, _notes_at(ds, cfg, rows["subject_id"], rows["prediction_time"])],
            how="horizontal",
        )
        what = "labelled rows of training subjects"
    else:
        cuts = periodic_cuts(store, cfg.data.window_days, subjects=train_ids.to_numpy())
        if pairs == "windows" or cfg.method == "masked":
            wp = window_pairs(store, cuts)
            rows = wp.select("subject_id", "time_t", pl.col("time_t1").alias("prediction_time"))
            rows = pl.concat(
                [
                    rows,
                    _notes_at(ds, cfg, rows["subject_id"], rows["prediction_time"]),
                    _notes_at(ds, cfg, rows["subject_id"], rows["time_t"], "_t"),
                ],
                how="horizontal",
            )
            what = f"window pairs ({cfg.data.window_days:g}-day windows) of training subjects"
        else:
            rows = cuts.select("subject_id", pl.col("time").alias("prediction_time"))
            rows = pl.concat(
                [rows, _notes_at(ds, cfg, rows["subject_id"], rows["prediction_time"])],
                how="horizontal",
            )
            if _grouped(cfg):
                what = f"records ({cfg.data.window_days:g}-day cut-offs) of training subjects"
            else:
                rows = rows.filter(pl.col("notes").list.len() > 0)
                what = (
                    f"records with notes ({cfg.data.window_days:g}-day cut-offs) of training "
                    "subjects"
                )
    require_rows(cfg, method, rows.height, what, f"from {train_ids.len()} training subjects")
    monitor = monitor_rows(ds, store, cfg.log.monitor_size)
    monitor = pl.concat(
        [monitor, _notes_at(ds, cfg, monitor["subject_id"], monitor["prediction_time"])],
        how="horizontal",
    )
    return builder, MultimodalData(ds, store, rows, monitor, pairs)


def _records(store: EventStore, sid: np.ndarray, times: np.ndarray, notes: pl.DataFrame):
    """The :class:`MultimodalBatch` of rows ``(sid[i], times[i])`` with their note columns."""
    events = store.gather(sid, times)
    keys = pl.DataFrame(
        {
            "subject_id": pl.Series(sid, dtype=pl.Int64),
            "prediction_time": pl.Series(times, dtype=pl.Int64).cast(pl.Datetime("us")),
        }
    )
    return align_notes(events, pl.concat([keys, notes.select(_NOTE_COLS)], how="horizontal"))


def multimodal_inputs(
    cfg: TrainConfig, data: MultimodalData, rows: np.ndarray, device: torch.device
) -> dict[str, Any]:
    """Inputs of the method's forward for the training rows ``rows``."""
    table = data.rows[rows]
    sid = table["subject_id"].to_numpy()
    t1 = row_times(table, "prediction_time")[1]
    method = get_method(cfg.method)
    if cfg.method == "masked":
        return {"batch": data.store.gather(sid, t1).to(device)}
    if method.inputs == "labels":
        mm = _records(data.store, sid, t1, table)
        y = torch.from_numpy(table["boolean_value"].to_numpy().astype(np.float32))
        return {"mm": mm.to(device), "labels": y.to(device)}
    if data.pairs == "windows":
        t = row_times(table, "time_t")[1]
        earlier = table.select(pl.col(c + "_t").alias(c) for c in _NOTE_COLS)
        notes = pl.concat([earlier, table.select(_NOTE_COLS)])
        mm = _records(data.store, np.concatenate([sid, sid]), np.concatenate([t, t1]), notes)
        return {"mm": mm.to(device), "pairs": "windows"}
    mm = _records(data.store, sid, t1, table)
    return {"mm": mm.to(device), "pairs": "modalities"}


def build_multimodal_network(
    cfg: TrainConfig, builder: HistoryBuilder
) -> tuple[Network, dict[str, Any]]:
    """The multimodal encoder and head of ``cfg.method``, initialised from ``cfg.seed``.

    Returns:
        the network and the encoder configs (``ehr``, ``text``, ``fusion``) for the run file.
    """
    method = get_method(cfg.method)
    enc_cfg = ehr_encoder_config(cfg, builder)
    if _grouped(cfg):
        return _build_grouped_network(cfg, builder, enc_cfg)
    tcfg = text_encoder_config(cfg)
    torch.manual_seed(cfg.seed)
    ehr = EHREncoder(enc_cfg)
    text = build_text_encoder(tcfg)
    encoder = MultimodalEncoder(
        ehr,
        text,
        d_out=cfg.encoder.d_model,
        fusion=cfg.multimodal.fusion,
        static_dim=enc_cfg.n_static if cfg.multimodal.static else None,
        fusion_hidden=cfg.multimodal.fusion_hidden,
        dropout=cfg.encoder.dropout,
    )
    head = method.build_head(cfg, cfg.encoder.d_model, enc_cfg.vocab_size, 1)
    configs = {
        "ehr": enc_cfg.to_dict(),
        "text": tcfg.to_dict(),
        "fusion": encoder.config.to_dict(),
    }
    return Network(encoder, head, method), configs


def _build_grouped_network(
    cfg: TrainConfig, builder: HistoryBuilder, enc_cfg: Any
) -> tuple[Network, dict[str, Any]]:
    """One EHR encoder per code group (+ the static branch), :class:`CodeGroupEncoder`."""
    from ...data.ehr.groups import code_group_ids, parse_groups
    from ...data.ehr.vocabulary import N_RESERVED
    from ...models.code_groups import CodeGroupEncoder

    if enc_cfg.tokens != "events":
        raise ValueError("multimodal.groups needs data.tokens=events (an hour mixes groups)")
    method = get_method(cfg.method)
    groups = parse_groups(cfg.multimodal.groups)
    table = code_group_ids(builder.vocabulary.code_table()["code"].to_list(), groups, N_RESERVED)
    torch.manual_seed(cfg.seed)
    encoders = {g: EHREncoder(enc_cfg) for g in groups}
    encoder = CodeGroupEncoder(
        encoders,
        torch.from_numpy(table),
        d_out=cfg.encoder.d_model,
        static_dim=enc_cfg.n_static if cfg.multimodal.static else None,
        dropout=cfg.encoder.dropout,
    )
    head = method.build_head(cfg, cfg.encoder.d_model, enc_cfg.vocab_size, 1)
    configs = {
        "ehr": enc_cfg.to_dict(),
        "groups": {g: list(p) for g, p in groups.items()},
        "modalities": list(encoder.modalities),
    }
    return Network(encoder, head, method), configs


@torch.no_grad()
def embed_multimodal(
    encoder: MultimodalEncoder | CodeGroupEncoder,
    store: EventStore,
    dataset: MedsDataset,
    rows: pl.DataFrame,
    cfg: TrainConfig,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> dict[str, np.ndarray]:
    """Fused and per-modality embeddings of ``rows`` (``subject_id, prediction_time``).

    Returns:
        ``"fused"`` and one (n, d) float32 array per modality (``"codes"``, ``"notes"``,
        ``"static"``, or the code groups), ``"has_notes"`` (n,) bool, and for code groups
        ``"present/<group>"`` (n,) bool (the group has an event by the prediction time).
    """
    was_training = encoder.training
    encoder.eval()
    sid = rows["subject_id"].cast(pl.Int64).to_numpy()
    pt = row_times(rows, "prediction_time")[1]
    notes = _notes_at(dataset, cfg, rows["subject_id"], rows["prediction_time"])
    parts: dict[str, list[np.ndarray]] = {}
    for lo in range(0, len(sid), batch_size):
        hi = lo + batch_size
        mm = _records(store, sid[lo:hi], pt[lo:hi], notes[lo:hi]).to(device)
        fused, per = encoder(mm)
        for name, z in {"fused": fused, **per}.items():
            parts.setdefault(name, []).append(z.float().cpu().numpy())
        parts.setdefault("has_notes", []).append(mm.has_notes.cpu().numpy())
        if isinstance(encoder, CodeGroupEncoder):
            for g in encoder.groups:
                parts.setdefault(f"present/{g}", []).append(encoder.present(mm)[g].cpu().numpy())
    encoder.train(was_training)
    if not parts:
        d = encoder.d_out
        empty = {m: np.zeros((0, d), np.float32) for m in ("fused", *encoder.modalities)}
        return {**empty, "has_notes": np.zeros(0, bool)}
    return {k: np.concatenate(v) for k, v in parts.items()}


def session(
    cfg: TrainConfig,
    data_dir: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None,
    run_dir: Path | None,
) -> Session:
    """The multimodal side of :func:`densefeat.train.train`."""
    builder = read_history(run_dir) if run_dir is not None else None
    builder, data = prepare_multimodal_data(cfg, data_dir, labels, builder)
    net, configs = build_multimodal_network(cfg, builder)
    if run_dir is not None:
        saved = read_run_config(run_dir).get("text", {}).get("backbone")
        check_fingerprint(saved, net, run_dir)
    info = {
        "encoder": configs,
        "text": {"backbone": backbone_fingerprint(net)},
        "multimodal": {"pairs": data.pairs},
    }

    def monitor_embed(device: torch.device) -> torch.Tensor:
        z = embed_multimodal(
            net.encoder, data.store, data.dataset, data.monitor, cfg, device=device
        )
        return torch.from_numpy(z["fused"])

    return Session(
        net=net,
        n_rows=data.rows.height,
        inputs=lambda rows, step, device: multimodal_inputs(cfg, data, rows, device),
        monitor_n=data.monitor.height,
        monitor_embed=monitor_embed,
        embed_dim=cfg.encoder.d_model,
        run_info=info,
        files={"history.json": builder.to_dict()},
        # Unused by some pairs/methods: the no-notes vector, the fusion MLP, the notes side.
        find_unused=True,
    )


def _build_network(cfg: TrainConfig, run_dir: Path, info: dict[str, Any]) -> tuple:
    builder = read_history(run_dir)
    net, _ = build_multimodal_network(cfg, builder)
    return net, builder


def embed(
    run: Run,
    rows: pl.DataFrame,
    *,
    store: EventStore,
    dataset: MedsDataset,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    projector: bool = True,
) -> Embeddings:
    """Fused (backbone) embeddings of ``rows`` (``subject_id, prediction_time``) of a
    multimodal run, with every per-modality embedding and ``has_notes`` in ``extra``."""
    z = embed_multimodal(run.net.encoder, store, dataset, rows, run.cfg, batch_size, device)
    fused = z.pop("fused")
    head = run.net.projector if projector else None
    zp = None
    if head is not None:
        from .base import project

        zp = project(head, fused, device)
    return Embeddings(fused, zp, z)


MULTIMODAL = Modality(
    name="multimodal",
    session=session,
    build_network=_build_network,
    embed=embed,
    description="MEDS records with coded events and notes (codes vs notes, or windows)",
)
