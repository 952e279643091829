"""What the benchmark report says, independent of its format (Markdown or HTML).

:func:`build_report` validates a ``results.json`` object (``docs/results-schema.md``) and turns
it into a :class:`Report`: the run's header facts, the primary-endpoint sentences and the tables,
each cell already formatted. :mod:`densefeat.report.markdown` and :mod:`densefeat.report.html`
only lay that out, so both files always print the same numbers with the same rounding.

Rounding (one rule per quantity, used everywhere): effective ranks 1 decimal; condition numbers 3
significant digits (whole numbers from 1,000 to 1e6); AUROC, subspace distances, CKA and AUROC
drops 3 decimals; a standard deviation has the decimals of its value. A value that does not
exist (``null``, or a non-finite number that should not be in the file) is printed as ``—``
with its reason as a note where one is known; ``NaN`` is never printed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "NA",
    "Cell",
    "Report",
    "Row",
    "Table",
    "build_report",
    "endpoint_sentence",
    "fmt",
    "method_colours",
    "validate",
]

#: What a missing value is printed as.
NA = "—"

#: Highlight colour of the method under test; the others take PALETTE in order.
DENSE_COLOUR = "#d62728"
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
    "#3182bd",
    "#e6550d",
    "#31a354",
    "#756bb1",
)

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

_DECIMALS = {"rank": 1, "auroc": 3, "dist": 3, "cka": 3, "drop": 3, "angle": 1}


# --------------------------------------------------------------------------- model
@dataclass(frozen=True)
class Cell:
    """One formatted table cell.

    Attributes:
        text: what is printed (never ``nan``).
        note: why the value is missing (or a caveat); shown as a footnote and a tooltip.
    """

    text: str
    note: str | None = None


@dataclass(frozen=True)
class Row:
    """One table row; ``method`` (when the row is a method) drives colour swatches/highlight."""

    cells: tuple[Cell, ...]
    method: str | None = None
    kind: str = "method"  # "method" | "ablation" | "reference"


@dataclass(frozen=True)
class Table:
    """A titled table with a caption saying what each number is and how it was aggregated."""

    key: str
    title: str
    caption: str
    header: tuple[str, ...]
    rows: tuple[Row, ...]
    foot: tuple[Row, ...] = ()
    empty: str | None = None  # set when the section has no data: why
    text_columns: int = 1  # leading columns that hold text (left-aligned), the rest numbers


@dataclass(frozen=True)
class Report:
    """Everything both report files print."""

    title: str
    scale: str
    scale_banner: str
    facts: tuple[tuple[str, str], ...]
    endpoints: tuple[str, ...]
    comparison: Table
    tables: tuple[Table, ...]
    definitions: tuple[tuple[str, str], ...]
    colours: Mapping[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- validation
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
    _check_comparison(cmp, "comparison")
    if isinstance(cmp, Mapping):
        _check_comparison(cmp.get("robustness"), "comparison.robustness")
    for section, fields in RECORD_FIELDS.items():
        for i, rec in enumerate(results.get(section) or ()):
            _require_fields(rec, fields, f"{section}[{i}]")


def _check_comparison(cmp: Any, where: str) -> bool:
    """Whether ``cmp`` holds a comparison (``False``: null or empty); raise if it is partial."""
    if cmp is None:
        return False
    if not isinstance(cmp, Mapping):
        raise ValueError(f"results '{where}' must be an object or null")
    if not any(key in cmp for key in COMPARISON_FIELDS):
        return False
    _require_fields(cmp, COMPARISON_FIELDS, where)
    for key in ("dense", "best_baseline_value", "difference"):
        if not _finite(cmp[key]):
            raise ValueError(f"results '{where}.{key}' must be a finite number")
    ci = cmp["difference_ci"]
    if ci is not None and not (
        isinstance(ci, Sequence) and len(ci) == 2 and all(_finite(v) for v in ci)
    ):
        raise ValueError(f"results '{where}.difference_ci' must be null or two finite numbers")
    return True


def _higher_is_better(cmp: Mapping[str, Any], default: bool) -> bool:
    if "lower_is_better" in cmp:
        return not cmp["lower_is_better"]
    if "higher_is_better" in cmp:
        return bool(cmp["higher_is_better"])
    return default


# --------------------------------------------------------------------------- formatting
def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: float, kind: str) -> str:
    if kind == "cond":
        if 1e3 <= abs(value) < 1e6:
            return f"{value:,.0f}"
        text = f"{value:#.3g}"  # keeps trailing zeros: 1.90, 14.7, 123., 1.20e+18
        mant, _, exp = text.partition("e")
        mant = mant.rstrip(".")
        return f"{mant}e{int(exp)}" if exp else mant
    if kind == "int":
        return f"{round(value):,}"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    return f"{value:.{_DECIMALS[kind]}f}"


def fmt(
    value: Any,
    kind: str,
    *,
    sd: Any = None,
    reason: str | None = None,
) -> Cell:
    """Format one number as a :class:`Cell`.

    Args:
        value: the number, or ``None``.
        kind: ``"rank"`` (1 decimal), ``"cond"`` (3 significant digits), ``"auroc"``,
            ``"dist"``, ``"cka"``, ``"drop"`` (3 decimals), ``"angle"`` (1 decimal), ``"int"``,
            ``"pct"``.
        sd: optional standard deviation, printed as ``± sd`` with the value's decimals.
        reason: why the value is missing, used when ``value`` is ``None`` (a non-finite
            number gets a note saying so instead).

    Returns:
        the cell; a missing value is ``—`` with ``reason`` (or a generic one for a non-finite
        number) as its note.
    """
    if value is None:
        return Cell(NA, reason)
    if not _finite(value):
        what = "infinite" if isinstance(value, float) and math.isinf(value) else "not a number"
        return Cell(NA, f"{what} in results.json, where the schema wants null")
    text = _num(value, kind)
    if _finite(sd):
        text += f" ± {_num(sd, 'rank' if kind == 'cond' else kind)}"
    return Cell(text)


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def _ci(ci: Sequence[float] | None, kind: str = "auroc") -> str:
    if ci is None or len(ci) != 2 or not all(_finite(v) for v in ci):
        return ""
    return f"[{_num(ci[0], kind)}, {_num(ci[1], kind)}]"


def method_colours(results: Mapping[str, Any]) -> dict[str, str]:
    """One colour per method name, the same in every plot and table swatch.

    ``dense`` is always red; the others take a fixed palette in the order methods, ablations,
    then any other name found in the records (e.g. ``count_features``).
    """
    names: list[str] = []
    for name in [*results["config"]["methods"], *results["config"]["ablations"]]:
        if name not in names:
            names.append(name)
    for section in ("geometry", "training_curves", "probes", "robustness", "temporal", "alignment"):
        for rec in results.get(section) or ():
            if rec.get("method") not in names:
                names.append(rec["method"])
    colours: dict[str, str] = {}
    i = 0
    for name in names:
        if name == "dense":
            colours[name] = DENSE_COLOUR
        else:
            colours[name] = PALETTE[i % len(PALETTE)]
            i += 1
    return colours


# --------------------------------------------------------------------------- aggregation
def _mean(values: Iterable[Any]) -> float | None:
    vals = [float(v) for v in values if _finite(v)]
    return statistics.fmean(vals) if vals else None


def _sd(values: Iterable[Any]) -> float | None:
    vals = [float(v) for v in values if _finite(v)]
    return statistics.stdev(vals) if len(vals) > 1 else None


def _group(records: Iterable[Mapping[str, Any]], key: Callable[[Mapping[str, Any]], Any]) -> dict:
    out: dict[Any, list[Mapping[str, Any]]] = {}
    for rec in records:
        out.setdefault(key(rec), []).append(rec)
    return out


def _ordered_methods(results: Mapping[str, Any], present: Iterable[str]) -> list[str]:
    """Methods in report order (config methods, ablations, then others as first seen)."""
    present = list(dict.fromkeys(present))
    order = [*results["config"]["methods"], *results["config"]["ablations"]]
    return [m for m in order if m in present] + [m for m in present if m not in order]


def _row_kind(results: Mapping[str, Any], method: str) -> str:
    return "ablation" if method in results["config"]["ablations"] else "method"


def _join(values: Iterable[Any]) -> str:
    return ", ".join(str(v) for v in values)


# --------------------------------------------------------------------------- sentences
def endpoint_sentence(cmp: Mapping[str, Any], label: str, *, higher_is_better: bool) -> str:
    """State a dense-vs-best-baseline comparison honestly, whichever way it went.

    The wording comes from the numbers: a win is claimed only when the 95% CI of the difference
    excludes 0 in dense's favour; a higher point estimate whose CI includes 0 is called "not a
    significant win"; anything else is "does not beat". ``dense_wins`` is cross-checked: it may
    not claim a win that the point estimate contradicts.

    Args:
        cmp: ``comparison`` (or ``comparison.robustness``): ``dense``, ``best_baseline``,
            ``best_baseline_value``, ``difference`` (dense − best baseline),
            ``difference_ci``, ``dense_wins``.
        label: what is compared, e.g. ``"probe AUROC (macro over 2 tasks)"``.
        higher_is_better: ``True`` for AUROC, ``False`` for an AUROC drop.

    Without a CI (``difference_ci`` null) no difference is called significant.

    Raises:
        ValueError: ``dense_wins`` is true but the difference says dense is worse.
    """
    diff = float(cmp["difference"])
    base = cmp["best_baseline"]
    better = diff > 0 if higher_is_better else diff < 0
    if cmp["dense_wins"] and not better:
        raise ValueError(
            f"comparison for {label}: dense_wins is true but the difference {diff:+.4f} "
            "says dense is worse"
        )
    values = (
        f"(dense {_num(float(cmp['dense']), 'auroc')}, {base} "
        f"{_num(float(cmp['best_baseline_value']), 'auroc')}; dense − {base}"
    )
    if cmp["difference_ci"] is None:
        numbers = f"difference {_signed(diff)}, no bootstrap CI in results.json"
        if better:
            return (
                f"dense is above the best baseline ({base}) on {label} by the point estimate "
                f"only, untested: {numbers} {values})."
            )
        return f"dense does not beat the best baseline ({base}) on {label}: {numbers} {values})."
    lo, hi = (float(v) for v in cmp["difference_ci"])
    sig_better = lo > 0 if higher_is_better else hi < 0
    sig_worse = hi < 0 if higher_is_better else lo > 0
    numbers = f"difference {_signed(diff)}, 95% CI [{lo:.3f}, {hi:.3f}]"
    values += ", paired patient-level bootstrap)"
    if better and sig_better:
        return f"dense beats the best baseline ({base}) on {label}: {numbers} {values}."
    if better:
        return (
            f"dense does not significantly beat the best baseline ({base}) on {label}: "
            f"{numbers}, which includes 0 {values}."
        )
    tail = f"; the CI excludes 0: {base} is better" if sig_worse else ""
    return f"dense does not beat the best baseline ({base}) on {label}: {numbers}{tail} {values}."


# --------------------------------------------------------------------------- header
def _facts(results: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    cfg = results["config"]
    ds = results["dataset"]
    facts: list[tuple[str, str]] = []
    text = str(ds["name"])
    if _finite(ds.get("n_subjects")):
        text += f", {ds['n_subjects']:,} subjects"
    splits = ds.get("n_subjects_per_split") or {}
    if splits:
        text += " (" + ", ".join(f"{k} {v:,}" for k, v in splits.items() if _finite(v)) + ")"
    if ds.get("path"):
        text += f"; read from {ds['path']}"
    facts.append(("Dataset", text))
    tasks = results.get("tasks") or []
    if tasks:
        facts.append(("Tasks", _join(t["name"] for t in tasks)))
    seeds = list(cfg["seeds"])
    seed_text = f"{_join(seeds)} ({len(seeds)} seed{'s' if len(seeds) != 1 else ''})"
    if len(seeds) < 3:
        seed_text += "; a benchmark needs at least 3"
    facts.append(("Seeds", seed_text))
    steps, batch = cfg.get("budget_steps"), cfg.get("batch_size")
    if _finite(steps) and _finite(batch):
        budget = (
            f"{steps:,} optimizer steps × batch {batch:,} = {steps * batch:,} samples per "
            "method (equal encoder passes)"
        )
    else:
        budget = "not recorded"
    if _finite(results.get("seconds")):
        budget += f"; wall-clock of the whole benchmark {_wall(results['seconds'])}"
    facts.append(("Budget", budget))
    details = []
    if _finite(cfg.get("k")):
        details.append(f"subspace distances at k = {cfg['k']}")
    if _finite(cfg.get("window_days")):
        details.append(f"time windows of {cfg['window_days']:g} days")
    if details:
        facts.append(("Protocol", "; ".join(details)))
    versions = results.get("versions") or {}
    if versions:
        facts.append(("Versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    machine = results.get("machine") or {}
    if machine:
        parts = [str(machine[k]) for k in ("platform",) if machine.get(k)]
        if _finite(machine.get("cpus")):
            parts.append(f"{machine['cpus']} CPUs")
        if machine.get("device"):
            parts.append(f"device {machine['device']}")
        if _finite(machine.get("torch_threads")):
            parts.append(f"{machine['torch_threads']} torch threads")
        facts.append(("Machine", ", ".join(parts)))
    if results.get("created"):
        facts.append(("Created", str(results["created"])))
    return tuple(facts)


def _wall(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _banner(results: Mapping[str, Any]) -> str:
    n_seeds = len(results["config"]["seeds"])
    if results["scale"] == "smoke":
        return (
            "Smoke scale: these are not benchmark-grade numbers. The run used the demo's small "
            "budget to check that every stage works end to end; do not compare methods on it."
        )
    text = f"Scale: {results['scale']} benchmark."
    if n_seeds < 3:
        text += f" Only {n_seeds} seed(s): fewer than the 3 a benchmark needs."
    return text


# --------------------------------------------------------------------------- tables
def _backbone_shapes(results: Mapping[str, Any]) -> dict[str, list[tuple[int, int]]]:
    shapes: dict[str, list[tuple[int, int]]] = {}
    for rec in results.get("geometry") or ():
        if rec["output"] == "backbone":
            lst = shapes.setdefault(rec["method"], [])
            if (rec["n"], rec["d"]) not in lst:
                lst.append((rec["n"], rec["d"]))
    return shapes


def _reference(results: Mapping[str, Any], n: int, d: int) -> Mapping[str, Any] | None:
    for ref in results.get("reference") or ():
        if ref["n"] == n and ref["d"] == d:
            return ref
    return None


def _cond_reason(results: Mapping[str, Any], method: str, row: Mapping[str, Any]) -> str | None:
    if row.get("condition_number_reason"):
        return str(row["condition_number_reason"])
    reasons = [
        rec.get("condition_number_reason")
        for rec in results.get("geometry") or ()
        if rec["method"] == method
        and rec["output"] == "backbone"
        and rec["condition_number"] is None
        and rec.get("condition_number_reason")
    ]
    if reasons:
        return "infinite: " + "; ".join(dict.fromkeys(reasons))
    return None


def _has(results: Mapping[str, Any], section: str, method: str) -> bool:
    return any(rec["method"] == method for rec in results.get(section) or ())


def _comparison_table(results: Mapping[str, Any]) -> Table:
    rows_by_method = {row["method"]: row for row in results["table"]}
    shapes = _backbone_shapes(results)
    header = (
        "method",
        "seeds",
        "n × d",
        "effective rank",
        "condition number",
        "cond. number @k",
        "temporal subspace distance",
        "probe AUROC",
        "robustness drop",
        "seed alignment (CKA)",
    )
    rows = []
    for method in [*results["config"]["methods"], *results["config"]["ablations"]]:
        row = rows_by_method[method]

        def reason(key: str, fallback: str | None, row: Mapping[str, Any] = row) -> str | None:
            return row.get(f"{key}_reason") or fallback

        shape = shapes.get(method, [])
        no_geometry = None if shape else "no embedding geometry (e.g. a probe-only baseline)"
        shape_cell = Cell(_join(f"{n} × {d}" for n, d in shape)) if shape else Cell(NA)
        cells = (
            Cell(method),
            fmt(row["n_seeds"], "int"),
            shape_cell,
            fmt(
                row["effective_rank"],
                "rank",
                sd=row["effective_rank_sd"],
                reason=reason("effective_rank", no_geometry),
            ),
            fmt(
                row["condition_number"],
                "cond",
                reason=_cond_reason(results, method, row) or no_geometry,
            ),
            fmt(
                row["condition_number_k"], "cond", reason=reason("condition_number_k", no_geometry)
            ),
            fmt(
                row["temporal_subspace_distance"],
                "dist",
                reason=reason(
                    "temporal_subspace_distance",
                    None if _has(results, "temporal", method) else "no temporal windows measured",
                ),
            ),
            fmt(
                row["probe_auroc"],
                "auroc",
                sd=row["probe_auroc_sd"],
                reason=reason(
                    "probe_auroc", None if _has(results, "probes", method) else "no linear probe"
                ),
            ),
            fmt(
                row["robustness_drop"],
                "drop",
                reason=reason(
                    "robustness_drop",
                    None if _has(results, "robustness", method) else "no perturbation measured",
                ),
            ),
            fmt(
                row["seed_alignment_cka"],
                "cka",
                reason=reason(
                    "seed_alignment_cka",
                    "one seed: no pair of seeds to align" if row["n_seeds"] == 1 else None,
                ),
            ),
        )
        rows.append(Row(cells, method=method, kind=_row_kind(results, method)))

    chance = _mean(rec["chance"] for rec in results.get("temporal") or ())
    foot = []
    seen: list[tuple[int, int]] = []
    for shape in shapes.values():
        for n, d in shape:
            if (n, d) in seen:
                continue
            seen.append((n, d))
            ref = _reference(results, n, d)
            no_ref = None if ref is not None else f"results.json has no reference for n={n}, d={d}"
            ref = ref or {}
            cells = (
                Cell(f"isotropic Gaussian (n={n}, d={d})"),
                Cell(NA),
                Cell(f"{n} × {d}"),
                fmt(ref.get("effective_rank"), "rank", reason=no_ref),
                fmt(ref.get("condition_number"), "cond", reason=no_ref),
                fmt(
                    ref.get("condition_number_k"),
                    "cond",
                    reason=no_ref,
                ),
                Cell(f"{_num(chance, 'dist')} (chance)") if chance is not None else Cell(NA),
                Cell("0.500 (chance)"),
                Cell(NA),
                Cell("0.000 (independent)"),
            )
            foot.append(Row(cells, kind="reference"))
    seeds = len(results["config"]["seeds"])
    caption = (
        "One row per method, then per ablation; mean over seeds, ± the standard deviation over "
        f"seeds where there are several ({seeds} seed{'s' if seeds != 1 else ''} in this run). "
        "Geometry of the backbone output on the held-out subjects (higher effective rank and a "
        "condition number nearer 1 are more isotropic). Temporal subspace distance: adjacent "
        "windows of the same subjects, lower is more stable. Probe AUROC: linear probe, macro "
        "over tasks, all shots, raw embeddings. Robustness drop: clean minus perturbed AUROC "
        "as summarised by the benchmark (lower is more robust; each perturbation and level is "
        "in the robustness table). Seed alignment: debiased linear "
        "CKA between two seeds on the same rows. The reference rows give what an isotropic "
        "Gaussian matrix of the same (n, d) scores, the chance level of the subspace distance "
        "and of AUROC, and the CKA of independent matrices: spectral numbers depend on (n, d), "
        "so compare methods only at equal shape."
    )
    return Table(
        "comparison",
        "Comparison of methods",
        caption,
        header,
        tuple(rows),
        tuple(foot),
    )


def _tasks_table(results: Mapping[str, Any]) -> Table:
    tasks = results.get("tasks") or []
    rows = tuple(
        Row(
            (
                Cell(str(t["name"])),
                fmt(t.get("n_train"), "int"),
                fmt(t.get("n_tuning"), "int"),
                fmt(t.get("n_test"), "int"),
                fmt(t.get("prevalence_test"), "pct"),
            )
        )
        for t in tasks
    )
    return Table(
        "tasks",
        "Tasks",
        "Prediction tasks: evaluation rows (labelled prediction times) per split, and the "
        "outcome prevalence among all held-out labels (the evaluation rows may hold a uniform "
        "sample of the negatives; see the benchmark's notes).",
        ("task", "train", "tuning", "test", "prevalence (test)"),
        rows,
        empty=None if rows else "results.json lists no tasks.",
    )


def _task_names(results: Mapping[str, Any], probes: Iterable[Mapping[str, Any]]) -> list[str]:
    names = [t["name"] for t in results.get("tasks") or ()]
    for rec in probes:
        if rec["task"] not in names:
            names.append(rec["task"])
    return names


def _probe_table(results: Mapping[str, Any]) -> Table:
    probes = [p for p in results.get("probes") or () if p["k"] == "all"]
    tasks = _task_names(results, probes)
    header = ("method", "embedding", *tasks, "macro")
    groups = _group(probes, lambda p: (p["method"], p["embedding"]))
    embeddings = sorted({p["embedding"] for p in probes}, key=lambda e: (e != "raw", e))
    rows = []
    for method in _ordered_methods(results, (p["method"] for p in probes)):
        for emb in embeddings:
            recs = groups.get((method, emb))
            if not recs:
                continue
            by_task = _group(recs, lambda p: p["task"])
            cells = [Cell(method), Cell(emb)]
            means = []
            for task in tasks:
                trecs = by_task.get(task, [])
                mean = _mean(p["auroc"] for p in trecs)
                if mean is None:
                    cells.append(Cell(NA, "no probe for this task"))
                    continue
                means.append(mean)
                cis = [p.get("auroc_ci") for p in trecs if p.get("auroc_ci")]
                ci = [_mean(c[0] for c in cis), _mean(c[1] for c in cis)] if cis else None
                text = _num(mean, "auroc")
                if _ci(ci):
                    text += f" {_ci(ci)}"
                cells.append(Cell(text))
            macro = statistics.fmean(means) if len(means) == len(tasks) and means else None
            cells.append(fmt(macro, "auroc", reason="a task is missing"))
            rows.append(Row(tuple(cells), method=method, kind=_row_kind(results, method)))
    return Table(
        "probes",
        "Linear probes per task",
        "Test AUROC of an L2 logistic-regression probe on frozen embeddings (all training "
        "shots), mean over seeds; in brackets the 95% patient-level bootstrap CI (1,000 "
        "resamples), its bounds averaged over seeds. raw: the embeddings as they are; "
        "whitened: after ZCA whitening fitted on the training split (whitening alone can raise "
        "a probe's AUROC). Macro: mean over tasks. Chance is 0.5.",
        tuple(header),
        tuple(rows),
        empty=None if rows else "results.json has no full-data probe records.",
        text_columns=2,
    )


def _kshot_table(results: Mapping[str, Any]) -> Table:
    probes = [p for p in results.get("probes") or () if p["k"] != "all" and p["embedding"] == "raw"]
    ks = sorted({int(p["k"]) for p in probes})
    groups = _group(probes, lambda p: (p["method"], int(p["k"])))
    draws = sorted({p["n_draws"] for p in probes if _finite(p.get("n_draws"))})
    rows = []
    for method in _ordered_methods(results, (p["method"] for p in probes)):
        cells = [Cell(method)]
        for k in ks:
            recs = groups.get((method, k), [])
            cells.append(
                fmt(
                    _mean(p["auroc"] for p in recs),
                    "auroc",
                    sd=_mean(p.get("auroc_sd") for p in recs),
                    reason=f"no probe at k = {k}",
                )
            )
        note = " (saw labels in pretraining)" if method == "supervised" else ""
        cells[0] = Cell(method + note)
        rows.append(Row(tuple(cells), method=method, kind=_row_kind(results, method)))
    draws_text = f" ({_join(draws)} draws per k)" if draws else ""
    return Table(
        "kshot",
        "k-shot linear probes",
        "Test AUROC with k labelled training subjects per class, raw embeddings, macro over "
        f"tasks and mean over seeds{draws_text}; ± the standard deviation over draws (averaged "
        "over tasks and seeds). Supervised pretraining saw the labels, so it is not a k-shot "
        "comparison. Chance is 0.5.",
        ("method", *(f"k = {k}" for k in ks)),
        tuple(rows),
        empty=None if rows else "results.json has no k-shot probe records.",
    )


def _level(perturbation: str, level: float) -> str:
    if perturbation == "time_jitter":
        return f"±{level:g} d"
    return f"{100 * level:g}%"


def _robustness_tables(results: Mapping[str, Any]) -> tuple[Table, Table]:
    recs = list(results.get("robustness") or ())
    perts = list(dict.fromkeys(r["perturbation"] for r in recs))
    cols = [
        (p, lvl)
        for p in perts
        for lvl in sorted({r["level"] for r in recs if r["perturbation"] == p})
    ]
    groups = _group(recs, lambda r: (r["method"], r["perturbation"], r["level"]))
    header = ("method", *(f"{p} {_level(p, lvl)}" for p, lvl in cols))
    drop_rows, dist_rows = [], []
    for method in _ordered_methods(results, (r["method"] for r in recs)):
        drop_cells, dist_cells = [Cell(method)], [Cell(method)]
        for p, lvl in cols:
            g = groups.get((method, p, lvl), [])
            drop_cells.append(fmt(_mean(r["auroc_drop"] for r in g), "drop", reason="not run"))
            dist_cells.append(
                fmt(_mean(r.get("subspace_distance") for r in g), "dist", reason="not run")
            )
        kind = _row_kind(results, method)
        drop_rows.append(Row(tuple(drop_cells), method=method, kind=kind))
        dist_rows.append(Row(tuple(dist_cells), method=method, kind=kind))
    empty = None if recs else "results.json has no robustness records."
    drop = Table(
        "robustness",
        "Robustness: AUROC drop under perturbation",
        "Clean minus perturbed test AUROC (positive: the probe got worse), probe fitted on "
        "clean data, macro over tasks and mean over seeds. Levels: the fraction of events, "
        "codes or tokens affected, or the time jitter in days.",
        header,
        tuple(drop_rows),
        empty=empty,
    )
    dist = Table(
        "drift",
        "Robustness: embedding drift under perturbation",
        "Subspace distance between the clean and the perturbed embeddings of the same rows "
        "(0: same subspace, 1: orthogonal), macro over tasks and mean over seeds.",
        header,
        tuple(dist_rows),
        empty=empty,
    )
    return drop, dist


def _temporal_table(results: Mapping[str, Any]) -> Table:
    recs = list(results.get("temporal") or ())
    windows = sorted({r["window"] for r in recs})
    labels = {}
    for r in recs:
        labels.setdefault(r["window"], str(r.get("label") or f"window {r['window']}"))
    groups = _group(recs, lambda r: (r["method"], r["window"]))
    rows = []
    for method in _ordered_methods(results, (r["method"] for r in recs)):
        cells = [Cell(method)]
        for w in windows:
            g = groups.get((method, w), [])
            dist = _mean(r["subspace_distance"] for r in g)
            floor = _mean(r["floor"] for r in g)
            if dist is None:
                cells.append(Cell(NA, "window not measured"))
            elif floor is None:
                cells.append(Cell(_num(dist, "dist")))
            else:
                cells.append(Cell(f"{_num(dist, 'dist')} (floor {_num(floor, 'dist')})"))
        rows.append(Row(tuple(cells), method=method, kind=_row_kind(results, method)))
    by_window = _group(recs, lambda r: r["window"])
    foot = ()
    if recs:
        chance_cells = [Cell("chance √(1 − k/n)")]
        for w in windows:
            chance_cells.append(fmt(_mean(r["chance"] for r in by_window[w]), "dist"))
        foot = (Row(tuple(chance_cells), kind="reference"),)
    return Table(
        "temporal",
        "Temporal stability",
        "Subspace distance between the embeddings of the same held-out subjects at adjacent "
        "time windows (lower is more stable), mean over seeds; in brackets the no-drift floor "
        "(the same window split in two halves). The last row is the chance level of two random "
        "subspaces.",
        ("method", *(labels[w] for w in windows)),
        tuple(rows),
        foot,
        empty=None if recs else "results.json has no temporal records.",
    )


def _alignment_table(results: Mapping[str, Any]) -> Table:
    recs = list(results.get("alignment") or ())
    order = {m: i for i, m in enumerate(_ordered_methods(results, (r["method"] for r in recs)))}
    rows = []
    for r in sorted(recs, key=lambda r: (order[r["method"]], r["kind"])):
        angles = [a for a in r.get("principal_angles_deg") or () if _finite(a)]
        if angles:
            angle_text = (
                f"{_num(min(angles), 'angle')} / {_num(statistics.median(angles), 'angle')} / "
                f"{_num(max(angles), 'angle')}"
            )
            angle_cell = Cell(angle_text)
        else:
            angle_cell = Cell(NA, "no principal angles recorded")
        rows.append(
            Row(
                (
                    Cell(r["method"]),
                    Cell(str(r["kind"])),
                    Cell(f"{r['a']} vs {r['b']}"),
                    fmt(r.get("n"), "int"),
                    fmt(r["subspace_distance"], "dist"),
                    fmt(r["linear_cka_debiased"], "cka"),
                    angle_cell,
                ),
                method=r["method"],
                kind=_row_kind(results, r["method"]),
            )
        )
    return Table(
        "alignment",
        "Alignment between seeds and modalities",
        "Two embeddings of the same rows: two seeds of one method, or two modalities of one "
        "multimodal run. Subspace distance (sample space, 0 = same subspace; chance is near 1), "
        "debiased linear CKA (independent matrices score 0, identical ones 1) and the principal "
        "angles between the two subspaces (min / median / max, degrees).",
        ("method", "kind", "pair", "n", "subspace distance", "debiased CKA", "angles (°)"),
        tuple(rows),
        empty=None if recs else "results.json has no alignment records.",
        text_columns=3,
    )


def _geometry_table(results: Mapping[str, Any]) -> Table:
    recs = list(results.get("geometry") or ())
    groups = _group(recs, lambda r: (r["method"], r["output"]))
    outputs = sorted({r["output"] for r in recs}, key=lambda o: (o != "backbone", o))
    rows = []
    shapes: list[tuple[int, int]] = []
    for method in _ordered_methods(results, (r["method"] for r in recs)):
        for out in outputs:
            g = groups.get((method, out))
            if not g:
                continue
            shape = list(dict.fromkeys((r["n"], r["d"]) for r in g))
            shapes.extend(s for s in shape if s not in shapes)
            conds = [r["condition_number"] for r in g]
            if all(_finite(c) for c in conds):
                cond_cell = fmt(_mean(conds), "cond")
            else:
                reasons = dict.fromkeys(
                    r.get("condition_number_reason") or "no reason recorded"
                    for r in g
                    if not _finite(r["condition_number"])
                )
                which = "every seed" if not any(_finite(c) for c in conds) else "some seeds"
                cond_cell = Cell(NA, f"infinite for {which}: " + "; ".join(reasons))
            ks = sorted({r["k"] for r in g if _finite(r.get("k"))})
            rows.append(
                Row(
                    (
                        Cell(method),
                        Cell(out),
                        Cell(_join(f"{n} × {d}" for n, d in shape)),
                        fmt(
                            _mean(r["effective_rank"] for r in g),
                            "rank",
                            sd=_sd(r["effective_rank"] for r in g),
                        ),
                        fmt(_mean(r.get("effective_rank_eig") for r in g), "rank"),
                        fmt(_mean(r.get("rankme") for r in g), "rank"),
                        cond_cell,
                        fmt(_mean(r.get("condition_number_k") for r in g), "cond"),
                        Cell(_join(ks) if ks else NA),
                    ),
                    method=method,
                    kind=_row_kind(results, method),
                )
            )
    foot = []
    for n, d in shapes:
        ref = _reference(results, n, d)
        if ref is None:
            continue
        foot.append(
            Row(
                (
                    Cell(f"isotropic Gaussian (n={n}, d={d})"),
                    Cell(NA),
                    Cell(f"{n} × {d}"),
                    fmt(ref["effective_rank"], "rank"),
                    fmt(ref.get("effective_rank_eig"), "rank"),
                    fmt(ref.get("rankme"), "rank"),
                    fmt(ref["condition_number"], "cond"),
                    fmt(ref.get("condition_number_k"), "cond"),
                    Cell(NA),
                ),
                kind="reference",
            )
        )
    return Table(
        "geometry",
        "Geometry by output",
        "Backbone and projector outputs on the held-out subjects, mean over seeds (± sd of the "
        "effective rank). Effective rank: exp of the entropy of the normalised singular values "
        "of the centred embeddings (Roy & Vetterli 2007); (eig): the same on covariance "
        "eigenvalues; RankMe: on the uncentred embeddings (Garrido et al. 2023). Condition "
        "number: largest over smallest singular value; @k: over the k-th, k = round(effective "
        "rank).",
        (
            "method",
            "output",
            "n × d",
            "effective rank",
            "eff. rank (eig)",
            "RankMe",
            "condition number",
            "cond. number @k",
            "k",
        ),
        tuple(rows),
        tuple(foot),
        empty=None if recs else "results.json has no geometry records.",
        text_columns=2,
    )


DEFINITIONS = (
    (
        "effective rank",
        "exp(H(q)) with q = s / Σs, s the singular values of the centred embeddings Zc "
        "(Roy & Vetterli 2007); between 1 and min(n − 1, d).",
    ),
    (
        "condition number",
        "s₁ / s_min of Zc; infinite (printed —, with the reason) when the numerical rank is "
        "below min(n − 1, d), e.g. an encoder ending in LayerNorm. @k: s₁ / s_k at "
        "k = round(effective rank).",
    ),
    (
        "subspace distance",
        "sample-space distance between the top-k left singular vectors Ua, Ub of two paired "
        "centred matrices: √(1 − ‖Uaᵀ Ub‖²_F / k), in [0, 1]; chance √(1 − k/n).",
    ),
    (
        "debiased linear CKA",
        "linear CKA (Kornblith et al. 2019) with the unbiased HSIC estimator (Song et al. 2012); "
        "0 in expectation for independent matrices.",
    ),
    (
        "isotropic reference",
        "the same metric on isotropic Gaussian matrices of the same (n, d): spectral numbers "
        "depend strongly on the shape, so a value means little without it.",
    ),
    (
        "primary endpoints",
        "declared before running: linear-probe AUROC (macro over tasks) and its drop under "
        "perturbation, dense minus the best non-dense baseline with a paired patient-level "
        "bootstrap CI. Geometry is secondary: dense optimises it directly.",
    ),
)


def build_report(results: Mapping[str, Any]) -> Report:
    """Validate ``results`` and build the format-neutral :class:`Report`.

    Args:
        results: the ``results.json`` object of ``densefeat benchmark``.

    Returns:
        the report content: header facts, endpoint sentences, tables, method colours.

    Raises:
        ValueError: see :func:`validate`.
    """
    validate(results)
    n_tasks = len({p["task"] for p in results.get("probes") or () if p["k"] == "all"}) or len(
        results.get("tasks") or ()
    )
    task_text = f" (macro over {n_tasks} task{'s' if n_tasks != 1 else ''})" if n_tasks else ""
    cmp = results["comparison"]
    endpoints = []
    if _check_comparison(cmp, "comparison"):
        higher = _higher_is_better(cmp, True)
        label = f"probe AUROC{task_text}" + ("" if higher else " (lower is better)")
        endpoints.append(endpoint_sentence(cmp, label, higher_is_better=higher))
    else:
        endpoints.append(
            "No primary-endpoint comparison in results.json (comparison): no dense run, no "
            "baseline or no task to compare on."
        )
    rob = cmp.get("robustness") if isinstance(cmp, Mapping) else None
    if _check_comparison(rob, "comparison.robustness"):
        higher = _higher_is_better(rob, False)
        label = "AUROC drop under perturbation" + ("" if higher else " (lower is better)")
        endpoints.append(endpoint_sentence(rob, label, higher_is_better=higher))
    else:
        endpoints.append("No robustness comparison in results.json (comparison.robustness).")
    if results["scale"] == "smoke":
        endpoints.append(
            "At smoke scale these differences are not evidence either way: rerun at full scale "
            "with at least 3 seeds."
        )
    drop, drift = _robustness_tables(results)
    tables = (
        _tasks_table(results),
        _probe_table(results),
        _kshot_table(results),
        drop,
        drift,
        _temporal_table(results),
        _alignment_table(results),
        _geometry_table(results),
    )
    scale = str(results["scale"])
    return Report(
        title="densefeat benchmark report"
        + (" (smoke scale)" if scale == "smoke" else f" ({scale} scale)"),
        scale=scale,
        scale_banner=_banner(results),
        facts=_facts(results),
        endpoints=tuple(endpoints),
        comparison=_comparison_table(results),
        tables=tables,
        definitions=DEFINITIONS,
        colours=method_colours(results),
    )
