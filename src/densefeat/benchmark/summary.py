"""The summary table and the primary-endpoint comparison of a benchmark.

Primary endpoints (docs/design.md, declared before running): the linear-probe AUROC, macro-averaged
over tasks (all shots, raw embeddings), and its drop under the test-time perturbations
(macro over tasks and perturbations). ``dense`` is compared with the best *baseline* on each
endpoint: every other method of the table except dense's own ablations and the untrained
encoder, plus the count-features baseline. The best baseline is CHOSEN on the tuning split
(the macro over tasks of each probe's ``val_auroc``, the tuning-split AUROC of its chosen C;
:func:`macro_tuning_auroc`), never on the held-out scores its interval is computed from; the
robustness endpoint compares dense with that same baseline. The untrained encoder (``random``)
gets its own comparison, ``dense - random`` (:func:`compare_pair`). A difference gets a paired,
patient-level bootstrap CI: one resample of held-out subjects is drawn and applied to every
task, method and seed, the per-resample macro AUROCs are averaged over seeds, and the 2.5 /
97.5 percentiles of the differences are the CI.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..eval.bootstrap import weighted_auroc
from .config import ABLATIONS
from .rows import Task

__all__ = [
    "compare",
    "compare_pair",
    "hybrid_ablation",
    "kshot_differences",
    "macro_tuning_auroc",
    "resampled_endpoints",
    "summary_table",
]

#: Not baselines for the comparison: the untrained encoder is a control.
_CONTROLS = ("random",)


def _mean(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    if not vals or len(vals) < len(xs):
        return None
    return float(np.mean(vals))


def _sd(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return float(np.std(vals, ddof=1)) if len(vals) >= 2 else None


def _by(records: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        out[tuple(r[k] for k in keys)].append(r)
    return out


def macro_auroc(probes: list[dict]) -> dict[tuple[str, int], float]:
    """(method, seed) -> mean AUROC over tasks (all shots, raw embeddings)."""
    full = [p for p in probes if p["k"] == "all" and p["embedding"] == "raw"]
    return {
        key: float(np.mean([p["auroc"] for p in rs]))
        for key, rs in _by(full, "method", "seed").items()
    }


def _tuning_score(probe: Mapping[str, Any]) -> float | None:
    if probe.get("val_auroc") is not None:
        return probe["val_auroc"]
    folds = [v for v in probe.get("val_auroc_per_fold") or () if v is not None]
    return float(np.mean(folds)) if folds else None


def macro_tuning_auroc(probes: list[dict]) -> dict[tuple[str, int], float]:
    """(method, seed) -> mean over tasks of the tuning-split AUROC (``val_auroc``) of the
    full-data probes on raw embeddings; what the best baseline is chosen by (never held-out
    rows). A cross-fitted probe (small cohorts) has no tuning split: its score is the mean of
    its folds' tuning-fold AUROCs (``val_auroc_per_fold``, each fold's C chosen there), rows
    that other folds also score as test rows, the same small optimism for every method. A
    (method, seed) with a task lacking both is left out."""
    full = [p for p in probes if p["k"] == "all" and p["embedding"] == "raw"]
    out = {}
    for key, rs in _by(full, "method", "seed").items():
        vals = [_tuning_score(p) for p in rs]
        if all(v is not None for v in vals):
            out[key] = float(np.mean(vals))
    return out


def macro_drop(robustness: list[dict]) -> dict[tuple[str, int], float]:
    """(method, seed) -> mean AUROC drop over tasks and perturbations."""
    return {
        key: float(np.mean([r["auroc_drop"] for r in rs]))
        for key, rs in _by(robustness, "method", "seed").items()
    }


def summary_table(results: Mapping[str, Any], names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per method/ablation (and count features): means over seeds."""
    geo = _by([g for g in results["geometry"] if g["output"] == "backbone"], "method")
    temporal = _by(results["temporal"], "method", "seed")
    auroc = macro_auroc(results["probes"])
    drop = macro_drop(results["robustness"])
    align = _by([a for a in results["alignment"] if a["kind"] == "seeds"], "method")
    rows = []
    for name in names:
        g = geo.get((name,), [])
        seeds = sorted({r["seed"] for r in g} | {s for (m, s) in auroc if m == name})
        t = [
            float(np.mean([r["subspace_distance"] for r in temporal[(name, s)]]))
            for s in seeds
            if (name, s) in temporal
        ]
        a = [auroc[(name, s)] for s in seeds if (name, s) in auroc]
        dr = [drop[(name, s)] for s in seeds if (name, s) in drop]
        rows.append(
            {
                "method": name,
                "n_seeds": len(seeds),
                "effective_rank": _mean([r["effective_rank"] for r in g]) if g else None,
                "effective_rank_sd": _sd([r["effective_rank"] for r in g]),
                "condition_number": _mean([r["condition_number"] for r in g]) if g else None,
                "condition_number_reason": next(
                    (r["condition_number_reason"] for r in g if r["condition_number"] is None),
                    None,
                ),
                "condition_number_k": _mean([r["condition_number_k"] for r in g]) if g else None,
                "temporal_subspace_distance": float(np.mean(t)) if t else None,
                "probe_auroc": float(np.mean(a)) if a else None,
                "probe_auroc_sd": _sd(a),
                "robustness_drop": float(np.mean(dr)) if dr else None,
                "seed_alignment_cka": _mean(
                    [r["linear_cka_debiased"] for r in align.get((name,), [])]
                )
                if align.get((name,))
                else None,
            }
        )
    return rows


