"""What the report needs from ``results.json`` (docs/results-schema.md) and its validation.

:func:`validate` checks the required keys, the summary table against the configured methods,
the comparison records and the fields of every optional section's records, and raises
``ValueError`` naming the first missing key as a dotted path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .records import finite

__all__ = [
    "COMPARISON_FIELDS",
    "RECORD_FIELDS",
    "REQUIRED_KEYS",
    "TABLE_FIELDS",
    "check_comparison",
    "higher_is_better_of",
    "validate",
]


#: Keys ``render`` cannot work without (dotted paths into the results object).
REQUIRED_KEYS = (
    "scale",
    "dataset",
    "dataset.name",
    "config",
    "config.methods",
    "config.ablations",
    "config.seeds",
    "table",
    "comparison",
)


#: Fields of a comparison record (``comparison`` and ``comparison.robustness``). A record with
#: none of them (or null) means the benchmark had nothing to compare; one with some needs all.
COMPARISON_FIELDS = (
    "dense",
    "best_baseline",
    "best_baseline_value",
    "difference",
    "difference_ci",
    "dense_wins",
)


#: Fields of every ``table`` row (values may be null, the keys must be there).
TABLE_FIELDS = (
    "method",
    "n_seeds",
    "effective_rank",
    "effective_rank_sd",
    "condition_number",
    "condition_number_k",
    "temporal_subspace_distance",
    "probe_auroc",
    "probe_auroc_sd",
    "robustness_drop",
    "seed_alignment_cka",
)


#: Fields each record of an optional section needs for the report to use it.
RECORD_FIELDS: dict[str, tuple[str, ...]] = {
    "tasks": ("name",),
    "geometry": ("method", "seed", "output", "n", "d", "effective_rank", "condition_number"),
    "reference": ("n", "d", "effective_rank", "condition_number", "eigenvalues"),
    "training_curves": ("method", "seed", "step", "effective_rank"),
    "probes": ("method", "seed", "task", "embedding", "k", "auroc"),
    "robustness": ("method", "seed", "task", "perturbation", "level", "auroc_drop"),
    "temporal": ("method", "seed", "window", "subspace_distance", "floor", "chance"),
    "alignment": ("method", "kind", "a", "b", "subspace_distance", "linear_cka_debiased"),
}


def _lookup(results: Mapping[str, Any], path: str) -> Any:
    node: Any = results
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ValueError(f"results is missing required key {path!r}")
        node = node[part]
    return node


def _require_fields(record: Any, fields: Iterable[str], where: str) -> None:
    if not isinstance(record, Mapping):
        raise ValueError(f"{where} must be an object, got {type(record).__name__}")
    for key in fields:
        if key not in record:
            raise ValueError(f"results is missing required key '{where}.{key}'")


def validate(results: Mapping[str, Any]) -> None:
    """Check the keys the report needs; raise ``ValueError`` naming the first missing one.

    Required: ``scale``, ``dataset.name``, ``config.{methods,ablations,seeds}``, ``table`` (one
    row per method and ablation, every field of the schema present) and the primary endpoint
    ``comparison``: null, or without any comparison field, when the benchmark had nothing to
    compare (the report says so); otherwise with all of :data:`COMPARISON_FIELDS`
    (``difference_ci`` may be null; ``comparison.robustness`` likewise). The other sections
    are optional: when absent or empty, the report says so
    instead of plotting them; when present, their records must have the fields the report reads.

    Args:
        results: the object ``densefeat benchmark`` writes as ``results.json``.

    Raises:
        ValueError: a missing key (named as a dotted path, e.g. ``'table[2].probe_auroc'``), a
            ``kind``/``version`` this renderer does not read, or a table that does not match
            ``config.methods`` + ``config.ablations``.
    """
    if not isinstance(results, Mapping):
        raise ValueError(f"results must be a JSON object (dict), got {type(results).__name__}")
    kind = results.get("kind", "densefeat.benchmark")
    if kind != "densefeat.benchmark":
        raise ValueError(f"results kind is {kind!r}, expected 'densefeat.benchmark'")
    version = results.get("version", 1)
    if version != 1:
        raise ValueError(f"results version {version!r} is not supported (this renderer reads 1)")
    for path in REQUIRED_KEYS:
        _lookup(results, path)
    for i, row in enumerate(results["table"]):
        _require_fields(row, TABLE_FIELDS, f"table[{i}]")
    expected = [*results["config"]["methods"], *results["config"]["ablations"]]
    present = [row["method"] for row in results["table"]]
    missing = [m for m in expected if m not in present]
    if missing:
        raise ValueError(f"results 'table' has no row for {missing} (config methods/ablations)")
    extra = [m for m in present if m not in expected]
    if extra:
        raise ValueError(f"results 'table' has rows {extra} not in config.methods/ablations")
    cmp = results["comparison"]
    check_comparison(cmp, "comparison")
    if isinstance(cmp, Mapping):
        check_comparison(cmp.get("robustness"), "comparison.robustness")
    for section, fields in RECORD_FIELDS.items():
        for i, rec in enumerate(results.get(section) or ()):
            _require_fields(rec, fields, f"{section}[{i}]")


def check_comparison(cmp: Any, where: str) -> bool:
    """Whether ``cmp`` holds a comparison (``False``: null or empty); raise if it is partial."""
    if cmp is None:
        return False
    if not isinstance(cmp, Mapping):
        raise ValueError(f"results '{where}' must be an object or null")
    if not any(key in cmp for key in COMPARISON_FIELDS):
        return False
    _require_fields(cmp, COMPARISON_FIELDS, where)
    for key in ("dense", "best_baseline_value", "difference"):
        if not finite(cmp[key]):
            raise ValueError(f"results '{where}.{key}' must be a finite number")
    ci = cmp["difference_ci"]
    if ci is not None and not (
        isinstance(ci, Sequence) and len(ci) == 2 and all(finite(v) for v in ci)
    ):
        raise ValueError(f"results '{where}.difference_ci' must be null or two finite numbers")
    return True


def higher_is_better_of(cmp: Mapping[str, Any], default: bool) -> bool:
    if "lower_is_better" in cmp:
        return not cmp["lower_is_better"]
    if "higher_is_better" in cmp:
        return bool(cmp["higher_is_better"])
    return default
