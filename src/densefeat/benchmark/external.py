"""``densefeat benchmark --external SITE_B``: every run validated on a second site.

Each run embeds site B with **its own** history builder (site A's training vocabulary, numeric
statistics and ``max_len``: B is never refitted, its unseen codes map to ``UNK``), then per task
(:func:`densefeat.eval.external.external_validation`): site A's probe (fitted on A's train
rows, C on A's tuning rows) tested on B's evaluation rows (transfer), B's own subject-grouped
cross-fitted probe on the same rows, the drop and paired patient-level CIs. Beside them, the
share of B's events whose code never occurs in A's training split, and the share that the
run's vocabulary maps to ``UNK`` (unseen or below the vocabulary's cut-off).

The count baselines (``count_features``, ``counts_only``) are validated the same way
(:meth:`ExternalSite.feature_records`): their vocabulary and normalisation come from A's
training split, B's rows are built with them, and the same transfer / within-site / drop
records are written (seed 0; ``unk_event_share``: B's timed events whose code has no count
column).

Site B's tasks: ``--external-labels`` files, else B's own ``labels/`` directory, else its
built-in onset tasks; only tasks site A also has are validated. B's rows are capped like A's
(``max_eval_times``: all positives plus a hashed uniform sample of negatives, weighted back).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..data.meds import read_meds_dataset
from ..eval.external import external_validation
from ..train.modalities.ehr import embed
from .cache import files_fingerprint
from .rows import load_tasks, select_eval_rows

__all__ = ["ExternalSite"]

#: The fewest positives and negatives among site B's rows for a task to be validated there.
MIN_PER_CLASS_B = 5


class ExternalSite:
    """Site B of an EHR benchmark (module docstring).

    Args:
        data_dir: site B's MEDS directory.
        labels: site B's label files, or None.
        source: site A's data source (its tasks, settings and dataset).
        out: the benchmark's output directory (B's built-in labels go under
            ``OUT/external/labels``).
        say: one-line progress messages.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        labels: list[Path] | None,
        source: Any,
        out: Path,
        say: Any,
    ):
        self.data = str(Path(data_dir).resolve())
        if self.data == source.data:
            raise ValueError(f"--external {data_dir}: the same dataset as --data")
        self.ds = read_meds_dataset(self.data)
        names = tuple(t.name for t in source.tasks)
        tasks = load_tasks(self.ds, self.data, labels, out / "external", None)
        self.skipped: list[dict[str, str]] = []
        kept = []
        for t in tasks:
            if t.name not in names:
                continue
            y = t.labels["boolean_value"]
            if min(int(y.sum()), int((~y).sum())) < MIN_PER_CLASS_B:
                reason = f"site B has {int(y.sum())} positive, {int((~y).sum())} negative rows"
                self.skipped.append({"task": t.name, "reason": reason})
                say(f"external: task {t.name} skipped: {reason}")
                continue
            kept.append(t)
        missing = sorted(set(names) - {t.name for t in tasks})
        for name in missing:
            self.skipped.append({"task": name, "reason": "site B has no labels for it"})
        self.tasks = kept
        self.rows = select_eval_rows(kept, source.bench.max_eval_times) if kept else None
        self.content = files_fingerprint(Path(self.data), self.ds.metadata)
        timed = pl.col("time").is_not_null()
        train_codes = (
            source.ds.events("train").filter(timed).select("code").unique().collect()["code"]
        )
        codes = self.ds.events().filter(timed).select("code").collect()["code"]
        self.n_events = int(codes.len())
        self.unseen_share = (
            float(1.0 - codes.is_in(train_codes.implode()).mean()) if self.n_events else 0.0
        )
        self._stores: dict[str, Any] = {}
        self._unk: dict[str, float] = {}
        say(
            f"external site {Path(self.data).name}: {len(kept)} task(s), "
            f"{0 if self.rows is None else self.rows.rows.height:,} rows; "
            f"{100 * self.unseen_share:.1f}% of its events have a code unseen in training"
        )

    def fingerprint(self) -> list[Any]:
        """What identifies site B's evaluation (part of every evaluation's fingerprint)."""
        return [self.content, [t.fingerprint() for t in self.tasks]]

    def _store(self, builder: Any) -> tuple[Any, float]:
        key = json.dumps(builder.to_dict(), sort_keys=True, default=str)
        if key not in self._stores:
            self._stores[key] = builder.encode(self.ds)
            vocab = set(builder.vocabulary.code_table()["code"].to_list())
            codes = (
                self.ds.events().filter(pl.col("time").is_not_null()).select("code").collect()
            )["code"]
            self._unk[key] = (
                float(1.0 - codes.is_in(pl.Series(list(vocab)).implode()).mean())
                if codes.len()
                else 0.0
            )
        return self._stores[key], self._unk[key]

    def records(
        self, spec: Any, run: Any, z_a: np.ndarray, ctx: Any, device: Any
    ) -> list[dict[str, Any]]:
        """The external-validation records of one run (one per task).

        Args:
            spec: the run. run: the loaded run (its encoder and builder).
            z_a: site A's evaluation rows' embeddings (in ``ctx.eval_rows.rows`` order).
            ctx: site A's probe context. device: where to embed.
        """
        if self.rows is None:
            return []
        store, unk = self._store(run.builder)
        z_b = embed(run, self.rows.rows, store=store, device=device).backbone
        return self._validate(spec.name, spec.seed, z_a, z_b, ctx, unk)

    def feature_records(
        self,
        name: str,
        z_a: np.ndarray,
        features_b: Callable[[Any, pl.DataFrame], np.ndarray],
        ctx: Any,
        feature_codes: list[str],
    ) -> list[dict[str, Any]]:
        """The external-validation records of a probe-only baseline (count features).

        Args:
            name: the baseline's table name.
            z_a: site A's evaluation rows' features (in ``ctx.eval_rows.rows`` order).
            features_b: ``(dataset, cutoffs) -> (n, d)`` features built with site A's
                vocabulary and training-split normalisation (never refitted on B), applied to
                site B's dataset and its rows' ``subject_id, cutoff``.
            ctx: site A's probe context.
            feature_codes: the codes with a count column; ``unk_event_share`` is the share of
                B's timed events with any other code (they are counted nowhere).
        """
        if self.rows is None:
            return []
        cut = self.rows.rows.select("subject_id", pl.col("prediction_time").alias("cutoff"))
        z_b = features_b(self.ds, cut)
        codes = self.ds.events().filter(pl.col("time").is_not_null()).select("code").collect()
        unk = (
            float(1.0 - codes["code"].is_in(pl.Series(feature_codes).implode()).mean())
            if codes.height
            else 0.0
        )
        return self._validate(name, 0, z_a, z_b, ctx, unk)

    def _validate(
        self, name: str, seed: int, z_a: np.ndarray, z_b: np.ndarray, ctx: Any, unk: float
    ) -> list[dict[str, Any]]:
        """Per task: :func:`~densefeat.eval.external.external_validation` of A's rows ``z_a``
        against B's rows ``z_b`` (``self.rows.rows`` order)."""
        assert self.rows is not None
        out = []
        for task in self.tasks:
            if task.name not in ctx.eval_rows.task_rows:
                continue
            a = ctx.eval_rows.task_rows[task.name]
            b = self.rows.task_rows[task.name]
            base = {
                "method": name,
                "seed": seed,
                "task": task.name,
                "site": Path(self.data).name,
                "unseen_code_event_share": self.unseen_share,
                "unk_event_share": unk,
            }
            try:
                rec = external_validation(
                    z_a[a["row"].to_numpy()],
                    a["boolean_value"].to_numpy(),
                    a["split"].to_numpy(),
                    z_b[b["row"].to_numpy()],
                    b["boolean_value"].to_numpy(),
                    b["subject_id"].to_numpy(),
                    weights_b=b["weight"].to_numpy(),
                    folds=max(ctx.bench.probe_folds, 2),
                    n_bootstrap=ctx.bench.bootstrap,
                    seed=seed,
                )
            except ValueError as e:  # e.g. a site-A split without both classes: said, not fatal
                out.append({**base, "error": str(e)})
                continue
            out.append({**base, **rec})
        return out

    def record(self) -> dict[str, Any]:
        """The ``external_site`` section of results.json."""
        return {
            "name": Path(self.data).name,
            "path": self.data,
            "n_subjects": int(self.ds.splits.height),
            "n_events": self.n_events,
            "unseen_code_event_share": self.unseen_share,
            "tasks": [t.name for t in self.tasks],
            "tasks_skipped": self.skipped,
            "eval_negative_rate": None if self.rows is None else self.rows.rate,
        }
