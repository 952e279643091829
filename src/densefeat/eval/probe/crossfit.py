"""Subject-grouped K-fold cross-fitting of the linear probe, for cohorts too small to split.

With a handful of held-out subjects a train/tuning/held-out probe is mostly noise (a CI of
[0, 1]) or impossible (a split without a positive). Cross-fitting pools every labelled row of
the task and scores each row with a probe that never saw its subject (Chernozhukov et al.
2018's cross-fitting; the usual K-fold CV estimate of a fixed procedure's AUROC):

1. the subjects are dealt into ``K`` folds (:func:`subject_folds`): subjects with at least
   one positive row round-robin over the folds in a seeded random order, then the others, so
   every fold holds positives when there are ``>= K`` positive subjects;
2. for fold ``f``: the probe (:class:`~densefeat.eval.probe.estimator.LinearProbe`, C chosen
   by AUROC) is fitted on folds ``!= f, f + 1`` and C chosen on fold ``f + 1 (mod K)``, then
   scores fold ``f`` (the out-of-fold score ``s_i``). No row is scored by a probe whose
   training or tuning rows hold its subject;
3. AUROC and AUPRC of the pooled out-of-fold scores, with patient-level bootstrap CIs
   (subjects resampled with all their rows; the probes are not refitted, so the interval
   carries the test-sampling variation only, as the split protocol's does).

The null row: the same procedure on labels permuted across rows (``n_null`` permutations;
mean and sd of their AUROC), which measures what cross-fitting gives a probe with no signal
on these rows (about 0.5; far from 0.5 means the folds leak). Chance is AUROC 0.5 and AUPRC
= the weighted prevalence.

References:
    Chernozhukov, V. et al. (2018). Double/debiased machine learning for treatment and
    structural parameters. The Econometrics Journal 21(1), C1-C68.
    Bates, S., Hastie, T. & Tibshirani, R. (2024). Cross-validation: what does it estimate
    and how well does it do it? JASA 119(546), 1434-1445.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..bootstrap import bootstrap_metrics, percentile_interval
from ..ranking import weighted_auroc, weighted_average_precision
from .estimator import DEFAULT_CS, LinearProbe

__all__ = ["CrossFit", "crossfit_probe", "subject_folds"]


def subject_folds(groups: Any, y: Any, k: int, seed: int = 0) -> np.ndarray:
    """Fold (0 .. k-1) of every row; all rows of a subject share one fold.

    Subjects with a positive row are dealt round-robin first (seeded order), then the rest,
    so positives spread over the folds.

    Raises:
        ValueError: ``k < 2`` or fewer than ``k`` subjects.
    """
    groups = np.asarray(groups)
    yb = np.asarray(y).astype(bool)
    subjects, inverse = np.unique(groups, return_inverse=True)
    if k < 2:
        raise ValueError(f"--probe-folds must be >= 2 to cross-fit, got {k}")
    if subjects.size < k:
        raise ValueError(f"cross-fitting with {k} folds needs >= {k} subjects, got {subjects.size}")
    has_pos = np.zeros(subjects.size, dtype=bool)
    np.logical_or.at(has_pos, inverse, yb)
    rng = np.random.default_rng(seed)
    order = np.concatenate(
        [rng.permutation(np.flatnonzero(has_pos)), rng.permutation(np.flatnonzero(~has_pos))]
    )
    fold_of_subject = np.empty(subjects.size, dtype=np.int64)
    fold_of_subject[order] = np.arange(order.size) % k
    return fold_of_subject[inverse]


@dataclass
class CrossFit:
    """The out-of-fold scores of a cross-fitted probe.

    Attributes:
        scores: (n,) out-of-fold log-odds (row ``i`` by the probe of fold ``folds[i]``).
        folds: (n,) fold of every row.
        probes: the K fitted probes (``probes[f]`` never saw a subject of fold ``f``).
        train_subjects: per fold, the subjects its probe was fitted or tuned on.
    """

    scores: np.ndarray
    folds: np.ndarray
    probes: list[LinearProbe]
    train_subjects: list[np.ndarray] = field(default_factory=list)

    def score(self, X: Any, folds: np.ndarray) -> np.ndarray:
        """Scores of new rows (e.g. perturbed copies) by the probe of each row's fold."""
        X = np.asarray(X)
        out = np.empty(X.shape[0])
        for f, probe in enumerate(self.probes):
            rows = folds == f
            if rows.any():
                out[rows] = probe.decision_function(X[rows])
        return out


def _fit_folds(
    X: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: np.ndarray, Cs: Sequence[float]
) -> CrossFit:
    k = int(folds.max()) + 1
    scores = np.empty(y.size)
    probes, seen = [], []
    for f in range(k):
        tune = folds == (f + 1) % k
        fit = (folds != f) & ~tune
        if np.unique(y[tune]).size < 2:
            # A tuning fold with one class cannot choose C: tune on all other folds' rows
            # (still never on fold f).
            tune = folds != f
        probe = LinearProbe(C=None, Cs=Cs).fit(X[fit], y[fit], X[tune], y[tune])
        test = folds == f
        scores[test] = probe.decision_function(X[test])
        probes.append(probe)
        seen.append(np.unique(groups[fit | tune]))
    return CrossFit(scores, folds, probes, seen)


