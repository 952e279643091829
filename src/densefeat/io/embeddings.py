"""Chunked readers of embedding files: ``.npy``, ``.parquet``, ``.csv``/``.tsv``, ``.pt``,
``.safetensors``.

Every reader yields float row chunks (NumPy ``float32`` or ``float64`` arrays of shape
``(rows, d)``, native byte order; ``float16``/``bfloat16`` are widened to ``float32``) so that
statistics over millions of rows can be streamed with a peak memory that does not depend on
``n``:

* ``.npy`` — the header is parsed with :mod:`numpy.lib.format` and the rows are read with
  plain buffered ``readinto`` calls into freshly allocated chunk arrays. ``np.load`` would
  load everything, and ``mmap_mode`` keeps every page it touched resident and counted in the
  process's RSS (1.86 GiB against 0.52 GiB for a 1,000,000 x 768 float32 file).
  Fortran-ordered files are read column by column; big-endian files are byte-swapped.
* ``.safetensors`` — keys, shapes and dtypes come from :func:`safetensors.safe_open`; the rows
  are then read the same buffered way from the tensor's byte range (``get_slice`` works
  through a memory map, whose pages again count in RSS: about the file size, measured).
* ``.parquet`` — :meth:`pyarrow.parquet.ParquetFile.iter_batches` with page-wise buffered
  reads (``buffer_size``, ``pre_buffer=False``; otherwise a whole row group, often the whole
  file, is read at once), either one list / large_list / fixed_size_list column of floats (one
  embedding per row) or several scalar float columns (one feature per column). Other columns
  (``subject_id``, ``prediction_time``, ...) are ignored. Column choice:

  - ``key=None``: the only float-list column if there is exactly one (scalar float columns
    are then ignored); with none, every scalar float column, in file order.
  - ``key="emb"``: that column (a float-list column, or one scalar float column: d = 1).
  - ``key="f0,f1,f2"``: those scalar float columns, in that order.

* ``.csv`` / ``.tsv`` — read whole into a frame typed as Parquet would be
  (:mod:`densefeat.io.tables`: floats, and a bracketed-list column as a list of floats), then
  chosen and validated exactly like ``.parquet`` (same ``key`` rules, same errors).

* ``.pt`` — ``torch.load(path, weights_only=True, map_location="cpu")``: a tensor, or a dict
  of tensors (``key``, else the only 2-D tensor). A file that needs arbitrary unpickling is
  refused: user files are data, never code. The whole tensor is loaded, then chunked.

Bad input raises :class:`EmbeddingFileError` (a ``ValueError``) naming the file and the key or
column: unknown extension, missing file (:class:`EmbeddingFileNotFoundError`, also a
``FileNotFoundError``), unknown key (the available ones are listed), no float column, a
non-float dtype (integer, boolean, complex: usually a wrong column, so never cast), not 2-D,
``d = 0``, ``n < 2``, ragged or null list rows, and NaN/inf values (with the first bad row,
0-based). NaN/inf are found while streaming, so they surface when the chunk holding them is
read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .formats import OPENERS, SUFFIXES
from .source import (
    DEFAULT_CHUNK_BYTES,
    EmbeddingFileError,
    EmbeddingFileNotFoundError,
    EmbeddingSource,
    resolve_chunk_rows,
)

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "SUFFIXES",
    "EmbeddingFileError",
    "EmbeddingFileNotFoundError",
    "EmbeddingSource",
    "embedding_shape",
    "iter_embedding_chunks",
    "iter_paired_chunks",
    "open_embeddings",
    "resolve_chunk_rows",
]


def open_embeddings(path: str | os.PathLike[str], key: str | None = None) -> EmbeddingSource:
    """Open and validate an embedding file without reading its rows (except for ``.pt``).

    Args:
        path: a ``.npy``, ``.parquet``, ``.csv``, ``.tsv``, ``.pt`` or ``.safetensors`` file.
        key: tensor key (``.pt`` dict, ``.safetensors``) or column(s) (tables, a name
            or comma-separated names); must be ``None`` for ``.npy``. An empty string counts
            as ``None``.

    Raises:
        EmbeddingFileError: see the module docstring.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in OPENERS:
        raise EmbeddingFileError(
            f"{p}: unknown embedding file extension {p.suffix or '(none)'!r}; "
            f"supported: {', '.join(SUFFIXES)}"
        )
    if not p.exists():
        raise EmbeddingFileNotFoundError(f"{p}: no such file")
    if not p.is_file():
        raise EmbeddingFileError(f"{p}: not a regular file")
    return OPENERS[suffix](p, key or None)


def embedding_shape(path: str | os.PathLike[str], key: str | None = None) -> tuple[int, int]:
    """``(n, d)`` of an embedding file, from its header where the format has one."""
    return open_embeddings(path, key).shape


def iter_embedding_chunks(
    path: str | os.PathLike[str], key: str | None = None, chunk_rows: int | None = None
) -> Iterator[np.ndarray]:
    """Stream an embedding file as float row chunks of at most ``chunk_rows`` rows.

    Args:
        path: the file (see :func:`open_embeddings`).
        key: tensor key or column(s).
        chunk_rows: rows per chunk; ``None`` picks ~64 MiB of float64 per chunk.

    Yields:
        ``(rows, d)`` float32 or float64 arrays, in file order.
    """
    yield from open_embeddings(path, key).chunks(chunk_rows)


def iter_paired_chunks(
    chunks_a: Iterator[np.ndarray], chunks_b: Iterator[np.ndarray]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Walk two row streams in lockstep, yielding pieces with equal row counts.

    The streams may chunk differently (Parquet batches end at row-group boundaries): each
    step yields the common prefix of the two current chunks and keeps the rest. Views only, no
    concatenation. Raises ``ValueError`` if one stream ends before the other.
    """
    a = b = None
    while True:
        if a is None or len(a) == 0:
            a = next(chunks_a, None)
        if b is None or len(b) == 0:
            b = next(chunks_b, None)
        if a is None or b is None:
            if a is not None or b is not None:
                raise ValueError("paired files ended at different rows: the row counts differ")
            return
        m = min(len(a), len(b))
        yield a[:m], b[:m]
        a, b = a[m:], b[m:]
