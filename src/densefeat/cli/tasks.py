"""``densefeat tasks``: build the built-in task labels of a MEDS dataset, or describe yours.

    densefeat tasks [DIR | --default] [--out LABELS_DIR] [--rule yearly|sampled] [--seed S]
    densefeat tasks [DIR | --default] --labels FILE_OR_DIR

The first form builds the dataset's built-in tasks (the default dataset, Eunomia GiBleed, has
them; any other dataset is told so and pointed to ``--labels``), writes one MEDS label parquet
per task into LABELS_DIR (default: ``<cache>/labels/<dataset dir>-<rule>[-seed<S>]``), and prints
each task's definition and counts per split. The second validates user labels (e.g. ACES output)
against the dataset and prints their counts per split. Rules: :mod:`densefeat.data.tasks`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

    from ..data.meds import MedsDataset
    from ..data.tasks import TaskBuild

__all__ = ["add_arguments", "run"]

_RULES = {
    "prevalent": "excluded: an outcome code at or before the prediction time (or a static one)",
    "censored": "excluded: no outcome and observed < horizon after the prediction time "
    "(observation end: MEDS_OBSERVATION_END, else the last event)",
    "positive": "first outcome in (prediction time, prediction time + horizon], kept even if "
    "observation ends soon after it",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``densefeat tasks``."""
    parser.add_argument(
        "dir", type=Path, nargs="?", default=None, help="MEDS dataset directory (default: Eunomia)"
    )
    parser.add_argument(
        "--default", action="store_true", help="use the built-in Eunomia GiBleed dataset"
    )
    parser.add_argument("--out", type=Path, default=None, help="directory for the label files")
    parser.add_argument(
        "--rule",
        choices=("yearly", "sampled"),
        default="yearly",
        help="prediction times: every observation anniversary (default) or one sampled per subject",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --rule sampled")
    parser.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="describe these MEDS label parquet files (a file or a directory) instead",
    )


def _dataset_dir(args: argparse.Namespace) -> Path:
    if args.dir is not None and args.default:
        raise ValueError("give either DIR or --default, not both")
    if args.dir is None:
        from ..data.convert.eunomia import eunomia_meds

        return eunomia_meds()
    if not args.dir.is_dir():
        raise FileNotFoundError(f"no MEDS dataset directory at {args.dir}")
    return args.dir


def _default_out(root: Path, args: argparse.Namespace) -> Path:
    from ..data.convert.eunomia import cache_root

    tag = f"{root.name}-{args.rule}" + (f"-seed{args.seed}" if args.rule == "sampled" else "")
    return cache_root() / "labels" / tag


def run(args: argparse.Namespace) -> int:
    """Run ``densefeat tasks``; user errors raise ValueError/FileNotFoundError (exit 2)."""
    from rich.console import Console

    from ..data.meds import read_meds_dataset

    # Piped or captured output gets rich's 80 columns by default, too narrow for the count
    # tables (they would be squeezed into ellipses): use 120 there.
    console = Console() if sys.stdout.isatty() else Console(width=120)
    root = _dataset_dir(args)
    dataset = read_meds_dataset(root)
    if args.labels is not None:
        _describe(dataset, args.labels, console)
        return 0
    from ..data.tasks import build_task_labels, builtin_tasks

    tasks = builtin_tasks(dataset)  # a clear ValueError when the dataset has none
    out = args.out if args.out is not None else _default_out(root, args)
    build = build_task_labels(dataset, tasks, out_dir=out, rule=args.rule, seed=args.seed)
    _print_build(dataset, build, out, console)
    return 0


def _describe(dataset: MedsDataset, path: Path, console: Any) -> None:
    from ..data.meds import read_labels
    from ..data.tasks import describe_labels

    labels = read_labels(path, dataset=dataset)
    counts = describe_labels(labels, dataset.splits)
    console.print(
        f"{path}: {labels.height:,} labels of {labels['subject_id'].n_unique():,} subjects, "
        f"valid for {dataset.root}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    console.print(_counts_table(counts, title="labels per split"))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _counts_table(counts: pl.DataFrame, title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for name, dtype in counts.schema.items():
        # Names (split, task) read left to right; numbers line up on the right.
        justify = "right" if dtype.is_numeric() else "left"
        table.add_column(name, justify=justify, no_wrap=True)
    for row in counts.iter_rows():
        table.add_row(*(_fmt(v) for v in row))
    return table


def _describe_codes(codes: tuple[str, ...], dataset: MedsDataset) -> str:
    import polars as pl

    known = dataset.codes.filter(pl.col("code").is_in(codes))
    names = dict(zip(known["code"].to_list(), known["description"].to_list(), strict=True))
    return "; ".join(f"{c} ({names.get(c) or 'no description'})" for c in codes)


def _print_build(dataset: MedsDataset, build: TaskBuild, out: Path, console: Any) -> None:
    import polars as pl

    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    rule = (
        "every anniversary of the observation start"
        if build.rule == "yearly"
        else f"one per subject, sampled with seed {build.seed}"
    )
    days = "date-only data: outcome windows start the next day" if build.date_only else "timed"
    say(f"dataset {dataset.root} ({dataset.metadata.get('dataset_name', 'unnamed')})")
    say(
        f"prediction times: {build.times.height:,} ({rule}; at least {build.min_history_days} "
        f"days of observed history; at the end of their day, {days}); "
        f"{build.subjects_without_time:,} of {build.subjects:,} subjects have none"
    )
    for name, text in _RULES.items():
        say(f"  {name}: {text}")
    summary = []
    for built in build.tasks:
        task = built.task
        say("")
        say(f"task {task.name}: {task.description} (horizon {task.horizon_days} days)")
        say(f"  outcome codes: {_describe_codes(task.outcome_codes, dataset)}")
        say(f"  labels: {built.path}")
        console.print(_counts_table(built.counts, title=task.name))
        total = built.counts.filter(pl.col("split") == "total").row(0, named=True)
        summary.append(
            {
                "task": task.name,
                "labels": total["labels"],
                "positives": total["positives"],
                "prevalent": total["prevalent"],
                "censored": total["censored"],
            }
        )
    console.print(_counts_table(pl.DataFrame(summary), title=f"all tasks (written to {out})"))
