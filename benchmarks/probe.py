"""Vectorised patient-level bootstrap against a per-resample scikit-learn loop.

For each n (default 2,000 and 20,000 rows; about 2.5 rows per subject, 20% positives, scores
rounded to 3 decimals so that ties occur), both compute AUROC and AUPRC on the same B
patient-level resamples (default 1,000):

* ``vectorised``: :func:`densefeat.eval.bootstrap.bootstrap_metrics` (draws included);
* ``sklearn loop``: the weights of the same resamples from
  :func:`densefeat.eval.bootstrap.resample_weights`, then one
  ``roc_auc_score(..., sample_weight=w)`` and one ``average_precision_score(...,
  sample_weight=w)`` per resample, as EHRSHOT's evaluation does it (Wornow et al. 2023).

Printed per n: the seconds of each, the speed ratio, the largest absolute difference of the
per-resample values (must be <= 1e-10) and both 95% percentile CIs. Exit status 1 if they
disagree.

Usage::

    python benchmarks/probe.py
    python benchmarks/probe.py --sizes 2000 20000 200000 --resamples 1000 --loop-resamples 200
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from densefeat.eval.bootstrap import bootstrap_metrics, resample_weights

TOLERANCE = 1e-10


def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores, labels and subject ids: ~2.5 rows per subject, 20% positives, tied scores."""
    rng = np.random.default_rng(seed)
    groups = np.sort(rng.integers(0, max(1, int(n / 2.5)), n))
    subject_effect = rng.normal(size=groups.max() + 1)[groups]
    y = rng.random(n) < 0.2
    scores = np.round(0.8 * y + 0.5 * subject_effect + rng.normal(size=n), 3)
    return scores, y, groups


def sklearn_loop(
    scores: np.ndarray, y: np.ndarray, groups: np.ndarray, n_resamples: int, seed: int
) -> dict[str, np.ndarray]:
    auroc, auprc = [], []
    for chunk in resample_weights(groups, n_resamples, seed=seed):
        for w in chunk:
            if w[y].sum() == 0 or w[~y].sum() == 0:
                auroc.append(np.nan)
                auprc.append(np.nan)
                continue
            auroc.append(roc_auc_score(y, scores, sample_weight=w))
            auprc.append(average_precision_score(y, scores, sample_weight=w))
    return {"auroc": np.array(auroc), "auprc": np.array(auprc)}


def ci(values: np.ndarray) -> str:
    lo, hi = np.percentile(values[np.isfinite(values)], [2.5, 97.5])
    return f"[{lo:.4f}, {hi:.4f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument(
        "--loop-resamples",
        type=int,
        default=None,
        help="resamples for the sklearn loop (default: --resamples); the vectorised values "
        "are compared on the first this many",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    loop_b = args.loop_resamples or args.resamples
    ok = True
    print(f"B = {args.resamples} patient-level resamples (sklearn loop: {loop_b})")
    header = (
        f"{'n':>8} {'subjects':>9} {'vectorised s':>13} {'sklearn loop s':>15} "
        f"{'ratio':>7} {'max |diff|':>11}  AUROC CI (vec / loop)"
    )
    print(header)
    for n in args.sizes:
        scores, y, groups = make_data(n, args.seed)
        t = time.perf_counter()
        vec = bootstrap_metrics(scores, y, groups, args.resamples, seed=args.seed)
        t_vec = time.perf_counter() - t
        t = time.perf_counter()
        ref = sklearn_loop(scores, y, groups, loop_b, args.seed)
        t_loop = time.perf_counter() - t
        # per resample, so the ratio holds when the loop ran fewer resamples
        ratio = (t_loop / loop_b) / (t_vec / args.resamples)
        diff = max(float(np.nanmax(np.abs(vec[m][:loop_b] - ref[m]))) for m in ("auroc", "auprc"))
        same_nan = all(np.array_equal(np.isnan(vec[m][:loop_b]), np.isnan(ref[m])) for m in vec)
        agree = diff <= TOLERANCE and same_nan
        ok &= agree
        print(
            f"{n:>8} {np.unique(groups).size:>9} {t_vec:>13.3f} {t_loop:>15.3f} "
            f"{ratio:>6.0f}x {diff:>11.1e}  {ci(vec['auroc'])} / {ci(ref['auroc'])}"
            + ("" if agree else "  DISAGREE")
        )
        print(f"{'':>8} AUPRC CI (vec / loop): {ci(vec['auprc'])} / {ci(ref['auprc'])}")
    print("agree within 1e-10: " + ("yes" if ok else "NO"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
