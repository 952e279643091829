"""ZCA whitening with training-split statistics: the probe's "after whitening" control.

Whitening alone can raise a linear probe's AUROC, so every method is also probed after it
(``densefeat probe --whiten`` and the benchmark's whitened probes). The transform is estimated
on the train split only, like every other statistic of the protocol.

References:
    Kessy, A., Lewin, A. & Strimmer, K. (2018). Optimal whitening and decorrelation. The
    American Statistician 72(4).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..checks import as_matrix

__all__ = ["whiten", "zca_whitening"]


def zca_whitening(train_X: Any, eps: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """ZCA (Mahalanobis) whitening from training rows: ``x -> (x - mu) W``.

    ``Sigma = Xc^T Xc / (n - 1)`` of the training rows, ``Sigma = U diag(lam) U^T`` and
    ``W = U diag((lam + eps tr(Sigma) / d)^(-1/2)) U^T``: the symmetric inverse square root
    (Kessy et al. 2018), which among all whitening matrices keeps the whitened features closest
    to the originals. The ridge ``eps * tr(Sigma) / d`` (the same relative 1e-4 as the
    subspace-consistency term of docs/design.md) bounds the amplification of near-null
    directions at ``(eps tr(Sigma)/d)^(-1/2)``; with n_train <= d, or an encoder ending in
    LayerNorm, some ``lam`` are exactly 0 and the whitened covariance is ``lam / (lam + ridge)``,
    i.e. identity only on the well-determined directions. Computed in float64.

    Args:
        train_X: (n, d) training rows, n >= 2, not all columns constant.
        eps: relative ridge (> 0).

    Returns:
        ``(mu, W)``: (d,) mean and (d, d) symmetric whitening matrix.
    """
    X = as_matrix(train_X, "train_X")
    if X.shape[0] < 2:
        raise ValueError(f"train_X needs at least 2 rows for a covariance, got {X.shape[0]}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    mu = X.mean(axis=0)
    Xc = X - mu
    cov = Xc.T @ Xc / (X.shape[0] - 1)
    lam, U = np.linalg.eigh(cov)
    trace = float(lam.clip(min=0).sum())
    if trace <= 0:
        raise ValueError("train_X has no variance (every column is constant): cannot whiten")
    ridge = eps * trace / X.shape[1]
    W = (U / np.sqrt(lam.clip(min=0) + ridge)) @ U.T
    return mu, W


def whiten(train_X: Any, X: Any, eps: float = 1e-4) -> np.ndarray:
    """``(X - mu) W`` with ZCA statistics from ``train_X`` only (see :func:`zca_whitening`).

    The "after whitening" control: pass the train-split embeddings as ``train_X`` and all rows
    as ``X``.

    Args:
        train_X: (n_train, d) rows the statistics come from.
        X: (n, d) rows to transform.
        eps: relative ridge of :func:`zca_whitening`.

    Returns:
        (n, d) float64 whitened rows.
    """
    mu, W = zca_whitening(train_X, eps)
    X = as_matrix(X, "X")
    if X.shape[1] != mu.size:
        raise ValueError(f"X has {X.shape[1]} features, train_X has {mu.size}")
    return (X - mu) @ W
