"""An opened embedding file (:class:`EmbeddingSource`), its errors, and the checks every
format's reader applies (the rules are in :mod:`densefeat.io.embeddings`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Default chunk size when ``chunk_rows`` is not given: rows whose float64 copy takes about
#: 64 MiB. Consumers (the covariance accumulator) widen each chunk to float64 and centre it, so
#: a chunk costs ~3x this at its peak, whatever n is.
DEFAULT_CHUNK_BYTES = 64 * 2**20


RawChunks = Callable[[int], Iterator[np.ndarray]]


class EmbeddingFileError(ValueError):
    """An embedding file that cannot be read as an (n, d) float matrix."""


class EmbeddingFileNotFoundError(EmbeddingFileError, FileNotFoundError):
    """The embedding file does not exist (both a ``ValueError`` and a ``FileNotFoundError``)."""


@dataclass(frozen=True)
class EmbeddingSource:
    """An opened, validated embedding file: its shape and a way to stream its rows.

    Attributes:
        path: the file.
        key: the tensor key or column(s) the rows come from (``None`` for ``.npy`` and for a
            ``.pt`` file holding a single tensor).
        n: number of rows.
        d: number of features.
        dtype: the stored element type (``bfloat16`` is reported as ``"bfloat16"``).
    """

    path: Path
    key: str | None
    n: int
    d: int
    dtype: str
    _raw_chunks: RawChunks = field(repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, d)``."""
        return (self.n, self.d)

    @property
    def label(self) -> str:
        """``path`` or ``path[key]``, for messages."""
        return f"{self.path}" if self.key is None else f"{self.path} [{self.key}]"

    def chunks(self, chunk_rows: int | None = None) -> Iterator[np.ndarray]:
        """Yield the rows in order as float32/float64 chunks of at most ``chunk_rows`` rows.

        Each chunk is a new, writable array (safe to keep). Raises
        :class:`EmbeddingFileError` at the first chunk holding NaN/inf, naming the row.
        """
        rows = resolve_chunk_rows(chunk_rows, self.d)
        seen = 0
        for raw in self._raw_chunks(rows):
            chunk = _as_native_float(raw)
            if chunk.ndim != 2 or chunk.shape[1] != self.d:
                raise EmbeddingFileError(
                    f"{self.label}: rows {seen}.. have shape {chunk.shape[1:]}, expected "
                    f"({self.d},)"
                )
            _check_finite(self.label, chunk, seen)
            seen += chunk.shape[0]
            yield chunk
        if seen != self.n:
            raise EmbeddingFileError(
                f"{self.label}: the header promises {self.n} rows but {seen} were read "
                "(truncated file, or it changed while being read)"
            )


def resolve_chunk_rows(chunk_rows: int | None, d: int) -> int:
    """Rows per chunk: ``chunk_rows`` if given (>= 1), else ~64 MiB of float64."""
    if chunk_rows is None:
        return max(1, DEFAULT_CHUNK_BYTES // (8 * max(d, 1)))
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    return chunk_rows


def check_float_dtype(label: str, dtype: Any) -> None:
    """Accept float16/32/64 (and bfloat16, passed as the string ``"bfloat16"``)."""
    if dtype == "bfloat16":
        return
    dt = np.dtype(dtype)
    if dt.kind == "f" and dt.itemsize in (2, 4, 8):
        return
    kind = {
        "i": "integer",
        "u": "unsigned integer",
        "b": "boolean",
        "c": "complex",
        "O": "Python object",
    }.get(dt.kind, "non-float")
    # Integer or boolean embeddings are nearly always a wrong column (ids, counts, labels):
    # refuse rather than cast.
    raise EmbeddingFileError(
        f"{label}: dtype {dt} is {kind}; embeddings must be float16, float32 or float64"
    )


def check_shape(label: str, shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) != 2:
        hint = (
            " (a 1-D vector: reshape it to (n, 1) or (1, d))"
            if len(shape) == 1
            else " (pool or flatten the extra axes to one row per sample first)"
            if len(shape) > 2
            else ""
        )
        raise EmbeddingFileError(
            f"{label}: expected a 2-D (n, d) matrix, got shape {tuple(shape)}{hint}"
        )
    n, d = (int(v) for v in shape)
    if d == 0:
        raise EmbeddingFileError(f"{label}: the feature dimension d is 0 (shape {(n, d)})")
    if n < 2:
        raise EmbeddingFileError(f"{label}: need at least 2 rows, got n={n}")
    return n, d


def _as_native_float(x: np.ndarray) -> np.ndarray:
    """Native-endian float32/float64, writable (torch refuses swapped or read-only arrays)."""
    if x.dtype == np.float16:
        return x.astype(np.float32)
    if not x.dtype.isnative:
        return x.astype(x.dtype.newbyteorder("="))
    if not x.flags.writeable:
        return x.copy()
    return x


def _check_finite(label: str, chunk: np.ndarray, first_row: int) -> None:
    finite = np.isfinite(chunk)
    if finite.all():
        return
    row = first_row + int(np.argmin(finite.all(axis=1)))
    raise EmbeddingFileError(
        f"{label}: row {row} (0-based) contains NaN or inf (or a null); it is the first bad row"
    )


def bad_key(label: str, key: str, available: Mapping[str, str]) -> EmbeddingFileError:
    listed = ", ".join(f"{k!r} ({v})" for k, v in available.items()) or "none"
    return EmbeddingFileError(f"{label}: key {key!r} not found; available: {listed}")


def only_matrix(label: str, described: Mapping[str, str], matrices: Mapping[str, bool]) -> str:
    """The key to use when none was given: the only 2-D float tensor.

    Args:
        label: file name for messages.
        described: every key with its dtype and shape, listed in errors.
        matrices: the 2-D tensors' keys, each with whether its dtype is a float.

    Raises:
        EmbeddingFileError: no 2-D tensor, or several 2-D float tensors.
    """
    floats = [k for k, is_float in matrices.items() if is_float]
    if len(floats) == 1:
        return floats[0]
    if not floats and len(matrices) == 1:
        return next(iter(matrices))  # a 2-D non-float tensor: the dtype check names it
    if not matrices:
        listed = ", ".join(f"{k!r} ({v})" for k, v in described.items()) or "none"
        raise EmbeddingFileError(f"{label}: no 2-D tensor found (available: {listed})")
    listed = ", ".join(f"{k!r} ({described[k]})" for k in floats or matrices)
    raise EmbeddingFileError(f"{label}: several 2-D tensors ({listed}); pick one with --key")
