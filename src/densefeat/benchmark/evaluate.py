"""Evaluate one trained run: geometry, probes, robustness and temporal stability.

Everything here is measured on frozen embeddings of the benchmark's evaluation rows
(:mod:`densefeat.benchmark.rows`): probes fit on ``train`` rows, choose C on ``tuning`` rows
and are scored on ``held_out`` rows; geometry, robustness and temporal stability use
``held_out`` subjects only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import torch

from ..data.history import EventStore, HistoryBuilder
from ..data.meds import MedsDataset
from ..eval.bootstrap import weighted_auroc
from ..eval.probe import LinearProbe, kshot_probe, probe_split, whiten
from ..eval.robustness import _embed_perturbed, embedding_drift
from ..eval.temporal import temporal_stability
from .config import BenchmarkConfig, RunSpec
from .embedding import embed, load_network
from .geometry import geometry_record, one_thread, training_curve
from .rows import EvalRows, Task

__all__ = ["Context", "RunResult", "evaluate_features", "evaluate_run"]


@dataclass
class Context:
    """What every run's evaluation shares.

    ``store_for(builder)`` encodes the dataset with a run's own builder (vocabulary and
    numeric statistics): runs of one benchmark normally share one, encoded once, but a run
    must never be fed code ids of another vocabulary.
    """

    bench: BenchmarkConfig
    dataset: MedsDataset
    builder: HistoryBuilder
    eval_rows: EvalRows
    tasks: list[Task]
    held_out_subjects: np.ndarray
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _stores: dict[str, EventStore] = field(default_factory=dict, repr=False)

    def store_for(self, builder: HistoryBuilder) -> EventStore:
        """The dataset encoded with ``builder`` (cached per distinct builder)."""
        key = json.dumps(builder.to_dict(), sort_keys=True, default=str)
        if key not in self._stores:
            self._stores[key] = builder.encode(self.dataset)
        return self._stores[key]


@dataclass
class RunResult:
    """Records (results.json sections) and arrays (for cross-run comparisons) of one run."""

    records: dict[str, list[dict[str, Any]]]
    arrays: dict[str, np.ndarray]


def _task_arrays(task_rows: pl.DataFrame, split: str) -> dict[str, np.ndarray]:
    part = task_rows.filter(pl.col("split") == split)
    return {
        "row": part["row"].to_numpy(),
        "y": part["boolean_value"].to_numpy().astype(np.int64),
        "groups": part["subject_id"].to_numpy(),
        "weight": part["weight"].to_numpy(),
    }


def _probe_task(
    name: str,
    seed: int,
    task: Task,
    z: np.ndarray,
    ctx: Context,
    *,
    whitened: bool = False,
    kshot: bool = True,
) -> tuple[list[dict[str, Any]], LinearProbe, np.ndarray]:
    """Full-data (and k-shot) probe records of one task; the fitted probe; held-out scores."""
    rows = ctx.eval_rows.task_rows[task.name]
    tr, va, te = (_task_arrays(rows, s) for s in ("train", "tuning", "held_out"))
    if whitened:
        # ZCA statistics from the label-independent uniform sample of training rows (never
        # from the task's positives), the same for every task.
        rows_all = ctx.eval_rows.rows
        fit = ((rows_all["split"] == "train") & rows_all["uniform"]).to_numpy()
        z = whiten(z[fit] if fit.sum() > z.shape[1] else z[tr["row"]], z)
    base = {"method": name, "seed": seed, "task": task.name}
    emb = "whitened" if whitened else "raw"
    full, probe, scores = probe_split(
        z[tr["row"]],
        tr["y"],
        z[va["row"]],
        va["y"],
        z[te["row"]],
        te["y"],
        groups=te["groups"],
        weights=te["weight"],
        n_bootstrap=ctx.bench.bootstrap,
        seed=seed,
    )
    records = [{**base, "embedding": emb, "k": "all", "n_draws": 1, **full}]
    if kshot:
        for rec in kshot_probe(
            z[tr["row"]],
            tr["y"],
            tr["groups"],
            z[va["row"]],
            va["y"],
            va["groups"],
            z[te["row"]],
            te["y"],
            ks=ctx.bench.kshots,
            draws=ctx.bench.draws,
            seed=seed,
            weights=te["weight"],
        ):
            records.append({**base, "embedding": emb, **rec})
    return records, probe, scores


def evaluate_features(name: str, z: np.ndarray, ctx: Context) -> RunResult:
    """Probes of fixed features (the count-features baseline): full data and k-shot."""
    probes: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    for task in ctx.tasks:
        recs, _, scores = _probe_task(name, 0, task, z, ctx)
        probes += recs
        arrays[f"scores/{task.name}"] = scores
    return RunResult({"probes": probes}, arrays)


def evaluate_run(spec: RunSpec, run_dir, ctx: Context, say=lambda text: None) -> RunResult:
    """Every per-run measurement of the benchmark (see the module docstring)."""
    bench = ctx.bench
    cfg, builder, net = load_network(run_dir)
    net.to(ctx.device)
    store = ctx.store_for(builder)
    rows = ctx.eval_rows.rows
    zb, zp = embed(net, store, rows, cfg.max_len, device=ctx.device)
    held = (rows["split"] == "held_out").to_numpy()
    base = {"method": spec.name, "seed": spec.seed}
    records: dict[str, list[dict[str, Any]]] = {
        "geometry": [{**base, "output": "backbone", **geometry_record(zb[held])}],
        "training_curves": [
            {**base, "output": "backbone", "d": cfg.d_model, **training_curve(run_dir)}
        ],
        "probes": [],
        "robustness": [],
        "temporal": [],
    }
    if zp is not None:
        records["geometry"].append({**base, "output": "projector", **geometry_record(zp[held])})
    arrays: dict[str, np.ndarray] = {"held_out": zb[held]}

    say(f"{spec.key}: probes")
    probes: dict[str, LinearProbe] = {}
    clean_auroc: dict[str, float] = {}
    for task in ctx.tasks:
        recs, probe, scores = _probe_task(spec.name, spec.seed, task, zb, ctx)
        records["probes"] += recs
        probes[task.name] = probe
        clean_auroc[task.name] = recs[0]["auroc"]
        arrays[f"scores/{task.name}"] = scores
        white, _, _ = _probe_task(spec.name, spec.seed, task, zb, ctx, whitened=True, kshot=False)
        records["probes"] += white

    if bench.perturbations and ctx.tasks:
        say(f"{spec.key}: robustness")
        held_rows = rows.filter(pl.Series(held))
        index = np.flatnonzero(held)
        position = np.full(len(rows), -1)
        position[index] = np.arange(index.size)
        for p, level in bench.perturbations:
            zp_, n_in, n_out = _embed_perturbed(
                net.encoder,
                store,
                held_rows,
                cfg.max_len,
                p,
                level * (bench.jitter_days if p == "time_jitter" else 1.0),
                spec.seed,
                512,
                ctx.device,
                {},
            )
            with one_thread():
                drift = embedding_drift(zb[held], zp_, bench.k)
            for task in ctx.tasks:
                te = _task_arrays(ctx.eval_rows.task_rows[task.name], "held_out")
                s = probes[task.name].decision_function(zp_[position[te["row"]]])
                auroc = float(weighted_auroc(s, te["y"]))
                arrays[f"robust/{p}/{level}/{task.name}"] = s
                records["robustness"].append(
                    {
                        **base,
                        "task": task.name,
                        "perturbation": p,
                        # The jitter in days (the grid's level scales --jitter-days).
                        "level": level * bench.jitter_days if p == "time_jitter" else level,
                        "auroc": auroc,
                        "auroc_drop": clean_auroc[task.name] - auroc,
                        **{
                            key: float(drift[key])
                            for key in (
                                "cosine_drift",
                                "relative_drift",
                                "subspace_distance",
                                "chance",
                            )
                        },
                        "event_fraction_kept": n_out / max(n_in, 1),
                    }
                )

    say(f"{spec.key}: temporal stability")
    stab = temporal_stability(
        net.encoder,
        store,
        k=bench.k,
        every=cfg.window_days,
        subjects=ctx.held_out_subjects,
        max_len=cfg.max_len,
        device=ctx.device,
    )
    for rec in stab["windows"]:
        records["temporal"].append({**base, **rec})
    return RunResult(records, arrays)
