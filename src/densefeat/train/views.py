"""What the two sides of an EHR pair are (``data.pairs``): windows, views, or both.

The dense objective and the pair baselines learn what the two sides of a pair share
(docs/design.md, Objectives). Three choices of pair for patient histories:

* ``"windows"``: the history of one subject at ``t`` and at ``t1 = t + window_days``
  (:func:`~densefeat.data.ehr.windows.window_pairs`); one causal encoder pass embeds both
  cut-offs. What is shared is what persists over ``window_days`` (often the patient himself).
* ``"views"``: two random views of the SAME history at ``t1`` (SimCLR-style for EHR;
  :func:`~densefeat.data.ehr.views.random_view`: a contiguous time crop keeping at least
  ``view_crop`` of the events, event dropout ``view_dropout``, Gaussian noise ``view_noise`` on
  normalised values). What is shared is what survives losing part of the record. A view only
  drops events or perturbs values: no event is added or moved, so no event after the
  prediction time can appear, and row ``i`` of both views is the subject of pair row ``i``.
  It costs two encoder passes (2B rows) instead of one.
* ``"mixed"``: steps alternate, even steps windows and odd steps views (one kind per step, so
  each step's batch statistics compare like with like).
* ``"future"``: the history at ``t`` against ONLY the events of the next window ``(t, t1]``
  (:func:`future_pair`), without the static values. The two sides share no event, so what
  they share is what the past predicts about the next window's content (the pairing of
  contrastive predictive coding, van den Oord et al. 2018, here for the non-contrastive dense
  objective), not the record they have in common: ``"windows"`` pairs overlap (the history
  at ``t1`` contains the one at ``t``), which rewards features that do not change. It costs
  two encoder passes, like views. Only events before ``t1`` enter, and the representation
  used downstream is still that of a whole history at its prediction time.

The view draws come from a CPU generator seeded by ``(seed, step, first row index)``: a step
gives the same views when it is re-run (an exact resume), and ranks of a DDP run (different
rows) draw independently. A DDP step's views are not the single-process step's views (the
draws are per rank), so DDP-vs-single equality holds for ``windows`` and ``future``, which
draw nothing (tests/test_train.py).
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import numpy as np
import torch

from ..data.ehr.batch import EventBatch
from ..data.ehr.views import keep_events, random_view

__all__ = ["cat_batches", "future_pair", "pair_kind", "view_generator", "view_pair"]


def pair_kind(pairs: str, step: int) -> str:
    """``"windows"``, ``"views"`` or ``"future"``: the kind of pair of optimizer step ``step``.

    Raises:
        ValueError: an unknown ``data.pairs`` value.
    """
    if pairs in ("windows", "views", "future"):
        return pairs
    if pairs == "mixed":
        return "windows" if step % 2 == 0 else "views"
    raise ValueError(f"data.pairs must be windows, views, mixed or future, got {pairs!r}")


def view_generator(seed: int, step: int, first_row: int) -> torch.Generator:
    """The CPU generator of one step's views (module docstring)."""
    state = np.random.SeedSequence([int(seed), int(step), int(first_row)]).generate_state(1)
    return torch.Generator().manual_seed(int(state[0]))


def cat_batches(a: EventBatch, b: EventBatch) -> EventBatch:
    """Rows of ``a`` then rows of ``b`` (same ``L`` and ``S``)."""
    return EventBatch(
        **{f.name: torch.cat([getattr(a, f.name), getattr(b, f.name)]) for f in fields(a)}
    )


def view_pair(batch: EventBatch, generator: torch.Generator, data_cfg: Any) -> EventBatch:
    """Two random views of every row of ``batch``, stacked: rows ``0..B-1`` view a, ``B..2B-1``
    view b (row ``i`` and ``B + i`` are the same subject at the same prediction time).

    Args:
        batch: histories cut at their prediction times (CPU).
        generator: the source of randomness (:func:`view_generator`).
        data_cfg: the ``data`` section (``view_dropout``, ``view_crop``, ``view_noise``).
    """
    crop = None if data_cfg.view_crop >= 1.0 else data_cfg.view_crop
    options = {"dropout": data_cfg.view_dropout, "crop": crop, "noise": data_cfg.view_noise}
    a = random_view(batch, generator, **options)
    b = random_view(batch, generator, **options)
    return cat_batches(a, b)


def future_pair(past: EventBatch, later: EventBatch, window_days: torch.Tensor) -> EventBatch:
    """The history at ``t`` and the next window's events alone, stacked (``data.pairs="future"``).

    Rows ``0..B-1`` are ``past`` (histories cut at ``t``) unchanged; rows ``B..2B-1`` keep only
    the events of ``later`` (histories cut at ``t1``) that are later than ``t``, i.e. with
    ``time_before_prediction < t1 - t``, and carry no static values (age, sex and other
    static codes would otherwise be a shared "content" the pair learns trivially). Row ``i``
    and ``B + i`` are the same subject.

    Args:
        past: histories at ``t`` (CPU).
        later: the same subjects' histories at ``t1`` (CPU).
        window_days: (B,) ``t1 - t`` in days (float64 or float32).
    """
    if not torch.equal(past.subject_id, later.subject_id):
        raise ValueError("future_pair: past and later rows are not the same subjects")
    gap = window_days.to(later.time_before_prediction.dtype)
    if (gap <= 0).any():
        raise ValueError("future_pair: window_days must be > 0 in every row")
    window = keep_events(later, later.time_before_prediction < gap[:, None])
    window = replace(
        window,
        static=torch.zeros_like(window.static),
        age_known=torch.zeros_like(window.age_known),
    )
    return cat_batches(past, window)
