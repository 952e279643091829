"""``run_benchmark``: train every method under one budget, evaluate, write results and report.

One orchestrator for every modality. What differs between patient histories and notes (the
tasks, the rows every method embeds, how a run is embedded and perturbed, the probe-only
baselines) is a *data source* (:mod:`densefeat.benchmark.sources`); everything else is here:
the runs and their reuse, the evaluations and their reuse, seed alignment, the primary endpoints
with their shared bootstrap, the isotropic references, ``results.json`` and the report.

Layout of the output directory::

    OUT/labels/                      task labels the benchmark built or wrote
    OUT/runs/<name>/seed<s>/         one densefeat train run per method/ablation and seed
    OUT/eval/<name>/seed<s>.json     its evaluation records (+ .npz arrays), with a fingerprint
    OUT/results.json                 every number (docs/results-schema.md)
    OUT/results.md, OUT/report.html  rendered from results.json

Interrupted benchmarks resume: a finished run whose config matches is reused, a partial one
resumed (:mod:`densefeat.benchmark.runs`), and an evaluation is reused only when its fingerprint
matches (:mod:`densefeat.benchmark.cache`); anything stale is recomputed. ``results.json`` and
the report are written last, atomically, so a killed benchmark never leaves a results file that
mixes old and new numbers.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from .. import __version__
from ..io.atomic import write_text_atomic
from ..train.checkpoint import latest_checkpoint
from .cache import file_fingerprint, fingerprint, load_eval, save_eval
from .config import BENCHMARK_VERSION, BenchmarkConfig, RunSpec
from .endpoints import macro_perturbed_auroc, resampled_perturbed_auroc
from .evaluate import ProbeContext, RunResult
from .geometry import one_thread, reference_record
from .runs import ensure_run, run_config
from .small import adapt_to_data
from .sources import Source, open_source
from .summary import (
    compare,
    compare_pair,
    hybrid_ablation,
    kshot_differences,
    macro_auroc,
    macro_drop,
    macro_tuning_auroc,
    resampled_endpoints,
    seed_pairs,
    summary_table,
)
from .tuning import apply_chosen, collapse_flags, tune

__all__ = ["RESULTS_KIND", "RESULTS_VERSION", "run_benchmark"]

RESULTS_KIND = "densefeat.benchmark"
RESULTS_VERSION = 1
#: Seed of the shared bootstrap resamples of the held-out subjects (or note groups).
BOOTSTRAP_SEED = 12345
#: Sections of results.json that runs fill with records.
SECTIONS = (
    "geometry",
    "training_curves",
    "probes",
    "robustness",
    "temporal",
    "alignment",
    "external",
)
#: Errors a measurement may raise on data too small or degenerate for it: recorded in
#: results.json ``errors`` (never discarding a trained run), everything else propagates.
METRIC_ERRORS = (ValueError, ArithmeticError, RuntimeError, np.linalg.LinAlgError)


def _versions() -> dict[str, str]:
    import sklearn

    return {
        "densefeat": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "polars": pl.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
    }


def _machine(device: torch.device) -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "device": str(device)
        + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
        "torch_threads": torch.get_num_threads(),
        # 1, 5 and 15-minute load averages at the end: wall times mean little without them
        # on a shared machine (None where the platform has none).
        "load_average": _load_average(),
    }


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover - Windows
        return None


def _device(bench: BenchmarkConfig) -> torch.device:
    if bench.device == "cuda" or (bench.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def shared_resamples(
    ctx: ProbeContext, n_boot: int, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per task: (held-out labels, (B, n) row weights) of ONE shared subject-level resample."""
    subjects = np.unique(
        np.concatenate(
            [
                ctx.eval_rows.task_rows[t.name]
                .filter(pl.col("split") == "held_out")["subject_id"]
                .to_numpy()
                for t in ctx.tasks
            ]
        )
    )
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(subjects.size, np.full(subjects.size, 1 / subjects.size), n_boot)
    out = {}
    for t in ctx.tasks:
        te = ctx.eval_rows.task_rows[t.name].filter(pl.col("split") == "held_out")
        idx = np.searchsorted(subjects, te["subject_id"].to_numpy())
        out[t.name] = (te["boolean_value"].to_numpy().astype(np.int64), counts[:, idx])
    return out


