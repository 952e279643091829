"""Seeded stochastic views of an :class:`~densefeat.data.ehr.EventBatch` (EHR part).

For the self-supervised baselines (SimCLR, VICReg, Barlow Twins) and robustness checks. Every
view is a pure function ``(batch, ..., generator) -> EventBatch``:

* randomness comes only from the explicit ``torch.Generator`` (CPU; the draws are moved to the
  batch's device), so the same seed gives the same view on any device;
* only real events are dropped or changed: padding stays zero, ``mask`` stays left-padded, and
  nothing is ever added, so no event after the prediction time can appear
  (``time_before_prediction`` of kept events is unchanged);
* a row with at least one event keeps at least one; a row with none stays empty;
* ``subject_id``, ``prediction_time``, ``static`` and ``age_known`` are unchanged.

After dropping events, ``delta_t`` of each kept event is recomputed against the nearest *kept*
earlier event of its row (what the view shows the model); the earliest kept event keeps its
original ``delta_t`` (time since its predecessor in the full record).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from .batch import UNK_ID, EventBatch

__all__ = [
    "event_dropout",
    "keep_events",
    "keyed_uniforms",
    "numeric_noise",
    "random_view",
    "time_crop",
    "unknown_codes",
]


def _uniform(batch: EventBatch, generator: torch.Generator) -> torch.Tensor:
    """(B, L) uniform draws from ``generator`` (on its device), moved to the batch's device."""
    u = torch.rand(batch.codes.shape, generator=generator, device=generator.device)
    return u.to(batch.codes.device)


def keep_events(batch: EventBatch, keep: torch.Tensor) -> EventBatch:
    """The batch with only the events where ``keep & mask``, re-packed to left padding.

    Args:
        batch: the input batch.
        keep: (B, L) bool; positions outside ``mask`` are ignored.

    Returns:
        a new batch of the same shape; ``delta_t`` recomputed as the module docstring says.
    """
    keep = keep & batch.mask
    # A stable sort of the keep flags puts dropped/padded positions first and kept events last,
    # each group in its original (time) order: exactly the left-padded layout.
    order = torch.sort(keep.to(torch.int8), dim=1, stable=True).indices
    new_mask = torch.gather(keep, 1, order)
    out = {}
    for name in batch.position_fields():
        if name == "mask":
            continue
        value = getattr(batch, name)
        if value.ndim == 3:  # hour tokens' (B, L, V) fields move with their position
            field = torch.gather(value, 1, order.unsqueeze(-1).expand_as(value))
            out[name] = torch.where(
                new_mask.unsqueeze(-1), field, torch.zeros((), dtype=field.dtype)
            )
            continue
        field = torch.gather(value, 1, order)
        out[name] = torch.where(new_mask, field, torch.zeros((), dtype=field.dtype))
    # delta_t of a kept event = the sum of the original gaps since the previous kept event
    # (float64 cumulative sums: exact for the unchanged neighbours, no rounding drift).
    cum = torch.cumsum(batch.delta_t.to(torch.float64), dim=1)
    cum_kept = torch.gather(cum, 1, order)
    prev_real = torch.zeros_like(new_mask)
    prev_real[:, 1:] = new_mask[:, :-1]
    gap = torch.zeros_like(cum_kept)
    gap[:, 1:] = cum_kept[:, 1:] - cum_kept[:, :-1]
    recomputed = torch.where(prev_real & new_mask, gap.to(out["delta_t"].dtype), out["delta_t"])
    out["delta_t"] = recomputed
    return replace(batch, mask=new_mask, **out)


