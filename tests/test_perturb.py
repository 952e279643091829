"""Test-time perturbations and embedding drift: no added or leaked events, exact identities at
level 0, rates within binomial tolerance, seeding, batch-size independence, drift closed forms."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import torch

from _helpers import events_frame
from densefeat.data.ehr import N_RESERVED, UNK_ID, EventBatch, HistoryBuilder
from densefeat.data.ehr.views import event_dropout as views_event_dropout
from densefeat.eval.perturb import (
    ICU_PERTURBATIONS,
    PERTURBATIONS,
    TEXT_PERTURBATIONS,
    KeyedRandom,
    code_noise,
    event_dropout,
    perturb,
    perturb_text,
    perturbation_grid,
    time_jitter,
)
from densefeat.eval.robustness import embed_perturbed, embedding_drift, robustness_sweep
from densefeat.functional import chance_subspace_distance
from densefeat.models.ehr import EHREncoder, EHREncoderConfig
from densefeat.train.modalities.ehr import encode_histories, row_times

D = dt.datetime
N_SUBJECTS = 48
N_CODES = 30  # every subject has each code C0..C29 exactly once: events are identifiable
MAX_LEN = 24  # < 30: most rows are truncated (their first event has a predecessor outside)


def _events() -> pl.DataFrame:
    """MEDS events: births, static codes, values, times spread over ~2 years, some same-day."""
    rng = np.random.default_rng(0)
    rows = []
    for s in range(N_SUBJECTS):
        rows.append((s, None, "GENDER/F" if s % 2 else "GENDER/M", None))
        if s % 5:  # every fifth subject has no birth event (age unknown)
            rows.append((s, D(1950 + s % 40, 3, 1), "MEDS_BIRTH", None))
        # 30 event days over ~2 years; a few repeated times (several codes at one time).
        days = np.sort(rng.integers(0, 700, N_CODES))
        days[5] = days[4]
        for code, day in zip(rng.permutation(N_CODES), days, strict=True):
            value = float(rng.normal()) if code % 3 == 0 else None
            rows.append(
                (s, D(2015, 1, 1) + dt.timedelta(days=int(day), hours=9), f"C{code}", value)
            )
    return events_frame(rows, pl.Float64)


@pytest.fixture(scope="module")
def world():
    events = _events()
    builder = HistoryBuilder.fit(events, split=None, min_subjects=1, min_values=3, max_len=MAX_LEN)
    store = builder.encode(events)
    end = store.end_of_record()
    # Prediction times: at the last event (events at tbp = 0 exist), 12 hours after it, in the
    # middle of the record, and one before the record (an empty row).
    rows = pl.concat(
        [
            end,
            end.with_columns(pl.col("prediction_time") + dt.timedelta(hours=12)),
            end.with_columns(pl.col("prediction_time") - dt.timedelta(days=300)),
            end.head(1).with_columns(prediction_time=pl.lit(D(1900, 1, 1))),
        ]
    )
    batch = builder.build_batch(store, rows).validate()
    return builder, store, rows, batch


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sources(seed: int):
    return [_gen(seed), KeyedRandom(seed)]


def _row_events(b: EventBatch, i: int) -> dict[int, tuple[float, float, bool, float]]:
    """code -> (time_before_prediction, value, has_value, age) of row i (codes are unique)."""
    m = b.mask[i]
    return {
        int(c): (float(t), float(v), bool(h), float(a))
        for c, t, v, h, a in zip(
            b.codes[i][m],
            b.time_before_prediction[i][m],
            b.values[i][m],
            b.has_value[i][m],
            b.age[i][m],
            strict=True,
        )
    }


def _same(a: EventBatch, b: EventBatch) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in EventBatch.__dataclass_fields__)


GRID = [(name, lvl) for name, lvl in perturbation_grid("ehr")] + [
    ("time_jitter", 1 / 24),
    ("time_jitter", 30.0),
    ("code_noise", 1.0),
    ("event_dropout", 0.9),
]


# --------------------------------------------------------------------------------------------
# The contract: nothing added, nothing after the prediction time, layout kept.


@pytest.mark.parametrize(("name", "level"), GRID)
def test_never_adds_an_event_nor_one_after_the_prediction_time(world, name, level):
    builder, _, _, batch = world
    kw = {"vocab_size": len(builder.vocabulary)} if name == "code_noise" else {}
    for gen in _sources(3):
        out = perturb(batch, name, level, gen, **kw).validate()  # left padding, zeros, no leak
        assert (out.time_before_prediction[out.mask] >= 0).all()
        assert (out.lengths <= batch.lengths).all()
        for field in ("subject_id", "prediction_time", "static", "age_known"):
            assert torch.equal(getattr(out, field), getattr(batch, field))
        # Tensors keep their shapes; rows that had no events still have none.
        assert out.codes.shape == batch.codes.shape
        assert not out.mask[batch.lengths == 0].any()
        if name != "code_noise":  # every output event is an input event (codes are unique)
            for i in range(batch.batch_size):
                before, after = _row_events(batch, i), _row_events(out, i)
                assert set(after) <= set(before)
                for code, (_, value, has, _) in after.items():
                    assert (value, has) == before[code][1:3]
        if name == "event_dropout":
            assert torch.equal(out.mask.any(1), batch.mask.any(1))  # >= 1 kept per row


def test_registry_holds_the_design_levels():
    assert PERTURBATIONS == {
        "event_dropout": (0.1, 0.3, 0.5),
        "time_jitter": (1.0,),
        "code_noise": (0.1,),
    }
    assert ICU_PERTURBATIONS["time_jitter"] == (1 / 24,)
    assert ICU_PERTURBATIONS["event_dropout"] == PERTURBATIONS["event_dropout"]
    assert TEXT_PERTURBATIONS == {"token_dropout": (0.1, 0.3), "sentence_dropout": (0.1, 0.3)}
    assert ("sentence_dropout", 0.3) in perturbation_grid("text")
    assert len(perturbation_grid("ehr")) == 5
    with pytest.raises(ValueError, match="modality"):
        perturbation_grid("x-ray")
    with pytest.raises(ValueError, match="unknown EHR perturbation"):
        perturb(None, "blur", 0.1, _gen(0))


def test_text_perturbations_are_seeded_and_identity_at_zero():
    texts = ["Chest pain since Monday. No fever. ECG normal.", "Patient stable. Discharged home."]
    assert perturb_text(texts, "token_dropout", 0.0, 1) == texts
    a = perturb_text(texts, "sentence_dropout", 0.3, 7)
    assert a == perturb_text(texts, "sentence_dropout", 0.3, 7)
    assert all(t.strip() for t in perturb_text(texts, "token_dropout", 0.3, 7))
    with pytest.raises(ValueError, match="unknown text perturbation"):
        perturb_text(texts, "crop", 0.5, 0)


# --------------------------------------------------------------------------------------------
# Event dropout.


def test_dropout_reuses_views_and_has_a_binomial_rate(world):
    _, _, _, batch = world
    # With a torch.Generator it is views.event_dropout, draw for draw.
    assert _same(event_dropout(batch, 0.3, _gen(5)), views_event_dropout(batch, 0.3, _gen(5)))
    # Rows with >= 10 events essentially never need the keep-one rescue (0.5**10): the number
    # of removed events is then Binomial(N, p). 5 standard deviations.
    rows = batch.lengths >= 10
    n = int(batch.lengths[rows].sum())
    for p in PERTURBATIONS["event_dropout"]:
        for gen in _sources(11):
            out = event_dropout(batch, p, gen)
            removed = int((batch.lengths - out.lengths)[rows].sum())
            assert abs(removed - n * p) < 5 * math.sqrt(n * p * (1 - p)), (p, gen)
    with pytest.raises(ValueError):
        event_dropout(batch, 1.0, KeyedRandom(0))


# --------------------------------------------------------------------------------------------
# Time jitter.


@pytest.mark.parametrize("gen", _sources(2), ids=["torch", "keyed"])
def test_jitter_with_zero_width_is_the_exact_identity(world, gen):
    _, _, _, batch = world
    assert _same(time_jitter(batch, 0.0, gen), batch)


def test_jitter_moves_each_event_by_at_most_j_and_drops_only_what_passed_now(world):
    _, _, _, batch = world
    j = 5.0
    out = time_jitter(batch, j, KeyedRandom(4)).validate()
    offsets, dropped_tbp = [], []
    for i in range(batch.batch_size):
        before, after = _row_events(batch, i), _row_events(out, i)
        for code, (tbp, _, _, age) in before.items():
            if code not in after:
                dropped_tbp.append(tbp)
                continue
            off = tbp - after[code][0]  # the event moved later by `off` days
            offsets.append(off)
            if batch.age_known[i]:
                assert after[code][3] == pytest.approx(age + off / 365.25, abs=1e-4)
            else:
                assert after[code][3] == 0.0
    offsets = np.array(offsets)
    assert np.abs(offsets).max() <= j + 1e-3
    assert abs(offsets.mean()) < 0.3 and np.abs(offsets).max() > 0.9 * j  # ~U[-J, J]
    assert offsets.std() == pytest.approx(j / math.sqrt(3), rel=0.1)
    # Only events within J of the prediction time can pass it (and be dropped).
    assert dropped_tbp and max(dropped_tbp) < j
    # Events exactly at the prediction time go with probability 1/2.
    at_now = (batch.time_before_prediction == 0) & batch.mask
    assert at_now.sum() >= 40
    gone = sum(1 for t in dropped_tbp if t == 0.0) / int(at_now.sum())
    assert 0.25 < gone < 0.75


def test_jitter_resorts_and_recomputes_delta_t(world):
    _, _, _, batch = world
    out = time_jitter(batch, 20.0, _gen(9))
    m, tbp = out.mask, out.time_before_prediction
    both = m[:, 1:] & m[:, :-1]
    # New order is by new time, and delta_t is the gap between consecutive kept events.
    assert (tbp[:, :-1][both] >= tbp[:, 1:][both]).all()
    np.testing.assert_allclose(
        out.delta_t[:, 1:][both].numpy(), (tbp[:, :-1] - tbp[:, 1:])[both].numpy(), atol=2e-3
    )
    assert (out.delta_t[m] >= 0).all()
    # The earliest event: gap to the (unjittered) predecessor outside the batch when the row
    # was truncated, 0 when the row starts the record.
    seq = batch.seq_len
    for i in range(batch.batch_size):
        n_in, n_out = int(batch.lengths[i]), int(out.lengths[i])
        if n_out == 0:
            continue
        first_in = seq - n_in
        d0 = float(batch.delta_t[i, first_in])
        got = float(out.delta_t[i, seq - n_out])
        if d0 == 0.0:
            assert got == 0.0
        else:
            anchor = float(batch.time_before_prediction[i, first_in]) + d0
            want = max(0.0, anchor - float(tbp[i, seq - n_out]))
            assert got == pytest.approx(want, abs=2e-3)
    assert (batch.delta_t[:, :1][batch.mask[:, :1]] > 0).any()  # the fixture has truncated rows


def test_jitter_can_empty_a_row_but_never_adds_an_event(world):
    _, _, _, batch = world
    # Every event at the prediction time: each is moved past it (and dropped) with probability
    # 1/2, rows may end up empty, and no event is ever added or clamped to "now".
    now = replace(batch, time_before_prediction=torch.zeros_like(batch.time_before_prediction))
    out = time_jitter(now, 1.0, KeyedRandom(0)).validate()
    assert (out.lengths <= now.lengths).all()
    frac = out.lengths.sum().item() / now.lengths.sum().item()
    assert 0.4 < frac < 0.6
    assert ((out.lengths == 0) & (now.lengths > 0)).any() or (now.lengths == 1).sum() == 0


# --------------------------------------------------------------------------------------------
# Code noise.


def test_code_noise_identity_all_changed_and_in_range(world):
    builder, _, _, batch = world
    v = len(builder.vocabulary)
    for gen in _sources(6):
        assert _same(code_noise(batch, 0.0, gen, vocab_size=v), batch)
        # Some events are UNK (codes unseen in training): they must map into the vocabulary.
        unk = batch.mask & (batch.codes % 7 == 0)
        src = replace(batch, codes=torch.where(unk, UNK_ID, batch.codes))
        out = code_noise(src, 1.0, gen, vocab_size=v).validate()
        m = src.mask
        assert (out.codes[m] != src.codes[m]).all()
        assert (out.codes[m] >= N_RESERVED).all() and (out.codes[m] < v).all()
        assert not out.has_value[m].any() and (out.values[m] == 0).all()
        for field in ("mask", "time_before_prediction", "delta_t", "age"):
            assert torch.equal(getattr(out, field), getattr(src, field))
        # Uniform over the other codes: every code is drawn, none hugely over-represented.
        counts = torch.bincount(out.codes[m], minlength=v)[N_RESERVED:].numpy()
        expected = m.sum().item() / (v - N_RESERVED)
        assert counts.min() > 0.5 * expected and counts.max() < 1.6 * expected


def test_code_noise_rate_is_binomial(world):
    builder, _, _, batch = world
    n = int(batch.mask.sum())
    for gen in _sources(8):
        out = code_noise(batch, 0.1, gen, vocab_size=len(builder.vocabulary))
        changed = int((out.codes != batch.codes).sum())
        assert abs(changed - 0.1 * n) < 5 * math.sqrt(n * 0.1 * 0.9)
        # Values survive only on unchanged events.
        kept = batch.mask & (out.codes == batch.codes)
        assert torch.equal(out.has_value[kept], batch.has_value[kept])


def test_code_noise_rejects_a_batch_from_another_vocabulary(world):
    _, _, _, batch = world
    with pytest.raises(ValueError, match="outside"):
        code_noise(batch, 0.1, _gen(0), vocab_size=5)
    tiny = replace(batch, codes=torch.where(batch.mask, 2, 0))
    with pytest.raises(ValueError, match="at least 2 timed codes"):
        code_noise(tiny, 1.0, _gen(0), vocab_size=3)


# --------------------------------------------------------------------------------------------
# Seeding.


@pytest.mark.parametrize(("name", "level"), perturbation_grid("ehr"))
def test_determinism_by_seed(world, name, level):
    builder, _, _, batch = world
    kw = {"vocab_size": len(builder.vocabulary)} if name == "code_noise" else {}
    for make in (_gen, KeyedRandom):
        a, b, c = (perturb(batch, name, level, make(s), **kw) for s in (1, 1, 2))
        assert _same(a, b)
        assert not _same(a, c)


def test_keyed_draws_belong_to_the_event_not_the_batch(world):
    builder, store, rows, batch = world
    sub = rows[[7, 3, 60]]
    small = builder.build_batch(store, sub)
    for name, level in perturbation_grid("ehr"):
        kw = {"vocab_size": len(builder.vocabulary)} if name == "code_noise" else {}
        full = perturb(batch, name, level, KeyedRandom(5), **kw)
        part = perturb(small, name, level, KeyedRandom(5), **kw)
        for j, i in enumerate([7, 3, 60]):
            for f in EventBatch.SEQUENCE_FIELDS:
                assert torch.equal(getattr(part, f)[j], getattr(full, f)[i]), (name, f)
    # An event's draw does not depend on max_len either (ranks count from the most recent).
    short = builder.build_batch(store, sub, max_len=8)
    u_long, u_short = KeyedRandom(5).uniform(small, 1), KeyedRandom(5).uniform(short, 1)
    assert torch.equal(u_short, u_long[:, -8:])
    assert ((u_long >= 0) & (u_long < 1)).all()


# --------------------------------------------------------------------------------------------
# Embedding under perturbation.


@pytest.fixture(scope="module")
def encoder(world):
    builder = world[0]
    torch.manual_seed(0)
    cfg = EHREncoderConfig.from_builder(builder, d_model=16, n_heads=2, n_layers=1)
    return EHREncoder(cfg).eval()


def test_embed_perturbed_clean_is_the_clean_embedding(world, encoder):
    _, store, rows, _ = world
    clean = encode_histories(encoder, store, *row_times(rows), batch_size=32).backbone
    assert np.array_equal(embed_perturbed(encoder, store, rows, None, 0.0, 0, 32), clean)
    zero = embed_perturbed(encoder, store, rows, "event_dropout", 0.0, 0, 32)
    assert np.array_equal(zero, clean)


def test_embed_perturbed_is_independent_of_batch_size_and_row_order(world, encoder):
    _, store, rows, _ = world
    a = embed_perturbed(encoder, store, rows, "time_jitter", 1.0, 3, batch_size=7)
    b = embed_perturbed(encoder, store, rows, "time_jitter", 1.0, 3, batch_size=500)
    np.testing.assert_allclose(a, b, atol=1e-5)
    perm = np.random.default_rng(0).permutation(rows.height)
    c = embed_perturbed(encoder, store, rows[perm], "time_jitter", 1.0, 3, 16)
    np.testing.assert_allclose(c, a[perm], atol=1e-5)
    clean = encode_histories(encoder, store, *row_times(rows)).backbone
    assert not np.allclose(a, clean, atol=1e-4)
    # code_noise takes its vocabulary size from the encoder.
    z = embed_perturbed(encoder, store, rows, "code_noise", 0.1, 3)
    assert z.shape == clean.shape and np.isfinite(z).all()


def test_embed_perturbed_refuses_a_perturbation_that_leaks(world, encoder):
    _, store, rows, _ = world

    def peek_ahead(batch: EventBatch, level: float, generator) -> EventBatch:
        tbp = torch.where(batch.mask, batch.time_before_prediction - level, 0.0)
        return replace(batch, time_before_prediction=tbp)

    with pytest.raises(ValueError, match="leakage"):
        embed_perturbed(encoder, store, rows, peek_ahead, 1.0, 0)


def test_robustness_sweep_records(world, encoder):
    _, store, rows, _ = world
    records, emb = robustness_sweep(encoder, store, rows, seed=1, k=4, batch_size=64)
    assert [(r["perturbation"], r["level"]) for r in records] == perturbation_grid("ehr")
    for r in records:
        assert set(r) >= {"cosine_drift", "relative_drift", "subspace_distance", "chance", "n"}
        assert r["chance"] == pytest.approx(math.sqrt(1 - 4 / (rows.height - 1)))
        assert all(math.isfinite(r[key]) for key in ("cosine_drift", "relative_drift"))
    kept = {(r["perturbation"], r["level"]): r["event_fraction_kept"] for r in records}
    assert kept[("event_dropout", 0.5)] == pytest.approx(0.5, abs=0.05)
    assert kept[("code_noise", 0.1)] == 1.0 and kept[("time_jitter", 1.0)] < 1.0
    drift = {(r["perturbation"], r["level"]): r["relative_drift"] for r in records}
    assert drift[("event_dropout", 0.1)] < drift[("event_dropout", 0.5)]
    assert emb[("clean", 0.0)].shape == emb[("code_noise", 0.1)].shape


# --------------------------------------------------------------------------------------------
# Drift closed forms.


def _z(n: int = 400, d: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.linspace(3.0, 0.5, d)  # distinct variances: a well-defined top-k subspace
    mean = np.random.default_rng(123).normal(size=d) * 4  # non-zero, the same for every seed
    return rng.normal(size=(n, d)) * scales + mean


def test_drift_of_itself_is_zero():
    z = _z()
    out = embedding_drift(z, z, k=4)
    assert out["cosine_drift"] == pytest.approx(0.0, abs=1e-12)
    assert out["relative_drift"] == 0.0
    assert out["subspace_distance"] == pytest.approx(0.0, abs=1e-6)
    assert out["chance"] == pytest.approx(chance_subspace_distance(400, 4))


def test_drift_of_a_rotation():
    z = _z()
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(12, 12)))
    out = embedding_drift(z, z @ q, k=4)
    assert out["subspace_distance"] == pytest.approx(0.0, abs=1e-6)  # same patterns over rows
    assert out["cosine_drift"] > 0.1
    mu = z.mean(0)
    want = np.square(z - z @ q).sum() / np.square(z - mu).sum()
    assert out["relative_drift"] == pytest.approx(want, rel=1e-12)
    assert embedding_drift(z, z @ np.eye(12), k=4)["cosine_drift"] == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize("s", [0.5, 2.0, 3.0])
def test_drift_of_a_scaled_copy(s):
    z = _z()
    mu = z.mean(0)
    out = embedding_drift(z, mu + s * (z - mu), k=4)
    assert out["cosine_drift"] == pytest.approx(0.0, abs=1e-12)
    assert out["subspace_distance"] == pytest.approx(0.0, abs=1e-6)
    assert out["relative_drift"] == pytest.approx((s - 1) ** 2, rel=1e-12)
    # Scale-free: the same numbers for (cZ + t, cZ' + t).
    again = embedding_drift(10 * z + 3, 10 * (mu + s * (z - mu)) + 3, k=4)
    assert again["relative_drift"] == pytest.approx(out["relative_drift"], rel=1e-9)


def test_a_common_shift_is_drift_that_subspaces_cannot_see():
    # Why both matrices are centred with the CLEAN mean: a shift of every row is real drift.
    z = _z()
    shift = np.full(12, 1.0)
    out = embedding_drift(z, z + shift, k=4)
    assert out["subspace_distance"] == pytest.approx(0.0, abs=1e-6)
    assert out["cosine_drift"] > 0.01
    total = np.square(z - z.mean(0)).sum() / len(z)
    assert out["relative_drift"] == pytest.approx(12.0 / total, rel=1e-12)


def test_drift_against_independent_noise_is_at_chance():
    z, w = _z(n=600, seed=0), _z(n=600, seed=1)
    out = embedding_drift(z, w, k=6)
    assert out["subspace_distance"] == pytest.approx(chance_subspace_distance(600, 6), abs=0.01)
    assert out["cosine_drift"] == pytest.approx(1.0, abs=0.15)
    assert out["relative_drift"] == pytest.approx(2.0, abs=0.25)  # E||z - z'||^2 = 2 tr C


def test_drift_input_checks():
    z = _z(n=10)
    with pytest.raises(ValueError, match="shape"):
        embedding_drift(z, z[:5], k=2)
    with pytest.raises(ValueError, match="zero variance"):
        embedding_drift(np.ones((10, 3)), z[:, :3], k=2)
    with pytest.raises(ValueError, match="non-finite"):
        embedding_drift(z, np.full_like(z, np.nan), k=2)
