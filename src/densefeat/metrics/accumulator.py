"""Streaming covariance statistics: every geometry metric without holding the rows.

State is ``(count, mean, M2)`` in float64, where ``M2 = sum_i (x_i - mean)(x_i - mean)^T``,
merged with the pairwise update of Chan, Golub & LeVeque (1979):

    n = n_1 + n_2,  delta = mean_2 - mean_1,  mean = mean_1 + delta n_2 / n,
    M2 = M2_1 + M2_2 + delta delta^T n_1 n_2 / n.

Unlike raw power sums (sum x, sum x x^T), this loses no precision to a common offset in the
features (at offset 50, raw sums lose ~8 digits). With a second, paired stream the
cross-moment ``M2_ab = sum_i (a_i - mean_a)(b_i - mean_b)^T`` is merged the same way, which is
all that the sample-space subspace distance, principal angles and linear CKA need.

Cost per chunk of r rows: one pass for the chunk's float64 mean, one pass that writes the
centred chunk in float64 (a float32 chunk is widened there, not before), and one BLAS
product ``Xc^T Xc`` (a symmetric rank-r update, ``dsyrk``, with NumPy's BLAS threads),
plus ``Xac^T Xbc`` when paired. Centring with the chunk's own mean keeps the products free of
cancellation whatever the offset. Finiteness is checked on the chunk mean (a NaN or inf in
any row makes it non-finite), so valid chunks cost no separate pass.

The state is NumPy; :meth:`CovarianceAccumulator.compute` is NumPy only (the d x d
eigendecompositions once per stream, on one BLAS thread), so a streaming analysis of NumPy
chunks never imports torch. ``mean_a``, ``m2_a``, ... and :meth:`covariance` return torch
tensors (copies) for callers that want them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..functional.spectrum import Spectrum, geometry, spectrum_from_covariance
from ..functional.subspace import (
    _distance_from_cosines,
    _eigh_desc,
    _sample_space_cosines,
    chance_subspace_distance,
    linear_cka_debiased_from_stats,
    linear_cka_from_covariances,
)

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["CenteredNormAccumulator", "CovarianceAccumulator"]

_F64 = np.float64
_STATE = ("mean_a", "m2_a", "mean_b", "m2_b", "m2_ab")


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.split(".", 1)[0] == "torch"


def _rows(x: Any, name: str) -> Any:
    """A validated chunk: a float32/float64 NumPy matrix, or a tensor on an accelerator.

    NumPy float32/float64 matrices (what ``densefeat.io`` yields) are checked here without
    touching the values. Everything else goes through ``functional.as_matrix`` (which imports
    torch) for its checks and messages; a CPU tensor then continues as a NumPy view.
    """
    if (
        isinstance(x, np.ndarray)
        and x.dtype in (np.float32, np.float64)
        and x.ndim == 2
        and x.shape[0] >= 1
        and x.shape[1] >= 1
    ):
        return x
    from ..functional._validation import as_matrix

    on_cpu = not _is_tensor(x) or x.device.type == "cpu"
    t = as_matrix(x, name, min_rows=1, check_finite=not on_cpu)
    if not on_cpu:
        return t
    t = t.detach()
    if t.dtype not in (_torch_dtype("float32"), _torch_dtype("float64")):
        t = t.float()  # float16 / bfloat16: NumPy has no bfloat16
    return t.numpy()


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def _raise_non_finite(x: np.ndarray, name: str) -> None:
    """The chunk mean is not finite: name the bad rows (or an overflow of finite values)."""
    from ..functional._validation import as_matrix

    as_matrix(x, name, min_rows=1)  # raises "... row(s) contain NaN or inf (first rows ...)"
    raise ValueError(
        f"{name}: float64 sums of this chunk overflow (largest |value| {np.abs(x).max():.3g})"
    )


def _centred(x: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The chunk's float64 mean and the centred chunk in float64 (one new array)."""
    mean = x.mean(axis=0, dtype=_F64)
    if not np.isfinite(mean).all():
        _raise_non_finite(x, name)
    return mean, np.subtract(x, mean, dtype=_F64)


