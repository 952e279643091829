"""Test-time perturbations for the robustness evaluation (docs/design.md, "Evaluation protocol").

EHR perturbations are pure seeded functions ``(batch, level, generator, ...) -> EventBatch`` on
an :class:`~densefeat.data.ehr.EventBatch`; text perturbations go through
:func:`densefeat.data.text.views.perturb_texts`. The docs/design.md grid:

=================  ======================  ==================================================
name               levels                  meaning of ``level``
=================  ======================  ==================================================
event_dropout      0.1, 0.3, 0.5           probability that a real event is removed
time_jitter        1 day (EHR), 1/24 (ICU) ``J`` in days: each event moves by ``U[-J, J]``
code_noise         0.1                     probability that an event's code is replaced
token_dropout      0.1, 0.3 (text)         probability that a whitespace token is removed
sentence_dropout   0.1, 0.3 (text)         probability that a sentence is removed
=================  ======================  ==================================================

Guarantees of every EHR perturbation (tested):

* **nothing is ever added** and **no event ends up after the prediction time**: every output
  event is an input event (possibly moved, or with another code), ``time_before_prediction``
  stays ``>= 0`` on every real event, and ``EventBatch.validate()`` passes (left padding,
  zeros on padding);
* deterministic given the randomness source; ``subject_id``, ``prediction_time``, ``static``
  and ``age_known`` are unchanged;
* the identity at level 0.

Hour tokens (``data.tokens=hours``): a batch of hour tokens has lost the time of each
measurement inside its hour, so the robustness step perturbs the **measurements** read from the
store and bins them again (:mod:`densefeat.eval.perturb_hours`, same rules, same draws);
:func:`perturb` on an hour batch only accepts ``event_dropout`` (whole hours).

Randomness. ``generator`` is either a :class:`torch.Generator` (draws of shape ``(B, L)``
consumed in a fixed order, as :mod:`densefeat.data.ehr.views` does: the perturbation of a row
then depends on its position in the batch) or a :class:`KeyedRandom`, a counter-based source
whose uniform draw for an event is a hash of ``(seed, perturbation, subject_id,
prediction_time, rank of the event counted from the most recent)``. With :class:`KeyedRandom`
a row's perturbation does not depend on the batch size, on the row order, on the other rows or
on ``max_len`` (truncation keeps the most recent events, whose ranks do not change), which is
what :func:`densefeat.eval.robustness.embed_perturbed` uses. Two rows with the same subject and
prediction time get the same perturbation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..data.ehr.batch import DAYS_PER_YEAR, N_RESERVED, EventBatch
from ..data.ehr.views import event_dropout as _views_event_dropout
from ..data.ehr.views import keep_events
from ..data.text.views import perturb_texts

__all__ = [
    "EHR_PERTURBATIONS",
    "ICU_PERTURBATIONS",
    "PERTURBATIONS",
    "PERTURBATION_FUNCTIONS",
    "PERTURBATION_LEVELS",
    "TEXT_PERTURBATIONS",
    "KeyedRandom",
    "Randomness",
    "code_noise",
    "event_dropout",
    "keyed_uniforms_of",
    "perturb",
    "perturb_text",
    "perturbation_grid",
    "time_jitter",
]


# --------------------------------------------------------------------------------------------
# Randomness.

_M64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)

#: Stream ids: each perturbation (and each draw inside one) hashes its own stream, so that
#: composing perturbations with one :class:`KeyedRandom` gives independent draws.
_STREAM_DROPOUT = 1
_STREAM_JITTER = 2
_STREAM_CODE_REPLACE = 3
_STREAM_CODE_PICK = 4


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele et al. 2014) on uint64 arrays (wrapping arithmetic)."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def _as_u64(values: np.ndarray | int) -> np.ndarray:
    """Two's-complement reinterpretation of int64 values as uint64 (at least 1-d)."""
    arr = np.atleast_1d(np.asarray(values))
    if arr.dtype != np.uint64:
        arr = (arr.astype(np.int64) if arr.dtype != np.int64 else arr).view(np.uint64)
    return arr


