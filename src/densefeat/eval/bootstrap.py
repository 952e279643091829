"""Vectorised patient-level bootstrap of AUROC and AUPRC (average precision).

The evaluation protocol (docs/design.md, "Evaluation protocol") reports every held-out
AUROC and AUPRC with a 95% confidence interval from 1,000 *patient-level* bootstrap resamples,
and compares two methods with a *paired* bootstrap of their difference. This module computes
all resamples at once with NumPy; no per-resample call into scikit-learn.

Resampling as weights
---------------------
A patient-level resample draws ``S`` subjects with replacement from the ``S`` subjects of the
evaluation set, and every drawn subject brings *all* of its rows (Efron & Tibshirani 1993,
ch. 6; the cluster bootstrap, as EHRSHOT does it, Wornow et al. 2023). Drawing subject ``s``
``c_s`` times is the same as giving each of its rows the weight ``c_s``, so ``B`` resamples are a
``(B, n)`` matrix of row multiplicities ``W[b, i] = c_{b, group(i)}``
(:func:`resample_weights`). ``groups=None`` resamples rows instead (each row its own group).

The metrics of one resample are computed by
:class:`~densefeat.eval.ranking.RankedScores`: the scores are sorted once, and a chunk of ``b``
resamples costs two gathers and two cumulative sums, ``O(b n)`` (the formulas are in
:mod:`densefeat.eval.ranking`).

Evaluation weights: rows may carry a fixed weight ``v_i`` (e.g. ``1 / r`` on negatives kept
at sampling rate ``r``, a Horvitz-Thompson estimate of the full-data metric); resample ``b``
then weighs row ``i`` by ``c_{b, group(i)} v_i`` and the point estimate by ``v_i``.

A resample without positives or without negatives has no AUROC / AP: its value is NaN, it is
left out of the interval, and the number of valid resamples is reported (``n_valid``).

Confidence intervals are percentile intervals (Efron & Tibshirani 1993, ch. 13): the
``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the valid resample values
(NumPy's default linear interpolation), as EHRSHOT reports them.

Memory: a ``(B, n)`` float64 matrix is ``8 B n`` bytes (1,000 x 200,000 = 1.6 GB), so resamples
are processed in chunks of ``chunk_size`` rows of ``W`` (default: about 2**22 weights, 32 MiB,
per chunk). The random draws are made chunk after chunk from one generator, so results do not
depend on the chunk size (tested). Everything is seeded (``numpy.random.default_rng(seed)``) and
deterministic.

References:
    Efron, B. & Tibshirani, R. (1993). An Introduction to the Bootstrap. Chapman & Hall.
    Wornow, M. et al. (2023). EHRSHOT: An EHR Benchmark for Few-Shot Evaluation of Foundation
    Models. NeurIPS Datasets and Benchmarks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .checks import check_weights
from .ranking import (
    METRICS,
    RankedScores,
    check_scores_labels,
    weighted_auroc,
    weighted_average_precision,
    weighted_metrics,
)

__all__ = [
    "METRICS",
    "MetricCI",
    "PairedDifference",
    "bootstrap_ci",
    "bootstrap_metrics",
    "paired_bootstrap_difference",
    "percentile_interval",
    "resample_weights",
    # Defined in densefeat.eval.ranking; still importable from here, where they used to live.
    "weighted_auroc",
    "weighted_average_precision",
]

#: Target number of float64 weights per chunk (32 MiB).
_CHUNK_ELEMENTS = 2**22


# --------------------------------------------------------------------------- input checks
def _group_index(groups: Any | None, n: int) -> tuple[np.ndarray, int]:
    """Dense group codes ``0..S-1`` per row (rows are their own group when ``groups`` is None)."""
    if groups is None:
        return np.arange(n), n
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups has shape {g.shape}, expected ({n},) (one id per row)")
    uniq, inverse = np.unique(g, return_inverse=True)
    return inverse.reshape(-1), len(uniq)


def _check_resamples(n_resamples: int, confidence: float | None = None) -> None:
    """Raise ``ValueError`` unless B is a positive integer and the coverage is in (0, 1)."""
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int | np.integer):
        raise ValueError(f"n_resamples must be an integer, got {n_resamples!r}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if confidence is not None and not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _chunk_rows(chunk_size: int | None, n: int, n_resamples: int) -> int:
    """Resamples per chunk: ``chunk_size``, or about 2**22 weights' worth of n-row resamples."""
    if chunk_size is None:
        return max(1, min(n_resamples, _CHUNK_ELEMENTS // max(n, 1)))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return min(chunk_size, n_resamples)


# --------------------------------------------------------------------------- resampling
def _resample_counts(
    n_groups: int, n_resamples: int, seed: int | np.random.Generator, chunk: int
) -> Iterator[np.ndarray]:
    """(b, S) float64 multiplicities of the groups, ``chunk`` resamples at a time."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        draws = rng.integers(0, n_groups, size=(b, n_groups))
        draws += (np.arange(b) * n_groups)[:, None]
        counts = np.bincount(draws.ravel(), minlength=b * n_groups)
        yield counts.reshape(b, n_groups).astype(np.float64)


def resample_weights(
    groups: Any | None,
    n_resamples: int = 1000,
    seed: int | np.random.Generator = 0,
    chunk_size: int | None = None,
    n: int | None = None,
) -> Iterator[np.ndarray]:
    """Bootstrap resamples as row-multiplicity matrices, chunk by chunk.

    Each resample draws the ``S`` distinct groups (subjects) with replacement, ``S`` times; a
    group drawn ``c`` times gives each of its rows the weight ``c``.

    Args:
        groups: (n,) group id per row (subject_id; identical texts share a group), or None
            for a row-level bootstrap (then ``n`` is required).
        n_resamples: B.
        seed: an int seed (or a Generator, consumed).
        chunk_size: resamples per yielded chunk (default: ~2**22 weights per chunk).
        n: number of rows when ``groups`` is None.

    Yields:
        (b, n) float64 arrays, b <= chunk_size, B rows in all; rows of one group always carry
        the same weight.
    """
    _check_resamples(n_resamples)
    if groups is None:
        if n is None:
            raise ValueError("resample_weights: pass n (number of rows) when groups is None")
        row_group, n_groups = np.arange(n), n
    else:
        row_group, n_groups = _group_index(groups, np.asarray(groups).shape[0])
    chunk = _chunk_rows(chunk_size, row_group.size, n_resamples)
    for counts in _resample_counts(n_groups, n_resamples, seed, chunk):
        yield counts[:, row_group]


def bootstrap_metrics(
    scores: Any,
    y: Any,
    groups: Any | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    metrics: Sequence[str] = METRICS,
    chunk_size: int | None = None,
    *,
    weights: Any | None = None,
) -> dict[str, np.ndarray]:
    """Metric values on B bootstrap resamples (patient-level when ``groups`` is given).

    Args:
        scores: (n,) finite scores.
        y: (n,) binary labels.
        groups: (n,) subject id per row, or None to resample rows.
        n_resamples: B.
        seed: seed of the resampling; the same seed with the same ``groups`` gives the same
            resamples, whatever the scores (the basis of the paired bootstrap).
        metrics: a subset of ``("auroc", "auprc")``.
        chunk_size: resamples per chunk (memory ~ 3 x 8 x chunk_size x n bytes).
        weights: optional (n,) non-negative evaluation weights of the rows (e.g. ``1 / r``
            on negatives kept at rate ``r``); resample ``b`` then weighs row ``i`` by
            ``c_{b, group(i)} * weights[i]``.

    Returns:
        ``{metric: (B,) float64}``; NaN for a resample without positives or negatives.
    """
    return _bootstrap_many([scores], y, groups, n_resamples, seed, metrics, chunk_size, weights)[0]


def _bootstrap_many(
    score_list: Sequence[Any],
    y: Any,
    groups: Any | None,
    n_resamples: int,
    seed: int,
    metrics: Sequence[str],
    chunk_size: int | None,
    weights: Any | None = None,
) -> list[dict[str, np.ndarray]]:
    """The same resamples applied to several score vectors of the same rows."""
    _check_resamples(n_resamples)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {METRICS}, got {list(metrics)}")
    checked = [check_scores_labels(s, y, f"scores[{i}]") for i, s in enumerate(score_list)]
    positive = checked[0][1]
    n = positive.size
    base = check_weights(weights, n)
    row_group, n_groups = _group_index(groups, n)
    ranked = [RankedScores.build(s, positive) for s, _ in checked]
    # Group index of each positive / negative column, in each score vector's sorted order.
    cols = [(row_group[r.pos_rows], row_group[r.neg_rows]) for r in ranked]
    scale = [(None, None) if base is None else (base[r.pos_rows], base[r.neg_rows]) for r in ranked]
    chunk = _chunk_rows(chunk_size, n, n_resamples)
    parts: list[dict[str, list[np.ndarray]]] = [{m: [] for m in metrics} for _ in score_list]
    for counts in _resample_counts(n_groups, n_resamples, seed, chunk):
        for r, (pos_cols, neg_cols), (wp, wn), out in zip(ranked, cols, scale, parts, strict=True):
            w_pos = np.take(counts, pos_cols, axis=1)
            w_neg = np.take(counts, neg_cols, axis=1)
            if wp is not None:
                w_pos *= wp
                w_neg *= wn
            values = r.metrics(w_pos, w_neg)
            for m in metrics:
                out[m].append(values[m])
    return [{m: np.concatenate(v) for m, v in out.items()} for out in parts]


# --------------------------------------------------------------------------- intervals
class _Interval:
    """``as_dict`` of the interval records below (dataclasses with ``low`` and ``high``)."""

    low: float | None
    high: float | None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``ci`` = ``[low, high]`` or None)."""
        out = asdict(self)  # type: ignore[call-overload]
        out["ci"] = None if self.low is None else [self.low, self.high]
        return out


@dataclass(frozen=True)
class MetricCI(_Interval):
    """A point estimate with its percentile bootstrap interval.

    Attributes:
        estimate: the metric on the original rows (with the evaluation weights, if any).
        low, high: percentile interval bounds (None when no resample was valid).
        std: standard deviation of the valid resample values (ddof=1; the bootstrap SE).
        mean: mean of the valid resample values.
        confidence: the interval's nominal coverage.
        n_resamples: B.
        n_valid: resamples with both classes (the interval uses these only).
        unit: "subject" (patient-level) or "row".
    """

    estimate: float
    low: float | None
    high: float | None
    std: float | None
    mean: float | None
    confidence: float
    n_resamples: int
    n_valid: int
    unit: str


def percentile_interval(
    values: np.ndarray, estimate: float, confidence: float = 0.95, unit: str = "subject"
) -> MetricCI:
    """Percentile interval of bootstrap values (NaN values, i.e. undefined resamples, dropped).

    Args:
        values: (B,) resample values of a metric, NaN where undefined.
        estimate: the point estimate on the original rows.
        confidence: nominal coverage; the bounds are the ``(1 -/+ confidence) / 2`` quantiles.
        unit: what was resampled ("subject" or "row"), recorded in the result.
    """
    valid = values[np.isfinite(values)]
    if valid.size == 0:
        return MetricCI(estimate, None, None, None, None, confidence, values.size, 0, unit)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(valid, [100 * alpha, 100 * (1 - alpha)])
    std = float(valid.std(ddof=1)) if valid.size > 1 else 0.0
    return MetricCI(
        estimate,
        float(low),
        float(high),
        std,
        float(valid.mean()),
        confidence,
        values.size,
        int(valid.size),
        unit,
    )


def bootstrap_ci(
    scores: Any,
    y: Any,
    groups: Any | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    metrics: Sequence[str] = METRICS,
    chunk_size: int | None = None,
    *,
    weights: Any | None = None,
) -> dict[str, MetricCI]:
    """Point estimates and percentile bootstrap CIs of AUROC and AUPRC.

    Args:
        scores: (n,) finite scores of the evaluation rows.
        y: (n,) binary labels; both classes must be present.
        groups: (n,) subject id per row: patient-level resampling (the protocol's); None
            resamples rows (only right when rows are independent).
        n_resamples: B (1,000 in the protocol).
        confidence: nominal coverage (0.95: the 2.5th and 97.5th percentiles).
        seed: resampling seed.
        metrics: a subset of ``("auroc", "auprc")``.
        chunk_size: resamples per chunk.
        weights: optional (n,) evaluation weights of the rows (see :func:`bootstrap_metrics`);
            the point estimate uses them too.

    Returns:
        ``{metric: MetricCI}``.

    Raises:
        ValueError: bad shapes, non-finite scores, non-binary y, or a single class in y.
    """
    _check_resamples(n_resamples, confidence)
    s, positive = check_scores_labels(scores, y)
    _require_both_classes(positive)
    point = weighted_metrics(s, positive, check_weights(weights, s.size))
    values = bootstrap_metrics(
        s, positive, groups, n_resamples, seed, metrics, chunk_size, weights=weights
    )
    unit = "row" if groups is None else "subject"
    return {
        m: percentile_interval(values[m], float(point[m][0]), confidence, unit) for m in metrics
    }


def _require_both_classes(positive: np.ndarray) -> None:
    """Raise ``ValueError`` unless the bool labels hold positives and negatives."""
    n_pos = int(positive.sum())
    if n_pos == 0 or n_pos == positive.size:
        which = "positive" if n_pos else "negative"
        raise ValueError(
            f"y has a single class (all {which}, n={positive.size}): AUROC and AUPRC need "
            "positives and negatives"
        )


@dataclass(frozen=True)
class PairedDifference(_Interval):
    """Paired bootstrap of ``metric(scores_a) - metric(scores_b)`` on the same resamples.

    Attributes:
        metric: "auroc" or "auprc".
        difference: the difference on the original rows.
        mean: mean difference over the valid resamples.
        low, high: percentile interval of the difference (None if no resample was valid).
        std: bootstrap SE of the difference (ddof=1).
        fraction_le_zero: share of valid resamples with difference <= 0 (a one-sided
            bootstrap p-value for "a is better than b").
        confidence, n_resamples, n_valid, unit: as in :class:`MetricCI`.
    """

    metric: str
    difference: float
    mean: float | None
    low: float | None
    high: float | None
    std: float | None
    fraction_le_zero: float | None
    confidence: float
    n_resamples: int
    n_valid: int
    unit: str


def paired_bootstrap_difference(
    scores_a: Any,
    scores_b: Any,
    y: Any,
    groups: Any | None = None,
    metric: str = "auroc",
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk_size: int | None = None,
    *,
    weights: Any | None = None,
) -> PairedDifference:
    """Paired (patient-level) bootstrap of a metric difference between two score vectors.

    Both methods are scored on the *same* resamples: ``d_b = m(a; W_b) - m(b; W_b)``. The
    pairing removes the between-resample variation shared by the two methods, so the interval
    of the difference is much narrower than one built from two independent intervals. A method
    against itself gives exactly 0 on every resample.

    Args:
        scores_a, scores_b: (n,) scores of the same rows, in the same order.
        y: (n,) binary labels.
        groups: (n,) subject id per row (None: rows).
        metric: "auroc" or "auprc".
        n_resamples, confidence, seed, chunk_size, weights: as in :func:`bootstrap_ci`.

    Returns:
        :class:`PairedDifference`.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    _check_resamples(n_resamples, confidence)
    a, positive = check_scores_labels(scores_a, y, "scores_a")
    b, _ = check_scores_labels(scores_b, y, "scores_b")
    _require_both_classes(positive)
    base = check_weights(weights, a.size)
    point_a = weighted_metrics(a, positive, base)
    point_b = weighted_metrics(b, positive, base)
    va, vb = _bootstrap_many(
        [a, b], positive, groups, n_resamples, seed, [metric], chunk_size, weights
    )
    diff = va[metric] - vb[metric]
    ci = percentile_interval(
        diff,
        float(point_a[metric][0] - point_b[metric][0]),
        confidence,
        "row" if groups is None else "subject",
    )
    valid = diff[np.isfinite(diff)]
    return PairedDifference(
        metric=metric,
        difference=ci.estimate,
        mean=ci.mean,
        low=ci.low,
        high=ci.high,
        std=ci.std,
        fraction_le_zero=float((valid <= 0).mean()) if valid.size else None,
        confidence=confidence,
        n_resamples=n_resamples,
        n_valid=ci.n_valid,
        unit=ci.unit,
    )
