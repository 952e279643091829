"""Run one benchmark stage in a child process and measure it (shared by the benchmarks).

Peak RSS is the child's own ``ru_maxrss`` from ``os.wait4`` (``RUSAGE_CHILDREN`` would keep the
maximum over every child so far). Output goes to a temporary file, not a pipe, so a chatty
child can never block on a full pipe while the parent waits for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Measurement:
    """One child process: wall seconds, peak RSS, exit code and everything it printed."""

    name: str
    seconds: float
    peak_rss_bytes: int
    returncode: int
    output: str

    @property
    def report(self) -> dict[str, Any]:
        """The last line of the output that is a JSON object ({} when there is none)."""
        for line in reversed(self.output.splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        return {}


def run_child(name: str, argv: list[str]) -> Measurement:
    """Run ``argv``, wait for it with ``os.wait4`` and keep its combined output."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        print(f"[{name}] failed with exit code {proc.returncode}:\n{text[-3000:]}", file=sys.stderr)
    # ru_maxrss is in KiB on Linux.
    return Measurement(name, seconds, usage.ru_maxrss * 1024, proc.returncode, text)
