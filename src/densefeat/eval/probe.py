"""Linear probes on frozen embeddings: the estimator and the evaluation protocol.

This implements DESIGN.md's "Evaluation protocol", which follows EHRSHOT (Wornow et al. 2023):

* **Probe** (:class:`LinearProbe`): L2-regularised logistic regression,
  ``min_{w,b} 1/2 ||w||^2 + C sum_i log(1 + exp(-y_i (w^T z_i + b)))`` (lbfgs), on
  standardised features ``z = (x - mean) / std`` (statistics from the training rows only).
  ``C`` is chosen from ``Cs = 1e-4 .. 1e4`` (9 values, log-spaced) by the *AUROC* of a
  separate validation set (``scoring="roc_auc"`` explicitly, as EHRSHOT's GridSearchCV with a
  PredefinedSplit); the probe used afterwards is the one fitted on the training rows alone with
  the chosen C (EHRSHOT refits on the training rows only, "so that we are truly doing k-shot
  learning"). Ties in validation AUROC go to the smallest C (the most regularised model; also
  what ``argmax`` over an ascending grid gives in scikit-learn's searches).
* **Full-data probe** (:func:`probe_split` on pre-split arrays, :func:`probe_task` on one table
  of rows with a split and subject column): fit on ``train``, choose C on ``tuning``, evaluate
  on ``held_out``. Splits are by subject, so the validation split is subject-grouped by
  construction. AUROC and AUPRC get percentile 95% CIs from 1,000 patient-level bootstrap
  resamples (:mod:`densefeat.eval.bootstrap`).
* **k-shot** (:func:`kshot_probe` / :func:`probe_k_shot`, the same two input forms): for k in
  1, 2, 4, 8, 16, 32, 64, 128 *per class*, 5 seeded
  draws each of k positive and k negative training rows (distinct patients where possible, see
  :func:`sample_k_shot`) and a validation set of the same k per class from ``tuning``; at
  k <= 4 there is no selection ("no CV at k <= 4") and C is fixed at 1.0. Reported: mean and
  standard deviation over the draws of the held-out AUROC and AUPRC.
* **Multi-label one-vs-rest** (:func:`probe_multilabel`): one binary probe per column of an
  ``(n, L)`` label matrix (MTSamples specialties over distinct texts), per-label AUROC and the
  macro AUROC, with labels that have a single class in some split skipped with the reason.
* **Whitening control** (:func:`whiten`): ZCA whitening with train-split statistics; whitening
  alone can raise a probe's AUROC, so every method is also probed after it.
* **Paired comparison** (:func:`paired_probe_difference`): the difference of two probes'
  held-out AUROC (or AUPRC) on the same patient-level resamples.

Held-out rows may carry *evaluation weights* (``weights``, e.g. ``1 / r`` on negatives kept at
rate ``r``): they enter the AUROC/AUPRC point estimates and every bootstrap resample, never the
fit.

Why standardise: (1) lbfgs converges in far fewer iterations on features of unit scale (the
Hessian of the logistic loss is ``X^T D X``, whose conditioning is driven by the feature scales);
(2) the L2 penalty ``||w||^2`` is not scale invariant, so without standardisation the same C
means a different amount of regularisation for embeddings of a different scale: a method whose
embeddings are 10x larger would effectively get a 100x larger C. Standardising makes the C grid
mean the same for every method. The statistics come from training rows only (DESIGN.md: "no
leakage: normalisation ... from the training split only"). In the k-shot protocol they come from
*all* rows of the train split (label-free, the same for every k and draw), not from the 2k shots:
with 2 rows the per-feature std is ``|x_1 - x_2| / 2`` and dividing by it amplifies exactly the
features in which the two shots happen to agree. EHRSHOT fits its scaler (MaxAbsScaler) on the
shots; ours is a documented deviation. Constant features (std <= 1e-10 max(1, |mean|)) are
left unscaled (they are 0 after centring and carry no weight).

References:
    Wornow, M., Thapa, R., Steinberg, E., Fries, J. A. & Shah, N. H. (2023). EHRSHOT: An EHR
    Benchmark for Few-Shot Evaluation of Foundation Models. NeurIPS Datasets and Benchmarks.
    Kessy, A., Lewin, A. & Strimmer, K. (2018). Optimal whitening and decorrelation. The
    American Statistician 72(4).
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from ..data.splits import SPLIT_NAMES
from .bootstrap import (
    MetricCI,
    PairedDifference,
    bootstrap_metrics,
    paired_bootstrap_difference,
    percentile_interval,
    weighted_auroc,
    weighted_average_precision,
)

__all__ = [
    "DEFAULT_CS",
    "FIXED_C",
    "K_SHOTS",
    "MAX_K_WITHOUT_SELECTION",
    "LinearProbe",
    "ProbeData",
    "ProbeResult",
    "kshot_probe",
    "load_probe_data",
    "paired_probe_difference",
    "probe_k_shot",
    "probe_multilabel",
    "probe_split",
    "probe_task",
    "sample_k_shot",
    "standardization_stats",
    "whiten",
    "zca_whitening",
]

#: The C grid: 1e-4, 1e-3, ..., 1e4 (EHRSHOT's range, DESIGN.md).
DEFAULT_CS: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 4, 9))
#: Shots per class of the k-shot protocol.
K_SHOTS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
#: C used where there is no selection (k <= MAX_K_WITHOUT_SELECTION, or no validation rows).
FIXED_C = 1.0
#: Largest k without C selection ("no CV at k <= 4").
MAX_K_WITHOUT_SELECTION = 4
#: Relative threshold below which a feature's std counts as zero (constant feature).
_CONSTANT_RTOL = 1e-10
#: Fits on at most this many matrix elements run with one BLAS thread (see _blas_threads).
_SMALL_PROBLEM = 2**21


def _blas_threads(elements: int) -> contextlib.AbstractContextManager[Any]:
    """One BLAS thread for small problems, the library default otherwise.

    A probe fit on a few hundred rows is dominated by thread start-up and synchronisation in
    multi-threaded OpenBLAS, and on a busy machine the spinning threads make it far slower:
    measured on 2 shared cores, 256 x 128 rows at C = 10: 328 ms with 2 BLAS threads, 9.6 ms
    with 1. ``threadpoolctl`` ships with scikit-learn.
    """
    if elements <= _SMALL_PROBLEM:
        return threadpool_limits(limits=1, user_api="blas")
    return contextlib.nullcontext()


# --------------------------------------------------------------------------- input checks
def _as_matrix(X: Any, name: str = "X") -> np.ndarray:
    """A float64 (n, d) copy-free-if-possible view of X; finite, n >= 1, d >= 1."""
    arr = np.asarray(X)
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be a numeric matrix, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    finite = np.isfinite(arr)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise ValueError(
            f"{name} holds NaN or inf (first at row {row}, column {col}); a probe needs finite "
            "features"
        )
    return arr


def _as_labels(y: Any, n: int, name: str = "y") -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or inf")
    return arr


def _as_binary(y: Any, n: int, name: str = "y") -> np.ndarray:
    """Bool labels from bool or 0/1 input (1 / True = positive)."""
    arr = _as_labels(y, n, name)
    if arr.dtype == bool:
        return arr
    values = np.unique(arr)
    if not np.isin(values, [0, 1]).all():
        raise ValueError(
            f"{name} must be binary (bool or 0/1; 1 = positive), got values {values[:5].tolist()}"
        )
    return arr == 1


def standardization_stats(X: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and scale (population std; 1 for constant features) of the rows of X.

    Apply as ``(X - mean) / scale``. A feature is constant when its std is at most
    ``1e-10 * max(1, |mean|)``; its scale is then 1 (so it stays ~0 after centring).
    """
    arr = _as_matrix(X)
    mean = arr.mean(axis=0)
    std = arr.std(axis=0)
    constant = std <= _CONSTANT_RTOL * np.maximum(1.0, np.abs(mean))
    return mean, np.where(constant, 1.0, std)


