"""Autograd-aware collectives for global-batch losses under ``torch.distributed``.

Every covariance-type loss in densefeat is a function of batch moments
(:func:`densefeat.functional.moments.moments`), which take a SUM all-reduce and return the
moments of the *global* batch. For that sum to be part of the autograd graph it must be a
differentiable collective: a plain ``dist.all_reduce`` mutates a tensor in place behind
autograd's back, and each rank's gradient would then miss every other rank's contribution.

``torch.distributed.nn.functional`` (the old differentiable wrappers) is deprecated in
torch 2.13. Its replacement is ``torch.distributed._functional_collectives`` ("funcol"): out-of-
place collectives whose ops register autograd formulas,

- ``all_reduce(x, "sum")``: forward ``y = sum_r x_r``; backward ``dx_r = sum_r' dy_r'`` (an
  all-reduce SUM of the incoming gradients);
- ``all_gather_into_tensor``: forward ``y = [x_0; ...; x_{R-1}]``; backward a reduce-scatter SUM,
  ``dx_r = sum_r' dy_r'[rows of r]``.

Both return an ``AsyncCollectiveTensor`` that waits on first use; we wait explicitly with
``wait_tensor`` (itself differentiable, identity backward) so what leaves this module is a plain
tensor. There is deliberately no fallback to the deprecated module or to non-differentiable
collectives: on a torch whose funcol ops lack autograd kernels we raise instead.

Gradient scale: when every rank computes the *same* global loss ``L`` and calls ``backward``,
the backward collective sums ``R`` identical copies, so each rank holds ``R * dL/dz_local``.
DDP then averages gradients over ranks (divides by ``R``), which restores exactly the gradient of
the single-process loss on the concatenated batch. This is the same convention as the official
VICReg / Barlow Twins code (``FullGatherLayer`` / all-reduce of ``c`` followed by DDP). It holds
for unequal local batch sizes too: the global loss weights every row once, whatever rank holds it.

Collectives need every rank to take part: an input error raised on one rank only (NaN rows in one
shard, say) leaves the others waiting in the collective until the process group's timeout.
"""

from __future__ import annotations

from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor

from ..functional.moments import AllReduce

__all__ = ["AllReduce", "gather_rows", "global_all_reduce", "world_size"]


def _dist_active(group: object | None) -> bool:
    """True when ``torch.distributed`` is initialised and ``group`` has more than one rank."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return False
    return dist.get_world_size(group) > 1


def world_size(group: object | None = None) -> int:
    """Number of ranks in ``group`` (1 when ``torch.distributed`` is not initialised)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def _has_autograd(op: str) -> bool:
    """Whether operator ``op`` (``"namespace::name"``) has an autograd kernel in this torch."""
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(op, "Autograd")
    except RuntimeError:  # the operator does not exist in this torch
        return False


def _funcol(*ops: str) -> ModuleType:
    """Import funcol and check that one of the ops ``ns::name`` has an autograd kernel.

    Without the kernel the forward would still run, but backward would either fail late or
    (worse) silently drop the other ranks' gradient contributions. Failing here names the fix.
    """
    import torch.distributed._functional_collectives as funcol

    if not any(_has_autograd(op) for op in ops):
        raise RuntimeError(
            f"torch {torch.__version__}: {' / '.join(ops)} has no autograd formula, so a "
            "global-batch loss cannot be differentiated through it. Upgrade torch (2.13 "
            "registers it), or pass gather_distributed=False to compute the loss on each "
            "rank's local batch."
        )
    return funcol


def _group_or_world(group: object | None) -> object:
    import torch.distributed as dist

    return dist.group.WORLD if group is None else group


