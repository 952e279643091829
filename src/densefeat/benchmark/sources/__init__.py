"""The benchmark's data sources: what is modality-specific in a benchmark.

A source reads the data once and answers the orchestrator (:mod:`densefeat.benchmark.run`):

* ``tasks``, ``skipped``, ``eval_rows``, ``ctx`` (:class:`~densefeat.benchmark.evaluate.
  ProbeContext`), ``bench`` (the settings with the source's defaults resolved), ``data`` (the
  resolved data path), ``content`` (a content fingerprint of the data);
* ``prepare_specs(specs)``: the runs this data supports (e.g. no ``masked`` under a pretrained
  text encoder; ``supervised``'s labels);
* ``run_identity(spec)``, ``run_labels(spec)``: what a run must share to be reused, and its
  ``--labels``;
* ``evaluate(spec, run_dir) -> RunResult``: every per-run measurement;
* ``baselines(eval_fp_base)``: the probe-only baselines (count features; TF-IDF, frozen MiniLM);
* ``describe()``, ``rows_fingerprint()``, ``dataset_record(name)``, ``config_record()``,
  ``results_record()``, ``task_summary(task)``, ``finish_table(table)``: the results file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from ..config import BenchmarkConfig
from ..evaluate import ProbeContext, RunResult

__all__ = ["Source", "open_source"]


class Source(Protocol):
    """What the orchestrator needs from a modality's data (module docstring)."""

    modality: str
    bench: BenchmarkConfig
    data: str
    content: str
    tasks: list
    skipped: list
    ctx: ProbeContext

    def describe(self) -> str: ...
    def rows_fingerprint(self) -> list[Any]: ...
    def prepare_specs(self, specs: list) -> list: ...
    def run_identity(self, spec: Any) -> dict[str, Any]: ...
    def run_labels(self, spec: Any) -> Path | None: ...
    def evaluate(self, spec: Any, run_dir: Path) -> RunResult: ...
    def baselines(self, eval_fp_base: list[Any]) -> list[tuple[str, RunResult]]: ...
    def dataset_record(self, name: str | None) -> dict[str, Any]: ...
    def config_record(self) -> dict[str, Any]: ...
    def results_record(self) -> dict[str, Any]: ...
    def task_summary(self, task: Any) -> dict[str, Any]: ...
    def finish_table(self, table: list[dict[str, Any]]) -> None: ...


def open_source(
    bench: BenchmarkConfig,
    data: Any,
    out: Path,
    *,
    labels: list[Path] | None,
    say: Any,
    device: torch.device,
    **options: Any,
) -> Source:
    """The data source of ``bench.modality`` over ``data``.

    Raises:
        ValueError: a modality without a benchmark source, or options it does not take.
    """
    if bench.modality == "ehr":
        from .ehr import EHRSource

        if options:
            raise ValueError(f"options {sorted(options)} are for the text benchmark")
        return EHRSource(data, out, bench, labels, say, device)
    if bench.modality == "text":
        from .text import TextSource

        if labels:
            raise ValueError(
                "--labels is a MEDS label file for the EHR benchmark; text tasks are the notes' "
                "label columns"
            )
        return TextSource(data, out, bench, say, device, **options)
    if bench.modality == "multimodal":
        from .multimodal import MultimodalSource

        if options:
            raise ValueError(f"options {sorted(options)} are for the text benchmark")
        return MultimodalSource(data, out, bench, labels, say, device)
    raise ValueError(f"no benchmark for modality {bench.modality!r} (ehr, text, multimodal)")
