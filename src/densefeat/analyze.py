"""``densefeat analyze``: geometry diagnostics of one embedding file, or of a paired two.

One file: the rows are streamed once through a
:class:`~densefeat.metrics.CovarianceAccumulator`; every DESIGN.md metric comes from the
float64 covariance (``effective_rank``, ``effective_rank_eig``, ``spectral_entropy``,
``rankme``, ``participation_ratio``, ``stable_rank``, ``numerical_rank``,
``condition_number``, ``condition_number_k``, ``alpha_req``, plus ``n``, ``d`` and the
``eigenvalues``, descending), next to what an isotropic Gaussian matrix of the same shape gets
(``isotropic_reference``): spectral numbers depend on (n, d), so a value means little alone.

Two files (row i of both is the same sample, e.g. two time windows): one pass over both files
in lockstep through a paired accumulator gives both geometries and the sample-space
``subspace_distance`` (with its chance level), ``principal_angles`` and ``linear_cka``; a
second pass with :class:`~densefeat.metrics.CenteredNormAccumulator` gives
``linear_cka_debiased``. Memory stays bounded by the chunk size, whatever n is.

``--json OUT`` writes standard JSON (non-finite numbers become ``null``, each beside a
``*_reason`` field saying why), atomically and only once everything has been computed: a
failing run leaves nothing at ``OUT``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .functional import isotropic_reference
from .io import EmbeddingSource, iter_paired_chunks, open_embeddings
from .metrics import CenteredNormAccumulator, CovarianceAccumulator

__all__ = ["add_arguments", "analyze_files", "render", "run", "to_json_safe", "write_json_atomic"]

#: Single-matrix metrics shown in the table, in order (the keys of ``geometry``).
TABLE_METRICS = (
    "effective_rank",
    "effective_rank_eig",
    "spectral_entropy",
    "rankme",
    "participation_ratio",
    "stable_rank",
    "numerical_rank",
    "condition_number",
    "condition_number_k",
    "alpha_req",
    "alpha_req_r2",
)


# --------------------------------------------------------------------------- computation
def analyze_files(
    path_a: str | os.PathLike[str],
    path_b: str | os.PathLike[str] | None = None,
    key: str | None = None,
    k: int = 16,
    chunk_rows: int | None = None,
    *,
    key_b: str | None = None,
) -> dict[str, Any]:
    """Geometry of one embedding file, or geometry and alignment of two paired files.

    Args:
        path_a: embedding file (``.npy``, ``.parquet``, ``.pt``, ``.safetensors``).
        path_b: optional second file with the same rows in the same order.
        key: tensor key / column(s) of ``path_a`` (see :mod:`densefeat.io`).
        k: subspace dimension of ``subspace_distance`` and ``principal_angles`` (clipped to
            ``min(n - 1, d_a, d_b)``) and of the chance level in ``isotropic_reference``.
        chunk_rows: rows per chunk; ``None`` picks ~64 MiB of float64 per chunk.
        key_b: key of ``path_b``; defaults to ``key`` (``""`` means none).

    Returns:
        ``file``, ``key`` and every metric of :func:`densefeat.functional.geometry` under its
        DESIGN.md name, ``isotropic_reference`` and, when a metric is infinite, a
        ``*_reason``. With ``path_b`` also ``b`` (the same for the second file),
        ``subspace_distance``, ``subspace_k``, ``subspace_distance_chance``,
        ``principal_angles`` (radians, descending), ``linear_cka`` and ``linear_cka_debiased``.

    Raises:
        ValueError: unreadable or invalid files (an ``EmbeddingFileError`` naming the file and
            key), different row counts, ``k < 1``.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    src_a = open_embeddings(path_a, key)
    if path_b is None:
        return _analyze_single(src_a, k, chunk_rows)
    src_b = open_embeddings(path_b, key if key_b is None else key_b)
    if src_a.n != src_b.n:
        raise ValueError(
            f"paired files must have the same rows in the same order: {src_a.label} has "
            f"{src_a.n} rows, {src_b.label} has {src_b.n}"
        )
    return _analyze_pair(src_a, src_b, k, chunk_rows)


