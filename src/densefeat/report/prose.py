"""The report's sentences: the primary-endpoint statements, the header facts, the scale
banner and the definitions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .format import num, signed
from .records import finite, join, skipped
from .schema import check_comparison, higher_is_better_of

__all__ = [
    "DEFINITIONS",
    "banner",
    "endpoint_sentence",
    "endpoint_sentences",
    "header_facts",
    "window_rule",
]


def endpoint_sentence(cmp: Mapping[str, Any], label: str, *, higher_is_better: bool) -> str:
    """State a dense-vs-best-baseline comparison honestly, whichever way it went.

    The wording comes from the numbers: a win is claimed only when the 95% CI of the difference
    excludes 0 in dense's favour; a higher point estimate whose CI includes 0 is called "not a
    significant win"; anything else is "does not beat". ``dense_wins`` is cross-checked: it may
    not claim a win that the point estimate contradicts.

    Args:
        cmp: ``comparison`` (or ``comparison.robustness``): ``dense``, ``best_baseline``,
            ``best_baseline_value``, ``difference`` (dense − best baseline),
            ``difference_ci``, ``dense_wins``.
        label: what is compared, e.g. ``"probe AUROC (macro over 2 tasks)"``.
        higher_is_better: ``True`` for AUROC, ``False`` for an AUROC drop.

    Without a CI (``difference_ci`` null) no difference is called significant.

    Raises:
        ValueError: ``dense_wins`` is true but the difference says dense is worse.
    """
    diff = float(cmp["difference"])
    base = cmp["best_baseline"]
    better = diff > 0 if higher_is_better else diff < 0
    if cmp["dense_wins"] and not better:
        raise ValueError(
            f"comparison for {label}: dense_wins is true but the difference {diff:+.4f} "
            "says dense is worse"
        )
    values = (
        f"(dense {num(float(cmp['dense']), 'auroc')}, {base} "
        f"{num(float(cmp['best_baseline_value']), 'auroc')}; dense − {base}"
    )
    if cmp["difference_ci"] is None:
        numbers = f"difference {signed(diff)}, no bootstrap CI in results.json"
        if better:
            return (
                f"dense is above the best baseline ({base}) on {label} by the point estimate "
                f"only, untested: {numbers} {values})."
            )
        return f"dense does not beat the best baseline ({base}) on {label}: {numbers} {values})."
    lo, hi = (float(v) for v in cmp["difference_ci"])
    sig_better = lo > 0 if higher_is_better else hi < 0
    sig_worse = hi < 0 if higher_is_better else lo > 0
    numbers = f"difference {signed(diff)}, 95% CI [{num(lo, 'drop')}, {num(hi, 'drop')}]"
    values += ", paired patient-level bootstrap)"
    if better and sig_better:
        return f"dense beats the best baseline ({base}) on {label}: {numbers} {values}."
    if better:
        return (
            f"dense does not significantly beat the best baseline ({base}) on {label}: "
            f"{numbers}, which includes 0 {values}."
        )
    tail = f"; the CI excludes 0: {base} is better" if sig_worse else ""
    return f"dense does not beat the best baseline ({base}) on {label}: {numbers}{tail} {values}."


def header_facts(results: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    cfg = results["config"]
    ds = results["dataset"]
    facts: list[tuple[str, str]] = []
    text = str(ds["name"])
    if finite(ds.get("n_subjects")):
        text += f", {ds['n_subjects']:,} subjects"
    splits = ds.get("n_subjects_per_split") or {}
    if splits:
        text += " (" + ", ".join(f"{k} {v:,}" for k, v in splits.items() if finite(v)) + ")"
    if ds.get("path"):
        text += f"; read from {ds['path']}"
    facts.append(("Dataset", text))
    tasks = results.get("tasks") or []
    if tasks:
        facts.append(("Tasks", join(t["name"] for t in tasks)))
    not_run = [
        f"{name} ({reason})"
        for key in ("tasks", "methods", "baselines")
        for name, reason in skipped(results, key)
    ]
    if not_run:
        facts.append(("Not run", "; ".join(not_run)))
    seeds = list(cfg["seeds"])
    seed_text = f"{join(seeds)} ({len(seeds)} seed{'s' if len(seeds) != 1 else ''})"
    if len(seeds) < 3:
        seed_text += "; a benchmark needs at least 3"
    facts.append(("Seeds", seed_text))
    steps, batch = cfg.get("budget_steps"), cfg.get("batch_size")
    if finite(steps) and finite(batch):
        budget = (
            f"{steps:,} optimizer steps × batch {batch:,} = {steps * batch:,} samples per "
            "method (equal encoder passes)"
        )
    else:
        budget = "not recorded"
    if finite(results.get("seconds")):
        budget += f"; wall-clock of the whole benchmark {_wall(results['seconds'])}"
    facts.append(("Budget", budget))
    details = []
    if finite(cfg.get("k")):
        details.append(f"subspace distances at k = {cfg['k']}")
    if finite(cfg.get("window_days")):
        details.append(f"time windows of {cfg['window_days']:g} days")
    if details:
        facts.append(("Protocol", "; ".join(details)))
    if cfg.get("adaptations"):
        facts.append(("Adapted to the data", "; ".join(str(a) for a in cfg["adaptations"])))
    versions = results.get("versions") or {}
    if versions:
        facts.append(("Versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    machine = results.get("machine") or {}
    if machine:
        parts = [str(machine[k]) for k in ("platform",) if machine.get(k)]
        if finite(machine.get("cpus")):
            parts.append(f"{machine['cpus']} CPUs")
        if machine.get("device"):
            parts.append(f"device {machine['device']}")
        if finite(machine.get("torch_threads")):
            parts.append(f"{machine['torch_threads']} torch threads")
        facts.append(("Machine", ", ".join(parts)))
    if results.get("created"):
        facts.append(("Created", str(results["created"])))
    return tuple(facts)


def _wall(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def banner(results: Mapping[str, Any]) -> str:
    n_seeds = len(results["config"]["seeds"])
    if results["scale"] == "smoke":
        return (
            "Smoke scale: these are not benchmark-grade numbers. The run used the demo's small "
            "budget to check that every stage works end to end; do not compare methods on it."
        )
    text = f"Scale: {results['scale']} benchmark."
    if n_seeds < 3:
        text += f" Only {n_seeds} seed(s): fewer than the 3 a benchmark needs."
    return text


DEFINITIONS = (
    (
        "effective rank",
        "exp(H(q)) with q = s / Σs, s the singular values of the centred embeddings Zc "
        "(Roy & Vetterli 2007); between 1 and min(n − 1, d).",
    ),
    (
        "condition number",
        "s₁ / s_min of Zc; infinite (printed —, with the reason) when the numerical rank is "
        "below min(n − 1, d), e.g. an encoder ending in LayerNorm. @k: s₁ / s_k at "
        "k = round(effective rank).",
    ),
    (
        "subspace distance",
        "sample-space distance between the top-k left singular vectors Ua, Ub of two paired "
        "centred matrices: √(1 − ‖Uaᵀ Ub‖²_F / k), in [0, 1]; chance √(1 − k/(n − 1)), that "
        "of two random k-dim subspaces of the (n − 1)-dimensional centred sample space.",
    ),
    (
        "debiased linear CKA",
        "linear CKA (Kornblith et al. 2019) with the unbiased HSIC estimator (Song et al. 2012); "
        "0 in expectation for independent matrices.",
    ),
    (
        "isotropic reference",
        "the same metric on isotropic Gaussian matrices of the same (n, d): spectral numbers "
        "depend strongly on the shape, so a value means little without it.",
    ),
    (
        "primary endpoints",
        "declared before running: linear-probe AUROC (macro over tasks) and its drop under "
        "perturbation, dense minus the best non-dense baseline with a paired patient-level "
        "bootstrap CI. Geometry is secondary: dense optimises it directly.",
    ),
)


def endpoint_sentences(results: Mapping[str, Any]) -> tuple[str, ...]:
    """The primary-endpoint sentences: probe AUROC, AUROC drop, and the smoke-scale caveat."""
    n_tasks = len({p["task"] for p in results.get("probes") or () if p["k"] == "all"}) or len(
        results.get("tasks") or ()
    )
    task_text = f" (macro over {n_tasks} task{'s' if n_tasks != 1 else ''})" if n_tasks else ""
    cmp = results["comparison"]
    endpoints = []
    if check_comparison(cmp, "comparison"):
        higher = higher_is_better_of(cmp, True)
        label = f"probe AUROC{task_text}" + ("" if higher else " (lower is better)")
        endpoints.append(endpoint_sentence(cmp, label, higher_is_better=higher))
    else:
        endpoints.append(
            "No primary-endpoint comparison in results.json (comparison): no dense run, no "
            "baseline or no task to compare on."
        )
    if isinstance(cmp, Mapping):
        endpoints += _selection_and_untrained(cmp)
        endpoints += _hybrid_ablation(cmp)
        endpoints += _label_efficiency(cmp)
    collapsed = [r["method"] for r in results.get("table") or () if r.get("collapsed")]
    if collapsed:
        tuned = " (after tuning)" if (results.get("tuning") or {}).get("methods") else ""
        endpoints.append(
            f"Collapsed{tuned}: {', '.join(collapsed)} (final monitoring effective rank below "
            "10% of d); a comparison against a collapsed method says little about either."
        )
    rob_auroc = cmp.get("robustness_auroc") if isinstance(cmp, Mapping) else None
    if check_comparison(rob_auroc, "comparison.robustness_auroc"):
        endpoints.append(
            endpoint_sentence(
                rob_auroc, "AUROC under perturbation (primary)", higher_is_better=True
            )
        )
    rob = cmp.get("robustness") if isinstance(cmp, Mapping) else None
    if check_comparison(rob, "comparison.robustness"):
        higher = higher_is_better_of(rob, False)
        label = "AUROC drop under perturbation" + ("" if higher else " (lower is better)")
        endpoints.append(endpoint_sentence(rob, label, higher_is_better=higher))
    else:
        endpoints.append("No robustness comparison in results.json (comparison.robustness).")
    if results["scale"] == "smoke":
        endpoints.append(
            "At smoke scale these differences are not evidence either way: rerun at full scale "
            "with at least 3 seeds."
        )
    return tuple(endpoints)


def _selection_and_untrained(cmp: Mapping[str, Any]) -> list[str]:
    """How the best baseline was chosen, and dense against the untrained encoder."""
    out = []
    if cmp.get("selected_on") == "tuning_auroc":
        out.append(
            "The best baseline was chosen on the tuning split's macro probe AUROC, never on "
            "the held-out rows its interval is computed from."
        )
    un = cmp.get("untrained")
    if isinstance(un, Mapping) and un.get("difference") is not None:
        ci = un.get("difference_ci")
        diff = signed(float(un["difference"]))
        if not ci:
            out.append(
                f"dense − untrained encoder (random), held-out probe AUROC: difference {diff}, "
                "no bootstrap CI in results.json (untested)."
            )
            return out
        lo, hi = float(ci[0]), float(ci[1])
        verdict = "above" if lo > 0 else "below" if hi < 0 else "not distinguishable from"
        out.append(
            f"dense is {verdict} the untrained encoder (random) on held-out probe AUROC: "
            f"difference {diff}, 95% CI [{num(lo, 'drop')}, {num(hi, 'drop')}] (paired "
            "patient-level bootstrap)."
        )
    return out


def _hybrid_ablation(cmp: Mapping[str, Any]) -> list[str]:
    """The masked+dense hybrid against its parts (secondary, one sentence)."""
    rows = [r for r in cmp.get("hybrid") or () if r.get("difference") is not None]
    if not rows:
        return []
    parts = []
    for r in rows:
        ci = r.get("difference_ci")
        interval = (
            f" [{num(float(ci[0]), 'drop')}, {num(float(ci[1]), 'drop')}]" if ci else " (no CI)"
        )
        parts.append(f"{r['a']} − {r['b']} {signed(float(r['difference']))}{interval}")
    return [
        "Secondary, the hybrid against its parts (held-out probe AUROC, paired patient-level "
        f"bootstrap 95% CI): {'; '.join(parts)}."
    ]


def _label_efficiency(cmp: Mapping[str, Any]) -> list[str]:
    """dense against the untrained encoder on the k-shot probes (exploratory, one sentence)."""
    rows = [r for r in cmp.get("label_efficiency") or () if r.get("difference_ci")]
    if not rows:
        return []
    parts = []
    for r in rows:
        lo, hi = (num(float(x), "drop") for x in r["difference_ci"])
        parts.append(f"k = {r['k']} {signed(float(r['difference']))} [{lo}, {hi}]")
    above = [str(r["k"]) for r in rows if float(r["difference_ci"][0]) > 0]
    below = [str(r["k"]) for r in rows if float(r["difference_ci"][1]) < 0]
    verdict = (
        f"interval above 0 at k = {', '.join(above)}" if above else "no interval above 0"
    ) + (f", below 0 at k = {', '.join(below)}" if below else "")
    return [
        "Exploratory, not a declared endpoint: dense − untrained encoder on k-shot probe AUROC "
        f"(k labelled subjects per class; 95% t-interval over seed × task cells, which share "
        f"held-out rows): {'; '.join(parts)}; {verdict}."
    ]


#: densefeat.eval.temporal scores a window at k with at least this many subjects per k, and a
#: smaller one at the clipped k = n // 4 down to this least k (its ROWS_PER_K and
#: MIN_CLIPPED_K; the report does not import eval, so the twins are kept equal here).
_MIN_ROWS_PER_K = 4
_MIN_CLIPPED_K = 2


def window_rule(results: Mapping[str, Any]) -> str:
    """Why a time window has no record: the rule of :mod:`densefeat.eval.temporal`."""
    # A window scored at a clipped k keeps the requested one in k_requested.
    ks = {
        r.get("k_requested", r.get("k"))
        for r in results.get("temporal") or ()
        if finite(r.get("k_requested", r.get("k")))
    }
    k = next(iter(ks)) if len(ks) == 1 else results["config"].get("k")
    least = f"4 k = {_MIN_ROWS_PER_K * int(k)}" if finite(k) else f"{_MIN_ROWS_PER_K} × k"
    fewest = _MIN_ROWS_PER_K * _MIN_CLIPPED_K
    return (
        "a window is measured only when enough held-out subjects have an event at or before "
        f"its first cut-off and a new event before the second: at k with at least {least} "
        f"held-out subjects, at a clipped k = floor(n / {_MIN_ROWS_PER_K}) with fewer, and not "
        f"below {fewest} (the minimum of densefeat.eval.temporal); results.json does not "
        "record how many subjects the windows left out had"
    )
