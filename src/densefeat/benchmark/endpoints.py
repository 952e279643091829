"""The robustness endpoint in its primary form: AUROC under perturbation (docs/design.md §7).

The drop (clean − perturbed AUROC) lets a weak method win by having little to lose, so the
primary robustness endpoint is the AUROC under perturbation itself (macro over tasks,
perturbations and levels), compared dense − best baseline with the same shared patient-level
resamples and seed redraw as the probe AUROC (:func:`densefeat.benchmark.summary.compare`);
the drop stays beside it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from ..eval.bootstrap import weighted_auroc
from .rows import Task

__all__ = ["macro_perturbed_auroc", "resampled_perturbed_auroc"]


def macro_perturbed_auroc(robustness: list[dict]) -> dict[tuple[str, int], float]:
    """(method, seed) -> mean AUROC under perturbation over tasks, perturbations and levels."""
    out: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in robustness:
        if r.get("auroc") is not None:
            out[(r["method"], r["seed"])].append(float(r["auroc"]))
    return {key: float(np.mean(v)) for key, v in out.items()}


def resampled_perturbed_auroc(
    arrays: dict[tuple[str, int], dict[str, np.ndarray]],
    tasks: list[Task],
    shared: dict[str, tuple[np.ndarray, np.ndarray]],
    perturbations: Sequence[tuple[str, float]],
    seed: int = 54322,
) -> Callable[[str], np.ndarray | None]:
    """Per method: the seed-averaged macro AUROC under perturbation on each shared resample
    (seeds redrawn with replacement on each resample, as for the probe AUROC)."""
    rng = np.random.default_rng(seed)

    def resampled(method: str) -> np.ndarray | None:
        per_seed = []
        for (m, _), arr in arrays.items():
            if m != method or not any(k.startswith("robust/") for k in arr):
                continue
            values = [
                weighted_auroc(arr[f"robust/{p}/{level}/{t.name}"], *shared[t.name])
                for t in tasks
                for p, level in perturbations
                if f"robust/{p}/{level}/{t.name}" in arr
            ]
            if values:
                per_seed.append(np.mean(values, axis=0))
        if not per_seed:
            return None
        stack = np.stack(per_seed)
        pick = rng.integers(0, stack.shape[0], size=stack.shape)
        return np.take_along_axis(stack, pick, axis=0).mean(axis=0)

    return resampled
