"""Does the subspace-consistency term see pairing at the training batch size? Levers side by side.

Usage: OMP_NUM_THREADS=1 python benchmarks/consistency_levers.py [--draws 5] [--scale 1.0]

Planted fixture (:func:`planted_pair`): d = 128 features of which 8 directions are shared by the
two windows (correlation ~0.99), the other 120 independent noise, each side under its own random
rotation. For each form of the term, the contrast ``shuffled - paired`` (shuffled: the second
window's rows permuted) at the training batch n = 256 is divided by the same form's contrast at
n = 32,768 (the population value); 1 means the batch sees all of the pairing signal. Also the
cosine between the gradient w.r.t. a linear map of window a at n = 256 and at n = 32,768 (same
rotations, fresh rows), i.e. whether a small-batch step points where the large-batch step does.

Levers: shrinkage ``g`` of the whitening (``consistency="shrunk"``; ``"cca"`` is the unshrunk
first form), and covariance statistics carried across steps, emulated here by pooling the
statistics of ``m`` batches of 256 (an exponential moving average with an effective memory of
``m`` steps and a frozen encoder), and the library's own ``dense.momentum`` (the
:class:`~densefeat.losses.DenseFeatureLoss` module fed a stream of fresh batches of 256 with a
frozen encoder; the term is read at the last step, the shuffled stream in its own module).
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from densefeat.functional.moments import moments
from densefeat.functional.objectives import subspace_consistency_from_moments
from densefeat.losses import DenseFeatureLoss

D, K_SHARED, N_SMALL, N_LARGE = 128, 8, 256, 32768


def planted_pair(
    n: int, seed: int, *, scale: float = 1.0, rot_seed: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 128) pair with 8 shared directions (std ``scale``, noise 0.1) under fixed rotations."""
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    s = scale * torch.randn(n, K_SHARED, generator=g, dtype=f64)
    parts = []
    for _ in range(2):
        own = s + 0.1 * torch.randn(n, K_SHARED, generator=g, dtype=f64)
        parts.append(torch.cat([own, torch.randn(n, D - K_SHARED, generator=g, dtype=f64)], 1))
    gr = torch.Generator().manual_seed(rot_seed)
    ra = torch.linalg.qr(torch.randn(D, D, generator=gr, dtype=f64))[0]
    rb = torch.linalg.qr(torch.randn(D, D, generator=gr, dtype=f64))[0]
    return parts[0] @ ra, parts[1] @ rb


def _loss_and_grad(za, zb, form, g):
    """Loss and its gradient w.r.t. a linear map ``M = I`` of window a."""
    m_mat = torch.eye(D, dtype=za.dtype, requires_grad=True)
    mom = moments(za @ m_mat, zb)
    loss = subspace_consistency_from_moments(mom, None, form, g)
    (grad,) = torch.autograd.grad(loss, m_mat)
    return float(loss.detach()), grad


def measure(form: str, g: float, draws: int, scale: float, pool: int = 1) -> dict[str, float]:
    out = {}
    grads = {}
    for n in (N_SMALL * pool, N_LARGE):
        paired, shuffled, gs = [], [], []
        for seed in range(draws if n < N_LARGE else 2):
            za, zb = planted_pair(n, seed, scale=scale)
            lp, gr = _loss_and_grad(za, zb, form, g)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(99))
            ls, _ = _loss_and_grad(za, zb[perm], form, g)
            paired.append(lp)
            shuffled.append(ls)
            gs.append(gr)
        out[n] = (sum(paired) / len(paired), sum(shuffled) / len(shuffled))
        grads[n] = gs
    big = sum(grads[N_LARGE]) / len(grads[N_LARGE])
    cos = [float((x * big).sum() / (x.norm() * big.norm())) for x in grads[N_SMALL * pool]]
    small = out[N_SMALL * pool]
    return {
        "paired": small[0],
        "shuffled": small[1],
        "paired_large": out[N_LARGE][0],
        "shuffled_large": out[N_LARGE][1],
        "ratio": (small[1] - small[0]) / (out[N_LARGE][1] - out[N_LARGE][0]),
        "grad_cos": sum(cos) / len(cos),
    }


