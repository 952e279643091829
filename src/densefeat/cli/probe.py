"""``densefeat probe``: linear-probe AUROC/AUPRC of an embedding file on MEDS labels.

Usage::

    densefeat probe --embeddings emb.parquet --labels task.parquet \\
        [--key embedding] [--shots all 1 2 4 ...] [--draws 5] [--bootstrap 1000] [--seed 0] \\
        [--split-seed 0] [--whiten] [--json OUT]

The embeddings are the ``.parquet`` written by ``densefeat embed`` (``subject_id``,
``prediction_time``, ``split``, ``embedding``); the labels are MEDS labels (``subject_id``,
``prediction_time``, ``boolean_value``). Rows are joined on (subject_id, prediction_time);
without a ``split`` column subjects are split by a hash of (``--split-seed``, subject_id).
The computation is :func:`densefeat.eval.probe.files.probe_files`; the probe protocol is
:mod:`densefeat.eval.probe` (EHRSHOT's, docs/design.md):

* ``--shots all``: L2 logistic regression fitted on ``train``, C in 1e-4..1e4 chosen by AUROC on
  ``tuning``, AUROC and AUPRC on ``held_out`` with percentile 95% CIs from ``--bootstrap``
  patient-level resamples;
* ``--shots N``: N positive and N negative training rows per draw (``--draws`` seeded draws),
  C chosen on N per class from ``tuning`` (fixed at 1.0 for N <= 4); mean and sd over draws.
  An N larger than the train split's smaller class is an error here.

Errors (exit 2, nothing written): a missing file or column (named), labels that match no
embedding row (with how many of each matched), a single-class label, a split without both
classes, an N larger than the class size. ``--json`` is written atomically, and only when
everything succeeded. This module only parses the arguments, calls the library and prints or
writes its result.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "render", "run"]


# --------------------------------------------------------------------------- arguments
def _int_at_least(minimum: int, expected: str) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``; errors read "expected {expected}, got ..."."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")
_shots = _int_at_least(1, "'all' or a positive integer")


class _RenamedFlag(argparse.Action):
    """A flag that is not (or no longer) this command's: a usage error naming the right one."""

    def __init__(self, *args: Any, new_flag: str, **kwargs: Any) -> None:
        self.new_flag = new_flag
        super().__init__(*args, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        parser.error(
            f"{self.option_strings[0]} is the subspace dimension in densefeat; probe's k-shot "
            f"sizes are {self.new_flag} (e.g. {self.new_flag} all 1 2 4 8)"
        )


def _k_value(text: str) -> str | int:
    return "all" if text == "all" else _shots(text)


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
        "--shots",
        nargs="+",
        type=_k_value,
        default=["all"],
        metavar="all|N",
        help="'all' (full training split) and/or shots per class, e.g. --shots all 1 2 4 8 16 "
        "32 64 128 (default: all)",
    )
    # --k is the subspace dimension in every other command; here it would mean something else,
    # so it is refused with a pointer instead of being silently taken as the shot sizes.
    parser.add_argument(
        "--k", nargs="+", action=_RenamedFlag, help=argparse.SUPPRESS, new_flag="--shots"
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
        "--test-embeddings",
        type=Path,
        default=None,
        metavar="FILE",
        help="external validation: a second site's embeddings (same encoder); the probe fitted "
        "on --embeddings' train split is tested on every labelled row of this file, beside "
        "that site's own cross-fitted probe",
    )
    parser.add_argument(
        "--test-labels",
        type=Path,
        default=None,
        metavar="FILE",
        help="MEDS labels of --test-embeddings (default: --labels)",
    )
    parser.add_argument(
        "--json",
        metavar="OUT",
        help="also write the results as JSON (only if the whole run succeeds)",
    )


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


def external_line(ext: dict[str, Any]) -> str:
    """One line: transfer, within-site and drop AUROC with CIs, on how many rows."""

    def ci(key: str) -> str:
        c = ext.get(key)
        return f" [{_num(c[0])}, {_num(c[1])}]" if c else ""

    return (
        f"external validation on {ext['n_b']} rows ({ext['n_b_subjects']} subjects, "
        f"{ext['n_pos_b']} positive): transfer AUROC {_num(ext['transfer_auroc'])}"
        f"{ci('transfer_auroc_ci')}, AUPRC {_num(ext['transfer_auprc'])}; within-site "
        f"({ext['folds_b']}-fold cross-fitted) AUROC {_num(ext['within_auroc'])}"
        f"{ci('within_auroc_ci')}; drop {_num(ext['auroc_drop'])}{ci('auroc_drop_ci')}"
    )


# --------------------------------------------------------------------------- entry point
def run(args: argparse.Namespace) -> int:
    """Run ``densefeat probe``; user errors surface as ``ValueError``/``FileNotFoundError``."""
    from ..eval.probe.files import probe_files
    from ..io.atomic import check_json_target, to_json_safe, write_json_atomic

    out = check_json_target(args.json) if args.json else None
    for flag, path in (("--embeddings", args.embeddings), ("--labels", args.labels)):
        if not Path(path).exists():
            raise FileNotFoundError(f"{flag} {path}: no such file or directory")
    result = probe_files(
        args.embeddings,
        args.labels,
        key=args.key,
        ks=args.shots,
        draws=args.draws,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        split_seed=args.split_seed,
        whitened=args.whiten,
    )
    render(result)
    if args.test_embeddings is not None:
        from ..eval.external import external_files

        ext = external_files(
            args.embeddings,
            args.labels,
            args.test_embeddings,
            args.test_labels,
            key=args.key,
            n_bootstrap=args.bootstrap,
            seed=args.seed,
            split_seed=args.split_seed,
        )
        result["external"] = ext
        print(external_line(ext))
    if out is not None:
        write_json_atomic(out, to_json_safe(result))
        print(f"densefeat probe: wrote {out}", file=sys.stderr)
    return 0