# --------------------------------------------------------------------------- the estimator
class LinearProbe(ClassifierMixin, BaseEstimator):
    """L2 logistic regression on standardised features, C chosen by validation AUROC.

    ``fit(X, y, X_val, y_val)`` with ``C=None`` fits one lbfgs logistic regression per value
    of ``Cs`` on the training rows, scores each on the validation rows by AUROC
    (``sklearn.metrics.roc_auc_score``, explicitly: EHRSHOT's ``scoring="roc_auc"``), and keeps
    the model with the best validation AUROC (ties: the smallest C). That model *is* the refit
    on the training rows with the chosen C (lbfgs from zero is deterministic; EHRSHOT refits on
    training rows only as well). With a fixed ``C`` no validation rows are needed.

    The features are standardised with the training rows' mean and std (see the module
    docstring for why); ``coef_`` and ``intercept_`` are expressed in the *input* units:
    ``decision_function(X) = X @ coef_.T + intercept_``.

    Degenerate input: NaN/inf in X -> ValueError naming row and column; a single class in y ->
    ValueError; C selection with a single-class validation set -> ValueError; constant features
    are kept with scale 1 (``n_constant_features_``); all features constant -> ValueError;
    n < d is fine (the L2 penalty makes the problem well posed).

    Args:
        C: inverse regularisation strength; None selects it from ``Cs`` on the validation set.
        Cs: the candidate grid (default 1e-4 .. 1e4, 9 values).
        standardize: standardise with training-row statistics (False: use X as it is, e.g.
            already standardised with a larger set of label-free training rows).
        max_iter: lbfgs iteration cap.
        tol: lbfgs tolerance.
        random_state: passed to ``LogisticRegression`` (lbfgs itself is deterministic).

    Attributes:
        classes_: the two labels, sorted; ``classes_[1]`` is the positive class.
        C_: the C used.
        coef_: (1, d) weights in input units. intercept_: (1,).
        mean_, scale_: the standardisation (zeros / ones when ``standardize=False``).
        val_auroc_: validation AUROC of the chosen model (None without validation rows).
        cv_results_: ``{"C": [...], "val_auroc": [...]}`` of the search (None if C was fixed).
        converged_: whether lbfgs converged for the chosen model. n_iter_: its iterations.
        n_features_in_, n_constant_features_.
    """

    def __init__(
        self,
        C: float | None = None,
        Cs: Sequence[float] = DEFAULT_CS,
        *,
        standardize: bool = True,
        max_iter: int = 1000,
        tol: float = 1e-4,
        random_state: int | None = 0,
    ) -> None:
        self.C = C
        self.Cs = Cs
        self.standardize = standardize
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    # -- fitting
    def _check_params(self) -> list[float]:
        if self.C is not None and not (isinstance(self.C, int | float) and self.C > 0):
            raise ValueError(f"C must be a positive number or None, got {self.C!r}")
        cs = [float(c) for c in np.atleast_1d(np.asarray(self.Cs, dtype=np.float64))]
        if self.C is None and (not cs or any(not (c > 0 and math.isfinite(c)) for c in cs)):
            raise ValueError(f"Cs must be a non-empty list of positive numbers, got {self.Cs!r}")
        if not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {self.max_iter!r}")
        return sorted(cs)

    def _logreg(self, C: float) -> LogisticRegression:
        # L2 is LogisticRegression's default penalty; not passing `penalty` keeps this working
        # on scikit-learn 1.4 .. 1.9 (1.8 deprecated the argument in favour of l1_ratio).
        return LogisticRegression(
            C=C,
            solver="lbfgs",
            max_iter=self.max_iter,
            tol=self.tol,
            random_state=self.random_state,
        )

    def _fit_one(self, Z: np.ndarray, y: np.ndarray, C: float) -> LogisticRegression:
        with warnings.catch_warnings():
            # Non-convergence is recorded (converged_), not printed once per grid point.
            warnings.simplefilter("ignore", ConvergenceWarning)
            return self._logreg(C).fit(Z, y)

    def fit(
        self,
        X: Any,
        y: Any,
        X_val: Any | None = None,
        y_val: Any | None = None,
    ) -> LinearProbe:
        """Fit on (X, y); choose C on (X_val, y_val) by AUROC when ``C`` is None.

        Args:
            X: (n, d) training features. y: (n,) labels with exactly two classes.
            X_val, y_val: validation rows (required when ``C`` is None).

        Returns:
            self.
        """
        cs = self._check_params()
        X = _as_matrix(X, "X")
        y = _as_labels(y, X.shape[0], "y")
        classes = np.unique(y)
        if classes.size != 2:
            what = (
                f"a single class ({classes[0]!r}, n={y.size})"
                if classes.size == 1
                else f"{classes.size} classes"
            )
            raise ValueError(
                f"y has {what}: a binary probe needs exactly two classes in the training rows"
            )
        self.classes_ = classes
        yb = y == classes[1]
        if (X_val is None) != (y_val is None):
            raise ValueError("give both X_val and y_val, or neither")
        if X_val is not None:
            X_val = _as_matrix(X_val, "X_val")
            if X_val.shape[1] != X.shape[1]:
                raise ValueError(f"X_val has {X_val.shape[1]} features, X has {X.shape[1]}")
            y_val = _as_labels(y_val, X_val.shape[0], "y_val")
            unknown = np.setdiff1d(np.unique(y_val), classes)
            if unknown.size:
                raise ValueError(
                    f"y_val holds labels not in y: {unknown[:5].tolist()} (classes {classes})"
                )
            yv = y_val == classes[1]
        if self.C is None:
            if X_val is None:
                raise ValueError(
                    "C=None selects C by validation AUROC: pass X_val and y_val, or set C"
                )
            if yv.all() or not yv.any():
                raise ValueError(
                    f"y_val has a single class (n={yv.size}): validation AUROC, and so the "
                    "choice of C, needs positives and negatives"
                )

        if self.standardize:
            self.mean_, self.scale_ = standardization_stats(X)
        else:
            self.mean_, self.scale_ = np.zeros(X.shape[1]), np.ones(X.shape[1])
        self.n_constant_features_ = int(
            (X.std(axis=0) <= _CONSTANT_RTOL * np.maximum(1.0, np.abs(X.mean(axis=0)))).sum()
        )
        if self.n_constant_features_ == X.shape[1]:
            raise ValueError(
                f"all {X.shape[1]} features of X are constant over the training rows: "
                "nothing to learn"
            )
        Z = (X - self.mean_) / self.scale_
        Zv = None if X_val is None else (X_val - self.mean_) / self.scale_

        with _blas_threads(Z.size):
            if self.C is None:
                aucs: list[float] = []
                models = []
                for c in cs:
                    models.append(self._fit_one(Z, yb, c))
                    aucs.append(float(weighted_auroc(models[-1].decision_function(Zv), yv)))
                best = int(np.argmax(aucs))  # the first maximum: the smallest C among ties
                model, self.C_ = models[best], cs[best]
                self.val_auroc_: float | None = aucs[best]
                self.cv_results_: dict[str, list[float]] | None = {"C": cs, "val_auroc": aucs}
            else:
                self.C_ = float(self.C)
                model = self._fit_one(Z, yb, self.C_)
                self.cv_results_ = None
                one_class = Zv is None or yv.all() or not yv.any()
                self.val_auroc_ = (
                    None if one_class else float(weighted_auroc(model.decision_function(Zv), yv))
                )
        w = model.coef_.ravel()
        self._w_std = w
        self._b_std = float(model.intercept_[0])
        self.coef_ = (w / self.scale_)[None, :]
        self.intercept_ = np.array([self._b_std - float(np.dot(w / self.scale_, self.mean_))])
        self.n_iter_ = int(np.max(model.n_iter_))
        self.converged_ = self.n_iter_ < self.max_iter
        self.n_features_in_ = X.shape[1]
        return self

    # -- prediction
    def _check_X(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "coef_")
        X = _as_matrix(X, "X")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, the probe was fitted on {self.n_features_in_}"
            )
        return X

    def decision_function(self, X: Any) -> np.ndarray:
        """(n,) log-odds of the positive class ``classes_[1]``: ``X @ coef_.T + intercept_``.

        Computed in the standardised space, ``((X - mean_) / scale_) @ w + b``, which is the
        same affine map with less cancellation.
        """
        X = self._check_X(X)
        return ((X - self.mean_) / self.scale_) @ self._w_std + self._b_std

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, 2) probabilities of ``classes_``: ``sigmoid(decision_function)`` in column 1."""
        z = self.decision_function(X)
        p = 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function, overflow-free
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        """Labels: ``classes_[1]`` where the log-odds are positive."""
        return self.classes_[(self.decision_function(X) > 0).astype(int)]


# --------------------------------------------------------------------------- whitening
def zca_whitening(train_X: Any, eps: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """ZCA (Mahalanobis) whitening from training rows: ``x -> (x - mu) W``.

    ``Sigma = Xc^T Xc / (n - 1)`` of the training rows, ``Sigma = U diag(lam) U^T`` and
    ``W = U diag((lam + eps tr(Sigma) / d)^(-1/2)) U^T``: the symmetric inverse square root
    (Kessy et al. 2018), which among all whitening matrices keeps the whitened features closest
    to the originals. The ridge ``eps * tr(Sigma) / d`` (the same relative 1e-4 as DESIGN.md's
    subspace-consistency term) bounds the amplification of near-null directions at
    ``(eps tr(Sigma)/d)^(-1/2)``; with n_train <= d, or an encoder ending in LayerNorm, some
    ``lam`` are exactly 0 and the whitened covariance is ``lam / (lam + ridge)``, i.e. identity
    only on the well-determined directions. Computed in float64.

    Returns:
        ``(mu, W)``: (d,) mean and (d, d) symmetric whitening matrix.
    """
    X = _as_matrix(train_X, "train_X")
    if X.shape[0] < 2:
        raise ValueError(f"train_X needs at least 2 rows for a covariance, got {X.shape[0]}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    mu = X.mean(axis=0)
    Xc = X - mu
    cov = Xc.T @ Xc / (X.shape[0] - 1)
    lam, U = np.linalg.eigh(cov)
    trace = float(lam.clip(min=0).sum())
    if trace <= 0:
        raise ValueError("train_X has no variance (every column is constant): cannot whiten")
    ridge = eps * trace / X.shape[1]
    W = (U / np.sqrt(lam.clip(min=0) + ridge)) @ U.T
    return mu, W


def whiten(train_X: Any, X: Any, eps: float = 1e-4) -> np.ndarray:
    """``(X - mu) W`` with ZCA statistics from ``train_X`` only (see :func:`zca_whitening`).

    The benchmark's "after whitening" control: pass the train-split embeddings as ``train_X``
    and all rows as ``X``.
    """
    mu, W = zca_whitening(train_X, eps)
    X = _as_matrix(X, "X")
    if X.shape[1] != mu.size:
        raise ValueError(f"X has {X.shape[1]} features, train_X has {mu.size}")
    return (X - mu) @ W


# --------------------------------------------------------------------------- protocol inputs
def _check_protocol(X: Any, split: Any, groups: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = _as_matrix(X, "X")
    n = X.shape[0]
    split = np.asarray(split).astype(str)
    if split.shape != (n,):
        raise ValueError(f"split must have shape ({n},), got {split.shape}")
    unknown = sorted(set(np.unique(split).tolist()) - set(SPLIT_NAMES))
    if unknown:
        raise ValueError(f"split holds unknown names {unknown}; expected {list(SPLIT_NAMES)}")
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must have shape ({n},) (one subject id per row)")
    # Splits must be by subject: a subject in two splits leaks between fitting and testing.
    uniq, inv = np.unique(groups, return_inverse=True)
    code = np.select([split == s for s in SPLIT_NAMES], list(range(len(SPLIT_NAMES))))
    lo = np.full(uniq.size, len(SPLIT_NAMES))
    hi = np.full(uniq.size, -1)
    np.minimum.at(lo, inv, code)
    np.maximum.at(hi, inv, code)
    mixed = np.flatnonzero(lo != hi)
    if mixed.size:
        raise ValueError(
            f"{mixed.size} subjects have rows in more than one split (e.g. "
            f"{uniq[mixed[:3]].tolist()}); splits must be by subject"
        )
    return X, split, groups


def _class_counts(y: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    pos = int(y[mask].sum())
    return pos, int(mask.sum()) - pos


def _require_classes(y: np.ndarray, split: np.ndarray, names: Sequence[str], what: str) -> None:
    for name in names:
        pos, neg = _class_counts(y, split == name)
        if pos == 0 or neg == 0:
            raise ValueError(
                f"{what}: the {name} split has {pos} positive and {neg} negative rows; "
                "the probe protocol needs both classes in train, tuning and held_out"
            )


def _single_class_reason(y: np.ndarray, split: np.ndarray) -> str | None:
    for name in SPLIT_NAMES:
        pos, neg = _class_counts(y, split == name)
        if pos == 0 or neg == 0:
            return f"the {name} split has {pos} positive and {neg} negative rows"
    return None


# --------------------------------------------------------------------------- full-data probe
@dataclass
class ProbeResult:
    """One full-data probe from :func:`probe_task`: the record plus what comparisons need.

    Attributes:
        record: JSON-ready dict (see :func:`probe_split`).
        scores: (n_test,) held-out log-odds.
        y_test: (n_test,) bool labels. groups_test: (n_test,) subject ids.
        weights_test: (n_test,) evaluation weights, or None.
        test_index: (n_test,) indices of the held-out rows in the input arrays.
        bootstrap: ``{"auroc": (B,), "auprc": (B,)}`` resample values (empty if B = 0).
        probe: the fitted :class:`LinearProbe`.
    """

    record: dict[str, Any]
    scores: np.ndarray
    y_test: np.ndarray
    groups_test: np.ndarray
    weights_test: np.ndarray | None
    test_index: np.ndarray
    bootstrap: dict[str, np.ndarray] = field(default_factory=dict)
    probe: LinearProbe | None = None


def _ci_fields(name: str, ci: MetricCI | None, estimate: float, reason: str) -> dict[str, Any]:
    if ci is None or ci.low is None:
        return {
            name: estimate,
            f"{name}_ci": None,
            f"{name}_ci_reason": reason if ci is None else "no resample held both classes",
            f"{name}_se": None,
        }
    return {name: estimate, f"{name}_ci": [ci.low, ci.high], f"{name}_se": ci.std}


def _check_part(X: Any, y: Any, name: str, d: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    Xp = _as_matrix(X, f"X_{name}")
    if d is not None and Xp.shape[1] != d:
        raise ValueError(f"X_{name} has {Xp.shape[1]} features, X_train has {d}")
    yp = _as_binary(y, Xp.shape[0], f"y_{name}")
    pos = int(yp.sum())
    if pos == 0 or pos == yp.size:
        split = {"train": "train", "val": "tuning", "test": "held_out"}[name]
        raise ValueError(
            f"y_{name}: the {split} rows have {pos} positive and {yp.size - pos} negative "
            "labels; the probe protocol needs both classes in train, tuning and held_out"
        )
    return Xp, yp


def _check_eval_weights(weights: Any | None, n: int) -> np.ndarray | None:
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},) (one per held-out row), got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and non-negative")
    return w


def _probe_split(
    X_train: Any,
    y_train: Any,
    X_val: Any,
    y_val: Any,
    X_test: Any,
    y_test: Any,
    groups: Any | None,
    weights: Any | None,
    Cs: Sequence[float],
    n_bootstrap: int,
    confidence: float,
    seed: int,
    max_iter: int,
) -> tuple[dict[str, Any], LinearProbe, np.ndarray, dict[str, np.ndarray]]:
    Xtr, ytr = _check_part(X_train, y_train, "train")
    Xva, yva = _check_part(X_val, y_val, "val", Xtr.shape[1])
    Xte, yte = _check_part(X_test, y_test, "test", Xtr.shape[1])
    w = _check_eval_weights(weights, yte.size)
    if groups is not None and np.asarray(groups).shape != (yte.size,):
        raise ValueError(f"groups must have shape ({yte.size},) (one subject per held-out row)")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be a non-negative integer, got {n_bootstrap!r}")
    probe = LinearProbe(C=None, Cs=Cs, max_iter=max_iter).fit(Xtr, ytr, Xva, yva)
    scores = probe.decision_function(Xte)
    auroc = weighted_auroc(scores, yte, w)
    auprc = weighted_average_precision(scores, yte, w)
    unit = "row" if groups is None else "subject"
    values: dict[str, np.ndarray] = {}
    cis: dict[str, MetricCI | None] = {"auroc": None, "auprc": None}
    if n_bootstrap > 0:
        values = bootstrap_metrics(scores, yte, groups, n_bootstrap, seed, weights=w)
        cis = {
            m: percentile_interval(values[m], est, confidence, unit)
            for m, est in (("auroc", auroc), ("auprc", auprc))
        }
    reason = "n_bootstrap=0: no bootstrap requested"
    n_pos_test = int(yte.sum())
    record: dict[str, Any] = {
        "k": "all",
        "n_draws": 1,
        **_ci_fields("auroc", cis["auroc"], auroc, reason),
        "auroc_sd": None,
        **_ci_fields("auprc", cis["auprc"], auprc, reason),
        "auprc_sd": None,
        "C": probe.C_,
        "val_auroc": probe.val_auroc_,
        "converged": bool(probe.converged_),
        "n_train": int(ytr.size),
        "n_tuning": int(yva.size),
        "n_test": int(yte.size),
        "n_test_subjects": None if groups is None else int(np.unique(groups).size),
        "n_pos_train": int(ytr.sum()),
        "n_pos_test": n_pos_test,
        "prevalence_test": n_pos_test / int(yte.size),
        "weighted": w is not None,
        "bootstrap": {
            "n_resamples": n_bootstrap,
            "n_valid": None if cis["auroc"] is None else cis["auroc"].n_valid,
            "confidence": confidence,
            "seed": seed,
            "unit": unit,
            "interval": "percentile",
        },
    }
    return record, probe, scores, values


def probe_split(
    X_train: Any,
    y_train: Any,
    X_val: Any,
    y_val: Any,
    X_test: Any,
    y_test: Any,
    *,
    groups: Any | None = None,
    weights: Any | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    max_iter: int = 1000,
) -> tuple[dict[str, Any], LinearProbe, np.ndarray]:
    """The full-data linear probe of one binary task on pre-split arrays (the EHRSHOT protocol).

    Fit :class:`LinearProbe` on the train rows, choose C in ``Cs`` by AUROC on the validation
    (tuning) rows, evaluate on the test (held_out) rows: AUROC and AUPRC, with percentile CIs
    from ``n_bootstrap`` patient-level bootstrap resamples of the test rows (each resample
    draws test subjects with replacement; a subject brings all its rows). The caller is
    responsible for the splits being by subject (:func:`probe_task` checks it).

    Args:
        X_train, y_train: training rows and binary labels (bool or 0/1).
        X_val, y_val: tuning rows (choice of C).
        X_test, y_test: held-out rows.
        groups: (n_test,) subject id per test row (the bootstrap unit; identical texts share
            one); None resamples rows.
        weights: (n_test,) evaluation weights of the test rows (e.g. ``1 / r`` on negatives
            kept at rate ``r``), used by the point estimates and every resample; not used in
            fitting.
        Cs: the C grid (1e-4 .. 1e4).
        n_bootstrap: B (0: no intervals).
        confidence: CI coverage.
        seed: bootstrap seed (the same seed and test rows give every method the same
            resamples).
        max_iter: lbfgs iteration cap.

    Returns:
        ``(record, probe, scores)``: the JSON-ready record with the results-schema probe
        fields ``k`` ("all"), ``n_draws`` (1), ``auroc``, ``auroc_ci`` ([low, high], or None
        with ``auroc_ci_reason``), ``auroc_se`` (bootstrap SE), ``auroc_sd`` (None: no draws),
        the same four for ``auprc``, ``C``, and ``val_auroc``, ``converged``, ``n_train``,
        ``n_tuning``, ``n_test``, ``n_test_subjects``, ``n_pos_train``, ``n_pos_test``,
        ``prevalence_test``, ``weighted``, ``bootstrap`` (``n_resamples``, ``n_valid``,
        ``confidence``, ``seed``, ``unit``, ``interval``); the fitted :class:`LinearProbe`;
        the (n_test,) held-out log-odds.

    Raises:
        ValueError: bad shapes, NaN/inf, non-binary labels, a part without both classes
            (named), bad weights.
    """
    record, probe, scores, _ = _probe_split(
        X_train,
        y_train,
        X_val,
        y_val,
        X_test,
        y_test,
        groups,
        weights,
        Cs,
        n_bootstrap,
        confidence,
        seed,
        max_iter,
    )
    return record, probe, scores


def probe_task(
    X: Any,
    y: Any,
    split: Any,
    groups: Any,
    *,
    weights: Any | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    max_iter: int = 1000,
) -> ProbeResult:
    """:func:`probe_split` on one table of rows that carry their split and subject.

    Fit on ``train``, choose C on ``tuning`` (subject-grouped because the splits are by
    subject, which is checked: a subject with rows in two splits is an error), evaluate on
    ``held_out`` with patient-level bootstrap CIs.

    Args:
        X: (n, d) embeddings, one row per (subject, prediction time).
        y: (n,) binary labels.
        split: (n,) "train" / "tuning" / "held_out".
        groups: (n,) subject id per row.
        weights: (n,) evaluation weights (only the held_out rows' are used), or None.
        Cs, n_bootstrap, confidence, seed, max_iter: as :func:`probe_split`.

    Returns:
        :class:`ProbeResult` (``record`` as :func:`probe_split`'s).
    """
    X, split, groups = _check_protocol(X, split, groups)
    yb = _as_binary(y, X.shape[0])
    _require_classes(yb, split, SPLIT_NAMES, "probe_task")
    w = None if weights is None else _check_eval_weights(weights, X.shape[0])
    tr, tu, te = (split == s for s in SPLIT_NAMES)
    record, probe, scores, values = _probe_split(
        X[tr],
        yb[tr],
        X[tu],
        yb[tu],
        X[te],
        yb[te],
        groups[te],
        None if w is None else w[te],
        Cs,
        n_bootstrap,
        confidence,
        seed,
        max_iter,
    )
    return ProbeResult(
        record,
        scores,
        yb[te],
        groups[te],
        None if w is None else w[te],
        np.flatnonzero(te),
        values,
        probe,
    )


def paired_probe_difference(
    a: ProbeResult,
    b: ProbeResult,
    metric: str = "auroc",
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """Paired patient-level bootstrap of ``metric(a) - metric(b)`` on the same held-out rows.

    For the protocol's "dense - best baseline" comparison of one task: both probes must come
    from :func:`probe_task` on the same rows, labels, subjects and weights (checked).
    """
    same = (
        np.array_equal(a.test_index, b.test_index)
        and np.array_equal(a.y_test, b.y_test)
        and np.array_equal(a.groups_test, b.groups_test)
        and (
            (a.weights_test is None and b.weights_test is None)
            or (
                a.weights_test is not None
                and b.weights_test is not None
                and np.array_equal(a.weights_test, b.weights_test)
            )
        )
    )
    if not same:
        raise ValueError(
            "paired_probe_difference: the two probes were not evaluated on the same held-out "
            "rows (row indices, labels, subjects or weights differ)"
        )
    return paired_bootstrap_difference(
        a.scores,
        b.scores,
        a.y_test,
        a.groups_test,
        metric,
        n_resamples,
        confidence,
        seed,
        weights=a.weights_test,
    )


# --------------------------------------------------------------------------- k-shot
def _draw_rows(
    rows: np.ndarray, groups: np.ndarray, k: int, rng: np.random.Generator, avoid: np.ndarray
) -> np.ndarray:
    """k of ``rows``: one row per subject first, subjects not in ``avoid`` first, else random."""
    cand = rows[rng.permutation(rows.size)]
    g = groups[cand]
    order = np.argsort(g, kind="stable")  # stable: keeps the random order within a subject
    gs = g[order]
    starts = np.flatnonzero(np.concatenate(([True], gs[1:] != gs[:-1])))
    lengths = np.diff(np.append(starts, gs.size))
    rank = np.empty(cand.size, dtype=np.intp)
    rank[order] = np.arange(gs.size) - np.repeat(starts, lengths)
    reused = np.isin(g, avoid)
    # lexsort: the last key is the primary one.
    pick = np.lexsort((np.arange(cand.size), reused, rank))[:k]
    return cand[pick]


def sample_k_shot(
    y: Any,
    groups: Any,
    k: int,
    rng: np.random.Generator,
    rows: Any | None = None,
    avoid: Any = (),
    k_neg: int | None = None,
) -> np.ndarray:
    """Draw k positive and k negative rows, from distinct patients where possible.

    Within each class the candidate rows are shuffled, then ranked by (how many rows of the
    same subject come before it in the shuffled order, whether its subject is already used,
    shuffled position), and the first k are taken. So a draw takes one row per subject while
    the class has at least k subjects, prefers subjects not used by the other class (or listed
    in ``avoid``), and takes a second row of a subject only when the class has fewer than k
    distinct subjects. Positives are drawn first, then negatives avoiding their subjects.

    Args:
        y: (n,) binary labels. groups: (n,) subject ids.
        k: positive shots (and negative shots unless ``k_neg`` is given).
        rng: the generator (the protocol seeds one per (seed, k, draw)).
        rows: candidate row indices (default: all rows).
        avoid: subjects to use only when nothing else is left.
        k_neg: negative shots, if different from k.

    Returns:
        (k + k_neg,) row indices: the positives, then the negatives.

    Raises:
        ValueError: more shots than candidate rows of a class.
    """
    yb = _as_binary(y, np.asarray(y).shape[0])
    groups = np.asarray(groups)
    rows = np.arange(yb.size) if rows is None else np.asarray(rows, dtype=np.intp)
    pos_rows, neg_rows = rows[yb[rows]], rows[~yb[rows]]
    k_neg = k if k_neg is None else k_neg
    if k < 0 or k_neg < 0 or k > pos_rows.size or k_neg > neg_rows.size:
        raise ValueError(
            f"{k} positive and {k_neg} negative shots requested, but the rows hold "
            f"{pos_rows.size} positive and {neg_rows.size} negative rows"
        )
    avoid_arr = np.asarray(avoid, dtype=groups.dtype) if len(avoid) else groups[:0]
    pos = _draw_rows(pos_rows, groups, k, rng, avoid_arr)
    neg = _draw_rows(neg_rows, groups, k_neg, rng, np.concatenate([avoid_arr, groups[pos]]))
    return np.concatenate([pos, neg])


def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else None)


def _skipped_k(k: int, reason: str) -> dict[str, Any]:
    return {
        "k": k,
        "n_draws": 0,
        "auroc": None,
        "auroc_ci": None,
        "auroc_sd": None,
        "auprc": None,
        "auprc_ci": None,
        "auprc_sd": None,
        "C": None,
        "selection": None,
        "skipped": True,
        "reason": reason,
        "draws": [],
    }


def kshot_probe(
    X_train: Any,
    y_train: Any,
    groups_train: Any,
    X_val: Any,
    y_val: Any,
    groups_val: Any,
    X_test: Any,
    y_test: Any,
    *,
    ks: Sequence[int] = K_SHOTS,
    draws: int = 5,
    seed: int = 0,
    weights: Any | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    fixed_C: float = FIXED_C,
    max_k_without_selection: int = MAX_K_WITHOUT_SELECTION,
    max_iter: int = 1000,
) -> list[dict[str, Any]]:
    """The k-shot linear probe on pre-split arrays (DESIGN.md; EHRSHOT's few-shot protocol).

    For every k and draw ``r``, with ``numpy.random.default_rng([seed, k, r])`` (so a draw
    depends neither on which other k are run nor on X: every method gets the same shots of
    the same rows):

    1. k positive + k negative training rows (:func:`sample_k_shot`: distinct patients where
       possible);
    2. for k > ``max_k_without_selection``: a validation set of the same k per class from the
       tuning rows (capped at what each class has there; distinct patients where possible)
       and C chosen on it by AUROC; for k <= 4 no selection ("no CV at k <= 4"), C =
       ``fixed_C`` (1.0);
    3. the probe is fitted on the 2k shots, with features standardised by the mean/std of
       *all* training rows (label-free, the same for every k and draw; see the module
       docstring), and evaluated on every test row: AUROC and AUPRC (weighted by ``weights``
       if given).

    A k larger than the training rows' smaller class is skipped with the reason (not an
    error).

    Args:
        X_train, y_train, groups_train: training rows, labels, subject ids.
        X_val, y_val, groups_val: tuning rows, labels, subject ids.
        X_test, y_test: held-out rows and labels (both classes needed).
        ks: shots per class (1, 2, ..., 128).
        draws: draws per k (5).
        seed: seed of the draws.
        weights: (n_test,) evaluation weights, or None.
        Cs: C grid for k > max_k_without_selection.
        fixed_C: C without selection.
        max_k_without_selection: the largest k with a fixed C (4).
        max_iter: lbfgs iteration cap.

    Returns:
        one record per k, in the order of ``ks``: ``k``, ``n_draws``, ``auroc`` (mean over
        draws), ``auroc_sd`` (sd over draws, ddof=1; None for one draw), ``auroc_ci`` (None:
        the spread is the sd), the same for ``auprc``, ``C`` (``fixed_C``, or None when chosen
        per draw), ``selection`` (how C was set), ``skipped`` and ``reason`` (why a k was
        skipped), and ``draws`` (per draw: ``draw``, ``auroc``, ``auprc``, ``C``,
        ``val_auroc``, ``n_train``, ``n_train_subjects``, ``n_val``, ``converged``).

    Raises:
        ValueError: bad input, test rows without both classes, a non-positive k or draws.
    """
    Xtr = _as_matrix(X_train, "X_train")
    ytr = _as_binary(y_train, Xtr.shape[0], "y_train")
    gtr = np.asarray(groups_train)
    if gtr.shape != ytr.shape:
        raise ValueError(f"groups_train must have shape {ytr.shape}, got {gtr.shape}")
    Xva = _as_matrix(X_val, "X_val") if np.size(y_val) else np.zeros((0, Xtr.shape[1]))
    yva = _as_binary(y_val, Xva.shape[0], "y_val")
    gva = np.asarray(groups_val)
    if gva.shape != yva.shape:
        raise ValueError(f"groups_val must have shape {yva.shape}, got {gva.shape}")
    Xte, yte = _check_part(X_test, y_test, "test", Xtr.shape[1])
    if Xva.shape[1] != Xtr.shape[1]:
        raise ValueError(f"X_val has {Xva.shape[1]} features, X_train has {Xtr.shape[1]}")
    w = _check_eval_weights(weights, yte.size)
    if isinstance(draws, bool) or not isinstance(draws, int | np.integer) or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    bad_k = [k for k in ks if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1]
    if bad_k:
        raise ValueError(f"ks must be positive integers, got {bad_k}")
    mean, scale = standardization_stats(Xtr)
    Ztr, Zva, Zte = ((A - mean) / scale for A in (Xtr, Xva, Xte))
    with _blas_threads(Ztr.size):
        return _kshot_loop(
            Ztr,
            ytr,
            gtr,
            Zva,
            yva,
            gva,
            Zte,
            yte,
            w,
            ks,
            int(draws),
            seed,
            Cs,
            fixed_C,
            max_k_without_selection,
            max_iter,
        )


def _kshot_loop(
    Ztr: np.ndarray,
    ytr: np.ndarray,
    gtr: np.ndarray,
    Zva: np.ndarray,
    yva: np.ndarray,
    gva: np.ndarray,
    Zte: np.ndarray,
    yte: np.ndarray,
    w: np.ndarray | None,
    ks: Sequence[int],
    draws: int,
    seed: int,
    Cs: Sequence[float],
    fixed_C: float,
    max_k_without_selection: int,
    max_iter: int,
) -> list[dict[str, Any]]:
    n_pos, n_neg = int(ytr.sum()), int((~ytr).sum())
    val_pos, val_neg = int(yva.sum()), int((~yva).sum())
    records: list[dict[str, Any]] = []
    for k in (int(k) for k in ks):
        if k > min(n_pos, n_neg):
            reason = (
                f"k={k} exceeds the train split's smaller class ({n_pos} positive, "
                f"{n_neg} negative rows)"
            )
            records.append(_skipped_k(k, reason))
            continue
        select = k > max_k_without_selection
        if select and (val_pos == 0 or val_neg == 0):
            select = False
            selection = (
                f"fixed C={fixed_C}: the tuning rows have {val_pos} positive and {val_neg} "
                "negative labels, so C cannot be chosen by AUROC"
            )
        elif select:
            selection = f"validation AUROC on up to {k} tuning rows per class"
        else:
            selection = f"fixed C={fixed_C} (no selection at k <= {max_k_without_selection})"
        per_draw = []
        for r in range(draws):
            rng = np.random.default_rng([seed, k, r])
            shots = sample_k_shot(ytr, gtr, k, rng)
            if select:
                val = sample_k_shot(yva, gva, min(k, val_pos), rng, k_neg=min(k, val_neg))
                probe = LinearProbe(C=None, Cs=Cs, standardize=False, max_iter=max_iter)
                probe.fit(Ztr[shots], ytr[shots], Zva[val], yva[val])
            else:
                val = shots[:0]
                probe = LinearProbe(C=fixed_C, standardize=False, max_iter=max_iter)
                probe.fit(Ztr[shots], ytr[shots])
            scores = probe.decision_function(Zte)
            per_draw.append(
                {
                    "draw": r,
                    "auroc": weighted_auroc(scores, yte, w),
                    "auprc": weighted_average_precision(scores, yte, w),
                    "C": probe.C_,
                    "val_auroc": probe.val_auroc_,
                    "n_train": int(shots.size),
                    "n_train_subjects": int(np.unique(gtr[shots]).size),
                    "n_val": int(val.size),
                    "converged": bool(probe.converged_),
                }
            )
        auroc, auroc_sd = _mean_sd([d["auroc"] for d in per_draw])
        auprc, auprc_sd = _mean_sd([d["auprc"] for d in per_draw])
        records.append(
            {
                "k": k,
                "n_draws": draws,
                "auroc": auroc,
                "auroc_ci": None,
                "auroc_sd": auroc_sd,
                "auprc": auprc,
                "auprc_ci": None,
                "auprc_sd": auprc_sd,
                "C": None if select else fixed_C,
                "selection": selection,
                "skipped": False,
                "reason": None,
                "draws": per_draw,
            }
        )
    return records


def probe_k_shot(
    X: Any,
    y: Any,
    split: Any,
    groups: Any,
    *,
    ks: Sequence[int] = K_SHOTS,
    draws: int = 5,
    seed: int = 0,
    weights: Any | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    fixed_C: float = FIXED_C,
    max_k_without_selection: int = MAX_K_WITHOUT_SELECTION,
    max_iter: int = 1000,
) -> list[dict[str, Any]]:
    """:func:`kshot_probe` on one table of rows that carry their split and subject.

    Args:
        X: (n, d) embeddings. y: (n,) binary labels. split: (n,) split names.
        groups: (n,) subject ids (a subject in two splits is an error).
        weights: (n,) evaluation weights (only the held_out rows' are used), or None.
        ks, draws, seed, Cs, fixed_C, max_k_without_selection, max_iter: as
            :func:`kshot_probe`.

    Returns:
        :func:`kshot_probe`'s records.
    """
    X, split, groups = _check_protocol(X, split, groups)
    yb = _as_binary(y, X.shape[0])
    _require_classes(yb, split, ["held_out"], "probe_k_shot")
    if not (split == "train").any():
        raise ValueError("probe_k_shot: the train split is empty")
    w = None if weights is None else _check_eval_weights(weights, X.shape[0])
    tr, tu, te = (split == s for s in SPLIT_NAMES)
    return kshot_probe(
        X[tr],
        yb[tr],
        groups[tr],
        X[tu],
        yb[tu],
        groups[tu],
        X[te],
        yb[te],
        ks=ks,
        draws=draws,
        seed=seed,
        weights=None if w is None else w[te],
        Cs=Cs,
        fixed_C=fixed_C,
        max_k_without_selection=max_k_without_selection,
        max_iter=max_iter,
    )


# --------------------------------------------------------------------------- multi-label
def probe_multilabel(
    X: Any,
    Y: Any,
    split: Any,
    groups: Any,
    *,
    label_names: Sequence[str] | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    max_iter: int = 1000,
) -> dict[str, Any]:
    """One-vs-rest probes of a multi-label task: per-label AUROC/AUPRC and macro AUROC.

    For MTSamples-style data (one distinct text can carry several specialties): column ``j``
    of ``Y`` is the binary task "has label j", probed with :func:`probe_task`. A label with a
    single class in any split cannot be fitted, tuned or evaluated: it is skipped, with the
    reason. ``macro_auroc`` is the unweighted mean over the labels probed. Every label is
    bootstrapped with the same seed on the same held-out rows and groups, hence on the same
    resamples, so the macro AUROC gets a percentile CI from the per-resample macro means
    (resamples where some label lacks a class are left out; ``macro_n_valid`` counts the rest).

    Args:
        X: (n, d) embeddings. Y: (n, L) binary label matrix.
        split, groups: as :func:`probe_task` (groups: distinct-text or subject ids).
        label_names: L names (default "0", "1", ...).
        Cs, n_bootstrap, confidence, seed, max_iter: as :func:`probe_task`.

    Returns:
        ``labels`` (one probe record per probed label, with ``label``), ``skipped``
        (``[{"label", "reason"}]``), ``n_labels``, ``n_labels_probed``, ``macro_auroc``,
        ``macro_auroc_ci``, ``macro_n_valid``, ``macro_auprc``.
    """
    X, split, groups = _check_protocol(X, split, groups)
    Yarr = np.asarray(Y)
    if Yarr.ndim != 2 or Yarr.shape[0] != X.shape[0]:
        raise ValueError(f"Y must have shape ({X.shape[0]}, L), got {Yarr.shape}")
    names = [str(j) for j in range(Yarr.shape[1])] if label_names is None else list(label_names)
    if len(names) != Yarr.shape[1]:
        raise ValueError(f"{len(names)} label_names for {Yarr.shape[1]} label columns")
    records, skipped, boots = [], [], []
    for j, name in enumerate(names):
        yj = _as_binary(Yarr[:, j], X.shape[0], f"Y[:, {j}] ({name})")
        reason = _single_class_reason(yj, split)
        if reason is not None:
            skipped.append({"label": name, "reason": reason})
            continue
        res = probe_task(
            X,
            yj,
            split,
            groups,
            Cs=Cs,
            n_bootstrap=n_bootstrap,
            confidence=confidence,
            seed=seed,
            max_iter=max_iter,
        )
        records.append({"label": name, **res.record})
        boots.append(res.bootstrap.get("auroc"))
    out: dict[str, Any] = {
        "labels": records,
        "skipped": skipped,
        "n_labels": len(names),
        "n_labels_probed": len(records),
        "macro_auroc": None,
        "macro_auroc_ci": None,
        "macro_n_valid": None,
        "macro_auprc": None,
    }
    if not records:
        out["macro_auroc_reason"] = "no label has both classes in every split"
        return out
    out["macro_auroc"] = float(np.mean([r["auroc"] for r in records]))
    out["macro_auprc"] = float(np.mean([r["auprc"] for r in records]))
    if n_bootstrap > 0:
        macro = np.mean(np.stack(boots), axis=0)  # NaN where some label is undefined
        ci = percentile_interval(macro, out["macro_auroc"], confidence, "subject")
        out["macro_auroc_ci"] = None if ci.low is None else [ci.low, ci.high]
        out["macro_n_valid"] = ci.n_valid
    return out


# --------------------------------------------------------------------------- files
@dataclass(frozen=True)
class ProbeData:
    """Embeddings joined to binary labels on (subject_id, prediction_time).

    Attributes:
        X: (n, d) float embeddings. y: (n,) bool labels. split: (n,) split names.
        subject_id: (n,) int64. prediction_time: (n,) datetime64[us].
        split_source: where the splits came from.
        counts: ``labels`` / ``embeddings`` rows read and ``matched`` rows.
        key: the embedding column used.
    """

    X: np.ndarray
    y: np.ndarray
    split: np.ndarray
    subject_id: np.ndarray
    prediction_time: np.ndarray
    split_source: str
    counts: dict[str, int]
    key: str


def load_probe_data(
    embeddings: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    key: str | None = None,
    split_seed: int = 0,
) -> ProbeData:
    """Read a ``densefeat embed`` parquet and MEDS labels and join them.

    The embeddings file must be ``.parquet`` with ``subject_id`` (integer),
    ``prediction_time`` (naive Datetime), one float-list embedding column (``key``, or the
    only one; read and validated by :func:`densefeat.io.open_embeddings`) and optionally
    ``split``. The labels are MEDS labels (``subject_id``, ``prediction_time``,
    ``boolean_value``; :func:`densefeat.data.meds.read_labels`). Rows are inner-joined on
    (subject_id, prediction_time) and sorted by them. Without a ``split`` column, subjects are
    split by a hash of (``split_seed``, subject_id) into train/tuning/held_out 0.8/0.1/0.1
    (:func:`densefeat.data.splits.assign_subject_splits`; the same assignment as a MEDS
    dataset without a split file read with that seed).

    Raises:
        FileNotFoundError: a missing file.
        ValueError: a non-parquet embeddings file; a missing/mistyped/null column (named);
            duplicate (subject_id, prediction_time) rows; unknown split names or a subject in
            two splits; no label row matching an embedding row (with both match counts);
            labels without ``boolean_value``; a single class among the matched labels.
    """
    import polars as pl
    import pyarrow.parquet as pq

    from ..data.meds import read_labels
    from ..data.splits import assign_subject_splits
    from ..io import open_embeddings

    emb_path, lab_path = Path(embeddings), Path(labels)
    if not emb_path.exists():
        raise FileNotFoundError(f"--embeddings {emb_path}: no such file")
    if emb_path.suffix.lower() != ".parquet":
        raise ValueError(
            f"--embeddings {emb_path}: probing joins labels on subject_id and prediction_time, "
            "so it needs a .parquet file with those columns (as written by `densefeat embed`)"
        )
    src = open_embeddings(emb_path, key)  # validates the embedding column (named errors)
    used_key = src.key or ""
    columns = pq.read_schema(emb_path).names
    for col in ("subject_id", "prediction_time"):
        if col not in columns:
            raise ValueError(
                f"--embeddings {emb_path}: no column {col!r} (columns: "
                f"{', '.join(columns) or 'none'})"
            )
    wanted = ["subject_id", "prediction_time", *(["split"] if "split" in columns else [])]
    ids = pl.read_parquet(emb_path, columns=wanted)
    sid, ptime = ids.schema["subject_id"], ids.schema["prediction_time"]
    if not sid.is_integer():
        raise ValueError(
            f"--embeddings {emb_path}: column 'subject_id' has dtype {sid}; want Int64"
        )
    if not isinstance(ptime, pl.Datetime) or ptime.time_zone is not None:
        raise ValueError(
            f"--embeddings {emb_path}: column 'prediction_time' has dtype {ptime}; want a naive "
            "Datetime"
        )
    has_split = "split" in ids.columns
    emb = ids.select(
        pl.col("subject_id").cast(pl.Int64),
        pl.col("prediction_time").cast(pl.Datetime("us")),
        *([pl.col("split").cast(pl.Utf8)] if has_split else []),
    ).with_row_index("_row")
    for col in ("subject_id", "prediction_time", *(["split"] if has_split else [])):
        nulls = emb[col].null_count()
        if nulls:
            raise ValueError(f"--embeddings {emb_path}: column {col!r} has {nulls} nulls")
    dup = emb.select("subject_id", "prediction_time").is_duplicated()
    if dup.any():
        first = emb.filter(dup).row(0, named=True)
        raise ValueError(
            f"--embeddings {emb_path}: {int(dup.sum())} rows share a (subject_id, "
            f"prediction_time) with another row (e.g. subject {first['subject_id']} at "
            f"{first['prediction_time']}); the join to labels would be ambiguous"
        )

    lab = read_labels(lab_path)
    if "boolean_value" not in lab.columns:
        have = [c for c in lab.columns if c not in ("subject_id", "prediction_time")]
        raise ValueError(
            f"--labels {lab_path}: no 'boolean_value' column (label columns: {', '.join(have)}); "
            "densefeat probe needs binary labels"
        )
    lab = lab.select("subject_id", "prediction_time", "boolean_value")
    dup = lab.select("subject_id", "prediction_time").is_duplicated()
    if dup.any():
        raise ValueError(
            f"--labels {lab_path}: {int(dup.sum())} rows share a (subject_id, prediction_time) "
            "with another row; one label per prediction time is expected"
        )
    joined = lab.join(emb, on=["subject_id", "prediction_time"], how="inner").sort(
        ["subject_id", "prediction_time"]
    )
    counts = {"labels": lab.height, "embeddings": emb.height, "matched": joined.height}
    if joined.height == 0:
        common = (
            lab.select("subject_id")
            .unique()
            .join(emb.select("subject_id").unique(), on="subject_id")
        )
        raise ValueError(
            f"--labels {lab_path}: no label row matches an embedding row of {emb_path} on "
            f"(subject_id, prediction_time): 0 of {lab.height} label rows and 0 of {emb.height} "
            f"embedding rows matched ({common.height} subjects in common"
            + (
                "; the prediction times differ: were the embeddings made with "
                "`densefeat embed --labels` on this label file?)"
                if common.height
                else ")"
            )
        )
    y = joined["boolean_value"].to_numpy()
    if y.all() or not y.any():
        raise ValueError(
            f"--labels {lab_path}: column 'boolean_value' has a single class (all "
            f"{bool(y[0])}) among the {y.size} matched rows: a probe needs both classes"
        )
    subjects = joined["subject_id"].to_numpy()
    if has_split:
        split = joined["split"].to_numpy().astype(str)
        split_source = f"column 'split' of {emb_path}"
        unknown = sorted(set(np.unique(split).tolist()) - set(SPLIT_NAMES))
        if unknown:
            raise ValueError(
                f"--embeddings {emb_path}: column 'split' holds {unknown}; expected "
                f"{list(SPLIT_NAMES)}"
            )
        mixed = joined.group_by("subject_id").agg(pl.col("split").n_unique().alias("n"))
        mixed = mixed.filter(pl.col("n") > 1)["subject_id"].sort()
        if mixed.len():
            raise ValueError(
                f"--embeddings {emb_path}: column 'split': {mixed.len()} subjects have rows in "
                f"more than one split (e.g. {mixed.head(3).to_list()}); splits must be by subject"
            )
    else:
        uniq, inv = np.unique(subjects, return_inverse=True)
        names = np.asarray(assign_subject_splits(uniq.tolist(), seed=split_seed))
        split = names[inv.reshape(-1)]
        split_source = f"hash of (split seed {split_seed}, subject_id), fractions 0.8/0.1/0.1"
    X_all = np.concatenate(list(src.chunks()), axis=0)
    X = X_all[joined["_row"].to_numpy()]
    return ProbeData(
        X=X,
        y=y.astype(bool),
        split=split,
        subject_id=subjects,
        prediction_time=joined["prediction_time"].to_numpy(),
        split_source=split_source,
        counts=counts,
        key=used_key,
    )
