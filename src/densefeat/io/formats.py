"""The readers of each embedding file format: ``.npy``, ``.safetensors``, ``.pt``,
``.parquet``, and ``.csv`` / ``.tsv`` (read as Parquet, see :mod:`densefeat.io.tables`; what
each accepts is in :mod:`densefeat.io.embeddings`)."""

from __future__ import annotations

import json
import pickle
import re
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .source import (
    EmbeddingFileError,
    EmbeddingSource,
    RawChunks,
    bad_key,
    check_float_dtype,
    check_shape,
    only_matrix,
)

#: File extensions understood by :func:`open_embeddings`.
SUFFIXES = (".npy", ".parquet", ".pt", ".safetensors", ".csv", ".tsv")


def _readinto_exact(f: Any, out: np.ndarray, label: str) -> None:
    """Fill ``out`` (C-contiguous) from the file; raw reads may return short counts."""
    view = memoryview(out.reshape(-1).view(np.uint8))
    pos = 0
    while pos < len(view):
        got = f.readinto(view[pos:])
        if not got:
            raise EmbeddingFileError(f"{label}: file ends early (truncated)")
        pos += got


def _buffered_rows(
    path: Path,
    label: str,
    offset: int,
    n: int,
    d: int,
    dtype: np.dtype,
    fortran: bool = False,
) -> RawChunks:
    """Chunk reader of an (n, d) array stored at ``offset`` as raw bytes (C or F order)."""

    def read(rows: int) -> Iterator[np.ndarray]:
        # Unbuffered: every byte goes straight into the chunk array, no second copy.
        with open(path, "rb", buffering=0) as f:
            if not fortran:
                f.seek(offset)
            for start in range(0, n, rows):
                r = min(rows, n - start)
                if not fortran:
                    buf = np.empty((r, d), dtype)
                    _readinto_exact(f, buf, label)
                    yield buf
                    continue
                # Column-major: column j's rows [start, start + r) are contiguous on disk.
                buf = np.empty((d, r), dtype)
                for j in range(d):
                    f.seek(offset + (j * n + start) * dtype.itemsize)
                    _readinto_exact(f, buf[j], label)
                yield np.ascontiguousarray(buf.T)

    return read


def _check_size(path: Path, label: str, end: int) -> None:
    size = path.stat().st_size
    if size < end:
        raise EmbeddingFileError(
            f"{label}: file is truncated ({size} bytes, the header needs {end})"
        )


def _open_npy(path: Path, key: str | None) -> EmbeddingSource:
    from numpy.lib import format as npy_format

    label = str(path)
    if key is not None:
        raise EmbeddingFileError(f"{label}: --key does not apply to .npy files (got {key!r})")
    with open(path, "rb") as f:
        try:
            version = npy_format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = npy_format.read_array_header_2_0(f)
            else:
                raise EmbeddingFileError(f"{label}: unsupported .npy format version {version}")
        except EmbeddingFileError:
            raise
        except (ValueError, OSError, SyntaxError) as exc:
            raise EmbeddingFileError(f"{label}: not a valid .npy file ({exc})") from exc
        offset = f.tell()
    check_float_dtype(label, dtype)
    n, d = check_shape(label, shape)
    _check_size(path, label, offset + n * d * dtype.itemsize)
    reader = _buffered_rows(path, label, offset, n, d, dtype, fortran=bool(fortran))
    return EmbeddingSource(path, None, n, d, str(dtype), reader)


_SAFETENSORS_DTYPES = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "BF16": "bfloat16"}


