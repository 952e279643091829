"""External validation: a probe fitted at one site and tested on every labelled row of another.

Clinical models are judged on a second site. For one binary task and one embedding:

* **transfer**: :class:`~densefeat.eval.probe.estimator.LinearProbe` fitted on site A's
  ``train`` rows, C chosen by AUROC on A's ``tuning`` rows (the split protocol's fit), then
  applied unchanged to **all** of site B's labelled rows;
* **within-site**: site B's own probe on the same rows, by subject-grouped K-fold
  cross-fitting over B (:mod:`densefeat.eval.probe.crossfit`), so every B row is scored by a
  probe that never saw its subject and both numbers are measured on exactly the same rows;
* **drop** = within-site − transfer AUROC (positive: the probe loses by moving sites), with a
  *paired* patient-level bootstrap CI: both score vectors are evaluated on the same resamples of
  B's subjects.

The embeddings of site B must come from the same encoder with site A's vocabulary and
normalisation (``densefeat benchmark --external`` does this for each run); the share of B's
events whose code site A never trained on is reported beside the numbers by the caller.

References:
    Steyerberg, E. W. (2019). Clinical Prediction Models, 2nd ed., ch. 17 (external validity).
    Riley, R. D. et al. (2016). External validation of clinical prediction models using big
    datasets from e-health records or IPD meta-analysis. BMJ 353, i3140.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .bootstrap import bootstrap_metrics
from .probe.crossfit import crossfit_probe
from .probe.estimator import DEFAULT_CS, LinearProbe
from .ranking import weighted_auroc, weighted_average_precision

__all__ = ["external_validation", "fit_site_probe"]


def fit_site_probe(X: np.ndarray, y: np.ndarray, split: np.ndarray) -> LinearProbe:
    """Site A's probe: fit on ``train``, C chosen by AUROC on ``tuning``.

    Raises:
        ValueError: a train or tuning split without both classes (named).
    """
    y = np.asarray(y).astype(bool)
    for part in ("train", "tuning"):
        rows = split == part
        if np.unique(y[rows]).size < 2:
            raise ValueError(
                f"external validation: site A's {part} split has {int(y[rows].sum())} positive "
                f"and {int((~y[rows]).sum())} negative rows; the transfer probe needs both"
            )
    tr, tu = split == "train", split == "tuning"
    return LinearProbe(C=None, Cs=DEFAULT_CS).fit(X[tr], y[tr], X[tu], y[tu])


def _ci(values: np.ndarray) -> list[float] | None:
    v = values[np.isfinite(values)]
    return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v.size else None


def external_validation(
    X_a: Any,
    y_a: Any,
    split_a: Any,
    X_b: Any,
    y_b: Any,
    groups_b: Any,
    *,
    weights_b: Any | None = None,
    folds: int = 5,
    n_bootstrap: int = 1000,
    seed: int = 0,
    probe: LinearProbe | None = None,
) -> dict[str, Any]:
    """Transfer A -> B, B's within-site probe and the drop (module docstring).

    Args:
        X_a, y_a, split_a: site A's rows (embeddings, binary labels, split names).
        X_b, y_b, groups_b: every labelled row of site B and its subject ids.
        weights_b: evaluation weights of B's rows (metrics and bootstrap only).
        folds: K of B's within-site cross-fitting.
        n_bootstrap: patient-level resamples of B's subjects (shared by every CI).
        seed: seed of the folds and the bootstrap.
        probe: site A's fitted probe (default: :func:`fit_site_probe` on A).

    Returns:
        ``{"n_b", "n_b_subjects", "n_pos_b", "transfer_auroc", "transfer_auroc_ci",
        "transfer_auprc", "transfer_auprc_ci", "within_auroc", "within_auroc_ci",
        "within_auprc", "within_auprc_ci", "auroc_drop", "auroc_drop_ci", "C_a", "folds_b"}``.
    """
    X_a = np.asarray(X_a, dtype=np.float64)
    X_b = np.asarray(X_b, dtype=np.float64)
    if X_a.ndim != 2 or X_b.ndim != 2 or X_a.shape[1] != X_b.shape[1]:
        raise ValueError(
            f"external validation: site A and B embeddings must be (n, d) of one d, got "
            f"{X_a.shape} and {X_b.shape}"
        )
    yb = np.asarray(y_b).astype(bool)
    groups_b = np.asarray(groups_b)
    w = None if weights_b is None else np.asarray(weights_b, dtype=np.float64)
    if probe is None:
        probe = fit_site_probe(X_a, np.asarray(y_a), np.asarray(split_a))
    transfer = probe.decision_function(X_b)
    _, cf = crossfit_probe(
        X_b, yb, groups_b, k=folds, weights=w, n_bootstrap=0, n_null=0, seed=seed
    )
    out: dict[str, Any] = {
        "n_b": int(yb.size),
        "n_b_subjects": int(np.unique(groups_b).size),
        "n_pos_b": int(yb.sum()),
        "C_a": float(probe.C_),
        "folds_b": int(folds),
    }
    boots = {}
    for name, s in (("transfer", transfer), ("within", cf.scores)):
        out[f"{name}_auroc"] = float(weighted_auroc(s, yb, w))
        out[f"{name}_auprc"] = float(weighted_average_precision(s, yb, w))
        boots[name] = (
            bootstrap_metrics(s, yb, groups_b, n_bootstrap, seed, weights=w) if n_bootstrap else {}
        )
        for m in ("auroc", "auprc"):
            out[f"{name}_{m}_ci"] = _ci(boots[name][m]) if boots[name] else None
    out["auroc_drop"] = out["within_auroc"] - out["transfer_auroc"]
    out["auroc_drop_ci"] = (
        _ci(boots["within"]["auroc"] - boots["transfer"]["auroc"]) if n_bootstrap else None
    )
    return out


def external_files(
    embeddings: Any,
    labels: Any,
    test_embeddings: Any,
    test_labels: Any | None = None,
    *,
    key: str | None = None,
    folds: int = 5,
    n_bootstrap: int = 1000,
    seed: int = 0,
    split_seed: int = 0,
) -> dict[str, Any]:
    """External validation of two ``densefeat embed`` files (``densefeat probe
    --test-embeddings``): site A's probe (its train/tuning split) tested on every labelled row
    of site B, beside B's own cross-fitted probe.

    Args:
        embeddings, labels: site A's embeddings and MEDS labels.
        test_embeddings: site B's embeddings (same encoder, site A's vocabulary).
        test_labels: site B's labels (default: ``labels``, joined on B's rows).
        key, folds, n_bootstrap, seed, split_seed: as :func:`external_validation` and
            :func:`densefeat.eval.probe.files.load_probe_data`.

    Returns:
        :func:`external_validation`'s record plus the inputs and matched row counts.
    """
    from .probe.files import load_probe_data

    a = load_probe_data(embeddings, labels, key=key, split_seed=split_seed)
    b = load_probe_data(test_embeddings, test_labels or labels, key=key, split_seed=split_seed)
    shared = np.intersect1d(a.subject_id, b.subject_id)
    if shared.size:
        raise ValueError(
            f"--test-embeddings {test_embeddings}: {shared.size} subject(s) also in --embeddings "
            f"(e.g. {int(shared[0])}); an external site must hold other patients"
        )
    rec = external_validation(
        a.X, a.y, a.split, b.X, b.y, b.subject_id, folds=folds, n_bootstrap=n_bootstrap, seed=seed
    )
    return {
        "embeddings": str(embeddings),
        "test_embeddings": str(test_embeddings),
        "test_labels": str(test_labels or labels),
        "rows_b_matched": b.counts["matched"],
        **rec,
    }
