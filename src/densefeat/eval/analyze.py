"""Geometry diagnostics of embedding files (what ``densefeat analyze`` computes): one file, or a
paired two.

One file: the rows are streamed once through a
:class:`~densefeat.metrics.CovarianceAccumulator`; every metric of docs/design.md comes from the
float64 covariance (``effective_rank``, ``effective_rank_eig``, ``spectral_entropy``,
``rankme``, ``participation_ratio``, ``stable_rank``, ``numerical_rank``,
``condition_number``, ``condition_number_k``, ``alpha_req``, plus ``n``, ``d`` and the
``eigenvalues``, descending), next to what an isotropic Gaussian matrix of the same shape gets
(``isotropic_reference``): spectral numbers depend on (n, d), so a value means little alone.

Two files (row i of both is the same sample, e.g. two time windows): one pass over both files
in lockstep through a paired accumulator gives both geometries and the sample-space
``subspace_distance`` (with its chance level), ``principal_angles`` and ``linear_cka``; a
second pass with :class:`~densefeat.metrics.CenteredNormAccumulator` gives
``linear_cka_debiased``. Memory stays bounded by the chunk size, whatever n is.

Written as JSON by the command with :func:`densefeat.io.atomic.to_json_safe` (non-finite
numbers become ``null``, each beside a ``*_reason`` field saying why).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..functional.reference import isotropic_reference
from ..io import EmbeddingSource, iter_paired_chunks, open_embeddings
from ..metrics import CenteredNormAccumulator, CovarianceAccumulator

__all__ = ["analyze_files"]


def analyze_files(
    path_a: str | os.PathLike[str],
    path_b: str | os.PathLike[str] | None = None,
    key: str | None = None,
    k: int = 16,
    chunk_rows: int | None = None,
    *,
    key_b: str | None = None,
) -> dict[str, Any]:
    """Geometry of one embedding file, or geometry and alignment of two paired files.

    Args:
        path_a: embedding file (``.npy``, ``.parquet``, ``.pt``, ``.safetensors``).
        path_b: optional second file with the same rows in the same order.
        key: tensor key / column(s) of ``path_a`` (see :mod:`densefeat.io`).
        k: subspace dimension of ``subspace_distance`` and ``principal_angles`` (clipped to
            ``min(n - 1, d_a, d_b)``) and of the chance level in ``isotropic_reference``.
        chunk_rows: rows per chunk; ``None`` picks ~64 MiB of float64 per chunk.
        key_b: key of ``path_b``; defaults to ``key`` (``""`` means none).

    Returns:
        ``file``, ``key`` and every metric of :func:`densefeat.functional.geometry` under its
        docs/design.md name, ``isotropic_reference`` and, when a metric is infinite, a
        ``*_reason``. With ``path_b`` also ``b`` (the same for the second file),
        ``subspace_distance``, ``subspace_k``, ``subspace_distance_chance``,
        ``principal_angles`` (radians, descending), ``linear_cka`` and ``linear_cka_debiased``.

    Raises:
        ValueError: unreadable or invalid files (an ``EmbeddingFileError`` naming the file and
            key), different row counts, ``k < 1``.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    src_a = open_embeddings(path_a, key)
    if path_b is None:
        return _analyze_single(src_a, k, chunk_rows)
    src_b = open_embeddings(path_b, key if key_b is None else key_b)
    if src_a.n != src_b.n:
        raise ValueError(
            f"paired files must have the same rows in the same order: {src_a.label} has "
            f"{src_a.n} rows, {src_b.label} has {src_b.n}"
        )
    return _analyze_pair(src_a, src_b, k, chunk_rows)


def _describe(src: EmbeddingSource, metrics: dict[str, Any], k: int) -> dict[str, Any]:
    """File identity, metrics, reasons for infinite values and the isotropic reference."""
    out: dict[str, Any] = {"file": str(src.path), "key": src.key, "dtype": src.dtype}
    out.update(metrics)
    if math.isinf(out.get("condition_number_k", 0.0)):
        out["condition_number_k_reason"] = (
            f"s_k at k={out['condition_number_k_at']} is below the numerical-rank tolerance "
            f"(numerical_rank {out['numerical_rank']})"
        )
    # The reference's condition_number_k is taken at the measured k so the two columns compare.
    out["isotropic_reference"] = isotropic_reference(
        src.n, src.d, k=k, condition_k=out["condition_number_k_at"]
    )
    return out


def _analyze_single(src: EmbeddingSource, k: int, chunk_rows: int | None) -> dict[str, Any]:
    acc = CovarianceAccumulator()
    for chunk in src.chunks(chunk_rows):
        acc.update(chunk)
    return _describe(src, acc.compute(), k)


def _lockstep(
    src_a: EmbeddingSource, src_b: EmbeddingSource, chunk_rows: int | None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    # NumPy chunks straight into the accumulators: the covariance route never imports torch.
    return iter_paired_chunks(src_a.chunks(chunk_rows), src_b.chunks(chunk_rows))


def _analyze_pair(
    src_a: EmbeddingSource, src_b: EmbeddingSource, k: int, chunk_rows: int | None
) -> dict[str, Any]:
    acc = CovarianceAccumulator(paired=True)
    for a, b in _lockstep(src_a, src_b, chunk_rows):
        acc.update(a, b)
    k_used = min(k, src_a.n - 1, src_a.d, src_b.d)
    metrics = acc.compute(k_used)
    geometry_b = metrics.pop("b")
    # Second pass: the debiased CKA needs per-row norms around the final means.
    norms = CenteredNormAccumulator.for_accumulator(acc)
    for a, b in _lockstep(src_a, src_b, chunk_rows):
        norms.update(a, b)
    metrics["linear_cka_debiased"] = norms.linear_cka_debiased(acc)
    out = _describe(src_a, metrics, k_used)
    out["b"] = _describe(src_b, geometry_b, k_used)
    return out
