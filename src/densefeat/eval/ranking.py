"""Ranking metrics with sample weights: AUROC and average precision, for many weight rows at once.

Both metrics depend on the scores only through their order, so the scores are sorted *once*
(:class:`RankedScores`) and each weight vector, or each row of a ``(B, n)`` weight matrix such
as the bootstrap's resamples (:mod:`densefeat.eval.bootstrap`), costs two cumulative sums.

Weighted AUROC
--------------
With weights ``w``, positives ``P`` and negatives ``N``::

    AUROC(w) = sum_{i in P, j in N} w_i w_j ([s_i > s_j] + 1/2 [s_i = s_j])
               / (sum_{i in P} w_i * sum_{j in N} w_j)

the Mann-Whitney form of the area under the weighted ROC curve, which is what
``sklearn.metrics.roc_auc_score(..., sample_weight=w)`` integrates with the trapezoidal rule
(ties contribute 1/2). For each distinct score value ``v`` let ``P_v`` and ``N_v`` be the
positive and negative weight at ``v`` and ``N_<v`` the negative weight below it. Then
``AUROC = sum_v P_v (N_<v + N_v / 2) / (P_tot N_tot)``, for all ``B`` weight rows at once:
every one of these sums is a row-wise cumulative sum of the weights (positives and negatives
separately, each in score order) read at the boundaries of the tied-score runs, so a chunk of
weight rows costs two gathers and two ``cumsum`` passes, ``O(B n)``, after one ``O(n log n)``
sort.

Weighted average precision
--------------------------
The step-wise (non-interpolated) definition of ``sklearn.metrics.average_precision_score``::

    AP(w) = sum_v (R_v - R_{v+}) * Prec_v,   Prec_v = TP_{>=v} / (TP_{>=v} + FP_{>=v}),
                                              R_v    = TP_{>=v} / P_tot

over the distinct score values ``v`` taken as thresholds (``s >= v`` is called positive),
where ``TP_{>=v}`` / ``FP_{>=v}`` are the positive / negative weight at or above ``v`` and
``R_v - R_{v+} = P_v / P_tot``. Hence ``AP = sum_v P_v Prec_v / P_tot``: suffix sums of the same
sorted group sums. Rows of weight 0 contribute nothing to either metric, exactly as sklearn,
which drops zero-weight samples.

A weight row without positive or without negative weight has no AUROC / AP: its value is NaN.

References:
    Hanley, J. A. & McNeil, B. J. (1982). The meaning and use of the area under a receiver
    operating characteristic (ROC) curve. Radiology 143(1).
    Wornow, M. et al. (2023). EHRSHOT: An EHR Benchmark for Few-Shot Evaluation of Foundation
    Models. NeurIPS Datasets and Benchmarks. (AUROC and AUPRC are its reported metrics.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .checks import binary_labels, check_non_negative

__all__ = [
    "METRICS",
    "RankedScores",
    "check_scores_labels",
    "weighted_auroc",
    "weighted_average_precision",
    "weighted_metrics",
]

#: The metrics of :meth:`RankedScores.metrics`, by the names used in records and JSON.
METRICS: tuple[str, ...] = ("auroc", "auprc")


def check_scores_labels(scores: Any, y: Any, name: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    """Scores as a finite float64 ``(n,)`` array and y as ``(n,)`` bool labels (1 = positive).

    Args:
        scores: (n,) scores, higher = more likely positive; ``name`` names them in errors.
        y: (n,) binary labels (bool or 0/1).

    Raises:
        ValueError: scores not 1-D, empty or not finite; y of another shape or not binary.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {s.shape}")
    if s.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(s).all():
        bad = int(np.flatnonzero(~np.isfinite(s))[0])
        raise ValueError(f"{name} holds NaN or inf (first at row {bad})")
    yy = np.asarray(y)
    if yy.shape != s.shape:
        raise ValueError(f"y has shape {yy.shape}, {name} has shape {s.shape}")
    return s, binary_labels(yy)


