"""One-vs-rest linear probes of a multi-label task, with the macro AUROC and its CI.

For MTSamples-style data (one distinct text can carry several specialties): column ``j`` of an
``(n, L)`` label matrix is the binary task "has label j", probed with the full-data protocol
(:func:`~densefeat.eval.probe.protocol.probe_task`). The macro AUROC is the unweighted mean
over the ``L'`` labels probed, ``macro = (1/L') sum_j AUROC_j``; every label is bootstrapped on
the same patient-level resamples, so the macro AUROC's percentile CI comes from the
per-resample means ``macro_b = (1/L') sum_j AUROC_{j,b}``.

References:
    Wornow, M., Thapa, R., Steinberg, E., Fries, J. A. & Shah, N. H. (2023). EHRSHOT: An EHR
    Benchmark for Few-Shot Evaluation of Foundation Models. NeurIPS Datasets and Benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..bootstrap import percentile_interval
from ..checks import as_binary
from .estimator import DEFAULT_CS
from .inputs import check_split_table, single_class_reason
from .protocol import probe_task

__all__ = ["probe_multilabel"]


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
    X, split, groups = check_split_table(X, split, groups)
    Yarr = np.asarray(Y)
    if Yarr.ndim != 2 or Yarr.shape[0] != X.shape[0]:
        raise ValueError(f"Y must have shape ({X.shape[0]}, L), got {Yarr.shape}")
    names = [str(j) for j in range(Yarr.shape[1])] if label_names is None else list(label_names)
    if len(names) != Yarr.shape[1]:
        raise ValueError(f"{len(names)} label_names for {Yarr.shape[1]} label columns")
    records, skipped, boots = [], [], []
    for j, name in enumerate(names):
        yj = as_binary(Yarr[:, j], X.shape[0], f"Y[:, {j}] ({name})")
        reason = single_class_reason(yj, split)
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
