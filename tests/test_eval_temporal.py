"""Temporal stability: the half-window views (hand-checked and exact against a rebuilt store),
the no-drift floor against built-in drift and no drift, the chance level, seed alignment."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
import scipy.linalg
import torch

from densefeat.data.ehr import EventBatch, HistoryBuilder
from densefeat.data.ehr.windows import window_pairs
from densefeat.eval.temporal import (
    half_window_views,
    seed_alignment,
    temporal_stability,
    window_embeddings,
    window_records,
)
from densefeat.functional import chance_subspace_distance, linear_cka_debiased, subspace_distance
from densefeat.models.ehr import EHREncoder, EHREncoderConfig

D = dt.datetime
US = 1_000_000
START = D(2010, 1, 1)
N_SUBJECTS = 160
N_GROUPS = 6
K = 4


def _frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.Utf8},
        orient="row",
    )


def _us(x: D) -> int:
    return (x - D(1970, 1, 1)) // dt.timedelta(microseconds=1)


# --------------------------------------------------------------------------------------------
# The half-window views.


def _small_events() -> pl.DataFrame:
    rows = [(1, None, "GENDER/F"), (1, D(1980, 1, 1), "MEDS_BIRTH")]
    rows += [(1, D(2010, 1, 1 + i), f"OLD{i}") for i in range(4)]  # history up to t
    rows += [(1, D(2010, 3, 1 + i), f"NEW{i}") for i in range(5)]  # the window (t, t1]
    rows += [(1, D(2010, 9, 1), "LATER")]  # after t1: never seen
    rows += [(2, D(2010, 1, 5), "OLD0"), (2, D(2010, 3, 2), "NEW0")]  # one new event only
    return _frame(rows)


def test_half_window_views_split_the_window_alternately():
    events = _small_events()
    builder = HistoryBuilder.fit(events, split=None, min_subjects=1, max_len=16)
    store = builder.encode(events)
    vocab = dict(zip(builder.vocabulary.codes_, range(2, 100), strict=False))
    t, t1 = _us(D(2010, 2, 1)), _us(D(2010, 6, 1))
    a, b = half_window_views(store, np.array([1, 2]), np.array([t, t]), np.array([t1, t1]))
    inv = {v: k for k, v in vocab.items()}

    def codes(batch: EventBatch, i: int) -> list[str]:
        return [inv[int(c)] for c in batch.codes[i][batch.mask[i]]]

    old = ["MEDS_BIRTH"] + [f"OLD{i}" for i in range(4)]
    assert codes(a, 0) == [*old, "NEW0", "NEW2", "NEW4"]
    assert codes(b, 0) == [*old, "NEW1", "NEW3"]
    assert codes(a, 1) == ["OLD0", "NEW0"] and codes(b, 1) == ["OLD0"]
    for view in (a, b):
        assert (view.prediction_time == t1).all() and view.seq_len == 16
        assert (view.time_before_prediction[view.mask] >= 0).all()
    # delta_t follows the kept events: NEW2 comes 2 days after NEW0 in view A.
    assert float(a.delta_t[0, -2]) == pytest.approx(2.0)
    assert float(b.delta_t[0, -2]) == pytest.approx((D(2010, 3, 2) - D(2010, 1, 4)).days)


def test_half_window_views_equal_a_gather_from_the_reduced_record():
    # With truncation (max_len 4 < events), view A must be exactly the batch one gets from a
    # record without B's events: the view is gathered with enough extra positions.
    events = _small_events().filter(pl.col("subject_id") == 1)
    builder = HistoryBuilder.fit(events, split=None, min_subjects=1, max_len=4)
    store = builder.encode(events)
    t, t1 = _us(D(2010, 2, 1)), _us(D(2010, 6, 1))
    a, b = half_window_views(store, np.array([1]), np.array([t]), np.array([t1]))
    for view, dropped in ((a, ["NEW1", "NEW3"]), (b, ["NEW0", "NEW2", "NEW4"])):
        reduced = builder.encode(events.filter(~pl.col("code").is_in(dropped)))
        want = reduced.gather(np.array([1]), np.array([t1]), 4)
        for f in EventBatch.__dataclass_fields__:
            got, ref = getattr(view, f), getattr(want, f)
            if f == "delta_t":
                torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
            else:
                assert torch.equal(got, ref), f


# --------------------------------------------------------------------------------------------
# The floor against built-in drift, and without drift.


def _world_events(drift: bool, seed: int) -> pl.DataFrame:
    """Subjects of a latent group; each year 8 events, codes of the group, on a fixed schedule.

    Without drift the group is the same in both years (the two windows are identical in
    distribution); with drift every subject draws a new group for year 2. Times are the same
    for everyone, so codes are the only thing that differs between subjects.
    """
    rng = np.random.default_rng(seed)
    rows: list[tuple] = []
    for s in range(N_SUBJECTS):
        rows.append((s, None, "GENDER/F" if s % 2 else "GENDER/M"))
        rows.append((s, START, "VISIT"))
        group = int(rng.integers(N_GROUPS))
        for year in range(2):
            g = int(rng.integers(N_GROUPS)) if (drift and year == 1) else group
            for j in range(8):
                when = START + dt.timedelta(days=365 * year + 10 + 40 * j)
                rows.append((s, when, f"G{g}_{int(rng.integers(5))}"))
        rows.append((s, START + dt.timedelta(days=800), "VISIT"))  # the record goes on
    return _frame(rows)


def _world(drift: bool, seed: int = 0):
    events = _world_events(drift, seed)
    builder = HistoryBuilder.fit(events, split=None, min_subjects=1)
    store = builder.encode(events)
    torch.manual_seed(seed)
    cfg = EHREncoderConfig.from_builder(builder, d_model=32, n_heads=4, n_layers=2)
    encoder = EHREncoder(cfg).eval()
    # A random encoder embeds codes with std 0.02, too weakly to tell groups apart; give it
    # group-structured code embeddings (what training on these data would learn).
    group_vec = torch.randn(N_GROUPS, 32)
    with torch.no_grad():
        for code, idx in zip(builder.vocabulary.codes_, range(2, 1000), strict=False):
            if code.startswith("G"):
                encoder.code_embedding.weight[idx] = group_vec[int(code[1])] + 0.3 * torch.randn(32)
    cut = pl.DataFrame({"subject_id": np.arange(N_SUBJECTS)}).with_columns(
        window=pl.lit(1, pl.Int64), time=pl.lit(START + dt.timedelta(days=365))
    )
    later = cut.with_columns(window=pl.lit(2, pl.Int64), time=pl.col("time") + dt.timedelta(365))
    cuts = pl.concat([cut, later])
    pairs = window_pairs(store, cuts)
    return store, encoder, pairs


@pytest.fixture(scope="module")
def stationary():
    return _world(drift=False)


@pytest.fixture(scope="module")
def drifting():
    return _world(drift=True)


def test_floor_is_below_the_distance_when_patients_drift(drifting):
    store, encoder, pairs = drifting
    out = temporal_stability(encoder, store, pairs, k=K)
    (rec,) = out["windows"]
    assert rec["n"] == N_SUBJECTS and rec["window"] == 1
    # New groups in year 2: the subspace at t1 has little to do with that at t (about chance),
    # while the two halves of year 2 agree.
    assert rec["subspace_distance"] > rec["floor"] + 0.4
    assert rec["subspace_distance"] > 0.9 * rec["chance"]


def test_floor_matches_the_distance_when_windows_are_alike(stationary):
    store, encoder, pairs = stationary
    out = temporal_stability(encoder, store, pairs, k=K)
    (rec,) = out["windows"]
    assert rec["subspace_distance"] < 0.6 * rec["chance"]  # a stable encoder, well below chance
    assert rec["subspace_distance"] == pytest.approx(rec["floor"], abs=0.05)
    assert out["temporal_stability"] == rec["subspace_distance"]
    assert out["floor"] == rec["floor"] and out["n_windows"] == 1 and out["n_pairs"] == 160


def test_records_chance_label_and_skipped_windows(stationary):
    store, encoder, pairs = stationary
    emb = window_embeddings(encoder, store, pairs, batch_size=50)
    assert set(emb) == {"z_t", "z_t1", "z_a", "z_b"}
    assert all(z.shape == (N_SUBJECTS, 32) for z in emb.values())
    # The two passes agree with plain subspace_distance on their embeddings.
    (rec,), skipped = window_records(pairs, emb, k=K)
    assert rec["subspace_distance"] == subspace_distance(emb["z_t"], emb["z_t1"], K)
    assert rec["floor"] == subspace_distance(emb["z_a"], emb["z_b"], K)
    assert rec["chance"] == pytest.approx(math.sqrt(1 - K / (N_SUBJECTS - 1)))
    assert rec["chance"] == chance_subspace_distance(N_SUBJECTS, K)
    assert rec["label"] == "2011-01-01 -> 2012-01-01" and skipped == []
    assert set(rec) >= {"window", "label", "n", "k", "subspace_distance", "floor", "chance"}
    assert {"subspace_distance_erank", "floor_erank", "chance_erank", "k_whole"} <= set(rec)
    # A window with too few subjects is skipped, not scored on noise.
    few = pairs.head(7)
    recs, skipped = window_records(few, {k: v[:7] for k, v in emb.items()}, k=K)
    assert recs == [] and skipped == [{"window": 1, "n": 7}]
    recs, skipped = window_records(pairs.head(10), {k: v[:10] for k, v in emb.items()}, k=K,
                                   min_rows=4 * K)  # fmt: skip
    assert recs == [] and skipped == [{"window": 1, "n": 10}]
    with pytest.raises(ValueError, match="min_rows"):
        window_records(pairs, emb, k=K, min_rows=K)


def test_a_small_window_is_scored_at_a_clipped_k_with_floor_and_chance_at_it(stationary):
    """Fewer than 4k subjects: k -> floor(n / 4), stated; floor and chance at the clipped k."""
    store, encoder, pairs = stationary
    emb = window_embeddings(encoder, store, pairs, batch_size=50)
    n = 13  # < 4 K = 16: k clipped to 3
    sub = {key: v[:n] for key, v in emb.items()}
    (rec,), skipped = window_records(pairs.head(n), sub, k=K)
    assert skipped == [] and rec["n"] == n
    assert rec["k"] == 3 and rec["k_requested"] == K and "k clipped 4 -> 3" in rec["k_note"]
    assert rec["subspace_distance"] == subspace_distance(sub["z_t"], sub["z_t1"], 3)
    assert rec["floor"] == subspace_distance(sub["z_a"], sub["z_b"], 3)
    assert rec["chance"] == pytest.approx(math.sqrt(1 - 3 / (n - 1)))
    # A window at or above 4k keeps k and says nothing.
    (full,), _ = window_records(pairs, emb, k=K)
    assert full["k"] == K and "k_note" not in full


def test_pairs_from_periodic_cuts_and_no_window(stationary):
    store, encoder, _ = stationary
    # Built from yearly cuts anchored at each record's first event (2010-01-01): the same pairs.
    out = temporal_stability(encoder, store, k=K, every=365.0)
    assert out["n_windows"] == 1 and out["windows"][0]["n"] == N_SUBJECTS
    none = temporal_stability(encoder, store, k=K, subjects=[0, 1, 2])
    assert none["n_windows"] == 0 and none["temporal_stability"] is None
    assert none["skipped"] == [{"window": 1, "n": 3}]


# --------------------------------------------------------------------------------------------
# Seed alignment.


def _z(n: int = 300, d: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * np.linspace(3.0, 0.5, d) + 2.0


def test_seed_alignment_of_identical_and_rotated_runs():
    z = _z()
    same = seed_alignment(z, z, k=4)
    assert same["subspace_distance"] == pytest.approx(0.0, abs=1e-6)
    assert max(same["principal_angles_deg"]) < 1e-4
    assert same["linear_cka_debiased"] == pytest.approx(1.0, abs=1e-12)
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(10, 10)))
    rot = seed_alignment(z, z @ q + 5.0, k=4)  # another seed = another basis (and offset)
    assert rot["subspace_distance"] == pytest.approx(0.0, abs=1e-6)
    assert rot["linear_cka_debiased"] == pytest.approx(1.0, abs=1e-9)
    assert rot["max_angle_deg"] < 1e-3


def test_seed_alignment_angles_match_scipy_and_the_distance():
    z = _z(seed=0)
    w = z @ np.random.default_rng(1).normal(size=(10, 7)) + 0.8 * _z(seed=2)[:, :7]
    out = seed_alignment(z, w, k=4)
    assert len(out["principal_angles_deg"]) == 4 and out["k"] == 4
    sines = np.sin(np.deg2rad(out["principal_angles_deg"]))
    assert out["subspace_distance"] == pytest.approx(math.sqrt(np.mean(sines**2)), abs=1e-9)
    ua = np.linalg.svd(z - z.mean(0), full_matrices=False)[0][:, :4]
    ub = np.linalg.svd(w - w.mean(0), full_matrices=False)[0][:, :4]
    want = np.rad2deg(scipy.linalg.subspace_angles(ua, ub))
    np.testing.assert_allclose(out["principal_angles_deg"], want, atol=1e-8)
    assert out["linear_cka_debiased"] == pytest.approx(linear_cka_debiased(z, w))


def test_seed_alignment_of_unrelated_runs_is_at_chance():
    z, w = _z(n=800, seed=0), _z(n=800, seed=9)
    out = seed_alignment(z, w, k=5)
    assert out["subspace_distance"] == pytest.approx(out["chance"], abs=0.01)
    assert out["chance"] == pytest.approx(math.sqrt(1 - 5 / 799))
    assert abs(out["linear_cka_debiased"]) < 0.05
    with pytest.raises(ValueError, match="same n"):
        seed_alignment(z, w[:10], k=2)