def _chunk_stats(xa: Any, xb: Any | None) -> tuple[int, list[np.ndarray | None]]:
    """``n`` and ``[mean_a, m2_a, mean_b, m2_b, m2_ab]`` (float64 NumPy) of one chunk."""
    if not isinstance(xa, np.ndarray) or (xb is not None and not isinstance(xb, np.ndarray)):
        return _chunk_stats_torch(xa, xb)
    mean_a, ca = _centred(xa, "a")
    m2_a = ca.T @ ca  # NumPy runs X^T X as a symmetric rank-k update (dsyrk)
    if xb is None:
        return xa.shape[0], [mean_a, m2_a, None, None, None]
    mean_b, cb = _centred(xb, "b")
    return xa.shape[0], [mean_a, m2_a, mean_b, cb.T @ cb, ca.T @ cb]


def _chunk_stats_torch(xa: Any, xb: Any | None) -> tuple[int, list[np.ndarray | None]]:
    # A chunk on an accelerator: its d x d statistics are computed there, then copied.
    import torch

    def host(t: Tensor) -> np.ndarray:
        return t.cpu().numpy()

    a = torch.as_tensor(xa).to(torch.float64)
    ma = a.mean(0)
    ca = a - ma
    if xb is None:
        return a.shape[0], [host(ma), host(ca.T @ ca), None, None, None]
    b = torch.as_tensor(xb, device=a.device).to(torch.float64)
    mb = b.mean(0)
    cb = b - mb
    return a.shape[0], [host(ma), host(ca.T @ ca), host(mb), host(cb.T @ cb), host(ca.T @ cb)]


def _as_tensor(x: np.ndarray | None) -> Tensor | None:
    if x is None:
        return None
    import torch

    return torch.from_numpy(x.copy())


