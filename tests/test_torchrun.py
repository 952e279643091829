"""The README's scale-out command, run as written: ``torchrun --nproc_per_node 2 -m densefeat
train --data DIR --method dense --out RUN --max-steps 20`` with 2 gloo processes.

The DDP tests of test_train.py drive ``densefeat.train`` through their own worker; this one goes
through torchrun and the CLI, where a rank > 0 once died at the closing message (it has no
checkpoint) and torchrun exited 1. torchrun's per-rank logs (``--redirects 3``) show which rank
printed what.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import densefeat
from _helpers import events_frame, free_port
from densefeat.data.meds.write import write_meds_dataset
from densefeat.train.checkpoint import latest_checkpoint

pytestmark = pytest.mark.slow

# Enough training subjects for the default global batch (256 window pairs of 365-day windows):
# ~3 pairs per subject of ~5 years.
N_SUBJECTS = 120
N_TRAIN = 110


def _meds(root: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for s in range(1, N_SUBJECTS + 1):
        rows.append((s, dt.datetime(1950 + s % 40, 1, 1), "MEDS_BIRTH", None))
        day = dt.datetime(2010, 1, 1) + dt.timedelta(days=int(rng.integers(0, 60)))
        for _ in range(int(rng.integers(35, 50))):
            day += dt.timedelta(days=int(rng.integers(20, 60)))
            code = f"{'AB'[s % 2]}{int(rng.integers(0, 6))}"
            rows.append((s, day, code, float(rng.normal()) if code.endswith("0") else None))
    ids = list(range(1, N_SUBJECTS + 1))
    splits = pl.DataFrame(
        {"subject_id": ids, "split": ["train" if i <= N_TRAIN else "held_out" for i in ids]}
    )
    return write_meds_dataset(root / "meds", events_frame(rows), dataset_name="toy", splits=splits)


def _rank_logs(log_dir: Path, rank: int, stream: str) -> str:
    found = sorted(log_dir.rglob(f"attempt_0/{rank}/{stream}.log"))
    assert found, f"torchrun wrote no {stream} log for rank {rank} under {log_dir}"
    return found[0].read_text()


def test_readme_torchrun_command_exits_zero_on_every_rank(tmp_path):
    data = _meds(tmp_path)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        # the worktree's package, whatever is installed
        "PYTHONPATH": os.pathsep.join(
            [str(Path(densefeat.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    logs = tmp_path / "logs"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",  # what the `torchrun` script runs
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "--log-dir",
        str(logs),
        "--redirects",
        "3",
        # the README's command from here on
        "-m",
        "densefeat",
        "train",
        "--data",
        str(data),
        "--method",
        "dense",
        "--out",
        str(tmp_path / "run"),
        "--max-steps",
        "20",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out0 = _rank_logs(logs, 0, "stdout")
    assert "densefeat train: ehr dense run in" in out0 and "step-0000020" in out0, out0
    # rank 1 trained (DDP would hang otherwise) and said nothing
    assert _rank_logs(logs, 1, "stdout") == ""
    assert _rank_logs(logs, 1, "stderr") == ""
    assert latest_checkpoint(tmp_path / "run").name == "step-0000020"
