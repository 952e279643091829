"""The benchmark on clinical notes (``densefeat benchmark --modality text``).

The same protocol, files and ``results.json`` schema as the EHR benchmark
(``docs/results-schema.md``), run by the same orchestrator as every modality
(:mod:`densefeat.benchmark.run`), with notes instead of patient
histories:

* **Notes and splits.** ``--data`` is read by
  :func:`densefeat.train.modalities.text.read_corpus` (a MEDS directory's notes, MTSamples, or a
  generic note table; see
  :mod:`densefeat.data.text.corpus`). Splits are the corpus's text-group splits: identical
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
* **Runs.** The benchmark's methods on the text encoder (``text.encoder="small"``, the
  from-scratch transformer, unless ``--set text.encoder=pretrained``; ``masked`` is
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
  ``text.max_tokens``, ``text.chunk_words``, ``text.max_chunks``), loaded offline; skipped with
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

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...eval.perturb import TEXT_PERTURBATIONS, perturb_text, perturbation_grid
from ...io.atomic import atomic_path
from ...train.config import TrainConfig
from ...train.modalities.text import embed, read_corpus
from ...train.runs import load_run
from ..cache import files_fingerprint, fingerprint, probe_features
from ..config import BENCHMARK_VERSION, PERTURBATIONS, BenchmarkConfig, RunSpec
from ..evaluate import ProbeContext, RunResult, evaluate_embeddings
from ..rows import Task
from ..runs import run_config
from .notes import (
    MIN_TASK_POSITIVES,
    SPLITS,
    NoteRows,
    eval_rows_of,
    note_rows,
    select_text_tasks,
    task_summary,
    write_notes,
)

__all__ = [
    "TEXT_BASELINES",
    "TEXT_GRID",
    "TEXT_TRAIN_DEFAULTS",
    "TFIDF_SETTINGS",
    "TextSource",
    "tfidf_features",
]


#: Test-time perturbations of notes (docs/design.md): token and sentence dropout at 10 and 30%.
TEXT_GRID: tuple[tuple[str, float], ...] = tuple(perturbation_grid("text"))
#: The probe-only baselines of the text benchmark, in table order.
TEXT_BASELINES = ("tfidf", "minilm_frozen")
#: TrainConfig defaults of the text benchmark under the user's ``--set`` overrides: one encoder
#: for every method, ``masked`` included (it needs the small encoder).
TEXT_TRAIN_DEFAULTS: dict[str, Any] = {"text_encoder": "small"}
#: The TF-IDF baseline: unigrams seen in at least 2 training notes, the 5,000 most frequent,
#: sublinear term frequency, L2-normalised rows (scikit-learn's default norm). Fitted on the
#: training notes only (no leakage), then probed like every embedding (standardised features).
TFIDF_SETTINGS: dict[str, Any] = {"min_df": 2, "max_features": 5000, "sublinear_tf": True}

#: Seed of the shared bootstrap resamples and of the seed redraws (the EHR benchmark's).
_BOOTSTRAP_SEED, _SEED_REDRAW_SEED = 12345, 54321


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
    from ...models.text import build_text_encoder
    from ...train.modalities.text import text_encoder_config

    tcfg = text_encoder_config(
        cfg0.replace(
            **{"text.encoder": "pretrained", "text.trainable_layers": 0, "text.cache_size": 0}
        )
    )
    encoder = build_text_encoder(tcfg)
    encoder.eval()
    return encoder


def _minilm_embeddings(
    cfg0: TrainConfig, rows: NoteRows, path: Path, device: torch.device, say: Callable[[str], None]
) -> tuple[np.ndarray, str]:
    """Frozen MiniLM embeddings (n, 384) of the evaluated notes, cached in ``path``."""
    from ...train.checkpoint import backbone_fingerprint

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
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, z=z, fingerprint=np.array(fp))
    return z, fp


_NO_TEMPORAL = "notes have no time windows: temporal stability is not measured on text"
_PROBE_ONLY = "probe-only baseline: no encoder run to perturb"


class TextSource:
    """The text benchmark's data (module docstring); built once per benchmark.

    Args:
        data: a note table file (MTSamples or generic) or a MEDS directory with notes.
        out: the benchmark's output directory.
        bench: the benchmark settings; its ``train`` overrides get :data:`TEXT_TRAIN_DEFAULTS`
            beneath, the EHR default perturbations become :data:`TEXT_GRID`,
            ``max_eval_times`` caps the notes embedded and ``tasks`` restricts the labels.
        say: receives one-line progress messages.
        device: where the encoders run.
        min_positives: fewest positives and negatives per split of a task.
        max_tasks: keep the tasks with the most positives (0: every eligible task).
        baselines: a subset of :data:`TEXT_BASELINES` to probe.

    Raises:
        ValueError: bad settings (named), an unreadable corpus, EHR perturbations.
    """

    modality = "text"

    def __init__(
        self,
        data: str | Path,
        out: Path,
        bench: BenchmarkConfig,
        say: Any,
        device: torch.device,
        *,
        min_positives: int = MIN_TASK_POSITIVES,
        max_tasks: int = 0,
        baselines: Sequence[str] = TEXT_BASELINES,
    ):
        unknown = sorted(set(baselines) - set(TEXT_BASELINES))
        if unknown:
            raise ValueError(
                f"unknown text baseline(s) {unknown}; choose from {list(TEXT_BASELINES)}"
            )
        if min_positives < 1 or max_tasks < 0:
            raise ValueError("min_positives must be >= 1 and max_tasks >= 0")
        self.bench = _text_bench(bench)
        self.data = str(Path(data).resolve())
        self.out, self.say, self.device = out, say, device
        self.min_positives, self.max_tasks = min_positives, max_tasks
        self.wanted_baselines = [b for b in TEXT_BASELINES if b in baselines]
        self.cfg0 = run_config(RunSpec("dense", "dense", 0), self.bench)
        self.corpus = read_corpus(self.cfg0, self.data)
        self.rows = note_rows(self.corpus, self.bench.max_eval_times)
        self.tasks, self.skipped = select_text_tasks(
            self.corpus,
            self.rows,
            min_positives=min_positives,
            max_tasks=max_tasks,
            only=self.bench.tasks,
        )
        out.mkdir(parents=True, exist_ok=True)
        if not self.tasks:
            say(
                f"no task: no label of {self.data} has {min_positives} positives in every split "
                f"(labels read: {', '.join(self.corpus.label_names) or 'none'}; a note table's "
                "labels are its boolean columns unless --set text.labels=COL,... names others)"
            )
        write_notes(out / "labels" / "notes.parquet", self.rows, self.tasks)
        self.eval_rows = eval_rows_of(self.rows, self.tasks)
        self.ctx = ProbeContext(self.bench, self.eval_rows, self.tasks)
        # A run is reused only under the same benchmark version and note content (the run's own
        # config.json holds the rest: method, seed, budget, encoder, supervised labels).
        self.content = files_fingerprint(Path(self.data), self.data)
        self.identity = {
            "benchmark_version": BENCHMARK_VERSION,
            "modality": "text",
            "dataset": self.content,
        }
        self.methods_skipped: list[dict[str, str]] = []
        self.baselines_skipped: list[dict[str, str]] = []
        self.supervised_labels: list[str] = []

    def describe(self) -> str:
        """One line: tasks, notes."""
        names = ", ".join(t.name for t in self.tasks) or "none"
        return (
            f"{len(self.tasks)} text tasks ({names}), {len(self.rows):,} notes "
            f"({int(self.rows.held().sum()):,} held out)"
        )

    def rows_fingerprint(self) -> list[Any]:
        """What identifies the evaluated notes (part of every evaluation's fingerprint)."""
        return [self.rows.fingerprint()]

    def prepare_specs(self, specs: list[RunSpec]) -> list[RunSpec]:
        """Drop ``masked`` under the pretrained encoder and ``masked+dense`` (EHR only);
        ``supervised`` trains one logit per task (``text.labels``)."""

        def drop(method: str, reason: str, specs: list[RunSpec]) -> list[RunSpec]:
            if any(s.method == method for s in specs):
                self.say(f"{method} skipped: {reason}")
                self.methods_skipped.append({"method": method, "reason": reason})
            return [s for s in specs if s.method != method]

        if self.cfg0.text.encoder != "small":
            specs = drop("masked", "masked-token prediction needs the small encoder", specs)
        specs = drop("masked+dense", "the hybrid is defined for EHR window pairs only", specs)
        if any(s.method == "supervised" for s in specs):
            names = [t.name for t in self.tasks]
            wanted = self.bench.supervised_task
            if wanted is not None and wanted not in names:
                raise ValueError(f"--supervised-task {wanted!r} is not a task {names}")
            labels = [wanted] if wanted else names
            if not labels:
                specs = drop("supervised", "no task with labels in every split", specs)
            elif any("," in n for n in labels):
                reason = "a task name holds a comma (text.labels is comma-separated)"
                specs = drop("supervised", reason, specs)
            else:
                self.supervised_labels = labels
                specs = [
                    _with_override(s, "text.labels", ",".join(labels))
                    if s.method == "supervised"
                    else s
                    for s in specs
                ]
        return specs

    def run_identity(self, spec: RunSpec) -> dict[str, Any]:
        """The identity a finished run must share to be reused."""
        return self.identity

    def run_labels(self, spec: RunSpec) -> None:
        """Text runs read their labels from the notes' columns (no ``--labels``)."""
        return None

    def evaluate(self, spec: RunSpec, run_dir: Path) -> RunResult:
        """Geometry, training curve, probes and robustness of one text run."""
        run = load_run(run_dir, "text").to(self.device)
        rows, ctx = self.rows, self.ctx
        self.say(f"{spec.key}: embedding {len(rows):,} notes")
        z = embed(run, rows.texts, device=self.device)
        held = rows.held()
        held_texts = [rows.texts[i] for i in np.flatnonzero(held)]

        def perturbed(probes):
            for p, level in self.bench.perturbations:
                texts = perturb_text(held_texts, p, level, spec.seed)
                zp = embed(run, texts, device=self.device, projector=False).backbone
                yield p, level, level, zp, {}

        d = run.cfg.encoder.d_model
        return evaluate_embeddings(spec, run_dir, z, held, d, ctx, perturbed, self.say)

    def baselines(self, eval_fp_base: list[Any]) -> list[tuple[str, RunResult]]:
        """TF-IDF and the frozen all-MiniLM-L6-v2 (when the text extra is installed)."""
        out = []
        for name in self.wanted_baselines:
            if not self.tasks:
                self.baselines_skipped.append({"method": name, "reason": "no task to probe"})
                continue
            if name == "tfidf":
                identity: Any = TFIDF_SETTINGS

                def features() -> np.ndarray:
                    return tfidf_features(self.rows)
            else:
                from ...models.text import TextModelNotFoundError

                path = self.out / "eval" / "minilm_frozen" / "embeddings.npz"
                try:
                    z_minilm, identity = _minilm_embeddings(
                        self.cfg0, self.rows, path, self.device, self.say
                    )
                except (TextModelNotFoundError, ImportError) as exc:
                    reason = f"the text extra is not installed ({exc})"
                    self.say(f"minilm_frozen skipped: {reason}")
                    self.baselines_skipped.append({"method": name, "reason": reason})
                    continue

                def features(z: np.ndarray = z_minilm) -> np.ndarray:
                    return z

            fp = fingerprint(eval_fp_base, name, identity)
            held = self.rows.held() if name == "minilm_frozen" else None
            result, reused = probe_features(self.out, name, fp, features, self.ctx, held)
            self.say(f"{name} baseline: {'evaluation reused' if reused else 'probed'}")
            out.append((name, result))
        return out

    def dataset_record(self, name: str | None) -> dict[str, Any]:
        """The ``dataset`` section of results.json ("subjects" are the note groups: the split
        and bootstrap unit)."""
        rows = self.rows
        per_split = {s: int((rows.split == s).sum()) for s in SPLITS}
        groups_per_split = {s: int(np.unique(rows.group[rows.split == s]).size) for s in SPLITS}
        kind = {"mtsamples": "MTSamples", "table": "note table", "meds": "MEDS notes"}
        return {
            "name": name
            or f"{Path(self.data).name} ({kind[self.corpus.kind]}, {len(rows):,} notes)",
            "path": self.data,
            "modality": "text",
            "source": self.corpus.kind,
            "n_subjects": int(np.unique(rows.group).size),
            "n_subjects_per_split": groups_per_split,
            "n_notes": len(rows),
            "n_notes_per_split": per_split,
            "n_notes_in_corpus": len(self.corpus),
            "eval_train_note_rate": rows.rate,
        }

    def config_record(self) -> dict[str, Any]:
        """Modality-specific keys of the ``config`` section."""
        return {
            "modality": "text",
            "window_days": None,
            "supervised_task": ",".join(self.supervised_labels) or None,
            "supervised_labels": self.supervised_labels,
            "min_positives": self.min_positives,
            "max_tasks": self.max_tasks,
            "tfidf": TFIDF_SETTINGS if "tfidf" in self.wanted_baselines and self.tasks else None,
            "methods_skipped": self.methods_skipped,
            "baselines_skipped": self.baselines_skipped,
            "temporal_reason": _NO_TEMPORAL,
        }

    def results_record(self) -> dict[str, Any]:
        """Modality-specific top-level keys of results.json (none for text)."""
        return {}

    def comparison_record(self) -> dict[str, Any]:
        """What the comparison's bootstrap resamples."""
        return {"bootstrap_unit": "note group (subject, else distinct text)"}

    def task_summary(self, task: Task) -> dict[str, Any]:
        """A task's counts (the ``tasks`` section)."""
        return task_summary(task)

    def finish_table(self, table: list[dict[str, Any]]) -> None:
        """Reasons for the table's empty cells."""
        for row in table:
            row["temporal_subspace_distance_reason"] = _NO_TEMPORAL
            if row["method"] in TEXT_BASELINES:
                row["robustness_drop_reason"] = _PROBE_ONLY
                row["seed_alignment_cka_reason"] = "one fixed feature map: no seeds to align"


def _with_override(spec: RunSpec, key: str, value: Any) -> RunSpec:
    overrides = {**dict(spec.overrides), key: value}
    return replace(spec, overrides=tuple(sorted(overrides.items())))


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
    return replace(bench, train=train, perturbations=tuple(perturbations), modality="text")
