"""``densefeat densify``: fit a dense-feature adapter to embeddings you already have, and apply it.

Usage::

    densefeat densify fit EMB_A [EMB_B] --out ADAPTER.safetensors
        [--method dense|vicreg|barlow|whiten] [--dim D] [--hidden H] [--steps N]
        [--batch-size B] [--lr LR] [--seed S]
        [--key COL] [--key-b COL] [--split-col COL] [--train-split NAME] [--split-seed S]
        [--subject-col COL] [--time-col COL] [--ridge R] [--chunk-rows N]
    densefeat densify apply ADAPTER.safetensors EMB --out EMB2.parquet|.npy [--key COL]

The library is :mod:`densefeat.densify`; this module parses, calls it and prints. Errors exit
with status 2 and write nothing (the adapter and the output are written atomically, after
every row has been read).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import non_negative_int, positive_int

__all__ = ["add_arguments", "run"]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _add_fit(p: argparse.ArgumentParser) -> None:
    from ..choices import DEFAULT_RIDGE, DENSIFY_METHODS

    p.add_argument("emb_a", metavar="EMB_A", help=".npy, .parquet, .pt or .safetensors file")
    p.add_argument(
        "emb_b",
        metavar="EMB_B",
        nargs="?",
        help="optional second file with the same rows in the same order (the pair of each row)",
    )
    p.add_argument(
        "--out", required=True, metavar="ADAPTER", help="ADAPTER.safetensors (+ ADAPTER.json)"
    )
    p.add_argument(
        "--method", default="dense", choices=DENSIFY_METHODS, help="objective (default dense)"
    )
    p.add_argument("--dim", type=positive_int, default=None, help="output width D (default: d)")
    p.add_argument(
        "--hidden",
        type=non_negative_int,
        default=0,
        help="hidden width of an MLP adapter; 0 (default) for a linear adapter",
    )
    p.add_argument("--steps", type=positive_int, default=300, help="Adam steps (default 300)")
    p.add_argument("--batch-size", type=positive_int, default=1024, help="pairs per step")
    p.add_argument("--lr", type=_positive_float, default=1e-2, help="Adam learning rate (1e-2)")
    p.add_argument("--seed", type=int, default=0, help="seed of init and minibatches")
    p.add_argument("--key", metavar="COL", help="tensor key / Parquet column of EMB_A")
    p.add_argument("--key-b", metavar="COL", help="key of EMB_B if it differs from --key")
    p.add_argument(
        "--split-col", metavar="COL", help="split column (default 'split' if present; '' none)"
    )
    p.add_argument("--train-split", default="train", help="training value of the split column")
    p.add_argument(
        "--split-seed", type=int, default=0, help="seed of the subject split without a split column"
    )
    p.add_argument("--subject-col", metavar="COL", help="subject column (default 'subject_id')")
    p.add_argument("--time-col", metavar="COL", help="time column (default 'prediction_time')")
    p.add_argument(
        "--ridge",
        type=_positive_float,
        default=DEFAULT_RIDGE,
        help=f"relative whitening ridge, eps = ridge * tr(C) / d (whiten, and the "
        f"preconditioner of the trained adapters; default {DEFAULT_RIDGE:g})",
    )
    p.add_argument("--chunk-rows", type=positive_int, default=None, metavar="N")


def _add_apply(p: argparse.ArgumentParser) -> None:
    p.add_argument("adapter", metavar="ADAPTER", help="ADAPTER.safetensors written by fit")
    p.add_argument("emb", metavar="EMB", help=".npy, .parquet, .pt or .safetensors file")
    p.add_argument("--out", required=True, metavar="EMB2", help="output .parquet or .npy")
    p.add_argument("--key", metavar="COL", help="tensor key / Parquet column of EMB")
    p.add_argument("--chunk-rows", type=positive_int, default=None, metavar="N")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``densefeat densify fit ...`` and ``densefeat densify apply ...``."""
    sub = parser.add_subparsers(dest="densify_command", metavar="fit|apply", required=True)
    _add_fit(sub.add_parser("fit", help="fit an adapter on the training rows"))
    _add_apply(sub.add_parser("apply", help="apply an adapter to an embedding file"))


def _check_adapter_target(out: str) -> Path:
    p = Path(out)
    if p.suffix.lower() != ".safetensors":
        raise ValueError(f"--out {p}: the adapter file must end in .safetensors")
    if not p.parent.is_dir():
        raise ValueError(f"--out {p}: directory {p.parent} does not exist")
    return p


def run(args: argparse.Namespace) -> int:
    if args.densify_command == "apply":
        from ..densify.apply import apply_file

        info = apply_file(
            args.adapter, args.emb, args.out, key=args.key, chunk_rows=args.chunk_rows
        )
        print(
            f"densefeat densify apply: {info['n']} rows, {info['d_in']} -> {info['d_out']} "
            f"-> {info['out']}"
        )
        return 0
    from ..densify.adapter import save_adapter
    from ..densify.fit import fit_files

    out = _check_adapter_target(args.out)
    adapter = fit_files(
        args.emb_a,
        args.emb_b,
        key=args.key,
        key_b=args.key_b,
        subject_col=args.subject_col,
        time_col=args.time_col,
        split_col=args.split_col,
        train_split=args.train_split,
        split_seed=args.split_seed,
        chunk_rows=args.chunk_rows,
        method=args.method,
        dim=args.dim,
        hidden=args.hidden,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        ridge=args.ridge,
    )
    weights, config = save_adapter(adapter, out)
    c = adapter.config
    print(
        f"densefeat densify fit: {c['method']} {adapter.kind} adapter {adapter.d_in} -> "
        f"{adapter.d_out} on {c['n_train']} of {c['n_rows']} rows ({c['train_rows']}); "
        f"pairs: {c['pairs']} ({c['n_pairs']})"
    )
    if "loss_last" in c:
        print(f"  loss {c['loss_first']:.4f} -> {c['loss_last']:.4f} in {c['steps']} steps")
    print(f"  -> {weights} + {config}")
    return 0