def _baselines(names: Sequence[str]) -> list[str]:
    return [n for n in names if n != "dense" and n not in ABLATIONS and n not in _CONTROLS]


def _means(values: Mapping[tuple[str, int], float]) -> dict[str, float]:
    grouped: dict[str, list[float]] = defaultdict(list)
    for (m, _), v in values.items():
        grouped[m].append(v)
    return {m: float(np.mean(vs)) for m, vs in grouped.items()}


def compare_pair(
    values: Mapping[tuple[str, int], float],
    resampled: Callable[[str], np.ndarray | None],
    a: str,
    b: str,
    *,
    lower_is_better: bool = False,
) -> dict[str, Any] | None:
    """``a - b`` on one endpoint with its paired bootstrap CI.

    The point estimate is the difference of the seed means; the CI is the 2.5 / 97.5
    percentiles of ``resampled(a) - resampled(b)`` (the same shared resamples for both, so the
    difference is paired).

    Returns:
        ``{"a", "b", "a_value", "b_value", "difference", "difference_ci", "a_wins",
        "significant", "lower_is_better"}``, or None when ``a`` or ``b`` has no value.
    """
    means = _means(values)
    if a not in means or b not in means:
        return None
    diff = means[a] - means[b]
    ra, rb = resampled(a), resampled(b)
    ci = None
    if ra is not None and rb is not None:
        d = ra - rb
        d = d[np.isfinite(d)]
        if d.size:
            ci = [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))]
    wins = diff < 0 if lower_is_better else diff > 0
    return {
        "a": a,
        "b": b,
        "a_value": means[a],
        "b_value": means[b],
        "difference": diff,
        "difference_ci": ci,
        "a_wins": bool(wins),
        "significant": ci is not None and (ci[1] < 0 or ci[0] > 0),
        "lower_is_better": lower_is_better,
    }


