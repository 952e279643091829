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

The view draws come from a CPU generator seeded by ``(seed, step, first row index)``: a step
gives the same views when it is re-run (an exact resume), and ranks of a DDP run (different
rows) draw independently. A DDP step's views are not the single-process step's views (the
draws are per rank), so DDP-vs-single equality holds for ``windows`` only.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
import torch

from ..data.ehr.batch import EventBatch
from ..data.ehr.views import random_view

__all__ = ["cat_batches", "pair_kind", "view_generator", "view_pair"]


def pair_kind(pairs: str, step: int) -> str:
    """``"windows"`` or ``"views"``: the kind of pair of optimizer step ``step``.

    Raises:
        ValueError: an unknown ``data.pairs`` value.
    """
    if pairs in ("windows", "views"):
        return pairs
    if pairs == "mixed":
        return "windows" if step % 2 == 0 else "views"
    raise ValueError(f"data.pairs must be windows, views or mixed, got {pairs!r}")


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
