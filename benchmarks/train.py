"""Training step time and throughput of every method on the same encoder and pairs.

Usage::

    python benchmarks/train.py [--device cpu|cuda] [--data MEDS_DIR] [--labels FILE]
        [--steps 20] [--batch-size 256] [--max-len 64] [--out results.json]
    python benchmarks/train.py --modality text --data mtsamples.csv.xz [--text-encoder small]
    python benchmarks/train.py --modality multimodal --data FHIR_MEDS_DIR [--text-encoder small]

EHR (default): each method gets the same pre-gathered batches of training window pairs (data
loading is not timed), one encoder pass per pair (``forward_at`` at t and t1), and a full
optimizer step (forward, loss, backward, AdamW); methods take turns step by step.
``supervised`` needs ``--labels`` (one pass per labelled row) and is skipped without it.
Target (issue 4): a ``dense`` step <= 1.10x a ``vicreg`` step.

Text and multimodal: the same protocol on the training session's inputs (``--set``-style keys
through ``--set``); the text views are drawn before timing, but chunking and tokenisation run
inside the text encoder's call and are timed (they are part of every text step). Text rows are
notes (pair methods encode 2 texts per row), multimodal rows are records (codes + up to
``mm_max_notes`` notes). ``masked`` on text needs ``--text-encoder small``; ``supervised`` on
text uses the note table's labels (MTSamples: every specialty).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from densefeat.methods import METHODS, get_method
from densefeat.train.config import TrainConfig, parse_overrides
from densefeat.train.loop import step_rows
from densefeat.train.modalities import get_modality


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Bench:
    """One method's network, optimizer, loss and pre-gathered batches."""

    def __init__(self, cfg, net, batches, device):
        self.cfg, self.device = cfg, device
        self.net = net
        self.net.to(device).train()
        params = [p for p in self.net.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=cfg.optim.lr)
        self.loss_fn = get_method(cfg.method).build_loss(cfg)
        self.batches = batches
        self.amp = cfg.amp and device.type == "cuda"
        self.times: list[float] = []
        self.peak_mib = 0.0

    def step(self, i: int, record: bool) -> None:
        inputs = self.batches[i % len(self.batches)]
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        _sync(self.device)
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            out = self.net(inputs)
        loss, _ = self.loss_fn(out, inputs)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        _sync(self.device)
        if record:
            self.times.append(time.perf_counter() - t0)
            if self.device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(self.device) / 2**20
                self.peak_mib = max(self.peak_mib, peak)

    def result(self) -> dict:
        med = statistics.median(self.times)
        out = {
            "step_ms_median": 1e3 * med,
            "step_ms_iqr": [1e3 * float(np.percentile(self.times, q)) for q in (25, 75)],
            "rows_per_s": self.cfg.batch_size / med,
        }
        if self.device.type == "cuda":
            out["peak_gpu_mem_mib"] = self.peak_mib
        return out


def _session_benches(args, base, device) -> dict[str, _Bench]:
    """One training session per method (its data, network, inputs), any modality."""
    data = args.data
    if data is None:
        if base.modality != "ehr":
            raise SystemExit(f"--modality {base.modality} needs --data")
        from densefeat.data.convert.eunomia import eunomia_meds

        data = eunomia_meds()
    benches = {}
    for name in args.methods.split(","):
        cfg = base.replace(method=name)
        method = get_method(name)
        labels = args.labels if method.needs_labels and base.modality != "text" else None
        if method.needs_labels and base.modality != "text" and labels is None:
            print(f"{name:>10}: skipped (needs --labels)")
            continue
        try:
            session = get_modality(cfg.modality).session(cfg, data, labels, None)
        except ValueError as exc:
            print(f"{name:>10}: skipped ({exc})")
            continue
        batches = [
            session.inputs(step_rows(cfg, session.n_rows, s), s, device)
            for s in range(args.steps + args.warmup)
        ]
        benches[name] = _Bench(cfg, session.net, batches, device)
    return benches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--modality", default="ehr", choices=["ehr", "text", "multimodal"])
    parser.add_argument("--text-encoder", default="pretrained", choices=["pretrained", "small"])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--labels", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-len", type=int, default=64)
    parser.add_argument("--methods", default=",".join(m for m in METHODS if m != "random"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    base = TrainConfig.from_dict(
        {
            "modality": args.modality,
            "batch_size": args.batch_size,
            "data.max_len": args.max_len,
            "device": args.device,
            "text.encoder": args.text_encoder,
            **parse_overrides(args.overrides),
        }
    )
    benches = _session_benches(args, base, device)
    # The encoder trims each batch to its longest history, so batches differ in length, and
    # cuDNN attention builds (and caches, process-wide) an execution plan per new shape, which
    # costs milliseconds of CPU time. One untimed pass over every batch fills those caches, so
    # no method pays for the shapes it happens to meet first.
    first = next(iter(benches.values()))
    for i in range(args.steps + args.warmup):
        first.step(i, record=False)
    # Methods take turns step by step, in a rotating order, so that machine noise (other load,
    # clocks) hits all of them alike rather than whichever ran during a slow minute.
    order = list(benches.values())
    for i in range(args.steps + args.warmup):
        shift = i % len(order)
        for bench in order[shift:] + order[:shift]:
            bench.step(i, record=i >= args.warmup)
    results = {name: bench.result() for name, bench in benches.items()}
    for name, r in results.items():
        print(f"{name:>10}: {r['step_ms_median']:8.1f} ms/step  {r['rows_per_s']:8.0f} rows/s")
    if "dense" in results and "vicreg" in results:
        ratio = results["dense"]["step_ms_median"] / results["vicreg"]["step_ms_median"]
        print(f"dense / vicreg step time: {ratio:.3f} (target <= 1.10)")
    report = {
        "modality": args.modality,
        "results": results,
        "config": base.to_dict(),
        "device": args.device,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "machine": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