def kshot_differences(
    probes: Sequence[Mapping[str, Any]], a: str, b: str, *, embedding: str = "raw"
) -> list[dict[str, Any]]:
    """Label efficiency, ``a - b`` on the k-shot probes' held-out AUROC, per k (exploratory).

    A cell is one ``(seed, task)`` that both methods have (seed ``s`` of ``a`` against seed
    ``s`` of ``b``; count features have seed 0 only, so they pair with seed 0). Each cell's
    value is already the mean over the k-shot draws. Per k: the mean difference over the
    cells, a 95% Student-t interval over them, and how many cells are positive. The cells
    share held-out rows (the same subjects in every seed and task), so the interval is
    optimistic; it is a secondary, exploratory comparison, not a declared endpoint (those use
    the patient-level bootstrap of :func:`compare_pair` on all shots).

    Returns:
        one record per k with at least 2 cells, in increasing k: ``{"k", "a", "b", "n_cells",
        "difference", "difference_ci", "positive_cells"}``.
    """
    from scipy import stats

    values: dict[tuple[str, Any, str, int], float] = {}
    for r in probes:
        k, auroc = r.get("k"), r.get("auroc")
        if r.get("embedding", "raw") != embedding or not isinstance(k, int) or auroc is None:
            continue
        if math.isfinite(float(auroc)):
            values[(r["method"], r["seed"], r["task"], k)] = float(auroc)
    out = []
    for k in sorted({key[3] for key in values}):
        diffs = np.array(
            [
                v - values[(b, seed, task, kk)]
                for (m, seed, task, kk), v in sorted(values.items(), key=str)
                if m == a and kk == k and (b, seed, task, kk) in values
            ]
        )
        if diffs.size < 2:
            continue
        mean = float(diffs.mean())
        half = float(stats.t.ppf(0.975, diffs.size - 1) * diffs.std(ddof=1) / math.sqrt(diffs.size))
        out.append(
            {
                "k": k,
                "a": a,
                "b": b,
                "n_cells": int(diffs.size),
                "difference": mean,
                "difference_ci": [mean - half, mean + half],
                "positive_cells": int((diffs > 0).sum()),
            }
        )
    return out


def best_baseline(select_by: Mapping[tuple[str, int], float], names: Sequence[str]) -> str | None:
    """The baseline (table order among ties) with the highest seed-mean of ``select_by``
    (the tuning-split macro AUROC, :func:`macro_tuning_auroc`); None without candidates."""
    means = _means(select_by)
    cands = [m for m in _baselines(names) if m in means]
    return max(cands, key=lambda m: means[m]) if cands else None


def compare(
    values: Mapping[tuple[str, int], float],
    resampled: Callable[[str], np.ndarray | None],
    names: Sequence[str],
    *,
    lower_is_better: bool = False,
    select_by: Mapping[tuple[str, int], float] | None = None,
    best: str | None = None,
) -> dict[str, Any] | None:
    """dense against the best baseline on one endpoint.

    Args:
        values: (method, seed) -> the endpoint's point estimate (held-out rows).
        resampled: method -> (B,) the seed-averaged endpoint on each shared bootstrap resample
            (None when it cannot be computed).
        names: candidate methods (table order).
        lower_is_better: the robustness drop is better when lower.
        select_by: (method, seed) -> the score the best baseline is chosen by (higher is
            better): the tuning-split macro AUROC. None: chosen on ``values`` themselves
            (the old, optimistic rule, kept for callers without tuning scores).
        best: the baseline to compare with, already chosen (overrides ``select_by``).

    Returns:
        the comparison record (``selected_on`` says how the baseline was chosen), or None
        without dense or baselines.
    """
    means = _means(values)
    if "dense" not in means:
        return None
    if best is None:
        if select_by is not None:
            best = best_baseline(select_by, [n for n in names if n in means])
            selected_on = "tuning_auroc"
        else:
            cands = [m for m in _baselines(names) if m in means]
            pick = min if lower_is_better else max
            best = pick(cands, key=lambda m: means[m]) if cands else None
            selected_on = "held_out"
    else:
        selected_on = "tuning_auroc"
    if best is None or best not in means:
        return None
    pair = compare_pair(values, resampled, "dense", best, lower_is_better=lower_is_better)
    assert pair is not None
    return {
        "dense": pair["a_value"],
        "best_baseline": best,
        "best_baseline_value": pair["b_value"],
        "difference": pair["difference"],
        "difference_ci": pair["difference_ci"],
        "dense_wins": pair["a_wins"],
        "significant": pair["significant"],
        "lower_is_better": lower_is_better,
        "selected_on": selected_on,
    }


