"""EHR embedding throughput: the straightforward route against the fast one, side by side.

On the default dataset (Eunomia GiBleed), with an encoder of the default size (d_model 128,
2 layers, 4 heads; random weights: speed does not depend on them) and the history builder fitted
on the training split at ``--max-len``, in ONE process (``--threads`` torch threads, 1 by
default), interleaved ``--repeat`` times so a change in the machine's load hits both alike:

* ``old``: what ``densefeat embed`` did before issue 14: batches of ``--batch-size`` rows in
  row order, ``torch.no_grad``, the full forward pass (``EHREncoder.fast_readout = False``);
* ``new``: :func:`densefeat.train.modalities.ehr.encode_histories` as it is now: length
  bucketing with a position cap (``--max-positions``; default 8192 on CPU), inference mode,
  the last block at the read-out token only.

Rows (``--rows``): ``end`` (default) is one row per subject at the end of its record, what
``densefeat embed`` writes without ``--labels`` (2694 rows; long histories, so most rows are
cut at ``max_len``); ``cuts`` is every subject cut every ``--every`` days through its record
(mixed lengths, like label rows), at most ``--max-rows`` of them (a seeded sample).

Prints rows/s (median, min..max) and rows per CPU second of each route, the speed-ups and
the largest absolute difference between the two routes' embeddings. On a shared machine the
CPU-second figures are the steadier ones (wall time also counts other processes' turns).

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/embed.py --max-len 64
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/embed.py --max-len 256 --rows cuts
    PYTHONPATH=src python benchmarks/embed.py --sweep 2048,4096,8192,16384,65536
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--rows", choices=("end", "cuts"), default="end")
    parser.add_argument("--every", type=float, default=90.0, help="days between cuts (cuts)")
    parser.add_argument("--max-rows", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--max-positions", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sweep", default=None, help="comma-separated max_positions to time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from densefeat.data.convert.eunomia import eunomia_meds
    from densefeat.data.ehr import HistoryBuilder
    from densefeat.data.ehr.windows import periodic_cuts
    from densefeat.data.meds import read_meds_dataset
    from densefeat.models import EHREncoder, EHREncoderConfig
    from densefeat.train.modalities.ehr import encode_histories, row_times

    ds = read_meds_dataset(eunomia_meds())
    builder = HistoryBuilder.fit(ds, split="train", max_len=args.max_len)
    store = builder.encode(ds)
    if args.rows == "end":
        sid, pt = row_times(store.end_of_record())
    else:
        cuts = periodic_cuts(store, args.every)
        sid, pt = row_times(cuts, "time")
        if len(sid) > args.max_rows:
            keep = np.sort(np.random.default_rng(0).choice(len(sid), args.max_rows, False))
            sid, pt = sid[keep], pt[keep]
    lengths = store.history_lengths(sid, pt)
    torch.manual_seed(0)
    encoder = EHREncoder(EHREncoderConfig.from_builder(builder)).eval()

    def old() -> np.ndarray:
        encoder.fast_readout = False
        try:
            with torch.no_grad():
                return encode_histories(
                    encoder, store, sid, pt, batch_size=args.batch_size, bucket=False
                ).backbone
        finally:
            encoder.fast_readout = True

    def new(max_positions: int | None = args.max_positions) -> np.ndarray:
        return encode_histories(
            encoder, store, sid, pt, batch_size=args.batch_size, max_positions=max_positions
        ).backbone

    routes = {"old": old, "new": new}
    if args.sweep:
        routes = {f"new@{p}": (lambda p=p: new(p)) for p in (int(x) for x in args.sweep.split(","))}
    print(
        f"load {os.getloadavg()[0]:.2f}; {len(sid)} rows ({args.rows}), max_len {args.max_len}, "
        f"events/row mean {lengths.mean():.1f}, at max_len {np.mean(lengths == args.max_len):.0%}"
        f"; {torch.get_num_threads()} thread(s)"
    )
    times: dict[str, list[float]] = {name: [] for name in routes}
    cpu: dict[str, list[float]] = {name: [] for name in routes}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(args.repeat):
        for name, fn in routes.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    # CPU seconds as well as wall: on a shared machine the wall clock also counts the time
    # other processes held the cores.
    for name, ts in times.items():
        rates = [len(sid) / t for t in ts]
        print(
            f"{name:>10}: {statistics.median(rates):8.0f} rows/s "
            f"({min(rates):.0f}..{max(rates):.0f}), median {statistics.median(ts):.2f} s wall, "
            f"{len(sid) / statistics.median(cpu[name]):.0f} rows per CPU second"
        )
    if "old" in times:
        speedup = statistics.median(times["old"]) / statistics.median(times["new"])
        speedup_cpu = statistics.median(cpu["old"]) / statistics.median(cpu["new"])
        diff = float(np.abs(outputs["old"] - outputs["new"]).max())
        print(f"speed-up {speedup:.2f}x wall, {speedup_cpu:.2f}x CPU; max |old - new| = {diff:.2e}")
    print(f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
