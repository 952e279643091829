"""Benchmark fan-out: the runs (method x seed) are independent, so they can be trained and
evaluated in parallel and then merged.

One mechanism serves every engine. Each run leaves its result in ``OUT``: its run directory
and its evaluation, both fingerprinted (:mod:`densefeat.benchmark.cache`), and a plain
benchmark over the same ``OUT`` reuses whatever is cached and still matches
(:mod:`densefeat.benchmark.runs`). So a fan-out is "fill the cache in parallel, then run the
plain benchmark", which only merges. The merged ``results.json`` is the sequential one: the
same records from the same cached evaluations, and the same aggregation code.

* **Local processes**: ``densefeat benchmark ... --workers N`` (``run_benchmark(...,
  workers=N)``): N spawned processes take runs from a queue; with several GPUs, worker ``i``
  uses GPU ``i mod n_gpus``. Each gets ``torch threads // N`` threads (at least 1) so the
  workers do not oversubscribe the cores.
* **A job list** (SLURM arrays, Ray, a shell loop): ``densefeat benchmark ... --plan
  jobs.txt`` writes one command per run, ``densefeat benchmark ... --only dense/seed0``, and
  stops. Run the lines anywhere that sees ``OUT`` (e.g. ``sed -n "${SLURM_ARRAY_TASK_ID}p"
  jobs.txt | bash`` with ``--array=1-<lines>``), then the same command without ``--plan``
  merges.

Guarantees are the sequential run's: a run killed midway is resumed by the next attempt at
it, a stale one retrained, nothing is mixed (the identity and fingerprint rules). Each
worker opens the data source itself; the files a source writes into ``OUT`` (task labels)
are written atomically with the same content by every process. Two processes must not work
on the *same* run at once (they would share its run directory): the queue and the job list
give each run to one process. On CPU a run's floating-point results can depend on its torch
thread count; the test (2 workers vs 1, one thread each) compares like with like.
"""

from __future__ import annotations

import argparse
import os
import queue
import shlex
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .config import BenchmarkConfig, RunSpec

__all__ = ["plan_commands", "run_only", "run_workers", "select_specs"]


def select_specs(specs: Sequence[RunSpec], keys: Sequence[str]) -> list[RunSpec]:
    """The specs whose :attr:`RunSpec.key` (``name/seed<s>``) is in ``keys``, in ``keys``' order.

    Raises:
        ValueError: a key that is not a run of this benchmark (named, with the valid ones).
    """
    by_key = {s.key: s for s in specs}
    unknown = [k for k in keys if k not in by_key]
    if unknown:
        raise ValueError(
            f"--only {','.join(unknown)}: not a run of this benchmark; its runs are "
            f"{', '.join(by_key)}"
        )
    return [by_key[k] for k in dict.fromkeys(keys)]


def run_only(
    data: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    bench: BenchmarkConfig,
    keys: Sequence[str],
    *,
    labels: list[Path] | None = None,
    say: Callable[[str], None] = print,
    progress: Any = None,
    **source_options: Any,
) -> dict[str, float]:
    """Train and evaluate only the runs ``keys`` (``name/seed<s>``), caching them in ``OUT``;
    no ``results.json`` (a later plain benchmark merges). Returns each run's seconds.

    Raises:
        ValueError: an unknown key (named), or the errors of ``run_benchmark``.
    """
    from .run import _device, prepare, train_and_evaluate

    out = Path(out_dir)
    source, _, specs, fp_base, _ = prepare(
        data, out, bench, labels=labels, say=say, device=_device(bench), **source_options
    )
    chosen = select_specs(specs, keys)
    return train_and_evaluate(chosen, source, out, fp_base, say=say, progress=progress)[2]


def plan_keys(
    data: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    bench: BenchmarkConfig,
    *,
    labels: list[Path] | None = None,
    say: Callable[[str], None] = print,
    **source_options: Any,
) -> list[str]:
    """The keys of every run the benchmark would train (after the source's own choices, e.g.
    ``supervised`` dropped without a task)."""
    from .run import _device, prepare

    specs = prepare(
        data, Path(out_dir), bench, labels=labels, say=say, device=_device(bench),
        **source_options,
    )[2]  # fmt: skip
    return [s.key for s in specs]


def plan_commands(command: Sequence[str], keys: Sequence[str]) -> list[str]:
    """One shell line per run: ``command --only KEY`` (quoted for a POSIX shell)."""
    return [shlex.join([*command, "--only", key]) for key in keys]


