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
import shlex
from pathlib import Path
from typing import Any

from ..benchmark.config import ABLATIONS, DEFAULT_METHODS, DEFAULT_TRIALS, BenchmarkConfig
from ..train.config import parse_overrides
from .common import add_set_argument
from .common import names as _names

#: Modalities ``densefeat benchmark`` runs.
BENCHMARK_MODALITIES = ("ehr", "text", "multimodal")


def add_common(
    parser: argparse.ArgumentParser, *, seeds: int, budget: int, trials: int = DEFAULT_TRIALS
) -> None:
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
    parser.add_argument(
        "--trials",
        type=int,
        default=trials,
        help=f"random-search trials per trained method, chosen on the tuning split's macro "
        f"probe AUROC; trial 0 is the defaults, 1 disables tuning ({trials})",
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


def add_ablations_argument(parser: argparse.ArgumentParser, *, default: tuple[str, ...]) -> None:
    """``--ablations [A,B,...]``, the same on ``benchmark`` and ``demo`` (only the default
    differs): alone, every ablation; a comma-separated list, those; ``''``, none."""
    what = "every ablation" if default else "none"
    parser.add_argument(
        "--ablations",
        type=_names,
        nargs="?",
        const=tuple(ABLATIONS),
        default=default,
        metavar="A,B,...",
        help=f"ablations to train after the methods: alone, all of {','.join(ABLATIONS)}; "
        f"or a comma-separated list; '' for none (default: {what})",
    )


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
        choices=BENCHMARK_MODALITIES,
        help="ehr (default), text, or multimodal (codes + notes; with --set "
        "multimodal.groups=vitals=VITAL//,labs=LAB// code-group modalities)",
    )
    add_ablations_argument(parser, default=tuple(ABLATIONS))
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
    add_fanout_arguments(parser)


def add_fanout_arguments(parser: argparse.ArgumentParser) -> None:
    """``--workers``, ``--plan``, ``--only``: the runs in parallel, then a merge
    (:mod:`densefeat.benchmark.fanout`)."""
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="train and evaluate the runs in N local processes (one GPU each, round robin), "
        "then merge (1: one after another)",
    )
    parser.add_argument(
        "--plan",
        type=Path,
        default=None,
        metavar="JOBS.txt",
        help="write one command per run (each with --only) to this file and stop; run them "
        "anywhere that sees --out (e.g. a SLURM array), then this command without --plan merges",
    )
    parser.add_argument(
        "--only",
        type=_names,
        default=None,
        metavar="NAME/seedS,...",
        help="train and evaluate only these runs into --out (no results.json; a plain run merges)",
    )


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
        trials=args.trials,
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

    from ..report.terminal import terminal_summary

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
    if args.plan is not None or args.only is not None:
        return _fan_out(args, console, data, bench, options)
    res = run_with_progress(
        console, data, args.out, bench, labels=args.labels, workers=args.workers, **options
    )
    # The results on stdout (`densefeat benchmark ... > summary.txt`); progress went to stderr.
    print(terminal_summary(res, args.out, title=f"densefeat benchmark ({bench.scale} scale)"))
    return 0


def _fan_out(args: argparse.Namespace, console: Any, data: Any, bench, options: dict) -> int:
    """``--plan``: write the job list; ``--only``: run those runs (no merge)."""
    from ..benchmark import fanout
    from ..io.atomic import write_text_atomic

    say = console.print
    if args.plan is not None:
        if args.only is not None:
            raise ValueError("--plan and --only: choose one (--plan writes the --only commands)")
        keys = fanout.plan_keys(data, args.out, bench, labels=args.labels, say=say, **options)
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        merge = [
            "densefeat",
            "benchmark",
            *fanout.command_of(args, parser, {"plan", "only", "workers"}),
        ]
        lines = fanout.plan_commands(merge, keys)
        write_text_atomic(args.plan, "\n".join(lines) + "\n")
        console.print(
            f"{len(lines)} jobs -> {args.plan}; when they are done, merge with:\n"
            f"{shlex.join(merge)}"
        )
        return 0
    from rich.progress import Progress

    with Progress(console=console, transient=True) as progress:
        seconds = fanout.run_only(
            data, args.out, bench, args.only, labels=args.labels, say=say, progress=progress,
            **options,
        )  # fmt: skip
    console.print(", ".join(f"{k}: {s:.0f} s" for k, s in seconds.items()))
    return 0