@dataclass(frozen=True)
class KeyedRandom:
    """Counter-based randomness keyed by event identity (see the module docstring).

    The uniform draw of the event at position ``p`` of row ``i`` in stream ``s`` is
    ``u = (h >> 40) / 2**24`` with
    ``h = mix(mix(mix(mix(mix(seed) ^ s) ^ subject_id_i) ^ prediction_time_i) ^ r)``,
    ``mix`` SplitMix64's finaliser and ``r = L - 1 - p`` the rank of the event counted from
    the row's most recent event (0). ``u`` is an exact float32 in ``[0, 1)``. On a batch that
    was just gathered from an :class:`~densefeat.data.ehr.EventStore`, ``r`` identifies
    the event, so the draw is a property of the event, not of the batch.

    Attributes:
        seed: the evaluation seed (any Python int; reduced modulo 2**64).
    """

    seed: int

    def uniform(self, batch: EventBatch, stream: int) -> torch.Tensor:
        """(B, L) float32 uniforms in ``[0, 1)`` on the batch's device."""
        b, seq = batch.codes.shape
        sid = batch.subject_id.detach().cpu().numpy()
        pt = batch.prediction_time.detach().cpu().numpy()
        rank = np.arange(seq - 1, -1, -1, dtype=np.int64)
        u = keyed_uniforms_of(self.seed, stream, sid[:, None], pt[:, None], rank[None, :])
        return torch.from_numpy(u.reshape(b, seq)).to(batch.codes.device)


def keyed_uniforms_of(
    seed: int, stream: int, subject_id: np.ndarray, prediction_time: np.ndarray, rank: np.ndarray
) -> np.ndarray:
    """The :class:`KeyedRandom` uniforms (float32 in ``[0, 1)``) of events given by identity.

    ``subject_id``, ``prediction_time`` (int64 us) and ``rank`` (counted from the row's most
    recent event, 0) broadcast together; the draw of one event is the same number whether it
    is read from an event batch (:meth:`KeyedRandom.uniform`) or from a store
    (:mod:`densefeat.eval.perturb_hours`).
    """
    sid, pt, r = np.broadcast_arrays(
        np.asarray(subject_id, dtype=np.int64),
        np.asarray(prediction_time, dtype=np.int64),
        np.asarray(rank, dtype=np.int64),
    )
    with np.errstate(over="ignore"):
        h = _splitmix64(np.array([int(seed) & _M64], dtype=np.uint64))
        h = _splitmix64(h ^ np.uint64(int(stream) & _M64))
        h = _splitmix64(h ^ _as_u64(sid.ravel()))
        h = _splitmix64(h ^ _as_u64(pt.ravel()))
        h = _splitmix64(h ^ _as_u64(r.ravel()))
    u = (h >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)
    return u.reshape(sid.shape)


#: What the EHR perturbations accept as their source of randomness.
Randomness = torch.Generator | KeyedRandom


def _draw(batch: EventBatch, generator: Randomness, stream: int) -> torch.Tensor:
    """(B, L) float32 uniforms in ``[0, 1)`` from ``generator``, on the batch's device."""
    if isinstance(generator, KeyedRandom):
        return generator.uniform(batch, stream)
    if isinstance(generator, torch.Generator):
        u = torch.rand(batch.codes.shape, generator=generator, device=generator.device)
        return u.to(batch.codes.device)
    raise TypeError(f"generator must be a torch.Generator or KeyedRandom, got {type(generator)}")


