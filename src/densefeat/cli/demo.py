"""``densefeat demo``: the benchmark at smoke scale on the default dataset (Eunomia GiBleed).

With no arguments it runs, on the built-in data with no download: every method (dense,
SimCLR, VICReg, Barlow Twins, masked-event prediction, supervised, the untrained encoder) and
the count-features baseline, 1 seed, a small fixed budget, on the three Eunomia onset tasks with
the most positives; then geometry, linear probes (full data and k-shot), robustness, temporal
stability, and the report. It is the same code as ``densefeat benchmark`` with smaller
settings, and the report says it is smoke scale: one seed and a short budget rank methods
noisily. ``--seeds``, ``--budget``, ``--data`` and ``--ablations`` scale it into the benchmark.

With ``--notes PATH`` (MTSamples or a note table with boolean label columns; never shipped with
densefeat), the demo then also runs the text benchmark at smoke scale into ``OUT/text/``
(:mod:`densefeat.benchmark.sources.text`): the same methods on the small text encoder, the
TF-IDF and frozen all-MiniLM-L6-v2 baselines, on the 5 labels (MTSamples: specialties) with the most
positives, at least 10 in every split. ``--methods``, ``--seeds``, ``--budget``, ``--set`` and
``--ablations`` apply to both parts; ``--data``, ``--labels``, ``--tasks`` and
``--supervised-task`` to the EHR part only (``--text-tasks`` picks the text labels).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .benchmark import add_ablations_argument, add_common, config_from_args, run_with_progress

#: Smoke-scale settings (chosen for wall time on a 2-core CPU, not for the results).
SMOKE_BUDGET = 60
SMOKE_TRAIN = {"max_len": 32, "warmup_steps": 6, "monitor_every": 10, "checkpoint_every": 60}
SMOKE_MAX_EVAL_TIMES = 6000
#: The Eunomia tasks with the most positives (~400 to ~650 training positives each).
SMOKE_TASKS = ("peptic_ulcer", "gastrointestinal_hemorrhage", "ulcerative_colitis")
#: Smoke-scale text settings (``--notes``), chosen for wall time on a 2-core CPU, not for the
#: results: the small encoder (d_model 128 as for EHR) reading the first 64 tokens of each note
#: (one chunk), batch 64, 20 steps; the frozen MiniLM baseline reads the same 64 tokens.
SMOKE_TEXT_BUDGET = 20
SMOKE_TEXT_TRAIN = {
    "text_encoder": "small",
    "text_max_tokens": 64,
    "text_max_chunks": 1,
    "batch_size": 64,
    "warmup_steps": 4,
    "monitor_every": 10,
    "monitor_size": 256,
    "checkpoint_every": 20,
}
#: The text tasks: the labels with the most positives, at least this many in every split.
SMOKE_TEXT_MAX_TASKS = 5
SMOKE_TEXT_MIN_POSITIVES = 10


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
    add_ablations_argument(parser, default=())
    parser.add_argument(
        "--notes",
        type=Path,
        default=None,
        help="also run the text benchmark at smoke scale on these notes (MTSamples or a note "
        "table with boolean label columns) into OUT/text/, after the EHR part "
        f"({SMOKE_TEXT_BUDGET} steps unless --budget is given)",
    )
    parser.add_argument(
        "--text-tasks",
        type=lambda text: tuple(x.strip() for x in text.split(",") if x.strip()),
        default=None,
        help=f"with --notes: these labels as tasks (default: the {SMOKE_TEXT_MAX_TASKS} with the "
        f"most positives, >= {SMOKE_TEXT_MIN_POSITIVES} in every split)",
    )
    # trials=1: the demo runs every method at its defaults (no tuning) to stay short.
    add_common(parser, seeds=1, budget=SMOKE_BUDGET, trials=1)
    # None: each part's smoke budget (EHR SMOKE_BUDGET, text SMOKE_TEXT_BUDGET).
    parser.set_defaults(budget=None)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..report.terminal import terminal_summary
    from ..train.config import parse_overrides

    user = parse_overrides(args.overrides)
    user_budget = args.budget
    args.budget = SMOKE_BUDGET if user_budget is None else user_budget
    text_bench = None
    if args.notes is not None:
        text_bench = _text_config(args, user, user_budget)  # checked before the EHR part runs
    args.overrides = [f"{k}={v}" for k, v in {**SMOKE_TRAIN, **user}.items()]
    if args.tasks is None and args.data is None and args.labels is None:
        args.tasks = SMOKE_TASKS
    smoke = args.seeds < 3 or args.budget < 250
    bench = config_from_args(
        args,
        ablations=args.ablations,
        max_eval_times=SMOKE_MAX_EVAL_TIMES,
        scale="smoke" if smoke else "full",
    )
    console = Console(stderr=True)
    if args.data is None:
        from ..data.convert.eunomia import eunomia_meds

        data, name = eunomia_meds(), "Eunomia GiBleed (built-in)"
    else:
        data, name = args.data, str(args.data)
    console.print(
        f"[bold]densefeat demo[/] — {'smoke' if smoke else 'full'} scale: {name}, "
        f"{len(bench.runs())} runs of {bench.budget} steps, {bench.seeds} seed(s)"
    )
    if text_bench is not None:
        console.print(
            f"then the text benchmark ({text_bench.scale} scale) on {args.notes}: "
            f"{len(text_bench.runs())} runs of {text_bench.budget} steps, into "
            f"{args.out / 'text'}"
        )
    res = run_with_progress(console, data, args.out, bench, labels=args.labels, dataset_name=name)
    # The results on stdout (`densefeat demo > summary.txt`); progress went to stderr.
    print(terminal_summary(res, args.out, title=f"densefeat demo ({bench.scale} scale)"))
    if text_bench is not None:
        _run_text(args, text_bench, console)
    return 0


def _text_config(args: argparse.Namespace, user: dict, user_budget: int | None):
    """The smoke-scale text BenchmarkConfig of the demo's arguments (validated)."""
    from ..benchmark.config import BenchmarkConfig
    from ..benchmark.sources.text import TEXT_GRID

    if not args.notes.exists():
        raise FileNotFoundError(f"--notes {args.notes}: no such note table")
    for key in ("method", "seed", "max_steps"):
        if key in user:
            raise ValueError(f"--set {key}=...: the benchmark sets {key} itself")
    budget = SMOKE_TEXT_BUDGET if user_budget is None else user_budget
    smoke = args.seeds < 3 or budget < 250
    return BenchmarkConfig(
        methods=args.methods,
        ablations=args.ablations,
        seeds=args.seeds,
        budget=budget,
        train={**SMOKE_TEXT_TRAIN, **user},
        k=args.k,
        bootstrap=args.bootstrap,
        tasks=args.text_tasks,
        perturbations=TEXT_GRID,
        device=args.device,
        scale="smoke" if smoke else "full",
        modality="text",
        trials=args.trials,
    )


def _run_text(args: argparse.Namespace, bench, console) -> None:
    from ..report.terminal import terminal_summary

    out = args.out / "text"
    console.print(
        f"[bold]densefeat demo, text part[/] — {bench.scale} scale: {args.notes} into {out}"
    )
    res = run_with_progress(
        console,
        args.notes,
        out,
        bench,
        min_positives=SMOKE_TEXT_MIN_POSITIVES,
        max_tasks=0 if args.text_tasks else SMOKE_TEXT_MAX_TASKS,
    )
    print(terminal_summary(res, out, title=f"densefeat demo, text part ({bench.scale} scale)"))
