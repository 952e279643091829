"""``run_text_benchmark``: the benchmark on notes (``densefeat benchmark --modality text``).

The same protocol, files and ``results.json`` schema as the EHR benchmark
(:mod:`densefeat.benchmark.run`, ``docs/results-schema.md``), with notes instead of patient
histories:

* **Notes and splits.** ``--data`` is read by :func:`densefeat.train.text.read_corpus` (a MEDS
  directory's notes, MTSamples, or a generic note table; see
  :mod:`densefeat.data.note_corpus`). Splits are the corpus's text-group splits: identical
  (whitespace-normalised) texts and a subject's notes always share a split. Every run trains
  on the ``train`` notes only. The evaluation embeds every note (``max_eval_times``, when set
  below the number of notes, keeps every ``tuning`` and ``held_out`` note and a uniform hash
  sample of the ``train`` notes, which then only fit fewer probe rows).
* **Bootstrap unit** ("subject" in the schema): the split group of a note, i.e. its subject
  when the notes have subjects, else its distinct text. MTSamples is read one row per distinct
  text, so there every note is its own group.
* **Tasks.** One binary task per label column: MTSamples specialties one-vs-rest over distinct
  texts (multi-label: 91% of its texts are listed under several specialties), a generic table's
  boolean (or 0/1) label columns. A label is a task when it has at least ``min_positives``
  positives **and** negatives in every split (default :data:`MIN_TASK_POSITIVES` = 10: a
  held-out AUROC on fewer positives has a CI too wide to rank anything); the eligible labels
  are ordered by their smallest per-split positive count (largest first) and the first
  ``max_tasks`` are kept (0: all). On the shared MTSamples copy, 11 specialties qualify at 10
  (Surgery, Consult - History and Phy., Orthopedic, Cardiovascular / Pulmonary, General
  Medicine, Neurology, SOAP / Chart / Progress Notes, Gastroenterology, Radiology, Urology,
  Obstetrics / Gynecology). Every other label is listed in ``tasks_skipped`` with its reason.
  The primary endpoint is the macro AUROC over these tasks, as for EHR.
* **Runs.** The benchmark's methods on the text encoder (``text_encoder="small"``, the
  from-scratch transformer, unless ``--set text_encoder=pretrained``; ``masked`` is
  masked-token prediction and needs the small encoder, so it is skipped with the reason under
  the pretrained one). Pair methods see two stochastic views of a note (MEDS notes: a note and
  the same subject's next note). ``supervised`` trains one logit per task (one-vs-rest BCE on
  the tasks' training labels; ``--supervised-task`` restricts it to one). Runs, resumes and
  reuse are :func:`densefeat.benchmark.runs.ensure_run`'s, under the identity (benchmark
  version, the notes file's name, size and modification time) that a run must share to be
  reused; an evaluation is reused only when its fingerprint (that identity, the evaluation
  settings, the tasks' labels, the evaluated notes, the run's config and checkpoint weights)
  matches, as in :mod:`densefeat.benchmark.run`. The untrained ``random`` run, whose only
  checkpoint is at step 0, is reused as well instead of being rebuilt on every rerun.
* **Baselines without training** (probe-only rows, like ``count_features`` for EHR):
  ``tfidf``, scikit-learn's ``TfidfVectorizer`` (:data:`TFIDF_SETTINGS`) fitted on the
  training notes only, then the same probe; ``minilm_frozen``, the frozen all-MiniLM-L6-v2
  sentence embedding (384-d, mean-pooled, chunked like the trained encoders read the notes:
  ``text_max_tokens``, ``text_chunk_words``, ``text_max_chunks``), loaded offline; skipped with
  the reason when the ``text`` extra is not installed. Its geometry is recorded too (at its own
  d = 384, beside the isotropic reference of that shape).
* **Per run**: geometry of the backbone and projector outputs on the held-out notes; the
  training curve from ``stats.jsonl``; probes (full data, k-shot, after whitening); robustness
  (token dropout and sentence dropout at 10 and 30% of the held-out notes, :data:`TEXT_GRID`,
  the probe fitted on clean notes: AUROC drop and embedding drift); no temporal windows (a note
  table has no time axis: the section is empty and the table says why); seed alignment on the
  held-out notes; dense against the best baseline with one shared group-level bootstrap.

Layout of the output directory::

    OUT/labels/notes.parquet         the evaluated notes: note_id, group, split, one column per task
    OUT/runs/<name>/seed<s>/         one densefeat train run (modality text) per method and seed
    OUT/eval/<name>/seed<s>.json     its evaluation records (+ .npz arrays), with a fingerprint
    OUT/eval/tfidf/seed0.json, OUT/eval/minilm_frozen/seed0.json   the probe-only baselines
    OUT/eval/minilm_frozen/embeddings.npz   cached frozen-MiniLM note embeddings
    OUT/results.json, OUT/results.md, OUT/report.html
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from ..data.note_corpus import NoteCorpus
from ..data.notes import text_group_key
from ..eval.bootstrap import weighted_auroc
from ..eval.perturb import TEXT_PERTURBATIONS, perturb_text, perturbation_grid
from ..eval.robustness import embedding_drift
from ..models.heads import ProjectionHead
from ..train.checkpoint import latest_checkpoint, load_checkpoint, read_run_config
from ..train.config import TrainConfig
from .config import BENCHMARK_VERSION, PERTURBATIONS, BenchmarkConfig, RunSpec, fingerprint
from .evaluate import RunResult, _probe_task, evaluate_features
from .geometry import geometry_record, one_thread, reference_record, training_curve
from .rows import EvalRows, Task, _uniform
from .run import (
    RESULTS_KIND,
    RESULTS_VERSION,
    _device,
    _load_eval,
    _save_eval,
    _shared_resamples,
    _versions,
    _write_atomic,
    train_and_evaluate,
)
from .runs import _state, ensure_run, run_config
from .summary import (
    compare,
    macro_auroc,
    macro_drop,
    resampled_endpoints,
    seed_pairs,
    summary_table,
)

__all__ = [
    "MIN_TASK_POSITIVES",
    "TEXT_BASELINES",
    "TEXT_GRID",
    "TEXT_TRAIN_DEFAULTS",
    "TFIDF_SETTINGS",
    "NoteRows",
    "TextContext",
    "evaluate_text_run",
    "load_text_network",
    "note_rows",
    "run_text_benchmark",
    "select_text_tasks",
    "tfidf_features",
]

#: Test-time perturbations of notes (DESIGN.md): token and sentence dropout at 10 and 30%.
TEXT_GRID: tuple[tuple[str, float], ...] = tuple(perturbation_grid("text"))
#: The probe-only baselines of the text benchmark, in table order.
TEXT_BASELINES = ("tfidf", "minilm_frozen")
#: Fewest positives (and negatives) a label needs in every split to be a task (module docstring).
MIN_TASK_POSITIVES = 10
#: TrainConfig defaults of the text benchmark under the user's ``--set`` overrides: one encoder
#: for every method, ``masked`` included (it needs the small encoder).
TEXT_TRAIN_DEFAULTS: dict[str, Any] = {"text_encoder": "small"}
#: The TF-IDF baseline: unigrams seen in at least 2 training notes, the 5,000 most frequent,
#: sublinear term frequency, L2-normalised rows (scikit-learn's default norm). Fitted on the
#: training notes only (no leakage), then probed like every embedding (standardised features).
TFIDF_SETTINGS: dict[str, Any] = {"min_df": 2, "max_features": 5000, "sublinear_tf": True}

_SPLITS = ("train", "tuning", "held_out")
#: Seed of the shared bootstrap resamples and of the seed redraws (the EHR benchmark's).
_BOOTSTRAP_SEED, _SEED_REDRAW_SEED = 12345, 54321


def _geometry(z: np.ndarray) -> dict[str, Any]:
    with one_thread():
        return geometry_record(z)


@dataclass
class TextContext:
    """What every run's evaluation shares: the parts of
    :class:`densefeat.benchmark.evaluate.Context` that the probes and the shared bootstrap read
    (``bench``, ``eval_rows``, ``tasks``), without an event store."""

    bench: BenchmarkConfig
    eval_rows: EvalRows
    tasks: list[Task]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


_NO_TEMPORAL = "notes have no time windows: temporal stability is not measured on text"
_PROBE_ONLY = "probe-only baseline: no encoder run to perturb"


# --------------------------------------------------------------------------------------------
# Notes, groups, tasks.


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
    has_split = np.isin(split_all, _SPLITS)
    train = split_all == "train"
    n_other = int((has_split & ~train).sum())
    n_train = int(train.sum())
    rate = 1.0
    if max_notes and has_split.sum() > max_notes and n_train:
        rate = max(min((max_notes - n_other) / n_train, 1.0), 1.0 / n_train)
    keep = has_split & (~train | (_uniform(group_all, np.zeros_like(group_all), seed) < rate))
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
            s: (int(y[rows.split == s].sum()), int((~y[rows.split == s]).sum())) for s in _SPLITS
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


def _eval_rows(rows: NoteRows, tasks: list[Task]) -> EvalRows:
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


def _task_fingerprint(task: Task) -> str:
    lab = task.labels
    h = hashlib.blake2b(digest_size=10)
    h.update(lab["subject_id"].to_numpy().tobytes())
    h.update(lab["boolean_value"].to_numpy().tobytes())
    h.update("|".join(lab["split"]).encode())
    return f"{task.name}:{lab.height}:{h.hexdigest()}"


def _task_summary(task: Task) -> dict[str, Any]:
    lab = task.labels
    part = {s: lab.filter(pl.col("split") == s)["boolean_value"] for s in _SPLITS}
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


# --------------------------------------------------------------------------------------------
# Encoders and embeddings.


def load_text_network(run_dir: str | os.PathLike[str]) -> tuple[TrainConfig, nn.Module]:
    """The config and full network (encoder + head) of a text run, in eval mode on CPU.

    :func:`densefeat.train.text.load_text_run` returns the encoder only; the benchmark also
    needs the projector (its geometry).

    Raises:
        ValueError: not a text run, or a checkpoint that does not fit.
    """
    from ..train.text import build_text_network, check_fingerprint, load_saved_weights

    run_dir = Path(run_dir)
    run = read_run_config(run_dir)
    cfg = TrainConfig.from_dict(run["train"])
    if cfg.modality != "text":
        raise ValueError(f"{run_dir}: a {cfg.modality} run, not a text run")
    weights, _, _ = load_checkpoint(latest_checkpoint(run_dir))
    labels = run.get("text", {}).get("label_names") or []
    net, _ = build_text_network(cfg, max(len(labels), 1))
    check_fingerprint(run.get("text", {}).get("backbone"), net, run_dir)
    load_saved_weights(net, weights)
    net.eval()
    return cfg, net


@torch.no_grad()
def _embed(
    net: nn.Module, texts: list[str], batch_size: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(backbone, projector)`` float32 embeddings of ``texts`` (projector: None without one)."""
    from ..train.text import embed_texts

    zb = embed_texts(net.encoder, texts, batch_size, device)
    head = net.head if isinstance(net.head, ProjectionHead) else None
    if head is None:
        return zb, None
    head.eval()
    parts = [
        head(torch.from_numpy(zb[lo : lo + 1024]).to(device)).float().cpu().numpy()
        for lo in range(0, len(zb), 1024)
    ]
    return zb, (np.concatenate(parts) if parts else np.zeros((0, zb.shape[1]), np.float32))