def measure_momentum(g: float, momentum: float, draws: int, scale: float, steps: int = 40):
    """The term of ``DenseFeatureLoss(momentum=...)`` after ``steps`` fresh batches of 256."""
    ref = measure("shrunk", g, 1, scale)  # only its n = 32,768 values and gradient are used
    big_grads = []
    for seed in range(2):
        za, zb = planted_pair(N_LARGE, seed, scale=scale)
        big_grads.append(_loss_and_grad(za, zb, "shrunk", g)[1])
    big = sum(big_grads) / 2
    paired, shuffled, cos = [], [], []
    for draw in range(draws):
        mods = [DenseFeatureLoss(0.0, 0.0, 1.0, shrinkage=g, momentum=momentum) for _ in range(2)]
        for step in range(steps):
            za, zb = planted_pair(N_SMALL, 10_000 * (draw + 1) + step, scale=scale)
            perm = torch.randperm(N_SMALL, generator=torch.Generator().manual_seed(step))
            last = step == steps - 1
            m_mat = torch.eye(D, dtype=za.dtype, requires_grad=last)
            lp, _ = mods[0](za @ m_mat, zb)
            ls, _ = mods[1](za, zb[perm])
            if last:
                (grad,) = torch.autograd.grad(lp, m_mat)
                paired.append(float(lp.detach()))
                shuffled.append(float(ls))
                cos.append(float((grad * big).sum() / (grad.norm() * big.norm())))
    p, sh = sum(paired) / draws, sum(shuffled) / draws
    return {
        "paired": p,
        "shuffled": sh,
        "paired_large": ref["paired_large"],
        "shuffled_large": ref["shuffled_large"],
        "ratio": (sh - p) / (ref["shuffled_large"] - ref["paired_large"]),
        "grad_cos": sum(cos) / draws,
    }


LEVERS = [
    ("cca", "cca", 0.0, 1),
    ("shrunk g=0.1", "shrunk", 0.1, 1),
    ("shrunk g=0.3", "shrunk", 0.3, 1),
    ("shrunk g=1", "shrunk", 1.0, 1),
    ("shrunk g=3 (default)", "shrunk", 3.0, 1),
    ("shrunk g=10", "shrunk", 10.0, 1),
    ("cca, stats of 16 steps", "cca", 0.0, 16),
    ("shrunk g=3, stats of 16 steps", "shrunk", 3.0, 16),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=5, help="draws at n = 256 (2 at n = 32768)")
    ap.add_argument("--scale", type=float, default=1.0, help="std of the shared directions")
    args = ap.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)
    torch.set_num_threads(1)
    print(f"planted fixture: d={D}, {K_SHARED} shared directions (std {args.scale}), ")
    print(f"contrast = shuffled - paired; ratio = contrast(n={N_SMALL}) / contrast(n={N_LARGE})")
    print(
        f"{'form':>30} {'paired':>8} {'shuffled':>8} {'paired@32k':>10} {'shuf@32k':>9} "
        f"{'ratio':>6} {'gradcos':>7}"
    )
    rows = [
        (label, lambda f=form, g=g, p=pool: measure(f, g, args.draws, args.scale, p))
        for label, form, g, pool in LEVERS
    ]
    rows += [
        (f"shrunk g=3, momentum={b}", lambda b=b: measure_momentum(3.0, b, args.draws, args.scale))
        for b in (0.5, 0.9, 0.97)
    ]
    for label, run in rows:
        t0 = time.perf_counter()
        r = run()
        print(
            f"{label:>30} {r['paired']:8.4f} {r['shuffled']:8.4f} {r['paired_large']:10.4f} "
            f"{r['shuffled_large']:9.4f} {r['ratio']:6.3f} {r['grad_cos']:7.3f}"
            f"   ({time.perf_counter() - t0:.1f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
