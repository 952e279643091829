"""Self-supervised baseline losses: SimCLR / InfoNCE, VICReg and Barlow Twins.

These are the comparison objectives of docs/design.md (Baselines), written to match the official
implementations numerically (the tests check parity to 1e-10 in float64 against transcriptions of
the reference code):

- :func:`info_nce_loss`: NT-Xent of SimCLR, Chen et al. 2020, "A Simple Framework for Contrastive
  Learning of Visual Representations" (ICML).
- :func:`vicreg_loss`: Bardes, Ponce & LeCun 2022, "VICReg: Variance-Invariance-Covariance
  Regularization for Self-Supervised Learning" (ICLR), ``facebookresearch/vicreg``
  ``main_vicreg.py``.
- :func:`barlow_twins_loss`: Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via
  Redundancy Reduction" (ICML), ``facebookresearch/barlowtwins`` ``main.py``.

VICReg and Barlow Twins are computed from :class:`~densefeat.functional.moments.Moments` only, so
a distributed caller that passes global-batch moments (``moments(za, zb, all_reduce=...)``) gets
the loss of the global batch, which is what the official code computes with its gather /
SyncBatchNorm / all-reduce. The ``*_from_moments`` functions are that entry point; the plain
functions validate their inputs and compute the moments of a single-process batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ._validation import as_matrix, check_pair
from .moments import Moments, compute_dtype, moments

__all__ = [
    "barlow_twins_loss",
    "barlow_twins_loss_from_moments",
    "info_nce_loss",
    "vicreg_loss",
    "vicreg_loss_from_moments",
    "vicreg_terms_from_moments",
]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _off_diagonal(c: Tensor) -> Tensor:
    """Off-diagonal entries of a square matrix, flattened (the official VICReg/Barlow helper).

    Selecting the entries, rather than computing ``sum(c**2) - sum(diag(c)**2)``, avoids the
    cancellation that loses the small off-diagonal mass next to a unit diagonal in float32.
    """
    d = c.shape[0]
    return c.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def _validated_pair(za: object, zb: object) -> tuple[Tensor, Tensor]:
    """Validate two paired views with the same feature dimension; cast to a common dtype."""
    za = as_matrix(za, "za")
    zb = as_matrix(zb, "zb")
    check_pair(za, zb, ("za", "zb"), same_d=True)
    # Promote instead of letting the second view take the first's dtype: a float64 view must not
    # be silently rounded to float32 because the other one happens to be float32.
    dt = torch.promote_types(za.dtype, zb.dtype)
    return za.to(dt), zb.to(dt)


def _paired_moments(m: Moments, who: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Return ``(mean_a, mean_b, cov_a, cov_b, cov_ab)`` of paired moments with equal d."""
    if m.mean_b is None or m.cov_b is None or m.cov_ab is None:
        raise ValueError(
            f"{who} needs the moments of two paired views: call moments(za, zb), not moments(za)"
        )
    if m.cov_a.shape != m.cov_b.shape:
        raise ValueError(
            f"{who} needs za and zb with the same feature dimension, "
            f"got {m.cov_a.shape[0]} and {m.cov_b.shape[0]}"
        )
    return m.mean_a, m.mean_b, m.cov_a, m.cov_b, m.cov_ab


def _check_nonnegative(value: float, name: str) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")


# --------------------------------------------------------------------------------------------
# SimCLR / InfoNCE
# --------------------------------------------------------------------------------------------


