"""Applying an adapter to an embedding file, streaming and atomically.

The input is read in row chunks (:meth:`densefeat.io.EmbeddingSource.chunks`, which also
reports NaN/inf with the file and row), each chunk is adapted and appended to the output, so
peak memory depends on the chunk size, not on ``n``. The output is written to a temporary file
beside the destination and renamed over it only when every row has been written
(:func:`densefeat.io.atomic.atomic_path`): an error leaves no file, never a partial one.

Outputs:

* ``.parquet``: every column of a Parquet input except the embedding column(s) is copied
  unchanged (``subject_id``, ``prediction_time``, ``split``, labels, other embeddings), in the
  input's order; the adapted rows go into a last ``list<float32>`` column named like the input's
  list column (``embedding`` when the input is ``.npy``/``.pt``/``.safetensors`` or scalar
  float columns). ``densefeat analyze`` and ``densefeat probe`` read it as they read
  ``densefeat embed``'s output.
* ``.npy``: the (n, D) float32 matrix alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..io import EmbeddingSource, open_embeddings, resolve_chunk_rows
from ..io.atomic import atomic_path
from .adapter import Adapter, load_adapter

__all__ = ["OUTPUT_SUFFIXES", "apply_file", "check_output"]

OUTPUT_SUFFIXES = (".parquet", ".npy")


def check_output(path: str | os.PathLike[str]) -> Path:
    """Fail before any work if ``path`` cannot receive the output."""
    p = Path(path)
    if p.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(f"--out {p}: the output must be .parquet or .npy")
    if p.is_dir():
        raise ValueError(f"--out {p}: is an existing directory; give a file name")
    if not p.parent.is_dir():
        raise ValueError(f"--out {p}: directory {p.parent} does not exist")
    return p


def _list_column(y: np.ndarray) -> Any:
    import pyarrow as pa

    n, dim = y.shape
    offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int64), type=pa.int64())
    values = pa.array(np.ascontiguousarray(y, dtype=np.float32).reshape(-1))
    return pa.LargeListArray.from_arrays(offsets, values).cast(pa.list_(pa.float32()))


def _other_batches(src: EmbeddingSource, rows: int) -> tuple[Iterator[Any] | None, str]:
    """Batches of the non-embedding columns of a Parquet input, and the output column name."""
    if src.path.suffix.lower() != ".parquet":
        return None, "embedding"
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(src.path)
    used = set((src.key or "").split(","))
    names = [c for c in pf.schema_arrow.names if c not in used]
    out_name = src.key if src.key and "," not in src.key else "embedding"
    if out_name in names:
        raise ValueError(
            f"{src.label}: the output column {out_name!r} would clash with an existing column"
        )
    if not names:
        return None, out_name
    return pf.iter_batches(batch_size=rows, columns=names), out_name


def _lockstep(chunks: Iterator[np.ndarray], batches: Iterator[Any] | None) -> Iterator[Any]:
    """Pair embedding chunks with key-column batches row for row (chunkings may differ)."""
    if batches is None:
        for chunk in chunks:
            yield chunk, None
        return
    pending = None
    for chunk in chunks:
        start = 0
        while start < len(chunk):
            if pending is None or pending.num_rows == 0:
                pending = next(batches, None)
                if pending is None:
                    raise ValueError("the key columns ended before the embedding rows")
            m = min(len(chunk) - start, pending.num_rows)
            yield chunk[start : start + m], pending.slice(0, m)
            pending = pending.slice(m)
            start += m


def apply_file(
    adapter: Adapter | str | os.PathLike[str],
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    key: str | None = None,
    chunk_rows: int | None = None,
) -> dict[str, Any]:
    """Write ``adapter(rows of path)`` to ``out`` (``.parquet`` or ``.npy``), streaming.

    Returns:
        ``{"n", "d_in", "d_out", "out"}``.

    Raises:
        ValueError: width mismatch (naming the file and the adapter), unreadable input or
            NaN/inf (naming the file and row), a bad output path. Nothing is written then.
    """
    out_path = check_output(out)
    if not isinstance(adapter, Adapter):
        adapter = load_adapter(adapter)
    src = open_embeddings(path, key)
    if src.d != adapter.d_in:
        raise ValueError(
            f"{src.label} has d={src.d}, but the adapter was fitted on d={adapter.d_in}"
        )
    if out_path.resolve() == src.path.resolve():
        raise ValueError(f"--out {out_path}: is the input file; write elsewhere")
    rows = resolve_chunk_rows(chunk_rows, max(src.d, adapter.d_out))
    if out_path.suffix.lower() == ".npy":
        with atomic_path(out_path, suffix=".npy") as tmp:
            _write_npy(tmp, src.n, adapter.d_out, (adapter(x) for x in src.chunks(rows)))
    else:
        batches, out_name = _other_batches(src, rows)
        with atomic_path(out_path, suffix=".parquet") as tmp:
            _write_parquet(tmp, adapter, _lockstep(src.chunks(rows), batches), out_name)
    return {"n": src.n, "d_in": src.d, "d_out": adapter.d_out, "out": str(out_path)}


def _write_npy(tmp: Path, n: int, dim: int, chunks: Iterator[np.ndarray]) -> None:
    from numpy.lib import format as npy_format

    written = 0
    with open(tmp, "wb") as f:
        header = {"descr": npy_format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False}
        npy_format.write_array_header_1_0(f, {**header, "shape": (n, dim)})
        for y in chunks:
            f.write(np.ascontiguousarray(y, dtype=np.float32).tobytes())
            written += len(y)
        f.flush()
        os.fsync(f.fileno())
    if written != n:  # pragma: no cover - the reader checks its row count itself
        raise ValueError(f"wrote {written} rows, expected {n}")


def _write_parquet(tmp: Path, adapter: Adapter, pieces: Iterator[Any], out_name: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for x, batch in pieces:
            column = _list_column(adapter(x))
            if batch is None:
                table = pa.table({out_name: column})
            else:
                table = pa.Table.from_batches([batch]).append_column(out_name, column)
            if writer is None:
                writer = pq.ParquetWriter(str(tmp), table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
