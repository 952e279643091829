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
with ``torch.load(weights_only=True)`` (never unpickling code: docs/design.md, Security).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..io.atomic import write_text_atomic
from ..models.text import PretrainedTextEncoder

__all__ = [
    "CHECKPOINT_DIR",
    "backbone_fingerprint",
    "check_fingerprint",
    "frozen_keys",
    "latest_checkpoint",
    "load_checkpoint",
    "load_saved_weights",
    "read_run_config",
    "save_checkpoint",
    "saved_weights",
]

CHECKPOINT_DIR = "checkpoints"
_LATEST = "latest"
_WEIGHTS = "model.safetensors"
_STATE = "state.pt"
_CONFIG = "config.json"


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
    write_text_atomic(root / _LATEST, name + "\n")


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
    # The pointer is a bare directory name: never follow it outside the run (a path from a file
    # stays inside the directory the user named: docs/design.md, Security).
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


# --------------------------------------------------------------------------------------------
# What a checkpoint holds: everything training can change, never a frozen pretrained backbone
# (22.7M parameters, 87 MiB for all-MiniLM-L6-v2): it is reloaded from the offline model and
# the checkpoint's trainable tensors (adapter, trainable layers, heads) go on top. A run records
# a fingerprint of the backbone and refuses to load on top of a different one.


def frozen_keys(net: nn.Module) -> set[str]:
    """State-dict keys of every frozen pretrained backbone inside ``net`` (never checkpointed).

    Everything under a :class:`PretrainedTextEncoder`'s ``backbone`` except its trainable last
    layers (``trainable_layers``); the adapter, heads and trainable layers are saved.
    """
    names = {id(m): name for name, m in net.named_modules()}
    keys = list(net.state_dict())
    out: set[str] = set()
    for name, module in net.named_modules():
        if not isinstance(module, PretrainedTextEncoder):
            continue
        prefix = f"{name}.backbone." if name else "backbone."
        trainable = tuple(names[id(layer)] + "." for layer in module.trainable_backbone_layers)
        out.update(k for k in keys if k.startswith(prefix) and not k.startswith(trainable))
    return out


def saved_weights(net: nn.Module) -> dict[str, torch.Tensor]:
    """The checkpointed tensors: the state dict without the frozen backbone."""
    skip = frozen_keys(net)
    return {k: v for k, v in net.state_dict().items() if k not in skip}


def load_saved_weights(net: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Load checkpointed tensors on top of ``net`` (whose frozen backbone is already loaded).

    Raises:
        ValueError: tensors the model does not have, trainable tensors the checkpoint lacks, or
            shapes that differ (a checkpoint of another model).
    """
    skip = frozen_keys(net)
    try:
        missing, unexpected = net.load_state_dict(weights, strict=False)
    except RuntimeError as exc:
        raise ValueError(f"checkpoint does not fit this model: {exc}") from None
    lacking = sorted(set(missing) - skip)
    if unexpected or lacking:
        raise ValueError(
            "checkpoint does not fit this model: "
            f"unexpected {sorted(unexpected)[:5]}, missing {lacking[:5]}"
        )


def backbone_fingerprint(net: nn.Module) -> dict[str, Any] | None:
    """Identity of the pretrained backbone under ``net`` (None: no pretrained encoder)."""
    for module in net.modules():
        if isinstance(module, PretrainedTextEncoder):
            root = Path(module.model_dir)
            return {
                "config_sha256": hashlib.sha256((root / "config.json").read_bytes()).hexdigest(),
                "weights_bytes": (root / "model.safetensors").stat().st_size,
                "trainable_layers": module.config.trainable_layers,
            }
    return None


def check_fingerprint(saved: dict[str, Any] | None, net: nn.Module, run_dir: Path) -> None:
    """Refuse to put a run's adapter on top of another pretrained model than it was trained on.

    Raises:
        ValueError: the fingerprints differ (both named).
    """
    now = backbone_fingerprint(net)
    if saved is not None and now is not None and saved != now:
        raise ValueError(
            f"{run_dir}: the run was trained on top of another pretrained text model ({saved}) "
            f"than the one installed now ({now})"
        )
