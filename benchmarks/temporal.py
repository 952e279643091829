"""The demo's temporal-stability step, before and after issue 14's half-window bucketing.

On the default dataset (Eunomia GiBleed) with the demo's settings (``max_len`` 32, yearly
windows anchored at each subject's first event, the held-out subjects, ``k`` 16), an encoder of
the default size with random weights (speed does not depend on them), in ONE process with
``--threads`` torch threads (1 by default), interleaved ``--repeat`` times:

* ``old``: the route before: ``z_t`` and ``z_t1`` through the bucketed
  :func:`~densefeat.train.modalities.ehr.encode_histories`, the half-window views A and B in
  batches of 512 rows in pair order under ``torch.no_grad`` (the views themselves as they are
  now: the numbering fix of the same issue changes no cost);
* ``new``: :func:`densefeat.eval.temporal.window_embeddings` as it is now (all four length
  bucketed, inference mode).

Both then score the windows (:func:`~densefeat.eval.temporal.window_records`), which is the
rest of the step. Prints wall and CPU seconds of each (median), the speed-up and the largest
absolute difference between the two routes' embeddings.

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/temporal.py
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/temporal.py --max-len 256 --repeat 1
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
    parser.add_argument("--max-len", type=int, default=32, help="the demo's max_len (32)")
    parser.add_argument("--every", type=float, default=365.0, help="window length in days")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from densefeat.data.convert.eunomia import eunomia_meds
    from densefeat.data.ehr import HistoryBuilder
    from densefeat.data.ehr.windows import periodic_cuts, window_pairs
    from densefeat.data.meds import read_meds_dataset
    from densefeat.eval.temporal import (
        _pair_arrays,
        half_window_views,
        window_embeddings,
        window_records,
    )
    from densefeat.models import EHREncoder, EHREncoderConfig
    from densefeat.train.modalities.ehr import encode_histories

    ds = read_meds_dataset(eunomia_meds())
    builder = HistoryBuilder.fit(ds, split="train", max_len=args.max_len)
    store = builder.encode(ds)
    held = ds.split_ids("held_out").to_numpy()
    cuts = periodic_cuts(store, args.every, anchor="first_event", subjects=held)
    pairs = window_pairs(store, cuts, min_history=1, min_new_events=1)
    torch.manual_seed(0)
    encoder = EHREncoder(EHREncoderConfig.from_builder(builder)).eval()
    sid, t, t1 = _pair_arrays(pairs)

    def old() -> dict[str, np.ndarray]:
        z_t = encode_histories(encoder, store, sid, t).backbone
        z_t1 = encode_histories(encoder, store, sid, t1).backbone
        halves: dict[str, list[np.ndarray]] = {"a": [], "b": []}
        with torch.no_grad():
            for lo in range(0, sid.size, 512):
                sl = slice(lo, lo + 512)
                views = half_window_views(store, sid[sl], t[sl], t1[sl])
                for key, view in zip("ab", views, strict=True):
                    halves[key].append(encoder(view).float().numpy())
        return {
            "z_t": z_t,
            "z_t1": z_t1,
            "z_a": np.concatenate(halves["a"]),
            "z_b": np.concatenate(halves["b"]),
        }

    def new() -> dict[str, np.ndarray]:
        return window_embeddings(encoder, store, pairs)

    routes = {"old": old, "new": new}
    idx = store.index_of(sid)
    n_new = store.count_at_or_before(idx, t1) - store.count_at_or_before(idx, t)
    lengths = store.history_lengths(sid, t1)
    print(
        f"load {os.getloadavg()[0]:.2f}; {pairs.height} pairs of {held.size} held-out subjects, "
        f"max_len {args.max_len}, events at t1 mean {lengths.mean():.1f} "
        f"({np.mean(lengths == args.max_len):.0%} at max_len), new events per window mean "
        f"{n_new.mean():.1f}; {torch.get_num_threads()} thread(s)"
    )
    times: dict[str, list[float]] = {name: [] for name in routes}
    cpu: dict[str, list[float]] = {name: [] for name in routes}
    score: dict[str, list[float]] = {name: [] for name in routes}
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for _ in range(args.repeat):
        for name, fn in routes.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            start = time.perf_counter()
            window_records(pairs, outputs[name], args.k)
            score[name].append(time.perf_counter() - start)
    for name in routes:
        print(
            f"{name:>4}: embeddings {statistics.median(times[name]):6.2f} s wall "
            f"({min(times[name]):.2f}..{max(times[name]):.2f}), "
            f"{statistics.median(cpu[name]):6.2f} CPU s; window scoring "
            f"{statistics.median(score[name]):.2f} s"
        )
    speedup = statistics.median(times["old"]) / statistics.median(times["new"])
    speedup_cpu = statistics.median(cpu["old"]) / statistics.median(cpu["new"])
    diff = max(float(np.abs(outputs["old"][k] - outputs["new"][k]).max()) for k in outputs["old"])
    print(f"speed-up {speedup:.2f}x wall, {speedup_cpu:.2f}x CPU; max |old - new| = {diff:.2e}")
    print(f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
