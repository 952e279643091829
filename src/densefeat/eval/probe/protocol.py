"""The full-data linear probe of a binary task, and the paired comparison of two probes.

The protocol (docs/design.md, "Evaluation protocol"; EHRSHOT, Wornow et al. 2023): fit
:class:`~densefeat.eval.probe.estimator.LinearProbe` on ``train``, choose C on ``tuning`` by
AUROC, evaluate on ``held_out``. Splits are by subject, so the validation split is
subject-grouped by construction. The held-out AUROC and AUPRC get percentile 95% CIs from 1,000
patient-level bootstrap resamples (:mod:`densefeat.eval.bootstrap`): each resample draws the
``S`` held-out subjects with replacement, and a subject brings all its rows.

Two input forms: :func:`probe_split` on pre-split arrays, :func:`probe_task` on one table of
rows with a split and subject column (which checks that the splits are by subject). Held-out
rows may carry *evaluation weights* (``weights``, e.g. ``1 / r`` on negatives kept at rate
``r``): they enter the AUROC/AUPRC point estimates and every bootstrap resample, never the fit.

:func:`paired_probe_difference`: the difference of two probes' held-out AUROC (or AUPRC) on
the same patient-level resamples, ``d_b = m(a; W_b) - m(b; W_b)``.

References:
    Wornow, M., Thapa, R., Steinberg, E., Fries, J. A. & Shah, N. H. (2023). EHRSHOT: An EHR
    Benchmark for Few-Shot Evaluation of Foundation Models. NeurIPS Datasets and Benchmarks.
    Efron, B. & Tibshirani, R. (1993). An Introduction to the Bootstrap. Chapman & Hall.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...data.splits import SPLIT_NAMES
from ..bootstrap import (
    MetricCI,
    PairedDifference,
    bootstrap_metrics,
    paired_bootstrap_difference,
    percentile_interval,
)
from ..checks import as_binary
from ..ranking import weighted_auroc, weighted_average_precision
from .estimator import DEFAULT_CS, LinearProbe
from .inputs import check_eval_weights, check_part, check_split_table, require_classes

__all__ = ["ProbeResult", "paired_probe_difference", "probe_split", "probe_task"]


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
    """A metric's record fields: ``name``, ``{name}_ci``, ``{name}_se`` (and why no CI)."""
    if ci is None or ci.low is None:
        return {
            name: estimate,
            f"{name}_ci": None,
            f"{name}_ci_reason": reason if ci is None else "no resample held both classes",
            f"{name}_se": None,
        }
    return {name: estimate, f"{name}_ci": [ci.low, ci.high], f"{name}_se": ci.std}


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
    """:func:`probe_split`, also returning the bootstrap values (for :class:`ProbeResult`)."""
    Xtr, ytr = check_part(X_train, y_train, "train")
    Xva, yva = check_part(X_val, y_val, "val", Xtr.shape[1])
    Xte, yte = check_part(X_test, y_test, "test", Xtr.shape[1])
    w = check_eval_weights(weights, yte.size)
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
    X, split, groups = check_split_table(X, split, groups)
    yb = as_binary(y, X.shape[0])
    require_classes(yb, split, SPLIT_NAMES, "probe_task")
    w = check_eval_weights(weights, X.shape[0])
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
    from :func:`probe_task` on the same rows, labels, subjects and weights (checked). Both
    are scored on the same resamples of the held-out subjects, so the interval of the
    difference is much narrower than one built from two independent intervals.

    Args:
        a, b: the two probes' results.
        metric: "auroc" or "auprc".
        n_resamples, confidence, seed: as
            :func:`~densefeat.eval.bootstrap.paired_bootstrap_difference`.

    Returns:
        :class:`~densefeat.eval.bootstrap.PairedDifference` of ``metric(a) - metric(b)``.

    Raises:
        ValueError: the probes were not evaluated on the same held-out rows.
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
