"""Train the benchmark's runs, or reuse the ones an interrupted benchmark already finished.

A run lives in ``OUT/runs/<name>/seed<s>`` (a normal ``densefeat train`` run directory). On a
rerun:

* the run's saved config equals the one this benchmark would use and its latest checkpoint
  is at the budget: reused as is;
* same config, checkpoint before the budget (the benchmark was killed mid-run): resumed
  (exact, see :mod:`densefeat.train.loop`);
* anything else (another budget, seed, override, dataset content, supervised labels or
  benchmark version, or a run killed before its first checkpoint): deleted and trained again,
  so stale results are never mixed with new ones.

Besides the run's own ``config.json``, ``RUN/benchmark.json`` holds its *identity*: the
dataset fingerprint, the hash of the supervised labels and the benchmark version (written
before training starts, so a half-trained run is only resumed under the same identity).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..io.atomic import write_json_atomic
from ..methods import get_method
from ..train.checkpoint import latest_checkpoint
from ..train.config import TrainConfig
from .cache import IDENTITY_FILE
from .config import BenchmarkConfig, RunSpec

__all__ = ["ensure_run", "run_config"]

#: Config settings that may differ between a finished run and a rerun without invalidating it.
_VOLATILE = ("log.progress", "device")


def run_config(spec: RunSpec, bench: BenchmarkConfig) -> TrainConfig:
    """The TrainConfig of ``spec``: benchmark-wide overrides, then the spec's own."""
    state: dict[str, Any] = {
        **bench.train,
        "method": spec.method,
        "seed": spec.seed,
        "max_steps": bench.budget,
        "progress": False,
        "device": bench.device,
        "modality": bench.modality,
        **dict(spec.overrides),
    }
    return TrainConfig.from_dict(state)


def _comparable(train: dict[str, Any]) -> dict[str, Any] | None:
    try:
        flat = TrainConfig.from_run(train).flat()
    except (ValueError, TypeError):
        return None  # a config of another densefeat version: not comparable, retrain
    return {k: v for k, v in flat.items() if k not in _VOLATILE}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _state(
    run_dir: Path, cfg: TrainConfig, data_dir: str, labels: str | None, identity: dict
) -> str:
    """``"done"``, ``"resume"`` or ``"fresh"`` (see the module docstring)."""
    saved = _read_json(run_dir / "config.json")
    if not isinstance(saved, dict) or _read_json(run_dir / IDENTITY_FILE) != identity:
        return "fresh"
    same = (
        _comparable(saved.get("train", {})) == _comparable(cfg.to_dict())
        and saved.get("data") == data_dir
        and saved.get("labels") == labels
    )
    ckpt = latest_checkpoint(run_dir, missing_ok=True) if same else None
    if ckpt is None:
        return "fresh"
    step = int(ckpt.name.rsplit("-", 1)[-1])
    # An untrained method (random) is complete at its step-0 checkpoint.
    return "done" if step >= cfg.max_steps or not get_method(cfg.method).trains else "resume"


def ensure_run(
    spec: RunSpec,
    bench: BenchmarkConfig,
    data_dir: str | os.PathLike[str],
    runs_dir: Path,
    labels: str | os.PathLike[str] | None,
    on_step: Callable[[int], None] | None = None,
    identity: dict[str, Any] | None = None,
) -> tuple[Path, str]:
    """Train ``spec`` (or reuse/resume it) and return ``(run_dir, what_happened)``.

    ``identity`` (JSON-able) must equal the saved one for a run to be reused or resumed.
    """
    from ..train import train

    cfg = run_config(spec, bench)
    method = get_method(spec.method)
    labels_arg = str(labels) if (labels is not None and method.needs_labels) else None
    run_dir = runs_dir / spec.name / f"seed{spec.seed}"
    identity = dict(identity or {})
    state = _state(run_dir, cfg, str(data_dir), labels_arg, identity)
    if state == "done":
        return run_dir, "reused"
    if state == "fresh":
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        write_json_atomic(run_dir / IDENTITY_FILE, identity)
    # The loop warns at every monitoring step of a collapse; a benchmark of many runs reports
    # it once per run instead (the monitoring record in stats.jsonl keeps every step).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        train(cfg, str(data_dir), run_dir, labels_arg, resume=state == "resume", on_step=on_step)
    what = "resumed" if state == "resume" else "trained"
    collapse = [w for w in caught if "collapse" in str(w.message)]
    for w in caught:
        if w not in collapse:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if collapse:
        what += (
            f" (collapse warning at {len(collapse)} monitoring steps; last: {collapse[-1].message})"
        )
    return run_dir, what
