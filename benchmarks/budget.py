"""Budget curve: tuning-split macro probe AUROC against optimizer steps, and its plateau.

Each budget is a FRESH run trained with that many steps (the learning-rate schedule decays to
its own ``max_steps``, so a longer run is not a checkpoint of a shorter one), scored like a
tuning trial (:func:`densefeat.benchmark.tuning.tuning_score`: train + tuning rows only). The
recommended budget is the smallest one whose AUROC is within ``--tolerance`` (0.005) of the best
AUROC at that budget or any larger one, per method. The README's recommendation comes from this
script (docs/design.md, Evaluation protocol).

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/budget.py --out /tmp/budget \\
        --methods dense vicreg --budgets 50 100 200 400
    python benchmarks/budget.py --data /tmp/physionet_meds --out /tmp/budget-icu \\
        --set data.window_days=0.5 --budgets 100 200 400 800 --device cuda

Runs are reused/resumed (benchmark run rules); writes ``OUT/budget.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from densefeat.benchmark.config import BenchmarkConfig, RunSpec
from densefeat.benchmark.runs import ensure_run
from densefeat.benchmark.sources.ehr import EHRSource
from densefeat.benchmark.tuning import tuning_score
from densefeat.train.config import parse_overrides


def plateau(budgets: list[int], aurocs: list[float], tolerance: float) -> int:
    """The smallest budget within ``tolerance`` of the best AUROC at it or any larger budget."""
    for i, b in enumerate(budgets):
        if aurocs[i] >= max(aurocs[i:]) - tolerance:
            return b
    return budgets[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="MEDS dataset (default: Eunomia)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--methods", nargs="+", default=["dense", "vicreg"])
    ap.add_argument("--budgets", nargs="+", type=int, default=[50, 100, 200, 400])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance", type=float, default=0.005)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="key=value settings")
    ap.add_argument(
        "--max-eval-times",
        type=int,
        default=BenchmarkConfig.max_eval_times,
        help="cap on the evaluation prediction times (as densefeat benchmark's option)",
    )
    args = ap.parse_args()
    if args.data is None:
        from densefeat.data.convert.eunomia import eunomia_meds

        args.data = eunomia_meds()
    budgets = sorted(args.budgets)
    base = BenchmarkConfig(
        methods=tuple(args.methods),
        ablations=(),
        seeds=1,
        budget=budgets[0],
        train=parse_overrides(args.overrides),
        perturbations=(),
        trials=1,
        device=args.device,
        max_eval_times=args.max_eval_times,
    )
    device = torch.device(args.device)
    source = EHRSource(args.data, args.out, base, None, print, device)
    curves: dict[str, dict] = {}
    for method in args.methods:
        aurocs, seconds = [], []
        for b in budgets:
            bench = replace(source.bench, budget=b)
            spec = RunSpec(f"{method}-steps{b}", method, args.seed)
            t0 = time.perf_counter()
            run_dir, what = ensure_run(
                spec,
                bench,
                source.data,
                args.out / "runs",
                None,
                identity=source.run_identity(spec),
            )
            seconds.append(time.perf_counter() - t0)
            aurocs.append(tuning_score(source, run_dir)["auroc_macro"])
            print(
                f"{method} {b} steps: tuning macro AUROC {aurocs[-1]:.4f} ({what}, "
                f"{seconds[-1]:.0f} s train)",
                flush=True,
            )
        rec = plateau(budgets, aurocs, args.tolerance)
        curves[method] = {
            "budgets": budgets,
            "auroc_macro": aurocs,
            "train_seconds": seconds,
            "plateau_budget": rec,
        }
        print(f"{method}: plateau at {rec} steps (tolerance {args.tolerance})", flush=True)
        (args.out / "budget.json").write_text(json.dumps(curves, indent=1))
    best = max(curves, key=lambda m: max(curves[m]["auroc_macro"]))
    print(f"best method {best}: recommended budget {curves[best]['plateau_budget']} steps")


if __name__ == "__main__":
    main()
