"""The benchmark's tasks and evaluation rows.

Tasks come from, in order of precedence: ``--labels`` files (one task per file, named by its
stem); label files shipped inside the dataset (``DATA/labels/*.parquet``, as written by
``densefeat convert physionet2019``); otherwise the dataset's built-in onset tasks
(:func:`densefeat.data.tasks.build_task_labels`, written under ``OUT/labels``).

Evaluation rows. Yearly prediction times make many rows (Eunomia: 158,253 times, about 1.1%
positive per task), and every method embeds every row, so the benchmark may cap them
(``max_eval_times``): each task keeps **all its positive rows** and a **uniform random
sample of its negative rows** at rate ``r`` (the same draw for every task and method: a
hash of ``(subject_id, prediction_time)``, so it does not depend on which other rows exist).
Uniform subsampling of the negatives leaves the score distribution of each class unchanged,
so AUROC is unbiased; AUPRC depends on prevalence and is computed with weight ``1 / r`` on
the kept negatives (a Horvitz-Thompson estimate of the full-data AUPRC). The rate and the
counts are recorded per task.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ..data.meds import MedsDataset, read_labels
from ..data.splits import splitmix64
from ..data.tasks import build_task_labels

__all__ = ["EvalRows", "Task", "load_tasks", "select_eval_rows", "uniform_hash"]

SPLITS = ("train", "tuning", "held_out")
#: The fewest positives and negatives a task needs in each split to be probed.
MIN_PER_CLASS = 2


@dataclass
class Task:
    """One binary task.

    Attributes:
        name: the task name (a label file's stem).
        labels: ``subject_id, prediction_time, boolean_value, split`` of every label row.
        source: where the labels came from.
    """

    name: str
    labels: pl.DataFrame
    source: str

    def counts(self) -> dict[str, dict[str, int]]:
        """Positives and negatives per split."""
        out = {}
        for split in SPLITS:
            y = self.labels.filter(pl.col("split") == split)["boolean_value"]
            out[split] = {"positive": int(y.sum()), "negative": int((~y).sum())}
        return out

    def fingerprint(self) -> str:
        """A content hash of the label rows (stable across library versions, unlike polars'
        own hash): part of every evaluation's and supervised run's identity."""
        lab = self.labels
        h = hashlib.blake2b(digest_size=10)
        for col in ("subject_id", "prediction_time", "boolean_value"):
            if col in lab.columns:
                series = lab[col].cast(pl.Int64) if col == "prediction_time" else lab[col]
                h.update(series.to_numpy().tobytes())
        h.update("|".join(lab["split"]).encode())
        return f"{self.name}:{lab.height}:{h.hexdigest()}"

    def skip_reason(self) -> str | None:
        """Why the task cannot be probed, or None."""
        for split, c in self.counts().items():
            if min(c["positive"], c["negative"]) < MIN_PER_CLASS:
                return (
                    f"fewer than {MIN_PER_CLASS} positives or negatives in split {split!r} "
                    f"({c['positive']} positive, {c['negative']} negative)"
                )
        return None


def _with_split(labels: pl.DataFrame, ds: MedsDataset, source: str) -> pl.DataFrame:
    if "boolean_value" not in labels.columns:
        raise ValueError(f"{source}: the benchmark needs boolean_value labels (binary tasks)")
    return (
        labels.select("subject_id", "prediction_time", "boolean_value")
        .unique(["subject_id", "prediction_time"], keep="first", maintain_order=True)
        .join(ds.splits, on="subject_id", how="inner")
        .sort("subject_id", "prediction_time")
    )


def load_tasks(
    ds: MedsDataset,
    data_dir: str | os.PathLike[str],
    label_paths: list[Path] | None,
    out_dir: Path,
    only: tuple[str, ...] | None = None,
) -> list[Task]:
    """The benchmark's tasks (see the module docstring for where they come from).

    Raises:
        ValueError: duplicate task names, unknown ``only`` names, non-binary labels.
        MedsFormatError: unreadable label files or labels that do not fit the dataset.
    """
    tasks: list[Task] = []
    shipped = sorted((Path(data_dir) / "labels").glob("*.parquet"))
    if label_paths:
        for path in label_paths:
            labels = read_labels(path, dataset=ds)
            tasks.append(Task(Path(path).stem, _with_split(labels, ds, str(path)), str(path)))
    elif shipped:
        for path in shipped:
            labels = read_labels(path, dataset=ds)
            tasks.append(Task(path.stem, _with_split(labels, ds, str(path)), str(path)))
    else:
        built = build_task_labels(ds, out_dir=out_dir / "labels")
        for t in built.tasks:
            tasks.append(
                Task(t.task.name, _with_split(t.labels, ds, t.task.name), f"built-in ({t.path})")
            )
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be unique (label file stems), got {names}")
    if only:
        missing = sorted(set(only) - set(names))
        if missing:
            raise ValueError(f"--tasks: unknown task(s) {missing}; the data has {names}")
        tasks = [t for t in tasks if t.name in only]
    return tasks


def uniform_hash(subject_id: np.ndarray, time_us: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per (subject, time) from a fixed hash (splitmix64): the same
    draw for a row whatever other rows exist, on any machine and library version."""
    key = np.uint64((seed * 0x2545F4914F6CDD1D) & (2**64 - 1)) ^ np.uint64(0x5EED_E7A1)
    h = splitmix64(subject_id.astype(np.int64).view(np.uint64) ^ key)
    h = splitmix64(h ^ time_us.astype(np.int64).view(np.uint64))
    return (h >> np.uint64(11)).astype(np.float64) / 2.0**53


@dataclass
class EvalRows:
    """The rows every method embeds, and each task's view of them.

    Attributes:
        rows: ``subject_id, prediction_time, split, uniform`` (unique, sorted): embed these.
            ``uniform`` marks the rows of the label-independent uniform sample (hash below
            the rate): statistics that must not depend on any label (the whitening of the
            benchmark's "whitened" control) are fitted on those training rows.
        task_rows: task name -> ``row`` (index into ``rows``), ``boolean_value``, ``split``,
            ``weight`` (1, or ``1 / rate`` on subsampled negatives).
        rate: the negative sampling rate (1.0 without a cap).
    """

    rows: pl.DataFrame
    task_rows: dict[str, pl.DataFrame]
    rate: float

    def skip_reason(self, task: str) -> str | None:
        """Why ``task`` cannot be probed on these rows (a class missing in a split), or None."""
        rows = self.task_rows[task]
        for split in SPLITS:
            y = rows.filter(pl.col("split") == split)["boolean_value"]
            pos, neg = int(y.sum()), int((~y).sum())
            if min(pos, neg) < MIN_PER_CLASS:
                return (
                    f"fewer than {MIN_PER_CLASS} positives or negatives in split {split!r} "
                    f"among the evaluation rows ({pos} positive, {neg} negative)"
                )
        return None


def select_eval_rows(tasks: list[Task], max_times: int, seed: int = 0) -> EvalRows:
    """All positives and a uniform sample of negatives of every task (module docstring)."""
    keys = ["subject_id", "prediction_time"]
    union = pl.concat([t.labels.select(*keys, "split") for t in tasks]).unique(keys)
    n_times = union.height
    rate = 1.0 if not max_times or n_times <= max_times else max_times / n_times
    per_task = {}
    for t in tasks:
        lab = t.labels
        u = uniform_hash(
            lab["subject_id"].to_numpy(),
            lab["prediction_time"].cast(pl.Int64).to_numpy(),
            seed,
        )
        keep = lab["boolean_value"].to_numpy() | (u < rate)
        per_task[t.name] = lab.filter(pl.Series(keep)).with_columns(
            weight=pl.when(pl.col("boolean_value")).then(1.0).otherwise(1.0 / rate)
        )
    rows = (
        pl.concat([f.select(*keys, "split") for f in per_task.values()])
        .unique(keys)
        .sort(keys)
        .with_row_index("row")
    )
    u_rows = uniform_hash(
        rows["subject_id"].to_numpy(), rows["prediction_time"].cast(pl.Int64).to_numpy(), seed
    )
    rows = rows.with_columns(uniform=pl.Series(u_rows < rate))
    task_rows = {
        name: f.join(rows.select(*keys, "row"), on=keys, how="left")
        .select("row", "subject_id", "prediction_time", "split", "boolean_value", "weight")
        .sort("row")
        for name, f in per_task.items()
    }
    return EvalRows(rows.drop("row"), task_rows, rate)
