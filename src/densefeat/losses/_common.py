"""Input and hyperparameter checks shared by the loss modules.

Under ``torch.distributed`` a rank may legitimately hold fewer than two rows (even none): only
the *global* batch needs ``n >= 2``, which :func:`~densefeat.functional.moments.moments` checks
after reducing the row count. So the local check admits ``n_local >= 0`` there.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..functional._validation import as_matrix, check_pair

__all__ = ["check_finite_number", "check_top_k", "local_matrix", "local_pair"]


def local_pair(
    za: Any, zb: Any, *, distributed: bool, same_d: bool = False, promote: bool = False
) -> tuple[Tensor, Tensor]:
    """Validate two paired local matrices (see ``as_matrix`` / ``check_pair``).

    Args:
        za, zb: (n_local, d_a), (n_local, d_b) matrices, row i of both the same subject.
        distributed: whether the rows are one rank's share of a global batch (then a rank may
            hold fewer than 2 rows).
        same_d: require ``d_a == d_b`` (VICReg, Barlow Twins, InfoNCE).
        promote: cast both to their promoted dtype, as the functional baselines do, so that a
            float64 view is never rounded to the other view's float32.
    """
    min_rows = 0 if distributed else 2
    za = as_matrix(za, "za", min_rows=min_rows)
    zb = as_matrix(zb, "zb", min_rows=min_rows)
    check_pair(za, zb, ("za", "zb"), same_d=same_d)
    if promote:
        dt = torch.promote_types(za.dtype, zb.dtype)
        za, zb = za.to(dt), zb.to(dt)
    return za, zb


def local_matrix(z: Any, name: str = "z", *, distributed: bool) -> Tensor:
    """Validate one local (n_local, d) matrix; see :func:`local_pair`."""
    return as_matrix(z, name, min_rows=0 if distributed else 2)


def check_finite_number(
    value: float, name: str, *, positive: bool = False, nonnegative: bool = False
) -> float:
    """Return ``float(value)`` after checking it is finite (and > 0 / >= 0 if asked)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if nonnegative and v < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return v


def check_top_k(top_k: int | None) -> int | None:
    """``None`` or a positive int (the upper bound ``top_k <= d`` is checked at forward time)."""
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
    return top_k
