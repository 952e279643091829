"""``densefeat benchmark``: every method under one budget, evaluated, with a report.

Example::

    densefeat benchmark --data MEDS_DIR --out bench/            # 7 methods + 4 ablations, 3 seeds
    densefeat benchmark --data MEDS_DIR --labels a.parquet b.parquet --seeds 5 --budget 1000 \\
        --set max_len=256 --out bench/

Rerunning with the same ``--out`` resumes: finished runs and evaluations are reused when their
settings match, anything stale is redone (see :mod:`densefeat.benchmark.run`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .benchmark.config import ABLATIONS, DEFAULT_METHODS, BenchmarkConfig
from .train.config import parse_overrides


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def add_common(parser: argparse.ArgumentParser, *, seeds: int, budget: int) -> None:
    """Arguments shared by ``benchmark`` and ``demo`` (which only changes their defaults)."""
    parser.add_argument(
        "--labels",
        type=Path,
        nargs="+",
        default=None,
        help="MEDS label files, one binary task each (default: the dataset's own labels/ "
        "directory, else its built-in onset tasks)",
    )
    parser.add_argument(
        "--methods",
        type=_names,
        default=DEFAULT_METHODS,
        help=f"comma-separated methods (default {','.join(DEFAULT_METHODS)})",
    )
    parser.add_argument("--seeds", type=int, default=seeds, help=f"seeds per method ({seeds})")
    parser.add_argument(
        "--budget", type=int, default=budget, help=f"optimizer steps per run ({budget})"
    )
    parser.add_argument("--tasks", type=_names, default=None, help="only these tasks")
    parser.add_argument(
        "--supervised-task", default=None, help="the task supervised trains on (first task)"
    )
    parser.add_argument("--k", type=int, default=16, help="subspace dimension (16)")
    parser.add_argument(
        "--bootstrap", type=int, default=1000, help="patient-level bootstrap resamples (1000)"
    )
    parser.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"), help="training device"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a TrainConfig override for every run (repeatable), e.g. max_len=256",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=None, help="MEDS dataset (default: Eunomia)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--modality", default="ehr", help="ehr (text and multimodal are not benchmarked yet)"
    )
    parser.add_argument(
        "--ablations",
        type=_names,
        default=tuple(ABLATIONS),
        help=f"comma-separated ablations, '' for none (default {','.join(ABLATIONS)})",
    )
    parser.add_argument(
        "--max-eval-times",
        type=int,
        default=20_000,
        help="cap on evaluation prediction times; negatives subsampled above it (0: no cap)",
    )
    parser.add_argument(
        "--jitter-days", type=float, default=1.0, help="time-jitter scale (1 day; ICU: 0.0417)"
    )
    add_common(parser, seeds=3, budget=250)


def config_from_args(args: argparse.Namespace, **extra) -> BenchmarkConfig:
    """The BenchmarkConfig of parsed arguments."""
    if getattr(args, "modality", "ehr") != "ehr":
        raise ValueError(
            f"--modality {args.modality}: densefeat benchmark supports the ehr modality only yet"
        )
    overrides = parse_overrides(args.overrides)
    for key in ("method", "seed", "max_steps"):
        if key in overrides:
            raise ValueError(f"--set {key}=...: the benchmark sets {key} itself")
    return BenchmarkConfig(
        methods=args.methods,
        seeds=args.seeds,
        budget=args.budget,
        train=overrides,
        k=args.k,
        bootstrap=args.bootstrap,
        tasks=args.tasks,
        supervised_task=args.supervised_task,
        device=args.device,
        **extra,
    )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from .benchmark.run import run_benchmark

    bench = config_from_args(
        args,
        ablations=args.ablations,
        max_eval_times=args.max_eval_times,
        jitter_days=args.jitter_days,
    )
    data = args.data
    if data is None:
        from .data.eunomia import eunomia_meds

        data = eunomia_meds()
    console = Console(stderr=True)
    with Progress(console=console, transient=True) as progress:
        res = run_benchmark(
            data,
            args.out,
            bench,
            labels=args.labels,
            say=lambda text: console.print(text),
            progress=progress,
        )
    console.print(
        f"report: {args.out / 'report.html'} (table: {args.out / 'results.md'}, "
        f"{res['seconds']:.0f} s)"
    )
    return 0
