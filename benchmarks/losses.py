"""Forward+backward time of dense_feature_loss against VICReg and Barlow Twins, side by side.

Usage: python benchmarks/losses.py [--device cpu|cuda] [--shapes 512x128,2048x512,8192x2048]

Each repetition runs every loss once on the same inputs, in rotating order, so drift in the
machine's load hits all of them alike; the table reports medians and ratios to VICReg.
Targets (issue 2): dense <= 1.2x VICReg on CPU at (2048, 512); on a GPU at (8192, 2048) <= 2x,
stretch 1x.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from densefeat.functional import barlow_twins_loss, dense_feature_loss, vicreg_loss

LOSSES = {
    "vicreg": lambda a, b: vicreg_loss(a, b),
    "barlow": lambda a, b: barlow_twins_loss(a, b),
    "dense": lambda a, b: dense_feature_loss(a, b)[0],
    "dense-topk": lambda a, b: dense_feature_loss(a, b, top_k=a.shape[1] // 4)[0],
    "dense-entropy": lambda a, b: dense_feature_loss(a, b, spectral_variant="entropy")[0],
}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench(n: int, d: int, device: str, reps: int, warmup: int = 2) -> dict[str, float]:
    g = torch.Generator(device="cpu").manual_seed(0)
    za = torch.randn(n, d, generator=g).to(device).requires_grad_()
    zb = (za.detach() + 0.5 * torch.randn(n, d, generator=g).to(device)).requires_grad_()
    times: dict[str, list[float]] = {k: [] for k in LOSSES}
    names = list(LOSSES)
    for rep in range(warmup + reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            za.grad = zb.grad = None
            _sync(device)
            t0 = time.perf_counter()
            LOSSES[name](za, zb).backward()
            _sync(device)
            if rep >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--shapes", default="512x128,2048x512,8192x2048")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default by size)")
    args = ap.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)  # n < 2d warnings are expected here
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    header = f"{'n x d':>12} " + " ".join(f"{k:>14}" for k in LOSSES) + "  dense/vicreg"
    print(header)
    for shape in args.shapes.split(","):
        n, d = (int(x) for x in shape.lower().split("x"))
        reps = args.reps or (20 if n * d * d < 1e9 else 5 if n * d * d < 1e10 else 3)
        med = bench(n, d, args.device, reps)
        cells = " ".join(f"{1e3 * med[k]:>11.2f} ms" for k in LOSSES)
        print(f"{shape:>12} {cells}  {med['dense'] / med['vicreg']:>11.2f}x")
        print(
            f"{'':>12} ratios to vicreg: "
            + ", ".join(f"{k} {med[k] / med['vicreg']:.2f}x" for k in LOSSES if k != "vicreg")
        )


if __name__ == "__main__":
    main()
