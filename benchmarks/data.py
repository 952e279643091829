"""Throughput and peak memory of densefeat's data path: conversion and batch building.

Runs, each in its own child process (peak RSS = that child's ``ru_maxrss`` from ``os.wait4``):

* ``convert eunomia``: ``densefeat convert eunomia --out TMP`` end to end (the default dataset,
  2,694 subjects); events/s = events written / wall seconds.
* ``densefeat batches``: on a synthetic MEDS dataset (default 10M events, 50k subjects, 3,000
  codes, 30% of events numeric, written with ``write_meds_dataset`` in 10 shards):
  ``HistoryBuilder.fit`` on the training split, ``encode`` of every subject, then every batch of
  the training loop's seeded batches (batch 256, L 256, shuffled; the last partial batch
  dropped) over one label row per subject at a random time inside its record. events/s = events of
  the dataset / (encode + batches) seconds; the fit
  (once per training run, on the training split) is timed separately and also shown included.
* ``polars reference``: a plain vectorised polars pipeline doing the same work: scan, join the
  label rows, keep ``time <= prediction_time``, take the last L events of each row, map codes
  and normalise values with joined tables (statistics from the same fitted builder), and pad
  into (B, L) numpy arrays.

The children time themselves (phases in seconds) so interpreter and import start-up are not in
the events/s; wall time is printed beside. Targets (issue 3): >= 1.5M events/s for batch
building on the 2-core dev machine, peak RSS <= 4 GiB for the 10M events.

Usage::

    python benchmarks/data.py                         # 10M events + Eunomia conversion
    python benchmarks/data.py --events 1000000 --subjects 5000 --skip-convert
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _child import run_child

GIB = 2**30
MAX_LEN = 256
BATCH = 256


# --------------------------------------------------------------------------------------------
# Stages run inside the children.


def stage_generate(out: Path, n_events: int, n_subjects: int, n_codes: int, seed: int) -> None:
    """Write the synthetic MEDS dataset and one label row per subject (``labels.parquet``)."""
    import numpy as np
    import polars as pl

    from densefeat.data.meds import write_meds_dataset

    rng = np.random.default_rng(seed)
    # Events per subject: heavy-tailed (a few very long records), summing to n_events.
    weights = rng.lognormal(0.0, 1.0, n_subjects)
    counts = np.maximum(1, np.floor(weights / weights.sum() * n_events)).astype(np.int64)
    counts[np.argmax(counts)] += n_events - counts.sum()
    subject = np.repeat(np.arange(1, n_subjects + 1, dtype=np.int64), counts)
    # Times: each record starts between 2000 and 2015 and advances by exponential gaps.
    start = np.datetime64("2000-01-01", "us").astype(np.int64) + rng.integers(
        0, 15 * 365 * 86_400_000_000, n_subjects
    )
    gaps = rng.exponential(2 * 86_400_000_000, n_events).astype(np.int64)
    first = np.cumsum(counts) - counts
    gaps[first] = 0
    cum = np.cumsum(gaps)
    time_us = np.repeat(start, counts) + cum - np.repeat(cum[first], counts)
    # Codes: Zipf-like frequencies; 30% of events are labs with a numeric value.
    numeric = rng.random(n_events) < 0.3
    n_labs = n_codes // 5
    code_idx = np.where(
        numeric,
        rng.zipf(1.3, n_events) % n_labs,
        n_labs + rng.zipf(1.3, n_events) % (n_codes - n_labs),
    )
    names = np.array(
        [f"LAB//{i}" for i in range(n_labs)] + [f"DX//{i}" for i in range(n_codes - n_labs)]
    )
    value = np.where(numeric, rng.normal(100.0, 15.0, n_events) * (1 + code_idx % 7), np.nan)
    timed = pl.DataFrame(
        {
            "subject_id": subject,
            "time": pl.Series(time_us).cast(pl.Datetime("us")),
            "code": pl.Series(names[code_idx]),
            "numeric_value": pl.Series(value, dtype=pl.Float32).fill_nan(None),
        }
    )
    ids = np.arange(1, n_subjects + 1, dtype=np.int64)
    births = start - rng.integers(20 * 365, 80 * 365, n_subjects) * 86_400_000_000
    extra = pl.DataFrame(
        {
            "subject_id": np.concatenate([ids, ids]),
            "time": pl.Series(np.concatenate([np.full(n_subjects, np.iinfo(np.int64).min), births]))
            .cast(pl.Datetime("us"))
            .scatter(range(n_subjects), None),
            "code": ["GENDER/F" if g else "GENDER/M" for g in rng.random(n_subjects) < 0.5]
            + ["MEDS_BIRTH"] * n_subjects,
            "numeric_value": pl.Series([None] * (2 * n_subjects), dtype=pl.Float32),
        }
    )
    events = pl.concat([extra, timed])
    del timed
    write_meds_dataset(out / "meds", events, dataset_name="synthetic", overwrite=True)
    # One label row per subject at the time of a random one of its events.
    pick = first + np.floor(rng.random(n_subjects) * counts).astype(np.int64)
    pl.DataFrame(
        {
            "subject_id": ids,
            "prediction_time": pl.Series(time_us[pick]).cast(pl.Datetime("us")),
            "boolean_value": rng.random(n_subjects) < 0.1,
        }
    ).write_parquet(out / "labels.parquet")
    print(json.dumps({"events": int(events.height)}))


def stage_densefeat(root: Path) -> None:
    """Fit on train, encode everything, build every batch; print phase timings as JSON."""
    import polars as pl

    from densefeat.data.ehr import HistoryBuilder
    from densefeat.data.meds import read_meds_dataset
    from densefeat.train.loop import batch_slices

    t0 = time.perf_counter()
    ds = read_meds_dataset(root / "meds", validate=False)
    labels = pl.read_parquet(root / "labels.parquet")
    t1 = time.perf_counter()
    builder = HistoryBuilder.fit(ds, max_len=MAX_LEN)
    t2 = time.perf_counter()
    store = builder.encode(ds)
    t3 = time.perf_counter()
    sid = labels["subject_id"].to_numpy()
    pt = labels["prediction_time"].cast(pl.Int64).to_numpy()
    in_batches = 0
    for rows in batch_slices(labels.height, BATCH, seed=0, epoch=0):
        in_batches += int(store.gather(sid[rows], pt[rows]).mask.sum())
    t4 = time.perf_counter()
    print(
        json.dumps(
            {
                "events": store.n_events + int(store.static.sum()),
                "timed_events": store.n_events,
                "events_in_batches": in_batches,
                "open_s": t1 - t0,
                "fit_s": t2 - t1,
                "encode_s": t3 - t2,
                "batches_s": t4 - t3,
                "store_mib": store.nbytes / 2**20,
            }
        )
    )


def stage_reference(root: Path) -> None:
    """The same filtering/truncation/encoding as one plain polars pipeline, then padding."""
    import numpy as np
    import polars as pl

    from densefeat.data.ehr import HistoryBuilder
    from densefeat.data.meds import read_meds_dataset

    ds = read_meds_dataset(root / "meds", validate=False)
    labels = pl.read_parquet(root / "labels.parquet").with_row_index("row")
    builder = HistoryBuilder.fit(ds, max_len=MAX_LEN)  # shared statistics, not timed below
    lookup = builder.vocabulary.code_table().join(
        builder.normalizer.stats_table(), on="code", how="full", coalesce=True
    )
    t0 = time.perf_counter()
    hist = (
        ds.events()
        .filter(pl.col("time").is_not_null())
        .join(labels.lazy().select("row", "subject_id", "prediction_time"), on="subject_id")
        .filter(pl.col("time") <= pl.col("prediction_time"))
        .sort(["row", "time"], maintain_order=True)
        .group_by("row", maintain_order=True)
        .tail(MAX_LEN)
        .join(lookup.lazy(), on="code", how="left", maintain_order="left")
        .select(
            "row",
            pl.col("code_id").fill_null(1),
            ((pl.col("numeric_value") - pl.col("center")) / pl.col("scale"))
            .clip(-10, 10)
            .cast(pl.Float32)
            .alias("value"),
            ((pl.col("prediction_time") - pl.col("time")).dt.total_microseconds() / 86_400e6)
            .cast(pl.Float32)
            .alias("tbp"),
        )
        .collect()
    )
    # Pad to (B, L), left-aligned to the end as EventBatch does.
    row = hist["row"].to_numpy()
    n = np.bincount(row, minlength=labels.height)
    rank = np.arange(row.size) - np.repeat(np.cumsum(n) - n, n)
    col = MAX_LEN - n[row] + rank
    codes = np.zeros((labels.height, MAX_LEN), np.int64)
    codes[row, col] = hist["code_id"].to_numpy()
    values = np.zeros((labels.height, MAX_LEN), np.float32)
    values[row, col] = hist["value"].fill_null(0).to_numpy()
    tbp = np.zeros((labels.height, MAX_LEN), np.float32)
    tbp[row, col] = hist["tbp"].to_numpy()
    t1 = time.perf_counter()
    total = ds.events().select(pl.len()).collect().item()
    print(
        json.dumps(
            {"events": int(total), "events_in_batches": int(row.size), "pipeline_s": t1 - t0}
        )
    )


def stage_count(root: Path) -> None:
    """Number of events of a MEDS dataset (for the conversion's events/s)."""
    import polars as pl

    files = sorted((root / "data").rglob("*.parquet"))
    print(json.dumps({"events": int(pl.scan_parquet(files).select(pl.len()).collect().item())}))


# --------------------------------------------------------------------------------------------
# Driver.


def _me(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def _row(name: str, events: float, seconds: float, rss: int, note: str = "") -> str:
    rate = events / seconds / 1e6 if seconds > 0 else float("nan")
    return (
        f"{name:<34} {events / 1e6:>8.2f}M {seconds:>8.2f}s {rate:>9.2f}M/s "
        f"{rss / GIB:>8.2f}  {note}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--subjects", type=int, default=50_000)
    p.add_argument("--codes", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", type=Path, help="work directory to keep (reused if it has data)")
    p.add_argument("--skip-convert", action="store_true")
    p.add_argument("--stage", choices=["generate", "densefeat", "reference", "count"])
    p.add_argument("--root", type=Path)
    args = p.parse_args()
    if args.stage == "generate":
        stage_generate(args.root, args.events, args.subjects, args.codes, args.seed)
        return 0
    if args.stage:
        {"densefeat": stage_densefeat, "reference": stage_reference, "count": stage_count}[
            args.stage
        ](args.root)
        return 0

    work = args.keep or Path(tempfile.mkdtemp(prefix="densefeat-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        print(f"{'':<34} {'events':>9} {'seconds':>9} {'events/s':>11} {'peak GiB':>8}")
        if not args.skip_convert:
            out = work / "eunomia"
            shutil.rmtree(out, ignore_errors=True)
            m = run_child("convert", ["densefeat", "convert", "eunomia", "--out", str(out)])
            n = run_child("count", _me("--stage", "count", "--root", str(out))).report["events"]
            print(_row("convert eunomia (wall)", n, m.seconds, m.peak_rss_bytes))
            results.append(m)
        root = work / "synthetic"
        if not (root / "labels.parquet").is_file():
            gen = run_child(
                "generate",
                _me(
                    "--stage", "generate", "--root", str(root), "--events", str(args.events),
                    "--subjects", str(args.subjects), "--codes", str(args.codes),
                    "--seed", str(args.seed),
                ),
            )  # fmt: skip
            print(
                _row(
                    "generate synthetic (not a target)",
                    args.events,
                    gen.seconds,
                    gen.peak_rss_bytes,
                )
            )
        ours = run_child("densefeat", _me("--stage", "densefeat", "--root", str(root)))
        ref = run_child("reference", _me("--stage", "reference", "--root", str(root)))
        r = ours.report
        build = r["encode_s"] + r["batches_s"]
        print(
            _row(
                "densefeat encode + batches",
                r["events"],
                build,
                ours.peak_rss_bytes,
                f"encode {r['encode_s']:.2f}s, batches {r['batches_s']:.2f}s, "
                f"store {r['store_mib']:.0f} MiB",
            )
        )
        print(
            _row(
                "densefeat incl. fit on train",
                r["events"],
                build + r["fit_s"],
                ours.peak_rss_bytes,
                f"fit {r['fit_s']:.2f}s",
            )
        )
        print(
            _row(
                "densefeat child (wall)",
                r["events"],
                ours.seconds,
                ours.peak_rss_bytes,
                "with imports, open",
            )
        )
        q = ref.report
        print(
            _row(
                "polars reference pipeline",
                q["events"],
                q["pipeline_s"],
                ref.peak_rss_bytes,
                "peak incl. its fit",
            )
        )
        print(_row("polars reference child (wall)", q["events"], ref.seconds, ref.peak_rss_bytes))
        print(
            f"events in batches: densefeat {r['events_in_batches']:,}, reference "
            f"{q['events_in_batches']:,} (must match)"
        )
        ok = (
            r["events"] / build >= 1.5e6
            and ours.peak_rss_bytes <= 4 * GIB
            and r["events_in_batches"] == q["events_in_batches"]
        )
        print(
            "targets (>= 1.5M events/s, <= 4 GiB, same events as the reference): "
            + ("met" if ok else "NOT met")
        )
        return 0 if ok else 1
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
