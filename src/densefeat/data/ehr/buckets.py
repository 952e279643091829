"""Length bucketing: batches of rows with similar history lengths, for inference.

A batch of a causal encoder costs what its *longest* history needs (the encoder drops the
positions that are padding in every row, :meth:`~densefeat.models.ehr.EHREncoder._trim`),
so batching rows in their given order makes most batches cost ``max_len`` per row. Sorting the
rows by length first and cutting the sorted order into batches makes each batch cost about
what its own rows need; the embeddings are put back in the given order afterwards.

Batch size by memory: a batch is also capped at ``max_positions`` token positions
(``rows * (1 + longest history)``): attention holds ``heads * N^2`` scores per row, so at a
fixed row count a batch of long histories is far larger than one of short ones. On CPU small
batches also stay in cache: 8192 positions (about 4 MiB of float32 activations at
``d_model`` 128) and 16384 tied as the fastest of 2048..65536 on the default dataset at
``max_len`` 256, one thread (``benchmarks/embed.py --sweep``; 65536 was 25% slower).

Inference only: each row's embedding depends on its own events alone (padding is masked), so
the grouping changes nothing but float rounding (~1e-7). Training batches stay random.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CPU_MAX_POSITIONS", "GPU_MAX_POSITIONS", "length_buckets"]

#: Token positions per forward pass on CPU (module docstring).
CPU_MAX_POSITIONS = 8192
#: On a GPU: 512 rows of 256 events, the largest batch the default settings made before.
GPU_MAX_POSITIONS = 512 * 257


def length_buckets(
    lengths: np.ndarray, batch_size: int, max_positions: int | None = None
) -> list[np.ndarray]:
    """Row indices grouped into batches of similar length.

    Rows are sorted by length (stable, so equal lengths keep their order); the sorted order is
    cut greedily into batches of at most ``batch_size`` rows and at most ``max_positions``
    positions, where a batch of ``r`` rows whose longest history is ``m`` takes ``r * (m + 1)``
    (the static token included). A row longer than ``max_positions`` alone still gets a batch
    of its own.

    Args:
        lengths: (n,) events per row (e.g. :meth:`EventStore.history_lengths`).
        batch_size: the most rows per batch (>= 1).
        max_positions: the most positions per batch; None: no cap.

    Returns:
        Arrays of row indices (int64) that together hold every row exactly once.

    Raises:
        ValueError: ``batch_size`` or ``max_positions`` below 1, or ``lengths`` not 1-D.
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be 1-D, got shape {lengths.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_positions is not None and max_positions < 1:
        raise ValueError(f"max_positions must be >= 1, got {max_positions}")
    order = np.argsort(lengths, kind="stable")
    sizes = lengths[order].astype(np.int64) + 1
    out: list[np.ndarray] = []
    lo, n = 0, len(order)
    while lo < n:
        hi = min(lo + batch_size, n)
        if max_positions is not None:
            # Sorted ascending, so the batch [lo, hi) costs (hi - lo) * sizes[hi - 1]: the
            # largest hi with that within the cap (at least one row).
            while hi - lo > 1 and (hi - lo) * sizes[hi - 1] > max_positions:
                hi = lo + max(1, min(hi - lo - 1, max_positions // int(sizes[hi - 1])))
        out.append(order[lo:hi])
        lo = hi
    return out