def _describe(src: EmbeddingSource, metrics: dict[str, Any], k: int) -> dict[str, Any]:
    """File identity, metrics, reasons for infinite values and the isotropic reference."""
    out: dict[str, Any] = {"file": str(src.path), "key": src.key, "dtype": src.dtype}
    out.update(metrics)
    if math.isinf(out.get("condition_number_k", 0.0)):
        out["condition_number_k_reason"] = (
            f"s_k at k={out['condition_number_k_at']} is below the numerical-rank tolerance "
            f"(numerical_rank {out['numerical_rank']})"
        )
    # The reference's condition_number_k is taken at the measured k so the two columns compare.
    out["isotropic_reference"] = isotropic_reference(
        src.n, src.d, k=k, condition_k=out["condition_number_k_at"]
    )
    return out


def _tensors(chunks: Iterator[np.ndarray]) -> Iterator[torch.Tensor]:
    # Hand the accumulator tensors, not arrays: it then skips a second NumPy validation
    # (the reader already checked dtype and finiteness, naming the file and row).
    for chunk in chunks:
        yield torch.from_numpy(chunk)


def _analyze_single(src: EmbeddingSource, k: int, chunk_rows: int | None) -> dict[str, Any]:
    acc = CovarianceAccumulator()
    for chunk in _tensors(src.chunks(chunk_rows)):
        acc.update(chunk)
    return _describe(src, acc.compute(), k)


