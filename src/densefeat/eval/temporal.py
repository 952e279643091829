"""Temporal stability of an encoder, its no-drift floor and chance level; seed alignment.

**Temporal stability** (docs/design.md): the same held-out subjects are embedded at the two
cut-offs ``t_i < t_{i+1}`` of adjacent windows (:func:`densefeat.data.ehr.windows.window_pairs`,
cut-offs from :func:`~densefeat.data.ehr.windows.periodic_cuts`: yearly for EHR, every 12 hours for
ICU stays) and, window by window,

    D_i = subspace_distance(Z(t_i), Z(t_{i+1}), k) = sqrt(1 - ||U_t^T U_{t+1}||_F^2 / k),

the sample-space distance of the top-k left singular subspaces (rows pair up: one subject per
row). ``temporal_stability = mean_i D_i`` over the windows that have at least ``min_rows``
subjects; lower is more stable. Beside each ``D_i``:

* **chance** ``= sqrt(1 - k/(n - 1))``: the expected distance of two unrelated k-dim subspaces
  of the n - 1 dimensional centred sample space (what an encoder whose embeddings at
  ``t_{i+1}`` have nothing to do with those at ``t_i`` scores);
* **no-drift floor** ("the same window split in two halves"): the events of the later window,
  those in ``(t_i, t_{i+1}]``, are numbered in time order and split alternately into halves
  ``A`` (1st, 3rd, ...) and ``B`` (2nd, 4th, ...). Each subject is embedded twice at the
  same cut-off ``t_{i+1}``: once with its history up to ``t_i`` plus ``A``, once with it plus
  ``B``; ``floor_i = subspace_distance(Z_A, Z_B, k)``. No time passes between the two
  views and both see the same history and the same amount of the window, so ``floor_i`` is
  the distance that within-window event sampling and finite n alone produce. ``D_i`` near
  ``floor_i`` means the subspace moves between windows no more than it moves between two
  halves of one window (no measurable drift); ``D_i`` well above it is drift (of the patients
  or of the encoder's reading of time).

Exactness of the views: each half-view is the history at ``t_{i+1}`` of a record without the
other half's events, truncated to the last ``max_len`` events like any gathered batch (the
batch is gathered with enough extra positions that dropping one half never leaves fewer
events than a gather would). ``delta_t`` of an event whose predecessor was removed becomes the
gap to its nearest kept predecessor (:func:`densefeat.data.ehr.views.keep_events`). A subject with
a single event in the window has ``B`` empty: its ``B`` view is its history at ``t_i`` seen
from ``t_{i+1}``.

**Seed alignment** (:func:`seed_alignment`): two runs (seeds) of one method on the same rows,
compared by the sample-space subspace distance, debiased linear CKA and the principal angles
between their top-k left singular subspaces.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import replace
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from ..data.ehr.batch import EventBatch
from ..data.ehr.buckets import CPU_MAX_POSITIONS, GPU_MAX_POSITIONS, length_buckets
from ..data.ehr.store import EventStore
from ..data.ehr.views import keep_events
from ..data.ehr.windows import periodic_cuts, window_pairs
from ..functional import (
    chance_subspace_distance,
    effective_rank,
    linear_cka_debiased,
    principal_angles,
    subspace_distance,
)
from ..models.ehr import event_times
from ..train.modalities.ehr import encode_histories

__all__ = [
    "half_window_views",
    "seed_alignment",
    "temporal_stability",
    "window_embeddings",
    "window_records",
]


def _pair_arrays(pairs: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    for name in ("subject_id", "window", "time_t", "time_t1"):
        if name not in pairs.columns:
            raise ValueError(f"pairs: missing column {name!r} (a window_pairs table is expected)")
    sid = pairs["subject_id"].cast(pl.Int64).to_numpy()
    t = pairs["time_t"].cast(pl.Datetime("us")).cast(pl.Int64).to_numpy()
    t1 = pairs["time_t1"].cast(pl.Datetime("us")).cast(pl.Int64).to_numpy()
    if (t1 <= t).any():
        raise ValueError("pairs: time_t1 must be later than time_t in every row")
    return sid, t, t1


def _truncate(batch: EventBatch, max_len: int) -> EventBatch:
    """The last ``max_len`` positions (the most recent events of a left-padded batch)."""
    if batch.seq_len <= max_len:
        return batch
    cut = {name: getattr(batch, name)[:, -max_len:] for name in batch.position_fields()}
    return replace(batch, **cut)


def half_window_views(
    store: EventStore,
    subject_id: np.ndarray,
    time_t: np.ndarray,
    time_t1: np.ndarray,
) -> tuple[EventBatch, EventBatch]:
    """The two half-window views of rows ``(subject_id, t, t1)`` at cut-off ``t1``.

    Events in ``(t, t1]`` (exact int64 times, :func:`densefeat.models.ehr.event_times`) are
    numbered 0, 1, ... in time order; view A drops the odd ones, view B the even ones; events
    at or before ``t`` are in both. See the module docstring.

    A row's views do not depend on the other rows of the call: the window is numbered from
    its first event even when the gather starts later, and the gather's ``extra`` positions
    (the batch's largest ``ceil(n_new / 2)``) are at least the row's own removed events, so
    the last ``max_len`` kept events and the gap before the first of them are in it.

    Args:
        store: the encoded events.
        subject_id, time_t, time_t1: (B,) int64 arrays (microseconds), ``t < t1``.

    Returns:
        ``(batch_a, batch_b)``, valid batches with prediction time ``t1`` and ``L`` the
        store's ``max_len``.
    """
    max_len = store.max_len
    sid = np.asarray(subject_id, dtype=np.int64)
    t = np.asarray(time_t, dtype=np.int64)
    t1 = np.asarray(time_t1, dtype=np.int64)
    idx = store.index_of(sid)
    n_new = store.count_at_or_before(idx, t1) - store.count_at_or_before(idx, t)
    extra = int(((n_new + 1) // 2).max()) if n_new.size else 0
    batch = store.gather(sid, t1, max_len + extra)
    times = event_times(store, batch)
    new = batch.mask & (times > torch.from_numpy(t.copy())[:, None])
    # The window's events are numbered from its FIRST event, which the gather may have cut
    # off (a window with more than max_len + extra events): count those from the store, so
    # a row's views never depend on its batch-mates' ``extra``.
    cut_off = torch.from_numpy(n_new) - new.sum(dim=1)
    rank = torch.cumsum(new.to(torch.int64), dim=1) - 1 + cut_off[:, None]
    in_a = new & (rank % 2 == 0)
    in_b = new & (rank % 2 == 1)
    view_a = _truncate(keep_events(batch, batch.mask & ~in_b), max_len)
    view_b = _truncate(keep_events(batch, batch.mask & ~in_a), max_len)
    return view_a.validate(), view_b.validate()


def window_embeddings(
    encoder: nn.Module,
    store: EventStore,
    pairs: pl.DataFrame,
    *,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    bucket: bool = True,
    max_positions: int | None = None,
) -> dict[str, np.ndarray]:
    """Embeddings of every pair row: at ``t``, at ``t1``, and the two half-window views.

    All four go through the inference loop of ``densefeat embed`` (issue 14): rows sorted by
    history length and cut into batches of at most ``batch_size`` rows and ``max_positions``
    token positions, under :func:`torch.inference_mode`, with the encoder in eval mode (its
    last block at the read-out token only, :attr:`EHREncoder.fast_readout`). A row's embedding
    depends on its own events only, so the grouping changes float rounding alone (~1e-7; the
    half-window views of a row are the same in any batch, see :func:`half_window_views`).

    Args:
        encoder: the (frozen) encoder; put in eval mode for the passes.
        store: the encoded events.
        pairs: a :func:`~densefeat.data.ehr.windows.window_pairs` table.
        batch_size: the most rows per encoder pass.
        device: where the encoder runs.
        bucket: batch rows by length (False: batches of ``batch_size`` rows in row order).
        max_positions: the most token positions per pass (None: the CPU / GPU default of
            :func:`~densefeat.train.modalities.ehr.encode_histories`).

    Returns:
        ``{"z_t", "z_t1", "z_a", "z_b"}``, each (n_pairs, d) float32 in the order of ``pairs``.
    """
    sid, t, t1 = _pair_arrays(pairs)
    common = {
        "batch_size": batch_size,
        "device": device,
        "bucket": bucket,
        "max_positions": max_positions,
    }
    z_t = encode_histories(encoder, store, sid, t, **common).backbone
    z_t1 = encode_histories(encoder, store, sid, t1, **common).backbone
    z_a, z_b = _half_window_embeddings(encoder, store, sid, t, t1, **common)
    return {"z_t": z_t, "z_t1": z_t1, "z_a": z_a, "z_b": z_b}


def _half_window_embeddings(
    encoder: nn.Module,
    store: EventStore,
    sid: np.ndarray,
    t: np.ndarray,
    t1: np.ndarray,
    *,
    batch_size: int,
    device: torch.device | str,
    bucket: bool,
    max_positions: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) embeddings of the views A and B of every row, length-bucketed like
    :func:`~densefeat.train.modalities.ehr.encode_histories`."""
    n, d = sid.size, int(encoder.embed_dim)
    if bucket:
        if max_positions is None:
            on_cpu = torch.device(device).type == "cpu"
            max_positions = CPU_MAX_POSITIONS if on_cpu else GPU_MAX_POSITIONS
        # The longer view (A: it drops floor(n_new / 2) of the window's events) sizes the row.
        idx = store.index_of(sid)
        at_t1 = store.count_at_or_before(idx, t1)
        n_new = at_t1 - store.count_at_or_before(idx, t)
        lengths = np.minimum(at_t1 - n_new // 2, store.max_len)
        batches = length_buckets(lengths, batch_size, max_positions)
    else:
        batches = [np.arange(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size)]
    z = {"a": np.zeros((n, d), np.float32), "b": np.zeros((n, d), np.float32)}
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.inference_mode():
            for rows in batches:
                views = half_window_views(store, sid[rows], t[rows], t1[rows])
                for key, view in zip("ab", views, strict=True):
                    z[key][rows] = encoder(view.to(device)).float().cpu().numpy()
    finally:
        encoder.train(was_training)
    return z["a"], z["b"]


def _label(pairs: pl.DataFrame, window: int) -> str:
    """``"2012-01-01 -> 2013-01-01"`` when all rows share their cut-offs, else ``"w3 -> w4"``."""
    times = pairs.select("time_t", "time_t1").unique()
    if times.height == 1:
        t, t1 = times.row(0)

        def fmt(x: _dt.datetime) -> str:
            return (
                x.isoformat(sep=" ")
                if (x.hour, x.minute, x.second) != (0, 0, 0)
                else (x.date().isoformat())
            )

        return f"{fmt(t)} -> {fmt(t1)}"
    return f"w{window} -> w{window + 1}"


#: Subjects per subspace dimension a window needs (the default ``min_rows = 4 k``).
ROWS_PER_K = 4
#: The smallest clipped k a window is scored at (below it, the window is skipped).
MIN_CLIPPED_K = 2


def window_records(
    pairs: pl.DataFrame,
    embeddings: dict[str, np.ndarray],
    k: int = 16,
    min_rows: int | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, int]]]:
    """Per-window distance, floor and chance from :func:`window_embeddings`' output.

    Args:
        pairs: the pair table the embeddings were computed on (same order).
        embeddings: ``{"z_t", "z_t1", "z_a", "z_b"}``.
        k: subspace dimension.
        min_rows: least number of subjects for a window to be scored at ``k``. Default
            ``4 k`` (the distance of a k-dim subspace estimated from barely more than k rows is
            mostly noise), and then a window with fewer subjects is not left out but scored at
            ``k_w = floor(n / 4)`` (the same 4 subjects per dimension; :data:`ROWS_PER_K`),
            when ``k_w >= 2`` (:data:`MIN_CLIPPED_K`), as the small-cohort rule clips k
            elsewhere: its record's ``k`` is ``k_w``, with ``k_requested`` and ``k_note``,
            and its floor and chance are at ``k_w`` too. An explicit ``min_rows`` skips every
            window below it (no clipping).

    Returns:
        ``(records, skipped)``: records ``{"window", "label", "n", "k", "subspace_distance",
        "floor", "chance"}`` by window, and ``{"window", "n"}`` of windows with too few rows.
    """
    clip = min_rows is None
    min_rows = ROWS_PER_K * k if min_rows is None else int(min_rows)
    if min_rows < k + 2:
        raise ValueError(f"min_rows must be >= k + 2 = {k + 2}, got {min_rows}")
    window = pairs["window"].cast(pl.Int64).to_numpy()
    if any(z.shape[0] != window.size for z in embeddings.values()):
        raise ValueError("embeddings and pairs differ in their number of rows")
    records, skipped = [], []
    for w in np.unique(window):
        rows = np.flatnonzero(window == w)
        n = int(rows.size)
        k_w, clipped = int(k), {}
        if n < min_rows:
            if not clip or n // ROWS_PER_K < MIN_CLIPPED_K:
                skipped.append({"window": int(w), "n": n})
                continue
            k_w = n // ROWS_PER_K
            clipped = {
                "k_requested": int(k),
                "k_note": f"k clipped {k} -> {k_w}: {n} subjects (< {ROWS_PER_K}k = "
                f"{ROWS_PER_K * k}); floor and chance at k = {k_w}",
            }
        z = {key: val[rows] for key, val in embeddings.items()}
        records.append(
            {
                "window": int(w),
                "label": _label(pairs[rows], int(w)),
                "n": n,
                "k": k_w,
                **clipped,
                "subspace_distance": subspace_distance(z["z_t"], z["z_t1"], k_w),
                "floor": subspace_distance(z["z_a"], z["z_b"], k_w),
                "chance": chance_subspace_distance(n, k_w),
                **other_k_fields(z, n),
            }
        )
    return records, skipped


