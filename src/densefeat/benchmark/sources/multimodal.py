"""The benchmark on multimodal MEDS records (``densefeat benchmark --modality multimodal``).

The same data, tasks, evaluation rows, probes, count baselines and ICU control as the EHR
benchmark (:class:`~densefeat.benchmark.sources.ehr.EHRSource`, which this extends); what
differs is the encoder, a :mod:`densefeat.train.modalities.multimodal` run:

* **code groups** (``--set multimodal.groups=vitals=VITAL//,labs=LAB//`` and
  ``--set multimodal.static=true``): on PhysioNet 2019, vitals, labs and static values are
  separate modalities of the same stay, each with its own encoder;
* **codes + notes** (no groups): the coded events and the notes of a MEDS dataset with notes
  (the FHIR converter's ``NOTE//...`` text events).

Probes read the **fused** embedding. Per run, besides the EHR measurements, the **cross-modal
alignment** of every pair of modality embeddings on the held-out evaluation rows where both are
present (:mod:`densefeat.eval.crossmodal`): sample-space subspace distance at the fixed k, at
round(effective rank) and over the whole space, with floor and chance, principal angles and
debiased CKA, each with a subject-level bootstrap CI (``min(--bootstrap, 200)`` resamples
shared by every run); records of kind ``"modalities"`` in ``results["alignment"]``, and dense
minus every other method with paired CIs in ``results["crossmodal_comparison"]``.

Methods: ``masked`` and ``masked+dense`` are dropped under code groups (next-event prediction
trains one EHR encoder; each group has its own) and kept with notes (they train the codes
encoder only). Temporal stability and the event perturbations run on code-group runs through
the fused embedding of the event record (:class:`~densefeat.models.code_groups.FusedHistories`);
on codes + notes runs they are not measured (the perturbations and the half-window views act
on events, not notes): stated in ``config.temporal_reason`` and ``config.robustness_reason``.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl
import torch

from ...eval.crossmodal import MAX_RESAMPLES, RESAMPLE_SEED, modality_alignment_records
from ...eval.robustness import perturbed_histories
from ...eval.temporal import temporal_stability
from ...train.modalities.multimodal import embed as embed_multimodal
from ...train.runs import load_run
from ..config import BenchmarkConfig, RunSpec
from ..evaluate import RunResult, evaluate_embeddings
from ..runs import run_config
from .ehr import EHRSource

__all__ = ["MultimodalSource"]

_NOTES_NO_EVENTS_VIEW = (
    "codes + notes runs: the half-window views and the event perturbations act on events, "
    "not on notes, so {what} is not measured (it is for code-group runs)"
)


class MultimodalSource(EHRSource):
    """The multimodal benchmark's data (module docstring)."""

    modality = "multimodal"

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        out: Path,
        bench: BenchmarkConfig,
        labels: list[Path] | None,
        say: Any,
        device: torch.device,
    ):
        super().__init__(data_dir, out, bench, labels, say, device)
        cfg0 = run_config(RunSpec("dense", "dense", 0), self.bench)
        self.groups = cfg0.multimodal.groups.strip()
        self.methods_skipped: list[dict[str, str]] = []
        if not self.groups and self.bench.perturbations:
            # Event perturbations cannot reach notes: measured on code-group runs only.
            self.bench = replace(self.bench, perturbations=())
            self.ctx.bench = self.bench

    def describe(self) -> str:
        """One line: the modalities, tasks, evaluation rows."""
        what = f"code groups {self.groups}" if self.groups else "codes + notes"
        return f"multimodal ({what}), {super().describe()}"

    def prepare_specs(self, specs: list[RunSpec]) -> list[RunSpec]:
        """Drop next-event methods under code groups (reason recorded), then as EHR."""
        if self.groups:
            for method in ("masked", "masked+dense"):
                if any(s.method == method for s in specs):
                    reason = (
                        "next-event prediction trains one EHR encoder; under multimodal.groups "
                        "each group has its own"
                    )
                    self.say(f"{method} skipped: {reason}")
                    self.methods_skipped.append({"method": method, "reason": reason})
                    specs = [s for s in specs if s.method != method]
        return super().prepare_specs(specs)

    def evaluate(self, spec: RunSpec, run_dir: Path) -> RunResult:
        """Probes on the fused embedding, the EHR measurements where they apply, and the
        cross-modal alignment of every modality pair."""
        from ...models.code_groups import CodeGroupEncoder, FusedHistories

        bench, ctx = self.bench, self.ctx
        run = load_run(run_dir, "multimodal").to(self.device)
        store = self.store_for(run.builder)  # type: ignore[arg-type]
        rows = self.eval_rows.rows
        z = embed_multimodal(run, rows, store=store, dataset=self.ds, device=self.device)
        held = (rows["split"] == "held_out").to_numpy()
        held_rows = rows.filter(pl.Series(held))
        grouped = isinstance(run.net.encoder, CodeGroupEncoder)
        fused_encoder = FusedHistories(run.net.encoder) if grouped else None

        def perturbed(probes):
            for p, level in bench.perturbations:
                scale = bench.jitter_days if p == "time_jitter" else 1.0
                zp, n_in, n_out = perturbed_histories(
                    fused_encoder, store, held_rows, p, level * scale, spec.seed, 512, self.device
                )
                yield p, level, level * scale, zp, {"event_fraction_kept": n_out / max(n_in, 1)}

        d = run.cfg.encoder.d_model
        result = evaluate_embeddings(spec, run_dir, z, held, d, ctx, perturbed, self.say)
        base = {"method": spec.name, "seed": spec.seed}
        # Cross-modal alignment on the held-out rows where both modalities are present.
        modalities = list(run.net.encoder.modalities)
        per = {m: z.extra[m][held] for m in modalities}
        present = {
            m: z.extra[f"present/{m}"][held] for m in modalities if f"present/{m}" in z.extra
        }
        if "notes" in per:
            present["notes"] = z.extra["has_notes"][held]
        problems: list[str] = []
        t_ci = time.perf_counter()
        resamples = min(bench.bootstrap, MAX_RESAMPLES)
        # Subject-level bootstrap CIs, the same resamples for every run (paired differences
        # in results["crossmodal_comparison"], densefeat.benchmark.run).
        result.records["alignment"] = modality_alignment_records(
            per,
            present,
            bench.k,
            base,
            problems,
            groups=held_rows["subject_id"].to_numpy(),
            n_resamples=resamples,
            seed=RESAMPLE_SEED,
            arrays=result.arrays,
        )
        self.say(
            f"{spec.key}: cross-modal alignment with {resamples} bootstrap resamples in "
            f"{time.perf_counter() - t_ci:.1f} s"
        )
        for p in problems:
            self.say(f"{spec.key}: cross-modal alignment skipped for {p}")
        if grouped:
            self.say(f"{spec.key}: temporal stability")
            stab = temporal_stability(
                fused_encoder,
                store,
                k=bench.k,
                every=run.cfg.data.window_days,
                subjects=self.held_ids,
                device=self.device,
            )
            result.records["temporal"] += [{**base, **rec} for rec in stab["windows"]]
        return result

    def tuning_embed(self, run_dir: Path, rows: pl.DataFrame) -> Any:
        """The fused (backbone) embeddings of ``rows`` for the tuning probes
        (:mod:`densefeat.benchmark.tuning`)."""
        run = load_run(run_dir, "multimodal").to(self.device)
        store = self.store_for(run.builder)  # type: ignore[arg-type]
        return embed_multimodal(
            run, rows, store=store, dataset=self.ds, device=self.device, projector=False
        )

    def config_record(self) -> dict[str, Any]:
        """Modality-specific keys of the ``config`` section."""
        cfg0 = run_config(RunSpec("dense", "dense", 0), self.bench)
        grouped = bool(self.groups)
        return {
            **super().config_record(),
            "modality": "multimodal",
            "multimodal": {
                "groups": self.groups or None,
                "static": cfg0.multimodal.static,
                "pairs": cfg0.multimodal.pairs,
                "fusion": cfg0.multimodal.fusion,
            },
            "methods_skipped": self.methods_skipped,
            "temporal_reason": None
            if grouped
            else _NOTES_NO_EVENTS_VIEW.format(what="temporal stability"),
            "robustness_reason": None
            if grouped
            else _NOTES_NO_EVENTS_VIEW.format(what="robustness"),
        }
