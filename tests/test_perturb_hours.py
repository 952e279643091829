"""Test-time perturbations of hour tokens: measurements perturbed with their exact times, then
re-binned (densefeat.eval.perturb_hours)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import torch

from _helpers import events_frame
from densefeat.data.ehr import HistoryBuilder
from densefeat.data.ehr.batch import N_RESERVED, US_PER_DAY
from densefeat.eval.perturb import (
    _STREAM_DROPOUT,
    _STREAM_JITTER,
    ICU_PERTURBATIONS,
    KeyedRandom,
    keyed_uniforms_of,
)
from densefeat.eval.perturb_hours import perturb_hour_rows
from densefeat.eval.robustness import robustness_sweep
from densefeat.models.ehr import EHREncoder, EHREncoderConfig

H = 3_600_000_000
T0 = dt.datetime(2020, 1, 1)
CODES = ("VITAL//HR", "VITAL//MAP", "LAB//Lactate", "FLAG")  # FLAG has no value
NAMES = ("event_dropout", "time_jitter", "code_noise")


def _events(seed: int = 0, n_subjects: int = 10) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(1, n_subjects + 1):
        rows.append((s, None, "GENDER/F", None))
        rows.append((s, T0 - dt.timedelta(days=365 * 50), "MEDS_BIRTH", None))
        seconds = np.sort(rng.integers(0, 3600 * 30, size=int(rng.integers(5, 60))))
        for sec in seconds:
            code = CODES[int(rng.integers(0, 4))]
            value = None if code == "FLAG" else float(rng.normal(80, 10))
            rows.append((s, T0 + dt.timedelta(seconds=int(sec)), code, value))
    return events_frame(rows)


def _setup(max_len: int = 8, events: pl.DataFrame | None = None):
    events = _events() if events is None else events
    builder = HistoryBuilder.fit(
        events, split=None, max_len=max_len, min_subjects=1, tokens="hours"
    )
    store = builder.encode(events)
    rng = np.random.default_rng(3)
    sid = np.repeat(store.subject_ids, 2)
    t0 = np.datetime64(T0, "us").astype(np.int64)
    # Whole hours (bins cut exactly at measurements on the hour) and arbitrary times.
    pt = np.where(
        np.arange(sid.size) % 2 == 0,
        t0 + rng.integers(2, 30, size=sid.size) * H,
        t0 + rng.integers(0, 30 * H, size=sid.size),
    )
    return events, builder, store, sid, pt


def _same(a, b) -> None:
    for name in (*a.position_fields(), "subject_id", "prediction_time", "static", "age_known"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize("name", NAMES)
def test_level_zero_is_the_identity(name):
    _, _, store, sid, pt = _setup()
    clean = store.gather(sid, pt)
    out, n_in, n_out = perturb_hour_rows(store, sid, pt, name, 0.0, seed=5)
    _same(out.validate(), clean)
    assert n_in == n_out == int(store.history_lengths(sid, pt, max_len=10**9).sum())


@pytest.mark.parametrize("name", NAMES)
def test_seeded_deterministic_and_independent_of_batch_mates(name):
    _, _, store, sid, pt = _setup()
    level = {"time_jitter": 2 / 24}.get(name, 0.4)
    a, *_ = perturb_hour_rows(store, sid, pt, name, level, seed=7)
    b, *_ = perturb_hour_rows(store, sid, pt, name, level, seed=7)
    _same(a, b)
    c, *_ = perturb_hour_rows(store, sid, pt, name, level, seed=8)
    assert not torch.equal(a.bin_mask, c.bin_mask) or not torch.equal(a.bin_values, c.bin_values)
    assert not torch.equal(a.bin_values, store.gather(sid, pt).bin_values)
    # A row alone, or in another order, gets the same perturbation.
    perm = np.random.default_rng(0).permutation(sid.size)
    d, *_ = perturb_hour_rows(store, sid[perm], pt[perm], name, level, seed=7)
    for name_ in ("bin_values", "bin_mask", "mask", "time_before_prediction", "delta_t"):
        assert torch.equal(getattr(d, name_), getattr(a, name_)[perm]), name_
    e, *_ = perturb_hour_rows(store, sid[3:4], pt[3:4], name, level, seed=7)
    assert torch.equal(e.bin_values[0], a.bin_values[3])


@pytest.mark.parametrize("name", NAMES)
def test_nothing_after_the_prediction_time_ever_enters(name):
    events, builder, store, sid, pt = _setup()
    sid, pt = sid[::2], np.maximum(pt[::2], pt[1::2])  # one row per subject (its later time)
    # Measurements 1 s .. 30 min after every prediction time: within the jitter, so a bug that
    # read them (and moved them back) would show. They must change nothing.
    later = []
    for s, p in zip(sid, pt, strict=True):
        t = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=int(p))
        later += [(int(s), t + dt.timedelta(seconds=1), "VITAL//HR", 1e4)]
        later += [(int(s), t + dt.timedelta(minutes=30), "LAB//Lactate", -1e4)]
    with_later = pl.concat([events, events_frame(later)]).sort(
        "subject_id", "time", nulls_last=False
    )
    store_later = builder.encode(with_later)
    level = {"time_jitter": 3 / 24}.get(name, 0.3)
    a, *_ = perturb_hour_rows(store, sid, pt, name, level, seed=1)
    b, n_in, n_out = perturb_hour_rows(store_later, sid, pt, name, level, seed=1)
    _same(a.validate(), b.validate())
    assert (b.time_before_prediction[b.mask] >= 0).all()
    assert n_out <= n_in


def _loop_reference(events, builder, sid, pt, name, level, seed, max_len):
    """Perturb each row's measurements in a plain loop, then bin them in a plain loop."""
    vocab, norm = builder.vocabulary, builder.normalizer
    v = len(vocab)
    timed = events.filter(pl.col("time").is_not_null()).with_columns(
        pl.col("time").cast(pl.Int64).alias("t")
    )
    out_v = np.zeros((len(sid), max_len, v), np.float32)
    out_m = np.zeros((len(sid), max_len, v), bool)
    for i, (s, p) in enumerate(zip(sid, pt, strict=True)):
        ev = timed.filter((pl.col("subject_id") == s) & (pl.col("t") <= p)).sort("t")
        meas = list(ev.select("t", "code", "numeric_value").iter_rows())
        n = len(meas)
        moved = []
        for j, (t, code, value) in enumerate(meas):
            rank = n - 1 - j
            if name == "time_jitter":
                u = float(keyed_uniforms_of(seed, _STREAM_JITTER, s, p, rank))
                t = t + round(level * US_PER_DAY * (2.0 * u - 1.0))
                if t > p:
                    continue
            else:
                u = float(keyed_uniforms_of(seed, _STREAM_DROPOUT, s, p, rank))
                if u < level:
                    continue
            moved.append((t, j, code, value))
        moved.sort(key=lambda m: (m[0], m[1]))  # stable on the original order
        bins: dict[int, list] = {}
        for t, _, code, value in moved:
            bins.setdefault((p - t) // H, []).append((code, value))
        for rank, k in enumerate(sorted(bins)[:max_len]):
            pos = max_len - 1 - rank
            for code, value in bins[k]:
                cid = int(vocab.encode([code])[0])
                out_m[i, pos, cid] = True
                if value is not None:
                    out_v[i, pos, cid] = norm.transform([code], [value])[0]
    return out_v, out_m


@pytest.mark.parametrize(
    ("name", "level"), [("time_jitter", 1 / 24), ("time_jitter", 0.5), ("event_dropout", 0.3)]
)
def test_matches_a_loop_reference(name, level):
    events, builder, store, sid, pt = _setup(max_len=8)
    out, *_ = perturb_hour_rows(store, sid, pt, name, level, seed=11)
    want_v, want_m = _loop_reference(events, builder, sid, pt, name, level, 11, 8)
    if name == "event_dropout":
        # The reference has no ">= 1 measurement per row" rescue: compare rows that kept one.
        rows = want_m.any(axis=(1, 2))
        assert rows.mean() > 0.9
    else:
        rows = np.ones(sid.size, bool)
    np.testing.assert_array_equal(out.bin_mask.numpy()[rows], want_m[rows])
    np.testing.assert_allclose(out.bin_values.numpy()[rows], want_v[rows], rtol=1e-6, atol=1e-6)
    if name == "time_jitter":
        # Values did move to other hours (the perturbation is not a no-op at this level).
        assert not np.array_equal(want_m, store.gather(sid, pt).bin_mask.numpy())


def test_code_noise_swaps_variables_and_drops_their_values():
    *_, store, sid, pt = _setup(max_len=64)
    clean = store.gather(sid, pt)
    out, n_in, n_out = perturb_hour_rows(store, sid, pt, "code_noise", 1.0, seed=2)
    assert n_in == n_out  # nothing removed, nothing added
    assert torch.equal(out.mask, clean.mask)  # times unchanged: the same hours
    assert torch.equal(out.time_before_prediction, clean.time_before_prediction)
    assert (out.bin_values == 0).all()  # every measurement swapped: no value survives
    # Never PAD or UNK; every hour still measures something.
    assert not out.bin_mask[..., :N_RESERVED].any()
    assert out.bin_mask.any(-1)[out.mask].all()
    # At level 0.3 about 30% of the measurements change variable: hours keep most variables.
    part, *_ = perturb_hour_rows(store, sid, pt, "code_noise", 0.3, seed=2)
    same = (part.bin_mask & clean.bin_mask).sum() / clean.bin_mask.sum()
    assert 0.55 < float(same) < 0.9


def test_draws_equal_those_of_event_tokens():
    """A measurement gets the same uniform whether it is read as an event token or an hour."""
    events = _events()
    b_ev = HistoryBuilder.fit(events, split=None, max_len=512, min_subjects=1, tokens="events")
    *_, sid, pt = _setup()
    batch = b_ev.encode(events).gather(sid, pt)
    u = KeyedRandom(4).uniform(batch, _STREAM_JITTER).numpy()
    n = batch.mask.sum(1).numpy()
    for i in range(sid.size):
        rank = np.arange(n[i] - 1, -1, -1)
        want = keyed_uniforms_of(4, _STREAM_JITTER, sid[i], pt[i], rank)
        np.testing.assert_array_equal(u[i, batch.seq_len - n[i] :], want)


def test_robustness_sweep_on_hour_tokens():
    _, builder, store, sid, pt = _setup(max_len=8)
    cfg = EHREncoderConfig.from_builder(builder, d_model=16, n_layers=1, n_heads=2)
    torch.manual_seed(0)
    enc = EHREncoder(cfg)
    rows = pl.DataFrame(
        {"subject_id": sid, "prediction_time": pl.Series(pt).cast(pl.Datetime("us"))}
    )
    grid = {**ICU_PERTURBATIONS, "time_jitter": (1 / 24, 0.0)}
    records, z = robustness_sweep(enc, store, rows, perturbations=grid, seed=0, k=4)
    by = {(r["perturbation"], r["level"]): r for r in records}
    assert by[("time_jitter", 0.0)]["relative_drift"] < 1e-10  # level 0: the clean rows
    assert by[("code_noise", 0.1)]["event_fraction_kept"] == 1.0
    assert 0.4 < by[("event_dropout", 0.5)]["event_fraction_kept"] < 0.6
    assert by[("time_jitter", 1 / 24)]["event_fraction_kept"] < 1.0  # some moved past T
    for key, r in by.items():
        if key[1] > 0:
            assert r["relative_drift"] > 0, key
        assert np.isfinite(z[key]).all()


def test_event_times_of_hour_tokens_are_their_last_measurements():
    from densefeat.models.ehr import event_times

    events, _, store, sid, pt = _setup(max_len=8)
    batch = store.gather(sid, pt)
    times = event_times(store, batch).numpy()
    timed = events.filter(pl.col("time").is_not_null()).with_columns(
        pl.col("time").cast(pl.Int64).alias("t")
    )
    for i, (s, p) in enumerate(zip(sid, pt, strict=True)):
        t = timed.filter((pl.col("subject_id") == s) & (pl.col("t") <= p))["t"].to_numpy()
        last_of_bin: dict[int, int] = {}
        for x in t:
            last_of_bin[(p - x) // H] = max(last_of_bin.get((p - x) // H, x), x)
        want = [last_of_bin[k] for k in sorted(last_of_bin)[:8]][::-1]
        n = len(want)
        np.testing.assert_array_equal(times[i, 8 - n :], want)
        assert (times[i, : 8 - n] == 0).all()
    # A perturbed batch is not this store's: refused, not misread.
    jittered, *_ = perturb_hour_rows(store, sid, pt, "time_jitter", 0.5, seed=0)
    with pytest.raises(ValueError, match="not gathered from this store"):
        event_times(store, jittered)


def test_benchmark_cli_runs_end_to_end_on_hour_tokens(tmp_path):
    """`densefeat benchmark --set data.tokens=hours`: every stage, robustness included."""
    import json

    from _small_cohort import small_cohort
    from densefeat.cli import main

    data = small_cohort(tmp_path)
    out = tmp_path / "bench"
    args = ["benchmark", "--data", str(data), "--out", str(out), "--methods", "masked"]
    args += ["--seeds", "1", "--budget", "2", "--trials", "1", "--bootstrap", "20"]
    args += ["--ablations", "", "--device", "cpu", "--set", "data.tokens=hours"]
    for key, value in (("d_model", 16), ("n_heads", 2), ("n_layers", 1), ("proj_dim", 16)):
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["errors"] == []
    run_cfg = json.loads(next(out.rglob("masked*/**/config.json")).read_text())
    assert run_cfg["train"]["data"]["tokens"] == "hours"
    rob = [r for r in res["robustness"] if r["method"] == "masked"]
    assert {r["perturbation"] for r in rob} == {"event_dropout", "time_jitter", "code_noise"}
    for r in rob:
        assert 0 < r["event_fraction_kept"] <= 1 and r["relative_drift"] > 0, r
