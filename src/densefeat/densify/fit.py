"""Fitting an adapter on the training rows of frozen embeddings.

Methods (same adapter, same capacity, same budget: ``steps`` Adam steps on minibatches of
``batch_size`` pairs, learning rate ``lr``):

* ``dense``: :class:`~densefeat.losses.DenseFeatureLoss` (spectral balance + feature
  orthogonality of each side + subspace consistency of the pair; docs/design.md §4). Without
  pairs the subspace term is dropped (``w_sub = 0``) and both sides are the same rows.
* ``vicreg``: :class:`~densefeat.losses.VICRegLoss` (Bardes et al. 2022; 25 / 25 / 1).
* ``barlow``: :class:`~densefeat.losses.BarlowTwinsLoss` (Zbontar et al. 2021; lambda 5e-3).
  Without pairs VICReg's invariance term is 0 and Barlow Twins' cross-correlation is the
  correlation matrix: both then only decorrelate, which is the honest unpaired control.
* ``whiten``: no training. ZCA whitening (Bell & Sejnowski 1997; Kessy et al. 2018, "Optimal
  whitening and decorrelation") from the training covariance:
  ``W = U diag((lambda + eps)^-1/2) U^T``, ``b = -mean W``, ``C = U diag(lambda) U^T`` the
  unbiased (``n - 1``) covariance of the training rows and the ridge
  ``eps = ridge * tr(C) / d`` (default ``ridge = 1e-5``) so that a (near) null direction of
  ``C`` gets a finite gain. With ``dim < d`` it is PCA whitening onto the top ``dim``
  principal directions, ``W = U_dim diag((lambda_dim + eps)^-1/2)``.

The trained adapters are optimised in the coordinates of the training-whitened input
``(x - m) P``, ``P = U diag((lambda + eps)^-1/2)`` (a preconditioner folded into the first
layer afterwards, so the function class is still every linear map / every MLP): a direction
with a tiny variance is then as cheap to rescale as any other. The linear adapter starts at
``y = (x - m) U_D / s``, ``s = sqrt(tr C / d)``: for ``D = d`` a rotation and one global scale
of the input embeddings, nothing a linear probe could tell apart. The MLP starts at PyTorch's
default initialisation. Both are seeded. A linear map cannot create variance: an exact null
direction of the input survives any linear adapter with ``D = d`` (``--dim`` below the
numerical rank removes it).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ..choices import DEFAULT_RIDGE, DENSIFY_METHODS
from ..io import EmbeddingSource, open_embeddings
from .adapter import Adapter
from .rows import KeyColumns, adjacent_pairs, read_keys, training_mask

__all__ = ["DEFAULT_RIDGE", "METHODS", "fit_adapter", "fit_files", "zca_whitening"]

#: The fitting methods; DEFAULT_RIDGE is the whitening control's relative ridge
#: ``eps = DEFAULT_RIDGE * tr(C) / d``. Both are defined in the import-free densefeat.choices
#: (the ``densify fit`` parser reads them from there).
METHODS = DENSIFY_METHODS


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, covariance (``n - 1``) and its eigenpairs, eigenvalues descending."""
    mean = x.mean(axis=0)
    xc = x - mean
    cov = xc.T @ xc / (x.shape[0] - 1)
    evals, evecs = np.linalg.eigh(cov)
    return mean, cov, evals[::-1], evecs[:, ::-1]