def _lockstep(
    src_a: EmbeddingSource, src_b: EmbeddingSource, chunk_rows: int | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for a, b in iter_paired_chunks(src_a.chunks(chunk_rows), src_b.chunks(chunk_rows)):
        yield torch.from_numpy(a), torch.from_numpy(b)


def _analyze_pair(
    src_a: EmbeddingSource, src_b: EmbeddingSource, k: int, chunk_rows: int | None
) -> dict[str, Any]:
    acc = CovarianceAccumulator(paired=True)
    for a, b in _lockstep(src_a, src_b, chunk_rows):
        acc.update(a, b)
    k_used = min(k, src_a.n - 1, src_a.d, src_b.d)
    metrics = acc.compute(k_used)
    geometry_b = metrics.pop("b")
    # Second pass: the debiased CKA needs per-row norms around the final means.
    norms = CenteredNormAccumulator(acc.mean_a, acc.mean_b)
    for a, b in _lockstep(src_a, src_b, chunk_rows):
        norms.update(a, b)
    metrics["linear_cka_debiased"] = norms.linear_cka_debiased(acc)
    out = _describe(src_a, metrics, k_used)
    out["b"] = _describe(src_b, geometry_b, k_used)
    return out


# --------------------------------------------------------------------------- JSON output
def to_json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that standard JSON accepts: non-finite floats become ``None``.

    A non-finite value ``x`` in a dict without an ``x_reason`` entry gets one, so a ``null``
    is never silent.
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


def _non_finite(value: Any) -> bool:
    return isinstance(value, float | np.floating) and not math.isfinite(value)


def check_json_target(path: str | os.PathLike[str]) -> Path:
    """Fail early (before any computation) if ``path`` cannot receive the JSON output."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"--json {p}: is an existing directory; give a file name")
    if not p.parent.is_dir():
        raise ValueError(f"--json {p}: directory {p.parent} does not exist")
    return p


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as JSON to a temporary file beside ``path``, then rename it into place.

    Readers never see a half-written file, and an interrupted write leaves nothing at
    ``path``.
    """
    p = check_json_target(path)
    text = json.dumps(to_json_safe(data), indent=2, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- table
def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if math.isnan(value):
            return "nan"
        if value != 0.0 and not 1e-3 <= abs(value) < 1e6:
            return f"{value:.4e}"
        return f"{value:.4f}"
    return str(value)


def _metric_label(name: str, result: dict[str, Any]) -> str:
    if name == "condition_number_k":
        return f"condition_number_k (k={result['condition_number_k_at']})"
    return name


def _geometry_table(result: dict[str, Any]) -> Any:
    from rich.table import Table

    b = result.get("b")
    shape = f"({result['n']} x {result['d']})"
    title = f"A: {result['file']} {shape}"
    if b is not None:
        title += f"   B: {b['file']} ({b['n']} x {b['d']})"
    table = Table(title=title)
    # Metric names never get truncated: a clipped name could read as another metric.
    labels = [_metric_label(name, result) for name in TABLE_METRICS]
    table.add_column("metric", no_wrap=True, min_width=max(map(len, labels)))
    table.add_column("A" if b is not None else "value", justify="right", no_wrap=True)
    table.add_column("isotropic" + (" A" if b is not None else ""), justify="right", no_wrap=True)
    separate_ref_b = b is not None and b["d"] != result["d"]
    if b is not None:
        table.add_column("B", justify="right", no_wrap=True)
        if separate_ref_b:
            table.add_column("isotropic B", justify="right", no_wrap=True)
    for name, label in zip(TABLE_METRICS, labels, strict=True):
        row = [label, _fmt(result.get(name)), _fmt(result["isotropic_reference"].get(name))]
        if b is not None:
            row.append(_fmt(b.get(name)))
            if separate_ref_b:
                row.append(_fmt(b["isotropic_reference"].get(name)))
        table.add_row(*row)
    return table


def _pair_table(result: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="A vs B (rows paired by order)")
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("unrelated matrices", justify="right")
    k = result["subspace_k"]
    angles = result["principal_angles"]
    table.add_row(
        f"subspace_distance (k={k})",
        _fmt(result["subspace_distance"]),
        _fmt(result["subspace_distance_chance"]) + " (chance)",
    )
    table.add_row(
        f"principal_angles (k={k}, rad)",
        f"{_fmt(max(angles))} .. {_fmt(min(angles))}",
        f"{_fmt(math.pi / 2)} max",
    )
    same_d = result["d"] == result["b"]["d"]
    table.add_row(
        "linear_cka",
        _fmt(result["linear_cka"]),
        _fmt(result["isotropic_reference"]["linear_cka"]) if same_d else "-",
    )
    table.add_row("linear_cka_debiased", _fmt(result["linear_cka_debiased"]), _fmt(0.0))
    return table


def _notes(result: dict[str, Any]) -> list[str]:
    """One line per infinite metric, with its reason."""
    parts = [("A", result)] + ([("B", result["b"])] if "b" in result else [])
    lines = []
    for tag, part in parts:
        for name in ("condition_number", "condition_number_k", "alpha_req"):
            value = part.get(name)
            if isinstance(value, float) and math.isinf(value):
                reason = part.get(f"{name}_reason") or "not finite"
                lines.append(f"{tag}: {name} = inf: {reason}")
    return lines


def render(result: dict[str, Any], console: Any | None = None) -> None:
    """Print the result of :func:`analyze_files` as tables (rich) on ``console``/stdout."""
    from rich.console import Console

    console = console or Console()
    console.print(_geometry_table(result))
    if "b" in result:
        console.print(_pair_table(result))
    for line in _notes(result):
        console.print(line, markup=False, highlight=False)
    console.print(
        "isotropic: an isotropic Gaussian matrix of the same shape (mean of 8 draws);"
        " compare values only at equal (n, d).",
        markup=False,
        highlight=False,
    )


# --------------------------------------------------------------------------- CLI
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``densefeat analyze EMB [EMB2] [--key COL] [--k K] [--json OUT] ...``."""
    parser.add_argument("emb", metavar="EMB", help=".npy, .parquet, .pt or .safetensors file")
    parser.add_argument(
        "emb2",
        metavar="EMB2",
        nargs="?",
        help="optional second file with the same rows in the same order (paired analysis)",
    )
    parser.add_argument(
        "--key",
        metavar="COL",
        help="tensor key (.pt dict, .safetensors) or Parquet column; for Parquet also a "
        "comma-separated list of scalar float columns. Default: the only 2-D tensor / the only "
        "float-list column / all scalar float columns",
    )
    parser.add_argument(
        "--key-b", metavar="COL", help="key of EMB2 if it differs from --key ('' for none)"
    )
    parser.add_argument(
        "--k",
        type=_positive_int,
        default=16,
        help="subspace dimension for subspace_distance / principal_angles (default 16)",
    )
    parser.add_argument(
        "--json",
        metavar="OUT",
        help="also write all results as JSON (written only if the whole analysis succeeds)",
    )
    parser.add_argument(
        "--chunk-rows",
        type=_positive_int,
        default=None,
        metavar="N",
        help="rows read per chunk (default: ~64 MiB of float64 per chunk)",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``densefeat analyze``; errors surface as ``ValueError`` for the CLI to report."""
    out = check_json_target(args.json) if args.json else None
    result = analyze_files(
        args.emb,
        args.emb2,
        key=args.key,
        k=args.k,
        chunk_rows=args.chunk_rows,
        key_b=args.key_b,
    )
    render(result)
    if out is not None:
        write_json_atomic(out, result)
    return 0
