"""``densefeat analyze``: geometry diagnostics of one embedding file, or of a paired two.

The computation is :func:`densefeat.eval.analyze.analyze_files`; this module parses, prints the
tables and writes ``--json OUT`` (standard JSON: non-finite numbers become ``null``, each beside
a ``*_reason`` field saying why), atomically and only once everything has been computed: a
failing run leaves nothing at ``OUT``.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from .common import positive_int

__all__ = ["add_arguments", "render", "run"]

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


#: How each metric reads: the direction in which the embedding is more isotropic (or the two
#: files more alike). Geometry has no "better" in itself; this says which way is which.
DIRECTION = {
    "effective_rank": "↑",
    "effective_rank_eig": "↑",
    "spectral_entropy": "↑",
    "rankme": "↑",
    "participation_ratio": "↑",
    "stable_rank": "↑",
    "numerical_rank": "↑",
    "condition_number": "↓",
    "condition_number_k": "↓",
    "alpha_req": "↓",
    "alpha_req_r2": "↑",
}

#: Significant digits of every number printed (the JSON keeps full precision).
SIGNIFICANT = 4


def _fmt(value: Any) -> str:
    """``value`` with :data:`SIGNIFICANT` significant digits (thousands separated; scientific
    only below 1e-3 or from 1e6); ``-`` for None, ``inf`` for infinity."""
    if value is None:
        return "-"
    if isinstance(value, bool) or isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if math.isnan(value):
            return "nan"
        if value == 0.0:
            return "0"
        if not 1e-3 <= abs(value) < 1e6:
            return f"{value:.{SIGNIFICANT - 1}e}"
        digits = max(SIGNIFICANT - 1 - math.floor(math.log10(abs(value))), 0)
        text = f"{value:,.{digits}f}"
        return "0" if float(text.replace(",", "")) == 0 else text  # never "-0.000"
    return str(value)


def _metric_label(name: str, result: dict[str, Any]) -> str:
    arrow = DIRECTION.get(name, "")
    if name == "condition_number_k":
        return f"condition_number_k (k={result['condition_number_k_at']}) {arrow}"
    return f"{name} {arrow}".rstrip()


def _geometry_table(result: dict[str, Any]) -> Any:
    from rich.table import Table

    b = result.get("b")
    shape = f"({result['n']:,} x {result['d']:,})"
    title = f"A: {result['file']} {shape}"
    if b is not None:
        title += f"   B: {b['file']} ({b['n']:,} x {b['d']:,})"
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


def _degrees(angles: list[float]) -> list[float]:
    return [math.degrees(a) for a in angles]


def _pair_table(result: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="A vs B (rows paired by order)")
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("unrelated", justify="right", no_wrap=True)
    k = result["subspace_k"]
    angles = sorted(_degrees(result["principal_angles"]))
    table.add_row(
        f"subspace_distance (k={k}) ↓",
        _fmt(result["subspace_distance"]),
        _fmt(result["subspace_distance_chance"]),
    )
    median = (
        angles[len(angles) // 2]
        if len(angles) % 2
        else sum(angles[len(angles) // 2 - 1 : len(angles) // 2 + 1]) / 2
    )
    table.add_row(
        f"principal angles (k={k}, °) ↓",
        f"{_fmt(angles[0])} / {_fmt(median)} / {_fmt(angles[-1])}",
        "90",
    )
    same_d = result["d"] == result["b"]["d"]
    table.add_row(
        "linear_cka ↑",
        _fmt(result["linear_cka"]),
        _fmt(result["isotropic_reference"]["linear_cka"]) if same_d else "-",
    )
    table.add_row(
        "linear_cka_debiased ↑",
        _fmt(result["linear_cka_debiased"]),
        _fmt(0.0),
    )
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


#: How the isotropic column is computed (densefeat.functional.isotropic_reference).
REFERENCE_NOTE = (
    "↑ / ↓: the direction in which the embedding is more isotropic (ranks at most "
    "min(n-1, d); condition numbers 1 at best; alpha_req 0 for a flat spectrum; alpha_req_r2 "
    "is the power-law fit's R²) or the two files more alike; geometry has no better or worse "
    "in itself. unrelated: two independent random matrices (subspace "
    "distance: its chance level; principal angles: min / median / max, 90 = orthogonal). "
    "isotropic: the mean over 8 random isotropic Gaussian matrices of the same (n, d) (seed 0), "
    "each drawn exactly in distribution through its bidiagonal chi model (Dumitriu & Edelman "
    "2002): a Monte Carlo estimate, not a closed form; compare values only at equal (n, d). "
    f"Numbers: {SIGNIFICANT} significant digits (--json keeps full precision)."
)


def render(result: dict[str, Any], console: Any | None = None) -> None:
    """Print the result of :func:`~densefeat.eval.analyze.analyze_files` as tables (rich) on
    ``console`` (default: stdout)."""
    from rich.console import Console

    console = console or Console()
    console.print(_geometry_table(result))
    if "b" in result:
        console.print(_pair_table(result))
    for line in _notes(result):
        console.print(line, markup=False, highlight=False)
    console.print(REFERENCE_NOTE, markup=False, highlight=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``densefeat analyze EMB [EMB2] [--key COL] [--k K] [--json OUT] ...``."""
    parser.add_argument(
        "emb", metavar="EMB", help=".npy, .parquet, .csv, .tsv, .pt or .safetensors file"
    )
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
        type=positive_int,
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
        type=positive_int,
        default=None,
        metavar="N",
        help="rows read per chunk (default: ~64 MiB of float64 per chunk)",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``densefeat analyze``; errors surface as ``ValueError`` for the CLI to report."""
    from ..eval.analyze import analyze_files
    from ..io.atomic import check_json_target, to_json_safe, write_json_atomic

    out = check_json_target(args.json) if args.json else None
    result = analyze_files(
        args.emb,
        args.emb2,
        key=args.key,
        k=args.k,
        chunk_rows=args.chunk_rows,
        key_b=args.key_b,
    )
    if "principal_angles" in result:  # the report's unit; "principal_angles" stays radians
        result["principal_angles_deg"] = _degrees(result["principal_angles"])
    render(result)
    if out is not None:
        write_json_atomic(out, to_json_safe(result))
    return 0