def global_all_reduce(group: object | None = None) -> AllReduce | None:
    """Return a differentiable SUM all-reduce over ``group``, or ``None`` in a single process.

    The returned callable maps a tensor ``x_r`` on every rank to ``sum_r x_r`` on every rank. Its
    backward all-reduces (SUMs) the gradient, so pass it as ``all_reduce=`` to
    :func:`densefeat.functional.moments.moments` to get global-batch moments that autograd can
    see. Ranks may hold different numbers of rows: only sums and the row count are reduced.

    Args:
        group: a ``torch.distributed`` process group; ``None`` for the default (WORLD) group.

    Returns:
        ``None`` when ``torch.distributed`` is unavailable, not initialised, or the group has
        one rank (callers then skip the reduction entirely); otherwise the all-reduce callable.

    Raises:
        RuntimeError: the installed torch registers no autograd formula for funcol's all_reduce.
    """
    if not _dist_active(group):
        return None
    funcol = _funcol("_c10d_functional::all_reduce")
    pg = _group_or_world(group)

    def all_reduce_sum(x: Tensor) -> Tensor:
        # funcol is out-of-place (the input is left unmodified, which autograd needs) and
        # returns an AsyncCollectiveTensor; wait_tensor turns it into a plain tensor while
        # keeping the autograd edge (its backward is the identity).
        return funcol.wait_tensor(funcol.all_reduce(x.contiguous(), "sum", pg))

    return all_reduce_sum


def _all_gather_dim0(funcol: ModuleType, x: Tensor, pg: object) -> Tensor:
    # ``all_gather_tensor_autograd`` is deprecated in favour of ``all_gather_single_autograd``
    # in 2.13; both are funcol's differentiable all-gather (backward: reduce-scatter SUM).
    gather = getattr(funcol, "all_gather_single_autograd", None)
    if gather is None:
        gather = funcol.all_gather_tensor_autograd
    return funcol.wait_tensor(gather(x.contiguous(), 0, pg))


def gather_rows(z: Tensor, group: object | None = None) -> Tensor:
    """Differentiable all-gather of ``z`` along dim 0: ``[z_0; z_1; ...; z_{R-1}]`` in rank order.

    The backward is a reduce-scatter SUM: rank ``r`` receives ``sum_r' dL_r'/dz_r``, the sum over
    ranks of the gradients that each rank's loss sends to ``r``'s rows. When every rank
    computes the same loss of the gathered rows, that is ``R * dL/dz_r`` (see the module
    docstring for why DDP's averaging then gives the single-process gradient).

    Unequal local batch sizes are **supported**: the row counts are exchanged first (one tiny
    extra collective and a host sync), each rank's rows are zero-padded to the largest count,
    gathered, and the padding is sliced away, so the result has ``sum_r n_r`` rows and the
    gradient of the padding is discarded. With equal counts no padding is done. All ranks must
    agree on the trailing dimensions and the dtype.

    Args:
        z: (n_local, ...) tensor on this rank.
        group: process group; ``None`` for the default (WORLD) group.

    Returns:
        The gathered (n_global, ...) tensor, or ``z`` itself in a single process.

    Raises:
        ValueError: ``z`` is 0-dimensional.
        RuntimeError: the installed torch registers no autograd formula for funcol's
            all-gather.
    """
    if z.ndim == 0:
        raise ValueError("gather_rows needs a tensor with a row dimension, got a 0-d tensor")
    if not _dist_active(group):
        return z
    # 2.13 registers autograd on the plain op; older releases had a separate namespace.
    funcol = _funcol(
        "_c10d_functional::all_gather_into_tensor",
        "_c10d_functional_autograd::all_gather_into_tensor",
    )
    pg = _group_or_world(group)
    n_local = z.shape[0]
    # The counts travel on z's device (NCCL only moves device tensors); no autograd needed.
    counts = _all_gather_dim0(funcol, torch.tensor([n_local], device=z.device), pg).tolist()
    n_max = max(counts)
    if all(c == n_max for c in counts):
        return _all_gather_dim0(funcol, z, pg)
    # all_gather_into_tensor needs equal shapes on every rank: pad dim 0 with zeros. F.pad
    # pads the last dims first, so the row padding is the last pair of the spec.
    pad = [0, 0] * (z.ndim - 1) + [0, n_max - n_local]
    gathered = _all_gather_dim0(funcol, F.pad(z, pad), pg)
    return torch.cat([gathered[r * n_max : r * n_max + c] for r, c in enumerate(counts)])