def prepare(
    data: str | os.PathLike[str],
    out: Path,
    bench: BenchmarkConfig,
    *,
    labels: list[Path] | None,
    say: Callable[[str], None],
    device: torch.device,
    external: str | os.PathLike[str] | None = None,
    external_labels: list[Path] | None = None,
    **source_options: Any,
) -> tuple[Source, BenchmarkConfig, list[RunSpec], list[Any], dict[str, Any]]:
    """Open the data source, fit the settings to the data and list the runs.

    Returns ``(source, resolved bench, specs, eval_fp_base, adapted)``, what
    :func:`train_and_evaluate` needs (shared by the sequential run and the workers of
    :mod:`densefeat.benchmark.fanout`, so both fingerprint alike); ``adapted`` is
    :func:`~densefeat.benchmark.small.adapt_to_data`'s record.

    Raises:
        ValueError: bad settings (named), an ``out`` that is not a directory, or no run.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    # The source reads the data before creating OUT: unreadable data leaves nothing behind.
    source = open_source(bench, data, out, labels=labels, say=say, device=device, **source_options)
    # Windows, batch size, k and cross-fitting fitted to the data (densefeat.benchmark.small),
    # before the runs are listed and fingerprinted, so workers adapt alike.
    adapted = adapt_to_data(source, say)
    bench = source.bench  # with the source's resolved settings (e.g. the jitter scale)
    site = None
    if external is not None:
        if bench.modality != "ehr":
            raise ValueError("--external is for EHR benchmarks (MEDS directories)")
        from .external import ExternalSite

        site = ExternalSite(external, external_labels, source, out, say)
        source.external = site
    specs = source.prepare_specs(bench.runs())
    if not specs:
        raise ValueError("no run left to train")
    eval_settings = {
        k: v
        for k, v in bench.to_dict().items()
        # trials: a run's evaluation depends on its config (tuned overrides included), not on
        # how many trials chose it.
        if k not in ("methods", "ablations", "seeds", "device", "scale", "trials")
    }
    eval_fp_base = [
        BENCHMARK_VERSION,
        source.content,
        eval_settings,
        [t.fingerprint() for t in source.tasks],
        *source.rows_fingerprint(),
        # Workers of densefeat.benchmark.fanout are not given the external site: their
        # evaluations then differ in fingerprint and the merging pass redoes them with it.
        *([] if site is None else ["external", *site.fingerprint()]),
    ]
    return source, bench, specs, eval_fp_base, adapted


def train_and_evaluate(
    specs: list[RunSpec],
    source: Source,
    out: Path,
    eval_fp_base: list[Any],
    *,
    say: Callable[[str], None],
    progress: Any = None,
) -> tuple[dict[str, list], dict[tuple[str, int], dict[str, np.ndarray]], dict[str, float]]:
    """Train (or reuse) every run and evaluate it (or reuse its evaluation), in order.

    An evaluation is reused only when its fingerprint (``eval_fp_base``, the run's config and a
    hash of its checkpoint weights) matches the saved one.

    Returns:
        ``(results, arrays, run_seconds)``: the records of every section, the arrays of each
        ``(name, seed)`` and the wall-clock of each run (training + evaluation).
    """
    bench = source.bench
    results: dict[str, list] = {key: [] for key in SECTIONS}
    arrays: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    run_seconds: dict[str, float] = {}
    for i, spec in enumerate(specs, 1):
        t0 = time.perf_counter()
        on_step = None
        if progress is not None:
            bar = progress.add_task(f"[{i}/{len(specs)}] train {spec.key}", total=bench.budget)

            def on_step(s: int, bar: Any = bar) -> None:
                progress.update(bar, completed=s)

        run_dir, what = ensure_run(
            spec,
            bench,
            source.data,
            out / "runs",
            source.run_labels(spec),
            on_step=on_step,
            identity=source.run_identity(spec),
        )
        if progress is not None:
            progress.update(bar, completed=bench.budget)
        ckpt = latest_checkpoint(run_dir)
        fp = fingerprint(
            eval_fp_base,
            json.loads((run_dir / "config.json").read_text()),
            file_fingerprint(ckpt / "model.safetensors"),
        )
        eval_path = out / "eval" / spec.name / f"seed{spec.seed}.json"
        result = load_eval(eval_path, fp)
        if result is None:
            say(f"[{i}/{len(specs)}] {spec.key}: {what}; evaluating")
            t_eval = time.perf_counter()
            try:
                result = source.evaluate(spec, run_dir)
            except METRIC_ERRORS as e:
                # The run stays on disk (a rerun reuses it); its evaluation is recorded as
                # failed and retried next time, and the other runs go on.
                say(f"{spec.key}: evaluation failed: {type(e).__name__}: {e}")
                results.setdefault("errors", []).append(
                    {"method": spec.name, "seed": spec.seed, "stage": "evaluate", "error": str(e)}
                )
                run_seconds[spec.key] = time.perf_counter() - t0
                continue
            save_eval(eval_path, fp, result)
            # Closes the evaluation's last step in the log: without it, the next run's training
            # (which says nothing until it ends) reads as part of that step.
            say(f"{spec.key}: evaluated in {time.perf_counter() - t_eval:.1f} s")
        else:
            say(f"[{i}/{len(specs)}] {spec.key}: {what}; evaluation reused")
        for key, recs in result.records.items():
            results[key] += recs
        arrays[(spec.name, spec.seed)] = result.arrays
        run_seconds[spec.key] = time.perf_counter() - t0
    return results, arrays, run_seconds


def _add(results: dict[str, list], result: RunResult) -> None:
    for key, recs in result.records.items():
        results[key] += recs


def _alignment(
    names: list[str],
    arrays: dict[tuple[str, int], dict[str, np.ndarray]],
    k: int,
    errors: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Seed alignment of every method: the same held-out rows, every pair of seeds."""
    from ..eval.temporal import seed_alignment

    records = []
    for name in names:
        seeds = [s for (m, s) in arrays if m == name and "held_out" in arrays[(m, s)]]
        for a, b in seed_pairs(seeds):
            try:
                with one_thread():
                    za, zb = arrays[(name, a)]["held_out"], arrays[(name, b)]["held_out"]
                    al = seed_alignment(za, zb, k)
            except METRIC_ERRORS as e:
                if errors is not None:
                    errors.append({"method": name, "stage": "alignment", "error": str(e)})
                continue
            records.append(
                {"method": name, "kind": "seeds", "a": f"seed{a}", "b": f"seed{b}", **al}
            )
    return records


