"""``densefeat benchmark``: every method under one budget, evaluated, with a report.

Example::

    densefeat benchmark --data MEDS_DIR --out bench/            # 7 methods + 4 ablations, 3 seeds
    densefeat benchmark --data MEDS_DIR --labels a.parquet b.parquet --seeds 5 --budget 1000 \\
        --set data.max_len=256 --out bench/
    densefeat benchmark --modality text --data mtsamples.csv.xz --out bench-text/   # notes

``--modality text`` benchmarks the text encoders on a note table (MTSamples or a generic table
with boolean label columns) or a MEDS directory's notes; see
:mod:`densefeat.benchmark.sources.text`. One orchestrator runs both
(:func:`densefeat.benchmark.run.run_benchmark`).

Rerunning with the same ``--out`` resumes: finished runs and evaluations are reused when their
settings match, anything stale is redone (see :mod:`densefeat.benchmark.run`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..benchmark.config import ABLATIONS, DEFAULT_METHODS, BenchmarkConfig
from ..train.config import parse_overrides
from .common import add_set_argument
from .common import names as _names

#: Modalities ``densefeat benchmark`` runs.
BENCHMARK_MODALITIES = ("ehr", "text")


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
        "--probe-folds",
        type=int,
        default=5,
        help="K of the subject-grouped cross-fitting used for a task with < 10 held-out "
        "positives or < 20 held-out subjects (5; 0: never cross-fit)",
    )
    parser.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"), help="training device"
    )
    add_set_argument(parser, "a training setting for every run")


def add_text_arguments(parser: argparse.ArgumentParser) -> None:
    """Task selection and baselines of the text benchmark (``benchmark --modality text``)."""
    # The text source's defaults without importing it (argument parsing stays light).
    MIN_TASK_POSITIVES, TEXT_BASELINES = 10, ("tfidf", "minilm_frozen")

    parser.add_argument(
        "--min-positives",
        type=int,
        default=MIN_TASK_POSITIVES,
        help="text: fewest positives (and negatives) per split for a label to be a task "
        f"({MIN_TASK_POSITIVES})",
    )
    parser.add_argument(
        "--max-tasks",
        type=int,
        default=0,
        help="text: keep the tasks with the most positives (0: every eligible label)",
    )
    parser.add_argument(
        "--baselines",
        type=_names,
        default=TEXT_BASELINES,
        help=f"text: probe-only baselines, '' for none (default {','.join(TEXT_BASELINES)})",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="MEDS dataset (default: Eunomia); --modality text: a note table (MTSamples or a "
        "table with boolean label columns) or a MEDS directory with notes (required)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--modality",
        default="ehr",
        help="ehr (default) or text (multimodal is not benchmarked yet)",
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
        help="cap on evaluation prediction times; negatives subsampled above it (0: no cap); "
        "text: cap on the notes embedded (training notes subsampled above it)",
    )
    parser.add_argument(
        "--jitter-days",
        type=float,
        default=None,
        help="time-jitter scale in days (default: 1 hour for PhysioNet 2019 data, else 1 day)",
    )
    parser.add_argument(
        "--external",
        type=Path,
        default=None,
        metavar="SITE_B",
        help="external validation: a second site's MEDS directory, embedded with each run's "
        "own vocabulary and normalisation; per task the probe fitted here is tested on all of "
        "its rows beside its own cross-fitted probe",
    )
    parser.add_argument(
        "--external-labels",
        type=Path,
        nargs="+",
        default=None,
        help="label files of --external (default: its labels/ directory, else built-in tasks)",
    )
    add_text_arguments(parser)
    add_common(parser, seeds=3, budget=250)


def config_from_args(args: argparse.Namespace, **extra) -> BenchmarkConfig:
    """The BenchmarkConfig of parsed arguments."""
    modality = getattr(args, "modality", "ehr")
    if modality not in BENCHMARK_MODALITIES:
        raise ValueError(
            f"--modality {modality}: densefeat benchmark supports {', '.join(BENCHMARK_MODALITIES)}"
        )
    if modality == "text" and getattr(args, "labels", None):
        raise ValueError(
            "--labels is for MEDS label files (ehr); text tasks are label columns of the note "
            "table (MTSamples: its specialties), chosen with --tasks / --max-tasks"
        )
    overrides = parse_overrides(args.overrides)
    for key in ("method", "seed", "max_steps"):
        if key in overrides:
            raise ValueError(f"--set {key}=...: the benchmark sets {key} itself")
    return BenchmarkConfig(
        modality=modality,
        methods=args.methods,
        seeds=args.seeds,
        budget=args.budget,
        train=overrides,
        k=args.k,
        bootstrap=args.bootstrap,
        probe_folds=getattr(args, "probe_folds", 5),
        tasks=args.tasks,
        supervised_task=args.supervised_task,
        device=args.device,
        **extra,
    )


def run_with_progress(console: Any, data: Any, out: Path, bench: BenchmarkConfig, **kwargs: Any):
    """:func:`~densefeat.benchmark.run.run_benchmark` with its progress bars and messages on
    ``console`` (stderr); returns the results."""
    from rich.progress import Progress

    from ..benchmark.run import run_benchmark

    with Progress(console=console, transient=True) as progress:
        return run_benchmark(
            data, out, bench, say=lambda line: console.print(line), progress=progress, **kwargs
        )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    text = args.modality == "text"
    bench = config_from_args(
        args,
        ablations=args.ablations,
        max_eval_times=args.max_eval_times,
        jitter_days=args.jitter_days,
    )
    data = args.data
    options = {}
    if text:
        if data is None:
            raise ValueError(
                "--modality text needs --data NOTES (a note table or a MEDS directory)"
            )
        if not data.exists():
            raise FileNotFoundError(f"--data {data}: no such note table or MEDS directory")
        options = {
            "min_positives": args.min_positives,
            "max_tasks": args.max_tasks,
            "baselines": args.baselines,
        }
    elif data is None:
        from ..data.convert.eunomia import eunomia_meds

        data = eunomia_meds()
    console = Console(stderr=True)
    if args.external is not None:
        if text:
            raise ValueError("--external is for EHR benchmarks (MEDS directories)")
        if not args.external.is_dir():
            raise FileNotFoundError(f"--external {args.external}: no such MEDS directory")
        options["external"] = args.external
        options["external_labels"] = args.external_labels
    res = run_with_progress(console, data, args.out, bench, labels=args.labels, **options)
    console.print(
        f"report: {args.out / 'report.html'} (table: {args.out / 'results.md'}, "
        f"{res['seconds']:.0f} s)"
    )
    return 0