def resampled_endpoints(
    arrays: dict[tuple[str, int], dict[str, np.ndarray]],
    tasks: list[Task],
    shared: dict[str, tuple[np.ndarray, np.ndarray]],
    perturbations: Sequence[tuple[str, float]],
    seed: int = 54321,
) -> tuple[Callable[[str], np.ndarray | None], Callable[[str], np.ndarray | None]]:
    """Per method: the seed-averaged macro AUROC / AUROC drop on each shared resample.

    Per seed, the macro over tasks on each shared resample (``shared``: per task, the labels and
    the (B, n) row weights of one resample of held-out subjects or note groups, shared by every
    method); then a two-level bootstrap that also redraws the seeds (with replacement) on each
    resample, so the interval carries training-seed variation as well as patient sampling.
    ``arrays[(method, seed)]`` holds ``scores/<task>`` and ``robust/<perturbation>/<level>/<task>``
    held-out scores in the order of ``shared``.
    """
    seed_rng = np.random.default_rng(seed)

    def over_seeds(per_seed: list[np.ndarray]) -> np.ndarray | None:
        if not per_seed:
            return None
        stack = np.stack(per_seed)  # (S, B)
        pick = seed_rng.integers(0, stack.shape[0], size=stack.shape)
        return np.take_along_axis(stack, pick, axis=0).mean(axis=0)

    def auroc(method: str) -> np.ndarray | None:
        per_seed = []
        for (m, _), arr in arrays.items():
            if m != method:
                continue
            per_task = [
                weighted_auroc(arr[f"scores/{t.name}"], shared[t.name][0], shared[t.name][1])
                for t in tasks
            ]
            per_seed.append(np.mean(per_task, axis=0))
        return over_seeds(per_seed)

    def drop(method: str) -> np.ndarray | None:
        per_seed = []
        for (m, _), arr in arrays.items():
            if m != method or not any(k.startswith("robust/") for k in arr):
                continue
            drops = []
            for t in tasks:
                y, w = shared[t.name]
                clean = weighted_auroc(arr[f"scores/{t.name}"], y, w)
                for p, level in perturbations:
                    drops.append(clean - weighted_auroc(arr[f"robust/{p}/{level}/{t.name}"], y, w))
            per_seed.append(np.mean(drops, axis=0))
        return over_seeds(per_seed)

    return auroc, drop


def seed_pairs(seeds: Sequence[int]) -> list[tuple[int, int]]:
    """All unordered pairs of seeds."""
    return list(itertools.combinations(sorted(seeds), 2))


def finite(x: float | None) -> float | None:
    """None for NaN/inf (JSON has neither)."""
    return None if x is None or not math.isfinite(x) else float(x)


#: The hybrid's ablation (secondary): what each part adds to the other, ``a - b``.
HYBRID_ABLATION = (("masked+dense", "masked"), ("masked+dense", "dense"), ("dense", "masked"))


def hybrid_ablation(
    values: Mapping[tuple[str, int], float], resampled: Callable[[str], np.ndarray | None]
) -> list[dict[str, Any]]:
    """The ``masked+dense`` hybrid against its parts, each with its paired bootstrap CI
    (:func:`compare_pair`): hybrid − masked (what the dense term adds to next-event
    prediction), hybrid − dense (what prediction adds to the dense objective), and dense −
    masked. Only the pairs whose two methods both ran; empty without the hybrid."""
    if "masked+dense" not in {m for m, _ in values}:
        return []
    out = []
    for a, b in HYBRID_ABLATION:
        row = compare_pair(values, resampled, a, b)
        if row is not None:
            out.append(row)
    return out