def zca_whitening(
    x: np.ndarray, ridge: float = DEFAULT_RIDGE, dim: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """ZCA (``dim = d``) or PCA (``dim < d``) whitening of the rows ``x`` (n, d).

    Returns:
        ``(W, b)`` with ``y = x W + b``; formulas in the module docstring.
    """
    x = np.asarray(x, dtype=np.float64)
    d = x.shape[1]
    dim = d if dim is None else dim
    if not 1 <= dim <= d:
        raise ValueError(f"--dim must be in 1..{d} for whitening, got {dim}")
    if not (math.isfinite(ridge) and ridge > 0):
        raise ValueError(f"ridge must be > 0, got {ridge}")
    mean, cov, evals, evecs = _moments(x)
    eps = ridge * np.trace(cov) / d
    gain = 1.0 / np.sqrt(np.clip(evals[:dim], 0.0, None) + eps)
    w = evecs[:, :dim] * gain
    if dim == d:
        w = w @ evecs.T  # rotate back: the ZCA solution, closest to the input
    return w, -mean @ w


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be > 0, got {value}")


def fit_adapter(
    rows: np.ndarray,
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    method: str = "dense",
    dim: int | None = None,
    hidden: int = 0,
    steps: int = 300,
    batch_size: int = 1024,
    lr: float = 1e-2,
    seed: int = 0,
    ridge: float = DEFAULT_RIDGE,
) -> Adapter:
    """Fit an adapter on training rows.

    Args:
        rows: (n, d) training rows: the mean, covariance and PCA come from them, and without
            ``pairs`` the objective runs on them.
        pairs: ``(xa, xb)``, (m, d) each, row i of both a pair (two views or windows), or
            ``None`` for no paired term.
        method: one of :data:`METHODS`.
        dim: output width D (default d).
        hidden: hidden width of the MLP adapter; 0 for the linear adapter.
        steps, batch_size, lr, seed: the optimisation budget (Adam) and its seed.
        ridge: the relative ridge of the whitening (``whiten``) and of the preconditioner of
            the trained adapters.

    Returns:
        the :class:`Adapter`; its ``config`` records the method, settings and final loss.
    """
    if method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    rows = np.asarray(rows, dtype=np.float64)
    n, d = rows.shape
    if n < 2:
        raise ValueError(f"need at least 2 training rows, got {n}")
    dim = d if dim is None else int(dim)
    if dim < 1:
        raise ValueError(f"--dim must be >= 1, got {dim}")
    if hidden < 0:
        raise ValueError(f"--hidden must be >= 0, got {hidden}")
    config: dict[str, Any] = {"method": method, "hidden": hidden, "dim": dim}
    if method == "whiten":
        if hidden:
            raise ValueError("--method whiten is a linear map; --hidden does not apply")
        w, b = zca_whitening(rows, ridge, dim)
        config.update(ridge=ridge, whitening="zca" if dim == d else "pca")
        return Adapter("linear", {"W": w, "b": b}, config)
    if hidden == 0 and dim > d:
        raise ValueError(f"--dim {dim} exceeds the input width {d} (a linear adapter)")
    for name, v in (("--steps", steps), ("--batch-size", batch_size), ("--lr", lr)):
        _check_positive(name, v)
    if pairs is not None:
        xa, xb = (np.asarray(p, dtype=np.float64) for p in pairs)
        if xa.shape != xb.shape or xa.shape[1] != d or len(xa) < 2:
            raise ValueError(f"pairs must be two (m >= 2, {d}) arrays, got {xa.shape}, {xb.shape}")
    tensors, trace = _train(rows, pairs, method, dim, hidden, steps, batch_size, lr, seed, ridge)
    config.update(steps=steps, batch_size=batch_size, lr=lr, seed=seed, **trace)
    return Adapter("linear" if hidden == 0 else "mlp", tensors, config)


def _loss_fn(method: str, paired: bool) -> Any:
    from ..losses import BarlowTwinsLoss, DenseFeatureLoss, VICRegLoss

    if method == "dense":
        dense = DenseFeatureLoss(w_sub=1.0 if paired else 0.0, gather_distributed=False)
        return lambda za, zb: dense(za, zb)[0]
    if method == "vicreg":
        return VICRegLoss(gather_distributed=False)
    return BarlowTwinsLoss(gather_distributed=False)


def _train(
    rows: np.ndarray,
    pairs: tuple[np.ndarray, np.ndarray] | None,
    method: str,
    dim: int,
    hidden: int,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    ridge: float,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    import torch
    from torch import nn

    d = rows.shape[1]
    mean, cov, evals, evecs = _moments(rows)
    scale = float(np.sqrt(np.trace(cov) / d))
    if scale <= 0:
        raise ValueError("the training rows are constant (zero variance): nothing to adapt")
    # Preconditioning: the network sees the training-whitened input (x - m) P,
    # P = U diag((lambda + eps)^-1/2), eps = ridge tr(C) / d. A pure reparametrisation (P is
    # folded into the first layer afterwards): it only makes a direction of variance
    # lambda_j as cheap to rescale as any other, without which a direction 1e-3 times smaller
    # than the top one needs ~1e3 times more Adam steps to reach its balanced share.
    eps = ridge * float(np.trace(cov)) / d
    root = np.sqrt(np.clip(evals, 0.0, None) + eps)
    precond = evecs / root
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if hidden == 0:
        net: nn.Module = nn.Linear(d, dim, dtype=torch.float64)
        with torch.no_grad():
            # Start at the input's principal coordinates / s: a rotation and one global scale
            # of the input embeddings (for D = d), nothing a probe could tell apart.
            net.weight.zero_()
            net.weight[:, :dim].copy_(torch.diag(torch.from_numpy(root[:dim] / scale)))
            net.bias.zero_()
    else:
        net = nn.Sequential(
            nn.Linear(d, hidden, dtype=torch.float64),
            nn.GELU(),
            nn.Linear(hidden, dim, dtype=torch.float64),
        )

    def std(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((x - mean) @ precond)

    if pairs is not None:
        ta, tb = std(pairs[0]), std(pairs[1])
    else:
        ta = tb = std(rows)
    m = ta.shape[0]
    bs = min(int(batch_size), m)
    loss_fn = _loss_fn(method, pairs is not None)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    first = last = float("nan")
    for step in range(int(steps)):
        idx = torch.randperm(m, generator=gen)[:bs]
        za = net(ta[idx])
        zb = za if pairs is None else net(tb[idx])
        loss = loss_fn(za, zb)
        if not torch.isfinite(loss):
            raise ValueError(f"the {method} loss became non-finite at step {step}; lower --lr")
        opt.zero_grad()
        loss.backward()
        opt.step()
        last = float(loss.detach())
        first = last if step == 0 else first
    trace = {"loss_first": first, "loss_last": last, "batch_rows": bs, "ridge": ridge}
    if hidden == 0:
        wt = precond @ net.weight.detach().numpy().T  # fold the preconditioner into W, b
        b = net.bias.detach().numpy() - mean @ wt
        return {"W": wt, "b": b}, trace
    lin1, lin2 = net[0], net[2]
    # (x - m) P W1 = ((x - m) / s) (s P W1): the stored form of the module docstring.
    return {
        "in_mean": mean,
        "in_scale": np.array([scale]),
        "W1": scale * precond @ lin1.weight.detach().numpy().T,
        "b1": lin1.bias.detach().numpy().copy(),
        "W2": lin2.weight.detach().numpy().T.copy(),
        "b2": lin2.bias.detach().numpy().copy(),
    }, trace


def _masked_rows(src: EmbeddingSource, mask: np.ndarray, chunk_rows: int | None) -> np.ndarray:
    """The rows of ``src`` where ``mask`` holds, float64; other rows are dropped per chunk."""
    parts, start = [], 0
    for chunk in src.chunks(chunk_rows):
        keep = mask[start : start + len(chunk)]
        parts.append(np.asarray(chunk[keep], dtype=np.float64))
        start += len(chunk)
    return np.concatenate(parts)


def _check_same_keys(ka: KeyColumns, kb: KeyColumns, la: str, lb: str) -> None:
    for role in ("subject", "time"):
        a, b = getattr(ka, role), getattr(kb, role)
        if a is None or b is None:
            continue
        bad = np.flatnonzero(a != b)
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"paired files must hold the same rows in the same order: row {i} has "
                f"{ka.names[role]}={a[i]!r} in {la} but {kb.names[role]}={b[i]!r} in {lb}"
            )


def fit_files(
    path_a: str | os.PathLike[str],
    path_b: str | os.PathLike[str] | None = None,
    *,
    key: str | None = None,
    key_b: str | None = None,
    subject_col: str | None = None,
    time_col: str | None = None,
    split_col: str | None = None,
    train_split: str = "train",
    split_seed: int = 0,
    chunk_rows: int | None = None,
    **fit_kwargs: Any,
) -> Adapter:
    """Fit an adapter to one embedding file (pairs from adjacent times) or two paired files.

    Rows outside the training split are streamed past and never kept (see :mod:`.rows`).
    ``fit_kwargs`` go to :func:`fit_adapter`.

    Raises:
        ValueError: unreadable files, NaN/inf (an ``EmbeddingFileError`` naming the file and
            row), an unknown key column, paired files whose rows or widths differ.
    """
    src_a = open_embeddings(path_a, key)
    keys = read_keys(
        path_a, src_a.n, subject_col=subject_col, time_col=time_col, split_col=split_col
    )
    mask = training_mask(keys, train_split=train_split, seed=split_seed)
    rows = _masked_rows(src_a, mask, chunk_rows)
    provenance: dict[str, Any] = {
        "files": [str(path_a)] + ([str(path_b)] if path_b is not None else []),
        "key": src_a.key,
        "n_rows": src_a.n,
        "n_train": int(mask.sum()),
        "train_rows": (
            f"{keys.names['split']} == {train_split!r}"
            if keys.split is not None
            else f"seeded subject split (seed {split_seed}) on "
            + (repr(keys.names["subject"]) if keys.subject is not None else "the row index")
        ),
    }
    pairs: tuple[np.ndarray, np.ndarray] | None
    if path_b is not None:
        src_b = open_embeddings(path_b, key if key_b is None else key_b)
        if src_b.n != src_a.n:
            raise ValueError(
                f"paired files must have the same rows in the same order: {src_a.label} has "
                f"{src_a.n} rows, {src_b.label} has {src_b.n}"
            )
        if src_b.d != src_a.d:
            raise ValueError(
                f"one adapter serves both files, so their widths must match: {src_a.label} "
                f"has d={src_a.d}, {src_b.label} has d={src_b.d}"
            )
        keys_b = read_keys(
            path_b, src_b.n, subject_col=subject_col, time_col=time_col, split_col=""
        )
        _check_same_keys(keys, keys_b, src_a.label, src_b.label)
        pairs = (rows, _masked_rows(src_b, mask, chunk_rows))
        provenance["pairs"] = "row i of both files"
    else:
        found = adjacent_pairs(keys, mask)
        pairs = None
        if found is None:
            provenance["pairs"] = "none (no subject and time columns): no paired term"
        elif len(found[0]) < 2:
            provenance["pairs"] = "none (fewer than 2 adjacent-time pairs): no paired term"
        else:
            pos = np.cumsum(mask) - 1  # file row -> position among the training rows
            pairs = (rows[pos[found[0]]], rows[pos[found[1]]])
            provenance["pairs"] = "adjacent prediction times of a subject"
    provenance["n_pairs"] = 0 if pairs is None else len(pairs[0])
    adapter = fit_adapter(rows, pairs, **fit_kwargs)
    return Adapter(adapter.kind, adapter.tensors, {**adapter.config, **provenance})
