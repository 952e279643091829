"""The adapter: its parameters, its forward function, and its files.

Two forms, both a pure function of the stored arrays (float64 arithmetic, float32 output):

* ``linear``: ``y = x W + b`` with ``W`` (d_in, D) and ``b`` (D,). Everything the fit learned
  (the training mean and scale, the PCA initialisation) is folded into ``W`` and ``b``, so the
  stored weights are the whole map: a user can recompute it by hand.
* ``mlp``: ``y = gelu(((x - m) / s) W1 + b1) W2 + b2`` with the training mean ``m`` (d_in,),
  the scalar scale ``s = sqrt(tr C / d_in)`` (``in_mean``, ``in_scale``), ``W1`` (d_in, H),
  ``W2`` (H, D), and the exact (erf) GELU of Hendrycks & Gimpel 2016, as ``torch.nn.GELU()``.

Files: ``ADAPTER.safetensors`` holds the arrays (names as above: ``W``, ``b``; or ``in_mean``,
``in_scale``, ``W1``, ``b1``, ``W2``, ``b2``), ``ADAPTER.json`` beside it the configuration
(kind, widths, method, the fit's settings and provenance). Both are written atomically, the
weights first, so a config never names weights that are not there.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_path, write_json_atomic

__all__ = ["FORMAT", "Adapter", "adapter_paths", "load_adapter", "save_adapter"]

#: ``format`` field of the JSON config; bumped when the stored layout changes.
FORMAT = "densefeat-adapter/1"

_TENSORS = {"linear": ("W", "b"), "mlp": ("in_mean", "in_scale", "W1", "b1", "W2", "b2")}


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


@dataclass(frozen=True)
class Adapter:
    """A fitted adapter.

    Attributes:
        kind: ``"linear"`` or ``"mlp"``.
        tensors: the parameters (float64 arrays; names in the module docstring).
        config: JSON-able settings and provenance (method, fit settings, row counts).
    """

    kind: str
    tensors: dict[str, np.ndarray]
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in _TENSORS:
            raise ValueError(f"adapter kind must be 'linear' or 'mlp', got {self.kind!r}")
        missing = [k for k in _TENSORS[self.kind] if k not in self.tensors]
        if missing:
            raise ValueError(f"{self.kind} adapter is missing tensors {missing}")

    @property
    def d_in(self) -> int:
        """Input width."""
        w = self.tensors["W" if self.kind == "linear" else "W1"]
        return int(w.shape[0])

    @property
    def d_out(self) -> int:
        """Output width D."""
        w = self.tensors["W" if self.kind == "linear" else "W2"]
        return int(w.shape[1])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Adapted rows ``(n, D)`` float32 of ``x`` ``(n, d_in)`` (float64 arithmetic)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise ValueError(f"adapter expects (n, {self.d_in}) rows, got shape {x.shape}")
        t = self.tensors
        if self.kind == "linear":
            y = x @ t["W"] + t["b"]
        else:
            h = _gelu(((x - t["in_mean"]) / t["in_scale"]) @ t["W1"] + t["b1"])
            y = h @ t["W2"] + t["b2"]
        return y.astype(np.float32)


def adapter_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(weights, config)``: ``X.safetensors`` and ``X.json`` for ``X``, ``X.safetensors`` or
    ``X.json``."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix.lower() in (".safetensors", ".json") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_adapter(adapter: Adapter, path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``adapter`` as ``X.safetensors`` + ``X.json`` (see :func:`adapter_paths`)."""
    from safetensors.numpy import save_file

    weights, config = adapter_paths(path)
    arrays = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in adapter.tensors.items()}
    with atomic_path(weights, suffix=".safetensors") as tmp:
        save_file(arrays, str(tmp), metadata={"format": FORMAT, "kind": adapter.kind})
    doc = {
        "format": FORMAT,
        "kind": adapter.kind,
        "d_in": adapter.d_in,
        "d_out": adapter.d_out,
        "weights": weights.name,
        **adapter.config,
    }
    write_json_atomic(config, doc)
    return weights, config


def load_adapter(path: str | os.PathLike[str]) -> Adapter:
    """Read an adapter written by :func:`save_adapter`.

    Raises:
        FileNotFoundError: either file is missing (named).
        ValueError: an unknown format, or tensors that do not match the config (named).
    """
    from safetensors.numpy import load_file

    weights, config = adapter_paths(path)
    for p in (weights, config):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such file (an adapter is X.safetensors + X.json)")
    try:
        doc = json.loads(config.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{config}: not a densefeat adapter config (format must be {FORMAT!r})")
    try:
        tensors = {k: v.astype(np.float64) for k, v in load_file(str(weights)).items()}
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{weights}: cannot read the adapter weights ({exc})") from exc
    kind = doc.get("kind")
    if kind not in _TENSORS:
        raise ValueError(f"{config}: unknown adapter kind {kind!r}")
    missing = [k for k in _TENSORS[kind] if k not in tensors]
    if missing:
        raise ValueError(f"{weights}: missing tensors {missing} for a {kind} adapter")
    skip = {"format", "kind", "d_in", "d_out", "weights"}
    adapter = Adapter(kind, tensors, {k: v for k, v in doc.items() if k not in skip})
    if (adapter.d_in, adapter.d_out) != (doc.get("d_in"), doc.get("d_out")):
        raise ValueError(
            f"{weights}: weights are {adapter.d_in} -> {adapter.d_out} but {config} says "
            f"{doc.get('d_in')} -> {doc.get('d_out')}"
        )
    return adapter
