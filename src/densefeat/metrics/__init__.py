"""Stateful, streaming metrics over the pure functions of :mod:`densefeat.functional`."""

from .accumulator import CenteredNormAccumulator, CovarianceAccumulator

__all__ = ["CenteredNormAccumulator", "CovarianceAccumulator"]