def crossfit_probe(
    X: Any,
    y: Any,
    groups: Any,
    *,
    k: int = 5,
    weights: Any | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    n_null: int = 5,
    seed: int = 0,
) -> tuple[dict[str, Any], CrossFit]:
    """The cross-fitted probe of one binary task (module docstring).

    Args:
        X: (n, d) embeddings of every labelled row (all splits pooled).
        y: (n,) binary labels.
        groups: (n,) subject id per row (the folds' and the bootstrap's unit).
        k: the number of folds K.
        weights: (n,) evaluation weights (AUROC/AUPRC and the bootstrap, never the fit).
        Cs: the C grid.
        n_bootstrap: patient-level bootstrap resamples of the pooled out-of-fold scores.
        confidence: CI coverage.
        n_null: label permutations of the null row (0: none).
        seed: seed of the folds, the bootstrap and the permutations.

    Returns:
        ``(record, crossfit)``: the record has the split protocol's fields (``auroc``,
        ``auroc_ci``, ``auprc``, ``auprc_ci``, ``n_test`` = every pooled row, ``n_pos_test``,
        ...) plus ``protocol`` ("crossfit"), ``folds`` (K), ``chance_auroc`` (0.5),
        ``chance_auprc`` (weighted prevalence), ``null_auroc_mean``, ``null_auroc_sd``,
        ``n_null``.

    Raises:
        ValueError: fewer subjects than folds, or a training part without both classes.
    """
    X = np.asarray(X, dtype=np.float64)
    yb = np.asarray(y).astype(bool)
    groups = np.asarray(groups)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != yb.size or groups.shape != yb.shape:
        raise ValueError(f"X (n, d), y (n,), groups (n,) expected, got {X.shape}, {yb.shape}")
    folds = subject_folds(groups, yb, k, seed)
    cf = _fit_folds(X, yb, groups, folds, Cs)
    auroc = float(weighted_auroc(cf.scores, yb, w))
    auprc = float(weighted_average_precision(cf.scores, yb, w))
    fields: dict[str, Any] = {}
    values = (
        bootstrap_metrics(cf.scores, yb, groups, n_bootstrap, seed, weights=w)
        if n_bootstrap
        else {}
    )
    for name, est in (("auroc", auroc), ("auprc", auprc)):
        ci = percentile_interval(values[name], est, confidence) if values else None
        ok = ci is not None and ci.low is not None
        fields |= {
            name: est,
            f"{name}_ci": [ci.low, ci.high] if ok else None,  # type: ignore[union-attr]
            f"{name}_se": ci.std if ok else None,  # type: ignore[union-attr]
            f"{name}_sd": None,
        }
        if not ok:
            fields[f"{name}_ci_reason"] = "no bootstrap" if not values else "no valid resample"
    rng = np.random.default_rng(seed + 1)
    null = []
    for _ in range(n_null):
        yp = rng.permutation(yb)
        try:
            null.append(float(weighted_auroc(_fit_folds(X, yp, groups, folds, Cs).scores, yp, w)))
        except ValueError:  # a permutation left a training part with one class
            continue
    wt = np.ones(yb.size) if w is None else w
    n_pos = int(yb.sum())
    record = {
        "k": "all",
        "n_draws": 1,
        "protocol": "crossfit",
        "folds": int(k),
        **fields,
        "C": float(np.median([p.C_ for p in cf.probes])),
        "val_auroc": None,
        # Each fold's C was chosen on its tuning fold (fold f + 1): those AUROCs are what a
        # best-baseline choice can use instead of val_auroc (densefeat.benchmark.summary).
        "val_auroc_per_fold": [
            None if p.val_auroc_ is None else float(p.val_auroc_) for p in cf.probes
        ],
        "converged": all(bool(p.converged_) for p in cf.probes),
        "n_train": int(yb.size),
        "n_tuning": 0,
        "n_test": int(yb.size),
        "n_test_subjects": int(np.unique(groups).size),
        "n_pos_train": n_pos,
        "n_pos_test": n_pos,
        "prevalence_test": n_pos / yb.size,
        "weighted": w is not None,
        "chance_auroc": 0.5,
        "chance_auprc": float(wt[yb].sum() / wt.sum()),
        "null_auroc_mean": float(np.mean(null)) if null else None,
        "null_auroc_sd": float(np.std(null, ddof=1)) if len(null) > 1 else None,
        "n_null": len(null),
        "bootstrap": {
            "n_resamples": n_bootstrap,
            "confidence": confidence,
            "seed": seed,
            "unit": "subject",
            "interval": "percentile",
        },
    }
    return record, cf