def other_k_fields(z: dict[str, np.ndarray], n: int) -> dict[str, Any]:
    """The window's distance, floor and chance at ``k = round(effective rank)`` and over the
    whole space (docs/design.md §3.3: a fixed k penalises the spread dense learning seeks).

    * ``_erank``: ``k = round(erank(Z(t_i)))`` (Roy & Vetterli's entropy effective rank of the
      earlier window's embedding), clipped to ``[1, min(n - 1, d)]``;
    * ``_whole``: ``k = d`` (the narrower embedding), where ``||Ua^T Ub||_F^2 = sum_j rho_j^2``
      is the sum of the squared canonical correlations of the two matrices, so the distance
      ``sqrt(1 - mean_j rho_j^2)`` is invariant to any invertible linear map (whitening) of
      either; defined only when ``d < n - 1`` (otherwise both spans are the whole centred
      sample space and the distance is 0 by construction: null with a reason).
    """
    za, zb = z["z_t"], z["z_t1"]
    d = min(za.shape[1], zb.shape[1], z["z_a"].shape[1], z["z_b"].shape[1])
    out: dict[str, Any] = {}
    try:
        er = effective_rank(za)
    except ValueError:  # zero-variance embedding: no spectrum to take a rank from
        er = 1.0
    k_er = int(min(max(1, round(er)), n - 1, d))
    out |= {
        "effective_rank": float(er),
        "k_erank": k_er,
        "subspace_distance_erank": subspace_distance(za, zb, k_er),
        "floor_erank": subspace_distance(z["z_a"], z["z_b"], k_er),
        "chance_erank": chance_subspace_distance(n, k_er),
    }
    if d < n - 1:
        out |= {
            "k_whole": int(d),
            "subspace_distance_whole": subspace_distance(za, zb, d),
            "floor_whole": subspace_distance(z["z_a"], z["z_b"], d),
            "chance_whole": chance_subspace_distance(n, d),
        }
    else:
        out |= {
            "k_whole": int(d),
            "subspace_distance_whole": None,
            "floor_whole": None,
            "chance_whole": None,
            "whole_reason": f"d = {d} >= n - 1 = {n - 1}: both spans are the whole sample space",
        }
    return out