def run_benchmark(
    data: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    bench: BenchmarkConfig,
    *,
    labels: list[Path] | None = None,
    dataset_name: str | None = None,
    external: str | os.PathLike[str] | None = None,
    external_labels: list[Path] | None = None,
    say: Callable[[str], None] = print,
    progress: Any = None,
    workers: int = 1,
    **source_options: Any,
) -> dict[str, Any]:
    """Run the benchmark and write ``results.json``, ``results.md`` and ``report.html``.

    Args:
        data: a MEDS dataset directory (``bench.modality`` ehr), or notes (text: a note table
            file or a MEDS directory with notes).
        out_dir: the output directory (created; reused parts are kept, see module docstring).
        bench: what to run (``bench.modality`` picks the data source).
        labels: MEDS label files (ehr; one task each); default: the data's own or built-in
            tasks.
        dataset_name: a display name for the report.
        external: a second site's MEDS directory (ehr): every run is also validated there
            (:mod:`densefeat.benchmark.external`).
        external_labels: the second site's label files (default: its own or built-in tasks).
        say: receives one-line progress messages.
        progress: an optional ``rich.progress.Progress`` to show training steps in.
        workers: train and evaluate the runs in this many local processes (one GPU each,
            round robin, where there are several), then merge (:mod:`densefeat.benchmark.fanout`).
        **source_options: the data source's own options (text: ``min_positives``,
            ``max_tasks``, ``baselines``).

    Returns:
        the results dict (as written to ``results.json``).

    Raises:
        ValueError: bad settings (named), or no run left to train.
        RuntimeError: a worker's run failed (``workers`` > 1; named, with its error).
    """
    from ..report import render

    t_start = time.perf_counter()
    out = Path(out_dir)
    device = _device(bench)
    requested = bench
    source, bench, specs, eval_fp_base, adapted = prepare(
        data, out, bench, labels=labels, say=say, device=device,
        external=external, external_labels=external_labels, **source_options,
    )  # fmt: skip
    site = getattr(source, "external", None)  # the --external site, set by prepare
    say(f"{source.describe()}, {len(specs)} runs")
    # Fair tuning (densefeat.benchmark.tuning): the same seeded random search for every
    # trained method, chosen on the tuning split; the comparison's runs use the choice.
    tuning: dict[str, Any] | None = None
    if bench.trials > 1 and source.modality not in ("ehr", "multimodal"):
        tuning = {
            "trials": bench.trials,
            "skipped": f"tuning is not implemented for "
            f"{source.modality} yet: every method at its defaults",
            "methods": {},
        }
        say(tuning["skipped"])
    elif bench.trials > 1:
        tuning = tune(source, out, eval_fp_base, [s.method for s in specs], say=say)
        specs = apply_chosen(specs, tuning)

    if workers > 1 and tuning is not None and tuning["methods"]:
        # The workers rebuild each run from its key, without the chosen configuration, so
        # tuned runs are trained here (passing the choices to workers is not built yet).
        say("--workers: tuned runs are trained in this process (--trials > 1)")
        workers = 1
    if workers > 1:
        # Every run in worker processes first (each caches its run and evaluation in OUT);
        # the pass below then only merges: it reuses them all (the resume rules).
        from .fanout import run_workers

        worker_seconds = run_workers(
            data, out, requested, specs, workers, labels=labels, say=say, **source_options
        )

    results, arrays, run_seconds = train_and_evaluate(
        specs, source, out, eval_fp_base, say=say, progress=progress
    )
    if workers > 1:
        run_seconds.update(worker_seconds)  # the workers' wall-clock, not the merge's
    names = list(dict.fromkeys(s.name for s in specs))
    for name, result in source.baselines(eval_fp_base):
        _add(results, result)
        arrays[(name, 0)] = result.arrays
        names.append(name)
    for _, result in getattr(source, "controls", lambda fp: [])(eval_fp_base):
        _add(results, result)  # controls (ICU hours): reported, never a baseline candidate
    results.setdefault("errors", [])
    results["alignment"] += _alignment(names, arrays, bench.k, results["errors"])
    if any(r.get("kind") == "modalities" for r in results["alignment"]):
        # Multimodal runs: dense minus each method on the cross-modal table, paired resamples.
        from ..eval.crossmodal import paired_alignment_differences

        results["crossmodal_comparison"] = paired_alignment_differences(
            results["alignment"], arrays
        )

    # Primary endpoints with a shared patient-level bootstrap of the held-out subjects.
    comparison = None
    if source.tasks:
        shared = shared_resamples(source.ctx, bench.bootstrap, seed=BOOTSTRAP_SEED)
        auroc_fn, drop_fn = resampled_endpoints(arrays, source.tasks, shared, bench.perturbations)
        # The best baseline is chosen on the tuning split (docs/design.md, Baselines), then
        # compared with dense on held-out rows; the untrained encoder is compared on its own.
        selection = macro_tuning_auroc(results["probes"])
        held = macro_auroc(results["probes"])
        comparison = {
            "endpoint": "probe_auroc_macro",
            "n_bootstrap": bench.bootstrap,
            **getattr(source, "comparison_record", dict)(),
            **(compare(held, auroc_fn, names, select_by=selection) or {}),
            "tuning_auroc": {
                m: float(np.mean([v for (mm, _), v in selection.items() if mm == m]))
                for m in dict.fromkeys(m for m, _ in selection)
            },
            "untrained": compare_pair(held, auroc_fn, "dense", "random"),
            # Secondary: the masked+dense hybrid against each of its parts.
            "hybrid": hybrid_ablation(held, auroc_fn),
            # Exploratory, not a declared endpoint: k-shot AUROC against the untrained encoder.
            "label_efficiency": kshot_differences(results["probes"], "dense", "random"),
            "robustness": compare(
                macro_drop(results["robustness"]),
                drop_fn,
                names,
                lower_is_better=True,
                select_by=selection,
            ),
            # The primary robustness endpoint: AUROC under perturbation (the drop beside it).
            "robustness_auroc": compare(
                macro_perturbed_auroc(results["robustness"]),
                resampled_perturbed_auroc(arrays, source.tasks, shared, bench.perturbations),
                names,
                select_by=selection,
            ),
        }

    # The isotropic reference of every (n, d) measured.
    shapes = sorted(
        {(g["n"], g["d"]) for g in results["geometry"]}
        | {(c["n"], c["d"]) for c in results["training_curves"] if c.get("n")}
    )
    with one_thread():
        reference = [reference_record(n, d, min(bench.k, n - 1, d)) for n, d in shapes if n >= 2]

    res: dict[str, Any] = {
        "kind": RESULTS_KIND,
        "version": RESULTS_VERSION,
        "scale": bench.scale,
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dataset": source.dataset_record(dataset_name),
        "config": {
            "methods": [n for n in names if n not in bench.ablations],
            "ablations": [n for n in names if n in bench.ablations],
            "seeds": list(range(bench.seeds)),
            "budget_steps": bench.budget,
            "batch_size": run_config(specs[0], bench).batch_size,
            "train": run_config(RunSpec("dense", "dense", 0), bench).to_dict(),
            "k": bench.k,
            "k_requested": adapted["k_requested"],
            "probe_folds": bench.probe_folds,
            "crossfit_tasks": adapted["crossfit"],
            "adaptations": adapted["adaptations"],
            "benchmark": bench.to_dict(),
            **source.config_record(),
        },
        "versions": _versions(),
        "machine": _machine(device),
        "run_seconds": run_seconds,
        "tasks": [source.task_summary(t) for t in source.tasks],
        "tasks_skipped": source.skipped,
        **source.results_record(),
        **({} if site is None else {"external_site": site.record()}),
        **results,
        "reference": reference,
        "comparison": comparison,
    }
    res["tuning"] = tuning
    table = summary_table(res, names)
    collapse_flags(table, results["training_curves"])
    source.finish_table(table)
    res["table"] = table
    res["seconds"] = time.perf_counter() - t_start
    write_text_atomic(out / "results.json", json.dumps(res, indent=1, allow_nan=False) + "\n")
    render(res, out)
    return res
