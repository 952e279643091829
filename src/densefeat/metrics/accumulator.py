"""Streaming covariance statistics: every geometry metric without holding the rows.

State is ``(count, mean, M2)`` in float64, where ``M2 = sum_i (x_i - mean)(x_i - mean)^T``,
merged with the pairwise update of Chan, Golub & LeVeque (1979):

    n = n_1 + n_2,  delta = mean_2 - mean_1,  mean = mean_1 + delta n_2 / n,
    M2 = M2_1 + M2_2 + delta delta^T n_1 n_2 / n.

Unlike raw power sums (sum x, sum x x^T), this loses no precision to a common offset in the
features (at offset 50, raw sums lose ~8 digits). With a second, paired stream the
cross-moment ``M2_ab = sum_i (a_i - mean_a)(b_i - mean_b)^T`` is merged the same way, which is
all that the sample-space subspace distance, principal angles and linear CKA need.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..functional._validation import as_matrix
from ..functional.spectrum import Spectrum, geometry, spectrum_from_covariance
from ..functional.subspace import (
    chance_subspace_distance,
    linear_cka_debiased_from_stats,
    linear_cka_from_covariances,
    sample_space_cosines,
)

__all__ = ["CenteredNormAccumulator", "CovarianceAccumulator"]

_F64 = torch.float64


def _chunk(x: Any, name: str) -> Tensor:
    return as_matrix(x, name, min_rows=1).to(_F64)


def _merge_moments(
    n1: int, mu1: Tensor, m2_1: Tensor, n2: int, mu2: Tensor, m2_2: Tensor
) -> tuple[int, Tensor, Tensor, Tensor]:
    n = n1 + n2
    delta = mu2 - mu1
    mu = mu1 + delta * (n2 / n)
    m2 = m2_1 + m2_2 + torch.outer(delta, delta) * (n1 * n2 / n)
    return n, mu, m2, delta


class CovarianceAccumulator:
    """Streaming mean and covariance of one stream, or of two paired streams with their cross.

    Example:
        >>> acc = CovarianceAccumulator(paired=True)
        >>> for a, b in chunks:            # row i of a and of b: the same sample
        ...     acc.update(a, b)
        >>> acc.compute(k=16)["subspace_distance"]

    Args:
        paired: whether :meth:`update` takes two paired chunks.
    """

    def __init__(self, paired: bool = False) -> None:
        self.paired = paired
        self.n = 0
        self.mean_a: Tensor | None = None
        self.m2_a: Tensor | None = None
        self.mean_b: Tensor | None = None
        self.m2_b: Tensor | None = None
        self.m2_ab: Tensor | None = None

    # ------------------------------------------------------------------ updates
    def update(self, a: Any, b: Any | None = None) -> CovarianceAccumulator:
        """Add a chunk of rows (and its paired chunk). Returns ``self``."""
        if self.paired != (b is not None):
            raise ValueError(
                "this accumulator is "
                + ("paired: pass two chunks" if self.paired else "unpaired: pass one chunk")
            )
        xa = _chunk(a, "a")
        other = CovarianceAccumulator(self.paired)
        other.n = xa.shape[0]
        other.mean_a = xa.mean(0)
        ca = xa - other.mean_a
        other.m2_a = ca.T @ ca
        if b is not None:
            xb = _chunk(b, "b")
            if xb.shape[0] != xa.shape[0]:
                raise ValueError(
                    f"paired chunks must have the same number of rows, got {xa.shape[0]} "
                    f"and {xb.shape[0]}"
                )
            other.mean_b = xb.mean(0)
            cb = xb - other.mean_b
            other.m2_b = cb.T @ cb
            other.m2_ab = ca.T @ cb
        return self.merge(other)

    def merge(self, other: CovarianceAccumulator) -> CovarianceAccumulator:
        """Merge another accumulator's rows into this one (Chan et al.). Returns ``self``."""
        if other.paired != self.paired:
            raise ValueError("cannot merge a paired accumulator with an unpaired one")
        if other.n == 0:
            return self
        if self.n == 0:
            for key in ("n", "mean_a", "m2_a", "mean_b", "m2_b", "m2_ab"):
                val = getattr(other, key)
                setattr(self, key, val.clone() if isinstance(val, Tensor) else val)
            return self
        assert self.mean_a is not None and other.mean_a is not None
        if other.mean_a.shape != self.mean_a.shape or (
            self.paired and other.mean_b.shape != self.mean_b.shape  # type: ignore[union-attr]
        ):
            raise ValueError(
                "feature dimension changed between chunks: "
                f"{self.mean_a.numel()} then {other.mean_a.numel()}"
            )
        n1, n2 = self.n, other.n
        n, self.mean_a, self.m2_a, delta_a = _merge_moments(
            n1,
            self.mean_a,
            self.m2_a,
            n2,
            other.mean_a,
            other.m2_a,  # type: ignore[arg-type]
        )
        if self.paired:
            _, self.mean_b, self.m2_b, delta_b = _merge_moments(
                n1,
                self.mean_b,
                self.m2_b,
                n2,
                other.mean_b,
                other.m2_b,  # type: ignore[arg-type]
            )
            self.m2_ab = self.m2_ab + other.m2_ab + torch.outer(delta_a, delta_b) * (n1 * n2 / n)
        self.n = n
        return self

    def all_reduce(self, group: Any = None) -> CovarianceAccumulator:
        """Merge the states of all ranks of ``torch.distributed`` in place (every rank ends equal).

        The parallel form of Chan's update: the global mean first, then each rank's ``M2`` plus
        ``n_r (mean_r - mean)(mean_r - mean)^T``, summed. Every rank must hold the same
        feature dimensions (a rank with no rows passes zeros of the right shape: call
        :meth:`init_empty` first).
        """
        import torch.distributed as dist

        if self.mean_a is None:
            raise ValueError("all_reduce needs the feature dimension: call init_empty(d) first")
        first = torch.cat(
            [torch.tensor([float(self.n)], dtype=_F64), self.mean_a * self.n]
            + ([self.mean_b * self.n] if self.paired else [])  # type: ignore[operator]
        )
        dist.all_reduce(first, group=group)
        n = round(float(first[0]))
        if n == 0:
            return self
        da = self.mean_a.numel()
        mean_a = first[1 : 1 + da] / n
        mean_b = first[1 + da :] / n if self.paired else None
        da_r = self.mean_a - mean_a
        parts = [self.m2_a + self.n * torch.outer(da_r, da_r)]
        if self.paired:
            db_r = self.mean_b - mean_b  # type: ignore[operator]
            parts += [
                self.m2_b + self.n * torch.outer(db_r, db_r),
                self.m2_ab + self.n * torch.outer(da_r, db_r),
            ]
        shapes = [p.shape for p in parts]
        flat = torch.cat([p.reshape(-1) for p in parts])
        dist.all_reduce(flat, group=group)
        pieces = torch.split(flat, [s.numel() for s in shapes])
        self.n = n
        self.mean_a = mean_a
        self.m2_a = pieces[0].reshape(shapes[0])
        if self.paired:
            self.mean_b = mean_b
            self.m2_b = pieces[1].reshape(shapes[1])
            self.m2_ab = pieces[2].reshape(shapes[2])
        return self

    def init_empty(self, d_a: int, d_b: int | None = None) -> CovarianceAccumulator:
        """Set zero state of the given dimensions (for a rank that saw no rows)."""
        if self.n == 0:
            self.mean_a = torch.zeros(d_a, dtype=_F64)
            self.m2_a = torch.zeros(d_a, d_a, dtype=_F64)
            if self.paired:
                if d_b is None:
                    raise ValueError("a paired accumulator needs d_b")
                self.mean_b = torch.zeros(d_b, dtype=_F64)
                self.m2_b = torch.zeros(d_b, d_b, dtype=_F64)
                self.m2_ab = torch.zeros(d_a, d_b, dtype=_F64)
        return self

    # ------------------------------------------------------------------ results
    def _require(self, min_rows: int = 2) -> None:
        if self.n < min_rows:
            raise ValueError(f"need at least {min_rows} rows, the accumulator has n={self.n}")

    def covariance(self, which: str = "a") -> Tensor:
        """Unbiased covariance ``M2 / (n - 1)`` of stream ``"a"`` or ``"b"``."""
        self._require()
        m2 = self.m2_a if which == "a" else self.m2_b
        if m2 is None:
            raise ValueError(f"no stream {which!r} in this accumulator")
        return m2 / (self.n - 1)

    def cross_covariance(self) -> Tensor:
        """Unbiased cross-covariance ``M2_ab / (n - 1)`` of the paired streams."""
        self._require()
        if self.m2_ab is None:
            raise ValueError("cross-covariance needs a paired accumulator")
        return self.m2_ab / (self.n - 1)

    def spectrum(self, which: str = "a") -> Spectrum:
        """Covariance-route :class:`~densefeat.functional.Spectrum` of one stream."""
        mean = self.mean_a if which == "a" else self.mean_b
        return spectrum_from_covariance(self.covariance(which), self.n, mean)

    def compute(self, k: int = 16) -> dict[str, Any]:
        """All metrics: geometry of stream a (and b), plus pair metrics when paired.

        Returns:
            ``geometry`` of stream a at the top level; when paired also ``"b"`` (its geometry)
            and ``subspace_distance``, ``subspace_distance_chance``, ``principal_angles``
            (sample space, top-k, radians, descending), ``linear_cka``, ``subspace_k``.
            The debiased CKA needs per-row norms around the final means: a second pass with
            :class:`CenteredNormAccumulator`.
        """
        out = geometry(self.spectrum("a"))
        if not self.paired:
            return out
        out["b"] = geometry(self.spectrum("b"))
        out.update(self.pair_metrics(k))
        return out

    def pair_metrics(self, k: int = 16) -> dict[str, Any]:
        """Sample-space subspace distance, principal angles and linear CKA of the paired streams."""
        ca, cb, cab = self.covariance("a"), self.covariance("b"), self.cross_covariance()
        cos = sample_space_cosines(ca, cb, cab, self.n, k)
        k_used = cos.numel()
        dist_ = float((1.0 - cos.square().sum() / k_used).clamp_min(0.0).sqrt())
        angles = torch.arccos(cos.flip(0)).tolist()
        return {
            "subspace_distance": dist_,
            "subspace_k": k_used,
            "subspace_distance_chance": chance_subspace_distance(self.n, k_used),
            "principal_angles": angles,
            "linear_cka": linear_cka_from_covariances(ca, cb, cab),
        }


