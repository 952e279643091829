"""Robustness of frozen EHR embeddings to test-time perturbations (docs/design.md, Robustness).

Protocol: embed the same evaluation rows clean and perturbed (:func:`embed_perturbed`, grid in
:mod:`densefeat.eval.perturb`), then report (i) the drop of linear-probe AUROC when a probe
fitted on clean training embeddings scores perturbed test embeddings (the benchmark's job)
and (ii) the **embedding drift** of the paired rows (:func:`embedding_drift`):

* ``cosine_drift = mean_i (1 - cos(z_i - mu, z'_i - mu))``, ``mu`` the clean mean;
* ``relative_drift = sum_i ||z_i - z'_i||^2 / sum_i ||z_i - mu||^2
  = mean_i ||z_i - z'_i||^2 / tr(C_clean)`` (``C_clean`` with the 1/n normalisation);
* ``subspace_distance`` (sample space, :func:`densefeat.functional.subspace_distance`) at
  ``k``, with its chance level ``sqrt(1 - k/(n - 1))``.

All three are invariant to a common rotation of both matrices; the first two measure how far
rows move, the third whether the subjects' patterns change at all (a perturbation that rotates
or rescales every embedding the same way leaves it at 0).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from ..data.ehr.batch import EventBatch
from ..data.ehr.store import EventStore
from ..functional import chance_subspace_distance, subspace_distance
from ..train.modalities.ehr import encode_histories, row_times
from .perturb import PERTURBATION_FUNCTIONS, PERTURBATIONS, KeyedRandom
from .perturb_hours import PerturbedHourStore

__all__ = ["embed_perturbed", "embedding_drift", "perturbed_histories", "robustness_sweep"]

#: A perturbation: a name from :data:`~densefeat.eval.perturb.PERTURBATION_FUNCTIONS`, a
#: function ``(batch, level, generator, **kw) -> EventBatch``, or None (clean).
PerturbationArg = str | Callable[..., EventBatch] | None


def _resolve(perturbation: PerturbationArg) -> Callable[..., EventBatch] | None:
    if perturbation is None or callable(perturbation):
        return perturbation
    if perturbation not in PERTURBATION_FUNCTIONS:
        raise ValueError(
            f"unknown EHR perturbation {perturbation!r}; choose one of "
            f"{sorted(PERTURBATION_FUNCTIONS)}"
        )
    return PERTURBATION_FUNCTIONS[perturbation]


def perturbed_histories(
    encoder: nn.Module,
    store: EventStore,
    rows: pl.DataFrame,
    perturbation: PerturbationArg,
    level: float,
    seed: int,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    **kwargs: Any,
) -> tuple[np.ndarray, int, int]:
    """:func:`embed_perturbed`, also returning the real events before and after perturbing.

    On an hour-token store (``store.tokens == "hours"``) a named perturbation is applied to
    the measurements with their exact times and the rows are binned again
    (:mod:`densefeat.eval.perturb_hours`); the counts are then measurements.

    Returns:
        ``(z, events_in, events_out)``.
    """
    fn = _resolve(perturbation)
    if fn is not None and fn is PERTURBATION_FUNCTIONS["code_noise"]:
        kwargs.setdefault("vocab_size", int(encoder.config.vocab_size))
    sid, pt = row_times(rows)
    named = {f: n for n, f in PERTURBATION_FUNCTIONS.items()}
    if getattr(store, "tokens", "events") == "hours" and fn in named:
        # Hour tokens: perturb the measurements with their exact times, then re-bin
        # (densefeat.eval.perturb_hours); the counts are measurements, not hours.
        hours = PerturbedHourStore(store, named[fn], level, int(seed), kwargs.get("vocab_size"))
        z = encode_histories(
            encoder,
            hours,
            sid,
            pt,
            batch_size=batch_size,
            device=device,  # type: ignore[arg-type]
        ).backbone
        return z, hours.counts[0], hours.counts[1]
    gen = KeyedRandom(int(seed))
    counts = [0, 0]

    def transform(batch: EventBatch) -> EventBatch:
        counts[0] += int(batch.mask.sum())
        if fn is not None:
            batch = fn(batch, level, gen, **kwargs)
        counts[1] += int(batch.mask.sum())
        return batch

    z = encode_histories(
        encoder, store, sid, pt, batch_size=batch_size, device=device, transform=transform
    ).backbone
    return z, counts[0], counts[1]


def embed_perturbed(
    encoder: nn.Module,
    store: EventStore,
    rows: pl.DataFrame,
    perturbation: PerturbationArg,
    level: float,
    seed: int,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    **kwargs: Any,
) -> np.ndarray:
    """Backbone embeddings (n, d) float32 of ``rows`` under a test-time perturbation.

    Same rows, same order and same route as the clean embeddings
    (:func:`densefeat.train.modalities.ehr.encode_histories`, cut to the store's ``max_len``); each
    gathered batch is perturbed before the encoder sees it. The randomness is a
    :class:`~densefeat.eval.perturb.KeyedRandom` of ``seed``: an event's draw depends only on
    ``(seed, perturbation, subject_id, prediction_time, its rank from the most recent event)``,
    so the result does **not** depend on ``batch_size``, on the row order or on the device
    (up to the encoder's floating-point batching noise). ``perturbation=None`` (or level 0)
    gives the clean embeddings.

    Args:
        encoder: an :class:`~densefeat.models.ehr.EHREncoder` (or any module mapping an
            :class:`EventBatch` to (B, d)).
        store: the encoded events.
        rows: ``subject_id``, ``prediction_time`` (naive Datetime).
        perturbation: ``"event_dropout"``, ``"time_jitter"``, ``"code_noise"``, a function
            ``(batch, level, generator, **kwargs) -> EventBatch``, or None.
        level: the perturbation's level (see :mod:`densefeat.eval.perturb`).
        seed: the evaluation seed.
        batch_size: rows per encoder pass.
        device: where the encoder runs.
        **kwargs: passed to the perturbation (``code_noise``'s ``vocab_size`` defaults to the
            encoder's ``config.vocab_size``).

    Returns:
        (n, d) float32, row ``i`` the embedding of ``rows[i]``.
    """
    return perturbed_histories(
        encoder, store, rows, perturbation, level, seed, batch_size, device, **kwargs
    )[0]


def embedding_drift(z_clean: Any, z_pert: Any, k: int = 16) -> dict[str, float]:
    """How far paired embeddings move under a perturbation (row ``i`` of both = one sample).

    With ``mu = mean_i z_i`` the **clean** mean, ``a_i = z_i - mu``, ``b_i = z'_i - mu``:

    * ``cosine_drift = mean_i (1 - <a_i, b_i> / (||a_i|| ||b_i||))`` in ``[0, 2]``: the angle
      each row turns about the centre of the clean data. Both matrices are centred with the
      *clean* mean: raw embeddings often share a large common offset that makes every cosine
      ~1 (and hides any drift), while centring ``Z'`` with its own mean would hide a
      perturbation that shifts every row the same way, which is real drift. A row where
      ``a_i = b_i = 0`` counts 0; where only one of them is 0, 1 (orthogonal).
    * ``relative_drift = sum_i ||z_i - z'_i||^2 / sum_i ||a_i||^2`` ``= mean ||z - z'||^2 /
      tr(C_clean)`` (``C_clean`` normalised by n): the squared displacement in units of the
      clean total variance, so it is scale-free (invariant to ``Z, Z' -> cZ + t, cZ' + t``).
      For ``z' = mu + s (z - mu)`` it is exactly ``(s - 1)^2``; for an independent copy with
      the same distribution, about 2.
    * ``subspace_distance``: the sample-space distance ``sqrt(1 - ||Ua^T Ub||_F^2 / k)`` of
      the top-k left singular vectors of the centred matrices (each centred with its own
      mean, as the metric is defined). 0 for any invertible linear map of the embedding
      (rotation, scaling) plus a shift; ``chance = sqrt(1 - k/(n - 1))`` for unrelated ones.

    All in float64.

    Args:
        z_clean: (n, d) clean embeddings.
        z_pert: (n, d) perturbed embeddings of the same rows.
        k: subspace dimension for ``subspace_distance``.

    Returns:
        ``{"n", "k", "cosine_drift", "relative_drift", "subspace_distance", "chance"}``.

    Raises:
        ValueError: shapes that differ, fewer than 2 rows, non-finite values or a clean matrix
            with zero variance.
    """
    a = np.asarray(z_clean, dtype=np.float64)
    b = np.asarray(z_pert, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"z_clean and z_pert must be (n, d) of one shape, got {a.shape}, {b.shape}"
        )
    n = a.shape[0]
    if n < 2:
        raise ValueError(f"embedding_drift needs at least 2 rows, got {n}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("embedding_drift: non-finite embeddings")
    mu = a.mean(axis=0)
    ac, bc = a - mu, b - mu
    total = float(np.square(ac).sum())
    if total == 0.0:
        raise ValueError("embedding_drift: the clean embeddings have zero variance")
    na, nb = np.linalg.norm(ac, axis=1), np.linalg.norm(bc, axis=1)
    dot = np.einsum("ij,ij->i", ac, bc)
    both = (na > 0) & (nb > 0)
    cos = np.where(both, dot / np.where(both, na * nb, 1.0), 0.0)
    cos = np.where((na == 0) & (nb == 0), 1.0, np.clip(cos, -1.0, 1.0))
    return {
        "n": int(n),
        "k": int(k),
        "cosine_drift": float(np.mean(1.0 - cos)),
        "relative_drift": float(np.square(a - b).sum() / total),
        "subspace_distance": float(subspace_distance(a, b, k)),
        "chance": chance_subspace_distance(n, k),
    }


def robustness_sweep(
    encoder: nn.Module,
    store: EventStore,
    rows: pl.DataFrame,
    *,
    perturbations: Mapping[str, Sequence[float]] = PERTURBATIONS,
    seed: int = 0,
    k: int = 16,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    z_clean: np.ndarray | None = None,
    **kwargs: Any,
) -> tuple[list[dict[str, Any]], dict[tuple[str, float], np.ndarray]]:
    """Embed ``rows`` under every ``(perturbation, level)`` of a grid and measure the drift.

    Args:
        encoder, store, rows, seed, batch_size, device, kwargs: as
            :func:`embed_perturbed`.
        perturbations: ``{name: levels}``, by default the EHR grid of docs/design.md
            (:data:`~densefeat.eval.perturb.PERTURBATIONS`; use ``ICU_PERTURBATIONS`` for ICU
            stays).
        k: subspace dimension of the drift's ``subspace_distance``.
        z_clean: the clean embeddings of ``rows`` if already computed.

    Returns:
        ``(records, embeddings)``: one record per ``(name, level)`` with ``perturbation``,
        ``level``, ``seed``, ``event_fraction_kept`` (real events after / before; below 1 for
        dropout and for jitter, which drops events moved past the prediction time; 1 when
        there are no events) and the
        :func:`embedding_drift` fields; and the perturbed embeddings by ``(name, level)`` (for
        the probe's AUROC drop), plus the clean ones under ``("clean", 0.0)``.
    """
    if z_clean is None:
        z_clean = embed_perturbed(encoder, store, rows, None, 0.0, seed, batch_size, device)
    embeddings: dict[tuple[str, float], np.ndarray] = {("clean", 0.0): z_clean}
    records = []
    for name, levels in perturbations.items():
        for level in levels:
            z, n_in, n_out = perturbed_histories(
                encoder, store, rows, name, level, seed, batch_size, device, **kwargs
            )
            embeddings[(name, float(level))] = z
            record: dict[str, Any] = {
                "perturbation": name,
                "level": float(level),
                "seed": int(seed),
                "event_fraction_kept": n_out / n_in if n_in else 1.0,
            }
            record.update(embedding_drift(z_clean, z, k))
            records.append(record)
    return records, embeddings
