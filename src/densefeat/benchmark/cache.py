"""Fingerprints and result reuse: what lets an interrupted benchmark resume without ever mixing
old and new numbers.

A benchmark reuses two kinds of finished work:

* a **run** (``OUT/runs/<name>/seed<s>``) when its config equals the one this benchmark would
  use and its identity (:data:`IDENTITY_FILE`: dataset content fingerprint, supervised labels,
  benchmark version) matches (:mod:`densefeat.benchmark.runs`);
* an **evaluation** (``OUT/eval/<name>/seed<s>.json`` + ``.npz`` arrays) when its fingerprint
  matches: the benchmark version, the data's content fingerprint, the evaluation settings, the
  tasks' labels, the evaluated rows, the run's config and a hash of its checkpoint weights.

Fingerprints are short content hashes (:func:`fingerprint`); a dataset's is built from its
metadata and the names, sizes and modification times of its files (a re-conversion at the same
path changes it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_path, write_text_atomic
from .evaluate import ProbeContext, RunResult, evaluate_features
from .geometry import geometry_record

__all__ = [
    "IDENTITY_FILE",
    "file_fingerprint",
    "files_fingerprint",
    "fingerprint",
    "load_eval",
    "probe_features",
    "save_eval",
]

#: The run identity file inside a benchmark run directory.
IDENTITY_FILE = "benchmark.json"


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (what a cached result was computed from)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def file_fingerprint(path: Path) -> str:
    """A content hash of one file (e.g. a checkpoint's weights)."""
    h = hashlib.blake2b(digest_size=12)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_fingerprint(path: Path, *extra: Any) -> str:
    """What identifies a data source's content: a file's, or a MEDS directory's data and
    metadata files', names (relative to ``path``), sizes and modification times."""
    if path.is_dir():
        files = sorted((path / "data").rglob("*.parquet")) + sorted((path / "metadata").glob("*"))
        names = [str(f.relative_to(path)) for f in files]
    else:
        files, names = [path], [path.name]
    stats = [(n, f.stat().st_size, f.stat().st_mtime_ns) for n, f in zip(names, files, strict=True)]
    return fingerprint(*extra, stats)


def save_eval(path: Path, fp: str, result: RunResult) -> None:
    """Save an evaluation's arrays, then its records with ``fp`` (the JSON, written last, marks
    the evaluation complete)."""
    with atomic_path(path.with_suffix(".npz"), suffix=".npz") as tmp:
        np.savez(tmp, **result.arrays)
    write_text_atomic(
        path, json.dumps({"fingerprint": fp, "records": result.records}, allow_nan=False)
    )


def load_eval(path: Path, fp: str) -> RunResult | None:
    """The saved evaluation at ``path`` if its fingerprint is ``fp`` and it is intact, else None."""
    npz = path.with_suffix(".npz")
    if not path.is_file() or not npz.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if not isinstance(saved, dict) or saved.get("fingerprint") != fp or "records" not in saved:
        return None
    try:
        with np.load(npz, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError):
        return None  # a damaged array file: recompute
    return RunResult(saved["records"], arrays)


def probe_features(
    out: Path,
    name: str,
    fp: str,
    features: Callable[[], np.ndarray],
    ctx: ProbeContext,
    geometry_rows: np.ndarray | None = None,
    extra: Callable[[np.ndarray], dict[str, list[dict[str, Any]]]] | None = None,
) -> tuple[RunResult, bool]:
    """A probe-only baseline's evaluation (``OUT/eval/<name>/seed0.json``): reused when its
    fingerprint ``fp`` matches, else computed from ``features()`` and saved.

    Args:
        out: the benchmark's output directory.
        name: the baseline's table name.
        fp: what the evaluation is computed from.
        features: the (n, d) features of the evaluation rows (called only when needed).
        ctx: the probes' context.
        geometry_rows: a boolean mask of the rows whose geometry to record (None: none).
        extra: more record sections from the features (e.g. ``{"external": [...]}``), saved
            and reused with the evaluation.

    Returns:
        ``(result, reused)``.
    """
    path = out / "eval" / name / "seed0.json"
    result = load_eval(path, fp)
    if result is not None:
        return result, True
    z = features()
    result = evaluate_features(name, z, ctx)
    if geometry_rows is not None:
        record = geometry_record(z[geometry_rows])
        result.records["geometry"] = [{"method": name, "seed": 0, "output": "backbone", **record}]
    if extra is not None:
        result.records.update(extra(z))
    save_eval(path, fp, result)
    return result, False
