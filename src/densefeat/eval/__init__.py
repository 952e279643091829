"""Evaluation of frozen embeddings: linear probes, robustness, temporal stability, alignment.

* :mod:`~densefeat.eval.probe`: EHRSHOT-style linear probes (full data, k-shot, multi-label),
  whitening, and the probe of an embedding file on labels; needs scikit-learn (the ``eval``
  extra).
* :mod:`~densefeat.eval.ranking`: AUROC and average precision with sample weights, vectorised
  over weight rows.
* :mod:`~densefeat.eval.bootstrap`: vectorised patient-level bootstrap of AUROC / AUPRC and
  paired differences.
* :mod:`~densefeat.eval.checks`: the input checks these share.
* :mod:`~densefeat.eval.perturb`, :mod:`~densefeat.eval.perturb_hours` (hour tokens),
  :mod:`~densefeat.eval.robustness`: test-time perturbations and embedding drift.
* :mod:`~densefeat.eval.temporal`: temporal stability with its no-drift floor; seed alignment.

Names are imported lazily, so ``import densefeat.eval`` does not import scikit-learn.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "LinearProbe": "probe",
    "kshot_probe": "probe",
    "probe_split": "probe",
    "probe_task": "probe",
    "probe_multilabel": "probe",
    "whiten": "probe",
    "bootstrap_ci": "bootstrap",
    "paired_bootstrap_difference": "bootstrap",
    "weighted_auroc": "ranking",
    "weighted_average_precision": "ranking",
    "embed_perturbed": "robustness",
    "embedding_drift": "robustness",
    "robustness_sweep": "robustness",
    "PERTURBATIONS": "perturb",
    "perturb": "perturb",
    "seed_alignment": "temporal",
    "temporal_stability": "temporal",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