# --------------------------------------------------------------------------- sorted structure
@dataclass(frozen=True)
class RankedScores:
    """Scores sorted once; positives and negatives each in ascending score order.

    Rows with the same score form a *run*. The metrics need, per positive run, its weight
    ``P_v`` and the negative weight strictly below (``N_<v``) and at-or-below (``N_<=v``) its
    score. All of these are values of the row-wise cumulative sums of the weights (with a
    leading 0) at run boundaries, so one ``cumsum`` per class replaces any grouping.

    Attributes:
        pos_rows, neg_rows: indices of the positive / negative rows, in ascending score order
            (the column order of :meth:`metrics`'s weights).
        pos_edges: (runs + 1,) positions in the positives' cumulative sum at which each
            positive run starts, then the total.
        neg_lo, neg_hi: per positive run, the position in the negatives' cumulative sum that
            counts the negatives with a strictly smaller / smaller-or-equal score.
    """

    pos_rows: np.ndarray
    neg_rows: np.ndarray
    pos_edges: np.ndarray
    neg_lo: np.ndarray
    neg_hi: np.ndarray

    @classmethod
    def build(cls, scores: np.ndarray, positive: np.ndarray) -> RankedScores:
        """Sort ``scores`` (n,) float64 with bool labels ``positive`` (n,); ``O(n log n)``."""
        order = np.argsort(scores, kind="stable")
        sorted_scores = scores[order]
        # Index of the distinct score value of every sorted row.
        value_id = np.concatenate(([0], np.cumsum(sorted_scores[1:] != sorted_scores[:-1])))
        is_pos = positive[order]
        pos_rows, neg_rows = order[is_pos], order[~is_pos]
        pos_vid, neg_vid = value_id[is_pos], value_id[~is_pos]
        pos_starts = _run_starts(pos_vid)
        pos_values = pos_vid[pos_starts]
        # Number of negative rows with a smaller / smaller-or-equal score, per positive run.
        neg_lo = np.searchsorted(neg_vid, pos_values, side="left")
        neg_hi = np.searchsorted(neg_vid, pos_values, side="right")
        pos_edges = np.append(pos_starts, pos_rows.size)
        return cls(pos_rows, neg_rows, pos_edges, neg_lo, neg_hi)

    def metrics(self, w_pos: np.ndarray, w_neg: np.ndarray) -> dict[str, np.ndarray]:
        """AUROC and AP for weight rows ``w_pos`` (b, n_pos) and ``w_neg`` (b, n_neg).

        The columns are in the order of ``pos_rows`` / ``neg_rows``. Returns (b,) arrays, NaN
        where a weight row has no positive or no negative weight.
        """
        b = w_pos.shape[0]
        if w_pos.shape[1] == 0 or w_neg.shape[1] == 0:
            nan = np.full(b, np.nan)
            return {"auroc": nan, "auprc": nan.copy()}
        cum_p = _cumsum0(w_pos)  # (b, n_pos + 1)
        cum_n = _cumsum0(w_neg)  # (b, n_neg + 1)
        at_edges = np.take(cum_p, self.pos_edges, axis=1)
        p = np.diff(at_edges, axis=1)  # weight of each positive run
        p_before = at_edges[:, :-1]  # positive weight below each run
        p_tot = cum_p[:, -1]
        n_tot = cum_n[:, -1]
        below = np.take(cum_n, self.neg_lo, axis=1)  # negative weight below each positive run
        below_or_tie = np.take(cum_n, self.neg_hi, axis=1)  # ... at or below it
        valid = (p_tot > 0) & (n_tot > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            auroc = (p * (below + below_or_tie)).sum(axis=1) / (2.0 * p_tot * n_tot)
            # TP / FP weight at or above each positive run's score.
            tp = p_tot[:, None] - p_before
            fp = n_tot[:, None] - below
            prec = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=p > 0)
            auprc = (p * prec).sum(axis=1) / p_tot
        auroc[~valid] = np.nan
        auprc[~valid] = np.nan
        return {"auroc": auroc, "auprc": auprc}


def _cumsum0(w: np.ndarray) -> np.ndarray:
    """Row-wise cumulative sums with a leading 0 column: (b, m) -> (b, m + 1)."""
    out = np.empty((w.shape[0], w.shape[1] + 1))
    out[:, 0] = 0.0
    np.cumsum(w, axis=1, out=out[:, 1:])
    return out


def _run_starts(values: np.ndarray) -> np.ndarray:
    """Positions where a run of equal values starts in the sorted array ``values``."""
    if values.size == 0:
        return np.zeros(0, dtype=np.intp)
    return np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))


# --------------------------------------------------------------------------- weighted metrics
def weighted_metrics(scores: Any, y: Any, weights: Any | None = None) -> dict[str, np.ndarray]:
    """AUROC and average precision of every weight row: ``{"auroc": (B,), "auprc": (B,)}``.

    Args:
        scores: (n,) finite scores, higher = more likely positive.
        y: (n,) binary labels (bool or 0/1).
        weights: None (all 1; B = 1), (n,) (B = 1) or (B, n) non-negative weights.

    Returns:
        (B,) float64 arrays, NaN where a weight row holds no positive or no negative weight.
    """
    s, positive = check_scores_labels(scores, y)
    if weights is None:
        w = np.ones((1, s.size))
    else:
        w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        if w.ndim != 2 or w.shape[1] != s.size:
            raise ValueError(
                f"weights must have shape ({s.size},) or (B, {s.size}), got {np.shape(weights)}"
            )
        check_non_negative(w)
    ranked = RankedScores.build(s, positive)
    return ranked.metrics(w[:, ranked.pos_rows], w[:, ranked.neg_rows])


def _one_or_many(values: np.ndarray, weights: Any | None) -> float | np.ndarray:
    """A float for no weights or one weight vector; the (B,) array for a weight matrix."""
    single = weights is None or np.ndim(weights) == 1
    return float(values[0]) if single else values


def weighted_auroc(scores: Any, y: Any, weights: Any | None = None) -> float | np.ndarray:
    """AUROC with non-negative sample weights, for one weight vector or a ``(B, n)`` matrix.

    ``sum_{i pos, j neg} w_i w_j ([s_i > s_j] + [s_i = s_j] / 2) / (W_pos W_neg)``; equal to
    ``sklearn.metrics.roc_auc_score(y, scores, sample_weight=w)``.

    Args:
        scores: (n,) finite scores, higher = more likely positive.
        y: (n,) binary labels (bool or 0/1).
        weights: None (all 1), (n,) or (B, n) non-negative weights.

    Returns:
        a float for ``None`` / (n,) weights, a (B,) array for (B, n); NaN where the weighted
        rows hold no positive or no negative.
    """
    return _one_or_many(weighted_metrics(scores, y, weights)["auroc"], weights)


def weighted_average_precision(
    scores: Any, y: Any, weights: Any | None = None
) -> float | np.ndarray:
    """Average precision (AUPRC, step-wise) with sample weights; vectorised over weight rows.

    ``AP = sum_v (P_v / P_tot) * TP_{>=v} / (TP_{>=v} + FP_{>=v})`` over distinct score values
    ``v``; equal to ``sklearn.metrics.average_precision_score(y, scores, sample_weight=w)``.
    Arguments and return as :func:`weighted_auroc`.
    """
    return _one_or_many(weighted_metrics(scores, y, weights)["auprc"], weights)
