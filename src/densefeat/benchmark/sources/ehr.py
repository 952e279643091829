"""The benchmark on patient histories of a MEDS dataset (``densefeat benchmark``, the default).

* **Tasks** (:func:`~densefeat.benchmark.rows.load_tasks`): ``--labels`` files, else the label
  files a converter shipped in ``DATA/labels/``, else the dataset's built-in onset tasks.
  ``supervised`` trains on the first usable task's training labels (``--supervised-task``).
* **Evaluation rows** (:func:`~densefeat.benchmark.rows.select_eval_rows`): every label row,
  or above ``max_eval_times`` all positives plus a hashed uniform sample of the negatives.
* **Per run**: geometry of the backbone and projector outputs on the held-out rows; the
  training curve; probes (full data, k-shot, whitened control); robustness (event dropout,
  time jitter, code noise on the held-out rows; the probe fitted on clean rows); temporal
  stability of held-out subjects with its floor and chance level.
* **Probe-only baselines**: ``count_features``, log code counts + static values + each numeric
  code's last value up to the prediction time with a seen-flag, and ``counts_only``, log code
  counts alone (vocabulary and normalisation from the training split), with the same probe.

Every run is evaluated on the dataset encoded with its own history builder (vocabulary,
numeric statistics, ``max_len``); runs of one benchmark normally share one, encoded once.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from ...data.ehr.builder import HistoryBuilder
from ...data.ehr.store import EventStore
from ...data.meds import read_meds_dataset
from ...eval.robustness import perturbed_histories
from ...eval.temporal import temporal_stability
from ...io.atomic import atomic_path
from ...train.modalities.ehr import embed
from ...train.runs import load_run
from ..cache import files_fingerprint, fingerprint, probe_features
from ..config import BenchmarkConfig, RunSpec
from ..evaluate import ProbeContext, RunResult, evaluate_embeddings
from ..rows import Task, load_tasks, select_eval_rows
from ..runs import run_config

__all__ = ["EHRSource"]


class EHRSource:
    """The EHR benchmark's data (module docstring); built once per benchmark.

    Args:
        data_dir: a MEDS dataset directory.
        out: the benchmark's output directory.
        bench: the benchmark settings.
        labels: MEDS label files (one task each), or None.
        say: receives one-line progress messages.
    """

    modality = "ehr"

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        out: Path,
        bench: BenchmarkConfig,
        labels: list[Path] | None,
        say: Any,
        device: torch.device,
    ):
        self.data = str(Path(data_dir).resolve())
        self.out = out
        self.say = say
        self.device = device
        self.ds = read_meds_dataset(self.data)
        out.mkdir(parents=True, exist_ok=True)
        tasks_all = load_tasks(self.ds, self.data, labels, out, bench.tasks)
        self.tasks = [t for t in tasks_all if t.skip_reason() is None]
        self.skipped = [
            {"task": t.name, "reason": t.skip_reason()} for t in tasks_all if t.skip_reason()
        ]
        for s in self.skipped:
            say(f"task {s['task']} skipped: {s['reason']}")
        if bench.jitter_days is None:
            # ICU stays are hourly: +-1 hour; EHR data +-1 day (docs/design.md, Robustness).
            icu = self.ds.metadata.get("etl_name") == "densefeat.physionet2019"
            bench = replace(bench, jitter_days=1 / 24 if icu else 1.0)
        self.bench = bench
        ev = select_eval_rows(self.tasks, bench.max_eval_times)
        # A task can lose a class in a split when its negatives are subsampled: re-check.
        kept = []
        for t in self.tasks:
            reason = ev.skip_reason(t.name)
            if reason is None:
                kept.append(t)
            else:
                self.skipped.append({"task": t.name, "reason": reason})
                say(f"task {t.name} skipped: {reason}")
        if len(kept) < len(self.tasks):
            self.tasks = kept
            ev = select_eval_rows(self.tasks, bench.max_eval_times)
        self.eval_rows = ev
        self.ctx = ProbeContext(bench, ev, self.tasks)
        from ..icu import CONTROL, hours_since_admission, is_icu

        if is_icu(self.ds) and self.tasks:
            # The ICU control (benchmark/icu.py): hours since admission, alone and added to
            # every method's features.
            self.ctx.controls[CONTROL] = hours_since_admission(self.ds, ev.rows)
        self.content = files_fingerprint(Path(self.data), self.ds.metadata)
        self.identity = {"benchmark_version": _version(), "dataset": self.content}
        self.held_ids = self.ds.split_ids("held_out").to_numpy()
        self._stores: dict[str, EventStore] = {}
        self._builder: HistoryBuilder | None = None
        self._builder_key: tuple[Any, ...] | None = None
        self.supervised_labels: Path | None = None
        self.supervised_task: Task | None = None
        #: Site B of --external (benchmark/external.py), set by the orchestrator.
        self.external: Any = None

    # ---- what the orchestrator asks -----------------------------------------------------------

    def describe(self) -> str:
        """One line: tasks, evaluation rows."""
        ev = self.eval_rows
        return (
            f"{len(self.tasks)} tasks, {ev.rows.height:,} evaluation rows "
            f"(negatives sampled at rate {ev.rate:.3f})"
        )

    def rows_fingerprint(self) -> list[Any]:
        """What identifies the evaluated rows (part of every evaluation's fingerprint)."""
        return [self.eval_rows.rows.height, self.eval_rows.rate]

    def prepare_specs(self, specs: list[RunSpec]) -> list[RunSpec]:
        """``supervised`` trains on one task's training labels (written to OUT/labels)."""
        if not any(s.method == "supervised" for s in specs):
            return specs
        if not self.tasks:
            self.say("supervised skipped: no task with labels in every split")
            return [s for s in specs if s.method != "supervised"]
        names = [t.name for t in self.tasks]
        wanted = self.bench.supervised_task
        if wanted is not None and wanted not in names:
            raise ValueError(f"--supervised-task {wanted!r} is not a usable task {names}")
        task = next(t for t in self.tasks if t.name == (wanted or names[0]))
        # Rewritten every time (atomically): its content hash is part of the supervised runs'
        # identity, so changed labels retrain supervised instead of reusing the old run.
        path = self.out / "labels" / f"{task.name}.supervised.parquet"
        with atomic_path(path, suffix=".parquet") as tmp:
            task.labels.select("subject_id", "prediction_time", "boolean_value").write_parquet(tmp)
        self.supervised_labels, self.supervised_task = path, task
        return specs

    def run_identity(self, spec: RunSpec) -> dict[str, Any]:
        """The identity a finished run must share to be reused."""
        if spec.method == "supervised" and self.supervised_task is not None:
            return {**self.identity, "labels": self.supervised_task.fingerprint()}
        return self.identity

    def run_labels(self, spec: RunSpec) -> Path | None:
        """The ``--labels`` of a run (supervised only)."""
        return self.supervised_labels if spec.method == "supervised" else None

    def store_for(self, builder: HistoryBuilder) -> EventStore:
        """The dataset encoded with ``builder`` (cached per distinct builder): runs must never be
        fed code ids of another vocabulary."""
        key = json.dumps(builder.to_dict(), sort_keys=True, default=str)
        if key not in self._stores:
            self._stores[key] = builder.encode(self.ds)
        return self._stores[key]

    def evaluate(self, spec: RunSpec, run_dir: Path) -> RunResult:
        """Every per-run measurement (module docstring)."""
        bench, ctx = self.bench, self.ctx
        run = load_run(run_dir, "ehr").to(self.device)
        store = self.store_for(run.builder)  # type: ignore[arg-type]
        rows = self.eval_rows.rows
        z = embed(run, rows, store=store, device=self.device)
        held = (rows["split"] == "held_out").to_numpy()
        held_rows = rows.filter(pl.Series(held))

        def perturbed(probes):
            for p, level in bench.perturbations:
                scale = bench.jitter_days if p == "time_jitter" else 1.0
                zp, n_in, n_out = perturbed_histories(
                    run.net.encoder, store, held_rows, p, level * scale, spec.seed, 512, self.device
                )
                # The jitter is recorded in days (the grid's level scales --jitter-days).
                yield p, level, level * scale, zp, {"event_fraction_kept": n_out / max(n_in, 1)}

        d = run.cfg.encoder.d_model
        result = evaluate_embeddings(spec, run_dir, z, held, d, ctx, perturbed, self.say)
        if self.external is not None:
            self.say(f"{spec.key}: external validation")
            recs = self.external.records(spec, run, z.backbone, ctx, self.device)
            result.records["external"] = recs
        self.say(f"{spec.key}: temporal stability")
        stab = temporal_stability(
            run.net.encoder,
            store,
            k=bench.k,
            every=run.cfg.data.window_days,
            subjects=self.held_ids,
            device=self.device,
        )
        base = {"method": spec.name, "seed": spec.seed}
        result.records["temporal"] += [{**base, **rec} for rec in stab["windows"]]
        return result

    def baselines(self, eval_fp_base: list[Any]) -> list[tuple[str, RunResult]]:
        """Probe-only count baselines, with the same probe.

        ``count_features``: log code counts + static values (age, sex, unit, admission offset)
        + each numeric code's last value up to the prediction time with a seen-flag
        (:func:`~densefeat.data.ehr.count_features.count_last_features`); ``counts_only``: log
        code counts alone (the baseline before issue 11). Vocabulary and normalisation from the
        training split.
        """
        if not self.tasks:
            return []
        self.say("count features baselines")
        from ...data.ehr.count_features import code_count_features, count_last_features

        builder = self.shared_builder()
        vocabulary = builder.vocabulary
        parents = set(vocabulary.parent_codes_)  # back-off targets, never an event's own code
        vocab = [
            c
            for c in vocabulary.code_table()["code"].to_list()
            if not c.startswith("MEDS_") and c not in parents
        ]
        cut = self.eval_rows.rows.select("subject_id", pl.col("prediction_time").alias("cutoff"))

        # Both builders take (dataset, cutoffs) so that --external's site B is built with
        # site A's training vocabulary and normalisation (never refitted on B).
        def counts(ds: Any, cutoffs: pl.DataFrame) -> np.ndarray:
            return code_count_features(
                ds.events().select("subject_id", "time", "code"), cutoffs, vocab
            )

        def counts_last(ds: Any, cutoffs: pl.DataFrame) -> np.ndarray:
            if builder.normalizer is None:  # pragma: no cover - fit always makes one
                return counts(ds, cutoffs)
            events = ds.events().select("subject_id", "time", "code", "numeric_value")
            return count_last_features(events, cutoffs, vocabulary, builder.normalizer, vocab)[0]

        site = self.external

        def external(name: str, build: Any) -> Any:
            if site is None:
                return None

            def records(z: np.ndarray) -> dict[str, list[dict[str, Any]]]:
                self.say(f"{name}: external validation")
                return {"external": site.feature_records(name, z, build, self.ctx, vocab)}

            return records

        out = []
        norm = None if builder.normalizer is None else builder.normalizer.to_dict()
        for name, build, fp in (
            (
                "count_features",
                counts_last,
                fingerprint(eval_fp_base, vocab, vocabulary.to_dict(), norm, "count_last/1"),
            ),
            ("counts_only", counts, fingerprint(eval_fp_base, vocab)),
        ):
            result, _ = probe_features(
                self.out,
                name,
                fp,
                lambda build=build: build(self.ds, cut),
                self.ctx,
                extra=external(name, build),
            )
            out.append((name, result))
        return out

    def controls(self, eval_fp_base: list[Any]) -> list[tuple[str, RunResult]]:
        """Probe-only controls that are not baselines (never the "best baseline"): the ICU
        hours since admission alone."""
        out = []
        for name, z in self.ctx.controls.items():
            fp = fingerprint(eval_fp_base, name, "control")
            result, _ = probe_features(self.out, name, fp, lambda z=z: z, self.ctx)
            out.append((name, result))
        return out

    def shared_builder(self) -> HistoryBuilder:
        """The builder every run of this benchmark fits (training split, same settings).

        Cached per data settings: the benchmark's adaptations (:mod:`..small`) may change
        them (ICU data: ``data.tokens``) after a first builder was fitted to count pairs.
        """
        cfg0 = run_config(RunSpec("dense", "dense", 0), self.bench)
        key = (cfg0.data.max_len, cfg0.data.min_code_subjects, cfg0.data.tokens)
        if self._builder is None or self._builder_key != key:
            self._builder = HistoryBuilder.fit(
                self.ds,
                split="train",
                max_len=cfg0.data.max_len,
                min_subjects=cfg0.data.min_code_subjects,
                tokens=cfg0.data.tokens,
            )
            self._builder_key = key
        return self._builder

    def dataset_record(self, name: str | None) -> dict[str, Any]:
        """The ``dataset`` section of results.json."""
        splits = self.ds.splits.group_by("split").len()
        return {
            "name": name or Path(self.data).name,
            "path": self.data,
            "n_subjects": int(self.ds.splits.height),
            "n_subjects_per_split": dict(
                zip(splits["split"], splits["len"].cast(int), strict=True)
            ),
        }

    def config_record(self) -> dict[str, Any]:
        """Modality-specific keys of the ``config`` section."""
        cfg0 = run_config(RunSpec("dense", "dense", 0), self.bench)
        return {
            "window_days": cfg0.data.window_days,
            "supervised_task": None if self.supervised_task is None else self.supervised_task.name,
            "eval_negative_rate": self.eval_rows.rate,
        }

    def results_record(self) -> dict[str, Any]:
        """Modality-specific top-level keys of results.json."""
        return {"jitter_days": self.bench.jitter_days}

    def task_summary(self, task: Task) -> dict[str, Any]:
        """A task's counts on the evaluation rows (the ``tasks`` section)."""
        rows = self.eval_rows.task_rows[task.name]
        counts = {s: rows.filter(pl.col("split") == s) for s in ("train", "tuning", "held_out")}
        te = counts["held_out"]
        full = task.labels.filter(pl.col("split") == "held_out")
        return {
            "name": task.name,
            "source": task.source,
            "n_train": counts["train"].height,
            "n_tuning": counts["tuning"].height,
            "n_test": te.height,
            "positives_test": int(te["boolean_value"].sum()),
            # Prevalence of the full held-out labels (the evaluation sample may hold fewer
            # negatives).
            "prevalence_test": float(full["boolean_value"].mean()),
        }

    def finish_table(self, table: list[dict[str, Any]]) -> None:
        """Reasons for the table's empty cells (nothing to add for EHR)."""


def _version() -> int:
    from ..config import BENCHMARK_VERSION

    return BENCHMARK_VERSION
