"""Fair tuning: every method gets the same hyperparameter budget before the comparison.

A comparison against untuned baselines means nothing in either direction: at default settings
SimCLR, VICReg and Barlow Twins collapse on the benchmark's data (docs/design.md, Baselines).
So ``densefeat benchmark --trials N`` first runs, for every trained method, the SAME number of
seeded random-search trials over a documented search space (:data:`COMMON_SPACE` +
:data:`METHOD_SPACES`), scores each trial by the **tuning split's** macro probe AUROC, and
trains the comparison's seeds with each method's best trial. The held-out rows are never
embedded during tuning (:func:`tuning_score` embeds the train and tuning rows only).

Protocol:

* Trial 0 of every method is its default configuration (no overrides): tuning can only
  improve on the defaults as judged by the tuning split, and ``--trials 1`` is the untuned
  benchmark. Trial ``i >= 1`` draws every parameter independently from its range (log-uniform
  or uniform), from ``numpy.random.default_rng([TUNING_SEED, i, stream])``: the learning rate
  and weight decay of trial ``i`` come from stream 0 and are THE SAME for every method; the
  method's own parameters from the method's stream (a CRC-32 of its name). A trial's draw does
  not depend on the number of trials (trial 3 of ``--trials 4`` is trial 3 of ``--trials 8``).
* Each trial trains at the benchmark's budget (steps x batch) with seed 0 (the tuning seed),
  then embeds the training and tuning rows of the evaluation rows and fits, per task, the
  benchmark's linear probe on training rows with C chosen on tuning rows; the trial's score
  is the mean over tasks of that probe's tuning AUROC (``val_auroc``: the same number the
  best-baseline selection uses, :func:`~densefeat.benchmark.summary.macro_tuning_auroc`).
  The maximum over C is optimistic by the same small amount for every method.
* The chosen trial is the highest score (ties: the lowest trial index). Ablations of a method
  (``dense-no_sub``) use its chosen configuration plus their own switch.
* ``random`` (nothing to train) and methods without a search space get no trials beyond
  their defaults. ``masked.mask_p`` is searched only with ``--modality text``: next-event
  prediction on EHR has no masking rate.

Trials live in ``OUT/tuning/runs/<method>/trial<i>/seed0`` (normal benchmark runs: reused,
resumed or retrained exactly like the comparison's, :mod:`densefeat.benchmark.runs`) and their
scores in ``OUT/tuning/eval/<method>/trial<i>.json`` with a fingerprint (data, evaluation rows,
tasks, run config, checkpoint hash), so an interrupted tuning resumes where it stopped.

Costs: ``trials x (trained methods)`` extra runs. Default :data:`DEFAULT_TRIALS` = 6 (the
benchmark); ``densefeat demo`` runs 1 (defaults only) to stay a few minutes long.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..io.atomic import write_text_atomic
from ..methods import get_method
from ..train.checkpoint import latest_checkpoint
from .cache import file_fingerprint, fingerprint
from .config import DEFAULT_TRIALS, RunSpec
from .evaluate import task_arrays
from .geometry import training_curve
from .runs import ensure_run

__all__ = [
    "COLLAPSE_FRACTION",
    "COMMON_SPACE",
    "DEFAULT_TRIALS",
    "METHOD_SPACES",
    "TUNING_SEED",
    "Param",
    "collapse_flags",
    "draw_trials",
    "select_trial",
    "tune",
    "tuning_score",
]

#: The random search's seed (every method, every benchmark: trials are comparable).
TUNING_SEED = 20_261_205
#: A run whose final monitoring effective rank is below this fraction of d is "collapsed".
COLLAPSE_FRACTION = 0.1


@dataclass(frozen=True)
class Param:
    """One searched setting: ``low .. high``, log-uniform when ``log``."""

    low: float
    high: float
    log: bool = True

    def draw(self, rng: np.random.Generator) -> float:
        u = float(rng.uniform())
        if self.log:
            return float(
                math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
            )
        return float(self.low + u * (self.high - self.low))

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "scale": "log" if self.log else "linear"}


#: Every trained method: AdamW's learning rate and weight decay (defaults 1e-3, 0.05).
COMMON_SPACE: dict[str, Param] = {
    "optim.lr": Param(1e-4, 3e-3),
    "optim.weight_decay": Param(1e-4, 0.3),
}

#: Each method's own settings (defaults in brackets): the dense term weights [1, 1, 1] and
#: the subspace term's shrinkage [3];
#: SimCLR's temperature [0.1]; VICReg's invariance / variance / covariance weights [25, 25, 1];
#: Barlow Twins' off-diagonal weight [5e-3]; the masking rate of masked-token prediction
#: [0.15, text only]; the ``masked+dense`` hybrid's dense weight [1]. The ranges span the
#: published defaults by about 10x either way.
METHOD_SPACES: dict[str, dict[str, Param]] = {
    "dense": {
        "dense.w_spec": Param(0.1, 10.0),
        "dense.w_orth": Param(0.1, 10.0),
        "dense.w_sub": Param(0.1, 10.0),
        # the subspace term's shrinkage g (default 3; docs/design.md §4.3): more shrinkage
        # keeps more of the pairing contrast at small n, less is closer to whitening
        "dense.shrinkage": Param(0.3, 30.0),
    },
    "simclr": {"simclr.temperature": Param(0.03, 1.0)},
    "vicreg": {
        "vicreg.sim": Param(5.0, 50.0),
        "vicreg.std": Param(5.0, 50.0),
        "vicreg.cov": Param(0.1, 10.0),
    },
    "barlow": {"barlow.lambd": Param(1e-3, 5e-2)},
    "masked": {"masked.mask_p": Param(0.05, 0.4, log=False)},
    # The hybrid's one weight: next-event prediction + w_dense x dense (0.1 .. 10 x default).
    "masked+dense": {"hybrid.w_dense": Param(0.1, 10.0)},
    "supervised": {},
}


def _stream(method: str) -> int:
    return zlib.crc32(method.encode()) or 1  # 0 is the common stream


def search_space(method: str, modality: str = "ehr") -> dict[str, Param]:
    """The searched settings of ``method`` (empty for ``random``: nothing to tune)."""
    if not get_method(method).trains:
        return {}
    own = dict(METHOD_SPACES.get(method, {}))
    if method == "masked" and modality != "text":
        own.pop("masked.mask_p")  # next-event prediction (EHR) has no masking rate
    return {**COMMON_SPACE, **own}


def draw_trials(method: str, trials: int, modality: str = "ehr") -> list[dict[str, float]]:
    """The overrides of trials ``0 .. trials - 1`` of ``method`` (trial 0: ``{}``, defaults).

    Raises:
        ValueError: ``trials < 1``.
    """
    if trials < 1:
        raise ValueError(f"--trials must be >= 1, got {trials}")
    space = search_space(method, modality)
    if not space:
        return [{}]
    out: list[dict[str, float]] = [{}]
    for i in range(1, trials):
        common = np.random.default_rng([TUNING_SEED, i, 0])
        own = np.random.default_rng([TUNING_SEED, i, _stream(method)])
        draw = {k: p.draw(common) for k, p in COMMON_SPACE.items() if k in space}
        draw.update({k: p.draw(own) for k, p in space.items() if k not in COMMON_SPACE})
        out.append(draw)
    return out


def select_trial(scores: list[float | None]) -> int:
    """Index of the best tuning score (ties: the lowest index; None scores never win).

    Raises:
        ValueError: no trial has a score.
    """
    valid = [(s, -i) for i, s in enumerate(scores) if s is not None and math.isfinite(s)]
    if not valid:
        raise ValueError("no tuning trial has a finite tuning-split AUROC")
    return -max(valid)[1]


def tuning_score(source: Any, run_dir: Path) -> dict[str, Any]:
    """Tuning-split macro probe AUROC of one run: embeds the train and tuning evaluation rows
    ONLY (held-out rows are never read), fits each task's probe on training rows with C chosen
    on tuning rows, and averages the tuning AUROCs.

    Returns:
        ``{"auroc_macro": float | None, "auroc": {task: float}}``.
    """
    from ..eval.probe import LinearProbe
    from ..train.modalities.ehr import embed
    from ..train.runs import load_run
    from .geometry import one_thread

    # A source with its own embedding of rows (multimodal) says so by a ``tuning_embed``.
    own_embed = getattr(source, "tuning_embed", None)
    if source.modality != "ehr" and own_embed is None:
        raise ValueError(f"--trials > 1: tuning is implemented for ehr, not {source.modality}")
    rows = source.eval_rows.rows
    keep = (rows["split"] != "held_out").to_numpy()
    index = np.flatnonzero(keep)
    position = np.full(keep.size, -1)
    position[index] = np.arange(index.size)
    if own_embed is not None:
        z = own_embed(run_dir, rows.filter(pl.Series(keep)))
    else:
        run = load_run(run_dir, "ehr").to(source.device)
        store = source.store_for(run.builder)
        z = embed(
            run, rows.filter(pl.Series(keep)), store=store, device=source.device, projector=False
        )
    per_task: dict[str, float] = {}
    for task in source.tasks:
        tr, va = (
            task_arrays(source.eval_rows.task_rows[task.name], s) for s in ("train", "tuning")
        )
        with one_thread():
            probe = LinearProbe().fit(
                z.backbone[position[tr["row"]]], tr["y"], z.backbone[position[va["row"]]], va["y"]
            )
        per_task[task.name] = float(probe.val_auroc_)
    macro = float(np.mean(list(per_task.values()))) if per_task else None
    return {"auroc_macro": macro, "auroc": per_task}


def _final_rank(run_dir: Path) -> float | None:
    ranks = training_curve(run_dir)["effective_rank"]
    return ranks[-1] if ranks else None


def tune(
    source: Any,
    out: Path,
    eval_fp_base: list[Any],
    methods: list[str],
    *,
    say: Callable[[str], None] = print,
    score: Callable[[Any, Path], dict[str, Any]] = tuning_score,
) -> dict[str, Any]:
    """Run (or reuse) every trial of every method, score it on the tuning split, choose.

    Args:
        source: the benchmark's data source (``bench``, ``data``, ``run_identity``, ...).
        out: the benchmark's output directory (trials under ``OUT/tuning``).
        eval_fp_base: what the benchmark's evaluations are fingerprinted with.
        methods: the methods to tune (registry names).
        say: one-line progress messages.
        score: the trial scorer (:func:`tuning_score`).

    Returns:
        the ``tuning`` section of results.json (docs/results-schema.md): per method its
        search space, trials (overrides, score, per-task scores, final effective rank) and the
        chosen trial and overrides.
    """
    bench = source.bench
    section: dict[str, Any] = {
        "trials": bench.trials,
        "seed": TUNING_SEED,
        "selected_on": "tuning_auroc_macro",
        "training_seed": 0,
        "methods": {},
    }
    for method in dict.fromkeys(methods):
        draws = draw_trials(method, bench.trials, bench.modality)
        space = search_space(method, bench.modality)
        trials = []
        for i, overrides in enumerate(draws):
            spec = RunSpec(f"{method}/trial{i}", method, 0, tuple(sorted(overrides.items())))
            if len(draws) == 1:
                trials.append({"trial": 0, "overrides": {}, "auroc_macro": None})
                break
            run_dir, what = ensure_run(
                spec,
                bench,
                source.data,
                out / "tuning" / "runs",
                source.run_labels(spec),
                identity=source.run_identity(spec),
            )
            ckpt = latest_checkpoint(run_dir)
            fp = fingerprint(
                eval_fp_base,
                json.loads((run_dir / "config.json").read_text()),
                file_fingerprint(ckpt / "model.safetensors"),
            )
            path = out / "tuning" / "eval" / method / f"trial{i}.json"
            saved = _read(path)
            if saved is not None and saved.get("fingerprint") == fp:
                result = saved["result"]
                say(f"tune {method} trial {i}: {what}; score reused")
            else:
                result = score(source, run_dir)
                write_text_atomic(
                    path, json.dumps({"fingerprint": fp, "result": result}, allow_nan=False)
                )
                say(f"tune {method} trial {i}: {what}; tuning AUROC {result['auroc_macro']}")
            trials.append(
                {
                    "trial": i,
                    "overrides": overrides,
                    "auroc_macro": result["auroc_macro"],
                    "auroc": result["auroc"],
                    "final_effective_rank": _final_rank(run_dir),
                }
            )
        chosen = 0 if len(trials) == 1 else select_trial([t["auroc_macro"] for t in trials])
        section["methods"][method] = {
            "space": {k: p.to_dict() for k, p in space.items()},
            "trials": trials,
            "chosen_trial": chosen,
            "chosen": trials[chosen]["overrides"],
        }
    return section


def _read(path: Path) -> dict[str, Any] | None:
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return saved if isinstance(saved, dict) and "result" in saved else None


def apply_chosen(specs: list[RunSpec], tuning: dict[str, Any]) -> list[RunSpec]:
    """The comparison's runs with each method's chosen overrides under their own (an
    ablation's switch wins over a tuned weight)."""
    out = []
    for s in specs:
        chosen = tuning["methods"].get(s.method, {}).get("chosen", {})
        merged = {**chosen, **dict(s.overrides)}
        out.append(RunSpec(s.name, s.method, s.seed, tuple(sorted(merged.items()))))
    return out


def collapse_flags(
    table: list[dict[str, Any]], curves: list[dict[str, Any]], fraction: float = COLLAPSE_FRACTION
) -> None:
    """Add ``final_effective_rank`` (seed mean of the last monitoring effective rank) and
    ``collapsed`` (it is below ``fraction * d``; None without a curve) to each table row."""
    by: dict[str, list[tuple[float, int]]] = {}
    for c in curves:
        if c.get("effective_rank") and c.get("d"):
            by.setdefault(c["method"], []).append((float(c["effective_rank"][-1]), int(c["d"])))
    for row in table:
        vals = by.get(row["method"])
        if not vals:
            row["final_effective_rank"], row["collapsed"] = None, None
            continue
        rank = float(np.mean([r for r, _ in vals]))
        row["final_effective_rank"] = rank
        row["collapsed"] = bool(rank < fraction * vals[0][1])