def temporal_stability(
    encoder: nn.Module,
    store: EventStore,
    pairs: pl.DataFrame | None = None,
    *,
    k: int = 16,
    every: float | _dt.timedelta = 365.0,
    anchor: str = "first_event",
    subjects: np.ndarray | list[int] | None = None,
    min_history: int = 1,
    min_new_events: int = 1,
    min_rows: int | None = None,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Temporal stability of ``encoder`` on (held-out) subjects, with floor and chance level.

    ``temporal_stability = mean_i D_i``, ``floor = mean_i floor_i``, ``chance = mean_i
    chance_i`` over the scored windows (unweighted, each window counts once); see the module
    docstring for ``D_i`` and ``floor_i``.

    Args:
        encoder: the frozen encoder.
        store: the encoded events.
        pairs: a :func:`~densefeat.data.ehr.windows.window_pairs` table; None to build one from
            ``periodic_cuts(store, every, anchor=anchor, subjects=subjects)`` with
            ``min_history`` and ``min_new_events``.
        k: subspace dimension.
        every, anchor, subjects, min_history, min_new_events: how pairs are built when
            ``pairs`` is None (pass the held-out subjects as ``subjects``).
        min_rows: least subjects per scored window at ``k`` (default ``4 k``, smaller windows
            scored at a clipped k: :func:`window_records`).
        batch_size, device: as for the embeddings (histories are cut to the store's
            ``max_len``).

    Returns:
        ``{"temporal_stability", "floor", "chance", "k", "n_windows", "n_pairs", "windows",
        "skipped"}``; ``windows`` holds the per-window records of :func:`window_records`.
        The three means are NaN-free: with no scored window they are None and ``n_windows``
        is 0.
    """
    if pairs is None:
        cuts = periodic_cuts(store, every, anchor=anchor, subjects=subjects)
        pairs = window_pairs(store, cuts, min_history=min_history, min_new_events=min_new_events)
    emb = window_embeddings(encoder, store, pairs, batch_size=batch_size, device=device)
    records, skipped = window_records(pairs, emb, k, min_rows)

    def mean(key: str) -> float | None:
        return float(np.mean([r[key] for r in records])) if records else None

    return {
        "temporal_stability": mean("subspace_distance"),
        "floor": mean("floor"),
        "chance": mean("chance"),
        "k": int(k),
        "n_windows": len(records),
        "n_pairs": int(sum(r["n"] for r in records)),
        "windows": records,
        "skipped": skipped,
    }


def _top_left_singular(z: torch.Tensor) -> tuple[torch.Tensor, int]:
    zc = z - z.mean(0)
    u, s, _ = torch.linalg.svd(zc, full_matrices=False)
    rank = (
        0
        if float(s[0]) == 0.0
        else int((s > s[0] * max(zc.shape) * torch.finfo(torch.float64).eps).sum())
    )
    return u, rank


def seed_alignment(z_a: Any, z_b: Any, k: int = 16) -> dict[str, Any]:
    """Alignment of two runs' embeddings of the same rows (e.g. two training seeds).

    * ``subspace_distance``: sample space, ``sqrt(1 - ||Ua^T Ub||_F^2 / k)`` (0 = same top-k
      patterns over subjects), with ``chance = sqrt(1 - k/(n - 1))``;
    * ``linear_cka_debiased``: Kornblith et al. 2019 with Song et al.'s unbiased HSIC (all
      directions, weighted by variance; ~0 for unrelated matrices);
    * ``principal_angles_deg``: the k principal angles (degrees, largest first) between the
      top-k left singular subspaces ``Ua, Ub`` of the centred matrices (Björck & Golub, via
      :func:`densefeat.functional.principal_angles`); ``subspace_distance =
      sqrt(mean sin^2 theta)``. ``k`` is clipped to the numerical ranks.

    Args:
        z_a: (n, d_a) embeddings of run A.
        z_b: (n, d_b) embeddings of run B, row i the same sample.
        k: subspace dimension.

    Returns:
        ``{"n", "k", "subspace_distance", "chance", "linear_cka_debiased",
        "principal_angles_deg", "mean_angle_deg", "max_angle_deg"}``.
    """
    a = torch.as_tensor(np.asarray(z_a, dtype=np.float64))
    b = torch.as_tensor(np.asarray(z_b, dtype=np.float64))
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"z_a, z_b must be (n, d) with the same n, got {a.shape}, {b.shape}")
    n = a.shape[0]
    if not 1 <= k <= min(n - 1, a.shape[1], b.shape[1]):
        raise ValueError(f"k must be in [1, min(n - 1, d_a, d_b)], got k={k}")
    dist = subspace_distance(a, b, k)
    ua, rank_a = _top_left_singular(a)
    ub, rank_b = _top_left_singular(b)
    k_eff = min(k, rank_a, rank_b)
    if k_eff == 0:
        raise ValueError("seed_alignment is undefined for a zero-variance matrix")
    angles = torch.rad2deg(principal_angles(ua[:, :k_eff], ub[:, :k_eff]))
    angles_list = [float(x) for x in angles]
    return {
        "n": int(n),
        "k": int(k_eff),
        "subspace_distance": dist,
        "chance": chance_subspace_distance(n, k_eff),
        "linear_cka_debiased": linear_cka_debiased(a, b),
        "principal_angles_deg": angles_list,
        "mean_angle_deg": float(np.mean(angles_list)),
        "max_angle_deg": float(max(angles_list)),
    }
