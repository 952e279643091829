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

Names are imported on first use (PEP 562): ``densefeat densify --help`` stays free of NumPy
and torch.
"""

from __future__ import annotations

from .._lazy import lazy_exports

#: Public name -> the submodule that defines it.
_EXPORTS: dict[str, str] = {
    "METHODS": "fit",
    "Adapter": "adapter",
    "apply_file": "apply",
    "fit_adapter": "fit",
    "fit_files": "fit",
    "load_adapter": "adapter",
    "save_adapter": "adapter",
    "zca_whitening": "fit",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
