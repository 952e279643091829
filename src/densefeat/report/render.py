"""``render(results, out_dir)``: write ``results.md`` and ``report.html`` from ``results.json``.

Both files are rendered from the results object alone (docs/results-schema.md) and written
atomically (a temporary file in ``out_dir``, then ``os.replace``): a failing render leaves the
previous files, never half-written ones. The content (validation, rounding, tables, sentences)
is built once by :func:`densefeat.report.build.build_report`, so both files print the same numbers.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .build import build_report
from .html import to_html
from .markdown import to_markdown
from .plots import make_plots

__all__ = ["render"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _generator() -> str:
    try:
        from importlib.metadata import version

        return f"densefeat {version('densefeat')}"
    except Exception:  # pragma: no cover - not installed as a distribution
        return "densefeat"


def render(results: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the benchmark report: ``results.md`` and a self-contained ``report.html``.

    Args:
        results: the object ``densefeat benchmark`` writes as ``results.json`` (kind
            ``densefeat.benchmark``, version 1).
        out_dir: output directory, created if needed.

    Returns:
        ``{"markdown": out_dir / "results.md", "html": out_dir / "report.html"}``.

    Raises:
        ValueError: a key the report needs is missing (the message names it, e.g.
            ``'comparison.difference_ci'``) or the results contradict themselves (see
            :func:`densefeat.report.schema.validate`).
        ImportError: matplotlib (the ``eval`` extra) is not installed.
    """
    report = build_report(results)  # validates before anything is drawn or written
    markdown = to_markdown(report)
    page = to_html(report, make_plots(results, report.colours), generator=_generator())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "results.md", "html": out / "report.html"}
    _write_atomic(paths["markdown"], markdown)
    _write_atomic(paths["html"], page)
    return paths