# --------------------------------------------------------------------------------------------
# Evaluation of one run.


def _held_arrays(task_rows: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    te = task_rows.filter(pl.col("split") == "held_out")
    return te["row"].to_numpy(), te["boolean_value"].to_numpy().astype(np.int64)


def _robustness(
    name: str,
    seed: int,
    encoder: nn.Module,
    cfg: TrainConfig,
    rows: NoteRows,
    zb: np.ndarray,
    probes: dict[str, Any],
    clean_auroc: dict[str, float],
    ctx: TextContext,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Probe AUROC drop and embedding drift of the held-out notes under each perturbation."""
    from ..train.text import embed_texts

    held = rows.held()
    index = np.flatnonzero(held)
    position = np.full(len(rows), -1)
    position[index] = np.arange(index.size)
    held_texts = [rows.texts[i] for i in index]
    records, arrays = [], {}
    for p, level in ctx.bench.perturbations:
        texts = perturb_text(held_texts, p, level, seed)
        zp = embed_texts(encoder, texts, cfg.text_batch_size, ctx.device)
        with one_thread():
            drift = embedding_drift(zb[held], zp, ctx.bench.k)
        for task in ctx.tasks:
            row, y = _held_arrays(ctx.eval_rows.task_rows[task.name])
            s = probes[task.name].decision_function(zp[position[row]])
            auroc = float(weighted_auroc(s, y))
            arrays[f"robust/{p}/{level}/{task.name}"] = s
            records.append(
                {
                    "method": name,
                    "seed": seed,
                    "task": task.name,
                    "perturbation": p,
                    "level": level,
                    "auroc": auroc,
                    "auroc_drop": clean_auroc[task.name] - auroc,
                    **{
                        key: float(drift[key])
                        for key in ("cosine_drift", "relative_drift", "subspace_distance", "chance")
                    },
                }
            )
    return records, arrays


def evaluate_text_run(
    spec: RunSpec, run_dir: Path, rows: NoteRows, ctx: TextContext, say: Callable[[str], None]
) -> RunResult:
    """Geometry, training curve, probes and robustness of one text run (module docstring)."""
    cfg, net = load_text_network(run_dir)
    net.to(ctx.device)
    say(f"{spec.key}: embedding {len(rows):,} notes")
    zb, zp = _embed(net, rows.texts, cfg.text_batch_size, ctx.device)
    held = rows.held()
    base = {"method": spec.name, "seed": spec.seed}
    with one_thread():
        geometry = [{**base, "output": "backbone", **geometry_record(zb[held])}]
        if zp is not None:
            geometry.append({**base, "output": "projector", **geometry_record(zp[held])})
    records: dict[str, list[dict[str, Any]]] = {
        "geometry": geometry,
        "training_curves": [
            {**base, "output": "backbone", "d": cfg.d_model, **training_curve(run_dir)}
        ],
        "probes": [],
        "robustness": [],
        "temporal": [],
    }
    arrays: dict[str, np.ndarray] = {"held_out": zb[held]}
    say(f"{spec.key}: probes")
    probes: dict[str, Any] = {}
    clean: dict[str, float] = {}
    for task in ctx.tasks:
        recs, probe, scores = _probe_task(spec.name, spec.seed, task, zb, ctx)
        records["probes"] += recs
        probes[task.name] = probe
        clean[task.name] = recs[0]["auroc"]
        arrays[f"scores/{task.name}"] = scores
        white, _, _ = _probe_task(spec.name, spec.seed, task, zb, ctx, whitened=True, kshot=False)
        records["probes"] += white
    if ctx.bench.perturbations and ctx.tasks:
        say(f"{spec.key}: robustness")
        recs, arr = _robustness(
            spec.name, spec.seed, net.encoder, cfg, rows, zb, probes, clean, ctx
        )
        records["robustness"] += recs
        arrays.update(arr)
    return RunResult(records, arrays)


# --------------------------------------------------------------------------------------------
# Probe-only baselines.


def tfidf_features(rows: NoteRows) -> np.ndarray:
    """TF-IDF (:data:`TFIDF_SETTINGS`) of every evaluated note, vocabulary and IDF from the
    training notes only; float32 (n, vocabulary)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(**TFIDF_SETTINGS, dtype=np.float32)
    train = [t for t, s in zip(rows.texts, rows.split, strict=True) if s == "train"]
    vec.fit(train)
    return vec.transform(rows.texts).toarray()


def _minilm_encoder(cfg0: TrainConfig) -> nn.Module:
    """The frozen all-MiniLM-L6-v2 (offline), reading notes like the benchmark's encoders."""
    from ..models.text import build_text_encoder
    from ..train.text import text_encoder_config

    tcfg = text_encoder_config(
        cfg0.replace(text_encoder="pretrained", text_trainable_layers=0, text_cache_size=0)
    )
    encoder = build_text_encoder(tcfg)
    encoder.eval()
    return encoder


def _minilm_embeddings(
    cfg0: TrainConfig, rows: NoteRows, path: Path, device: torch.device, say: Callable[[str], None]
) -> tuple[np.ndarray, str]:
    """Frozen MiniLM embeddings (n, 384) of the evaluated notes, cached in ``path``."""
    from ..train.text import backbone_fingerprint

    encoder = _minilm_encoder(cfg0)
    tcfg = encoder.config.to_dict()
    fp = fingerprint(
        rows.fingerprint(),
        {k: tcfg[k] for k in ("max_tokens", "chunk_words", "max_chunks", "normalize")},
        backbone_fingerprint(encoder),
    )
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            if "fingerprint" in f.files and str(f["fingerprint"]) == fp:
                return f["z"], fp
    say(f"minilm_frozen: embedding {len(rows):,} notes with the frozen all-MiniLM-L6-v2")
    encoder.to(device)
    parts = []
    with torch.no_grad():
        for lo in range(0, len(rows), 64):
            parts.append(encoder.backbone_embed(rows.texts[lo : lo + 64]).float().cpu().numpy())
    z = np.concatenate(parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    os.close(fd)
    np.savez(tmp, z=z, fingerprint=np.array(fp))
    os.replace(tmp, path)
    return z, fp


def _baseline(
    name: str,
    identity: Any,
    features: Callable[[], np.ndarray],
    out: Path,
    eval_fp_base: list[Any],
    rows: NoteRows,
    ctx: TextContext,
    geometry: bool,
) -> tuple[RunResult, bool]:
    """Probes (and geometry) of fixed features; ``(result, reused)``."""
    fp = fingerprint(eval_fp_base, name, identity)
    path = out / "eval" / name / "seed0.json"
    result = _load_eval(path, fp)
    reused = result is not None
    if result is None:
        z = features()
        result = evaluate_features(name, z, ctx)
        held = rows.held()
        result.records["geometry"] = (
            [{"method": name, "seed": 0, "output": "backbone", **_geometry(z[held])}]
            if geometry
            else []
        )
        _save_eval(path, fp, result)
    return result, reused


# --------------------------------------------------------------------------------------------
# The benchmark.


def _ensure_text_run(
    spec: RunSpec,
    bench: BenchmarkConfig,
    data: str,
    runs_dir: Path,
    identity: dict[str, Any],
    on_step: Callable[[int], None] | None,
) -> tuple[Path, str]:
    """:func:`~densefeat.benchmark.runs.ensure_run`, except that a finished run of a method that
    does not train (``random``: its only checkpoint is at step 0, below the budget) is reused
    instead of being "resumed" (rebuilt and re-checkpointed) on every rerun."""
    from ..methods import get_method

    run_dir = runs_dir / spec.name / f"seed{spec.seed}"
    if not get_method(spec.method).trains:
        if _state(run_dir, run_config(spec, bench), data, None, identity) != "fresh":
            return run_dir, "reused"
    return ensure_run(spec, bench, data, runs_dir, None, on_step=on_step, identity=identity)


def _text_spec(spec: RunSpec, **changes: Any) -> RunSpec:
    """``spec`` training the text modality (the benchmark sets ``modality`` itself)."""
    overrides = {**dict(spec.overrides), **changes, "modality": "text"}
    return replace(spec, overrides=tuple(sorted(overrides.items())))


def _notes_fingerprint(path: Path) -> str:
    """What identifies the notes' content: the file's (or MEDS directory's data and metadata
    files') names, sizes and modification times."""
    if path.is_dir():
        files = sorted((path / "data").rglob("*.parquet")) + sorted((path / "metadata").glob("*"))
    else:
        files = [path]
    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return fingerprint(str(path), stats)


def _text_bench(bench: BenchmarkConfig) -> BenchmarkConfig:
    """``bench`` with the text modality, its defaults and its perturbation grid."""
    perturbations = bench.perturbations
    if tuple(perturbations) == PERTURBATIONS:  # the EHR default: use the text grid
        perturbations = TEXT_GRID
    bad = sorted({p for p, _ in perturbations} - set(TEXT_PERTURBATIONS))
    if bad:
        raise ValueError(
            f"text perturbations are {sorted(TEXT_PERTURBATIONS)}; got {bad} (EHR perturbations)"
        )
    train = {**TEXT_TRAIN_DEFAULTS, **bench.train}
    return replace(bench, train=train, perturbations=tuple(perturbations))


def _write_notes(path: Path, rows: NoteRows, tasks: list[Task]) -> None:
    frame = pl.DataFrame(
        {"note_id": rows.note_id, "group": rows.group, "split": rows.split}
    ).with_columns([pl.Series(t.name, t.labels["boolean_value"]) for t in tasks])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, path)


def run_text_benchmark(
    data: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    bench: BenchmarkConfig,
    *,
    min_positives: int = MIN_TASK_POSITIVES,
    max_tasks: int = 0,
    baselines: Sequence[str] = TEXT_BASELINES,
    dataset_name: str | None = None,
    say: Callable[[str], None] = print,
    progress: Any = None,
) -> dict[str, Any]:
    """Run the text benchmark and write ``results.json``, ``results.md`` and ``report.html``.

    Args:
        data: a note table file (MTSamples or generic) or a MEDS directory with notes.
        out_dir: the output directory (reused parts are kept, see the module docstring).
        bench: what to run; its ``train`` overrides get :data:`TEXT_TRAIN_DEFAULTS` beneath and
            ``modality="text"``; the EHR default perturbations become :data:`TEXT_GRID`;
            ``max_eval_times`` caps the notes embedded; ``tasks`` restricts the labels.
        min_positives: fewest positives and negatives per split of a task.
        max_tasks: keep the tasks with the most positives (0: every eligible task).
        baselines: a subset of :data:`TEXT_BASELINES` to probe.
        dataset_name: a display name for the report.
        say: receives one-line progress messages.
        progress: an optional ``rich.progress.Progress`` to show training steps in.

    Returns:
        the results dict (as written to ``results.json``).

    Raises:
        ValueError: bad settings (named), an unreadable corpus, EHR perturbations.
    """
    from ..eval.temporal import seed_alignment
    from ..report import render
    from ..train.text import read_corpus

    t_start = time.perf_counter()
    unknown = sorted(set(baselines) - set(TEXT_BASELINES))
    if unknown:
        raise ValueError(f"unknown text baseline(s) {unknown}; choose from {list(TEXT_BASELINES)}")
    if min_positives < 1 or max_tasks < 0:
        raise ValueError("min_positives must be >= 1 and max_tasks >= 0")
    bench = _text_bench(bench)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    data = str(Path(data).resolve())
    specs = [_text_spec(s) for s in bench.runs()]
    cfg0 = run_config(specs[0], bench)
    corpus = read_corpus(cfg0, data)
    rows = note_rows(corpus, bench.max_eval_times)
    tasks, skipped = select_text_tasks(
        corpus, rows, min_positives=min_positives, max_tasks=max_tasks, only=bench.tasks
    )
    out.mkdir(parents=True, exist_ok=True)
    if not tasks:
        say(f"no task: no label of {data} has {min_positives} positives in every split")
    _write_notes(out / "labels" / "notes.parquet", rows, tasks)

    methods_skipped: list[dict[str, str]] = []

    def drop_method(method: str, reason: str) -> None:
        nonlocal specs
        if any(s.method == method for s in specs):
            say(f"{method} skipped: {reason}")
            methods_skipped.append({"method": method, "reason": reason})
            specs = [s for s in specs if s.method != method]

    if cfg0.text_encoder != "small":
        drop_method("masked", "masked-token prediction needs the small encoder")
    sup_labels: list[str] = []
    if any(s.method == "supervised" for s in specs):
        names = [t.name for t in tasks]
        if bench.supervised_task is not None and bench.supervised_task not in names:
            raise ValueError(f"--supervised-task {bench.supervised_task!r} is not a task {names}")
        sup_labels = [bench.supervised_task] if bench.supervised_task else names
        if not sup_labels:
            drop_method("supervised", "no task with labels in every split")
        elif any("," in n for n in sup_labels):
            drop_method("supervised", "a task name holds a comma (text_labels is comma-separated)")
            sup_labels = []
        else:
            specs = [
                _text_spec(s, text_labels=",".join(sup_labels)) if s.method == "supervised" else s
                for s in specs
            ]
    if not specs:
        raise ValueError("no run left to train")

    device = _device(bench)
    ctx = TextContext(bench, _eval_rows(rows, tasks), tasks, device)
    # A run is reused only under the same benchmark version and note content (the run's own
    # config.json holds the rest: method, seed, budget, encoder, supervised labels).
    data_fp = _notes_fingerprint(Path(data))
    identity = {"benchmark_version": BENCHMARK_VERSION, "modality": "text", "dataset": data_fp}
    eval_settings = {
        k: v
        for k, v in bench.to_dict().items()
        if k not in ("methods", "ablations", "seeds", "device", "scale")
    }
    eval_fp_base: list[Any] = [
        "text",
        BENCHMARK_VERSION,
        data_fp,
        eval_settings,
        [_task_fingerprint(t) for t in tasks],
        rows.fingerprint(),
    ]
    say(
        f"{len(tasks)} text tasks ({', '.join(t.name for t in tasks) or 'none'}), "
        f"{len(rows):,} notes ({int(rows.held().sum()):,} held out), {len(specs)} runs"
    )

    results, arrays, run_seconds = train_and_evaluate(
        specs,
        bench,
        out,
        eval_fp_base,
        ensure=lambda spec, on_step: _ensure_text_run(
            spec, bench, data, out / "runs", identity, on_step=on_step
        ),
        evaluate=lambda spec, run_dir: evaluate_text_run(spec, run_dir, rows, ctx, say),
        say=say,
        progress=progress,
    )

    names = list(dict.fromkeys(s.name for s in specs))
    baselines_skipped: list[dict[str, str]] = []
    for name in (b for b in TEXT_BASELINES if b in baselines):
        if not tasks:
            baselines_skipped.append({"method": name, "reason": "no task to probe"})
            continue
        t0 = time.perf_counter()
        if name == "tfidf":
            identity: Any = TFIDF_SETTINGS

            def features() -> np.ndarray:
                return tfidf_features(rows)
        else:
            from ..models.text import TextModelNotFoundError

            path = out / "eval" / "minilm_frozen" / "embeddings.npz"
            try:
                z_minilm, fp_minilm = _minilm_embeddings(cfg0, rows, path, device, say)
            except (TextModelNotFoundError, ImportError) as exc:
                reason = f"the text extra is not installed ({exc})"
                say(f"minilm_frozen skipped: {reason}")
                baselines_skipped.append({"method": name, "reason": reason})
                continue

            identity = fp_minilm

            def features(z: np.ndarray = z_minilm) -> np.ndarray:
                return z

        result, reused = _baseline(
            name, identity, features, out, eval_fp_base, rows, ctx, geometry=name == "minilm_frozen"
        )
        say(f"{name} baseline: {'evaluation reused' if reused else 'probed'}")
        results["probes"] += result.records["probes"]
        results["geometry"] += result.records.get("geometry", [])
        arrays[(name, 0)] = result.arrays
        names.append(name)
        run_seconds[f"{name}/seed0"] = time.perf_counter() - t0

    for name in names:
        seeds = [s for (m, s) in arrays if m == name and "held_out" in arrays[(m, s)]]
        for a, b in seed_pairs(seeds):
            with one_thread():
                al = seed_alignment(
                    arrays[(name, a)]["held_out"], arrays[(name, b)]["held_out"], bench.k
                )
            results["alignment"].append(
                {"method": name, "kind": "seeds", "a": f"seed{a}", "b": f"seed{b}", **al}
            )

    comparison = None
    if tasks:
        shared = _shared_resamples(ctx, bench.bootstrap, seed=_BOOTSTRAP_SEED)
        auroc_fn, drop_fn = resampled_endpoints(
            arrays, tasks, shared, bench.perturbations, seed=_SEED_REDRAW_SEED
        )
        comparison = {
            "endpoint": "probe_auroc_macro",
            "n_bootstrap": bench.bootstrap,
            "bootstrap_unit": "note group (subject, else distinct text)",
            **(compare(macro_auroc(results["probes"]), auroc_fn, names) or {}),
            "robustness": compare(
                macro_drop(results["robustness"]), drop_fn, names, lower_is_better=True
            ),
        }

    shapes = sorted(
        {(g["n"], g["d"]) for g in results["geometry"]}
        | {(c["n"], c["d"]) for c in results["training_curves"] if c.get("n")}
    )
    with one_thread():
        reference = [reference_record(n, d, bench.k) for n, d in shapes if n >= 2]

    per_split = {s: int((rows.split == s).sum()) for s in _SPLITS}
    groups_per_split = {s: int(np.unique(rows.group[rows.split == s]).size) for s in _SPLITS}
    kind = {"mtsamples": "MTSamples", "table": "note table", "meds": "MEDS notes"}[corpus.kind]
    res: dict[str, Any] = {
        "kind": RESULTS_KIND,
        "version": RESULTS_VERSION,
        "scale": bench.scale,
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dataset": {
            "name": dataset_name or f"{Path(data).name} ({kind}, {len(rows):,} notes)",
            "path": data,
            "modality": "text",
            "source": corpus.kind,
            # "subjects" of the schema: the note groups (the split and bootstrap unit).
            "n_subjects": int(np.unique(rows.group).size),
            "n_subjects_per_split": groups_per_split,
            "n_notes": len(rows),
            "n_notes_per_split": per_split,
            "n_notes_in_corpus": len(corpus),
            "eval_train_note_rate": rows.rate,
        },
        "config": {
            "modality": "text",
            "methods": [n for n in names if n not in bench.ablations],
            "ablations": [n for n in names if n in bench.ablations],
            "seeds": list(range(bench.seeds)),
            "budget_steps": bench.budget,
            "batch_size": cfg0.batch_size,
            "train": run_config(_text_spec(RunSpec("dense", "dense", 0)), bench).to_dict(),
            "window_days": None,
            "k": bench.k,
            "benchmark": bench.to_dict(),
            "supervised_task": ",".join(sup_labels) or None,
            "supervised_labels": sup_labels,
            "min_positives": min_positives,
            "max_tasks": max_tasks,
            "tfidf": TFIDF_SETTINGS if "tfidf" in names else None,
            "methods_skipped": methods_skipped,
            "baselines_skipped": baselines_skipped,
            "temporal_reason": _NO_TEMPORAL,
        },
        "versions": _versions(),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "device": str(device)
            + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
            "torch_threads": torch.get_num_threads(),
        },
        "run_seconds": run_seconds,
        "tasks": [_task_summary(t) for t in tasks],
        "tasks_skipped": skipped,
        **results,
        "reference": reference,
        "comparison": comparison,
    }
    table = summary_table(res, names)
    for row in table:
        row["temporal_subspace_distance_reason"] = _NO_TEMPORAL
        if row["method"] in TEXT_BASELINES:
            row["robustness_drop_reason"] = _PROBE_ONLY
            row["seed_alignment_cka_reason"] = "one fixed feature map: no seeds to align"
    res["table"] = table
    res["seconds"] = time.perf_counter() - t_start
    _write_atomic(out / "results.json", json.dumps(res, indent=1, allow_nan=False) + "\n")
    render(res, out)
    return res
