"""Geometry records of the benchmark: measured spectra beside the isotropic reference."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..functional import geometry, isotropic_reference

__all__ = ["geometry_record", "one_thread", "reference_record", "training_curve"]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run small dense linear algebra (d x d eigendecompositions, SVDs of a few hundred rows)
    on one torch thread.

    Measured on the shared 2-core machine under load: ``torch.linalg.eigh`` of a 128 x 128
    matrix took 0.90 s with 2 intra-op threads and 1.2 ms with 1 (the threads spin-wait on cores
    that other processes hold). The geometry, drift and alignment metrics are all such small
    problems; the encoders keep the default thread count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _finite_or_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def geometry_record(z: np.ndarray) -> dict[str, Any]:
    """The metrics of ``z`` that the results keep (docs/design.md names), JSON-safe."""
    with one_thread():
        g = geometry(z)
    eig = np.asarray(g["eigenvalues"], dtype=np.float64)
    total = eig.sum()
    return {
        "n": int(g["n"]),
        "d": int(g["d"]),
        "effective_rank": float(g["effective_rank"]),
        "effective_rank_eig": float(g["effective_rank_eig"]),
        "rankme": float(g["rankme"]),
        "condition_number": _finite_or_none(g["condition_number"]),
        "condition_number_reason": g["condition_number_reason"],
        "condition_number_k": _finite_or_none(g["condition_number_k"]),
        "k": int(g["condition_number_k_at"]),
        # Normalised (sum 1) so spectra of different scales and the reference overlay.
        "eigenvalues": (eig / total if total > 0 else eig).tolist(),
    }


def reference_record(n: int, d: int, k: int) -> dict[str, Any]:
    """The isotropic Gaussian reference of shape (n, d) (chance distance at ``k``)."""
    with one_thread():
        ref = isotropic_reference(n, d, k=k)
    return {
        "n": n,
        "d": d,
        "effective_rank": float(ref["effective_rank"]),
        "effective_rank_eig": float(ref["effective_rank_eig"]),
        "condition_number": float(ref["condition_number"]),
        "condition_number_k": float(ref["condition_number_k"]),
        "eigenvalues": [float(x) for x in ref["eigenvalues"]],
    }


#: Monitoring keys of the subspace-consistency term and its shuffled control (train/monitor.py).
CONSISTENCY_KEYS = ("subspace_consistency", "subspace_consistency_shuffled")


def training_curve(run_dir: Path) -> dict[str, Any]:
    """Steps, loss and the monitoring batch's effective rank (and its row count ``n``) from a
    run's ``stats.jsonl``; with window pairs, also the monitored subspace-consistency term and
    its row-shuffled control (``None`` at steps that lack them)."""
    steps, ranks, losses, n = [], [], [], None
    pairing: dict[str, list[float | None]] = {k: [] for k in CONSISTENCY_KEYS}
    path = Path(run_dir) / "stats.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            mon = rec.get("monitor")
            if mon and "effective_rank" in mon:
                steps.append(int(rec["step"]))
                n = mon.get("n", n)
                ranks.append(float(mon["effective_rank"]))
                loss = rec.get("loss")
                losses.append(None if loss is None else float(loss))
                for k, values in pairing.items():
                    values.append(None if mon.get(k) is None else float(mon[k]))
    out: dict[str, Any] = {"step": steps, "effective_rank": ranks, "loss": losses, "n": n}
    # Only runs that logged the term carry its lists (text runs have no window pairs).
    out.update({k: v for k, v in pairing.items() if any(x is not None for x in v)})
    return out
