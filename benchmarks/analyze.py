"""Throughput and peak memory of ``densefeat analyze`` on a large .npy file.

Generates an ``n x d`` float32 .npy (default 1,000,000 x 768, 2.86 GiB) in a temporary
directory, written chunk by chunk (header, then ``tofile``) so generation stays low-memory,
then runs, each in its own child process:

* ``import``: the interpreter with torch and densefeat imported (the floor under everything);
* ``densefeat analyze``: the console script end to end (``--json`` included);
* ``isotropic_reference``: the isotropic Gaussian reference of shape (n, d) alone. It depends
  on d only (16 dense d x d SVDs) and is the largest part of the CLI's time at d = 768;
* ``pass: buffered``: the streaming pass of ``densefeat analyze`` alone — chunks from
  ``densefeat.io`` (buffered ``readinto``) into a ``CovarianceAccumulator``, then ``compute``;
* ``pass: np.load mmap``: the same pass over ``np.load(mmap_mode="r")`` slices.

The two passes time themselves (``pass s``), so their rows/s do not include interpreter start-up
and are less disturbed by other jobs on the machine than wall-clock differences would be. Peak
RSS is each child's ``ru_maxrss`` from ``os.wait4`` (per child; ``RUSAGE_CHILDREN`` would keep
the maximum over every child waited for). The file was just written, so every run reads it
from the page cache: the comparison is about memory, not disk. Target: peak RSS <= 1 GiB for
``densefeat analyze``, independent of n.

Usage::

    python benchmarks/analyze.py                        # 1,000,000 x 768
    python benchmarks/analyze.py --rows 100000 --dim 256 --keep /tmp/bench
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from _child import Measurement, run_child

GIB = 2**30


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
            block.tofile(f)


def _pass_seconds(m: Measurement) -> float | None:
    """The ``pass_seconds X`` line a pass worker prints, if any."""
    for line in m.output.splitlines():
        if line.startswith("pass_seconds "):
            return float(line.split()[1])
    return None


def _mmap_chunks(path: str, chunk_rows: int) -> Iterator[np.ndarray]:
    z = np.load(path, mmap_mode="r")
    for start in range(0, z.shape[0], chunk_rows):
        yield np.array(z[start : start + chunk_rows])


def pass_worker(mode: str, path: str, chunk_rows: int) -> None:
    """One streaming pass (read, accumulate, compute), timed from the first read."""
    import torch

    from densefeat.io import iter_embedding_chunks
    from densefeat.metrics import CovarianceAccumulator

    start = time.perf_counter()
    chunks = (
        iter_embedding_chunks(path, chunk_rows=chunk_rows)
        if mode == "buffered"
        else _mmap_chunks(path, chunk_rows)
    )
    acc = CovarianceAccumulator()
    for chunk in chunks:
        acc.update(torch.from_numpy(chunk))
    result = acc.compute()
    print(f"pass_seconds {time.perf_counter() - start:.3f}")
    print(f"effective_rank {result['effective_rank']:.6f}")


def densefeat_command() -> list[str]:
    """The installed console script, or ``python -m densefeat`` where there is none."""
    script = Path(sys.executable).with_name("densefeat")
    exe = str(script) if script.exists() else shutil.which("densefeat")
    return [exe] if exe else [sys.executable, "-m", "densefeat"]


def report(rows: int, dim: int, runs: list[Measurement]) -> None:
    """One line per run: wall time, pass time, rows/s of the pass, peak RSS."""
    print(f"\n{rows:,} x {dim} float32 ({rows * dim * 4 / GIB:.2f} GiB on disk)")
    print(
        f"{'run':<22} {'wall s':>8} {'pass s':>8} {'rows/s (pass)':>14} "
        f"{'peak RSS GiB':>13} {'exit':>5}"
    )
    for m in runs:
        seconds = _pass_seconds(m)
        pass_s = f"{seconds:.1f}" if seconds else "-"
        rate = f"{rows / seconds:,.0f}" if seconds else "-"
        print(
            f"{m.name:<22} {m.seconds:>8.1f} {pass_s:>8} {rate:>14} "
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
        help="rows per chunk for every run (default: densefeat's own, ~64 MiB of float64)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="directory to write the .npy and JSON to (kept); default: a temporary directory",
    )
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "NPY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from densefeat.io import resolve_chunk_rows

    chunk_rows = resolve_chunk_rows(args.chunk_rows, args.dim)
    if args.worker:
        pass_worker(args.worker[0], args.worker[1], chunk_rows)
        return 0

    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="densefeat-bench-")
    workdir = args.keep or Path(tmp.name)  # type: ignore[union-attr]
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        npy = workdir / f"emb_{args.rows}x{args.dim}.npy"
        t0 = time.perf_counter()
        write_npy(npy, args.rows, args.dim)
        print(f"generated {npy} in {time.perf_counter() - t0:.1f} s")
        cli = [*densefeat_command(), "analyze", str(npy), "--json", str(workdir / "out.json")]
        cli += ["--chunk-rows", str(chunk_rows)]
        reference = (
            "from densefeat.functional import isotropic_reference; "
            f"isotropic_reference({args.rows}, {args.dim})"
        )

        def worker(mode: str) -> list[str]:
            return [sys.executable, __file__, "--worker", mode, str(npy), "--dim", str(args.dim),
                    "--chunk-rows", str(chunk_rows)]  # fmt: skip

        runs = [
            run_child("import", [sys.executable, "-c", "import torch, densefeat.analyze"]),
            run_child("densefeat analyze", cli),
            run_child("isotropic_reference", [sys.executable, "-c", reference]),
            run_child("pass: buffered", worker("buffered")),
            run_child("pass: np.load mmap", worker("mmap")),
        ]
        report(args.rows, args.dim, runs)
        print(f"chunk rows: {chunk_rows}; target: densefeat analyze peak RSS <= 1 GiB")
        return 0 if all(m.returncode == 0 for m in runs) else 1
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
