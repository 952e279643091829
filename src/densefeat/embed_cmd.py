"""``densefeat embed``: embeddings of a trained run as parquet (readable by ``densefeat analyze``).

Output columns: ``subject_id`` Int64, ``prediction_time`` Datetime("us"), ``split`` Utf8 and
``embedding`` list[float32] (the encoder's backbone output, ``d_model`` wide); with ``--labels``
one row per label row (its value columns kept), otherwise one row per subject at the end of its
record (its last timed event).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import polars as pl


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, required=True, help="a densefeat train run directory")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="MEDS dataset directory (default: the built-in Eunomia GiBleed)",
    )
    parser.add_argument(
        "--labels", type=Path, default=None, help="MEDS labels: embed at their prediction times"
    )
    parser.add_argument("--out", type=Path, required=True, help="output .parquet file")
    parser.add_argument("--batch-size", type=int, default=512, help="rows per forward pass")


def embed(
    run_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
    batch_size: int = 512,
) -> pl.DataFrame:
    """Embed ``data_dir`` with the run's encoder and write ``out`` atomically.

    Returns:
        the written table.
    """
    from .data.meds import read_labels, read_meds_dataset
    from .train.loop import embed_rows, load_run

    out = Path(out)
    if out.suffix != ".parquet":
        raise ValueError(f"{out}: the output must be a .parquet file")
    cfg, builder, encoder = load_run(run_dir)
    ds = read_meds_dataset(data_dir)
    store = builder.encode(ds)
    if labels is not None:
        rows = read_labels(labels, dataset=ds)
    else:
        rows = store.end_of_record()
    z = embed_rows(encoder, store, rows, cfg.max_len, batch_size=batch_size)
    table = rows.join(ds.splits, on="subject_id", how="left").with_columns(
        pl.Series("embedding", z.tolist(), dtype=pl.List(pl.Float32)),
    )
    front = ["subject_id", "prediction_time", "split", "embedding"]
    table = table.select(front + [c for c in table.columns if c not in front])
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        table.write_parquet(tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return table


def run(args: argparse.Namespace) -> int:
    data = args.data
    if data is None:
        from .data.eunomia import eunomia_meds

        data = eunomia_meds()
    table = embed(args.run, data, args.out, args.labels, args.batch_size)
    print(f"densefeat embed: {table.height} rows x {len(table['embedding'][0])} -> {args.out}")
    return 0
