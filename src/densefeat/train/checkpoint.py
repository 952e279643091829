"""Atomic checkpoints: safetensors weights + resolved config JSON + optimizer/RNG/step state.

Layout of a run directory::

    RUN/config.json                  resolved TrainConfig (+ encoder config), written at start
    RUN/history.json                 the fitted HistoryBuilder (vocabulary, normaliser)
    RUN/stats.jsonl                  one JSON object per logged step
    RUN/checkpoints/step-0000150/    model.safetensors, config.json, state.pt
    RUN/checkpoints/latest           the name of the newest complete checkpoint directory

Atomicity: a checkpoint directory is written under a temporary name and renamed into place
(``os.replace``: atomic on POSIX), then the ``latest`` pointer is replaced the same way (temp
file + ``os.replace``), and only then is the previous checkpoint deleted. A run killed at any
point therefore leaves ``latest`` naming either the previous or the new checkpoint, both
complete. ``state.pt`` holds only tensors, numbers, strings and containers of them, so it loads
with ``torch.load(weights_only=True)`` (never unpickling code, DESIGN.md Security).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = [
    "CHECKPOINT_DIR",
    "latest_checkpoint",
    "load_checkpoint",
    "read_run_config",
    "save_checkpoint",
    "write_json_atomic",
]

CHECKPOINT_DIR = "checkpoints"
_LATEST = "latest"
_WEIGHTS = "model.safetensors"
_STATE = "state.pt"
_CONFIG = "config.json"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file in the same directory + ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    run_dir: Path,
    step: int,
    weights: dict[str, torch.Tensor],
    config: dict[str, Any],
    state: dict[str, Any],
) -> Path:
    """Write the checkpoint of ``step`` atomically and make it the latest.

    Args:
        run_dir: the run directory.
        step: optimizer steps done.
        weights: flat name -> tensor (encoder and head).
        config: the resolved config (JSON-able).
        state: optimizer state, RNG states, step (``weights_only``-loadable content).

    Returns:
        the checkpoint directory.
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}"
    final = root / name
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.", suffix=".tmp"))
    try:
        # contiguous(): safetensors refuses views; clone() detaches from shared storage.
        save_file(
            {k: v.detach().cpu().contiguous().clone() for k, v in weights.items()},
            str(tmp / _WEIGHTS),
        )
        torch.save(state, tmp / _STATE)
        (tmp / _CONFIG).write_text(json.dumps(config, indent=2))
        previous = latest_checkpoint(run_dir, missing_ok=True)
        if final.exists():  # the same step again (a resumed run re-saving): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_pointer(root, name)
    if previous is not None and previous != final:
        shutil.rmtree(previous, ignore_errors=True)
    return final


def _write_pointer(root: Path, name: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{_LATEST}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(name + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, root / _LATEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def latest_checkpoint(run_dir: Path, *, missing_ok: bool = False) -> Path | None:
    """The newest complete checkpoint directory of a run.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run directory or has no checkpoint (unless
            ``missing_ok``, then None).
    """
    pointer = Path(run_dir) / CHECKPOINT_DIR / _LATEST
    if not pointer.is_file():
        if missing_ok:
            return None
        raise FileNotFoundError(f"{run_dir}: not a densefeat run directory (no {pointer.name})")
    name = pointer.read_text().strip()
    # The pointer is a bare directory name: never follow it outside the run (DESIGN Security).
    if not name.startswith("step-") or "/" in name or "\\" in name or ".." in name:
        raise ValueError(f"{pointer}: corrupt checkpoint pointer {name!r}")
    path = pointer.parent / name
    if not (path / _WEIGHTS).is_file() or not (path / _STATE).is_file():
        raise FileNotFoundError(f"{path}: incomplete checkpoint")
    return path


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """``(weights, config, state)`` of a checkpoint directory (see :func:`save_checkpoint`)."""
    path = Path(path)
    weights = load_file(str(path / _WEIGHTS))
    config = json.loads((path / _CONFIG).read_text())
    state = torch.load(path / _STATE, weights_only=True, map_location="cpu")
    return weights, config, state


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The resolved config of a run (``RUN/config.json``).

    Raises:
        FileNotFoundError: not a run directory.
        ValueError: an unreadable config.
    """
    path = Path(run_dir) / _CONFIG
    if not Path(run_dir).is_dir() or not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a densefeat run directory (no config.json)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: unreadable run config ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") != "densefeat.run":
        raise ValueError(f"{path}: not a densefeat run config")
    return data
