"""The k-shot linear probe (EHRSHOT's few-shot protocol).

For k in 1, 2, 4, 8, 16, 32, 64, 128 *per class* (:data:`K_SHOTS`), 5 seeded draws each of k
positive and k negative training rows (distinct patients where possible, see
:func:`sample_k_shot`) and a validation set of the same k per class from ``tuning``; at
k <= 4 there is no selection ("no CV at k <= 4") and C is fixed at 1.0 (:data:`FIXED_C`).
Reported: mean and standard deviation over the R draws of the held-out AUROC and AUPRC,

    ``AUROC_k = (1/R) sum_r AUROC_{k,r}``,
    ``sd_k = sqrt(sum_r (AUROC_{k,r} - AUROC_k)^2 / (R - 1))``.

Two input forms, as for the full-data probe: :func:`kshot_probe` on pre-split arrays,
:func:`probe_k_shot` on one table of rows with a split and subject column.

Standardisation: the features are standardised with the mean/std of *all* rows of the train
split (label-free, the same for every k and draw), not with the 2k shots: with 2 rows the
per-feature std is ``|x_1 - x_2| / 2`` and dividing by it amplifies exactly the features in
which the two shots happen to agree. EHRSHOT fits its scaler (MaxAbsScaler) on the shots; ours
is a documented deviation.

References:
    Wornow, M., Thapa, R., Steinberg, E., Fries, J. A. & Shah, N. H. (2023). EHRSHOT: An EHR
    Benchmark for Few-Shot Evaluation of Foundation Models. NeurIPS Datasets and Benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...data.splits import SPLIT_NAMES
from ..checks import as_binary, as_matrix
from ..ranking import weighted_auroc, weighted_average_precision
from .estimator import (
    DEFAULT_CS,
    LinearProbe,
    _constant_features,
    blas_threads,
    standardization_stats,
)
from .inputs import check_eval_weights, check_part, check_split_table, require_classes

__all__ = [
    "FIXED_C",
    "K_SHOTS",
    "MAX_K_WITHOUT_SELECTION",
    "kshot_probe",
    "probe_k_shot",
    "sample_k_shot",
]

#: Shots per class of the k-shot protocol.
K_SHOTS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
#: C used where there is no selection (k <= MAX_K_WITHOUT_SELECTION, or no validation rows).
FIXED_C = 1.0
#: Largest k without C selection ("no CV at k <= 4").
MAX_K_WITHOUT_SELECTION = 4


def _draw_rows(
    rows: np.ndarray, groups: np.ndarray, k: int, rng: np.random.Generator, avoid: np.ndarray
) -> np.ndarray:
    """k of ``rows``: one row per subject first, subjects not in ``avoid`` first, else random."""
    cand = rows[rng.permutation(rows.size)]
    g = groups[cand]
    order = np.argsort(g, kind="stable")  # stable: keeps the random order within a subject
    gs = g[order]
    starts = np.flatnonzero(np.concatenate(([True], gs[1:] != gs[:-1])))
    lengths = np.diff(np.append(starts, gs.size))
    rank = np.empty(cand.size, dtype=np.intp)
    rank[order] = np.arange(gs.size) - np.repeat(starts, lengths)
    reused = np.isin(g, avoid)
    # lexsort: the last key is the primary one.
    pick = np.lexsort((np.arange(cand.size), reused, rank))[:k]
    return cand[pick]


def sample_k_shot(
    y: Any,
    groups: Any,
    k: int,
    rng: np.random.Generator,
    rows: Any | None = None,
    avoid: Any = (),
    k_neg: int | None = None,
) -> np.ndarray:
    """Draw k positive and k negative rows, from distinct patients where possible.

    Within each class the candidate rows are shuffled, then ranked by (how many rows of the
    same subject come before it in the shuffled order, whether its subject is already used,
    shuffled position), and the first k are taken. So a draw takes one row per subject while
    the class has at least k subjects, prefers subjects not used by the other class (or listed
    in ``avoid``), and takes a second row of a subject only when the class has fewer than k
    distinct subjects. Positives are drawn first, then negatives avoiding their subjects.

    Args:
        y: (n,) binary labels. groups: (n,) subject ids.
        k: positive shots (and negative shots unless ``k_neg`` is given).
        rng: the generator (the protocol seeds one per (seed, k, draw)).
        rows: candidate row indices (default: all rows).
        avoid: subjects to use only when nothing else is left.
        k_neg: negative shots, if different from k.

    Returns:
        (k + k_neg,) row indices: the positives, then the negatives.

    Raises:
        ValueError: more shots than candidate rows of a class.
    """
    yb = as_binary(y, np.asarray(y).shape[0])
    groups = np.asarray(groups)
    rows = np.arange(yb.size) if rows is None else np.asarray(rows, dtype=np.intp)
    pos_rows, neg_rows = rows[yb[rows]], rows[~yb[rows]]
    k_neg = k if k_neg is None else k_neg
    if k < 0 or k_neg < 0 or k > pos_rows.size or k_neg > neg_rows.size:
        raise ValueError(
            f"{k} positive and {k_neg} negative shots requested, but the rows hold "
            f"{pos_rows.size} positive and {neg_rows.size} negative rows"
        )
    avoid_arr = np.asarray(avoid, dtype=groups.dtype) if len(avoid) else groups[:0]
    pos = _draw_rows(pos_rows, groups, k, rng, avoid_arr)
    neg = _draw_rows(neg_rows, groups, k_neg, rng, np.concatenate([avoid_arr, groups[pos]]))
    return np.concatenate([pos, neg])


def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample sd (ddof=1; None for one value) of the per-draw metrics."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else None)


def _skipped_k(k: int, reason: str) -> dict[str, Any]:
    """The record of a k that cannot be drawn (see :func:`kshot_probe`'s Returns)."""
    return {
        "k": k,
        "n_draws": 0,
        "auroc": None,
        "auroc_ci": None,
        "auroc_sd": None,
        "auprc": None,
        "auprc_ci": None,
        "auprc_sd": None,
        "C": None,
        "selection": None,
        "skipped": True,
        "reason": reason,
        "draws": [],
    }


def kshot_probe(
    X_train: Any,
    y_train: Any,
    groups_train: Any,
    X_val: Any,
    y_val: Any,
    groups_val: Any,
    X_test: Any,
    y_test: Any,
    *,
    ks: Sequence[int] = K_SHOTS,
    draws: int = 5,
    seed: int = 0,
    weights: Any | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    fixed_C: float = FIXED_C,
    max_k_without_selection: int = MAX_K_WITHOUT_SELECTION,
    max_iter: int = 1000,
) -> list[dict[str, Any]]:
    """The k-shot linear probe on pre-split arrays (docs/design.md; EHRSHOT's few-shot protocol).

    For every k and draw ``r``, with ``numpy.random.default_rng([seed, k, r])`` (so a draw
    depends neither on which other k are run nor on X: every method gets the same shots of
    the same rows):

    1. k positive + k negative training rows (:func:`sample_k_shot`: distinct patients where
       possible);
    2. for k > ``max_k_without_selection``: a validation set of the same k per class from the
       tuning rows (capped at what each class has there; distinct patients where possible)
       and C chosen on it by AUROC; for k <= 4 no selection ("no CV at k <= 4"), C =
       ``fixed_C`` (1.0);
    3. the probe is fitted on the 2k shots, with features standardised by the mean/std of
       *all* training rows (label-free, the same for every k and draw; see the module
       docstring), and evaluated on every test row: AUROC and AUPRC (weighted by ``weights``
       if given).

    A k larger than the training rows' smaller class is skipped with the reason (not an
    error).

    Args:
        X_train, y_train, groups_train: training rows, labels, subject ids.
        X_val, y_val, groups_val: tuning rows, labels, subject ids.
        X_test, y_test: held-out rows and labels (both classes needed).
        ks: shots per class (1, 2, ..., 128).
        draws: draws per k (5).
        seed: seed of the draws.
        weights: (n_test,) evaluation weights, or None.
        Cs: C grid for k > max_k_without_selection.
        fixed_C: C without selection.
        max_k_without_selection: the largest k with a fixed C (4).
        max_iter: lbfgs iteration cap.

    Returns:
        one record per k, in the order of ``ks``: ``k``, ``n_draws``, ``auroc`` (mean over
        draws), ``auroc_sd`` (sd over draws, ddof=1; None for one draw), ``auroc_ci`` (None:
        the spread is the sd), the same for ``auprc``, ``C`` (``fixed_C``, or None when chosen
        per draw), ``selection`` (how C was set), ``skipped`` and ``reason`` (why a k was
        skipped), ``n_uninformative_draws`` (draws whose 2k shots are equal in every feature:
        no probe can be fitted, so every test row gets the same score, AUROC 0.5), and
        ``draws`` (per draw: ``draw``, ``auroc``, ``auprc``, ``C``, ``val_auroc``,
        ``n_train``, ``n_train_subjects``, ``n_val``, ``converged``, and ``uninformative``
        on such a draw).

    Raises:
        ValueError: bad input, test rows without both classes, a non-positive k or draws.
    """
    Xtr = as_matrix(X_train, "X_train")
    ytr = as_binary(y_train, Xtr.shape[0], "y_train")
    gtr = np.asarray(groups_train)
    if gtr.shape != ytr.shape:
        raise ValueError(f"groups_train must have shape {ytr.shape}, got {gtr.shape}")
    Xva = as_matrix(X_val, "X_val") if np.size(y_val) else np.zeros((0, Xtr.shape[1]))
    yva = as_binary(y_val, Xva.shape[0], "y_val")
    gva = np.asarray(groups_val)
    if gva.shape != yva.shape:
        raise ValueError(f"groups_val must have shape {yva.shape}, got {gva.shape}")
    Xte, yte = check_part(X_test, y_test, "test", Xtr.shape[1])
    if Xva.shape[1] != Xtr.shape[1]:
        raise ValueError(f"X_val has {Xva.shape[1]} features, X_train has {Xtr.shape[1]}")
    w = check_eval_weights(weights, yte.size)
    if isinstance(draws, bool) or not isinstance(draws, int | np.integer) or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    bad_k = [k for k in ks if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1]
    if bad_k:
        raise ValueError(f"ks must be positive integers, got {bad_k}")
    mean, scale = standardization_stats(Xtr)
    Ztr, Zva, Zte = ((A - mean) / scale for A in (Xtr, Xva, Xte))
    with blas_threads(Ztr.size):
        return _kshot_loop(
            Ztr,
            ytr,
            gtr,
            Zva,
            yva,
            gva,
            Zte,
            yte,
            w,
            ks,
            int(draws),
            seed,
            Cs,
            fixed_C,
            max_k_without_selection,
            max_iter,
        )


def _all_constant(Z: np.ndarray) -> bool:
    """Every feature of the rows constant (the estimator's own rule): nothing to fit."""
    return bool(_constant_features(Z.mean(axis=0), Z.std(axis=0)).all())


def _uninformative_draw(
    r: int,
    shots: np.ndarray,
    gtr: np.ndarray,
    Zte: np.ndarray,
    yte: np.ndarray,
    w: np.ndarray | None,
) -> dict[str, Any]:
    """A draw whose shots are identical in every feature: one constant score for every row."""
    scores = np.zeros(Zte.shape[0])
    return {
        "draw": r,
        "auroc": weighted_auroc(scores, yte, w),
        "auprc": weighted_average_precision(scores, yte, w),
        "C": None,
        "val_auroc": None,
        "n_train": int(shots.size),
        "n_train_subjects": int(np.unique(gtr[shots]).size),
        "n_val": 0,
        "converged": True,
        "uninformative": True,
    }


def _kshot_loop(
    Ztr: np.ndarray,
    ytr: np.ndarray,
    gtr: np.ndarray,
    Zva: np.ndarray,
    yva: np.ndarray,
    gva: np.ndarray,
    Zte: np.ndarray,
    yte: np.ndarray,
    w: np.ndarray | None,
    ks: Sequence[int],
    draws: int,
    seed: int,
    Cs: Sequence[float],
    fixed_C: float,
    max_k_without_selection: int,
    max_iter: int,
) -> list[dict[str, Any]]:
    """:func:`kshot_probe`'s draws and records, on checked and standardised (``Z``) rows."""
    n_pos, n_neg = int(ytr.sum()), int((~ytr).sum())
    val_pos, val_neg = int(yva.sum()), int((~yva).sum())
    records: list[dict[str, Any]] = []
    for k in (int(k) for k in ks):
        if k > min(n_pos, n_neg):
            reason = (
                f"k={k} exceeds the train split's smaller class ({n_pos} positive, "
                f"{n_neg} negative rows)"
            )
            records.append(_skipped_k(k, reason))
            continue
        select = k > max_k_without_selection
        if select and (val_pos == 0 or val_neg == 0):
            select = False
            selection = (
                f"fixed C={fixed_C}: the tuning rows have {val_pos} positive and {val_neg} "
                "negative labels, so C cannot be chosen by AUROC"
            )
        elif select:
            selection = f"validation AUROC on up to {k} tuning rows per class"
        else:
            selection = f"fixed C={fixed_C} (no selection at k <= {max_k_without_selection})"
        per_draw = []
        for r in range(draws):
            rng = np.random.default_rng([seed, k, r])
            shots = sample_k_shot(ytr, gtr, k, rng)
            if _all_constant(Ztr[shots]):
                # The shots cannot be told apart (e.g. two ICU stays with the same code
                # counts at hour 6): the probe has nothing to learn and ranks every test row
                # alike, AUROC 0.5 by ties. A draw, not the benchmark, pays for it.
                per_draw.append(_uninformative_draw(r, shots, gtr, Zte, yte, w))
                continue
            if select:
                val = sample_k_shot(yva, gva, min(k, val_pos), rng, k_neg=min(k, val_neg))
                probe = LinearProbe(C=None, Cs=Cs, standardize=False, max_iter=max_iter)
                probe.fit(Ztr[shots], ytr[shots], Zva[val], yva[val])
            else:
                val = shots[:0]
                probe = LinearProbe(C=fixed_C, standardize=False, max_iter=max_iter)
                probe.fit(Ztr[shots], ytr[shots])
            scores = probe.decision_function(Zte)
            per_draw.append(
                {
                    "draw": r,
                    "auroc": weighted_auroc(scores, yte, w),
                    "auprc": weighted_average_precision(scores, yte, w),
                    "C": probe.C_,
                    "val_auroc": probe.val_auroc_,
                    "n_train": int(shots.size),
                    "n_train_subjects": int(np.unique(gtr[shots]).size),
                    "n_val": int(val.size),
                    "converged": bool(probe.converged_),
                }
            )
        uninformative = sum(bool(d.get("uninformative")) for d in per_draw)
        auroc, auroc_sd = _mean_sd([d["auroc"] for d in per_draw])
        auprc, auprc_sd = _mean_sd([d["auprc"] for d in per_draw])
        records.append(
            {
                "k": k,
                "n_draws": draws,
                "auroc": auroc,
                "auroc_ci": None,
                "auroc_sd": auroc_sd,
                "auprc": auprc,
                "auprc_ci": None,
                "auprc_sd": auprc_sd,
                "C": None if select else fixed_C,
                "selection": selection,
                "skipped": False,
                "reason": None,
                "n_uninformative_draws": uninformative,
                "draws": per_draw,
            }
        )
    return records


def probe_k_shot(
    X: Any,
    y: Any,
    split: Any,
    groups: Any,
    *,
    ks: Sequence[int] = K_SHOTS,
    draws: int = 5,
    seed: int = 0,
    weights: Any | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    fixed_C: float = FIXED_C,
    max_k_without_selection: int = MAX_K_WITHOUT_SELECTION,
    max_iter: int = 1000,
) -> list[dict[str, Any]]:
    """:func:`kshot_probe` on one table of rows that carry their split and subject.

    Args:
        X: (n, d) embeddings. y: (n,) binary labels. split: (n,) split names.
        groups: (n,) subject ids (a subject in two splits is an error).
        weights: (n,) evaluation weights (only the held_out rows' are used), or None.
        ks, draws, seed, Cs, fixed_C, max_k_without_selection, max_iter: as
            :func:`kshot_probe`.

    Returns:
        :func:`kshot_probe`'s records.
    """
    X, split, groups = check_split_table(X, split, groups)
    yb = as_binary(y, X.shape[0])
    require_classes(yb, split, ["held_out"], "probe_k_shot")
    if not (split == "train").any():
        raise ValueError("probe_k_shot: the train split is empty")
    w = check_eval_weights(weights, X.shape[0])
    tr, tu, te = (split == s for s in SPLIT_NAMES)
    return kshot_probe(
        X[tr],
        yb[tr],
        groups[tr],
        X[tu],
        yb[tu],
        groups[tu],
        X[te],
        yb[te],
        ks=ks,
        draws=draws,
        seed=seed,
        weights=None if w is None else w[te],
        Cs=Cs,
        fixed_C=fixed_C,
        max_k_without_selection=max_k_without_selection,
        max_iter=max_iter,
    )
