"""Best-baseline selection on the tuning split, and the dense-vs-untrained comparison.

Fixtures are hand-built probe records and bootstrap arrays, so every expected number is
computed here independently of :mod:`densefeat.benchmark.summary`.
"""

from __future__ import annotations

import numpy as np
import pytest

from densefeat.benchmark.summary import (
    best_baseline,
    compare,
    compare_pair,
    macro_auroc,
    macro_tuning_auroc,
)
from densefeat.report.prose import endpoint_sentences


def _probe(method: str, seed: int, task: str, held: float, tuning: float) -> dict:
    return {
        "method": method,
        "seed": seed,
        "task": task,
        "k": "all",
        "embedding": "raw",
        "auroc": held,
        "val_auroc": tuning,
    }


# Tuning and held-out rankings disagree: vicreg is best on held-out rows, simclr on tuning.
PROBES = [
    *(_probe("dense", s, t, 0.70, 0.72) for s in (0, 1) for t in ("a", "b")),
    *(_probe("vicreg", s, t, 0.75, 0.60) for s in (0, 1) for t in ("a", "b")),
    *(_probe("simclr", s, t, 0.65, 0.80) for s in (0, 1) for t in ("a", "b")),
    *(_probe("random", s, t, 0.60, 0.90) for s in (0, 1) for t in ("a", "b")),
    # ... and a whitened or k-shot record never counts.
    {**_probe("vicreg", 0, "a", 0.99, 0.99), "embedding": "whitened"},
    {**_probe("vicreg", 0, "a", 0.99, 0.99), "k": 8},
]
NAMES = ["dense", "simclr", "vicreg", "random"]


def _resampled(values: dict[str, np.ndarray]):
    return lambda m: values.get(m)


def test_best_baseline_is_chosen_on_tuning_scores_not_held_out() -> None:
    tuning = macro_tuning_auroc(PROBES)
    held = macro_auroc(PROBES)
    assert tuning[("simclr", 0)] == pytest.approx(0.80)
    # The untrained encoder is a control, never "the best baseline", even with the top score.
    assert best_baseline(tuning, NAMES) == "simclr"
    boot = {m: np.full(10, held[(m, 0)]) for m in ("dense", "simclr", "vicreg")}
    cmp = compare(held, _resampled(boot), NAMES, select_by=tuning)
    assert cmp["best_baseline"] == "simclr"
    assert cmp["selected_on"] == "tuning_auroc"
    assert cmp["best_baseline_value"] == pytest.approx(0.65)  # its HELD-OUT value
    assert cmp["difference"] == pytest.approx(0.70 - 0.65)
    # The old rule (held-out means) would have picked vicreg: the fixture tells them apart.
    old = compare(held, _resampled(boot), NAMES)
    assert old["best_baseline"] == "vicreg" and old["selected_on"] == "held_out"


def test_selection_ignores_held_out_labels() -> None:
    """Scrambling every held-out score leaves the chosen baseline unchanged."""
    rng = np.random.default_rng(0)
    scrambled = [{**p, "auroc": float(rng.uniform())} for p in PROBES]
    held = macro_auroc(scrambled)
    tuning = macro_tuning_auroc(scrambled)
    cmp = compare(held, lambda m: None, NAMES, select_by=tuning)
    assert cmp["best_baseline"] == "simclr"
    assert cmp["difference_ci"] is None


def test_untrained_comparison_equals_a_hand_computed_paired_difference() -> None:
    values = {("dense", 0): 0.71, ("dense", 1): 0.69, ("random", 0): 0.62, ("random", 1): 0.64}
    rng = np.random.default_rng(3)
    ra = 0.70 + 0.02 * rng.standard_normal(200)
    rb = ra - 0.07 + 0.01 * rng.standard_normal(200)  # paired: shares ra's resample noise
    rb[5] = np.nan  # a resample without both classes is dropped, not propagated
    out = compare_pair(values, _resampled({"dense": ra, "random": rb}), "dense", "random")
    d = ra - rb
    d = d[np.isfinite(d)]
    assert d.size == 199
    assert out["difference"] == pytest.approx(0.70 - 0.63)
    assert out["difference_ci"] == pytest.approx([np.percentile(d, 2.5), np.percentile(d, 97.5)])
    assert out["significant"] and out["a_wins"]
    # Unpaired resamples would give a far wider interval: the pairing is what is tested.
    unpaired = ra - rng.permutation(np.nan_to_num(rb, nan=0.63))
    assert np.ptp(np.percentile(unpaired, [2.5, 97.5])) > 2 * np.ptp(out["difference_ci"])
    assert compare_pair(values, _resampled({}), "dense", "simclr") is None


def test_report_states_selection_and_untrained_comparison() -> None:
    cmp = {
        "dense": 0.7,
        "best_baseline": "simclr",
        "best_baseline_value": 0.65,
        "difference": 0.05,
        "difference_ci": [0.01, 0.09],
        "dense_wins": True,
        "significant": True,
        "lower_is_better": False,
        "selected_on": "tuning_auroc",
        "untrained": {"difference": 0.08, "difference_ci": [-0.01, 0.15]},
        "robustness": None,
    }
    text = " ".join(endpoint_sentences({"comparison": cmp, "scale": "full", "probes": PROBES}))
    assert "chosen on the tuning split" in text
    assert "not distinguishable from the untrained encoder" in text


def test_report_names_collapsed_methods() -> None:
    cmp = {"robustness": None}
    table = [{"method": "vicreg", "collapsed": True}, {"method": "dense", "collapsed": False}]
    results = {"comparison": cmp, "scale": "full", "table": table, "tuning": {"methods": {"a": 1}}}
    text = " ".join(endpoint_sentences(results))
    assert "Collapsed (after tuning): vicreg " in text and "dense" not in text.split("Collapsed")[1]


def test_hybrid_ablation_compares_the_hybrid_with_each_part() -> None:
    from densefeat.benchmark.summary import hybrid_ablation

    values = {("masked+dense", 0): 0.70, ("masked", 0): 0.66, ("dense", 0): 0.71}
    rng = np.random.default_rng(5)
    base = 0.7 + 0.02 * rng.standard_normal(300)
    arrays = {"masked+dense": base, "masked": base - 0.04, "dense": base + 0.01}
    rows = hybrid_ablation(values, _resampled(arrays))
    assert [(r["a"], r["b"]) for r in rows] == [
        ("masked+dense", "masked"),
        ("masked+dense", "dense"),
        ("dense", "masked"),
    ]
    assert [r["difference"] for r in rows] == pytest.approx([0.04, -0.01, 0.05])
    # Resamples that differ by a constant give a point interval at that constant.
    assert rows[0]["difference_ci"] == pytest.approx([0.04, 0.04])
    assert rows[0]["significant"] and not rows[1]["a_wins"]
    # Without the hybrid: nothing; without dense: only the pair that ran.
    assert hybrid_ablation({("masked", 0): 0.6, ("dense", 0): 0.7}, _resampled(arrays)) == []
    only = hybrid_ablation({("masked+dense", 0): 0.7, ("masked", 0): 0.6}, _resampled(arrays))
    assert [(r["a"], r["b"]) for r in only] == [("masked+dense", "masked")]
    # The report says each difference with its interval.
    from densefeat.report.prose import _hybrid_ablation

    (sentence,) = _hybrid_ablation({"hybrid": rows})
    assert "masked+dense − masked +0.040 [0.040, 0.040]" in sentence
    assert "masked+dense − dense -0.010" in sentence and "dense − masked +0.050" in sentence
    assert _hybrid_ablation({}) == [] and _hybrid_ablation({"hybrid": []}) == []
