"""A trained run's embeddings of a dataset as a table (what ``densefeat embed`` writes; readable by
``densefeat analyze`` and ``densefeat probe``).

The run's modality decides what a row is:

* ``ehr``: ``subject_id`` Int64, ``prediction_time`` Datetime("us"), ``split`` Utf8 and
  ``embedding`` list[float32] (the encoder's backbone output, ``d_model`` wide); with
  ``--labels`` one row per label row (its value columns kept), otherwise one row per subject at
  the end of its record (its last timed event).
* ``text``: one row per note of ``--data`` (read with the run's note keys, the rule of
  :mod:`densefeat.data.text.corpus`): ``note_id``, then ``subject_id`` where the notes have
  subjects, ``prediction_time`` (the note's time) and ``code`` for MEDS notes, ``split``,
  ``embedding``, then the label columns (MTSamples: one boolean column per specialty).
* ``multimodal``: rows as for ``ehr``; ``embedding`` is the fused embedding, or the modality
  named by ``--modality-output`` (``codes``, ``notes``, ``static``); ``all`` writes the fused
  ``embedding`` plus ``embedding_codes``, ``embedding_notes`` (...) columns, so the cross-modal
  alignment is ``densefeat analyze F --key embedding_codes`` against ``F --key-b
  embedding_notes`` on the same rows (several embedding columns need ``--key``). ``has_notes``
  says which rows have a note (elsewhere ``notes`` is the learned "no notes" vector).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import torch

from ..data.ehr.builder import COVERAGE_MARKER_CODES
from ..data.ehr.vocabulary import UNSEEN_WARN_SHARE, unseen_codes
from ..data.meds import read_labels, read_meds_dataset
from ..io.atomic import atomic_path
from .runs import load_run, read_run_modality

__all__ = ["OUTPUTS", "embed", "embed_run", "write_embeddings"]

#: ``--modality-output`` choices.
OUTPUTS = ("fused", "codes", "notes", "static", "all")


def _column(values: np.ndarray) -> pl.Series:
    return pl.Series(values.tolist(), dtype=pl.List(pl.Float32))


def _device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("--device cuda requested but CUDA is not available")
        return torch.device("cuda")
    return torch.device("cpu")


def unseen_summary(report: dict, limit: int = 10) -> str:
    """One human line (plus the most frequent codes) of an :func:`unseen_codes` report."""
    codes = report["codes"]
    head = (
        f"unseen codes: {len(codes)} codes not in the training vocabulary, "
        f"{report['n_unseen_events']:,} of {report['n_events']:,} timed events "
        f"({100 * report['share']:.2f}%)"
    )
    lines = [head] + [
        f"  {c['code']}: {c['n_events']:,} events ({100 * c['share']:.2f}%) -> {c['backoff']}"
        for c in codes[:limit]
    ]
    if len(codes) > limit:
        lines.append(f"  ... and {len(codes) - limit} more (all in the file's metadata)")
    return "\n".join(lines)


def report_unseen(run, ds) -> dict:
    """The unseen-code report of dataset ``ds`` for an ehr/multimodal run: printed to stderr,
    with a warning above :data:`UNSEEN_WARN_SHARE` of events."""
    events = ds.events().filter(~pl.col("code").is_in(list(COVERAGE_MARKER_CODES)))
    report = unseen_codes(run.builder.vocabulary, events)
    if report["codes"]:
        print(unseen_summary(report), file=sys.stderr)
    if report["share"] > UNSEEN_WARN_SHARE:
        warnings.warn(
            f"{100 * report['share']:.1f}% of the events have codes the run never saw in "
            "training (they reach the encoder as their parent code or UNK); embeddings of "
            "these rows may be less reliable",
            stacklevel=2,
        )
    return report


def _records(
    run, data, labels, batch_size: int, output: str, device, meta: dict | None = None
) -> pl.DataFrame:
    """ehr and multimodal runs: one row per label row, or per subject at the end of its record."""
    ds = read_meds_dataset(data)
    if meta is not None:
        meta["unseen_codes"] = report_unseen(run, ds)
    store = run.builder.encode(ds)
    rows = read_labels(labels, dataset=ds) if labels is not None else store.end_of_record()
    table = rows.join(ds.splits, on="subject_id", how="left", maintain_order="left")
    if run.cfg.modality == "ehr":
        z = run.modality.embed(
            run, rows, store=store, device=device, batch_size=batch_size, projector=False
        )
        table = table.with_columns(_column(z.backbone).alias("embedding"))
    else:
        encoder = run.net.encoder
        wanted = "fused" if output == "all" else output
        if wanted != "fused" and wanted not in encoder.modalities:
            raise ValueError(
                f"--modality-output {output}: the run's encoder has the modalities "
                f"{', '.join(encoder.modalities)}"
            )
        z = run.modality.embed(
            run, rows, store=store, dataset=ds, device=device, batch_size=batch_size,
            projector=False,
        )  # fmt: skip
        per = {"fused": z.backbone, **z.extra}
        columns = [_column(per[wanted]).alias("embedding")]
        if output == "all":
            columns += [_column(per[m]).alias(f"embedding_{m}") for m in encoder.modalities]
        table = table.with_columns(*columns, pl.Series("has_notes", z.extra["has_notes"]))
    front = ["subject_id", "prediction_time", "split", "embedding"]
    return table.select(front + [c for c in table.columns if c not in front])


def _notes(run, data, labels, batch_size: int, device) -> pl.DataFrame:
    """text runs: one row per note of ``data``, its label columns kept."""
    from .modalities.text import read_corpus

    if labels is not None:
        raise ValueError(
            "--labels is for ehr/multimodal runs; a text run embeds every note of --data (its "
            "label columns are kept)"
        )
    corpus = read_corpus(run.cfg, data)
    z = run.modality.embed(
        run, corpus.texts, device=device, batch_size=batch_size, projector=False
    ).backbone
    frame = corpus.frame.drop("text")
    front = [c for c in ("note_id", "subject_id", "prediction_time", "code", "split") if c in frame]
    rest = [c for c in frame.columns if c not in front]
    return (
        frame.select(front).with_columns(_column(z).alias("embedding")).hstack(frame.select(rest))
    )


def embed_run(
    run_dir: str | os.PathLike[str],
    data: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
    batch_size: int = 512,
    modality_output: str = "fused",
    device: str = "cpu",
    meta: dict | None = None,
) -> pl.DataFrame:
    """The embeddings table of ``data`` by the run's encoder (columns: module docstring).

    ``meta``: a dict that receives ``"unseen_codes"`` (ehr/multimodal runs: the
    :func:`~densefeat.data.ehr.vocabulary.unseen_codes` report of ``data``, also printed).

    Raises:
        ValueError: ``modality_output`` other than ``fused`` for an ehr or text run,
            ``labels`` for a text run, or the errors of :func:`~densefeat.train.load_run`.
    """
    if modality_output not in OUTPUTS:
        raise ValueError(f"--modality-output must be one of {OUTPUTS}, got {modality_output!r}")
    modality = read_run_modality(run_dir)
    if modality != "multimodal" and modality_output != "fused":
        raise ValueError(
            f"--modality-output {modality_output} is for multimodal runs; {run_dir} is a "
            f"{modality} run"
        )
    dev = _device(device)
    run = load_run(run_dir).to(dev)
    if modality == "text":
        return _notes(run, data, labels, batch_size, dev)
    return _records(run, data, labels, batch_size, modality_output, dev, meta)


def write_embeddings(
    table: pl.DataFrame, out: str | os.PathLike[str], meta: dict | None = None
) -> None:
    """Write an embeddings table to ``out`` (.parquet) atomically; ``meta`` (JSON-able) goes
    into the file's key-value metadata, one ``densefeat.<key>`` entry per key.

    Raises:
        ValueError: not a .parquet path.
    """
    out = Path(out)
    if out.suffix != ".parquet":
        raise ValueError(f"{out}: the output must be a .parquet file")
    kv = {f"densefeat.{k}": json.dumps(v) for k, v in (meta or {}).items()}
    with atomic_path(out, suffix=".parquet") as tmp:
        table.write_parquet(tmp, metadata=kv or None)


def embed(
    run_dir: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
    batch_size: int = 512,
    modality_output: str = "fused",
    device: str = "cpu",
) -> pl.DataFrame:
    """:func:`embed_run`, written to ``out`` (.parquet, checked first) atomically; returns the
    table.

    Raises:
        ValueError: not a .parquet output, or the errors of :func:`embed_run`.
    """
    if Path(out).suffix != ".parquet":
        raise ValueError(f"{out}: the output must be a .parquet file")
    meta: dict = {}
    table = embed_run(run_dir, data, labels, batch_size, modality_output, device, meta)
    write_embeddings(table, out, meta)
    return table
