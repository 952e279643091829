"""What a benchmark runs: methods, ablations, seeds, budget, evaluation settings.

Every method gets the same encoder, the same window pairs (or labelled rows for
``supervised``), the same optimizer steps x batch size ("budget", docs/design.md, Baselines) and the
same evaluation rows. Ablations are methods with one term switched off through the same
``--set``-style config overrides a user would type.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..choices import METHOD_NAMES
from ..train.config import canonical_key

__all__ = [
    "ABLATIONS",
    "BENCHMARK_VERSION",
    "DEFAULT_METHODS",
    "DEFAULT_TRIALS",
    "PERTURBATIONS",
    "BenchmarkConfig",
    "RunSpec",
]

#: Bumped whenever training or evaluation changes meaning (window rules, metrics, protocol):
#: part of every run's and evaluation's identity, so a rerun never reuses results of older code.
BENCHMARK_VERSION = 2

#: TrainConfig keys a benchmark sets itself (the budget must be equal for every method).
RESERVED_KEYS = ("method", "seed", "max_steps", "epochs", "modality")

#: Random-search trials per method before the comparison (``--trials``; 1 = the defaults only,
#: no tuning). The same default for the CLI and the API (densefeat.benchmark.tuning).
DEFAULT_TRIALS = 6

#: The comparison's methods, in the order of the table (docs/design.md, Baselines).
DEFAULT_METHODS = ("dense", "simclr", "vicreg", "barlow", "masked", "supervised", "random")

#: Ablation name -> (method, config overrides). Each dense term off in turn, and VICReg
#: without its invariance term (what is left is variance + covariance on each view alone:
#: the "no pairing" control of the dense subspace term).
ABLATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "dense-no_spec": ("dense", {"dense.w_spec": 0.0}),
    "dense-no_orth": ("dense", {"dense.w_orth": 0.0}),
    "dense-no_sub": ("dense", {"dense.w_sub": 0.0}),
    "vicreg-no_inv": ("vicreg", {"vicreg.sim": 0.0}),
}

#: Test-time perturbations of the EHR modality and their levels (docs/design.md, Robustness):
#: event dropout fractions, time jitter in days (+-1 day; ICU data: +-1 hour), code noise.
PERTURBATIONS: tuple[tuple[str, float], ...] = (
    ("event_dropout", 0.1),
    ("event_dropout", 0.3),
    ("event_dropout", 0.5),
    ("time_jitter", 1.0),
    ("code_noise", 0.1),
)


@dataclass(frozen=True)
class RunSpec:
    """One training run of the benchmark.

    Attributes:
        name: table row (a method or ablation name).
        method: the registry method.
        seed: the run's seed (initialisation, data order, dropout).
        overrides: config overrides on top of the benchmark's (an ablation's term weights).
    """

    name: str
    method: str
    seed: int
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        """A file-name-safe id: ``<name>/seed<seed>``."""
        return f"{self.name}/seed{self.seed}"


@dataclass
class BenchmarkConfig:
    """Settings of one benchmark.

    Attributes:
        methods: methods to train (rows of the table, in order).
        ablations: names of :data:`ABLATIONS` to add after the methods.
        seeds: number of seeds per method (seeds 0 .. seeds - 1).
        budget: optimizer steps per run (the same for every method).
        train: TrainConfig overrides shared by every run (``batch_size``, ``max_len``, ...).
        k: subspace dimension of every subspace distance.
        max_eval_times: cap on the evaluation prediction times (see
            :mod:`densefeat.benchmark.rows`); 0 for no cap.
        kshots: k-shot sizes (per class) of the probes.
        draws: draws per k-shot size.
        bootstrap: patient-level bootstrap resamples of every CI.
        perturbations: ``(name, level)`` test-time perturbations.
        jitter_days: the time-jitter scale in days; None: 1/24 (one hour) for ICU data
            converted by ``densefeat convert physionet2019``, else 1 day (docs/design.md).
        supervised_task: the task whose training labels ``supervised`` trains on (default: the
            first task).
        tasks: only these tasks (default: all).
        scale: ``"full"`` or ``"smoke"`` (the demo; the report says so).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        modality: what the runs train on (``"ehr"``, ``"text"``, ``"multimodal"``; every run's
            ``TrainConfig.modality``).
        trials: random-search trials per trained method, chosen on the tuning split's macro
            probe AUROC (:mod:`densefeat.benchmark.tuning`); 1: every method at its defaults.
        probe_folds: K of the subject-grouped cross-fitting that replaces the split probe of a
            task with too few held-out positives or subjects (:mod:`densefeat.benchmark.small`);
            0 never cross-fits.
    """

    methods: tuple[str, ...] = DEFAULT_METHODS
    ablations: tuple[str, ...] = tuple(ABLATIONS)
    seeds: int = 3
    budget: int = 250
    train: dict[str, Any] = field(default_factory=dict)
    k: int = 16
    max_eval_times: int = 20_000
    kshots: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
    draws: int = 5
    bootstrap: int = 1000
    perturbations: tuple[tuple[str, float], ...] = PERTURBATIONS
    jitter_days: float | None = None
    supervised_task: str | None = None
    tasks: tuple[str, ...] | None = None
    scale: str = "full"
    device: str = "auto"
    modality: str = "ehr"
    trials: int = DEFAULT_TRIALS
    probe_folds: int = 5

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHOD_NAMES]
        if unknown:
            raise ValueError(
                f"--methods: unknown method(s) {unknown}; choose from {list(METHOD_NAMES)}"
            )
        bad = [a for a in self.ablations if a not in ABLATIONS]
        if bad:
            raise ValueError(f"unknown ablation(s) {bad}; choose from {list(ABLATIONS)}")
        reserved = sorted({canonical_key(k) for k in self.train} & set(RESERVED_KEYS))
        if reserved:
            raise ValueError(
                f"--set {reserved[0]}=...: the benchmark sets {', '.join(RESERVED_KEYS)} itself "
                "(the same budget for every method)"
            )
        if self.jitter_days is not None and self.jitter_days <= 0:
            raise ValueError(f"--jitter-days must be > 0, got {self.jitter_days}")
        if not self.methods:
            raise ValueError("--methods: at least one method")
        for name in ("seeds", "budget", "k", "draws", "bootstrap", "trials"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.probe_folds < 0 or self.probe_folds == 1:
            raise ValueError(f"--probe-folds must be 0 (never) or >= 2, got {self.probe_folds}")
        if self.max_eval_times < 0:
            raise ValueError(f"max_eval_times must be >= 0, got {self.max_eval_times}")
        if self.modality not in ("ehr", "text", "multimodal"):
            raise ValueError(
                f"--modality: the benchmark runs ehr, text or multimodal, got {self.modality!r}"
            )
        if self.scale not in ("full", "smoke"):
            raise ValueError(f"scale must be 'full' or 'smoke', got {self.scale!r}")

    def runs(self) -> list[RunSpec]:
        """Every training run, methods first then ablations, seed-major within a name."""
        specs = [RunSpec(m, m, s) for m in self.methods for s in range(self.seeds)]
        for name in self.ablations:
            method, overrides = ABLATIONS[name]
            specs += [
                RunSpec(name, method, s, tuple(sorted(overrides.items())))
                for s in range(self.seeds)
            ]
        return specs

    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings."""
        return asdict(self)
