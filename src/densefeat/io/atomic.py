"""Atomic file writes: every file densefeat writes appears whole or not at all.

One rule for every writer (results, checkpoints' JSON, embeddings, labels, arrays): write to a
temporary file in the destination's directory, then ``os.replace`` it over the destination (an
atomic rename on POSIX). A writer killed midway leaves at most a hidden ``.NAME.*.tmp`` file,
never a truncated ``NAME``; an exception removes the temporary file.

:func:`atomic_path` is the one primitive; the helpers below are its common uses.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "atomic_path",
    "check_json_target",
    "to_json_safe",
    "write_json_atomic",
    "write_text_atomic",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    The parent directory is created. The file gets the mode a plain ``open()`` would give it
    (``mkstemp`` creates 0600, and results are for others to read). ``suffix`` matters to
    writers that pick a format by extension (``numpy.savez`` appends ``.npz`` otherwise).

    Raises:
        whatever the body raises; the temporary file is removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8, flushed to disk before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(
    path: str | os.PathLike[str], data: Any, *, indent: int = 2, strict: bool = True
) -> None:
    """Write ``data`` as JSON atomically.

    Args:
        path: the destination.
        data: JSON-able data (with ``strict``, NaN/inf raise; see :func:`to_json_safe`).
        indent: JSON indentation.
        strict: refuse non-finite floats (standard JSON has none).
    """
    write_text_atomic(path, json.dumps(data, indent=indent, allow_nan=not strict) + "\n")


def _non_finite(value: Any) -> bool:
    return isinstance(value, float | np.floating) and not math.isfinite(value)


def to_json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that standard JSON accepts: non-finite floats become ``None``.

    A non-finite value ``x`` in a dict without an ``x_reason`` entry gets one, so a ``null``
    is never silent. numpy scalars become Python numbers.
    """
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out[str(key)] = to_json_safe(value)
            reason = f"{key}_reason"
            if _non_finite(value) and obj.get(reason) is None:
                out[reason] = f"{key} is {value} (written as null)"
        return out
    if isinstance(obj, list | tuple):
        return [to_json_safe(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def check_json_target(path: str | os.PathLike[str]) -> Path:
    """Fail early (before any computation) if ``path`` cannot receive a JSON output.

    Raises:
        ValueError: ``path`` is a directory, or its parent directory does not exist.
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"--json {p}: is an existing directory; give a file name")
    if not p.parent.is_dir():
        raise ValueError(f"--json {p}: directory {p.parent} does not exist")
    return p