def command_of(args: argparse.Namespace, parser: argparse.ArgumentParser, skip: set[str]):
    """The argument list that reproduces ``args`` (options at their default left out; paths
    absolute, so the line runs from any directory)."""
    argv: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest in skip or action.dest == "help":
            continue
        value = getattr(args, action.dest, action.default)
        if value is None or value == action.default:
            continue
        opt = next((o for o in action.option_strings if o.startswith("--")), action.dest)

        def text(v: Any) -> str:
            if isinstance(v, Path):
                return str(v.resolve())
            if isinstance(v, tuple):
                return ",".join(v)
            return str(v)

        if isinstance(action, argparse._AppendAction):
            for v in value:
                argv += [opt, text(v)]
        elif action.nargs in ("+", "*"):
            argv += [opt, *(text(v) for v in value)]
        else:
            argv += [opt, text(value)]
    return argv


# --------------------------------------------------------------------------------------------
# Local worker processes.


def _worker(
    index: int,
    n_gpus: int,
    threads: int,
    job: dict[str, Any],
    tasks: Any,
    results: Any,
) -> None:
    """One worker: open the source once, then train and evaluate the keys it takes from
    ``tasks`` until the ``None`` sentinel; report on ``results``."""
    torch.set_num_threads(threads)
    if n_gpus > 1:
        torch.cuda.set_device(index % n_gpus)

    def say(line: str) -> None:
        results.put(("say", index, line))

    try:
        from .run import _device, prepare, train_and_evaluate

        out = Path(job["out"])
        bench = job["bench"]
        source, _, specs, fp_base, _ = prepare(
            job["data"], out, bench, labels=job["labels"], say=say, device=_device(bench),
            **job["source_options"],
        )  # fmt: skip
        by_key = {s.key: s for s in specs}
    except BaseException:
        results.put(("fatal", index, traceback.format_exc()))
        return
    while (key := tasks.get()) is not None:
        try:
            seconds = train_and_evaluate([by_key[key]], source, out, fp_base, say=say)[2]
            results.put(("done", key, seconds[key]))
        except BaseException:
            results.put(("error", key, traceback.format_exc()))


def run_workers(
    data: str | os.PathLike[str],
    out: Path,
    bench: BenchmarkConfig,
    specs: Sequence[RunSpec],
    workers: int,
    *,
    labels: list[Path] | None = None,
    say: Callable[[str], None] = print,
    **source_options: Any,
) -> dict[str, float]:
    """Train and evaluate ``specs`` in ``workers`` spawned processes (module docstring);
    each caches its results in ``out``. Returns each run's seconds (in its worker).

    Raises:
        ValueError: ``workers`` < 1.
        RuntimeError: runs that failed or that no worker finished (named, with the errors).
    """
    import multiprocessing as mp

    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    n = min(workers, len(specs))
    n_gpus = torch.cuda.device_count() if bench.device != "cpu" else 0
    threads = max(1, torch.get_num_threads() // n)
    job = {
        "data": data,
        "out": str(out),
        "bench": bench,
        "labels": labels,
        "source_options": source_options,
    }
    ctx = mp.get_context("spawn")  # no fork of a process that holds torch threads or CUDA
    tasks, results = ctx.Queue(), ctx.Queue()
    for spec in specs:
        tasks.put(spec.key)
    for _ in range(n):
        tasks.put(None)
    say(f"{len(specs)} runs in {n} worker processes ({threads} torch threads each)")
    procs = [
        ctx.Process(target=_worker, args=(i, n_gpus, threads, job, tasks, results))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    pending = {s.key for s in specs}
    seconds: dict[str, float] = {}
    errors: dict[str, str] = {}
    fatal: list[str] = []

    def handle(msg: tuple) -> None:
        kind, who, payload = msg
        if kind == "say":
            say(f"[worker {who}] {payload}")
        elif kind == "done":
            pending.discard(who)
            seconds[who] = payload
        elif kind == "error":
            pending.discard(who)
            errors[who] = payload
        else:  # fatal: the worker could not start; the others take its share
            say(f"[worker {who}] could not start:\n{payload}")
            fatal.append(payload)

    try:
        while pending:
            try:
                handle(results.get(timeout=0.5))
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    break
        # Messages a finished worker flushed just before exiting.
        deadline = time.monotonic() + 5
        while pending and time.monotonic() < deadline:
            try:
                handle(results.get(timeout=0.1))
            except queue.Empty:
                pass
    finally:
        for p in procs:
            if p.is_alive() and pending:
                p.terminate()
            p.join()
    if errors or pending:
        lines = [f"{k}:\n{v.rstrip()}" for k, v in errors.items()]
        lines += [f"{k}: no worker finished it" for k in sorted(pending)]
        lines += [f"a worker could not start:\n{f.rstrip()}" for f in fatal[:1] if pending]
        raise RuntimeError("benchmark workers failed:\n" + "\n".join(lines))
    return seconds
