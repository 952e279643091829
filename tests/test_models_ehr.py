"""EHR encoder and heads: shapes, the causal guarantee, embeddings at cut-offs equal embeddings of
batches built at those cut-offs, padding invariance, empty rows, gradients, determinism, bad
configs and inputs, and the default dataset."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import fields

import polars as pl
import pytest
import torch

from _helpers import events_frame
from densefeat.data.ehr import US_PER_DAY, EventBatch, HistoryBuilder
from densefeat.models import (
    EHREncoder,
    EHREncoderConfig,
    LinearClassifier,
    ProjectionHead,
    event_times,
)

D = dt.datetime
VOCAB = 40
N_STATIC = 5  # 3 static codes + age + age_known


def _config(**kw) -> EHREncoderConfig:
    base = {"vocab_size": VOCAB, "n_static": N_STATIC, "d_model": 32, "n_heads": 4, "max_len": 64}
    return EHREncoderConfig(**{**base, **kw})


def _encoder(seed: int = 0, **kw) -> EHREncoder:
    torch.manual_seed(seed)
    return EHREncoder(_config(**kw)).eval()


def random_batch(b: int = 6, seq: int = 12, seed: int = 0, lengths=None) -> EventBatch:
    """A batch that satisfies the EventBatch contract (checked by validate())."""
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(0, seq + 1, (b,), generator=g) if lengths is None else torch.tensor(lengths)
    pos = torch.arange(seq)
    mask = pos.unsqueeze(0) >= (seq - n).unsqueeze(1)
    codes = torch.randint(2, VOCAB, (b, seq), generator=g) * mask
    has_value = (torch.rand(b, seq, generator=g) < 0.4) & mask
    values = torch.randn(b, seq, generator=g) * has_value
    delta_t = torch.rand(b, seq, generator=g).mul(30).floor() * mask  # whole days
    # Days before prediction: reverse cumulative sum of the gaps after each event.
    after = torch.cat([delta_t[:, 1:], torch.zeros(b, 1)], 1)
    tbp = after.flip(1).cumsum(1).flip(1) * mask
    age_now = 20 + 60 * torch.rand(b, generator=g)
    known = torch.rand(b, generator=g) < 0.8
    age = (age_now.unsqueeze(1) - tbp / 365.25) * mask * known.unsqueeze(1)
    static_codes = (torch.rand(b, N_STATIC - 2, generator=g) < 0.5).float()
    static = torch.cat([static_codes, (age_now * known).unsqueeze(1), known.unsqueeze(1)], 1)
    return EventBatch(
        subject_id=torch.arange(b, dtype=torch.int64),
        prediction_time=torch.full((b,), 1_600_000_000_000_000, dtype=torch.int64),
        codes=codes.long(),
        values=values.float(),
        has_value=has_value,
        delta_t=delta_t.float(),
        age=age.float(),
        time_before_prediction=tbp.float(),
        mask=mask,
        static=static.float(),
        age_known=known,
    ).validate()


def _replace(batch: EventBatch, **changes) -> EventBatch:
    return dataclasses.replace(batch, **changes).validate()


def _left_pad(batch: EventBatch, extra: int) -> EventBatch:
    def pad(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t.new_zeros(t.shape[0], extra), t], dim=1)

    return _replace(batch, **{f: pad(getattr(batch, f)) for f in EventBatch.SEQUENCE_FIELDS})


# --------------------------------------------------------------------------------------------
# A small MEDS-like frame: decades of history, minute times, a lab with values, static codes.


def _events() -> pl.DataFrame:
    rows = [
        (1, None, "GENDER/F", None),
        (1, D(1941, 3, 4), "MEDS_BIRTH", None),
        (1, D(1990, 1, 1), "A", None),
        (1, D(1990, 1, 1), "B", None),  # same time as the previous event
        (1, D(2001, 6, 5, 13, 30), "LAB", 3.0),
        (1, D(2001, 6, 5, 13, 31), "C", None),  # one minute after a cut-off below
        (1, D(2015, 2, 1), "LAB", 7.5),
        (1, D(2020, 12, 31, 23, 59), "A", None),
        (2, None, "GENDER/M", None),
        (2, D(1960, 7, 1), "MEDS_BIRTH", None),
        (2, D(2010, 1, 1), "B", None),
        (2, D(2010, 1, 2), "LAB", 1.0),
        (2, D(2012, 5, 5), "C", None),
        (2, D(2019, 5, 5), "LAB", 12.0),
        # subject 3: no birth (age unknown)
        (3, None, "GENDER/F", None),
        (3, D(2005, 1, 1), "A", None),
        (3, D(2005, 1, 1, 8), "LAB", 2.0),
        (3, D(2018, 9, 9), "B", None),
    ]
    rows += [(1, D(2002, 1, 1 + i), "LAB", float(i)) for i in range(10)]  # values to normalise
    return events_frame(rows).sort("subject_id", "time", nulls_last=False, maintain_order=True)


@pytest.fixture(scope="module")
def toy():
    events = _events()
    builder = HistoryBuilder.fit(events, split=None, min_subjects=1, min_values=2, max_len=64)
    return builder, builder.encode(events)


def _us(t: D) -> int:
    return (t - D(1970, 1, 1)) // dt.timedelta(microseconds=1)


def _rows(sids, times) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "subject_id": pl.Series(sids, dtype=pl.Int64),
            "prediction_time": pl.Series([_us(t) for t in times], dtype=pl.Int64).cast(
                pl.Datetime("us")
            ),
        }
    )


# Per subject: cut-offs before the first event (static only), exactly at an event, between
# events, one minute before an event decades after the birth, and the prediction time.
ENDS = {1: D(2021, 1, 1), 2: D(2020, 1, 1), 3: D(2018, 9, 9)}
CUTS = {
    1: [D(1980, 1, 1), D(1990, 1, 1), D(2001, 6, 5, 13, 30), D(2010, 3, 3, 3, 3), D(2021, 1, 1)],
    2: [D(2000, 1, 1), D(2010, 1, 2), D(2011, 1, 1), D(2019, 5, 5), D(2020, 1, 1)],
    3: [D(2004, 1, 1), D(2005, 1, 1), D(2005, 1, 1, 7, 59), D(2010, 1, 1), D(2018, 9, 9)],
}


def _cut_batches(builder, store):
    sids = sorted(ENDS)
    batch = builder.build_batch(store, _rows(sids, [ENDS[s] for s in sids])).validate()
    cutoffs = torch.tensor([[_us(t) for t in CUTS[s]] for s in sids], dtype=torch.int64)
    at_cuts = [
        builder.build_batch(store, _rows(sids, [CUTS[s][k] for s in sids])).validate()
        for k in range(cutoffs.shape[1])
    ]
    return batch, cutoffs, at_cuts


# --------------------------------------------------------------------------------------------
# Shapes, causality, cut-offs.


def test_shapes_and_dtypes():
    enc = _encoder()
    batch = random_batch()
    z = enc(batch)
    assert z.shape == (6, 32) and z.dtype == torch.float32 and enc.embed_dim == 32
    cut = batch.prediction_time.unsqueeze(1) - torch.tensor([0, 5, 400]) * US_PER_DAY
    assert enc.forward_at(batch, cut).shape == (6, 3, 32)
    assert enc.event_states(batch).shape == (6, 12, 32)
    assert torch.isfinite(z).all()


def test_causal_states_ignore_later_events():
    enc = _encoder()
    batch = random_batch(b=3, seq=10, lengths=[10, 7, 4])
    p = 6  # change every event after position p
    later = torch.arange(10) > p
    changed = _replace(
        batch,
        codes=torch.where(later & batch.mask, (batch.codes + 5) % (VOCAB - 2) + 2, batch.codes),
        values=torch.where(later & batch.has_value, batch.values + 3, batch.values),
    )
    with torch.no_grad():
        before, after = enc.event_states(batch), enc.event_states(changed)
    torch.testing.assert_close(before[:, : p + 1], after[:, : p + 1], atol=1e-6, rtol=0)
    assert (before[:, p + 1 :] - after[:, p + 1 :]).abs().amax() > 1e-3  # the change is seen


def test_appending_an_event_keeps_earlier_states():
    enc = _encoder()
    batch = random_batch(b=2, seq=8, lengths=[5, 3])
    one = {f: getattr(batch, f) for f in EventBatch.SEQUENCE_FIELDS}
    # Shift every row left by one and append a new event (code 7, 2 days later) at the end.
    new = {k: torch.cat([v[:, 1:], v[:, -1:].clone()], 1) for k, v in one.items()}
    new["codes"][:, -1] = 7
    new["delta_t"][:, -1] = 2.0
    new["has_value"][:, -1] = False
    new["values"][:, -1] = 0.0
    new["mask"][:, -1] = True
    new["time_before_prediction"] = torch.where(
        new["mask"], new["time_before_prediction"] + 2.0, 0.0
    )
    new["time_before_prediction"][:, -1] = 0.0
    grown = _replace(batch, **new, prediction_time=batch.prediction_time + 2 * US_PER_DAY)
    with torch.no_grad():
        old, now = enc.event_states(batch), enc.event_states(grown)
    for i, n in enumerate([5, 3]):
        torch.testing.assert_close(old[i, -n:], now[i, -n - 1 : -1], atol=1e-5, rtol=0)
    # The embedding two days before the new prediction time is the old one.
    with torch.no_grad():
        back = enc.forward_at(grown, batch.prediction_time.unsqueeze(1))[:, 0]
    torch.testing.assert_close(back, enc(batch).detach(), atol=1e-5, rtol=0)


def test_event_after_prediction_time_cannot_matter(toy):
    builder, _ = toy
    events = _events()
    later = pl.DataFrame(
        {
            "subject_id": [1, 2],
            "time": [D(2021, 1, 2), D(2020, 1, 1, 0, 1)],
            "code": ["C", "LAB"],
            "numeric_value": [None, 99.0],
        },
        schema=events.schema,
    )
    rows = _rows([1, 2], [ENDS[1], ENDS[2]])
    a = builder.build_batch(events, rows)
    b = builder.build_batch(pl.concat([events, later]), rows)
    enc = _encoder(vocab_size=len(builder.vocabulary), n_static=builder.vocabulary.n_static)
    with torch.no_grad():
        assert torch.equal(enc(a), enc(b))


@pytest.mark.parametrize("exact", [False, True])
def test_forward_at_equals_batches_built_at_cutoffs(toy, exact):
    builder, store = toy
    batch, cutoffs, at_cuts = _cut_batches(builder, store)
    enc = _encoder(
        seed=1,
        vocab_size=len(builder.vocabulary),
        n_static=builder.vocabulary.n_static,
        dropout=0.3,  # must not matter in eval mode
    )
    times = event_times(store, batch) if exact else None
    with torch.no_grad():
        multi = enc.forward_at(batch, cutoffs, event_time=times)
        for k, at in enumerate(at_cuts):
            single = enc(at, event_time=event_times(store, at) if exact else None)
            torch.testing.assert_close(multi[:, k], single, atol=1e-5, rtol=0)
        # Adjacent cut-offs with other events are far apart: a wrong prefix would show.
        counts = torch.stack([at.lengths for at in at_cuts], 1)
        other = counts[:, 1:] != counts[:, :-1]
        assert other.sum() >= 8
        assert (multi[:, 1:] - multi[:, :-1]).abs().amax(-1)[other].min() > 1e-3
        # Subject 3 (no birth event) has no event before its first cut-off: static only.
        assert not at_cuts[0].mask[2].any() and torch.isfinite(multi[2, 0]).all()


def test_exact_event_times_resolve_one_minute_decades_back(toy):
    builder, store = toy
    # Subject 1: a cut-off one minute before event C, 19.5 years before the prediction time,
    # where float32 days resolve only ~169 s.
    rows = _rows([1], [ENDS[1]])
    batch = builder.build_batch(store, rows)
    tau = torch.tensor([[_us(D(2001, 6, 5, 13, 30))]])
    at = builder.build_batch(store, _rows([1], [D(2001, 6, 5, 13, 30)]))
    enc = _encoder(vocab_size=len(builder.vocabulary), n_static=builder.vocabulary.n_static)
    with torch.no_grad():
        exact = enc.forward_at(batch, tau, event_time=event_times(store, batch))[:, 0]
        torch.testing.assert_close(exact, enc(at), atol=1e-5, rtol=0)
    times = event_times(store, batch)
    assert times[batch.mask].tolist() == sorted(times[batch.mask].tolist())
    # A batch from another store (other times) is refused.
    shifted = _replace(batch, time_before_prediction=batch.time_before_prediction * 1.5)
    with pytest.raises(ValueError, match="not gathered from this store"):
        event_times(store, shifted)


def test_left_padding_invariance():
    enc = _encoder()
    batch = random_batch(seq=10, seed=3)
    cut = batch.prediction_time.unsqueeze(1) - torch.tensor([0, 3, 40]) * US_PER_DAY
    with torch.no_grad():
        ref, ref_at = enc(batch), enc.forward_at(batch, cut)
        for extra in (1, 17):
            padded = _left_pad(batch, extra)
            torch.testing.assert_close(enc(padded), ref, atol=1e-5, rtol=0)
            torch.testing.assert_close(enc.forward_at(padded, cut), ref_at, atol=1e-5, rtol=0)
            states = enc.event_states(padded)[:, extra:]
            torch.testing.assert_close(
                states[batch.mask], enc.event_states(batch)[batch.mask], atol=1e-5, rtol=0
            )
        # Each row alone (no padding once trimmed) equals the row inside the batch, where the
        # longer rows make it padded: key padding is masked out.
        assert len(set(batch.lengths.tolist())) > 2
        for i in range(batch.batch_size):
            row = EventBatch(**{f.name: getattr(batch, f.name)[i : i + 1] for f in fields(batch)})
            torch.testing.assert_close(enc(row)[0], ref[i], atol=1e-5, rtol=0)


def test_rows_without_events_are_finite_and_use_static():
    enc = _encoder()
    batch = random_batch(b=4, seq=6, lengths=[0, 0, 3, 0])
    static = batch.static.clone()
    static[1, :3] = 1 - static[0, :3]
    static[1, 3:] = static[0, 3:]
    batch = _replace(batch, static=static)
    with torch.no_grad():
        z = enc(batch)
        states = enc.event_states(batch)
    assert torch.isfinite(z).all() and torch.isfinite(states).all()
    assert (z[0] - z[1]).abs().max() > 1e-4  # other static codes, other embedding
    # An all-padding batch (every row empty) also works.
    empty = random_batch(b=3, seq=4, lengths=[0, 0, 0])
    assert torch.isfinite(enc(empty)).all()


@pytest.mark.parametrize("value_embedding", ["code", "mlp"])
def test_gradients_reach_every_parameter(value_embedding):
    torch.manual_seed(0)
    enc = EHREncoder(_config(value_embedding=value_embedding)).train()
    batch = random_batch(b=8, seq=12, seed=5, lengths=[12, 11, 9, 7, 5, 3, 1, 0])
    cut = batch.prediction_time.unsqueeze(1) - torch.tensor([0, 10]) * US_PER_DAY
    enc.forward_at(batch, cut).square().sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    # The padding row of the code table never trains.
    assert (enc.code_embedding.weight.grad[0] == 0).all()


def test_fixed_frequencies_are_a_buffer():
    enc = _encoder(learn_time_frequencies=False)
    names = {n for n, _ in enc.named_parameters()}
    assert "time_encoding.freqs" not in names
    assert "time_encoding.freqs" in dict(enc.named_buffers())


def test_determinism_with_a_seed():
    a, b = _encoder(seed=7), _encoder(seed=7)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert na == nb and torch.equal(pa, pb)
    assert not torch.equal(
        _encoder(seed=8).code_embedding.weight, a.code_embedding.weight
    )  # the seed matters
    batch = random_batch()
    a.train(), b.train()
    torch.manual_seed(3)
    za = a(batch)
    torch.manual_seed(3)
    assert torch.equal(za, b(batch))  # same dropout masks


# --------------------------------------------------------------------------------------------
# Config and input errors.


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"vocab_size": 2}, "vocab_size"),
        ({"n_static": 1}, "n_static"),
        ({"d_model": 0}, "d_model"),
        ({"d_model": 30, "n_heads": 4}, "n_heads"),
        ({"n_layers": 0}, "n_layers"),
        ({"n_layers": 2.0}, "n_layers"),
        ({"max_len": True}, "max_len"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"ff_mult": 0}, "ff_mult"),
        ({"time_frequencies": 0}, "time_frequencies"),
        ({"time_max_frequency": float("nan")}, "time_max_frequency"),
        ({"learn_time_frequencies": 1}, "learn_time_frequencies"),
        ({"value_embedding": "bins"}, "value_embedding"),
    ],
)
def test_bad_configs_raise(changes, field):
    with pytest.raises(ValueError, match=field):
        _config(**changes)


def test_config_round_trip(toy):
    builder, _ = toy
    cfg = EHREncoderConfig.from_builder(builder, d_model=64)
    assert cfg.vocab_size == len(builder.vocabulary) and cfg.max_len == 64
    assert EHREncoderConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        EHREncoderConfig.from_dict({**cfg.to_dict(), "d_modle": 3})


def test_bad_inputs_raise():
    enc = _encoder()
    batch = random_batch()
    with pytest.raises(ValueError, match="at or before"):
        enc.forward_at(batch, batch.prediction_time.unsqueeze(1) + 1)
    with pytest.raises(ValueError, match="int64"):
        enc.forward_at(batch, batch.prediction_time.unsqueeze(1).float())
    with pytest.raises(ValueError, match="n_static"):
        enc(_replace(batch, static=batch.static[:, 1:]))
    with pytest.raises(ValueError, match="max_len"):
        enc(_left_pad(batch, 60))
    with pytest.raises(ValueError, match="event_time"):
        enc(batch, event_time=torch.zeros(6, 3, dtype=torch.int64))


# --------------------------------------------------------------------------------------------
# Heads.


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_projection_head(norm):
    torch.manual_seed(0)
    head = ProjectionHead(16, 64, 24, n_layers=3, norm=norm)
    assert isinstance(head.net[-1], torch.nn.Linear)
    z = head(torch.randn(200, 16))
    assert z.shape == (200, 24)
    # No LayerNorm at the end: the centred output has no null direction.
    s = torch.linalg.svdvals((z - z.mean(0)).double())
    assert s[-1] / s[0] > 1e-6
    assert isinstance(ProjectionHead(16, 8, 4, n_layers=1).net[0], torch.nn.Linear)


def test_head_errors_and_classifier():
    with pytest.raises(ValueError, match="norm"):
        ProjectionHead(4, 4, 4, norm="group")
    with pytest.raises(ValueError, match="n_layers"):
        ProjectionHead(4, 4, 4, n_layers=0)
    with pytest.raises(ValueError, match="dropout"):
        LinearClassifier(4, dropout=1.5)
    clf = LinearClassifier(8, n_outputs=3)
    assert clf(torch.randn(5, 8)).shape == (5, 3)


# --------------------------------------------------------------------------------------------
# The default dataset.


def test_default_dataset_embeddings(monkeypatch, tmp_path):
    from densefeat.data.convert.eunomia import eunomia_meds
    from densefeat.data.ehr.windows import pair_batches, periodic_cuts, window_pairs
    from densefeat.data.meds import read_meds_dataset

    monkeypatch.setenv("DENSEFEAT_CACHE", str(tmp_path))
    ds = read_meds_dataset(eunomia_meds())
    builder = HistoryBuilder.fit(ds)
    store = builder.encode(ds)
    rows = store.end_of_record().head(64)
    batch = builder.build_batch(store, rows).validate()
    torch.manual_seed(0)
    enc = EHREncoder(EHREncoderConfig.from_builder(builder)).eval()
    assert enc.config.d_model == 128 and enc.config.max_len == 256
    with torch.no_grad():
        z = enc(batch)
    assert z.shape == (64, 128) and torch.isfinite(z).all()
    assert torch.linalg.matrix_rank((z - z.mean(0)).double()) >= 32  # not collapsed at init

    # Yearly window pairs: one pass over the t1 batch gives the t embedding too, wherever the
    # t history is not truncated away in the t1 batch.
    pairs = window_pairs(store, periodic_cuts(store, subjects=rows["subject_id"]))
    pairs = pairs.group_by("subject_id", maintain_order=True).head(1).head(64)
    bt, bt1 = pair_batches(store, pairs)
    cut = torch.stack([bt.prediction_time, bt1.prediction_time], 1)
    with torch.no_grad():
        both = enc.forward_at(bt1, cut, event_time=event_times(store, bt1))
        zt = enc(bt)
    full = bt1.lengths < 256  # nothing truncated at t1, so nothing at or before t either
    assert full.sum() >= 32
    torch.testing.assert_close(both[full, 0], zt[full], atol=1e-5, rtol=0)
    torch.testing.assert_close(both[:, 1], enc(bt1).detach(), atol=1e-5, rtol=0)