def info_nce_loss(za: Tensor, zb: Tensor, temperature: float = 0.1, *, eps: float = 1e-8) -> Tensor:
    r"""SimCLR's normalised temperature-scaled cross-entropy (NT-Xent).

    The ``2N`` rows of ``[za; zb]`` are L2-normalised, ``u_i = z_i / max(||z_i||, eps)``, and
    ``s_ik = u_i . u_k / temperature``. Each row is an anchor whose positive is its partner in
    the other view (``i <-> i + N``) and whose negatives are the other ``2N - 2`` rows; the
    self-similarity is excluded::

        loss = 1/(2N) sum_i -log( exp(s_i,p(i)) / sum_{k != i} exp(s_ik) )

    Reference: Chen, Kornblith, Norouzi & Hinton 2020, "A Simple Framework for Contrastive
    Learning of Visual Representations", ICML (eq. 1, Algorithm 1).

    Negatives come from this process's batch only (no cross-rank gather).

    Args:
        za: (N, d) first view.
        zb: (N, d) second view, row ``i`` paired with ``za[i]``.
        temperature: ``tau > 0``.
        eps: floor of the row norm. A row of zeros gives a zero unit vector (finite loss and
            gradient) instead of NaN; the gradient of a row whose norm is below ``eps`` scales
            like ``1 / eps``, as with ``torch.nn.functional.normalize``.

    Returns:
        0-d tensor in float32 for half-precision inputs, else in the input dtype.

    Raises:
        ValueError: bad input (see :func:`~densefeat.functional._validation.as_matrix`),
            unpaired rows, different feature dimensions, or ``temperature <= 0``.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    _check_nonnegative(eps, "eps")
    za, zb = _validated_pair(za, zb)
    n = za.shape[0]
    z = torch.cat([za, zb]).to(compute_dtype(za))
    u = F.normalize(z, dim=1, eps=eps)
    logits = (u @ u.T) / temperature
    # Self-similarity is excluded with -inf: its softmax weight is exactly 0 at any temperature
    # (a finite "large negative" is not, once |logits| ~ 1/temperature reaches it), and
    # log_softmax's backward multiplies by that weight, so the masked gradient is an exact 0.
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    idx = torch.arange(n, device=z.device)
    targets = torch.cat([idx + n, idx])
    return F.cross_entropy(logits, targets)


# --------------------------------------------------------------------------------------------
# VICReg
# --------------------------------------------------------------------------------------------


def vicreg_terms_from_moments(m: Moments, *, eps: float = 1e-4) -> dict[str, Tensor]:
    r"""Unweighted VICReg terms from (global-batch) paired moments.

    With ``C_a, C_b, C_ab`` the unbiased (cross-)covariances, ``mu_a, mu_b`` the means and ``d``
    the common feature dimension:

    - invariance, the official ``F.mse_loss(za, zb)`` (mean over rows and features of
      ``(za - zb)^2``), rewritten exactly in moments::

          [ (n-1)/n * tr(C_a + C_b - 2 C_ab) + ||mu_a - mu_b||^2 ] / d

      (the cross term between the centred difference and the mean difference sums to zero).
    - variance, a hinge on each feature's standard deviation (``torch.var`` is unbiased in the
      official code, as ``C`` is here)::

          mean(relu(1 - sqrt(diag C_a + eps))) / 2 + mean(relu(1 - sqrt(diag C_b + eps))) / 2

    - covariance: ``sum(offdiag(C_a)^2) / d + sum(offdiag(C_b)^2) / d``.

    Reference: Bardes, Ponce & LeCun 2022, "VICReg", ICLR (eqs. 1-6);
    ``facebookresearch/vicreg`` ``main_vicreg.py`` ``VICReg.forward``.

    Args:
        m: paired :class:`Moments` from ``moments(za, zb)`` (``all_reduce`` for the global batch).
        eps: added to the variance inside the square root (official value 1e-4).

    Returns:
        ``{"invariance", "variance", "covariance"}``, each a 0-d tensor in the moments' dtype.

    Raises:
        ValueError: unpaired moments, different feature dimensions, or ``eps < 0``.
    """
    _check_nonnegative(eps, "eps")
    mean_a, mean_b, cov_a, cov_b, cov_ab = _paired_moments(m, "VICReg")
    n, d = m.n, cov_a.shape[0]
    # Only the diagonals enter the trace: the d x d difference matrix is never formed.
    tr_diff = (cov_a.diagonal() + cov_b.diagonal() - 2.0 * cov_ab.diagonal()).sum()
    invariance = ((n - 1) / n * tr_diff + (mean_a - mean_b).pow(2).sum()) / d
    std_a = torch.sqrt(cov_a.diagonal() + eps)
    std_b = torch.sqrt(cov_b.diagonal() + eps)
    variance = F.relu(1.0 - std_a).mean() / 2 + F.relu(1.0 - std_b).mean() / 2
    covariance = _off_diagonal(cov_a).pow(2).sum() / d + _off_diagonal(cov_b).pow(2).sum() / d
    return {"invariance": invariance, "variance": variance, "covariance": covariance}


def vicreg_loss_from_moments(
    m: Moments,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
) -> Tensor:
    r"""VICReg loss from (global-batch) paired moments.

    ``loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance`` with the
    terms of :func:`vicreg_terms_from_moments` (defaults 25 / 25 / 1 as in the paper).

    Reference: Bardes, Ponce & LeCun 2022, "VICReg", ICLR; ``facebookresearch/vicreg``.

    Args:
        m: paired :class:`Moments` from ``moments(za, zb)``.
        sim_coeff: weight of the invariance (MSE) term.
        std_coeff: weight of the variance hinge.
        cov_coeff: weight of the covariance term.
        eps: added to the variance inside the square root.

    Returns:
        0-d tensor in the moments' dtype.
    """
    t = vicreg_terms_from_moments(m, eps=eps)
    return sim_coeff * t["invariance"] + std_coeff * t["variance"] + cov_coeff * t["covariance"]


def vicreg_loss(
    za: Tensor,
    zb: Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
) -> Tensor:
    r"""VICReg loss of two paired views (single process).

    ``loss = sim_coeff * mse(za, zb) + std_coeff * variance + cov_coeff * covariance``; see
    :func:`vicreg_terms_from_moments` for the formulas. For the global batch of a distributed
    run, call :func:`vicreg_loss_from_moments` with ``moments(za, zb, all_reduce=...)``.

    Reference: Bardes, Ponce & LeCun 2022, "VICReg: Variance-Invariance-Covariance
    Regularization for Self-Supervised Learning", ICLR; ``facebookresearch/vicreg``.

    Args:
        za: (n, d) first view.
        zb: (n, d) second view, row ``i`` paired with ``za[i]``.
        sim_coeff: weight of the invariance term.
        std_coeff: weight of the variance term.
        cov_coeff: weight of the covariance term.
        eps: added to the variance inside the square root.

    Returns:
        0-d tensor, float32 for half-precision inputs, else the input dtype.

    Raises:
        ValueError: bad input, unpaired rows, or different feature dimensions.
    """
    za, zb = _validated_pair(za, zb)
    return vicreg_loss_from_moments(moments(za, zb), sim_coeff, std_coeff, cov_coeff, eps)


# --------------------------------------------------------------------------------------------
# Barlow Twins
# --------------------------------------------------------------------------------------------


def barlow_twins_loss_from_moments(m: Moments, lambd: float = 5e-3, bn_eps: float = 1e-5) -> Tensor:
    r"""Barlow Twins loss from (global-batch) paired moments.

    The official code standardises each view over the batch with ``BatchNorm1d(affine=False)``
    (biased variance, ``eps`` inside the square root) and forms ``c = bn(za)^T bn(zb) / n``. In
    moments, with the biased statistics ``S = C * (n-1)/n``::

        c_ij = S_ab[i, j] / sqrt((S_a[i, i] + bn_eps) * (S_b[j, j] + bn_eps))
        loss = sum_i (c_ii - 1)^2 + lambd * sum_{i != j} c_ij^2

    Reference: Zbontar, Jing, Misra, LeCun & Deny 2021, "Barlow Twins: Self-Supervised Learning
    via Redundancy Reduction", ICML (eqs. 1-2); ``facebookresearch/barlowtwins`` ``main.py``.

    Args:
        m: paired :class:`Moments` from ``moments(za, zb)`` (``all_reduce`` for the global batch,
            which is what the official SyncBatchNorm + all-reduce computes).
        lambd: weight of the redundancy-reduction (off-diagonal) term.
        bn_eps: BatchNorm's eps (1e-5, PyTorch's default). With 0, a constant feature gives NaN.

    Returns:
        0-d tensor in the moments' dtype.

    Raises:
        ValueError: unpaired moments, different feature dimensions, or ``bn_eps < 0``.
    """
    _check_nonnegative(bn_eps, "bn_eps")
    _, _, cov_a, cov_b, cov_ab = _paired_moments(m, "Barlow Twins")
    biased = (m.n - 1) / m.n  # BatchNorm normalises with the biased (/n) variance
    sd_a = torch.sqrt(cov_a.diagonal() * biased + bn_eps)
    sd_b = torch.sqrt(cov_b.diagonal() * biased + bn_eps)
    c = (cov_ab * biased) / (sd_a[:, None] * sd_b[None, :])
    on_diag = (c.diagonal() - 1.0).pow(2).sum()
    off_diag = _off_diagonal(c).pow(2).sum()
    return on_diag + lambd * off_diag


def barlow_twins_loss(za: Tensor, zb: Tensor, lambd: float = 5e-3, bn_eps: float = 1e-5) -> Tensor:
    r"""Barlow Twins loss of two paired views (single process).

    ``loss = sum_i (c_ii - 1)^2 + lambd * sum_{i != j} c_ij^2`` with ``c`` the cross-correlation
    of the batch-standardised views; see :func:`barlow_twins_loss_from_moments`. For the global
    batch of a distributed run, call that function with ``moments(za, zb, all_reduce=...)``.

    Reference: Zbontar et al. 2021, "Barlow Twins", ICML; ``facebookresearch/barlowtwins``.

    Args:
        za: (n, d) first view.
        zb: (n, d) second view, row ``i`` paired with ``za[i]``.
        lambd: weight of the off-diagonal term (paper default 5e-3).
        bn_eps: BatchNorm's eps inside the square root.

    Returns:
        0-d tensor, float32 for half-precision inputs, else the input dtype.

    Raises:
        ValueError: bad input, unpaired rows, or different feature dimensions.
    """
    za, zb = _validated_pair(za, zb)
    return barlow_twins_loss_from_moments(moments(za, zb), lambd, bn_eps)
