"""Dense-feature adapters on top of frozen embeddings (``densefeat densify``).

A team that cannot retrain its encoder can still repair the geometry of the embeddings it has:
fit a small adapter (linear, or a one-hidden-layer MLP) with a dense objective on the training
rows (:mod:`.fit`), then apply it to any file of the same width, streaming (:mod:`.apply`).

* :mod:`.adapter`: the adapter's parameters, its pure forward function, and its storage
  (``ADAPTER.safetensors`` weights + ``ADAPTER.json`` config);
* :mod:`.rows`: which rows train (split column or a seeded subject split) and which pairs
  enter the paired term (two files, or adjacent prediction times of one subject);
* :mod:`.fit`: the training (dense / VICReg / Barlow Twins) and the ZCA whitening control;
* :mod:`.apply`: streaming, atomic application to an embedding file.
"""

from .adapter import Adapter, load_adapter, save_adapter
from .apply import apply_file
from .fit import METHODS, fit_adapter, fit_files, zca_whitening

__all__ = [
    "METHODS",
    "Adapter",
    "apply_file",
    "fit_adapter",
    "fit_files",
    "load_adapter",
    "save_adapter",
    "zca_whitening",
]
