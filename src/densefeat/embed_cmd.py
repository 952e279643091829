"""``densefeat embed``: embeddings of a trained run as parquet (readable by ``densefeat analyze``).

The run's modality decides what a row is:

* ``ehr``: ``subject_id`` Int64, ``prediction_time`` Datetime("us"), ``split`` Utf8 and
  ``embedding`` list[float32] (the encoder's backbone output, ``d_model`` wide); with
  ``--labels`` one row per label row (its value columns kept), otherwise one row per subject at
  the end of its record (its last timed event).
* ``text``: one row per note of ``--data`` (read with the run's note keys, the rule of
  :mod:`densefeat.data.note_corpus`): ``note_id``, then ``subject_id`` where the notes have
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

import argparse
import os
import tempfile
from pathlib import Path

import polars as pl

OUTPUTS = ("fused", "codes", "notes", "static", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, required=True, help="a densefeat train run directory")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="MEDS dataset directory (default: the built-in Eunomia GiBleed); for a text run a "
        "MEDS directory, an MTSamples file or a note table",
    )
    parser.add_argument(
        "--labels", type=Path, default=None, help="MEDS labels: embed at their prediction times"
    )
    parser.add_argument("--out", type=Path, required=True, help="output .parquet file")
    parser.add_argument("--batch-size", type=int, default=512, help="rows per forward pass")
    parser.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="where the encoder runs (auto: CUDA when available)",
    )
    parser.add_argument(
        "--modality-output",
        default="fused",
        choices=OUTPUTS,
        help="multimodal runs: which embedding goes into 'embedding' (all: every one, as "
        "embedding_<modality> columns beside the fused one)",
    )


def _write_atomic(table: pl.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        table.write_parquet(tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _column(values) -> pl.Series:
    return pl.Series(values.tolist(), dtype=pl.List(pl.Float32))


def _device(name: str):
    import torch

    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("--device cuda requested but CUDA is not available")
        return torch.device("cuda")
    return torch.device("cpu")


def _embed_ehr(run_dir, data_dir, labels, batch_size: int, device) -> pl.DataFrame:
    from .data.meds import read_labels, read_meds_dataset
    from .train.loop import embed_rows, load_run

    cfg, builder, encoder = load_run(run_dir)
    encoder.to(device)
    ds = read_meds_dataset(data_dir)
    store = builder.encode(ds)
    rows = read_labels(labels, dataset=ds) if labels is not None else store.end_of_record()
    z = embed_rows(encoder, store, rows, cfg.max_len, batch_size=batch_size, device=device)
    table = rows.join(ds.splits, on="subject_id", how="left", maintain_order="left")
    table = table.with_columns(_column(z).alias("embedding"))
    front = ["subject_id", "prediction_time", "split", "embedding"]
    return table.select(front + [c for c in table.columns if c not in front])


def _embed_text(run_dir, data, labels, batch_size: int, device) -> pl.DataFrame:
    from .train.text import embed_texts, load_text_run, read_corpus

    if labels is not None:
        raise ValueError(
            "--labels is for ehr/multimodal runs; a text run embeds every note of --data (its "
            "label columns are kept)"
        )
    cfg, encoder = load_text_run(run_dir)
    corpus = read_corpus(cfg, data)
    z = embed_texts(encoder, corpus.texts, batch_size=batch_size, device=device)
    frame = corpus.frame.drop("text")
    front = [c for c in ("note_id", "subject_id", "prediction_time", "code", "split") if c in frame]
    rest = [c for c in frame.columns if c not in front]
    return (
        frame.select(front).with_columns(_column(z).alias("embedding")).hstack(frame.select(rest))
    )


def _embed_multimodal(
    run_dir, data_dir, labels, batch_size: int, output: str, device
) -> pl.DataFrame:
    from .data.meds import read_labels, read_meds_dataset
    from .train.multimodal import embed_multimodal, load_multimodal_run

    cfg, builder, encoder = load_multimodal_run(run_dir)
    wanted = "fused" if output == "all" else output
    if wanted != "fused" and wanted not in encoder.modalities:
        raise ValueError(
            f"--modality-output {output}: the run's encoder has the modalities "
            f"{', '.join(encoder.modalities)}"
        )
    ds = read_meds_dataset(data_dir)
    store = builder.encode(ds)
    rows = read_labels(labels, dataset=ds) if labels is not None else store.end_of_record()
    encoder.to(device)
    z = embed_multimodal(encoder, store, ds, rows, cfg, batch_size=batch_size, device=device)
    table = rows.join(ds.splits, on="subject_id", how="left", maintain_order="left")
    columns = [_column(z[wanted]).alias("embedding")]
    if output == "all":
        columns += [_column(z[m]).alias(f"embedding_{m}") for m in encoder.modalities]
    table = table.with_columns(*columns, pl.Series("has_notes", z["has_notes"]))
    front = ["subject_id", "prediction_time", "split", "embedding"]
    return table.select(front + [c for c in table.columns if c not in front])


def embed(
    run_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
    batch_size: int = 512,
    modality_output: str = "fused",
    device: str = "cpu",
) -> pl.DataFrame:
    """Embed ``data_dir`` with the run's encoder and write ``out`` atomically.

    Returns:
        the written table (columns by the run's modality, see the module docstring).

    Raises:
        ValueError: not a .parquet output, ``--modality-output`` other than ``fused`` for an
            ehr or text run, ``--labels`` for a text run, or the errors of the run loaders.
    """
    from .train.loop import read_run_modality

    out = Path(out)
    if out.suffix != ".parquet":
        raise ValueError(f"{out}: the output must be a .parquet file")
    if modality_output not in OUTPUTS:
        raise ValueError(f"--modality-output must be one of {OUTPUTS}, got {modality_output!r}")
    modality = read_run_modality(run_dir)
    dev = _device(device)
    if modality != "multimodal" and modality_output != "fused":
        raise ValueError(
            f"--modality-output {modality_output} is for multimodal runs; {run_dir} is a "
            f"{modality} run"
        )
    if modality == "text":
        table = _embed_text(run_dir, data_dir, labels, batch_size, dev)
    elif modality == "multimodal":
        table = _embed_multimodal(run_dir, data_dir, labels, batch_size, modality_output, dev)
    else:
        table = _embed_ehr(run_dir, data_dir, labels, batch_size, dev)
    _write_atomic(table, out)
    return table


def run(args: argparse.Namespace) -> int:
    data = args.data
    if data is None:
        from .train.loop import read_run_modality

        modality = read_run_modality(args.run)
        if modality != "ehr":
            raise ValueError(f"a {modality} run needs --data (the default dataset has no notes)")
        from .data.eunomia import eunomia_meds

        data = eunomia_meds()
    table = embed(
        args.run, data, args.out, args.labels, args.batch_size, args.modality_output, args.device
    )
    print(f"densefeat embed: {table.height} rows x {len(table['embedding'][0])} -> {args.out}")
    return 0