class CovarianceAccumulator:
    """Streaming mean and covariance of one stream, or of two paired streams with their cross.

    Example:
        >>> acc = CovarianceAccumulator(paired=True)
        >>> for a, b in chunks:            # row i of a and of b: the same sample
        ...     acc.update(a, b)
        >>> acc.compute(k=16)["subspace_distance"]

    Chunks are NumPy arrays or torch tensors (float32 or float64 are used as they are; other
    float types are widened to float32 first). A chunk on an accelerator has its statistics
    computed there.

    Args:
        paired: whether :meth:`update` takes two paired chunks.
    """

    def __init__(self, paired: bool = False) -> None:
        self.paired = paired
        self.n = 0
        self._state: dict[str, np.ndarray | None] = dict.fromkeys(_STATE)

    # ------------------------------------------------------------------ state (torch views)
    @property
    def mean_a(self) -> Tensor | None:
        """Mean of stream a (float64 tensor, a copy), ``None`` before any row."""
        return _as_tensor(self._state["mean_a"])

    @property
    def m2_a(self) -> Tensor | None:
        """``M2`` of stream a (float64 tensor, a copy)."""
        return _as_tensor(self._state["m2_a"])

    @property
    def mean_b(self) -> Tensor | None:
        """Mean of stream b (float64 tensor, a copy)."""
        return _as_tensor(self._state["mean_b"])

    @property
    def m2_b(self) -> Tensor | None:
        """``M2`` of stream b (float64 tensor, a copy)."""
        return _as_tensor(self._state["m2_b"])

    @property
    def m2_ab(self) -> Tensor | None:
        """Cross-moment ``M2_ab`` of the paired streams (float64 tensor, a copy)."""
        return _as_tensor(self._state["m2_ab"])

    def mean(self, which: str = "a") -> np.ndarray:
        """Mean of stream ``"a"`` or ``"b"`` as a float64 NumPy array (a copy)."""
        self._require(1)
        value = self._state[f"mean_{which}"] if which in ("a", "b") else None
        if value is None:
            raise ValueError(f"no stream {which!r} in this accumulator")
        return value.copy()

    # ------------------------------------------------------------------ updates
    def update(self, a: Any, b: Any | None = None) -> CovarianceAccumulator:
        """Add a chunk of rows (and its paired chunk). Returns ``self``."""
        if self.paired != (b is not None):
            raise ValueError(
                "this accumulator is "
                + ("paired: pass two chunks" if self.paired else "unpaired: pass one chunk")
            )
        xa = _rows(a, "a")
        xb = None
        if b is not None:
            xb = _rows(b, "b")
            if xb.shape[0] != xa.shape[0]:
                raise ValueError(
                    f"paired chunks must have the same number of rows, got {xa.shape[0]} "
                    f"and {xb.shape[0]}"
                )
        self._check_dims(xa.shape[1], None if xb is None else xb.shape[1])
        n2, stats = _chunk_stats(xa, xb)
        self._merge_state(n2, dict(zip(_STATE, stats, strict=True)), owned=True)
        return self

    def _check_dims(self, d_a: int, d_b: int | None) -> None:
        mean_a, mean_b = self._state["mean_a"], self._state["mean_b"]
        if mean_a is None:
            return
        if mean_a.size != d_a or (self.paired and mean_b is not None and mean_b.size != d_b):
            got = d_a if mean_a.size != d_a else d_b
            had = mean_a.size if mean_a.size != d_a else mean_b.size  # type: ignore[union-attr]
            raise ValueError(f"feature dimension changed between chunks: {had} then {got}")

    def merge(self, other: CovarianceAccumulator) -> CovarianceAccumulator:
        """Merge another accumulator's rows into this one (Chan et al.). Returns ``self``."""
        if other.paired != self.paired:
            raise ValueError("cannot merge a paired accumulator with an unpaired one")
        if other.n == 0:
            return self
        self._check_dims(
            other._state["mean_a"].size,  # type: ignore[union-attr]
            None if not self.paired else other._state["mean_b"].size,  # type: ignore[union-attr]
        )
        self._merge_state(other.n, other._state, owned=False)
        return self

    def _merge_state(self, n2: int, st2: dict[str, np.ndarray | None], owned: bool) -> None:
        """Chan's update of ``self`` with ``n2`` rows of state ``st2`` (copied unless owned)."""
        st = self._state
        if self.n == 0:
            for key in _STATE:
                val = st2[key]
                st[key] = val if owned or val is None else val.copy()
            self.n = n2
            return
        n1 = self.n
        n = n1 + n2
        f = n1 * n2 / n
        delta_a = st2["mean_a"] - st["mean_a"]  # type: ignore[operator]
        st["mean_a"] = st["mean_a"] + delta_a * (n2 / n)  # type: ignore[operator]
        m2 = st["m2_a"]
        m2 += st2["m2_a"]  # type: ignore[misc]
        m2 += np.outer(delta_a, delta_a) * f  # type: ignore[misc]
        if self.paired:
            delta_b = st2["mean_b"] - st["mean_b"]  # type: ignore[operator]
            st["mean_b"] = st["mean_b"] + delta_b * (n2 / n)  # type: ignore[operator]
            m2 = st["m2_b"]
            m2 += st2["m2_b"]  # type: ignore[misc]
            m2 += np.outer(delta_b, delta_b) * f  # type: ignore[misc]
            m2 = st["m2_ab"]
            m2 += st2["m2_ab"]  # type: ignore[misc]
            m2 += np.outer(delta_a, delta_b) * f  # type: ignore[misc]
        self.n = n

    def all_reduce(self, group: Any = None) -> CovarianceAccumulator:
        """Merge the states of all ranks of ``torch.distributed`` in place (every rank ends equal).

        The parallel form of Chan's update: the global mean first, then each rank's ``M2`` plus
        ``n_r (mean_r - mean)(mean_r - mean)^T``, summed. Every rank must hold the same
        feature dimensions (a rank with no rows passes zeros of the right shape: call
        :meth:`init_empty` first). The reduced buffers live on the current CUDA device when
        the group's backend is NCCL, on the CPU otherwise.
        """
        import torch
        import torch.distributed as dist

        st = self._state
        if st["mean_a"] is None:
            raise ValueError("all_reduce needs the feature dimension: call init_empty(d) first")
        device = (
            torch.device("cuda", torch.cuda.current_device())
            if dist.get_backend(group) == "nccl"
            else torch.device("cpu")
        )

        def reduce(parts: list[np.ndarray]) -> list[np.ndarray]:
            flat = torch.from_numpy(np.concatenate([p.reshape(-1) for p in parts])).to(device)
            dist.all_reduce(flat, group=group)
            out = flat.cpu().numpy()
            pieces = np.split(out, np.cumsum([p.size for p in parts])[:-1])
            return [q.reshape(p.shape).copy() for p, q in zip(parts, pieces, strict=True)]

        means: list[np.ndarray] = [st["mean_a"]]
        if self.paired:
            means.append(st["mean_b"])  # type: ignore[arg-type]
        first = reduce([np.array([float(self.n)])] + [m * self.n for m in means])
        n = round(float(first[0][0]))
        if n == 0:
            return self
        mean_a = first[1] / n
        da_r = st["mean_a"] - mean_a
        parts = [st["m2_a"] + self.n * np.outer(da_r, da_r)]
        if self.paired:
            mean_b = first[2] / n
            db_r = st["mean_b"] - mean_b
            parts += [
                st["m2_b"] + self.n * np.outer(db_r, db_r),
                st["m2_ab"] + self.n * np.outer(da_r, db_r),
            ]
        pieces = reduce(parts)  # type: ignore[arg-type]
        self.n = n
        st["mean_a"], st["m2_a"] = mean_a, pieces[0]
        if self.paired:
            st["mean_b"], st["m2_b"], st["m2_ab"] = mean_b, pieces[1], pieces[2]
        return self

    def init_empty(self, d_a: int, d_b: int | None = None) -> CovarianceAccumulator:
        """Set zero state of the given dimensions (for a rank that saw no rows)."""
        if self.n == 0:
            st = self._state
            st["mean_a"] = np.zeros(d_a)
            st["m2_a"] = np.zeros((d_a, d_a))
            if self.paired:
                if d_b is None:
                    raise ValueError("a paired accumulator needs d_b")
                st["mean_b"] = np.zeros(d_b)
                st["m2_b"] = np.zeros((d_b, d_b))
                st["m2_ab"] = np.zeros((d_a, d_b))
        return self

    # ------------------------------------------------------------------ results
    def _require(self, min_rows: int = 2) -> None:
        if self.n < min_rows:
            raise ValueError(f"need at least {min_rows} rows, the accumulator has n={self.n}")

    def _cov(self, which: str) -> np.ndarray:
        self._require()
        m2 = self._state.get(f"m2_{which}")
        if m2 is None:
            raise ValueError(f"no stream {which!r} in this accumulator")
        return m2 / (self.n - 1)

    def _cross(self) -> np.ndarray:
        self._require()
        if self._state["m2_ab"] is None:
            raise ValueError("cross-covariance needs a paired accumulator")
        return self._state["m2_ab"] / (self.n - 1)

    def covariance(self, which: str = "a") -> Tensor:
        """Unbiased covariance ``M2 / (n - 1)`` of stream ``"a"`` or ``"b"`` (float64 tensor)."""
        return _as_tensor(self._cov(which))  # type: ignore[return-value]

    def cross_covariance(self) -> Tensor:
        """Unbiased cross-covariance ``M2_ab / (n - 1)`` of the paired streams (float64)."""
        return _as_tensor(self._cross())  # type: ignore[return-value]

    def spectrum(self, which: str = "a") -> Spectrum:
        """Covariance-route :class:`~densefeat.functional.Spectrum` of one stream."""
        return spectrum_from_covariance(self._cov(which), self.n, self._state[f"mean_{which}"])

    def compute(self, k: int = 16) -> dict[str, Any]:
        """All metrics: geometry of stream a (and b), plus pair metrics when paired.

        Each covariance is decomposed once and its eigenvalues shared by every metric (plus
        one ``eigvalsh`` of the uncentred second moment per stream, for RankMe). NumPy only.

        Returns:
            ``geometry`` of stream a at the top level; when paired also ``"b"`` (its geometry)
            and ``subspace_distance``, ``subspace_distance_chance``, ``principal_angles``
            (sample space, top-k, radians, descending), ``linear_cka``, ``subspace_k``.
            The debiased CKA needs per-row norms around the final means: a second pass with
            :class:`CenteredNormAccumulator` (:meth:`CenteredNormAccumulator.for_accumulator`).
        """
        if not self.paired:
            return geometry(self.spectrum("a"))
        ca, cb = self._cov("a"), self._cov("b")
        eigh_a, eigh_b = _eigh_desc(ca), _eigh_desc(cb)
        out = geometry(
            spectrum_from_covariance(ca, self.n, self._state["mean_a"], eigenvalues=eigh_a[0])
        )
        out["b"] = geometry(
            spectrum_from_covariance(cb, self.n, self._state["mean_b"], eigenvalues=eigh_b[0])
        )
        out.update(self._pair_metrics(k, ca, cb, eigh_a, eigh_b))
        return out

    def pair_metrics(self, k: int = 16) -> dict[str, Any]:
        """Sample-space subspace distance, principal angles and linear CKA of the paired streams.

        ``principal_angles`` are ``arccos`` of the sample-space cosines: from d x d statistics
        an angle below ~1e-8 rad is not resolved (``cos theta = 1 - theta^2 / 2`` in float64).
        """
        ca, cb = self._cov("a"), self._cov("b")
        return self._pair_metrics(k, ca, cb, _eigh_desc(ca), _eigh_desc(cb))

    def _pair_metrics(
        self,
        k: int,
        ca: np.ndarray,
        cb: np.ndarray,
        eigh_a: tuple[np.ndarray, np.ndarray],
        eigh_b: tuple[np.ndarray, np.ndarray],
    ) -> dict[str, Any]:
        cab = self._cross()
        cos = _sample_space_cosines(ca, cb, cab, self.n, k, eigh_a, eigh_b, stacklevel=4)
        k_used = cos.size
        return {
            "subspace_distance": _distance_from_cosines(cos),
            "subspace_k": k_used,
            "subspace_distance_chance": chance_subspace_distance(self.n, k_used),
            "principal_angles": np.arccos(cos[::-1]).tolist(),
            "linear_cka": linear_cka_from_covariances(ca, cb, cab),
        }


