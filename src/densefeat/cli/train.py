"""``densefeat train``: train an encoder with one method of :data:`densefeat.methods.METHODS`.

Example::

    densefeat train --data MEDS_DIR --modality ehr --method dense --out runs/dense
    densefeat train ... --method dense --set dense.w_sub=0 --out runs/dense-no-sub   # ablation
    densefeat train --data MEDS_DIR --out runs/dense --resume --max-steps 300   # continue
    densefeat train --data mtsamples.csv.xz --modality text --method simclr --out runs/txt
    densefeat train --data FHIR_MEDS --modality multimodal --method dense --out runs/mm

``--data`` per modality: ``ehr`` and ``multimodal`` read a MEDS directory (``ehr`` defaults to
the built-in Eunomia GiBleed, converted once and cached; it has no notes, so ``multimodal``
needs ``--data``); ``text`` reads a MEDS directory's notes, an MTSamples file or a note table
(the rule is in :mod:`densefeat.data.text.corpus`). The run directory holds the resolved
config, the fitted vocabulary (ehr, multimodal), ``stats.jsonl`` and atomic checkpoints (see
:mod:`densefeat.train.checkpoint`).

``--epochs E`` sets the number of steps to ``E x (training rows // batch_size)`` once the rows
are known; it excludes ``--max-steps`` (and a ``max_steps`` in ``--config`` or ``--set``).
``--resume`` without either keeps the run's own number of steps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..choices import METHOD_NAMES
from ..train.config import MODALITIES, TrainConfig, parse_overrides
from .common import add_set_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="MEDS directory (ehr, multimodal; ehr defaults to the built-in Eunomia GiBleed), "
        "or for text a MEDS directory, an MTSamples file or a note table (.csv/.parquet)",
    )
    parser.add_argument(
        "--modality",
        default=None,
        choices=tuple(MODALITIES),
        help="the data's modality (default ehr; --resume: the run's own)",
    )
    parser.add_argument(
        "--method", default="dense", choices=METHOD_NAMES, help="training method (default dense)"
    )
    parser.add_argument("--out", type=Path, required=True, help="run directory to create")
    parser.add_argument("--config", type=Path, default=None, help="JSON file of TrainConfig keys")
    parser.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="MEDS labels (boolean_value); required by --method supervised on ehr/multimodal "
        "(text labels are note-table columns: --set text.labels=COL)",
    )
    parser.add_argument("--max-steps", type=int, default=None, help="optimizer steps")
    parser.add_argument(
        "--epochs",
        type=float,
        default=None,
        help="passes over the training rows (steps = epochs x rows // batch size); "
        "excludes --max-steps",
    )
    add_set_argument(parser, "a training setting")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its latest checkpoint"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _saved_train_config(run_dir: Path) -> dict:
    from ..train.checkpoint import read_run_config

    return read_run_config(run_dir)["train"]


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults < ``--config`` < ``--modality/--method/--max-steps/--epochs`` < ``--set``.

    Raises:
        ValueError: ``--epochs`` together with ``--max-steps`` (or a ``max_steps`` key), an
            unknown key or a bad value.
    """
    modality = getattr(args, "modality", None)
    saved = None
    if getattr(args, "resume", False):
        saved = _saved_train_config(args.out)
        modality = modality or saved.get("modality", "ehr")
    overrides = {"modality": modality or "ehr", "method": args.method}
    if saved is not None:
        overrides["method"] = saved["method"]  # the run's own; --method cannot change it
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
    epochs = getattr(args, "epochs", None)
    if epochs is not None:
        overrides["epochs"] = epochs
    if args.no_progress:
        overrides["progress"] = False
    sets = parse_overrides(args.overrides)
    overrides.update(sets)
    file_keys: dict = {}
    if args.config is not None:
        if not args.config.is_file():
            raise FileNotFoundError(f"{args.config}: no such config file")
        try:
            file_keys = json.loads(args.config.read_text())
        except json.JSONDecodeError:
            file_keys = {}  # TrainConfig.from_file reports it
        cfg = TrainConfig.from_file(args.config, **overrides)
    else:
        cfg = TrainConfig.from_dict(overrides)
    explicit_steps = (
        args.max_steps is not None
        or "max_steps" in sets
        or (isinstance(file_keys, dict) and "max_steps" in file_keys)
    )
    if cfg.epochs is not None and explicit_steps:
        raise ValueError(
            "--epochs and --max-steps are exclusive (a max_steps key in --config/--set counts "
            "as --max-steps): give one of them"
        )
    if saved is not None and cfg.epochs is None and not explicit_steps:
        cfg = cfg.replace(max_steps=saved["max_steps"])  # continue to the run's own end
    return cfg


def run(args: argparse.Namespace) -> int:
    from ..methods import get_method
    from ..train import train

    cfg = resolve_config(args)
    get_method(cfg.method)  # fail on an unknown method before reading any data
    data = args.data
    if data is None:
        if cfg.modality != "ehr":
            raise ValueError(
                f"--modality {cfg.modality} needs --data (the built-in default dataset, Eunomia "
                "GiBleed, has no notes)"
            )
        from ..data.convert.eunomia import eunomia_meds

        data = eunomia_meds()
    ckpt = train(cfg, data, args.out, args.labels, resume=args.resume)
    if ckpt is not None:  # rank 0 only: under torchrun the other ranks write and print nothing
        print(
            f"densefeat train: {cfg.modality} {cfg.method} run in {args.out} "
            f"(checkpoint {ckpt.name})"
        )
    return 0
