"""``densefeat embed``: a trained run's embeddings of a dataset as parquet.

What a row is depends on the run's modality (:mod:`densefeat.train.embed`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: ``--modality-output`` choices (kept here so ``--help`` imports nothing heavy).
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


def run(args: argparse.Namespace) -> int:
    from ..train.embed import embed
    from ..train.runs import read_run_modality

    data = args.data
    if data is None:
        modality = read_run_modality(args.run)
        if modality != "ehr":
            raise ValueError(f"a {modality} run needs --data (the default dataset has no notes)")
        from ..data.convert.eunomia import eunomia_meds

        data = eunomia_meds()
    table = embed(
        args.run, data, args.out, args.labels, args.batch_size, args.modality_output, args.device
    )
    print(f"densefeat embed: {table.height} rows x {len(table['embedding'][0])} -> {args.out}")
    return 0
