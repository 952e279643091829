"""Evaluation of frozen embeddings on the benchmark's rows: probes, whitened probes, k-shot,
and the robustness records built from perturbed embeddings.

Everything here is modality-free: a data source (:mod:`densefeat.benchmark.sources`) embeds its
rows (patient histories, notes, records) and hands the matrices over. Probes fit on ``train``
rows, choose C on ``tuning`` rows and are scored on ``held_out`` rows; robustness uses the
held-out rows only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..eval.bootstrap import weighted_auroc
from ..eval.probe import LinearProbe, kshot_probe, probe_split, whiten
from ..eval.robustness import embedding_drift
from ..train.modalities.base import Embeddings
from .config import BenchmarkConfig, RunSpec
from .geometry import geometry_record, one_thread, training_curve
from .rows import EvalRows, Task

__all__ = [
    "DRIFT_KEYS",
    "ProbeContext",
    "RunResult",
    "evaluate_embeddings",
    "evaluate_features",
    "probe_tasks",
    "robustness_records",
    "task_arrays",
]

#: The embedding-drift measures each robustness record carries.
DRIFT_KEYS = ("cosine_drift", "relative_drift", "subspace_distance", "chance")


@dataclass
class ProbeContext:
    """What the probes of every run share: the settings, the evaluation rows and the tasks."""

    bench: BenchmarkConfig
    eval_rows: EvalRows
    tasks: list[Task]
    #: task -> why its probe is cross-fitted (:mod:`densefeat.benchmark.small`).
    crossfit: dict[str, str] = field(default_factory=dict)
    #: control name -> (n_rows, c) features added to every method's features in one more
    #: probe (``embedding`` ``raw+<name>``; :mod:`densefeat.benchmark.icu`).
    controls: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class RunResult:
    """Records (results.json sections) and arrays (for cross-run comparisons) of one run."""

    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def task_arrays(task_rows: pl.DataFrame, split: str) -> dict[str, np.ndarray]:
    """``row`` (index into the evaluation rows), ``y``, ``groups`` and ``weight`` of one split
    of a task."""
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
    ctx: ProbeContext,
    *,
    whitened: bool = False,
    kshot: bool = True,
) -> tuple[list[dict[str, Any]], LinearProbe, np.ndarray]:
    """Full-data (and k-shot) probe records of one task; the fitted probe; held-out scores."""
    rows = ctx.eval_rows.task_rows[task.name]
    tr, va, te = (task_arrays(rows, s) for s in ("train", "tuning", "held_out"))
    if task.name in ctx.crossfit:
        return _crossfit_task(name, seed, task, z, ctx, whitened=whitened)
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


class _FoldScorer:
    """Scores held-out rows (in held-out order) with the cross-fitted probe of each row's fold,
    so perturbed copies are never scored by a probe that saw their subject."""

    def __init__(self, crossfit: Any, folds: np.ndarray):
        self.crossfit, self.folds = crossfit, folds

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return self.crossfit.score(x, self.folds)


def _crossfit_task(
    name: str, seed: int, task: Task, z: np.ndarray, ctx: ProbeContext, *, whitened: bool
) -> tuple[list[dict[str, Any]], Any, np.ndarray]:
    """The cross-fitted probe of a task with too few held-out positives or subjects: every
    labelled row of the task (all splits) is scored by a probe that never saw its subject.
    Returns the record, a scorer of held-out rows and the held-out rows' out-of-fold scores
    (in held-out order, as the split protocol's)."""
    from ..eval.probe.crossfit import crossfit_probe

    rows = ctx.eval_rows.task_rows[task.name]
    allr = {
        "row": rows["row"].to_numpy(),
        "y": rows["boolean_value"].to_numpy().astype(np.int64),
        "groups": rows["subject_id"].to_numpy(),
        "weight": rows["weight"].to_numpy(),
    }
    if whitened:
        # Whitening statistics from the label-independent uniform sample of training rows.
        rows_all = ctx.eval_rows.rows
        fit = ((rows_all["split"] == "train") & rows_all["uniform"]).to_numpy()
        z = whiten(z[fit] if fit.sum() > z.shape[1] else z[allr["row"]], z)
    record, cf = crossfit_probe(
        z[allr["row"]],
        allr["y"],
        allr["groups"],
        k=ctx.bench.probe_folds,
        weights=allr["weight"],
        n_bootstrap=ctx.bench.bootstrap,
        seed=seed,
    )
    held = (rows["split"] == "held_out").to_numpy()
    base = {"method": name, "seed": seed, "task": task.name}
    emb = "whitened" if whitened else "raw"
    rec = {**base, "embedding": emb, **record, "crossfit_reason": ctx.crossfit[task.name]}
    return [rec], _FoldScorer(cf, cf.folds[held]), cf.scores[held]


@dataclass
class TaskProbes:
    """The probes of one run: records, fitted probes, clean held-out AUROCs and scores."""

    records: list[dict[str, Any]]
    probes: dict[str, LinearProbe]
    clean_auroc: dict[str, float]
    scores: dict[str, np.ndarray]


def probe_tasks(
    name: str, seed: int, z: np.ndarray, ctx: ProbeContext, *, whitened_control: bool = True
) -> TaskProbes:
    """Every task's full-data and k-shot probe on ``z`` (the evaluation rows' embeddings) and,
    as a control, the full-data probe after ZCA whitening (whitening alone can raise a probe's
    AUROC)."""
    out = TaskProbes([], {}, {}, {})
    for task in ctx.tasks:
        recs, probe, scores = _probe_task(name, seed, task, z, ctx)
        out.records += recs
        out.probes[task.name] = probe
        out.clean_auroc[task.name] = recs[0]["auroc"]
        if task.name in ctx.crossfit:
            # The robustness drop compares like with like: the held-out rows' clean AUROC.
            te = task_arrays(ctx.eval_rows.task_rows[task.name], "held_out")
            out.clean_auroc[task.name] = float(weighted_auroc(scores, te["y"]))
        out.scores[task.name] = scores
        if whitened_control:
            white, _, _ = _probe_task(name, seed, task, z, ctx, whitened=True, kshot=False)
            out.records += white
        for control, extra in ctx.controls.items():
            if name == control:
                continue
            both, _, _ = _probe_task(name, seed, task, np.hstack([z, extra]), ctx, kshot=False)
            out.records += [{**r, "embedding": f"raw+{control}"} for r in both]
    return out


def evaluate_features(name: str, z: np.ndarray, ctx: ProbeContext) -> RunResult:
    """Probes of fixed features (probe-only baselines: count features, TF-IDF, ...)."""
    probes = probe_tasks(name, 0, z, ctx, whitened_control=False)
    arrays = {f"scores/{t}": s for t, s in probes.scores.items()}
    return RunResult({"probes": probes.records}, arrays)


def perturbed_cis(
    clean: np.ndarray, perturbed: np.ndarray, te: dict[str, np.ndarray], n_boot: int, seed: int
) -> dict[str, Any]:
    """Patient-level bootstrap CIs of the AUROC under perturbation and of its drop.

    Clean and perturbed scores of the same held-out rows are scored on the *same* resamples of
    the held-out subjects (one seed, one set of groups), so the drop's interval is paired:
    percentiles of ``AUROC_b(clean) - AUROC_b(perturbed)``. Undefined resamples (one class)
    are dropped; a CI that cannot be formed is null.
    """
    from ..eval.bootstrap import bootstrap_metrics

    if n_boot < 1 or clean.shape != perturbed.shape:
        return {"auroc_ci": None, "auroc_drop_ci": None}
    kw = {"metrics": ("auroc",)}
    a = bootstrap_metrics(clean, te["y"], te["groups"], n_boot, seed, **kw)["auroc"]
    b = bootstrap_metrics(perturbed, te["y"], te["groups"], n_boot, seed, **kw)["auroc"]

    def ci(v: np.ndarray) -> list[float] | None:
        v = v[np.isfinite(v)]
        return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v.size else None

    return {"auroc_ci": ci(b), "auroc_drop_ci": ci(a - b)}


def robustness_records(
    name: str,
    seed: int,
    ctx: ProbeContext,
    probes: TaskProbes,
    z_held: np.ndarray,
    perturbed: Iterable[tuple[str, float, float, np.ndarray, dict[str, Any]]],
) -> RunResult:
    """Probe AUROC under each perturbation and the embedding drift of the held-out rows.

    Args:
        name, seed: the run.
        ctx: the probes' context.
        probes: the run's clean probes (fitted on clean training rows).
        z_held: clean embeddings of the held-out evaluation rows, in row order.
        perturbed: ``(perturbation, grid level, recorded level, z, extra fields)`` per
            perturbation, ``z`` the perturbed embeddings of the same held-out rows.
    """
    held = (ctx.eval_rows.rows["split"] == "held_out").to_numpy()
    index = np.flatnonzero(held)
    position = np.full(held.size, -1)
    position[index] = np.arange(index.size)
    out = RunResult({"robustness": []}, {})
    for p, level, recorded, zp, extra in perturbed:
        with one_thread():
            drift = embedding_drift(z_held, zp, ctx.bench.k)
        for task in ctx.tasks:
            te = task_arrays(ctx.eval_rows.task_rows[task.name], "held_out")
            s = probes.probes[task.name].decision_function(zp[position[te["row"]]])
            auroc = float(weighted_auroc(s, te["y"]))
            out.arrays[f"robust/{p}/{level}/{task.name}"] = s
            out.records["robustness"].append(
                {
                    "method": name,
                    "seed": seed,
                    "task": task.name,
                    "perturbation": p,
                    "level": recorded,
                    "auroc": auroc,
                    "auroc_drop": probes.clean_auroc[task.name] - auroc,
                    **perturbed_cis(probes.scores[task.name], s, te, ctx.bench.bootstrap, seed),
                    **{key: float(drift[key]) for key in DRIFT_KEYS},
                    **extra,
                }
            )
    return out


def evaluate_embeddings(
    spec: RunSpec,
    run_dir: Path,
    z: Embeddings,
    held: np.ndarray,
    d: int,
    ctx: ProbeContext,
    perturbed: Callable[[TaskProbes], Iterable[tuple[str, float, float, np.ndarray, dict]]],
    say: Callable[[str], None],
) -> RunResult:
    """The measurements every run gets, whatever its modality.

    Geometry of the backbone (and projector) outputs on the held-out rows, the training curve,
    probes (full data, k-shot, whitened control) and robustness: ``perturbed(probes)`` yields
    the held-out rows' embeddings under each perturbation (see :func:`robustness_records`).

    Args:
        spec: the run.
        run_dir: its directory (for the training curve).
        z: the evaluation rows' embeddings, in row order.
        held: boolean mask of the held-out evaluation rows.
        d: the backbone's width.
        ctx: the probes' context.
        perturbed: the robustness embeddings (called only when perturbations are set).
        say: one-line progress messages.
    """
    base = {"method": spec.name, "seed": spec.seed}
    geometry = [{**base, "output": "backbone", **geometry_record(z.backbone[held])}]
    if z.projector is not None:
        geometry.append({**base, "output": "projector", **geometry_record(z.projector[held])})
    result = RunResult(
        {
            "geometry": geometry,
            "training_curves": [{**base, "output": "backbone", "d": d, **training_curve(run_dir)}],
            "probes": [],
            "robustness": [],
            "temporal": [],
        },
        {"held_out": z.backbone[held]},
    )
    say(f"{spec.key}: probes")
    probes = probe_tasks(spec.name, spec.seed, z.backbone, ctx)
    result.records["probes"] += probes.records
    result.arrays.update({f"scores/{t}": s for t, s in probes.scores.items()})
    if ctx.bench.perturbations and ctx.tasks:
        say(f"{spec.key}: robustness")
        rob = robustness_records(
            spec.name, spec.seed, ctx, probes, z.backbone[held], perturbed(probes)
        )
        result.records["robustness"] += rob.records["robustness"]
        result.arrays.update(rob.arrays)
    return result