def _keep_one(batch: EventBatch, keep: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``keep`` plus, for rows with events but none kept, the real event with the largest ``u``.

    The rule of :func:`densefeat.data.ehr.views.event_dropout`, for the keyed route.
    """
    empty = ~(keep & batch.mask).any(dim=1) & batch.mask.any(dim=1)
    if not bool(empty.any()):
        return keep
    pick = torch.where(batch.mask, u, torch.full_like(u, -1.0)).argmax(dim=1)
    rescue = torch.zeros_like(keep)
    rescue[torch.arange(keep.shape[0], device=keep.device), pick] = True
    return keep | (rescue & empty[:, None])


# --------------------------------------------------------------------------------------------
# EHR perturbations.


def event_dropout(batch: EventBatch, level: float, generator: Randomness) -> EventBatch:
    """Remove each real event independently with probability ``level`` (>= 1 kept per row).

    With a :class:`torch.Generator` this *is* :func:`densefeat.data.ehr.views.event_dropout`
    (same draws, same result). With a :class:`KeyedRandom` the same rule runs on keyed draws:
    event ``j`` is kept iff ``u_j >= level``; a non-empty row whose events would all go keeps
    the one with the largest draw. ``delta_t`` of a kept event becomes the gap to the nearest
    kept earlier event (what the model sees), as in :func:`densefeat.data.ehr.views.keep_events`.

    The number of removed events of a row with ``n`` events is Binomial(n, level), except that
    a row never loses its last event.

    Args:
        batch: the input batch.
        level: removal probability in ``[0, 1)``.
        generator: a :class:`torch.Generator` or a :class:`KeyedRandom`.

    Returns:
        a new, valid batch of the same shape.
    """
    if not 0.0 <= level < 1.0:
        raise ValueError(f"event_dropout level must be in [0, 1), got {level}")
    if isinstance(generator, torch.Generator):
        return _views_event_dropout(batch, level, generator)
    u = _draw(batch, generator, _STREAM_DROPOUT)
    return keep_events(batch, _keep_one(batch, u >= level, u))


def time_jitter(batch: EventBatch, level: float, generator: Randomness) -> EventBatch:
    """Move each event's time by an independent offset ``U[-J, J]`` days, ``J = level``.

    For every real event ``j`` of a row, ``o_j = J (2 u_j - 1)`` (days; ``u_j`` uniform in
    ``[0, 1)``, so ``o_j`` is uniform on ``[-J, J)``) and the new time is ``t_j + o_j``. Then:

    * ``time_before_prediction' = time_before_prediction - o`` (float64, then float32);
    * an event with ``time_before_prediction' < 0`` would now lie **after the prediction time**:
      it cannot be seen at the prediction time, so it is **dropped** (never clamped to the
      prediction time, which would invent an event "now"). A row may lose all its events when
      they all lie within ``J`` of the prediction time (encoders accept empty rows). No event
      is ever added;
    * the kept events are re-sorted by their new times (stable: ties keep their original
      order), left-padded again;
    * ``delta_t`` is recomputed on the new order: for two consecutive kept events ``a, b``,
      ``delta_t'_b = (tau_b + o_b) - (tau_a + o_a)`` with ``tau`` the cumulative sum of the
      original ``delta_t`` (float64; exactly ``delta_t_b + o_b - o_a`` when ``a`` was ``b``'s
      original predecessor, so ``J = 0`` is the exact identity). The row's earliest event keeps
      the meaning "days since the previous event of the full record": if the original earliest
      event had ``delta_t > 0`` (its predecessor lies outside the batch, truncated away; that
      predecessor is not jittered, the batch cannot see it) ``delta_t' = max(0, tau_b + o_b -
      tau_0)`` with ``tau_0`` that predecessor's time; if it had ``delta_t = 0`` (the start of
      the record) the new earliest event gets 0. Negative gaps from float rounding are
      clamped to 0;
    * ``age' = age + o / 365.25`` years where the birth time is known (0 elsewhere). An event
      at birth (``MEDS_BIRTH``) jittered earlier gets an age slightly below 0: the age stays
      the linear function of the (moved) time, the static age at the prediction time is
      unchanged.

    ``J`` is 1 day for EHR and 1 hour (``1/24``) for ICU data (docs/design.md). The float32
    ``time_before_prediction`` resolves 2**-9 day (169 s) at 89 years before the prediction
    time, well below either ``J``.

    Args:
        batch: the input batch.
        level: ``J`` in days, ``>= 0``.
        generator: a :class:`torch.Generator` or a :class:`KeyedRandom`.

    Returns:
        a new, valid batch of the same shape.
    """
    if not (level >= 0.0 and np.isfinite(level)):
        raise ValueError(f"time_jitter level (J in days) must be finite and >= 0, got {level}")
    u = _draw(batch, generator, _STREAM_JITTER)
    mask = batch.mask
    off = torch.where(mask, float(level) * (2.0 * u.to(torch.float64) - 1.0), 0.0)
    tbp = batch.time_before_prediction.to(torch.float64) - off
    keep = mask & (tbp >= 0.0)
    # Sort: dropped and padded positions first, then kept events by new time (= decreasing
    # time before prediction), stable so that ties keep their original order.
    key = torch.where(keep, -tbp, torch.full_like(tbp, -torch.inf))
    order = torch.sort(key, dim=1, stable=True).indices
    new_mask = torch.gather(keep, 1, order)

    def moved(x: torch.Tensor) -> torch.Tensor:
        return torch.gather(x, 1, order)

    zero = torch.zeros((), dtype=torch.float32, device=mask.device)
    out: dict[str, torch.Tensor] = {"mask": new_mask}
    out["codes"] = torch.where(new_mask, moved(batch.codes), torch.zeros_like(batch.codes))
    out["values"] = torch.where(new_mask, moved(batch.values), zero)
    out["has_value"] = moved(batch.has_value) & new_mask
    out["time_before_prediction"] = torch.where(new_mask, moved(tbp).to(torch.float32), zero)
    known = batch.age_known[:, None] & mask
    age = torch.where(known, batch.age.to(torch.float64) + off / DAYS_PER_YEAR, 0.0)
    out["age"] = torch.where(new_mask, moved(age).to(torch.float32), zero)

    # delta_t on the new order.
    delta = batch.delta_t.to(torch.float64)
    tau = torch.cumsum(torch.where(mask, delta, 0.0), dim=1) + off  # jittered, row clock
    seq = batch.seq_len
    prev_order = torch.cat([order[:, :1], order[:, :-1]], dim=1)
    has_prev = torch.zeros_like(new_mask)
    has_prev[:, 1:] = new_mask[:, :-1]
    tau_b, tau_a = moved(tau), torch.gather(tau, 1, prev_order)
    off_b, off_a = moved(off), torch.gather(off, 1, prev_order)
    was_prev = has_prev & (prev_order == order - 1)
    gap = torch.where(was_prev, moved(delta) + off_b - off_a, tau_b - tau_a)
    # Earliest kept event: relative to the original earliest event's predecessor (tau_0).
    n = mask.sum(dim=1, keepdim=True)
    first_pos = (seq - n).clamp_max(seq - 1)
    first_delta = torch.gather(delta, 1, first_pos)  # (B, 1)
    tau_0 = torch.gather(tau - off, 1, first_pos) - first_delta
    is_first_orig = order == first_pos
    first_gap = torch.where(is_first_orig, moved(delta) + off_b, tau_b - tau_0)
    first_gap = torch.where(first_delta > 0, first_gap, torch.zeros_like(first_gap))
    new_delta = torch.where(has_prev, gap, first_gap).clamp_min(0.0)
    out["delta_t"] = torch.where(new_mask, new_delta.to(torch.float32), zero)
    return replace(batch, **out)


def code_noise(
    batch: EventBatch, level: float, generator: Randomness, *, vocab_size: int
) -> EventBatch:
    """Replace each real event's code, with probability ``level``, by another code at random.

    Vocabulary layout (:class:`~densefeat.data.ehr.Vocabulary`): id 0 is ``PAD``, id 1 is
    ``UNK``, ids ``2 .. vocab_size - 1`` are the timed codes kept in training. Static codes
    (events without a time) have no id: they live in ``EventBatch.static`` and are never
    touched. A replaced event gets a code drawn uniformly from the timed codes **other than
    its own** (``vocab_size - 3`` choices; all ``vocab_size - 2`` for an ``UNK`` event), so
    ``level`` is exactly the probability that an event's code changes and ``PAD`` and ``UNK``
    are never produced. With ``u_j, v_j`` uniform in ``[0, 1)``: replaced iff ``u_j < level``;
    new code ``2 + r`` (plus 1 when ``2 + r >= `` the old timed code) with
    ``r = floor(v_j m)``, ``m`` the number of choices.

    A replaced event loses its numeric value (``has_value`` False, ``values`` 0): the
    normalised value belongs to the old code's scale, and a lab value under another code
    (a haemoglobin of 13 read as a creatinine) is not a plausible record. The time fields are
    unchanged.

    Args:
        batch: the input batch.
        level: replacement probability in ``[0, 1]``.
        generator: a :class:`torch.Generator` or a :class:`KeyedRandom`.
        vocab_size: ``len(vocabulary)`` (the encoder's ``config.vocab_size``).

    Returns:
        a new, valid batch of the same shape.
    """
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"code_noise level must be in [0, 1], got {level}")
    n_timed = int(vocab_size) - N_RESERVED
    codes = batch.codes
    if bool((codes >= vocab_size).any()) or bool((codes < 0).any()):
        raise ValueError(f"batch holds code ids outside [0, vocab_size={vocab_size})")
    u = _draw(batch, generator, _STREAM_CODE_REPLACE)
    v = _draw(batch, generator, _STREAM_CODE_PICK)
    replace_ = batch.mask & (u < level)
    timed = codes >= N_RESERVED
    if bool(replace_.any()) and (n_timed < 1 or (n_timed < 2 and bool((replace_ & timed).any()))):
        raise ValueError(
            f"code_noise needs at least 2 timed codes in the vocabulary, got {max(n_timed, 0)}"
        )
    choices = torch.where(timed, n_timed - 1, n_timed).clamp_min(1)
    r = torch.minimum((v.to(torch.float64) * choices).floor().to(torch.int64), choices - 1)
    new = N_RESERVED + r
    new = new + (timed & (new >= codes)).to(torch.int64)
    zero = torch.zeros((), dtype=batch.values.dtype, device=codes.device)
    return replace(
        batch,
        codes=torch.where(replace_, new, codes),
        values=torch.where(replace_, zero, batch.values),
        has_value=batch.has_value & ~replace_,
    )


# --------------------------------------------------------------------------------------------
# Registries.

#: EHR perturbation functions by name.
PERTURBATION_FUNCTIONS: dict[str, Callable[..., EventBatch]] = {
    "event_dropout": event_dropout,
    "time_jitter": time_jitter,
    "code_noise": code_noise,
}

#: docs/design.md levels for longitudinal EHR (time jitter J = 1 day).
EHR_PERTURBATIONS: dict[str, tuple[float, ...]] = {
    "event_dropout": (0.1, 0.3, 0.5),
    "time_jitter": (1.0,),
    "code_noise": (0.1,),
}
#: The default grid (EHR).
PERTURBATIONS = EHR_PERTURBATIONS
#: ICU stays: time jitter J = 1 hour.
ICU_PERTURBATIONS: dict[str, tuple[float, ...]] = {**EHR_PERTURBATIONS, "time_jitter": (1 / 24,)}
#: Clinical text, through :func:`densefeat.data.text.views.perturb_texts`.
TEXT_PERTURBATIONS: dict[str, tuple[float, ...]] = {
    "token_dropout": (0.1, 0.3),
    "sentence_dropout": (0.1, 0.3),
}
#: The grids by modality.
PERTURBATION_LEVELS: dict[str, dict[str, tuple[float, ...]]] = {
    "ehr": EHR_PERTURBATIONS,
    "icu": ICU_PERTURBATIONS,
    "text": TEXT_PERTURBATIONS,
}


def perturbation_grid(modality: str = "ehr") -> list[tuple[str, float]]:
    """The ``(name, level)`` pairs of a modality's grid (``"ehr"``, ``"icu"`` or ``"text"``)."""
    if modality not in PERTURBATION_LEVELS:
        choices = list(PERTURBATION_LEVELS)
        raise ValueError(f"unknown modality {modality!r}; choose one of {choices}")
    return [(name, lvl) for name, lvls in PERTURBATION_LEVELS[modality].items() for lvl in lvls]


def perturb(
    batch: EventBatch, name: str, level: float, generator: Randomness, **kwargs: int
) -> EventBatch:
    """Apply the EHR perturbation ``name`` (a key of :data:`PERTURBATION_FUNCTIONS`).

    Args:
        batch: the input batch.
        name: ``"event_dropout"``, ``"time_jitter"`` or ``"code_noise"``.
        level: the perturbation's level.
        generator: a :class:`torch.Generator` or a :class:`KeyedRandom`.
        **kwargs: extra arguments (``vocab_size`` for ``code_noise``).
    """
    if name not in PERTURBATION_FUNCTIONS:
        raise ValueError(
            f"unknown EHR perturbation {name!r}; choose one of {sorted(PERTURBATION_FUNCTIONS)}"
        )
    if batch.is_binned and name != "event_dropout":
        # Jittering or renaming an hour token's last event would leave its (B, L, V) values
        # untouched: a silent no-op the robustness table would read as robustness.
        raise ValueError(
            f"perturbation {name!r} is not defined on a batch of hour tokens "
            "(data.tokens=hours): an hour token no longer holds its measurements' times. "
            "Perturb the store's measurements and re-bin them with "
            "densefeat.eval.perturb_hours.perturb_hour_rows (what the robustness step does); "
            "event_dropout on a batch drops whole hours"
        )
    return PERTURBATION_FUNCTIONS[name](batch, level, generator, **kwargs)


def perturb_text(texts: Sequence[str], name: str, level: float, seed: int) -> list[str]:
    """Token or sentence dropout of texts (text ``i`` seeded by ``(seed, i)``).

    A thin, checked front of :func:`densefeat.data.text.views.perturb_texts`: a text never
    becomes empty (one unit is kept), and ``level = 0`` returns the texts unchanged.

    Args:
        texts: non-empty texts.
        name: ``"token_dropout"`` or ``"sentence_dropout"``.
        level: drop probability in ``[0, 1)``.
        seed: the evaluation seed.
    """
    if name not in TEXT_PERTURBATIONS:
        raise ValueError(f"unknown text perturbation {name!r}; choose one of {TEXT_PERTURBATIONS}")
    return perturb_texts(texts, name, level, seed)
