"""Throughput and peak memory of ``densefeat analyze`` on a large .npy file.

Generates an ``n x d`` float32 .npy (default 1,000,000 x 768, ~2.9 GiB) in a temporary
directory, written chunk by chunk (header, then ``tofile``) so generation stays low-memory,
then runs, each in its own child process:

* ``import``: the interpreter with torch and densefeat imported (the floor under everything);
* ``isotropic_reference``: import plus the isotropic Gaussian reference of shape (n, d), a
  cost that depends on d only (16 dense d x d SVDs), so that the streaming rate can be told
  apart from it;
* ``densefeat analyze``: the console script, buffered chunked reads (``densefeat.io``);
* ``np.load mmap``: the same accumulator over ``np.load(mmap_mode="r")`` slices.

Peak RSS is the child's ``ru_maxrss`` from ``os.wait4`` (per child, unlike
``RUSAGE_CHILDREN``, which keeps the maximum over every child waited for). The file was just
written, so both runs read it from the page cache: the comparison is about memory, not disk.
Target: peak RSS <= 1 GiB, independent of n.

Usage::

    python benchmarks/analyze.py                        # 1,000,000 x 768
    python benchmarks/analyze.py --rows 100000 --dim 256 --keep /tmp/bench
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GIB = 2**30


@dataclass
class Measurement:
    """One child process: what ran, its wall time and its peak resident memory."""

    name: str
    seconds: float
    peak_rss_bytes: int
    returncode: int


def write_npy(path: Path, rows: int, dim: int, chunk_rows: int = 50_000, seed: int = 0) -> None:
    """Write an (rows, dim) float32 .npy chunk by chunk: header first, then raw rows.

    The rows have a decaying spectrum (scale ~ rank^-0.5) and a mean offset of 3, so the
    metrics are neither trivial nor degenerate.
    """
    from numpy.lib import format as npy_format

    rng = np.random.default_rng(seed)
    scales = (1.0 + np.arange(dim, dtype=np.float32)) ** -0.5
    header = {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)}
    with open(path, "wb") as f:
        npy_format.write_array_header_1_0(f, header)
        for start in range(0, rows, chunk_rows):
            r = min(chunk_rows, rows - start)
            block = rng.standard_normal((r, dim), dtype=np.float32)
            block *= scales
            block += np.float32(3.0)
            block.astype("<f4", copy=False).tofile(f)


def measure(name: str, argv: list[str]) -> Measurement:
    """Run ``argv`` as a child process; its wall time and peak RSS (``ru_maxrss``, KiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # we reaped it, not Popen
    return Measurement(name, seconds, usage.ru_maxrss * 1024, proc.returncode)


def mmap_worker(path: str, chunk_rows: int) -> None:
    """The comparison: the same streamed analysis over ``np.load(mmap_mode="r")``."""
    import torch

    from densefeat.functional import isotropic_reference
    from densefeat.metrics import CovarianceAccumulator

    z = np.load(path, mmap_mode="r")
    acc = CovarianceAccumulator()
    for start in range(0, z.shape[0], chunk_rows):
        acc.update(torch.from_numpy(np.array(z[start : start + chunk_rows])))
    result = acc.compute()
    isotropic_reference(*z.shape)
    print(f"effective_rank {result['effective_rank']:.6f}")


def densefeat_command() -> list[str]:
    """The installed console script, or ``python -m densefeat`` where there is none."""
    script = Path(sys.executable).with_name("densefeat")
    exe = str(script) if script.exists() else shutil.which("densefeat")
    return [exe] if exe else [sys.executable, "-m", "densefeat"]


def report(rows: int, dim: int, runs: list[Measurement]) -> None:
    """Print one line per run; rows/s over the whole run and without the reference's cost."""
    print(f"\n{rows:,} x {dim} float32 ({rows * dim * 4 / GIB:.2f} GiB on disk)")
    print(
        f"{'run':<22} {'wall s':>8} {'rows/s':>10} {'rows/s excl. ref':>17} "
        f"{'peak RSS GiB':>13} {'exit':>5}"
    )
    by_name = {m.name: m for m in runs}
    reference_s = by_name["isotropic_reference"].seconds
    for m in runs:
        streams = m.name not in ("import", "isotropic_reference")
        rate = f"{rows / m.seconds:,.0f}" if streams else "-"
        # Both the reference run and this one pay the import: the difference is the pass.
        pass_s = m.seconds - reference_s
        excl = f"{rows / pass_s:,.0f}" if streams and pass_s > 0 else "-"
        print(
            f"{m.name:<22} {m.seconds:>8.1f} {rate:>10} {excl:>17} "
            f"{m.peak_rss_bytes / GIB:>13.3f} {m.returncode:>5}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=None,
        help="passed to densefeat analyze (default: its own, ~64 MiB float64)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="directory to write the .npy and JSON to (kept); default: a temp dir",
    )
    parser.add_argument("--mmap-worker", metavar="NPY", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from densefeat.io import resolve_chunk_rows

    chunk_rows = resolve_chunk_rows(args.chunk_rows, args.dim)
    if args.mmap_worker:
        mmap_worker(args.mmap_worker, chunk_rows)
        return 0

    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="densefeat-bench-")
    workdir = args.keep or Path(tmp.name)  # type: ignore[union-attr]
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        npy = workdir / f"emb_{args.rows}x{args.dim}.npy"
        t0 = time.perf_counter()
        write_npy(npy, args.rows, args.dim)
        print(f"generated {npy} in {time.perf_counter() - t0:.1f} s")
        reference_code = (
            "from densefeat.functional import isotropic_reference; "
            f"isotropic_reference({args.rows}, {args.dim})"
        )
        analyze = [
            *densefeat_command(),
            "analyze",
            str(npy),
            "--json",
            str(workdir / "out.json"),
            "--chunk-rows",
            str(chunk_rows),
        ]
        runs = [
            measure("import", [sys.executable, "-c", "import torch, densefeat.analyze"]),
            measure("isotropic_reference", [sys.executable, "-c", reference_code]),
            measure("densefeat analyze", analyze),
            measure(
                "np.load mmap",
                [
                    sys.executable,
                    __file__,
                    "--mmap-worker",
                    str(npy),
                    "--dim",
                    str(args.dim),
                    "--chunk-rows",
                    str(chunk_rows),
                ],
            ),
        ]
        report(args.rows, args.dim, runs)
        print(f"chunk rows: {chunk_rows}; target: peak RSS <= 1 GiB for densefeat analyze")
        return 0 if all(m.returncode == 0 for m in runs) else 1
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
