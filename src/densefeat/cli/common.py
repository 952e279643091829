"""Argument types and helpers shared by the commands."""

from __future__ import annotations

import argparse

__all__ = ["add_set_argument", "names", "non_negative_int", "positive_int"]


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def names(text: str) -> tuple[str, ...]:
    """An argparse type: a comma-separated list of names (``''`` for none)."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


def add_set_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--set SECTION.KEY=VALUE`` (repeatable) into ``args.overrides``: a training setting
    (:mod:`densefeat.train.config`; today's flat keys are aliases)."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"{what} (repeatable), e.g. data.max_len=256 or dense.w_sub=0",
    )
