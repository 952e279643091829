"""Hour tokens: the values measured in each hour, never a later one; missing stays missing."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import torch

from _helpers import events_frame
from densefeat.data.ehr import HistoryBuilder
from densefeat.data.ehr.batch import US_PER_DAY, EventBatch
from densefeat.data.ehr.builder import resolve_tokens
from densefeat.data.ehr.views import event_dropout
from densefeat.methods import get_method
from densefeat.models.ehr import HOUR_STATE_CHANNELS, EHREncoder, EHREncoderConfig, hour_state
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


@pytest.mark.parametrize("carry_forward", [False, True])
def test_cutoff_embedding_equals_a_batch_built_at_the_cutoff(carry_forward):
    events = _events(seed=2)
    builder = _builder(events, 64)
    store = builder.encode(events)
    torch.manual_seed(0)
    enc = EHREncoder(
        EHREncoderConfig.from_builder(
            builder, d_model=16, n_heads=2, n_layers=1, carry_forward=carry_forward
        )
    )
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


def _state_reference(batch, max_len):
    """hour_state by a plain loop over (row, token, variable)."""
    values, mask = batch.bin_values.numpy(), batch.bin_mask.numpy()
    tbp = batch.time_before_prediction.numpy().astype(np.float64)
    b, length, v = mask.shape
    out = np.zeros((b, length, HOUR_STATE_CHANNELS * v))
    for i in range(b):
        for var in range(v):
            last, count = None, 0
            for p in range(length):
                if mask[i, p, var]:
                    last, count = p, count + 1
                if last is None:
                    continue
                hours = (tbp[i, last] - tbp[i, p]) * 24.0
                out[i, p, var] = values[i, last, var]
                out[i, p, v + var] = 1.0
                out[i, p, 2 * v + var] = np.log1p(hours) / np.log1p(1000.0)
                out[i, p, 3 * v + var] = np.log1p(count) / np.log1p(max_len)
    return out


@pytest.mark.parametrize("max_len", [4, 32])
def test_hour_state_matches_a_loop_reference(max_len):
    events = _events(seed=3)
    store = _builder(events, max_len).encode(events)
    rng = np.random.default_rng(4)
    pt = np.datetime64(T0, "us").astype(np.int64) + rng.integers(0, 30 * H, store.n_subjects)
    batch = store.gather(store.subject_ids, pt).validate()
    state = hour_state(batch, max_len)
    b, length, v = batch.bin_mask.shape
    assert state.shape == (b, length, HOUR_STATE_CHANNELS * v)
    np.testing.assert_allclose(state.numpy(), _state_reference(batch, max_len), atol=1e-5)
    # A variable is carried only once measured: before that every channel is 0, and the
    # carried value is the measured one in the hours that measure it.
    seen = state[..., v : 2 * v].bool()
    assert (state[..., :v][~seen] == 0).all()
    assert (state[..., 2 * v :][~seen.repeat(1, 1, 2)] == 0).all()
    m = batch.bin_mask
    assert torch.equal(state[..., :v][m], batch.bin_values[m]) and seen[m].all()
    assert (state[..., 2 * v : 3 * v][m] == 0).all()  # 0 hours since a value of this hour


def test_hour_state_is_causal_and_follows_edited_tokens():
    events = _events(seed=5)
    store = _builder(events, 32).encode(events)
    pt = np.full(store.n_subjects, np.datetime64(T0 + dt.timedelta(hours=30), "us")).astype(
        np.int64
    )
    batch = store.gather(store.subject_ids, pt)
    state = hour_state(batch, 32)
    # Editing the most recent token changes nothing before it.
    hr = 2  # any variable id
    edited_values = batch.bin_values.clone()
    edited_mask = batch.bin_mask.clone()
    edited_mask[:, -1, hr] = True
    edited_values[:, -1, hr] = 7.0
    edited = replace(batch, bin_values=edited_values, bin_mask=edited_mask)
    after = hour_state(edited, 32)
    torch.testing.assert_close(after[:, :-1], state[:, :-1])
    # ... and the last token now carries the new value, seen, 0 hours old.
    v = batch.bin_mask.shape[-1]
    assert (after[:, -1, hr] == 7.0).all() and (after[:, -1, v + hr] == 1).all()
    assert (after[:, -1, 2 * v + hr] == 0).all()
    # A training view that drops measurements moves the state with it (read from the batch).
    dropped = event_dropout(batch, 0.5, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(
        hour_state(dropped, 32).numpy(), _state_reference(dropped, 32), atol=1e-5
    )


def test_carried_state_reaches_the_encoder():
    events = _events(seed=6)
    builder = _builder(events, 32)
    store = builder.encode(events)
    pt = np.full(store.n_subjects, np.datetime64(T0 + dt.timedelta(hours=30), "us")).astype(
        np.int64
    )
    batch = store.gather(store.subject_ids, pt)
    torch.manual_seed(0)
    sizes = {"d_model": 16, "n_heads": 2, "n_layers": 1}
    enc = EHREncoder(EHREncoderConfig.from_builder(builder, carry_forward=True, **sizes)).eval()
    plain = EHREncoder(EHREncoderConfig.from_builder(builder, **sizes)).eval()
    v = len(builder.vocabulary)
    assert enc.bin_embedding.in_features == (2 + HOUR_STATE_CHANNELS) * v
    assert plain.bin_embedding.in_features == 2 * v
    # Cut attention's content (q, k, v are then constants): the last token's state reads
    # nothing from earlier tokens except what its own input carries.
    with torch.no_grad():
        for e in (enc, plain):
            for block in e.blocks:
                block.attn.qkv.weight.zero_()
    # A variable measured in an earlier hour but not in the last one; shift its values.
    earlier = batch.bin_mask[:, :-1].any(1) & ~batch.bin_mask[:, -1]  # (B, V)
    row, var = (int(i) for i in torch.nonzero(earlier)[0])
    one = replace(batch, **{n: getattr(batch, n)[row : row + 1] for n in _FIELDS})
    values = one.bin_values.clone()
    values[..., var] = torch.where(one.bin_mask[..., var], values[..., var] + 3.0, 0.0)
    moved = replace(one, bin_values=values)
    with torch.no_grad():
        torch.testing.assert_close(plain(one), plain(moved))  # the hour alone: blind to it
        assert (enc(one) - enc(moved)).abs().max() > 1e-4  # the carried value reaches it


_FIELDS = [f.name for f in dataclasses.fields(EventBatch)]


def test_carry_forward_config():
    events = _events()
    builder = _builder(events, 8)
    with pytest.raises(ValueError, match="carry_forward needs hour tokens"):
        EHREncoderConfig(vocab_size=10, n_static=3, carry_forward=True)
    with pytest.raises(ValueError, match="carry_forward must be a bool"):
        EHREncoderConfig.from_builder(builder, carry_forward=1)
    # Runs written before the state existed load as the hour alone.
    state = EHREncoderConfig.from_builder(builder).to_dict()
    state.pop("carry_forward")
    assert EHREncoderConfig.from_dict(state).carry_forward is False
    # The training setting reaches hour encoders and is ignored on event tokens.
    from densefeat.train.modalities.ehr import ehr_encoder_config

    cfg = TrainConfig.from_dict({"method": "masked", "encoder": {"carry_forward": True}})
    assert ehr_encoder_config(cfg, builder).carry_forward is True
    events_builder = HistoryBuilder(builder.vocabulary, builder.normalizer, 8, "events")
    assert ehr_encoder_config(cfg, events_builder).carry_forward is False
    with pytest.raises(ValueError, match=r"encoder\.carry_forward"):
        TrainConfig.from_dict({"method": "masked", "encoder": {"carry_forward": "yes"}})


def test_a_run_written_before_the_carried_state_loads_as_it_was_trained(tmp_path):
    import json

    from densefeat.data.meds import write_meds_dataset
    from densefeat.train import load_run, train

    events = _events(n_subjects=24)
    ids = list(range(1, 25))
    splits = pl.DataFrame({"subject_id": ids, "split": ["train"] * 20 + ["held_out"] * 4})
    data = write_meds_dataset(tmp_path / "meds", events, dataset_name="h", splits=splits)
    base = {"method": "masked", "d_model": 16, "n_heads": 2, "n_layers": 1, "max_steps": 1,
            "batch_size": 8, "window_days": 0.25, "min_code_subjects": 1, "progress": False,
            "monitor_every": 0, "device": "cpu", "max_len": 16,
            "data": {"tokens": "hours"}}  # fmt: skip
    assert TrainConfig.from_dict(base).encoder.carry_forward is True  # the default
    old, new = tmp_path / "old", tmp_path / "new"
    train(TrainConfig.from_dict({**base, "encoder": {"carry_forward": False}}), data, old)
    train(TrainConfig.from_dict(base), data, new)
    # The old run's config.json as a version without the setting wrote it.
    path = old / "config.json"
    state = json.loads(path.read_text())
    del state["train"]["encoder"]["carry_forward"]
    path.write_text(json.dumps(state))
    loaded = load_run(old)
    assert loaded.cfg.encoder.carry_forward is False
    assert loaded.net.encoder.bin_embedding.in_features == 2 * len(loaded.builder.vocabulary)
    assert load_run(new).net.encoder.config.carry_forward is True
