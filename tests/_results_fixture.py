"""A small, deterministic, schema-valid ``results.json`` object for the report tests.

It follows docs/results-schema.md (kind ``densefeat.benchmark``, version 1): five methods
(``random`` and ``supervised`` have no projector), two ablations, two seeds, two tasks (a third
skipped with its reason), full and k-shot probes (raw and whitened; k up to 128, one k skipped
with its reason) with AUPRC and the held-out positives, robustness, temporal records over
windows 1-14 with windows 9-10 left out (too few subjects), alignment records, and one null
condition number with its reason (``random`` ends in an exact null direction). The geometry
numbers are computed from the spectra they ship with, so the file is self-consistent; the table
and the comparison are aggregated from the records the way the schema describes.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np

N, D, D_PROJ, K = 60, 16, 32, 4
SEEDS = [0, 1]
TASKS = ["gi_bleed", "peptic_ulcer"]
METHODS = ["dense", "simclr", "vicreg", "supervised", "random"]
ABLATIONS = ["dense-no_spec", "dense-no_sub"]
NO_PROJECTOR = {"random", "supervised"}
KSHOT = [1, 2, 4, 8, 16, 32, 64, 128]
#: Held-out evaluation rows and positives per task (every positive, a sample of the negatives).
POSITIVES = {"gi_bleed": 9, "peptic_ulcer": 7}
PREVALENCE = {"gi_bleed": 0.0152, "peptic_ulcer": 0.0071}
#: Temporal windows measured (9 and 10 had too few subjects) and the skipped k-shot probe.
WINDOWS = [w for w in range(1, 15) if w not in (9, 10)]
KSHOT_SKIPPED = (
    "random",
    128,
    "k = 128 is more than the 120 training subjects of the smaller class",
)
SKIPPED_TASK = {"task": "ulcerative_colitis", "reason": "no positive label in the tuning split"}

#: Spectral decay (eigenvalue ~ rank^-alpha) and probe AUROC level of each method.
ALPHA = {
    "dense": 0.3,
    "simclr": 1.0,
    "vicreg": 0.6,
    "supervised": 1.6,
    "random": 1.2,
    "dense-no_spec": 0.9,
    "dense-no_sub": 0.4,
}
AUROC = {
    "dense": 0.701,
    "simclr": 0.690,
    "vicreg": 0.713,
    "supervised": 0.684,
    "random": 0.602,
    "dense-no_spec": 0.688,
    "dense-no_sub": 0.655,
    "count_features": 0.662,
}
NULL_REASON = "numerical rank 15 < min(n - 1, d) = 16: exact null direction (LayerNorm output)"


def _spectrum(method: str, seed: int, d: int) -> list[float]:
    lam = [(i + 1) ** -ALPHA[method] * (1 + 0.3 * seed * math.sin(i + 1)) for i in range(d)]
    lam = sorted(lam, reverse=True)
    if method == "random":
        lam[-1] = 0.0  # an exact null direction: infinite condition number
    return lam


def _geometry(eig: list[float], n: int) -> dict[str, Any]:
    s = [math.sqrt(max(v, 0.0) * (n - 1)) for v in eig]
    total = sum(s)
    q = [v / total for v in s if v > 0]
    er = math.exp(-sum(x * math.log(x) for x in q))
    p = [v / sum(eig) for v in eig if v > 0]
    er_eig = math.exp(-sum(x * math.log(x) for x in p))
    k = round(er)
    out = {
        "effective_rank": er,
        "effective_rank_eig": er_eig,
        "rankme": er + 0.05,
        "condition_number_k": s[0] / s[k - 1],
        "k": k,
        "eigenvalues": list(eig),
    }
    if s[-1] > 0:
        out["condition_number"], out["condition_number_reason"] = s[0] / s[-1], None
    else:
        out["condition_number"], out["condition_number_reason"] = None, NULL_REASON
    return out


def _reference(n: int, d: int) -> dict[str, Any]:
    z = np.random.default_rng(n * 1000 + d).standard_normal((n, d))
    z -= z.mean(0)
    s = np.linalg.svd(z, compute_uv=False)
    eig = (s**2 / (n - 1)).tolist()
    g = _geometry(eig, n)
    return {
        "n": n,
        "d": d,
        "effective_rank": g["effective_rank"],
        "effective_rank_eig": g["effective_rank_eig"],
        "condition_number": g["condition_number"],
        "condition_number_k": g["condition_number_k"],
        "eigenvalues": eig,
    }


def _auroc(method: str, seed: int, task: str, shift: float = 0.0) -> float:
    return AUROC[method] + shift + 0.004 * seed - 0.006 * TASKS.index(task)


def make_results(*, dense_wins: bool = False) -> dict[str, Any]:
    """Build the fixture.

    Args:
        dense_wins: make dense the best method on probe AUROC (with a CI excluding 0) instead
            of losing to vicreg (with a CI including 0).

    Returns:
        a fresh dict, safe to mutate.
    """
    auroc = dict(AUROC)
    if dense_wins:
        auroc["dense"] = 0.728
    rows = [*METHODS, *ABLATIONS]
    geometry, curves, probes, robustness, temporal, alignment = [], [], [], [], [], []
    for method in rows:
        for seed in SEEDS:
            outputs = [("backbone", D)] + (
                [] if method in NO_PROJECTOR else [("projector", D_PROJ)]
            )
            for output, d in outputs:
                rec = {"method": method, "seed": seed, "output": output, "n": N, "d": d}
                rec.update(_geometry(_spectrum(method, seed, d), N))
                geometry.append(rec)
            if method != "random":
                final = next(
                    g["effective_rank"]
                    for g in geometry
                    if g["method"] == method and g["seed"] == seed and g["output"] == "backbone"
                )
                steps = [0, 50, 100, 150, 200]
                curves.append(
                    {
                        "method": method,
                        "seed": seed,
                        "step": steps,
                        "effective_rank": [final * (0.55 + 0.45 * (s / 200) ** 0.5) for s in steps],
                        "loss": [1.0 / (1 + s / 50) for s in steps],
                        **(
                            {
                                "subspace_consistency": [0.7 - 0.3 * s / 200 for s in steps],
                                "subspace_consistency_shuffled": [0.72 for _ in steps],
                            }
                            if method == "dense"
                            else {}
                        ),
                    }
                )
            for task in TASKS:
                embeddings = ["raw", "whitened"] if method in ("simclr", "vicreg") else ["raw"]
                for emb in embeddings:
                    a = auroc[method] + (0.008 if emb == "whitened" else 0.0)
                    a += 0.004 * seed - 0.006 * TASKS.index(task)
                    probes.append(
                        {
                            "method": method,
                            "seed": seed,
                            "task": task,
                            "embedding": emb,
                            "k": "all",
                            "n_draws": 1,
                            "auroc": a,
                            "auroc_ci": [a - 0.041, a + 0.038],
                            "auroc_sd": None,
                            "auprc": a / 3,
                            "auprc_ci": [a / 3 - 0.05, a / 3 + 0.05],
                            "C": 1.0,
                            "n_test": N,
                            "n_pos_test": POSITIVES[task],
                            "prevalence_test": POSITIVES[task] / N,
                            "weighted": True,
                        }
                    )
                if method in METHODS and method != "supervised":
                    for k in KSHOT:
                        a = 0.5 + (auroc[method] - 0.5) * (1 - 0.5 ** (k / 2))
                        if (method, k) == KSHOT_SKIPPED[:2]:
                            probes.append(
                                {
                                    "method": method,
                                    "seed": seed,
                                    "task": task,
                                    "embedding": "raw",
                                    "k": k,
                                    "n_draws": 0,
                                    "auroc": None,
                                    "auroc_ci": None,
                                    "auroc_sd": None,
                                    "auprc": None,
                                    "auprc_ci": None,
                                    "auprc_sd": None,
                                    "C": None,
                                    "skipped": True,
                                    "reason": KSHOT_SKIPPED[2],
                                }
                            )
                            continue
                        probes.append(
                            {
                                "method": method,
                                "seed": seed,
                                "task": task,
                                "embedding": "raw",
                                "k": k,
                                "n_draws": 5,
                                "auroc": a + 0.002 * seed,
                                "auroc_ci": None,
                                "auroc_sd": 0.06 / math.sqrt(k),
                                "auprc": a / 3,
                                "auprc_ci": None,
                                "auprc_sd": 0.02 / math.sqrt(k),
                                "C": None,
                                "skipped": False,
                                "reason": None,
                            }
                        )
                if method in METHODS:
                    for pert, levels in (("event_dropout", [0.1, 0.3, 0.5]), ("time_jitter", [1])):
                        for level in levels:
                            drop = (0.02 + 0.1 * ALPHA[method] * level) * (1 + 0.1 * seed)
                            a = auroc[method] - drop
                            robustness.append(
                                {
                                    "method": method,
                                    "seed": seed,
                                    "task": task,
                                    "perturbation": pert,
                                    "level": float(level),
                                    "auroc": a,
                                    "auroc_drop": drop,
                                    "cosine_drift": 0.1 * level,
                                    "relative_drift": 0.2 * level,
                                    "subspace_distance": min(
                                        0.9, 0.3 * level + 0.1 * ALPHA[method]
                                    ),
                                }
                            )
            for window in WINDOWS:
                temporal.append(
                    {
                        "method": method,
                        "seed": seed,
                        "window": window,
                        "label": f"w{window} -> w{window + 1}",
                        "n": N,
                        "k": K,
                        "subspace_distance": 0.12
                        + 0.15 * ALPHA[method]
                        + 0.01 * window
                        + 0.03 * math.sin(window * (1 + ALPHA[method])),
                        "floor": 0.06 + 0.02 * ALPHA[method],
                        "chance": math.sqrt(1 - K / N),
                    }
                )
    for s in SEEDS:  # count features: a probe-only baseline (no encoder, no geometry)
        for task in TASKS:
            a = _auroc("count_features", s, task)
            probes.append(
                {
                    "method": "count_features",
                    "seed": s,
                    "task": task,
                    "embedding": "raw",
                    "k": "all",
                    "n_draws": 1,
                    "auroc": a,
                    "auroc_ci": [a - 0.04, a + 0.04],
                    "auroc_sd": None,
                    "auprc": a / 3,
                    "auprc_ci": None,
                    "C": 0.1,
                }
            )
    for method in rows:
        alignment.append(
            {
                "method": method,
                "kind": "seeds",
                "a": "seed 0",
                "b": "seed 1",
                "n": N,
                "subspace_distance": 0.2 + 0.2 * ALPHA[method],
                "linear_cka_debiased": 0.95 - 0.2 * ALPHA[method],
                "principal_angles_deg": [5.0 + 10 * i * ALPHA[method] for i in range(K)],
            }
        )
    alignment.append(
        {
            "method": "dense",
            "kind": "modalities",
            "a": "codes",
            "b": "notes",
            "n": N,
            "subspace_distance": 0.41,
            "linear_cka_debiased": 0.62,
            "principal_angles_deg": [12.0, 20.5, 31.0, 44.2],
        }
    )

    def macro(method: str, seed: int) -> float:
        return statistics.fmean(
            p["auroc"]
            for p in probes
            if p["method"] == method and p["seed"] == seed and p["k"] == "all"
            if p["embedding"] == "raw"
        )

    table = []
    for method in rows:
        back = [g for g in geometry if g["method"] == method and g["output"] == "backbone"]
        conds = [g["condition_number"] for g in back]
        macros = [macro(method, s) for s in SEEDS]
        rob = [r["auroc_drop"] for r in robustness if r["method"] == method]
        tmp = [t["subspace_distance"] for t in temporal if t["method"] == method]
        cka = [a["linear_cka_debiased"] for a in alignment if a["method"] == method]
        table.append(
            {
                "method": method,
                "n_seeds": len(SEEDS),
                "effective_rank": statistics.fmean(g["effective_rank"] for g in back),
                "effective_rank_sd": statistics.stdev(g["effective_rank"] for g in back),
                "condition_number": None if None in conds else statistics.fmean(conds),
                "condition_number_k": statistics.fmean(g["condition_number_k"] for g in back),
                "temporal_subspace_distance": statistics.fmean(tmp),
                "probe_auroc": statistics.fmean(macros),
                "probe_auroc_sd": statistics.stdev(macros),
                "robustness_drop": statistics.fmean(rob) if rob else None,
                "seed_alignment_cka": cka[0] if cka else None,
            }
        )
    dense_value = next(r["probe_auroc"] for r in table if r["method"] == "dense")
    best = max(
        (r for r in table if r["method"] in METHODS and r["method"] != "dense"),
        key=lambda r: r["probe_auroc"],
    )
    diff = dense_value - best["probe_auroc"]
    drop = {r["method"]: r["robustness_drop"] for r in table if r["method"] in METHODS}
    best_drop = min((m for m in drop if m != "dense"), key=drop.__getitem__)
    drop_diff = drop["dense"] - drop[best_drop]
    drop_ci = [drop_diff - 0.011, drop_diff + 0.009]
    return {
        "kind": "densefeat.benchmark",
        "version": 1,
        "scale": "smoke",
        "created": "2026-11-28T18:00:00Z",
        "dataset": {
            "name": "eunomia-gibleed",
            "path": "~/.cache/densefeat/eunomia-gibleed",
            "n_subjects": 2694,
            "n_subjects_per_split": {"train": 2155, "tuning": 269, "held_out": 270},
        },
        "config": {
            "methods": list(METHODS),
            "ablations": list(ABLATIONS),
            "seeds": list(SEEDS),
            "budget_steps": 200,
            "batch_size": 64,
            "train": {"lr": 1e-3, "steps": 200, "batch_size": 64, "seed": 0},
            "window_days": 365.0,
            "k": K,
        },
        "versions": {
            "densefeat": "0.1.0",
            "torch": "2.13.0",
            "numpy": "2.3.0",
            "polars": "1.30.0",
            "scikit-learn": "1.7.0",
            "python": "3.11.2",
        },
        "machine": {"platform": "Linux-x86_64", "cpus": 2, "device": "cpu", "torch_threads": 2},
        "seconds": 94.2,
        "tasks": [
            {
                "name": t,
                "n_train": 400,
                "n_tuning": 50,
                "n_test": N,
                "positives_test": POSITIVES[t],
                "prevalence_test": PREVALENCE[t],
            }
            for t in TASKS
        ],
        "tasks_skipped": [dict(SKIPPED_TASK)],
        "geometry": geometry,
        "reference": [_reference(N, D), _reference(N, D_PROJ)],
        "training_curves": curves,
        "probes": probes,
        "robustness": robustness,
        "temporal": temporal,
        "alignment": alignment,
        "comparison": {
            "endpoint": "probe_auroc_macro",
            "dense": dense_value,
            "best_baseline": best["method"],
            "best_baseline_value": best["probe_auroc"],
            "difference": diff,
            "difference_ci": [diff - 0.019, diff + 0.018] if not dense_wins else [0.004, 0.021],
            "dense_wins": dense_wins,
            "robustness": {
                "endpoint": "auroc_drop_macro",
                "dense": drop["dense"],
                "best_baseline": best_drop,
                "best_baseline_value": drop[best_drop],
                "difference": drop_diff,
                "difference_ci": drop_ci,
                "dense_wins": drop_ci[1] < 0,
            },
        },
        "table": table,
    }
