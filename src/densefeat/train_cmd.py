"""``densefeat train``: train an encoder with one method of :data:`densefeat.methods.METHODS`.

Example::

    densefeat train --data MEDS_DIR --modality ehr --method dense --out runs/dense
    densefeat train ... --method dense --set w_sub=0 --out runs/dense-no-sub   # ablation
    densefeat train --data MEDS_DIR --out runs/dense --resume --max-steps 300   # continue

Without ``--data`` the default dataset (Eunomia GiBleed as MEDS, converted once and cached) is
used. The run directory holds the resolved config, the fitted vocabulary, ``stats.jsonl`` and
atomic checkpoints (see :mod:`densefeat.train.checkpoint`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .methods import METHODS
from .train.config import MODALITIES, TrainConfig, parse_overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="MEDS dataset directory (default: the built-in Eunomia GiBleed)",
    )
    parser.add_argument(
        "--modality",
        default="ehr",
        help=f"one of {', '.join(MODALITIES)} (only ehr is supported yet)",
    )
    parser.add_argument(
        "--method", default="dense", help=f"one of {', '.join(METHODS)} (default dense)"
    )
    parser.add_argument("--out", type=Path, required=True, help="run directory to create")
    parser.add_argument("--config", type=Path, default=None, help="JSON file of TrainConfig keys")
    parser.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="MEDS labels (boolean_value); required by --method supervised",
    )
    parser.add_argument("--max-steps", type=int, default=None, help="optimizer steps")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its latest checkpoint"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults < ``--config`` < ``--modality/--method/--max-steps`` < ``--set``."""
    overrides = {"modality": args.modality, "method": args.method}
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
    if args.no_progress:
        overrides["progress"] = False
    overrides.update(parse_overrides(args.overrides))
    if args.config is not None:
        if not args.config.is_file():
            raise FileNotFoundError(f"{args.config}: no such config file")
        return TrainConfig.from_file(args.config, **overrides)
    return TrainConfig.from_dict(overrides)


def run(args: argparse.Namespace) -> int:
    from .methods import get_method
    from .train.loop import train

    cfg = resolve_config(args)
    get_method(cfg.method)  # fail on an unknown method before reading any data
    if cfg.modality != "ehr":
        raise ValueError(
            f"modality {cfg.modality!r} is not yet supported by densefeat train (only 'ehr')"
        )
    data = args.data
    if data is None:
        from .data.eunomia import eunomia_meds

        data = eunomia_meds()
    ckpt = train(cfg, data, args.out, args.labels, resume=args.resume)
    print(f"densefeat train: {cfg.method} run in {args.out} (checkpoint {ckpt.name})")
    return 0
