"""Throughput and peak memory of the PhysioNet 2019 path: conversion, then batches on the result.

Runs, each in its own child process (peak RSS = that child's ``ru_maxrss`` from ``os.wait4``):

* ``convert``: ``densefeat convert physionet2019 SRC --out TMP`` end to end (the console script,
  with interpreter start-up and imports) on the whole training set A, straight from its
  ``.tar.xz`` (20,336 files, 790,215 hourly rows). rows/s and events/s are over the wall time
  of the child; the conversion's own phases (read + check, and everything) are printed beside.
* ``batches``: on the converted dataset, ``HistoryBuilder.fit`` on the training split, ``encode``
  of every subject, then ``EventStore.gather`` of ``--batches`` batches (default 100) of 256
  label rows drawn (seeded) from ``labels/sepsis_6h.parquet``, L = 256; events/s = events that
  entered the batches / gather seconds. Also the 12-hour window pairs of the stays
  (``stay_window_cuts`` + ``window_pairs``) and the gather of 100 paired batches of 256.

Target (issue 6): the whole set A converted in under 2 minutes on the 2-core dev machine.

Usage::

    python benchmarks/physionet2019.py
    python benchmarks/physionet2019.py --src DIR_OR_TAR --keep /tmp/pn-bench
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _child import run_child

GIB = 2**30
BATCH = 256
MAX_LEN = 256
_SHARED = Path(
    os.environ.get("DENSEFEAT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
DEFAULT_SRC = _SHARED / "physionet2019" / "training_setA.tar.xz"


def stage_convert(src: Path, out: Path) -> None:
    """Convert (timed inside the child too) and print the counts as JSON."""
    from densefeat.data.convert.physionet2019 import convert_physionet2019

    report = convert_physionet2019(src, out, overwrite=True)
    print(
        json.dumps(
            {
                "files": report.files,
                "rows": report.rows,
                "events": report.events,
                "read_s": report.read_seconds,
                "convert_s": report.seconds,
                "tasks": report.task_counts,
            }
        )
    )


def stage_batches(root: Path, n_batches: int, seed: int) -> None:
    """Fit, encode, gather label batches and window-pair batches; print timings as JSON."""
    import numpy as np
    import polars as pl

    from densefeat.data.convert.physionet2019 import stay_window_cuts
    from densefeat.data.ehr import HistoryBuilder
    from densefeat.data.ehr.windows import pair_batches, window_pairs
    from densefeat.data.meds import read_labels, read_meds_dataset

    t0 = time.perf_counter()
    ds = read_meds_dataset(root, validate=False)
    labels = read_labels(root / "labels" / "sepsis_6h.parquet")
    t1 = time.perf_counter()
    builder = HistoryBuilder.fit(ds, max_len=MAX_LEN)
    t2 = time.perf_counter()
    store = builder.encode(ds)
    t3 = time.perf_counter()
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, labels.height, size=(n_batches, BATCH))
    sid = labels["subject_id"].to_numpy()
    pt = labels["prediction_time"].cast(pl.Int64).to_numpy()
    in_batches = 0
    for rows in picks:
        batch = store.gather(sid[rows], pt[rows], MAX_LEN)
        in_batches += int(batch.mask.sum())
    t4 = time.perf_counter()
    cuts = stay_window_cuts(store, every_hours=12)
    pairs = window_pairs(store, cuts)
    t5 = time.perf_counter()
    in_pairs = 0
    for rows in rng.integers(0, pairs.height, size=(n_batches, BATCH)):
        a, b = pair_batches(store, pairs[rows], MAX_LEN)
        in_pairs += int(a.mask.sum() + b.mask.sum())
    t6 = time.perf_counter()
    print(
        json.dumps(
            {
                "events": store.n_events + int(store.static.sum()),
                "timed_events": store.n_events,
                "subjects": store.n_subjects,
                "labels": labels.height,
                "open_s": t1 - t0,
                "fit_s": t2 - t1,
                "encode_s": t3 - t2,
                "gather_s": t4 - t3,
                "events_in_batches": in_batches,
                "cuts": cuts.height,
                "pairs": pairs.height,
                "pairs_s": t5 - t4,
                "pair_gather_s": t6 - t5,
                "events_in_pair_batches": in_pairs,
            }
        )
    )


def _me(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def _rate(n: float, seconds: float) -> str:
    return f"{n / seconds:>12,.0f}/s" if seconds > 0 else "n/a"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--src", type=Path, default=DEFAULT_SRC, help="set A .tar.xz (or a directory)")
    p.add_argument("--keep", type=Path, help="work directory to keep (the converted dataset)")
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stage", choices=["convert", "batches"])
    p.add_argument("--root", type=Path)
    args = p.parse_args()
    if args.stage == "convert":
        stage_convert(args.src, args.root)
        return 0
    if args.stage == "batches":
        stage_batches(args.root, args.batches, args.seed)
        return 0
    if not args.src.exists():
        print(f"no source at {args.src}", file=sys.stderr)
        return 2

    work = args.keep or Path(tempfile.mkdtemp(prefix="densefeat-pn2019-"))
    work.mkdir(parents=True, exist_ok=True)
    out = work / "meds"
    try:
        cli = shutil.which("densefeat") or ""
        argv = ([cli] if cli else [sys.executable, "-m", "densefeat"]) + [
            "convert",
            "physionet2019",
            str(args.src),
            "--out",
            str(out),
            "--overwrite",
        ]
        m = run_child("densefeat convert physionet2019", argv)
        if m.returncode:
            return 1
        print(m.output.rstrip())
        # Counts from the library (the CLI prints them for people, not as JSON).
        c = run_child(
            "convert (library)",
            _me("--stage", "convert", "--src", str(args.src), "--root", str(out)),
        )
        r = c.report
        print()
        print(f"{'':<36} {'wall s':>8} {'rows/s':>14} {'events/s':>14} {'peak GiB':>9}")
        print(
            f"{'densefeat convert (CLI, wall)':<36} {m.seconds:>8.2f} "
            f"{_rate(r['rows'], m.seconds):>14} {_rate(r['events'], m.seconds):>14} "
            f"{m.peak_rss_bytes / GIB:>9.2f}"
        )
        print(
            f"{'convert_physionet2019 (in-process)':<36} {r['convert_s']:>8.2f} "
            f"{_rate(r['rows'], r['convert_s']):>14} {_rate(r['events'], r['convert_s']):>14} "
            f"{c.peak_rss_bytes / GIB:>9.2f}  (read + checks {r['read_s']:.2f} s)"
        )
        print(f"  {r['files']:,} files, {r['rows']:,} rows, {r['events']:,} events")
        b = run_child(
            "batches",
            _me("--stage", "batches", "--root", str(out), "--batches", str(args.batches)),
        )
        if b.returncode:
            return 1
        q = b.report
        print(
            f"{'fit (train split)':<36} {q['fit_s']:>8.2f} {'':>14} "
            f"{_rate(q['events'], q['fit_s']):>14} {b.peak_rss_bytes / GIB:>9.2f}"
        )
        print(
            f"{'encode (all subjects)':<36} {q['encode_s']:>8.2f} {'':>14} "
            f"{_rate(q['events'], q['encode_s']):>14}"
        )
        print(
            f"{f'gather {args.batches} x {BATCH} label rows':<36} {q['gather_s']:>8.2f} "
            f"{_rate(args.batches * BATCH, q['gather_s']):>14} "
            f"{_rate(q['events_in_batches'], q['gather_s']):>14}  (rows/s, events in batches/s)"
        )
        print(
            f"{'12 h window cuts + pairs':<36} {q['pairs_s']:>8.2f} "
            f"{_rate(q['pairs'], q['pairs_s']):>14} {'':>14}  "
            f"({q['cuts']:,} cuts, {q['pairs']:,} pairs)"
        )
        print(
            f"{f'gather {args.batches} x {BATCH} window pairs':<36} {q['pair_gather_s']:>8.2f} "
            f"{_rate(args.batches * BATCH, q['pair_gather_s']):>14} "
            f"{_rate(q['events_in_pair_batches'], q['pair_gather_s']):>14}"
        )
        ok = m.seconds < 120
        print(f"target (whole set A converted in < 120 s wall): {'met' if ok else 'NOT met'}")
        return 0 if ok else 1
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