def _ensure_one(batch: EventBatch, keep: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``keep`` plus, for rows with events but none kept, one of them chosen by ``u``."""
    empty = ~(keep & batch.mask).any(dim=1) & batch.mask.any(dim=1)
    if not empty.any():
        return keep
    # The real event with the largest draw: uniform over the row's events, same generator.
    pick = torch.where(batch.mask, u, torch.full_like(u, -1.0)).argmax(dim=1)
    rescue = torch.zeros_like(keep)
    rescue[torch.arange(keep.shape[0], device=keep.device), pick] = True
    return keep | (rescue & empty[:, None])


def event_dropout(batch: EventBatch, p: float, generator: torch.Generator) -> EventBatch:
    """Drop each real event independently with probability ``p`` (at least one kept per row).

    Args:
        batch: the input batch.
        p: drop probability in [0, 1).
        generator: the source of randomness.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    u = _uniform(batch, generator)
    keep = _ensure_one(batch, u >= p, u)
    return keep_events(batch, keep)


def time_crop(batch: EventBatch, min_fraction: float, generator: torch.Generator) -> EventBatch:
    """Keep a random contiguous span of each row's events (a contiguous stretch of time).

    The span length is uniform on ``ceil(min_fraction * n) .. n`` events (at least 1) and its
    start uniform over the positions where it fits; ``n`` is the row's number of events. The
    prediction time is unchanged: a span that ends early is an earlier stretch of the record
    seen from the same prediction time.

    Args:
        batch: the input batch.
        min_fraction: least fraction of the row's events kept, in (0, 1].
        generator: the source of randomness.
    """
    if not 0.0 < min_fraction <= 1.0:
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction}")
    n = batch.lengths
    draws = torch.rand((2, n.shape[0]), generator=generator, device=generator.device)
    draws = draws.to(n.device)
    lo = torch.clamp(torch.ceil(min_fraction * n.to(torch.float64)).to(torch.int64), min=1)
    lo = torch.minimum(lo, n)
    length = lo + torch.floor(draws[0] * (n - lo + 1).to(torch.float64)).to(torch.int64)
    length = torch.minimum(length, n)
    offset = torch.floor(draws[1] * (n - length + 1).to(torch.float64)).to(torch.int64)
    offset = torch.minimum(offset, n - length)
    # Event j of a row (0 = oldest) sits at position L - n + j.
    j = torch.arange(batch.seq_len, device=n.device)[None, :] - (batch.seq_len - n)[:, None]
    keep = (j >= offset[:, None]) & (j < (offset + length)[:, None])
    return keep_events(batch, keep)


def numeric_noise(batch: EventBatch, std: float, generator: torch.Generator) -> EventBatch:
    """Add Gaussian noise of standard deviation ``std`` to normalised values (where present).

    Events without a value and padding are untouched, so ``has_value`` keeps its meaning.
    """
    if std < 0:
        raise ValueError(f"noise std must be >= 0, got {std}")
    noise = torch.randn(batch.values.shape, generator=generator, device=generator.device)
    noise = noise.to(batch.values.device, batch.values.dtype)
    where = batch.has_value & batch.mask
    out = replace(batch, values=torch.where(where, batch.values + std * noise, batch.values))
    if batch.is_binned:
        bin_noise = torch.randn(
            batch.bin_values.shape, generator=generator, device=generator.device
        ).to(batch.bin_values.device)
        noisy = batch.bin_values + std * bin_noise
        out = replace(out, bin_values=torch.where(batch.bin_mask, noisy, batch.bin_values))
    return out


def random_view(
    batch: EventBatch,
    generator: torch.Generator,
    *,
    dropout: float = 0.1,
    crop: float | None = 0.5,
    noise: float = 0.1,
) -> EventBatch:
    """The default augmentation chain: time crop, then event dropout, then numeric noise.

    Args:
        batch: the input batch.
        generator: the source of randomness (two calls with one generator give two views).
        dropout: event dropout probability (0 to skip).
        crop: ``min_fraction`` of the time crop (None to skip).
        noise: numeric noise std (0 to skip).
    """
    out = batch
    if crop is not None:
        out = time_crop(out, crop, generator)
    if dropout > 0:
        out = event_dropout(out, dropout, generator)
    if noise > 0:
        out = numeric_noise(out, noise, generator)
    return out


