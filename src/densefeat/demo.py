"""``densefeat demo``: the benchmark at smoke scale on the default dataset (Eunomia GiBleed).

With no arguments it runs, on the built-in data with no download: every method (dense,
SimCLR, VICReg, Barlow Twins, masked-event prediction, supervised, the untrained encoder) and
the count-features baseline, 1 seed, a small fixed budget, on the three Eunomia onset tasks with
the most positives; then geometry, linear probes (full data and k-shot), robustness, temporal
stability, and the report. It is the same code as ``densefeat benchmark`` with smaller
settings, and the report says it is smoke scale: one seed and a short budget rank methods
noisily. ``--seeds``, ``--budget``, ``--data`` and ``--ablations`` scale it into the benchmark.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .benchmark_cmd import add_common, config_from_args

#: Smoke-scale settings (chosen for wall time on a 2-core CPU, not for the results).
SMOKE_BUDGET = 60
SMOKE_TRAIN = {"max_len": 32, "warmup_steps": 6, "monitor_every": 10, "checkpoint_every": 60}
SMOKE_MAX_EVAL_TIMES = 6000
#: The Eunomia tasks with the most positives (~400 to ~650 training positives each).
SMOKE_TASKS = ("peptic_ulcer", "gastrointestinal_hemorrhage", "ulcerative_colitis")


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
    parser.add_argument(
        "--ablations",
        action="store_true",
        help="also train the ablations (each dense term off; VICReg without invariance)",
    )
    add_common(parser, seeds=1, budget=SMOKE_BUDGET)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from .benchmark.config import ABLATIONS
    from .benchmark.run import run_benchmark
    from .train.config import parse_overrides

    user = parse_overrides(args.overrides)
    args.overrides = [f"{k}={v}" for k, v in {**SMOKE_TRAIN, **user}.items()]
    if args.tasks is None and args.data is None and args.labels is None:
        args.tasks = SMOKE_TASKS
    smoke = args.seeds < 3 or args.budget < 250
    bench = config_from_args(
        args,
        ablations=tuple(ABLATIONS) if args.ablations else (),
        max_eval_times=SMOKE_MAX_EVAL_TIMES,
        scale="smoke" if smoke else "full",
    )
    console = Console(stderr=True)
    if args.data is None:
        from .data.eunomia import eunomia_meds

        data, name = eunomia_meds(), "Eunomia GiBleed (built-in)"
    else:
        data, name = args.data, str(args.data)
    console.print(
        f"[bold]densefeat demo[/] — {'smoke' if smoke else 'full'} scale: {name}, "
        f"{len(bench.runs())} runs of {bench.budget} steps, {bench.seeds} seed(s)"
    )
    with Progress(console=console, transient=True) as progress:
        res = run_benchmark(
            data,
            args.out,
            bench,
            labels=args.labels,
            dataset_name=name,
            say=lambda text: console.print(text),
            progress=progress,
        )
    console.print((args.out / "results.md").read_text())
    console.print(f"report: {(args.out / 'report.html').resolve()} ({res['seconds']:.0f} s)")
    return 0
