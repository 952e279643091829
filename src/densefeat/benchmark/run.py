"""``run_benchmark``: train every method under one budget, evaluate, write results and report.

Layout of the output directory::

    OUT/labels/<task>.parquet        built-in task labels (when no --labels were given)
    OUT/runs/<name>/seed<s>/         one densefeat train run per method/ablation and seed
    OUT/eval/<name>/seed<s>.json     its evaluation records (+ .npz arrays), with a fingerprint
    OUT/results.json                 every number (docs/results-schema.md)
    OUT/results.md, OUT/report.html  rendered from results.json

Interrupted benchmarks resume: a finished run whose config matches is reused, a partial one
resumed (:mod:`densefeat.benchmark.runs`), and an evaluation is reused only when its fingerprint
(the run's config and checkpoint, the evaluation settings, the task labels and the evaluation
rows) matches; anything stale is recomputed. ``results.json`` and the report are written last,
atomically, so a killed benchmark never leaves a results file that mixes old and new numbers.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from .. import __version__
from ..data.history import HistoryBuilder
from ..data.meds import MedsDataset, read_meds_dataset
from ..train.checkpoint import latest_checkpoint
from .config import BENCHMARK_VERSION, BenchmarkConfig, RunSpec, fingerprint
from .evaluate import Context, RunResult, evaluate_features, evaluate_run
from .geometry import one_thread
from .rows import Task, load_tasks, select_eval_rows
from .runs import ensure_run, run_config
from .summary import (
    compare,
    macro_auroc,
    macro_drop,
    resampled_endpoints,
    seed_pairs,
    summary_table,
)

__all__ = ["run_benchmark"]

RESULTS_KIND = "densefeat.benchmark"
RESULTS_VERSION = 1


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: str, path: Path) -> None:
    # mkstemp creates 0600 files; results are for reading by others, like any written file.
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_eval(path: Path, fp: str, result: RunResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    os.close(fd)
    np.savez(tmp, **result.arrays)
    _publish(tmp, path.with_suffix(".npz"))
    # The JSON goes last: it is the marker that the evaluation (and its arrays) are complete.
    _write_atomic(path, json.dumps({"fingerprint": fp, "records": result.records}, allow_nan=False))


def _load_eval(path: Path, fp: str) -> RunResult | None:
    npz = path.with_suffix(".npz")
    if not path.is_file() or not npz.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if not isinstance(saved, dict) or saved.get("fingerprint") != fp or "records" not in saved:
        return None
    try:
        with np.load(npz, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError):
        return None  # a damaged array file: recompute
    return RunResult(saved["records"], arrays)


def _file_hash(path: Path) -> str:
    h = hashlib.blake2b(digest_size=12)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _dataset_fingerprint(ds: MedsDataset, root: Path) -> str:
    """What identifies the dataset's content: its metadata, splits and the data files' names,
    sizes and modification times (a re-conversion at the same path changes it)."""
    files = sorted((root / "data").rglob("*.parquet")) + sorted((root / "metadata").glob("*"))
    stats = [(str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return fingerprint(ds.metadata, stats)


def _task_fingerprint(task: Task) -> str:
    # Content hash of the label rows (stable across library versions, unlike polars' hash).
    lab = task.labels
    h = hashlib.blake2b(digest_size=10)
    for col in ("subject_id", "prediction_time", "boolean_value", "split"):
        series = lab[col].cast(pl.Int64) if col == "prediction_time" else lab[col]
        h.update(series.to_numpy().tobytes() if col != "split" else "|".join(series).encode())
    return f"{task.name}:{lab.height}:{h.hexdigest()}"


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


def _device(bench: BenchmarkConfig) -> torch.device:
    if bench.device == "cuda" or (bench.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _shared_resamples(
    ctx: Context, n_boot: int, seed: int
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


def train_and_evaluate(
    specs: list[RunSpec],
    bench: BenchmarkConfig,
    out: Path,
    eval_fp_base: list[Any],
    *,
    ensure: Callable[[RunSpec, Callable[[int], None] | None], tuple[Path, str]],
    evaluate: Callable[[RunSpec, Path], RunResult],
    say: Callable[[str], None],
    progress: Any = None,
) -> tuple[dict[str, list], dict[tuple[str, int], dict[str, np.ndarray]], dict[str, float]]:
    """Train (or reuse) every run and evaluate it (or reuse its evaluation), in order.

    Shared by the EHR and text benchmarks, which differ only in ``ensure`` (how a run is
    trained) and ``evaluate`` (what is measured on it). An evaluation is reused only when its
    fingerprint (``eval_fp_base``, the run's config and a hash of its checkpoint weights)
    matches the saved one.

    Returns:
        ``(results, arrays, run_seconds)``: the records of every section, the arrays of each
        ``(name, seed)`` and the wall-clock of each run (training + evaluation).
    """
    results: dict[str, list] = {
        "geometry": [],
        "training_curves": [],
        "probes": [],
        "robustness": [],
        "temporal": [],
        "alignment": [],
    }
    arrays: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    run_seconds: dict[str, float] = {}
    for i, spec in enumerate(specs, 1):
        t0 = time.perf_counter()
        on_step = None
        if progress is not None:
            bar = progress.add_task(f"[{i}/{len(specs)}] train {spec.key}", total=bench.budget)

            def on_step(s: int, bar: Any = bar) -> None:
                progress.update(bar, completed=s)

        run_dir, what = ensure(spec, on_step)
        if progress is not None:
            progress.update(bar, completed=bench.budget)
        ckpt = latest_checkpoint(run_dir)
        fp = fingerprint(
            eval_fp_base,
            json.loads((run_dir / "config.json").read_text()),
            _file_hash(ckpt / "model.safetensors"),
        )
        eval_path = out / "eval" / spec.name / f"seed{spec.seed}.json"
        result = _load_eval(eval_path, fp)
        if result is None:
            say(f"[{i}/{len(specs)}] {spec.key}: {what}; evaluating")
            result = evaluate(spec, run_dir)
            _save_eval(eval_path, fp, result)
        else:
            say(f"[{i}/{len(specs)}] {spec.key}: {what}; evaluation reused")
        for key, recs in result.records.items():
            results[key] += recs
        arrays[(spec.name, spec.seed)] = result.arrays
        run_seconds[spec.key] = time.perf_counter() - t0
    return results, arrays, run_seconds


def run_benchmark(
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    bench: BenchmarkConfig,
    *,
    labels: list[Path] | None = None,
    dataset_name: str | None = None,
    say: Callable[[str], None] = print,
    progress: Any = None,
) -> dict[str, Any]:
    """Run the benchmark and write ``results.json``, ``results.md`` and ``report.html``.

    Args:
        data_dir: a MEDS dataset directory.
        out_dir: the output directory (created; reused parts are kept, see module docstring).
        bench: what to run.
        labels: MEDS label files (one task each); default: the data's own or built-in tasks.
        dataset_name: a display name for the report.
        say: receives one-line progress messages.
        progress: an optional ``rich.progress.Progress`` to show training steps in.

    Returns:
        the results dict (as written to ``results.json``).
    """
    from ..eval.temporal import seed_alignment
    from ..report import render

    t_start = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    data_dir = str(Path(data_dir).resolve())
    ds = read_meds_dataset(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks_all = load_tasks(ds, data_dir, labels, out, bench.tasks)
    tasks = [t for t in tasks_all if t.skip_reason() is None]
    skipped = [{"task": t.name, "reason": t.skip_reason()} for t in tasks_all if t.skip_reason()]
    for s in skipped:
        say(f"task {s['task']} skipped: {s['reason']}")
    specs = bench.runs()
    sup_task = None
    if any(s.method == "supervised" for s in specs):
        if not tasks:
            say("supervised skipped: no task with labels in every split")
            specs = [s for s in specs if s.method != "supervised"]
        else:
            names = [t.name for t in tasks]
            if bench.supervised_task is not None and bench.supervised_task not in names:
                raise ValueError(
                    f"--supervised-task {bench.supervised_task!r} is not a usable task {names}"
                )
            sup_task = next(t for t in tasks if t.name == (bench.supervised_task or names[0]))
    data_fp = _dataset_fingerprint(ds, Path(data_dir))
    identity = {"benchmark_version": BENCHMARK_VERSION, "dataset": data_fp}
    sup_labels, sup_identity = None, identity
    if sup_task is not None:
        # Rewritten every time (atomically): its content hash is part of the supervised runs'
        # identity, so changed labels retrain supervised instead of reusing the old run.
        sup_labels = out / "labels" / f"{sup_task.name}.supervised.parquet"
        sup_labels.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=sup_labels.parent, suffix=".parquet.tmp")
        os.close(fd)
        sup_task.labels.select("subject_id", "prediction_time", "boolean_value").write_parquet(tmp)
        _publish(tmp, sup_labels)
        sup_identity = {**identity, "labels": _task_fingerprint(sup_task)}

    if bench.jitter_days is None:
        # ICU stays are hourly: +-1 hour; EHR data +-1 day (DESIGN.md Robustness).
        icu = ds.metadata.get("etl_name") == "densefeat.physionet2019"
        bench = replace(bench, jitter_days=1 / 24 if icu else 1.0)
    device = _device(bench)
    ev = select_eval_rows(tasks, bench.max_eval_times)
    # A task can lose a class in a split when its negatives are subsampled: re-check.
    kept = []
    for t in tasks:
        reason = ev.skip_reason(t.name)
        if reason is None:
            kept.append(t)
        else:
            skipped.append({"task": t.name, "reason": reason})
            say(f"task {t.name} skipped: {reason}")
    if len(kept) < len(tasks):
        tasks = kept
        ev = select_eval_rows(tasks, bench.max_eval_times)
    # The store the runs are evaluated on. Every run fits the same builder (training split,
    # same max_len and min_code_subjects); a run whose saved builder differs is evaluated on a
    # store of its own (Context.store_for).
    cfg0 = run_config(specs[0], bench)
    builder = HistoryBuilder.fit(
        ds, split="train", max_len=cfg0.max_len, min_subjects=cfg0.min_code_subjects
    )
    held_ids = ds.split_ids("held_out").to_numpy()
    ctx = Context(bench, ds, builder, ev, tasks, held_ids, device)
    eval_settings = {
        k: v
        for k, v in bench.to_dict().items()
        if k not in ("methods", "ablations", "seeds", "device", "scale")
    }
    eval_fp_base = [
        BENCHMARK_VERSION,
        data_fp,
        eval_settings,
        [_task_fingerprint(t) for t in tasks],
        ev.rows.height,
        ev.rate,
    ]
    say(
        f"{len(tasks)} tasks, {ev.rows.height:,} evaluation rows "
        f"(negatives sampled at rate {ev.rate:.3f}), {len(specs)} runs"
    )

    results, arrays, run_seconds = train_and_evaluate(
        specs,
        bench,
        out,
        eval_fp_base,
        ensure=lambda spec, on_step: ensure_run(
            spec,
            bench,
            data_dir,
            out / "runs",
            sup_labels,
            identity=sup_identity if spec.method == "supervised" else identity,
            on_step=on_step,
        ),
        evaluate=lambda spec, run_dir: evaluate_run(spec, run_dir, ctx, say=say),
        say=say,
        progress=progress,
    )

    names = list(dict.fromkeys(s.name for s in specs))
    # Count features (log code counts, vocabulary from the training split) + the same probe.
    if tasks:
        say("count features baseline")
        from ..data.features import code_count_features

        vocab = [
            c
            for c in builder.vocabulary.code_table()["code"].to_list()
            if not c.startswith("MEDS_")
        ]
        fp = fingerprint(eval_fp_base, vocab)
        eval_path = out / "eval" / "count_features" / "seed0.json"
        result = _load_eval(eval_path, fp)
        if result is None:
            events = ds.events().select("subject_id", "time", "code")
            x = code_count_features(
                events,
                ev.rows.select("subject_id", pl.col("prediction_time").alias("cutoff")),
                vocab,
            )
            result = evaluate_features("count_features", x, ctx)
            _save_eval(eval_path, fp, result)
        results["probes"] += result.records["probes"]
        arrays[("count_features", 0)] = result.arrays
        names.append("count_features")

    # Alignment across seeds of one method: the same held-out rows.
    for name in names:
        seeds = [s for (m, s) in arrays if m == name and "held_out" in arrays[(m, s)]]
        for a, b in seed_pairs(seeds):
            with one_thread():
                al = seed_alignment(
                    arrays[(name, a)]["held_out"], arrays[(name, b)]["held_out"], bench.k
                )
            results["alignment"].append(
                {"method": name, "kind": "seeds", "a": f"seed{a}", "b": f"seed{b}", **al}
            )

    # Primary endpoints with a shared patient-level bootstrap of the held-out subjects.
    comparison = None
    if tasks:
        shared = _shared_resamples(ctx, bench.bootstrap, seed=12345)

        resampled_auroc, resampled_drop = resampled_endpoints(
            arrays, tasks, shared, bench.perturbations
        )

        comparison = {
            "endpoint": "probe_auroc_macro",
            "n_bootstrap": bench.bootstrap,
            **(compare(macro_auroc(results["probes"]), resampled_auroc, names) or {}),
            "robustness": compare(
                macro_drop(results["robustness"]), resampled_drop, names, lower_is_better=True
            ),
        }

    # The isotropic reference of every (n, d) measured.
    from .geometry import reference_record

    shapes = sorted(
        {(g["n"], g["d"]) for g in results["geometry"]}
        | {(c["n"], c["d"]) for c in results["training_curves"] if c.get("n")}
    )
    reference = [reference_record(n, d, bench.k) for n, d in shapes if n >= 2]

    splits = ds.splits.group_by("split").len()
    res: dict[str, Any] = {
        "kind": RESULTS_KIND,
        "version": RESULTS_VERSION,
        "scale": bench.scale,
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dataset": {
            "name": dataset_name or Path(data_dir).name,
            "path": data_dir,
            "n_subjects": int(ds.splits.height),
            "n_subjects_per_split": dict(
                zip(splits["split"], splits["len"].cast(int), strict=True)
            ),
        },
        "config": {
            "methods": [n for n in names if n not in bench.ablations],
            "ablations": [n for n in names if n in bench.ablations],
            "seeds": list(range(bench.seeds)),
            "budget_steps": bench.budget,
            "batch_size": cfg0.batch_size,
            "train": run_config(RunSpec("dense", "dense", 0), bench).to_dict(),
            "window_days": cfg0.window_days,
            "k": bench.k,
            "benchmark": bench.to_dict(),
            "supervised_task": None if sup_task is None else sup_task.name,
            "eval_negative_rate": ev.rate,
        },
        "versions": _versions(),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "device": str(device)
            + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
            "torch_threads": torch.get_num_threads(),
        },
        "run_seconds": run_seconds,
        "tasks": [_task_summary(t, ev) for t in tasks],
        "jitter_days": bench.jitter_days,
        "tasks_skipped": skipped,
        **results,
        "reference": reference,
        "comparison": comparison,
    }
    res["table"] = summary_table(res, names)
    res["seconds"] = time.perf_counter() - t_start
    _write_atomic(out / "results.json", json.dumps(res, indent=1, allow_nan=False) + "\n")
    render(res, out)
    return res


def _task_summary(task: Task, ev) -> dict[str, Any]:
    rows = ev.task_rows[task.name]
    counts = {s: rows.filter(pl.col("split") == s) for s in ("train", "tuning", "held_out")}
    te = counts["held_out"]
    full = task.labels.filter(pl.col("split") == "held_out")
    return {
        "name": task.name,
        "source": task.source,
        "n_train": counts["train"].height,
        "n_tuning": counts["tuning"].height,
        "n_test": te.height,
        "positives_test": int(te["boolean_value"].sum()),
        # Prevalence of the full held-out labels (the evaluation sample may hold fewer negatives).
        "prevalence_test": float(full["boolean_value"].mean()),
    }
