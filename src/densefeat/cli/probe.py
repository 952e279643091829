"""``densefeat probe``: linear-probe AUROC/AUPRC of an embedding file on MEDS labels.

Usage::

    densefeat probe --embeddings emb.parquet --labels task.parquet \\
        [--key embedding] [--k all 1 2 4 ...] [--draws 5] [--bootstrap 1000] [--seed 0] \\
        [--split-seed 0] [--whiten] [--json OUT]

The embeddings are the ``.parquet`` written by ``densefeat embed`` (``subject_id``,
``prediction_time``, ``split``, ``embedding``); the labels are MEDS labels (``subject_id``,
``prediction_time``, ``boolean_value``). Rows are joined on (subject_id, prediction_time);
without a ``split`` column subjects are split by a hash of (``--split-seed``, subject_id).
The probe protocol is :mod:`densefeat.eval.probe` (EHRSHOT's, DESIGN.md):

* ``--k all``: L2 logistic regression fitted on ``train``, C in 1e-4..1e4 chosen by AUROC on
  ``tuning``, AUROC and AUPRC on ``held_out`` with percentile 95% CIs from ``--bootstrap``
  patient-level resamples;
* ``--k N``: N positive and N negative training rows per draw (``--draws`` seeded draws),
  C chosen on N per class from ``tuning`` (fixed at 1.0 for N <= 4); mean and sd over draws.
  An N larger than the train split's smaller class is an error here.

Errors (exit 2, nothing written): a missing file or column (named), labels that match no
embedding row (with how many of each matched), a single-class label, a split without both
classes, an N larger than the class size. ``--json`` is written atomically, and only when
everything succeeded.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_arguments", "probe_files", "render", "run"]


# --------------------------------------------------------------------------- arguments
def _k_value(text: str) -> str | int:
    if text == "all":
        return "all"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'all' or a positive integer, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 'all' or a positive integer, got {value}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``densefeat probe``."""
    parser.add_argument(
        "--embeddings",
        type=Path,
        required=True,
        metavar="FILE",
        help="embeddings .parquet with subject_id, prediction_time, [split,] and an embedding "
        "list column (as written by `densefeat embed`)",
    )
    parser.add_argument(
        "--labels",
        type=Path,
        required=True,
        metavar="FILE",
        help="MEDS labels (.parquet file or directory): subject_id, prediction_time, boolean_value",
    )
    parser.add_argument(
        "--key",
        metavar="COL",
        default=None,
        help="embedding column (default: the only float-list column)",
    )
    parser.add_argument(
        "--k",
        nargs="+",
        type=_k_value,
        default=["all"],
        metavar="all|N",
        help="'all' (full training split) and/or shots per class, e.g. --k all 1 2 4 8 16 32 "
        "64 128 (default: all)",
    )
    parser.add_argument(
        "--draws", type=_positive_int, default=5, help="draws per k-shot size (default 5)"
    )
    parser.add_argument(
        "--bootstrap",
        type=_non_negative_int,
        default=1000,
        metavar="B",
        help="patient-level bootstrap resamples of the held-out CIs (default 1000; 0: none)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the bootstrap and the k-shot draws"
    )
    parser.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="seed of the subject-level split when the embeddings have no split column",
    )
    parser.add_argument(
        "--whiten",
        action="store_true",
        help="also probe the ZCA-whitened embeddings (statistics from the train split)",
    )
    parser.add_argument(
        "--json",
        metavar="OUT",
        help="also write the results as JSON (only if the whole run succeeds)",
    )


# --------------------------------------------------------------------------- computation
def _versions() -> dict[str, str]:
    import polars
    import sklearn

    from .. import __version__

    return {
        "densefeat": __version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "polars": polars.__version__,
        "python": platform.python_version(),
    }


