"""Input checks shared by every functional entry point.

Bad input is a user error, not a numerical event: it gets a ``ValueError`` that names the
argument and the problem, before any arithmetic runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["as_matrix", "check_pair"]


def as_matrix(x: Any, name: str = "z", *, min_rows: int = 2, check_finite: bool = True) -> Tensor:
    """Return ``x`` as a 2-D floating torch tensor after validating it.

    Accepts torch tensors and anything ``numpy.asarray`` understands. Integer, boolean and
    complex inputs are rejected rather than cast: an integer matrix handed to a geometry metric
    is almost always a wrong column (ids, counts) and complex embeddings are not defined here.

    Args:
        x: the (n, d) matrix.
        name: the argument name used in error messages.
        min_rows: smallest admissible n (2 for anything that centres).
        check_finite: reject NaN/inf. On CPU this raises ``ValueError`` naming the rows; on an
            accelerator it is a device-side assert (no host sync), which raises a
            ``RuntimeError`` with the same message when the device reaches it.

    Raises:
        ValueError: wrong rank, empty feature axis, too few rows, non-float dtype, or NaN/inf.
    """
    if not isinstance(x, Tensor):
        arr = np.asarray(x)
        if arr.dtype == object:
            raise ValueError(f"{name}: cannot interpret an object array as a float matrix")
        if not (
            np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.complexfloating)
        ):
            raise ValueError(f"{name}: expected a floating-point matrix, got dtype {arr.dtype}")
        if np.issubdtype(arr.dtype, np.complexfloating):
            raise ValueError(f"{name}: complex dtype {arr.dtype} is not supported")
        if arr.dtype == np.float16:
            arr = arr.astype(np.float32)
        x = torch.from_numpy(np.ascontiguousarray(arr))
    if x.is_complex():
        raise ValueError(f"{name}: complex dtype {x.dtype} is not supported")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point matrix, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (n, d) matrix, got shape {tuple(x.shape)}")
    n, d = x.shape
    if d == 0:
        raise ValueError(f"{name}: the feature dimension is empty (shape {tuple(x.shape)})")
    if n < min_rows:
        raise ValueError(f"{name}: need at least {min_rows} rows, got n={n}")
    if check_finite and x.device.type != "cpu":
        # On an accelerator a host-side check would stall every training step; a device-side
        # assert fails the same call, as a RuntimeError carrying this message.
        torch._assert_async(torch.isfinite(x).all(), f"{name}: contains NaN or inf")
    elif check_finite and not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).any(dim=1).nonzero().flatten()
        first = bad[:5].tolist()
        raise ValueError(f"{name}: {bad.numel()} row(s) contain NaN or inf (first rows: {first})")
    return x


def check_pair(
    za: Tensor, zb: Tensor, names: tuple[str, str] = ("za", "zb"), *, same_d: bool = False
) -> None:
    """Check that two matrices pair up row by row (and optionally share d)."""
    if za.shape[0] != zb.shape[0]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same number of rows (paired samples), "
            f"got {za.shape[0]} and {zb.shape[0]}"
        )
    if same_d and za.shape[1] != zb.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same feature dimension, "
            f"got {za.shape[1]} and {zb.shape[1]}"
        )
