"""Linear probes on frozen embeddings: the estimator and the evaluation protocol.

This implements the evaluation protocol of docs/design.md, which follows EHRSHOT (Wornow et
al. 2023). One module per idea; every public name is importable from this package:

* :mod:`~densefeat.eval.probe.estimator`: :class:`LinearProbe`, L2-regularised logistic
  regression ``min_{w,b} 1/2 ||w||^2 + C sum_i log(1 + exp(-y_i (w^T z_i + b)))`` on features
  standardised with training-row statistics, C chosen from 1e-4 .. 1e4 by validation AUROC.
* :mod:`~densefeat.eval.probe.whitening`: :func:`whiten`, ZCA whitening with train-split
  statistics (the "after whitening" control).
* :mod:`~densefeat.eval.probe.protocol`: the full-data probe (:func:`probe_split` on
  pre-split arrays, :func:`probe_task` on a table of rows with split and subject): fit on
  ``train``, choose C on ``tuning``, AUROC and AUPRC on ``held_out`` with percentile 95% CIs
  from 1,000 patient-level bootstrap resamples; :func:`paired_probe_difference`.
* :mod:`~densefeat.eval.probe.kshot`: the k-shot probe (:func:`kshot_probe`,
  :func:`probe_k_shot`): k = 1 .. 128 positive and negative shots, 5 draws, mean and sd.
* :mod:`~densefeat.eval.probe.multilabel`: one-vs-rest probes and the macro AUROC.
* :mod:`~densefeat.eval.probe.files`: the probe of an embedding file on a MEDS label file
  (:func:`probe_files`, what ``densefeat probe`` computes).
* :mod:`~densefeat.eval.probe.inputs`: the checks of the protocol's inputs.

Imports go one way: ``estimator``, ``whitening`` and ``inputs`` build only on
:mod:`densefeat.eval.checks` and :mod:`densefeat.eval.ranking`; ``protocol`` and ``kshot`` on
those (``protocol`` also on :mod:`densefeat.eval.bootstrap`); ``multilabel`` on ``protocol``;
``files`` on ``protocol``, ``kshot`` and ``whitening``. Needs scikit-learn (the ``eval`` extra).

References:
    Wornow, M., Thapa, R., Steinberg, E., Fries, J. A. & Shah, N. H. (2023). EHRSHOT: An EHR
    Benchmark for Few-Shot Evaluation of Foundation Models. NeurIPS Datasets and Benchmarks.
"""

from .estimator import DEFAULT_CS, LinearProbe, standardization_stats
from .files import ProbeData, load_probe_data, probe_files
from .kshot import (
    FIXED_C,
    K_SHOTS,
    MAX_K_WITHOUT_SELECTION,
    kshot_probe,
    probe_k_shot,
    sample_k_shot,
)
from .multilabel import probe_multilabel
from .protocol import ProbeResult, paired_probe_difference, probe_split, probe_task
from .whitening import whiten, zca_whitening

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
    "probe_files",
    "probe_k_shot",
    "probe_multilabel",
    "probe_split",
    "probe_task",
    "sample_k_shot",
    "standardization_stats",
    "whiten",
    "zca_whitening",
]