def probe_files(
    embeddings: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    *,
    key: str | None = None,
    ks: list[str | int] | tuple[str | int, ...] = ("all",),
    draws: int = 5,
    n_bootstrap: int = 1000,
    seed: int = 0,
    split_seed: int = 0,
    whitened: bool = False,
) -> dict[str, Any]:
    """Run the probe protocol on an embedding file and a label file.

    Returns:
        the result object written by ``--json`` (kind ``densefeat.probe``): inputs, row
        counts, split sizes, config, versions and ``probes`` (one record per embedding
        variant and k, the results-schema probe fields plus ``task`` and ``embedding``).

    Raises:
        ValueError / FileNotFoundError: see the module docstring.
    """
    from ..data.splits import SPLIT_NAMES
    from ..eval.probe import DEFAULT_CS, FIXED_C, load_probe_data, probe_k_shot, probe_task, whiten

    t0 = _dt.datetime.now(_dt.UTC)
    ks = list(dict.fromkeys(ks))  # drop repeats, keep order
    shots = [k for k in ks if k != "all"]
    data = load_probe_data(embeddings, labels, key=key, split_seed=split_seed)
    splits: dict[str, dict[str, int]] = {}
    for name in SPLIT_NAMES:
        mask = data.split == name
        splits[name] = {
            "rows": int(mask.sum()),
            "subjects": int(np.unique(data.subject_id[mask]).size),
            "positives": int(data.y[mask].sum()),
            "negatives": int((~data.y[mask]).sum()),
        }
    for name, part in splits.items():
        if part["positives"] == 0 or part["negatives"] == 0:
            raise ValueError(
                f"--labels {labels}: the {name} split has {part['positives']} positive and "
                f"{part['negatives']} negative matched rows ({data.split_source}); the probe "
                "needs both classes in train, tuning and held_out"
            )
    smaller = min(splits["train"]["positives"], splits["train"]["negatives"])
    too_big = [k for k in shots if k > smaller]
    if too_big:
        tr = splits["train"]
        raise ValueError(
            f"--k {' '.join(map(str, too_big))}: k-shot needs k positive and k negative train "
            f"rows, but the train split has {tr['positives']} positive and {tr['negatives']} "
            f"negative rows (largest possible k: {smaller})"
        )
    task = Path(labels).stem if Path(labels).suffix else Path(labels).name
    variants = [("raw", data.X)]
    if whitened:
        variants.append(("whitened", whiten(data.X[data.split == "train"], data.X)))
    probes: list[dict[str, Any]] = []
    for name, X in variants:
        base = {"task": task, "embedding": name}
        if "all" in ks:
            res = probe_task(
                X, data.y, data.split, data.subject_id, n_bootstrap=n_bootstrap, seed=seed
            )
            probes.append({**base, **res.record})
        if shots:
            for rec in probe_k_shot(
                X, data.y, data.split, data.subject_id, ks=shots, draws=draws, seed=seed
            ):
                probes.append({**base, **rec})
    return {
        "kind": "densefeat.probe",
        "version": 1,
        "created": t0.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": (_dt.datetime.now(_dt.UTC) - t0).total_seconds(),
        "embeddings": str(embeddings),
        "key": data.key,
        "labels": str(labels),
        "task": task,
        "n": int(data.X.shape[0]),
        "d": int(data.X.shape[1]),
        "rows": {
            "labels": data.counts["labels"],
            "embeddings": data.counts["embeddings"],
            "matched": data.counts["matched"],
            "labels_unmatched": data.counts["labels"] - data.counts["matched"],
            "embeddings_unmatched": data.counts["embeddings"] - data.counts["matched"],
        },
        "splits": {"source": data.split_source, **splits},
        "config": {
            "k": ks,
            "draws": draws,
            "bootstrap": n_bootstrap,
            "bootstrap_unit": "subject",
            "confidence": 0.95,
            "seed": seed,
            "split_seed": split_seed,
            "Cs": list(DEFAULT_CS),
            "C_selection": "validation AUROC (roc_auc) on the tuning split; smallest C on ties",
            "fixed_C": FIXED_C,
            "fixed_C_at_k_le": 4,
            "whiten": whitened,
        },
        "versions": _versions(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "probes": probes,
    }


# --------------------------------------------------------------------------- table
def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def _with_spread(rec: dict[str, Any], metric: str) -> tuple[str, str]:
    value = _num(rec.get(metric))
    ci = rec.get(f"{metric}_ci")
    if ci is not None:
        return value, f"[{_num(ci[0])}, {_num(ci[1])}]"
    sd = rec.get(f"{metric}_sd")
    if sd is not None:
        return value, f"± {_num(sd)} sd"
    return value, "-"


def render(result: dict[str, Any], console: Any | None = None) -> None:
    """Print :func:`probe_files`'s result as a table (rich) on ``console``/stdout."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    rows = result["rows"]
    console.print(
        f"densefeat probe: {result['task']}: {rows['matched']} rows matched "
        f"({rows['matched']} of {rows['labels']} label rows, {rows['matched']} of "
        f"{rows['embeddings']} embedding rows), d = {result['d']}; splits: "
        f"{result['splits']['source']}",
        markup=False,
        highlight=False,
    )
    if rows["labels_unmatched"]:
        console.print(
            f"note: {rows['labels_unmatched']} label rows have no embedding row and are not used",
            markup=False,
            highlight=False,
        )
    cfg = result["config"]
    table = Table(
        title=f"Linear probe (95% CI: {cfg['bootstrap']} patient-level bootstrap resamples; "
        f"k-shot: mean ± sd over {cfg['draws']} draws)"
    )
    for col in ("embedding", "k", "n train", "AUROC", "95% CI / sd", "AUPRC", "95% CI / sd", "C"):
        table.add_column(col, justify="left" if col in ("embedding", "k") else "right")
    for rec in result["probes"]:
        if rec.get("skipped"):
            table.add_row(
                rec["embedding"], str(rec["k"]), "-", "skipped", rec["reason"], "", "", ""
            )
            continue
        auroc, auroc_s = _with_spread(rec, "auroc")
        auprc, auprc_s = _with_spread(rec, "auprc")
        n_train = rec.get("n_train") if rec["k"] == "all" else 2 * rec["k"]
        c = rec.get("C")
        c_text = f"{c:g}" if c is not None else "per draw"
        table.add_row(
            rec["embedding"], str(rec["k"]), str(n_train), auroc, auroc_s, auprc, auprc_s, c_text
        )
    console.print(table)
    split = result["splits"]
    console.print(
        "splits (rows / positives): "
        + ", ".join(
            f"{s} {split[s]['rows']} / {split[s]['positives']}"
            for s in ("train", "tuning", "held_out")
        ),
        markup=False,
        highlight=False,
    )


# --------------------------------------------------------------------------- entry point
def run(args: argparse.Namespace) -> int:
    """Run ``densefeat probe``; user errors surface as ``ValueError``/``FileNotFoundError``."""
    from ..io.atomic import check_json_target, write_json_atomic

    out = check_json_target(args.json) if args.json else None
    for flag, path in (("--embeddings", args.embeddings), ("--labels", args.labels)):
        if not Path(path).exists():
            raise FileNotFoundError(f"{flag} {path}: no such file or directory")
    result = probe_files(
        args.embeddings,
        args.labels,
        key=args.key,
        ks=args.k,
        draws=args.draws,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        split_seed=args.split_seed,
        whitened=args.whiten,
    )
    render(result)
    if out is not None:
        write_json_atomic(out, result)
        print(f"densefeat probe: wrote {out}", file=sys.stderr)
    return 0
