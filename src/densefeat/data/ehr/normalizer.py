"""Per-code robust normalisation of numeric values, fitted on the training split only."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from ..meds import lazy_events

#: IQR of a normal distribution in units of its standard deviation.
_IQR_PER_SIGMA = 1.3489795


class NumericNormalizer:
    """Per-code robust standardisation of ``numeric_value``, fitted on the training split.

    ``z = clip((x - median) / scale, -clip, clip)`` with ``scale = IQR / 1.349`` (the IQR of a
    normal distribution is 1.349 sigma, so ``z`` is a z-score for normal data). Robust on
    purpose: lab columns of real hospitals carry sentinel values (99999) and unit mix-ups that
    would dominate a mean/std. Where the IQR is 0 (a code with mostly one value) the standard
    deviation is used instead, and where that is 0 too the scale is 1 (centring only). The clip
    (default 10) bounds what a unit error at another hospital can do to a model.

    Codes with fewer than ``min_values`` finite training values have no statistics: their values
    are not normalised and, because a raw value on an arbitrary scale (e.g. platelets 250000)
    would swamp a model, they are dropped (``has_value`` False, value 0; the event itself stays)
    unless ``unfitted="raw"``, which passes them through unchanged. Non-finite values are always
    dropped.

    Args:
        min_values: least number of finite training values for a code to get statistics.
        clip: bound on ``|z|``; None for no clipping.
        unfitted: ``"drop"`` or ``"raw"``, what to do with values of codes without statistics.
    """

    def __init__(self, min_values: int = 10, clip: float | None = 10.0, unfitted: str = "drop"):
        if unfitted not in ("drop", "raw"):
            raise ValueError(f"unfitted must be 'drop' or 'raw', got {unfitted!r}")
        self.min_values = int(min_values)
        self.clip = clip
        self.unfitted = unfitted
        self.codes_: tuple[str, ...] | None = None
        self.center_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.count_: np.ndarray | None = None

    def fit(self, events: pl.DataFrame | pl.LazyFrame) -> NumericNormalizer:
        """Learn per-code statistics from **training** events only.

        Returns:
            self.
        """
        x = pl.col("numeric_value").cast(pl.Float64)
        stats = (
            lazy_events(events)
            .filter(pl.col("numeric_value").is_not_null() & pl.col("numeric_value").is_finite())
            .group_by("code")
            .agg(
                n=pl.len(),
                median=x.median(),
                iqr=x.quantile(0.75, "linear") - x.quantile(0.25, "linear"),
                std=x.std(),
            )
            .filter(pl.col("n") >= self.min_values)
            .sort("code")
            .collect()
        )
        iqr_scale = stats["iqr"].to_numpy() / _IQR_PER_SIGMA
        std = np.nan_to_num(stats["std"].to_numpy(), nan=0.0)
        scale = np.where(iqr_scale > 0, iqr_scale, np.where(std > 0, std, 1.0))
        self.codes_ = tuple(stats["code"].to_list())
        self.center_ = stats["median"].to_numpy().astype(np.float64)
        self.scale_ = scale.astype(np.float64)
        self.count_ = stats["n"].to_numpy().astype(np.int64)
        return self

    def _check_fitted(self) -> None:
        if self.codes_ is None:
            raise RuntimeError("NumericNormalizer is not fitted: call fit() or from_dict() first")

    def stats_table(self) -> pl.DataFrame:
        """``code``, ``center`` Float64, ``scale`` Float64 of the codes with statistics."""
        self._check_fitted()
        return pl.DataFrame(
            {
                "code": pl.Series(self.codes_, dtype=pl.Utf8),
                "center": pl.Series(self.center_, dtype=pl.Float64),
                "scale": pl.Series(self.scale_, dtype=pl.Float64),
            }
        )

    def normalize_expr(self, value: pl.Expr, center: pl.Expr, scale: pl.Expr) -> pl.Expr:
        """Normalised value (null where dropped) from joined ``center``/``scale`` columns."""
        z = (value.cast(pl.Float64) - center) / scale
        if self.clip is not None:
            z = z.clip(-self.clip, self.clip)
        fallback = value.cast(pl.Float64) if self.unfitted == "raw" else pl.lit(None, pl.Float64)
        out = pl.when(center.is_not_null()).then(z).otherwise(fallback)
        # Non-finite inputs (inf, nan) never reach a model.
        return pl.when(out.is_finite()).then(out).otherwise(None).cast(pl.Float32)

    def transform(self, codes: Sequence[str], values: Sequence[float | None]) -> np.ndarray:
        """Normalised values (NaN where dropped), float32; for inspection and tests."""
        frame = pl.DataFrame(
            {"code": pl.Series(codes, dtype=pl.Utf8), "v": pl.Series(values, dtype=pl.Float64)}
        ).join(self.stats_table(), on="code", how="left", maintain_order="left")
        out = frame.select(
            self.normalize_expr(pl.col("v"), pl.col("center"), pl.col("scale")).fill_null(
                float("nan")
            )
        )
        return out.to_series().to_numpy()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict for checkpoints (floats round-trip exactly through JSON)."""
        self._check_fitted()
        return {
            "kind": "densefeat.NumericNormalizer",
            "version": 1,
            "method": "median/IQR",
            "min_values": self.min_values,
            "clip": self.clip,
            "unfitted": self.unfitted,
            "codes": list(self.codes_),
            "center": [float(c) for c in self.center_],
            "scale": [float(s) for s in self.scale_],
            "count": [int(n) for n in self.count_],
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> NumericNormalizer:
        """Inverse of :meth:`to_dict`."""
        if state.get("kind") != "densefeat.NumericNormalizer":
            raise ValueError(
                f"not a densefeat NumericNormalizer state (kind={state.get('kind')!r})"
            )
        norm = cls(state["min_values"], state["clip"], state["unfitted"])
        norm.codes_ = tuple(str(c) for c in state["codes"])
        norm.center_ = np.asarray(state["center"], dtype=np.float64)
        norm.scale_ = np.asarray(state["scale"], dtype=np.float64)
        norm.count_ = np.asarray(state["count"], dtype=np.int64)
        return norm

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> NumericNormalizer:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))
