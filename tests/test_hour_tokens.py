"""Hour tokens: the values measured in each hour, never a later one; missing stays missing."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import torch

from _helpers import events_frame
from densefeat.data.ehr import HistoryBuilder
from densefeat.data.ehr.batch import US_PER_DAY
from densefeat.data.ehr.builder import resolve_tokens
from densefeat.data.ehr.views import event_dropout
from densefeat.methods import get_method
from densefeat.models.ehr import EHREncoder, EHREncoderConfig
from densefeat.train import TrainConfig

H = 3_600_000_000
T0 = dt.datetime(2020, 1, 1)
CODES = ("VITAL//HR", "VITAL//MAP", "LAB//Lactate", "FLAG")  # FLAG has no value


def _events(seed: int = 0, n_subjects: int = 12) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(1, n_subjects + 1):
        rows.append((s, None, "GENDER/F", None))
        rows.append((s, T0 - dt.timedelta(days=365 * 50), "MEDS_BIRTH", None))
        minutes = np.sort(rng.integers(0, 60 * 30, size=int(rng.integers(5, 60))))
        for m in minutes:
            code = CODES[int(rng.integers(0, 4))]
            value = None if code == "FLAG" else float(rng.normal(80, 10))
            rows.append((s, T0 + dt.timedelta(minutes=int(m)), code, value))
    return events_frame(rows)


def _builder(events: pl.DataFrame, max_len: int) -> HistoryBuilder:
    return HistoryBuilder.fit(events, split=None, max_len=max_len, min_subjects=1, tokens="hours")


def _reference(events, builder, sid, pt, max_len):
    """Hour tokens by a plain loop over events (independent of the vectorised gather)."""
    vocab, norm = builder.vocabulary, builder.normalizer
    v = len(vocab)
    timed = events.filter(pl.col("time").is_not_null()).with_columns(
        pl.col("time").cast(pl.Int64).alias("t")
    )
    out_v = np.zeros((len(sid), max_len, v), np.float32)
    out_m = np.zeros((len(sid), max_len, v), bool)
    for i, (s, p) in enumerate(zip(sid, pt, strict=True)):
        ev = timed.filter((pl.col("subject_id") == s) & (pl.col("t") <= p)).sort("t")
        bins: dict[int, list] = {}
        for t, code, value in ev.select("t", "code", "numeric_value").iter_rows():
            bins.setdefault((p - t) // H, []).append((code, value))
        ks = sorted(bins)[:max_len]  # most recent first
        for rank, k in enumerate(ks):
            pos = max_len - 1 - rank
            for code, value in bins[k]:  # oldest first: the last write is the last value
                cid = int(vocab.encode([code])[0])
                out_m[i, pos, cid] = True
                if value is not None:
                    out_v[i, pos, cid] = norm.transform([code], [value])[0]
    return out_v, out_m


@pytest.mark.parametrize("max_len", [4, 64])
def test_hour_tokens_match_a_loop_reference(max_len):
    events = _events()
    builder = _builder(events, max_len)
    store = builder.encode(events)
    rng = np.random.default_rng(1)
    sid = np.repeat(store.subject_ids, 2)
    # Prediction times off the hour (minutes and seconds), so bins cut through the data.
    pt = (
        np.datetime64(T0, "us").astype(np.int64)
        + rng.integers(0, 30 * H, size=sid.size)
        + rng.integers(0, 60_000_000, size=sid.size)
    )
    batch = store.gather(sid, pt).validate()
    assert batch.is_binned and batch.seq_len == max_len
    want_v, want_m = _reference(events, builder, sid, pt, max_len)
    np.testing.assert_array_equal(batch.bin_mask.numpy(), want_m)
    np.testing.assert_allclose(batch.bin_values.numpy(), want_v, rtol=1e-6, atol=1e-6)
    # Missing stays missing: no value where nothing was measured in that hour.
    assert (batch.bin_values[~batch.bin_mask] == 0).all()
    # Token times: within the hour before its bin end, and never after the prediction time.
    tbp_h = batch.time_before_prediction[batch.mask] * 24
    assert (tbp_h >= 0).all()


def test_a_value_one_second_after_the_prediction_time_never_enters():
    events = _events()
    builder = _builder(events, 16)
    pt = np.datetime64(T0 + dt.timedelta(hours=10), "us").astype(np.int64)
    one_second_later = T0 + dt.timedelta(hours=10, seconds=1)
    later = events_frame(
        [(1, one_second_later, "VITAL//HR", 1e4), (1, one_second_later, "LAB//NEW", 3.0)]
    )
    with_later = pl.concat([events, later]).sort("subject_id", "time", nulls_last=False)
    a = builder.encode(events).gather(np.array([1]), np.array([pt]))
    b = builder.encode(with_later).gather(np.array([1]), np.array([pt]))
    for name in a.position_fields():
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    # ... while at the prediction time itself the same event does enter (bin 0).
    at = events_frame([(1, T0 + dt.timedelta(hours=10), "VITAL//HR", 1e4)])
    c = builder.encode(pl.concat([events, at]).sort("subject_id", "time", nulls_last=False))
    c = c.gather(np.array([1]), np.array([pt]))
    hr = int(builder.vocabulary.encode(["VITAL//HR"])[0])
    assert bool(c.bin_mask[0, -1, hr]) and float(c.bin_values[0, -1, hr]) == 10.0  # clipped


def test_cutoff_embedding_equals_a_batch_built_at_the_cutoff():
    events = _events(seed=2)
    builder = _builder(events, 64)
    store = builder.encode(events)
    torch.manual_seed(0)
    enc = EHREncoder(EHREncoderConfig.from_builder(builder, d_model=16, n_heads=2, n_layers=1))
    enc.eval()
    assert enc.config.tokens == "hours" and enc.config.n_variables == len(builder.vocabulary)
    sid = store.subject_ids
    t1 = np.full(sid.size, np.datetime64(T0 + dt.timedelta(hours=24, minutes=30), "us")).astype(
        np.int64
    )
    t = t1 - 12 * H  # a whole number of hours earlier: a bin boundary
    at_both = enc.forward_at(store.gather(sid, t1), torch.from_numpy(np.stack([t, t1], 1)))
    torch.testing.assert_close(at_both[:, 0], enc(store.gather(sid, t)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(at_both[:, 1], enc(store.gather(sid, t1)), rtol=1e-4, atol=1e-5)
    # An event batch does not fit an hour encoder (named).
    events_builder = HistoryBuilder(builder.vocabulary, builder.normalizer, 64, "events")
    with pytest.raises(ValueError, match="hour"):
        enc(events_builder.encode(events).gather(sid, t1))


def test_views_move_hour_values_with_their_hour():
    events = _events()
    store = _builder(events, 32).encode(events)
    pt = np.full(store.n_subjects, np.datetime64(T0 + dt.timedelta(hours=30), "us")).astype(
        np.int64
    )
    batch = store.gather(store.subject_ids, pt)
    out = event_dropout(batch, 0.5, torch.Generator().manual_seed(0)).validate()
    # Every kept hour keeps its own values: match kept tokens by their time.
    for i in range(batch.batch_size):
        before = dict(
            zip(batch.time_before_prediction[i][batch.mask[i]].tolist(),
                batch.bin_values[i][batch.mask[i]], strict=True)
        )  # fmt: skip
        for tb, vals in zip(
            out.time_before_prediction[i][out.mask[i]].tolist(),
            out.bin_values[i][out.mask[i]],
            strict=True,
        ):
            assert torch.equal(before[tb], vals)


def test_next_hour_loss_is_the_sum_of_its_terms():
    events = _events()
    builder = _builder(events, 16)
    store = builder.encode(events)
    cfg = TrainConfig.from_dict({"method": "masked", "d_model": 16, "n_heads": 2, "n_layers": 1})
    method = get_method("masked")
    torch.manual_seed(0)
    enc = EHREncoder(EHREncoderConfig.from_builder(builder, d_model=16, n_heads=2, n_layers=1))
    head = method.build_head(cfg, 16, 2 * enc.config.n_variables)
    pt = np.full(store.n_subjects, np.datetime64(T0 + dt.timedelta(hours=30), "us")).astype(
        np.int64
    )
    out = method.forward(enc, head, {"batch": store.gather(store.subject_ids, pt)})
    loss, terms = method.build_loss(cfg)(out, {})
    assert set(terms) == {"presence_bce", "value_mse"}
    torch.testing.assert_close(loss.detach(), terms["presence_bce"] + terms["value_mse"])
    # Independent: BCE over every (token, variable) and MSE over measured entries.
    m = out["bin_mask"].float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out["bin_logits"], m)
    mse = ((out["bin_pred"] - out["bin_values"]) ** 2 * m).sum() / m.sum()
    torch.testing.assert_close(loss.detach(), (bce + mse).detach())
    loss.backward()


def test_auto_tokens():
    numeric = _events().filter(pl.col("code") != "FLAG").lazy()  # every timed value numeric
    assert resolve_tokens("auto", numeric, 10) == "hours"
    assert resolve_tokens("auto", _events().lazy(), 10) == "events"  # 3/4 numeric < 80%
    assert resolve_tokens("auto", numeric, 10_000) == "events"  # too wide a token
    codes_only = _events().with_columns(pl.lit(None, pl.Float32).alias("numeric_value")).lazy()
    assert resolve_tokens("auto", codes_only, 10) == "events"
    assert resolve_tokens("events", numeric, 10) == "events"
    with pytest.raises(ValueError, match="tokens"):
        resolve_tokens("minutes", numeric, 10)


def test_history_state_round_trip_keeps_tokens():
    events = _events()
    builder = _builder(events, 8)
    again = HistoryBuilder.from_dict(builder.to_dict())
    assert again.tokens == "hours"
    state = builder.to_dict()
    state.pop("tokens")
    assert HistoryBuilder.from_dict(state).tokens == "events"
    assert US_PER_DAY == 24 * H