def keyed_uniforms(keys: np.ndarray, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Uniforms in [0, 1) of shape ``(k, B, n)``, a function of ``(seed, key, position)``.

    Each row's draws depend only on its key (e.g. the row's global index and the step), never
    on the row's position in the batch, so a batch split over DDP ranks draws exactly what one
    process draws (splitmix64 of ``seed``, key and position; exact in uint64 arithmetic).

    Args:
        keys: (B,) int64 row keys.
        shape: ``(k, n)``: ``k`` draws for each of ``n`` positions.
        seed: the run's seed.
    """
    k, n = shape
    keys = np.asarray(keys, dtype=np.int64).astype(np.uint64)
    pos = np.arange(k * n, dtype=np.uint64).reshape(k, 1, n)
    with np.errstate(over="ignore"):
        x = (
            np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
            + keys[None, :, None] * np.uint64(0xBF58476D1CE4E5B9)
            + pos * np.uint64(0x94D049BB133111EB)
        )
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return torch.from_numpy((x >> np.uint64(40)).astype(np.float32) / float(1 << 24))


def unknown_codes(
    batch: EventBatch, rate: float, parent_ids: torch.Tensor, draws: torch.Tensor
) -> EventBatch:
    """Replace a share ``rate`` of real events' codes by their parent or by ``UNK`` (training).

    Why: every training code passes the vocabulary's cut-off, so without this the ``UNK`` and
    parent embeddings, which unseen codes at another hospital map to, would never be trained
    (they would keep their random initial values). Each real event is picked independently with
    probability ``rate``; a picked event becomes its parent code (``parent_ids[code]``) with
    probability 1/2 where the vocabulary has a parent, and ``UNK`` otherwise. Values, times and
    the mask are unchanged (an unseen lab still has its value), so nothing is added or moved.

    Hour tokens (:attr:`EventBatch.is_binned`): the encoder reads an hour's measurements from
    ``bin_values`` / ``bin_mask``, not from ``codes``, so the same rule acts on each measured
    ``(hour, variable)`` of the bins instead: a picked measurement moves, with its value, from
    column ``v`` to column ``parent_ids[v]`` (probability 1/2 where there is a parent) or
    ``UNK``; ``v`` becomes missing in that hour. When the target column is already measured
    in that hour (and not itself picked) it keeps its own value; when several picked variables
    of one hour land on one column, the highest variable id's value wins (deterministic).
    ``draws`` is then (2, B, L, V) (or (2, B, L * V)).

    Args:
        batch: the input batch.
        rate: share of real events replaced, in [0, 1).
        parent_ids: (vocab_size,) int64, :meth:`Vocabulary.parent_ids` (``UNK_ID`` where none).
        draws: (2, B, L) uniforms in [0, 1) (:func:`keyed_uniforms`, or ``torch.rand``);
            (2, B, L, V) for hour tokens.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"unk rate must be in [0, 1), got {rate}")
    if rate == 0.0:
        return batch
    if batch.is_binned:
        return _unknown_measurements(batch, rate, parent_ids, draws)
    if tuple(draws.shape) != (2, *batch.codes.shape):
        raise ValueError(f"draws: shape {tuple(draws.shape)}, want (2, B, L)")
    draws = draws.to(batch.codes.device)
    picked = batch.mask & (draws[0] < rate)
    parent = parent_ids.to(batch.codes.device)[batch.codes]
    to_parent = (parent != UNK_ID) & (draws[1] < 0.5)
    new = torch.where(to_parent, parent, torch.full_like(parent, UNK_ID))
    return replace(batch, codes=torch.where(picked, new, batch.codes))


def _unknown_measurements(
    batch: EventBatch, rate: float, parent_ids: torch.Tensor, draws: torch.Tensor
) -> EventBatch:
    """:func:`unknown_codes` on hour tokens: measurements move to the parent/``UNK`` column."""
    shape = tuple(batch.bin_values.shape)
    if draws.ndim == 3 and draws.shape[-1] == shape[1] * shape[2]:
        draws = draws.reshape(2, *shape)
    if tuple(draws.shape) != (2, *shape):
        raise ValueError(f"draws: shape {tuple(draws.shape)}, want (2, B, L, V)={(2, *shape)}")
    draws = draws.to(batch.bin_values.device)
    measured = batch.bin_mask
    picked = measured & (draws[0] < rate)
    var = torch.arange(shape[2], device=measured.device)
    parent = parent_ids.to(measured.device)[var].expand(shape)  # (B, L, V)
    to_parent = (parent != UNK_ID) & (draws[1] < 0.5)
    target = torch.where(to_parent, parent, torch.full_like(parent, UNK_ID))
    # Per target column, the highest picked source variable moved there (-1: none).
    source = torch.where(picked, var.expand(shape), torch.full_like(parent, -1))
    winner = torch.full_like(parent, -1).scatter_reduce(
        -1, target, source, reduce="amax", include_self=True
    )
    moved = winner >= 0
    moved_value = batch.bin_values.gather(-1, winner.clamp_min(0))
    stays = measured & ~picked
    zero = torch.zeros((), dtype=batch.bin_values.dtype, device=measured.device)
    values = torch.where(stays, batch.bin_values, torch.where(moved, moved_value, zero))
    return replace(batch, bin_values=values, bin_mask=stays | moved)
