"""Names and defaults the command-line parsers and configs need, with no imports at all.

``densefeat CMD --help`` builds its parser from these, so it never imports torch, NumPy or
polars (issue 14, start-up under 0.5 s). Each value has exactly one definition, here; the
modules that own the concept re-export it (:mod:`densefeat.methods` checks at import time that
its registry holds exactly :data:`METHOD_NAMES`, and ``tests/test_startup.py`` checks every
command's help against the torch-side registries).

This module is a leaf: it imports nothing from densefeat, so any layer may import it
(docs/design.md, Architecture).
"""

from __future__ import annotations

__all__ = [
    "CONSISTENCY_FORMS",
    "DEFAULT_CONSISTENCY",
    "DEFAULT_MAX_LEN",
    "DEFAULT_RIDGE",
    "DEFAULT_SHRINKAGE",
    "DEFAULT_WEIGHTS",
    "DENSIFY_METHODS",
    "METHOD_NAMES",
]

#: The training methods of :data:`densefeat.methods.METHODS`, in registry order.
METHOD_NAMES: tuple[str, ...] = (
    "dense",
    "simclr",
    "vicreg",
    "barlow",
    "masked",
    "masked+dense",
    "supervised",
    "random",
)

#: Term weights of :func:`densefeat.functional.dense_feature_loss`. Equal weights: every term
#: is already on a [0, 1] scale. Their tuning on a tuning split is the benchmark's search
#: (issue 11, item 4), not fixed here; the benchmark's ablations (``w_* = 0``) show what each
#: term contributes.
DEFAULT_WEIGHTS: dict[str, float] = {"w_spec": 1.0, "w_orth": 1.0, "w_sub": 1.0}

#: Forms of the subspace-consistency term
#: (:func:`densefeat.functional.subspace_consistency_loss`): ``"shrunk"`` (default; CKA of
#: shrinkage-whitened features, keeps the pairing signal at training batch sizes) and ``"cca"``
#: (the first form, 1 - mean squared canonical correlation; near its chance level
#: 1 - d/(n-1) unless n >> d). Chosen with benchmarks/consistency_levers.py.
CONSISTENCY_FORMS: tuple[str, ...] = ("shrunk", "cca")
DEFAULT_CONSISTENCY = "shrunk"
#: Shrinkage ``g`` of the whitening in the ``"shrunk"`` form: ``C + g tr(C)/d I``.
DEFAULT_SHRINKAGE = 3.0

#: Events kept per history (the last ones) by :class:`densefeat.data.ehr.HistoryBuilder`.
DEFAULT_MAX_LEN = 256

#: ``densefeat densify fit --method`` values (:mod:`densefeat.densify.fit`).
DENSIFY_METHODS: tuple[str, ...] = ("dense", "vicreg", "barlow", "whiten")
#: Relative ridge of the whitening control: ``eps = DEFAULT_RIDGE * tr(C) / d``.
DEFAULT_RIDGE = 1e-5