class CenteredNormAccumulator:
    """Second pass for the debiased linear CKA: products of squared row norms around fixed means.

    Accumulates ``sum_i a_i b_i``, ``sum_i a_i^2`` and ``sum_i b_i^2`` with
    ``a_i = ||x_i - mean_a||^2``, ``b_i = ||y_i - mean_b||^2`` (plain float64 sums: the means
    are exact, so there is nothing to merge but addition; across ranks, a SUM all-reduce).
    """

    def __init__(self, mean_a: Any, mean_b: Any) -> None:
        from ..functional.spectrum import _as_vector64

        self._mean_a = _as_vector64(mean_a).reshape(-1)
        self._mean_b = _as_vector64(mean_b).reshape(-1)
        self._sums = np.zeros(3)

    @classmethod
    def for_accumulator(cls, acc: CovarianceAccumulator) -> CenteredNormAccumulator:
        """The second pass around the final means of a paired first-pass accumulator."""
        return cls(acc.mean("a"), acc.mean("b"))

    @property
    def mean_a(self) -> Tensor:
        return _as_tensor(self._mean_a)  # type: ignore[return-value]

    @property
    def mean_b(self) -> Tensor:
        return _as_tensor(self._mean_b)  # type: ignore[return-value]

    @property
    def sums(self) -> Tensor:
        """``[sum a_i b_i, sum a_i^2, sum b_i^2]`` (float64 tensor, a copy)."""
        return _as_tensor(self._sums)  # type: ignore[return-value]

    def update(self, a: Any, b: Any) -> CenteredNormAccumulator:
        xa, xb = _rows(a, "a"), _rows(b, "b")
        if xa.shape[0] != xb.shape[0]:
            raise ValueError("paired chunks must have the same number of rows")
        ra, rb = self._norms(xa, self._mean_a, "a"), self._norms(xb, self._mean_b, "b")
        self._sums += np.array([ra @ rb, ra @ ra, rb @ rb])
        return self

    @staticmethod
    def _norms(x: Any, mean: np.ndarray, name: str) -> np.ndarray:
        if not isinstance(x, np.ndarray):  # an accelerator tensor: reduce there
            import torch

            t = x.to(torch.float64) - torch.from_numpy(mean).to(x.device)
            return t.square().sum(1).cpu().numpy()
        c = np.subtract(x, mean, dtype=_F64)
        r = np.einsum("ij,ij->i", c, c)
        if not np.isfinite(r).all():
            _raise_non_finite(x, name)
        return r

    def linear_cka_debiased(self, acc: CovarianceAccumulator) -> float:
        """Debiased linear CKA from the first-pass accumulator and these sums."""
        ab, aa, bb = (float(v) for v in self._sums)
        return linear_cka_debiased_from_stats(
            acc._cov("a"), acc._cov("b"), acc._cross(), acc.n, ab, aa, bb
        )
