"""The notes a text benchmark embeds (:class:`NoteRows`: every note with a split, training notes
sampled above a cap), their split groups (the bootstrap unit), and the binary tasks of their
label columns."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ...data.text.chunks import text_group_key
from ...data.text.corpus import NoteCorpus
from ...io.atomic import atomic_path
from ..rows import EvalRows, Task, uniform_hash

__all__ = [
    "MIN_TASK_POSITIVES",
    "SPLITS",
    "NoteRows",
    "eval_rows_of",
    "note_rows",
    "select_text_tasks",
    "task_summary",
    "write_notes",
]


#: Fewest positives (and negatives) a label needs in every split to be a task (module docstring).
MIN_TASK_POSITIVES = 10


SPLITS = ("train", "tuning", "held_out")


class NoteRows:
    """The notes every method embeds, and each task's view of them.

    Attributes:
        index: (n,) corpus row positions of the evaluated notes, ascending.
        texts: their texts.
        note_id: their ids (as strings, for the notes file).
        group: (n,) int64 split group (the bootstrap unit; see the module docstring).
        split: (n,) split names.
        rate: the sampling rate of the training notes (1.0 without a cap).
    """

    def __init__(
        self,
        index: np.ndarray,
        texts: list[str],
        note_id: list[str],
        group: np.ndarray,
        split: np.ndarray,
        rate: float,
    ) -> None:
        self.index, self.texts, self.note_id = index, texts, note_id
        self.group, self.split, self.rate = group, split, rate

    def __len__(self) -> int:
        return self.index.size

    def held(self) -> np.ndarray:
        """Boolean mask of the held-out notes."""
        return self.split == "held_out"

    def fingerprint(self) -> str:
        """A content hash of the evaluated notes (ids, texts, groups, splits)."""
        h = hashlib.blake2b(digest_size=10)
        for nid, text, g, s in zip(self.note_id, self.texts, self.group, self.split, strict=True):
            h.update(f"{nid}\x1f{g}\x1f{s}\x1f".encode())
            h.update(text.encode())
            h.update(b"\x1e")
        return f"{len(self)}:{self.rate!r}:{h.hexdigest()}"


def _groups(corpus: NoteCorpus) -> np.ndarray:
    """The split group of every corpus row as int64: its subject, else its distinct text."""
    frame = corpus.frame
    if "subject_id" in frame.columns and frame["subject_id"].null_count() == 0:
        return frame["subject_id"].cast(pl.Int64).to_numpy()
    keys = [text_group_key(t) for t in frame["text"].to_list()]
    _, inverse = np.unique(np.asarray(keys), return_inverse=True)
    return inverse.astype(np.int64)


def note_rows(corpus: NoteCorpus, max_notes: int = 0, seed: int = 0) -> NoteRows:
    """The evaluated notes: every note with a split, training notes sampled above ``max_notes``.

    Args:
        corpus: the notes.
        max_notes: cap on the notes embedded (0: none). Every ``tuning`` and ``held_out`` note
            is kept; ``train`` notes are kept when a hash of their group falls below the rate
            that fills the cap, so the sample does not depend on the other notes.
        seed: seed of that hash.
    """
    split_all = corpus.frame["split"].fill_null("").to_numpy().astype(str)
    group_all = _groups(corpus)
    has_split = np.isin(split_all, SPLITS)
    train = split_all == "train"
    n_other = int((has_split & ~train).sum())
    n_train = int(train.sum())
    rate = 1.0
    if max_notes and has_split.sum() > max_notes and n_train:
        rate = max(min((max_notes - n_other) / n_train, 1.0), 1.0 / n_train)
    keep = has_split & (~train | (uniform_hash(group_all, np.zeros_like(group_all), seed) < rate))
    index = np.flatnonzero(keep)
    texts = corpus.frame["text"].gather(index).to_list()
    ids = [str(x) for x in corpus.frame["note_id"].gather(index).to_list()]
    return NoteRows(index, texts, ids, group_all[index], split_all[index], rate)


def _label_vector(
    corpus: NoteCorpus, name: str, index: np.ndarray
) -> tuple[np.ndarray | None, str]:
    col = corpus.frame[name].gather(index)
    if col.dtype == pl.Boolean:
        if col.null_count():
            return None, f"label column {name!r} has {col.null_count()} nulls"
        return col.to_numpy().astype(bool), ""
    if col.dtype.is_numeric():
        values = col.cast(pl.Float64).to_numpy()
        if np.isin(values, (0.0, 1.0)).all():
            return values == 1.0, ""
        return None, f"label column {name!r} holds values other than 0 and 1 (not binary)"
    return None, (
        f"label column {name!r} has dtype {col.dtype}: a task needs a boolean (or 0/1) column, "
        "one column per class"
    )


def select_text_tasks(
    corpus: NoteCorpus,
    rows: NoteRows,
    *,
    min_positives: int = MIN_TASK_POSITIVES,
    max_tasks: int = 0,
    only: Sequence[str] | None = None,
) -> tuple[list[Task], list[dict[str, str]]]:
    """The binary tasks of the notes (module docstring) and the labels skipped, with reasons.

    Returns:
        ``(tasks, skipped)``: each :class:`~densefeat.benchmark.rows.Task`'s labels hold
        ``row`` (index into ``rows``), ``subject_id`` (the group), ``boolean_value`` and
        ``split`` of every evaluated note, in ``rows`` order.

    Raises:
        ValueError: ``only`` names a label the notes do not have.
    """
    names = list(corpus.label_names)
    if only:
        missing = sorted(set(only) - set(names))
        if missing:
            raise ValueError(f"--tasks: unknown label(s) {missing}; the notes have {names}")
        names = [n for n in names if n in only]
    eligible: list[tuple[int, str, np.ndarray]] = []
    skipped: list[dict[str, str]] = []
    for name in names:
        y, why = _label_vector(corpus, name, rows.index)
        if y is None:
            skipped.append({"task": name, "reason": why})
            continue
        counts = {
            s: (int(y[rows.split == s].sum()), int((~y[rows.split == s]).sum())) for s in SPLITS
        }
        low = min(min(c) for c in counts.values())
        if low < min_positives:
            text = ", ".join(f"{s} {p}+/{n}-" for s, (p, n) in counts.items())
            skipped.append(
                {
                    "task": name,
                    "reason": f"fewer than {min_positives} positives or negatives in a split "
                    f"({text})",
                }
            )
            continue
        eligible.append((min(p for p, _ in counts.values()), name, y))
    eligible.sort(key=lambda e: (-e[0], e[1]))
    if max_tasks and len(eligible) > max_tasks:
        for _, name, _ in eligible[max_tasks:]:
            skipped.append(
                {"task": name, "reason": f"not among the {max_tasks} tasks with the most positives"}
            )
        eligible = eligible[:max_tasks]
    tasks = []
    for _, name, y in eligible:
        labels = pl.DataFrame(
            {
                "row": np.arange(len(rows), dtype=np.int64),
                "subject_id": rows.group,
                "boolean_value": y,
                "split": rows.split,
            }
        )
        tasks.append(Task(name, labels, f"{corpus.kind} label column {name!r}"))
    return tasks, skipped


def eval_rows_of(rows: NoteRows, tasks: list[Task]) -> EvalRows:
    # uniform: every evaluated note belongs to a label-independent sample (all notes, or a hash
    # sample of the training notes), so whitening may be fitted on all training notes.
    frame = pl.DataFrame(
        {
            "note_id": rows.note_id,
            "subject_id": rows.group,
            "split": rows.split,
            "uniform": np.ones(len(rows), dtype=bool),
        }
    )
    task_rows = {
        t.name: t.labels.select(
            "row", "subject_id", "split", "boolean_value", pl.lit(1.0).alias("weight")
        )
        for t in tasks
    }
    return EvalRows(frame, task_rows, rows.rate)


def task_summary(task: Task) -> dict[str, Any]:
    lab = task.labels
    part = {s: lab.filter(pl.col("split") == s)["boolean_value"] for s in SPLITS}
    return {
        "name": task.name,
        "source": task.source,
        "n_train": part["train"].len(),
        "n_tuning": part["tuning"].len(),
        "n_test": part["held_out"].len(),
        "positives_train": int(part["train"].sum()),
        "positives_tuning": int(part["tuning"].sum()),
        "positives_test": int(part["held_out"].sum()),
        "prevalence_test": float(part["held_out"].mean()),
    }


def write_notes(path: Path, rows: NoteRows, tasks: list[Task]) -> None:
    frame = pl.DataFrame(
        {"note_id": rows.note_id, "group": rows.group, "split": rows.split}
    ).with_columns([pl.Series(t.name, t.labels["boolean_value"]) for t in tasks])
    with atomic_path(path, suffix=".parquet") as tmp:
        frame.write_parquet(tmp)
