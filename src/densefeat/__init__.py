"""densefeat: dense feature learning and embedding geometry for medical data.

The public API (``from densefeat import dense_feature_loss, effective_rank, LinearProbe``):

* objectives and baseline losses, pure functions (:mod:`densefeat.functional`) and modules
  (:mod:`densefeat.losses`);
* geometry metrics (:mod:`densefeat.functional`) and the streaming
  :class:`CovarianceAccumulator` (:mod:`densefeat.metrics`);
* the linear probe and its protocol (:mod:`densefeat.eval.probe`);
* MEDS reading and writing (:mod:`densefeat.data.meds`) and patient histories
  (:mod:`densefeat.data.ehr`);
* training (:mod:`densefeat.train`) and the benchmark (:mod:`densefeat.benchmark`).

Names are imported on first use, so ``import densefeat`` (and ``densefeat --help``) stays
light; the deep paths work as well. The design, every definition and the map from concept to
file are in ``docs/design.md``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that holds it.
_EXPORTS: dict[str, str] = {
    **{
        name: "densefeat.functional"
        for name in (
            "dense_feature_loss",
            "spectral_balance_loss",
            "feature_orthogonality_loss",
            "subspace_consistency_loss",
            "info_nce_loss",
            "vicreg_loss",
            "barlow_twins_loss",
            "effective_rank",
            "effective_rank_eig",
            "spectral_entropy",
            "rankme",
            "participation_ratio",
            "stable_rank",
            "numerical_rank",
            "condition_number",
            "condition_number_k",
            "alpha_req",
            "geometry",
            "isotropic_reference",
            "principal_angles",
            "subspace_distance",
            "subspace_distance_feature",
            "chance_subspace_distance",
            "linear_cka",
            "linear_cka_debiased",
        )
    },
    **{
        name: "densefeat.losses"
        for name in (
            "DenseFeatureLoss",
            "SpectralBalanceLoss",
            "FeatureOrthogonalityLoss",
            "SubspaceConsistencyLoss",
            "InfoNCELoss",
            "VICRegLoss",
            "BarlowTwinsLoss",
        )
    },
    "CovarianceAccumulator": "densefeat.metrics",
    "CenteredNormAccumulator": "densefeat.metrics",
    "LinearProbe": "densefeat.eval.probe",
    "probe_split": "densefeat.eval.probe",
    "kshot_probe": "densefeat.eval.probe",
    "paired_bootstrap_difference": "densefeat.eval.bootstrap",
    "read_meds_dataset": "densefeat.data.meds",
    "read_labels": "densefeat.data.meds",
    "write_meds_dataset": "densefeat.data.meds",
    "MedsDataset": "densefeat.data.meds",
    "HistoryBuilder": "densefeat.data.ehr",
    "EventBatch": "densefeat.data.ehr",
    "TrainConfig": "densefeat.train",
    "train": "densefeat.train",
    "load_run": "densefeat.train",
    "BenchmarkConfig": "densefeat.benchmark.config",
    "run_benchmark": "densefeat.benchmark.run",
    "open_embeddings": "densefeat.io",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'densefeat' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
