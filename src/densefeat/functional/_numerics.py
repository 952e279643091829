"""Numerical constants and the checked Cholesky factorisation shared by the objectives.

:mod:`~densefeat.functional.objectives` (the per-term reference path) and
:mod:`~densefeat.functional.fused` (the fused default path) both read them, so the two paths
compute the same function (docs/design.md §5).
"""

from __future__ import annotations

import torch
from torch import Tensor

VAR_EPS = 1e-4  # VICReg's eps inside the sqrt of the variance hinge
RIDGE = 1e-4  # relative ridge: eps = 1e-4 * tr(C) / d
TINY = 1e-30  # absolute floor so an all-constant batch does not divide by zero
SHIFT_FLOOR = 1e-12  # least shift of the "shrunk" form's trace-normalised covariances


def cholesky(m: Tensor, what: str) -> Tensor:
    """Lower Cholesky factor of ``m``; a ``ValueError`` naming ``what`` when it fails.

    On a GPU the check is asynchronous (``torch._assert_async``): reading ``info`` on the host
    would stall the device every step.
    """
    chol, info = torch.linalg.cholesky_ex(m)
    message = (
        f"{what}: Cholesky factorisation failed (matrix not positive definite; "
        "the input probably contains NaN/inf or overflowed)"
    )
    if m.device.type != "cpu":
        torch._assert_async(info == 0, message)
    elif int(info) != 0:
        raise ValueError(message)
    return chol