class CenteredNormAccumulator:
    """Second pass for the debiased linear CKA: products of squared row norms around fixed means.

    Accumulates ``sum_i a_i b_i``, ``sum_i a_i^2`` and ``sum_i b_i^2`` with
    ``a_i = ||x_i - mean_a||^2``, ``b_i = ||y_i - mean_b||^2`` (plain float64 sums: the means
    are exact, so there is nothing to merge but addition; across ranks, a SUM all-reduce).
    """

    def __init__(self, mean_a: Tensor, mean_b: Tensor) -> None:
        self.mean_a = torch.as_tensor(mean_a, dtype=_F64)
        self.mean_b = torch.as_tensor(mean_b, dtype=_F64)
        self.sums = torch.zeros(3, dtype=_F64)

    def update(self, a: Any, b: Any) -> CenteredNormAccumulator:
        ra = (_chunk(a, "a") - self.mean_a).square().sum(1)
        rb = (_chunk(b, "b") - self.mean_b).square().sum(1)
        if ra.shape != rb.shape:
            raise ValueError("paired chunks must have the same number of rows")
        self.sums += torch.stack([(ra * rb).sum(), ra.square().sum(), rb.square().sum()])
        return self

    def linear_cka_debiased(self, acc: CovarianceAccumulator) -> float:
        """Debiased linear CKA from the first-pass accumulator and these sums."""
        ab, aa, bb = (float(v) for v in self.sums)
        return linear_cka_debiased_from_stats(
            acc.covariance("a"), acc.covariance("b"), acc.cross_covariance(), acc.n, ab, aa, bb
        )