def _bf16_to_f32(raw: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    # bfloat16 is the top half of a float32: shift the bits into place.
    for chunk in raw:
        yield (chunk.astype(np.uint32) << 16).view(np.float32)


def _open_safetensors(path: Path, key: str | None) -> EmbeddingSource:
    from safetensors import safe_open

    label = str(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            info = {
                k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()
            }
    except Exception as exc:  # the Rust reader raises its own error types
        raise EmbeddingFileError(f"{label}: not a valid .safetensors file ({exc})") from exc
    described = {k: f"{dt} {list(shape)}" for k, (shape, dt) in info.items()}
    if key is None:
        matrices = {
            k: dt in _SAFETENSORS_DTYPES for k, (shape, dt) in info.items() if len(shape) == 2
        }
        key = only_matrix(label, described, matrices)
    elif key not in info:
        raise bad_key(label, key, described)
    shape, st_dtype = info[key]
    label = f"{path} [{key}]"
    if st_dtype not in _SAFETENSORS_DTYPES:
        raise EmbeddingFileError(
            f"{label}: dtype {st_dtype} is not a float dtype; embeddings must be F16, BF16, "
            "F32 or F64"
        )
    n, d = check_shape(label, shape)
    # get_slice reads through a memory map (its pages count in RSS): find the tensor's byte
    # range in the JSON header (the documented format: u64 little-endian length, JSON, data)
    # and read it with plain buffered reads instead.
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    begin, end = header[key]["data_offsets"]
    dtype = _SAFETENSORS_DTYPES[st_dtype]
    storage = np.dtype("<u2") if dtype == "bfloat16" else np.dtype(dtype)
    if end - begin != n * d * storage.itemsize:
        raise EmbeddingFileError(f"{label}: byte range does not match shape {shape}")
    offset = 8 + header_len + begin
    _check_size(path, label, offset + n * d * storage.itemsize)
    raw = _buffered_rows(path, label, offset, n, d, storage)
    reader = raw if dtype != "bfloat16" else (lambda rows: _bf16_to_f32(raw(rows)))
    return EmbeddingSource(
        path, key, n, d, str(np.dtype(dtype)) if dtype != "bfloat16" else dtype, reader
    )


def _unpickling_detail(message: str) -> str:
    """The offending global from torch's weights-only refusal, without its advice to unpickle."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    if found:
        return f"it references {found.group(1)}"
    found = re.search(r"WeightsUnpickler error: ([^\n]*)", message)
    return found.group(1).strip() if found else "not a plain tensor file"


def _open_pt(path: Path, key: str | None) -> EmbeddingSource:
    import torch

    label = str(path)
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise EmbeddingFileError(
            f"{label}: refused: the file holds Python objects other than tensors "
            f"({_unpickling_detail(str(exc))}), and .pt files are only loaded with "
            "torch.load(weights_only=True) because a user file is data, never code. Save a "
            "tensor or a dict of tensors, or use .safetensors"
        ) from exc
    except Exception as exc:  # corrupt zip, truncated file, legacy formats, ...
        raise EmbeddingFileError(f"{label}: cannot read as a torch file ({exc})") from exc

    if isinstance(obj, torch.Tensor):
        if key is not None:
            raise EmbeddingFileError(
                f"{label}: holds a single tensor, so --key {key!r} is meaningless"
            )
        tensor = obj
    elif isinstance(obj, Mapping):
        described = {
            str(k): (
                f"{v.dtype} {list(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__
            )
            for k, v in obj.items()
        }
        if key is None:
            matrices = {
                str(k): v.is_floating_point()
                for k, v in obj.items()
                if isinstance(v, torch.Tensor) and v.ndim == 2
            }
            key = only_matrix(label, described, matrices)
        matches = [v for k, v in obj.items() if str(k) == key]
        if not matches:
            raise bad_key(label, key, described)
        tensor = matches[0]
        label = f"{path} [{key}]"
        if not isinstance(tensor, torch.Tensor):
            raise EmbeddingFileError(f"{label}: is a {type(tensor).__name__}, not a tensor")
    else:
        raise EmbeddingFileError(
            f"{label}: holds a {type(obj).__name__}; expected a tensor or a dict of tensors"
        )
    return _tensor_source(path, key, label, tensor)


def _tensor_source(path: Path, key: str | None, label: str, tensor: Any) -> EmbeddingSource:
    import torch

    if tensor.layout != torch.strided:
        raise EmbeddingFileError(f"{label}: {tensor.layout} tensors are not supported")
    if not tensor.is_floating_point() or tensor.is_complex():
        kind = (
            "complex"
            if tensor.is_complex()
            else ("boolean" if tensor.dtype == torch.bool else "integer")
        )
        raise EmbeddingFileError(
            f"{label}: dtype {tensor.dtype} is {kind}; embeddings must be float16, bfloat16, "
            "float32 or float64"
        )
    n, d = check_shape(label, tuple(tensor.shape))
    stored = str(tensor.dtype).removeprefix("torch.")
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()  # NumPy has no bfloat16
    arr = tensor.detach().contiguous().numpy()

    def read(rows: int) -> Iterator[np.ndarray]:
        for start in range(0, n, rows):
            yield arr[start : start + rows]

    return EmbeddingSource(path, key, n, d, stored, read)


def _is_float_list(t: Any) -> bool:
    import pyarrow as pa

    list_like = pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
    return bool(list_like and pa.types.is_floating(t.value_type))


def _parquet_columns(label: str, schema: Any, key: str | None) -> tuple[list[str], bool]:
    """Chosen column names and whether they are one float-list column (else scalar floats)."""
    import pyarrow as pa

    types = {name: schema.field(name).type for name in schema.names}
    described = {name: str(t) for name, t in types.items()}
    lists = [c for c, t in types.items() if _is_float_list(t)]
    scalars = [c for c, t in types.items() if pa.types.is_floating(t)]
    if key is None:
        if len(lists) == 1:
            return lists, True
        if len(lists) > 1:
            listed = ", ".join(repr(c) for c in lists)
            raise EmbeddingFileError(
                f"{label}: several float-list columns ({listed}); pick one with --key"
            )
        if not scalars:
            cols = ", ".join(f"{c!r} ({t})" for c, t in described.items()) or "none"
            raise EmbeddingFileError(
                f"{label}: no float column (a list of floats, or scalar float columns); "
                f"columns: {cols}"
            )
        return scalars, False
    names = [key] if key in types else [c.strip() for c in key.split(",")]
    for name in names:
        if name not in types:
            raise bad_key(label, name, described)
    if len(names) == 1 and names[0] in lists:
        return names, True
    for name in names:
        if name not in scalars:
            raise EmbeddingFileError(
                f"{label}: column {name!r} has type {types[name]}; expected a list of floats "
                "or (one or several) scalar float columns"
            )
    return names, False


def _first_null(arr: Any) -> int:
    import pyarrow.compute as pc

    return int(np.argmax(pc.is_null(arr).to_numpy(zero_copy_only=False)))


def _list_to_matrix(label: str, arr: Any, first_row: int, d: int) -> np.ndarray:
    """A list column batch as an (rows, d) array, vectorised: flatten values, then reshape."""
    import pyarrow.compute as pc

    if arr.null_count:
        raise EmbeddingFileError(f"{label}: row {first_row + _first_null(arr)} is null")
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(lengths != d)
    if bad.size:
        i = int(bad[0])
        raise EmbeddingFileError(
            f"{label}: ragged list column: row {first_row + i} has {int(lengths[i])} values, "
            f"row 0 has {d}"
        )
    values = arr.flatten()  # honours the array's slice offset, unlike .values
    if values.null_count:
        row = first_row + _first_null(values) // d
        raise EmbeddingFileError(f"{label}: row {row} holds a null value")
    return values.to_numpy(zero_copy_only=False).reshape(len(arr), d)


_PARQUET_BUFFER_BYTES = 8 * 2**20


def _open_parquet(path: Path, key: str | None, source: Any = None) -> EmbeddingSource:
    """``path``'s embeddings; ``source``: the Parquet bytes when they are not ``path``'s own
    (a CSV read into memory), errors still naming ``path``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    label = str(path)
    try:
        # Stream pages: by default a whole column chunk (a row group, often the whole file)
        # is read at once. Measured on a 300,000 x 768 float32 list column in one row group:
        # peak RSS 1.34 GiB by default, 0.32 GiB with these two options.
        pf = pq.ParquetFile(
            path if source is None else source,
            buffer_size=_PARQUET_BUFFER_BYTES,
            pre_buffer=False,
        )
    except (pa.ArrowException, OSError) as exc:
        raise EmbeddingFileError(f"{label}: not a valid Parquet file ({exc})") from exc
    schema = pf.schema_arrow
    names, is_list = _parquet_columns(label, schema, key)
    n = pf.metadata.num_rows
    label = f"{path} [{','.join(names)}]"
    if not is_list:
        d = len(names)
        dtype = np.result_type(*(schema.field(c).type.to_pandas_dtype() for c in names))
    else:
        t = schema.field(names[0]).type
        dtype = np.dtype(t.value_type.to_pandas_dtype())
        if pa.types.is_fixed_size_list(t):
            d = t.list_size
        elif n == 0:
            d = 1  # no row to measure; n < 2 is reported below
        else:
            first = next(pf.iter_batches(batch_size=1, columns=names)).column(0)
            if first.null_count:
                raise EmbeddingFileError(f"{label}: row 0 is null")
            d = len(first[0])
    n, d = check_shape(label, (n, d))

    def read(rows: int) -> Iterator[np.ndarray]:
        seen = 0
        for batch in pf.iter_batches(batch_size=rows, columns=names):
            if is_list:
                chunk = _list_to_matrix(label, batch.column(names[0]), seen, d)
            else:
                # One pass per column (d of them), never per row; nulls become NaN and are
                # then reported by the finite check with their row.
                chunk = np.column_stack(
                    [batch.column(c).to_numpy(zero_copy_only=False) for c in names]
                ).astype(dtype, copy=False)
            seen += len(chunk)
            yield chunk

    return EmbeddingSource(path, ",".join(names), n, d, str(np.dtype(dtype)), read)


def _open_text_table(path: Path, key: str | None) -> EmbeddingSource:
    """A CSV/TSV table: typed like Parquet (:mod:`densefeat.io.tables`), then read and
    validated by the Parquet reader, so both formats accept and refuse the same tables."""
    from .tables import read_text_table, to_parquet

    try:
        frame = read_text_table(path)
    except ValueError as exc:
        raise EmbeddingFileError(str(exc)) from exc
    return _open_parquet(path, key, source=to_parquet(frame))


OPENERS: dict[str, Callable[[Path, str | None], EmbeddingSource]] = {
    ".npy": _open_npy,
    ".parquet": _open_parquet,
    ".pt": _open_pt,
    ".safetensors": _open_safetensors,
    ".csv": _open_text_table,
    ".tsv": _open_text_table,
}
