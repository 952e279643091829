"""The ``densefeat`` command line.

Each subcommand lives in its own module of this package exposing ``add_arguments(parser)`` and
``run(args) -> int``, and stays thin: parse, call the library, print. This file only wires them
up and turns user errors into a clear message and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from importlib import import_module

from .. import __version__

#: subcommand -> (module, one-line help). Modules are imported lazily: `densefeat --help`
#: should not pay for torch.
SUBCOMMANDS = {
    "analyze": ("densefeat.cli.analyze", "geometry diagnostics of embedding files"),
    "benchmark": ("densefeat.cli.benchmark", "train every method, evaluate, write the report"),
    "convert": ("densefeat.cli.convert", "convert OMOP, FHIR or the default dataset to MEDS"),
    "densify": ("densefeat.cli.densify", "fit / apply a dense-feature adapter to embeddings"),
    "demo": ("densefeat.cli.demo", "run the built-in demonstration on the default data"),
    "embed": ("densefeat.cli.embed", "embed a MEDS dataset with a trained run's encoder"),
    "probe": ("densefeat.cli.probe", "linear-probe AUROC/AUPRC of embeddings on labels"),
    "tasks": ("densefeat.cli.tasks", "build and describe the task labels of a MEDS dataset"),
    "train": ("densefeat.cli.train", "train an encoder with a dense or baseline method"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="densefeat",
        description="Dense feature learning and embedding geometry for medical data.",
    )
    parser.add_argument("--version", action="version", version=f"densefeat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        # Arguments are added by the module itself, on demand (see main()).
    return parser


#: 1-minute load average from which the machine counts as busy (another process holds a core).
BUSY_LOAD = 0.5


def omp_wait_policy(environ: Mapping[str, str], load1: float | None) -> str | None:
    """The ``OMP_WAIT_POLICY`` to set for this process, or None to leave it alone.

    By default idle OpenMP threads spin before they sleep. When another process holds a core,
    a spinning team waits for its descheduled member and burns the cores it shares: a 30-step
    ``densefeat train`` beside one CPU-bound process took 22.5-39.6 s and 26-43 CPU s, and
    14.1-14.7 s and 14-15 CPU s with ``PASSIVE`` (2 cores, ``benchmarks/wait_policy.sh``).
    On idle cores ``PASSIVE`` costs ~7% wall (10.5 s against 9.8 s), so it is chosen only when
    the machine is busy at start. The policy never changes a result, only how threads wait.
    A user's own ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` always wins.
    """
    if any(k in environ for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")):
        return None
    if load1 is None or load1 < BUSY_LOAD:
        return None
    return "PASSIVE"


def _set_wait_policy() -> None:
    # The OpenMP runtime reads the variable once, when torch loads it: too late after that.
    if "torch" in sys.modules or not hasattr(os, "getloadavg"):
        return
    policy = omp_wait_policy(os.environ, os.getloadavg()[0])
    if policy is not None:
        os.environ["OMP_WAIT_POLICY"] = policy


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _set_wait_policy()
    parser = build_parser()
    # Parse the subcommand name first, then let its module declare its arguments.
    if argv and argv[0] in SUBCOMMANDS:
        module = import_module(SUBCOMMANDS[argv[0]][0])
        sub_parser = parser._subparsers._group_actions[0].choices[argv[0]]  # type: ignore[union-attr]
        module.add_arguments(sub_parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a usage error (2, message printed) or --help/--version (0)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 2
    module = import_module(args._module)
    rank = _launch_rank()
    if rank:
        # Under torchrun every rank runs this same command on the same data: the other ranks'
        # warnings repeat rank 0's, so rank 0 alone speaks (its errors are every rank's too).
        warnings.simplefilter("ignore")
    try:
        return int(module.run(args) or 0)
    except (ValueError, FileNotFoundError, IsADirectoryError, PermissionError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        if not rank:
            print(f"densefeat {args.command}: error: {msg}", file=sys.stderr)
        return 2


def _launch_rank() -> int:
    """This process's rank under torchrun (its ``RANK`` variable), 0 outside it."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
