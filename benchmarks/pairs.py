"""What EHR pairs teach: windows at several gaps vs two views of one window vs mixed.

Equal budget for every arm (steps x batch; views cost two encoder passes per pair instead of
one), one seed, the default dataset (Eunomia GiBleed) unless ``--data``; every arm is scored
by the tuning split's macro probe AUROC (:func:`densefeat.benchmark.tuning.tuning_score`,
held-out rows never embedded), plus the count-features baseline's tuning AUROC. This is how
``data.pairs``'s default was chosen (docs/design.md, Objectives).

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/pairs.py --out /tmp/pairs
    python benchmarks/pairs.py --steps 150 --arms dense:windows:365 dense:views:365
    python benchmarks/pairs.py --data setA --max-eval-times 2000 --arms dense:future:0.5 \\
        dense:windows:0.5 dense:views:0.5 random:windows:0.5           # ICU, 12-hour windows

An arm is ``method:pairs:window_days``. Runs are reused/resumed (benchmark run rules), so an
interrupted measurement continues. Prints one line per arm and writes ``OUT/pairs.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from densefeat.benchmark.config import BenchmarkConfig, RunSpec
from densefeat.benchmark.runs import ensure_run
from densefeat.benchmark.sources.ehr import EHRSource
from densefeat.benchmark.tuning import tuning_score
from densefeat.train.config import parse_overrides

DEFAULT_ARMS = (
    "dense:windows:365",
    "dense:windows:182",
    "dense:views:365",
    "dense:mixed:365",
    "vicreg:windows:365",
    "vicreg:views:365",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="MEDS dataset (default: Eunomia)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS))
    ap.add_argument("--no-counts", action="store_true", help="skip the count-features baseline")
    ap.add_argument(
        "--max-eval-times",
        type=int,
        default=BenchmarkConfig.max_eval_times,
        help="cap on the evaluation prediction times (as densefeat benchmark's option)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training setting for every arm (repeatable), e.g. dense.momentum=0.9",
    )
    args = ap.parse_args()
    if args.data is None:
        from densefeat.data.convert.eunomia import eunomia_meds

        args.data = eunomia_meds()
    bench = BenchmarkConfig(
        methods=("dense",),
        ablations=(),
        seeds=1,
        budget=args.steps,
        train={"data.max_len": args.max_len, **parse_overrides(args.set)},
        perturbations=(),
        trials=1,
        device="cpu",
        max_eval_times=args.max_eval_times,
    )
    source = EHRSource(args.data, args.out, bench, None, print, torch.device("cpu"))
    results = []
    if not args.no_counts:
        from densefeat.benchmark.summary import macro_tuning_auroc

        base = [1, source.content, source.rows_fingerprint()]
        (name, res), *_ = source.baselines(base)
        val = macro_tuning_auroc(res.records["probes"])[(name, 0)]
        results.append({"arm": name, "tuning_auroc_macro": val})
        print(f"{name}: tuning macro AUROC {val:.4f}", flush=True)
    for arm in args.arms:
        method, pairs, days = arm.split(":")
        overrides = {"data.pairs": pairs, "data.window_days": float(days)}
        spec = RunSpec(arm.replace(":", "-"), method, args.seed, tuple(sorted(overrides.items())))
        t0 = time.perf_counter()
        run_dir, what = ensure_run(
            spec, bench, source.data, args.out / "runs", None, identity=source.run_identity(spec)
        )
        score = tuning_score(source, run_dir)
        rec = {"arm": arm, "tuning_auroc_macro": score["auroc_macro"], **score, "what": what}
        rec["seconds"] = time.perf_counter() - t0
        results.append(rec)
        print(
            f"{arm}: tuning macro AUROC {score['auroc_macro']:.4f} ({what}, "
            f"{rec['seconds']:.0f} s) {score['auroc']}",
            flush=True,
        )
        (args.out / "pairs.json").write_text(json.dumps(results, indent=1))
    (args.out / "pairs.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
