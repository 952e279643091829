"""Label efficiency: dense against the untrained encoder on k-shot probe AUROC, per k.

An exploratory comparison beside the declared endpoints (docs/design.md, Evaluation): the
difference per (seed, task) cell and a Student-t interval over the cells, checked here against
a plain SciPy computation on a fixture where pairing by seed matters.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from densefeat.benchmark.summary import kshot_differences
from densefeat.report.prose import _label_efficiency


def _probes() -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for method, shift in (("dense", 0.03), ("random", 0.0)):
        for seed in (0, 1, 2):
            for task in ("a", "b"):
                for k in (4, 16, "all"):
                    auroc = 0.7 + shift + 0.02 * seed + 0.01 * rng.normal()
                    out.append(
                        {
                            "method": method,
                            "seed": seed,
                            "task": task,
                            "k": k,
                            "embedding": "raw",
                            "auroc": auroc,
                        }
                    )
                    # another embedding and a missing value: both must be ignored
                    out.append({**out[-1], "embedding": "whitened", "auroc": 0.1})
    out.append(
        {"method": "dense", "seed": 3, "task": "a", "k": 4, "embedding": "raw", "auroc": 0.99}
    )  # a seed random lacks: no cell
    out.append(
        {"method": "random", "seed": 0, "task": "a", "k": 16, "embedding": "raw", "auroc": None}
    )
    return out


def test_kshot_differences_equal_a_scipy_t_interval_over_paired_cells() -> None:
    probes = _probes()
    got = kshot_differences(probes, "dense", "random")
    assert [r["k"] for r in got] == [4, 16]  # "all" is not a k-shot row
    raw = {
        (p["method"], p["seed"], p["task"], p["k"]): p["auroc"]
        for p in probes
        if p["embedding"] == "raw" and p["auroc"] is not None
    }
    for rec in got:
        k = rec["k"]
        cells = [(s, t) for s in (0, 1, 2) for t in ("a", "b")]
        diffs = np.array([raw[("dense", s, t, k)] - raw[("random", s, t, k)] for s, t in cells])
        lo, hi = stats.t.interval(0.95, len(diffs) - 1, loc=diffs.mean(), scale=stats.sem(diffs))
        assert rec["n_cells"] == len(diffs)
        assert rec["difference"] == pytest.approx(diffs.mean(), abs=1e-12)
        assert rec["difference_ci"] == pytest.approx([lo, hi], abs=1e-12)
        assert rec["positive_cells"] == int((diffs > 0).sum())
    assert got[0]["n_cells"] == got[1]["n_cells"] == 6  # seed 3 and task "c" make no cell


def test_label_efficiency_sentence_states_where_the_interval_excludes_zero() -> None:
    rows = [
        {"k": 4, "difference": 0.01, "difference_ci": [-0.01, 0.03]},
        {"k": 16, "difference": 0.02, "difference_ci": [0.005, 0.035]},
        {"k": 64, "difference": -0.02, "difference_ci": [-0.03, -0.01]},
    ]
    (text,) = _label_efficiency({"label_efficiency": rows})
    assert "Exploratory, not a declared endpoint" in text
    assert "above 0 at k = 16" in text and "below 0 at k = 64" in text
    assert _label_efficiency({"label_efficiency": []}) == []
    assert _label_efficiency({}) == []
