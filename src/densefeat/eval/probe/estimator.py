"""The linear probe: L2 logistic regression on standardised features, C chosen by AUROC.

:class:`LinearProbe` is the estimator of the evaluation protocol (docs/design.md, "Evaluation
protocol"), which follows EHRSHOT (Wornow et al. 2023): L2-regularised logistic regression

    ``min_{w,b} 1/2 ||w||^2 + C sum_i log(1 + exp(-y_i (w^T z_i + b)))``  (lbfgs)

on standardised features ``z = (x - mean) / std`` (statistics from the training rows only).
``C`` is chosen from ``Cs = 1e-4 .. 1e4`` (:data:`DEFAULT_CS`: 9 values, log-spaced) by the
*AUROC* of a separate validation set (``scoring="roc_auc"`` explicitly, as EHRSHOT's
GridSearchCV with a PredefinedSplit); the probe used afterwards is the one fitted on the
training rows alone with the chosen C (EHRSHOT refits on the training rows only, "so that we
are truly doing k-shot learning"). Ties in validation AUROC go to the smallest C (the most
regularised model; also what ``argmax`` over an ascending grid gives in scikit-learn's
searches).

Why standardise: (1) lbfgs converges in far fewer iterations on features of unit scale (the
Hessian of the logistic loss is ``X^T D X``, whose conditioning is driven by the feature scales);
(2) the L2 penalty ``||w||^2`` is not scale invariant, so without standardisation the same C
means a different amount of regularisation for embeddings of a different scale: a method whose
embeddings are 10x larger would effectively get a 100x larger C. Standardising makes the C grid
mean the same for every method. The statistics come from training rows only (docs/design.md:
"no leakage: normalisation ... from the training split only"; the k-shot protocol standardises
with all rows of the train split, see :mod:`densefeat.eval.probe.kshot`). Constant features
(std <= 1e-10 max(1, |mean|)) are left unscaled (they are 0 after centring and carry no weight).

References:
    Wornow, M., Thapa, R., Steinberg, E., Fries, J. A. & Shah, N. H. (2023). EHRSHOT: An EHR
    Benchmark for Few-Shot Evaluation of Foundation Models. NeurIPS Datasets and Benchmarks.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from ..checks import as_labels, as_matrix
from ..ranking import weighted_auroc

__all__ = ["DEFAULT_CS", "LinearProbe", "blas_threads", "standardization_stats"]

#: The C grid: 1e-4, 1e-3, ..., 1e4 (EHRSHOT's range).
DEFAULT_CS: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 4, 9))
#: Relative threshold below which a feature's std counts as zero (constant feature).
_CONSTANT_RTOL = 1e-10
#: Fits on at most this many matrix elements run with one BLAS thread (see blas_threads).
_SMALL_PROBLEM = 2**21


def blas_threads(elements: int) -> contextlib.AbstractContextManager[Any]:
    """One BLAS thread for small problems (at most 2**21 matrix elements), the default otherwise.

    A probe fit on a few hundred rows is dominated by thread start-up and synchronisation in
    multi-threaded OpenBLAS, and on a busy machine the spinning threads make it far slower:
    measured on 2 shared cores, 256 x 128 rows at C = 10: 328 ms with 2 BLAS threads, 9.6 ms
    with 1. ``threadpoolctl`` ships with scikit-learn.

    Args:
        elements: the size of the (standardised) training matrix.
    """
    if elements <= _SMALL_PROBLEM:
        return threadpool_limits(limits=1, user_api="blas")
    return contextlib.nullcontext()


def _constant_features(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Features whose std is at most ``1e-10 * max(1, |mean|)``."""
    return std <= _CONSTANT_RTOL * np.maximum(1.0, np.abs(mean))


def standardization_stats(X: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and scale (population std; 1 for constant features) of the rows of X.

    Apply as ``(X - mean) / scale``. A feature is constant when its std is at most
    ``1e-10 * max(1, |mean|)``; its scale is then 1 (so it stays ~0 after centring).
    """
    arr = as_matrix(X)
    mean = arr.mean(axis=0)
    std = arr.std(axis=0)
    return mean, np.where(_constant_features(mean, std), 1.0, std)


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
        X = as_matrix(X, "X")
        y = as_labels(y, X.shape[0], "y")
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
            X_val = as_matrix(X_val, "X_val")
            if X_val.shape[1] != X.shape[1]:
                raise ValueError(f"X_val has {X_val.shape[1]} features, X has {X.shape[1]}")
            y_val = as_labels(y_val, X_val.shape[0], "y_val")
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
        self.n_constant_features_ = int(_constant_features(X.mean(axis=0), X.std(axis=0)).sum())
        if self.n_constant_features_ == X.shape[1]:
            raise ValueError(
                f"all {X.shape[1]} features of X are constant over the training rows: "
                "nothing to learn"
            )
        Z = (X - self.mean_) / self.scale_
        Zv = None if X_val is None else (X_val - self.mean_) / self.scale_

        with blas_threads(Z.size):
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
        X = as_matrix(X, "X")
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
