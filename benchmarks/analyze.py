"""``densefeat analyze`` against the one-pass NumPy floor, side by side on the same file.

Generates an ``n x d`` float32 .npy (default 100,000 x 512; ``--large`` adds 1,000,000 x 768,
2.86 GiB) in a temporary directory, written chunk by chunk so generation stays low-memory,
then runs, each in its own child process and ``--repeat`` times (interleaved, so a change in
the machine's load hits every row alike):

* ``numpy floor``: the least a one-pass analysis can cost: a script that imports NumPy only,
  reads the rows in chunks (the buffered ``readinto`` that ``densefeat.io`` uses, same chunk
  size), accumulates ``sum x`` and ``X^T X`` in float64 (raw sums: cheaper than, and not as
  safe as, the centred update of the library) and takes ``eigvalsh`` of the covariance;
* ``densefeat analyze``: the real command end to end (the console script, ``--json``
  included), as a user runs it;
* ``library, no torch``: what the command can reach: ``densefeat.io`` chunks into a
  ``CovarianceAccumulator``, ``compute()`` and ``isotropic_reference`` (the library calls
  the command needs), with ``import torch`` made to fail, timed from interpreter start;
* ``import densefeat.analyze``: the import alone (torch, today), for scale;
* with ``--baseline SRC``, ``densefeat analyze`` once more with ``PYTHONPATH=SRC`` (e.g. an
  export of an earlier commit's ``src``): before/after in one run.

Each row reports the median wall time (with min..max), the ratio to the floor's median and
the child's peak RSS (``ru_maxrss`` from ``os.wait4``; Linux carries the parent's RSS at
fork into it, so the file is generated in a child too and the parent stays small). The file
was just written, so every run reads it from the page cache. The machine these numbers come
from is usually shared: the load average is printed before and after, and single runs can
be off by 2x; compare medians of one invocation only. Targets (issue 14): ``densefeat
analyze`` <= 1.5x the floor, and peak RSS <= 1 GiB at 1,000,000 x 768.

Usage::

    python benchmarks/analyze.py                      # 100,000 x 512, 3 runs each
    python benchmarks/analyze.py --large --repeat 5   # also 1,000,000 x 768
    python benchmarks/analyze.py --rows 200000 --dim 256 --keep /tmp/bench
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _child import Measurement, run_child

GIB = 2**30
#: ~64 MiB of float64 per chunk, as ``densefeat.io`` picks by default.
CHUNK_BYTES = 64 * 2**20


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


# --------------------------------------------------------------------------- child workers
def floor_worker(path: str, chunk_rows: int) -> None:
    """The one-pass NumPy floor: float64 raw sums over buffered chunks, then eigvalsh."""
    from numpy.lib import format as npy_format

    with open(path, "rb", buffering=0) as f:
        version = npy_format.read_magic(f)
        read_header = (
            npy_format.read_array_header_1_0
            if version == (1, 0)
            else npy_format.read_array_header_2_0
        )
        (n, d), _, dtype = read_header(f)
        total = np.zeros(d)
        gram = np.zeros((d, d))
        for start in range(0, n, chunk_rows):
            buf = np.empty((min(chunk_rows, n - start), d), dtype)
            view = memoryview(buf.reshape(-1).view(np.uint8))
            pos = 0
            while pos < len(view):
                pos += f.readinto(view[pos:])
            x = buf.astype(np.float64)
            total += x.sum(0)
            gram += x.T @ x
    mean = total / n
    lam = np.linalg.eigvalsh((gram - n * np.outer(mean, mean)) / (n - 1))
    print(f"top eigenvalue {lam[-1]:.6f}")


def _load_without_package_inits() -> None:
    """Make ``densefeat.functional`` and ``densefeat.metrics`` bare namespaces.

    Their ``__init__`` modules import the training objectives (torch) as well; the
    covariance-route modules themselves (``functional.spectrum``, ``.subspace``,
    ``.reference``, ``metrics.accumulator``) import only NumPy (and SciPy for the
    reference). Once those ``__init__`` modules import lazily this is a no-op in effect.
    """
    import types

    import densefeat

    root = Path(densefeat.__file__).parent
    for name in ("functional", "metrics"):
        pkg = types.ModuleType(f"densefeat.{name}")
        pkg.__path__ = [str(root / name)]
        sys.modules[f"densefeat.{name}"] = pkg


def library_worker(path: str, chunk_rows: int) -> None:
    """The library calls of ``densefeat analyze`` (one file) with torch unavailable."""
    sys.modules["torch"] = None  # type: ignore[assignment]  # any `import torch` now fails
    _load_without_package_inits()
    from densefeat.functional.reference import isotropic_reference
    from densefeat.io import open_embeddings
    from densefeat.metrics.accumulator import CovarianceAccumulator

    src = open_embeddings(path)
    acc = CovarianceAccumulator()
    for chunk in src.chunks(chunk_rows):
        acc.update(chunk)
    result = acc.compute()
    ref = isotropic_reference(src.n, src.d, condition_k=result["condition_number_k_at"])
    print(f"effective_rank {result['effective_rank']:.6f} (isotropic {ref['effective_rank']:.3f})")


# --------------------------------------------------------------------------- parent
def densefeat_command() -> list[str]:
    """The installed console script, or ``python -m densefeat`` where there is none."""
    script = Path(sys.executable).with_name("densefeat")
    exe = str(script) if script.exists() else shutil.which("densefeat")
    return [exe] if exe else [sys.executable, "-m", "densefeat"]


def _load() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def report(rows: int, dim: int, runs: dict[str, list[Measurement]]) -> None:
    """One line per kind of run: median wall time, range, ratio to the floor, peak RSS."""
    floor = statistics.median(m.seconds for m in runs["numpy floor"])
    print(f"\n{rows:,} x {dim} float32 ({rows * dim * 4 / GIB:.2f} GiB on disk)")
    print(
        f"{'run':<26} {'median s':>9} {'min..max s':>13} {'x floor':>8} "
        f"{'peak RSS GiB':>13} {'failed':>7}"
    )
    for name, ms in runs.items():
        secs = [m.seconds for m in ms]
        med = statistics.median(secs)
        span = f"{min(secs):.2f}..{max(secs):.2f}"
        rss = max(m.peak_rss_bytes for m in ms) / GIB
        failed = sum(m.returncode != 0 for m in ms)
        print(f"{name:<26} {med:>9.2f} {span:>13} {med / floor:>8.2f} {rss:>13.3f} {failed:>7}")


def bench(rows: int, dim: int, repeat: int, workdir: Path, baseline: Path | None) -> bool:
    npy = workdir / f"emb_{rows}x{dim}.npy"
    t0 = time.perf_counter()
    gen = [sys.executable, __file__, "--worker", "write", str(npy), "--rows", str(rows),
           "--dim", str(dim)]  # fmt: skip
    if run_child("write", gen).returncode != 0:
        return False
    print(f"generated {npy} in {time.perf_counter() - t0:.1f} s")
    chunk_rows = max(1, CHUNK_BYTES // (8 * dim))
    cli = [*densefeat_command(), "analyze", str(npy), "--json", str(workdir / "out.json")]

    def worker(mode: str) -> list[str]:
        return [sys.executable, __file__, "--worker", mode, str(npy),
                "--chunk-rows", str(chunk_rows)]  # fmt: skip

    commands = {
        "numpy floor": worker("floor"),
        "densefeat analyze": cli,
        "library, no torch": worker("library"),
        "import densefeat.analyze": [sys.executable, "-c", "import densefeat.analyze"],
    }
    if baseline is not None:
        commands["densefeat analyze, baseline"] = ["env", f"PYTHONPATH={baseline}", *cli]
    runs: dict[str, list[Measurement]] = {name: [] for name in commands}
    print(f"before: {_load()}")
    for _ in range(repeat):
        for name, argv in commands.items():
            runs[name].append(run_child(name, argv))
    print(f"after:  {_load()}")
    report(rows, dim, runs)
    print(f"chunk rows: {chunk_rows}; {repeat} runs each; targets: analyze <= 1.5x floor, "
          "peak RSS <= 1 GiB")  # fmt: skip
    return all(m.returncode == 0 for ms in runs.values() for m in ms)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--large", action="store_true", help="also run at 1,000,000 x 768")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command (median)")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="directory to write the .npy and JSON to (kept); default: a temporary directory",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="SRC",
        help="also time `densefeat analyze` with PYTHONPATH=SRC (another version's src/)",
    )
    parser.add_argument("--chunk-rows", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "NPY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        mode, path = args.worker
        if mode == "write":
            write_npy(Path(path), args.rows, args.dim)
        else:
            (floor_worker if mode == "floor" else library_worker)(path, args.chunk_rows)
        return 0

    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="densefeat-bench-")
    workdir = args.keep or Path(tmp.name)  # type: ignore[union-attr]
    workdir.mkdir(parents=True, exist_ok=True)
    sizes = [(args.rows, args.dim)] + ([(1_000_000, 768)] if args.large else [])
    try:
        ok = True
        for rows, dim in sizes:
            ok &= bench(rows, dim, args.repeat, workdir, args.baseline)
            if tmp is not None:  # free the page cache and disk before the next size
                (workdir / f"emb_{rows}x{dim}.npy").unlink(missing_ok=True)
        return 0 if ok else 1
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
