"""Fast inference of EHR embeddings (issue 14, item 4): length bucketing, the last block run at
the read-out tokens only, inference mode. Every fast path is checked against the
straightforward one (rows in order, full forward, no bucketing) on a store with mixed
history lengths (empty, short, truncated at ``max_len``): same embeddings to 1e-6, rows in
their given order."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import torch

from _helpers import events_frame
from densefeat.data.ehr import HistoryBuilder
from densefeat.data.ehr.buckets import length_buckets
from densefeat.models import EHREncoder, EHREncoderConfig, ProjectionHead
from densefeat.train.modalities.ehr import encode_histories

D = dt.datetime
MAX_LEN = 24
T0 = D(2000, 1, 1)


def _us(t: D) -> int:
    return (t - D(1970, 1, 1)) // dt.timedelta(microseconds=1)


@pytest.fixture(scope="module")
def fixture():
    """40 subjects with 0..~50 events (many beyond MAX_LEN), values, static codes, some
    without a birth; an encoder with random weights (speed paths do not depend on training)."""
    rng = np.random.default_rng(0)
    rows = []
    for s in range(1, 41):
        rows.append((s, None, f"SEX/{s % 2}", None))
        if s % 5:
            rows.append((s, D(1950 + s, 1, 1), "MEDS_BIRTH", None))
        n = int(rng.integers(0, 50)) if s % 7 else 0
        for k in range(n):
            t = T0 + dt.timedelta(days=int(rng.integers(0, 7000)), minutes=k)
            value = float(rng.normal()) if k % 3 == 0 else None
            rows.append((s, t, f"C{int(rng.integers(0, 12))}" if value is None else "LAB", value))
    events = events_frame(rows).sort("subject_id", "time", nulls_last=False, maintain_order=True)
    builder = HistoryBuilder.fit(events, split=None, min_subjects=1, min_values=2, max_len=MAX_LEN)
    store = builder.encode(events)
    torch.manual_seed(0)
    cfg = EHREncoderConfig.from_builder(builder, d_model=32, n_heads=4, n_layers=3, dropout=0.1)
    encoder = EHREncoder(cfg)
    # Rows: each subject at several times (before any event, mid-record, far after), shuffled.
    sid = np.repeat(np.arange(1, 41), 3)
    times = np.array([_us(D(1999, 1, 1)), _us(D(2009, 6, 1)), _us(D(2030, 1, 1))] * 40)
    perm = rng.permutation(len(sid))
    return store, encoder, sid[perm].astype(np.int64), times[perm].astype(np.int64)


def _reference(encoder, store, sid, pt, head=None) -> tuple[np.ndarray, np.ndarray | None]:
    """The straightforward path: one row at a time, full forward, no_grad."""
    encoder.eval()
    encoder.fast_readout = False
    try:
        with torch.no_grad():
            zs = [encoder(store.gather(sid[i : i + 1], pt[i : i + 1])) for i in range(len(sid))]
            z = torch.cat(zs)
            p = head.eval()(z).numpy() if head is not None else None
    finally:
        encoder.fast_readout = True
    return z.numpy(), p


def test_history_lengths_match_gather(fixture):
    store, _, sid, pt = fixture
    lengths = store.history_lengths(sid, pt)
    np.testing.assert_array_equal(lengths, store.gather(sid, pt).mask.sum(1).numpy())
    assert lengths.min() == 0 and lengths.max() == MAX_LEN  # mixed: empty and truncated rows
    np.testing.assert_array_equal(store.history_lengths(sid, pt, max_len=5), np.minimum(lengths, 5))


@pytest.mark.parametrize("batch_size,max_positions", [(7, None), (512, 60), (3, 1), (1000, 10**6)])
def test_length_buckets_partition_and_caps(batch_size, max_positions):
    lengths = np.random.default_rng(1).integers(0, 40, 200)
    batches = length_buckets(lengths, batch_size, max_positions)
    rows = np.concatenate(batches)
    np.testing.assert_array_equal(np.sort(rows), np.arange(200))  # every row exactly once
    for b in batches:
        assert 1 <= len(b) <= batch_size
        if len(b) > 1 and max_positions is not None:
            assert len(b) * (lengths[b].max() + 1) <= max_positions
    # Sorted by length across batches, so a batch's padding is at most the spread within it.
    assert (np.diff(lengths[rows]) >= 0).all()
    assert length_buckets(np.zeros(0, int), 4, 8) == []
    with pytest.raises(ValueError, match="batch_size"):
        length_buckets(lengths, 0)
    with pytest.raises(ValueError, match="max_positions"):
        length_buckets(lengths, 4, 0)


def test_eval_readout_equals_full_forward(fixture):
    """The last block at the read-out tokens only equals the full pass (several cut-offs per
    row, rows without events), and equals the training-mode pass when dropout is 0."""
    store, encoder, sid, pt = fixture
    batch = store.gather(sid, pt)
    cut = torch.from_numpy(pt)[:, None] - torch.tensor([[0, 86_400_000_000 * 400, 10**15]])
    enc = encoder.eval()
    with torch.no_grad():
        fast = enc.forward_at(batch, cut)
        enc.fast_readout = False
        full = enc.forward_at(batch, cut)
        enc.fast_readout = True
        no_drop = EHREncoder(EHREncoderConfig(**{**enc.config.to_dict(), "dropout": 0.0}))
        no_drop.load_state_dict(enc.state_dict())
        train_mode = no_drop.train().forward_at(batch, cut)
        eval_mode = no_drop.eval().forward_at(batch, cut)
    torch.testing.assert_close(fast, full, rtol=0, atol=1e-6)
    torch.testing.assert_close(eval_mode, train_mode, rtol=0, atol=1e-6)
    assert not torch.equal(fast[:, 0], fast[:, 2])  # the cut-offs read different tokens


def test_gradients_through_the_fast_readout(fixture):
    """The fast path is differentiable and its gradients equal the full pass's."""
    store, encoder, sid, pt = fixture
    batch = store.gather(sid[:20], pt[:20])
    grads = []
    for fast in (True, False):
        encoder.eval().zero_grad()
        encoder.fast_readout = fast
        encoder(batch).square().sum().backward()
        grads.append([p.grad.clone() for p in encoder.parameters() if p.grad is not None])
    encoder.fast_readout = True
    assert len(grads[0]) == len(grads[1])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("batch_size,max_positions", [(512, None), (5, None), (512, 64), (4, 1)])
def test_bucketed_embeddings_equal_the_straightforward_path(fixture, batch_size, max_positions):
    store, encoder, sid, pt = fixture
    torch.manual_seed(1)
    head = ProjectionHead(encoder.embed_dim, 16, 8)  # BatchNorm: must be used in eval mode
    head.bn_before = [b.clone() for b in head.buffers()]
    z_ref, p_ref = _reference(encoder, store, sid, pt, head)
    encoder.train()
    head.train()
    out = encode_histories(
        encoder, store, sid, pt, head=head, batch_size=batch_size, max_positions=max_positions
    )
    np.testing.assert_allclose(out.backbone, z_ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out.projector, p_ref, rtol=0, atol=1e-6)
    # Modes restored; the head's running statistics untouched.
    assert encoder.training and head.training
    for a, b in zip(head.bn_before, head.buffers(), strict=True):
        assert torch.equal(a, b)
    # In order: the same rows reversed give the reversed embeddings.
    rev = encode_histories(encoder, store, sid[::-1], pt[::-1], batch_size=batch_size)
    np.testing.assert_allclose(rev.backbone, z_ref[::-1], rtol=0, atol=1e-6)


def test_batches_follow_length_and_position_cap(fixture):
    """Bucketed batches hold rows of similar length within the position cap; the unbucketed
    route batches rows in order."""
    store, encoder, sid, pt = fixture
    seen = []

    def record(batch):
        seen.append(batch.mask.sum(1).numpy())
        return batch

    encode_histories(encoder, store, sid, pt, batch_size=50, max_positions=100, transform=record)
    assert all(len(n) * (n.max() + 1) <= 100 or len(n) == 1 for n in seen)
    assert (np.diff(np.concatenate(seen)) >= 0).all()
    seen.clear()
    encode_histories(encoder, store, sid, pt, batch_size=50, bucket=False, transform=record)
    assert [len(n) for n in seen] == [50, 50, 20]
    np.testing.assert_array_equal(np.concatenate(seen), store.history_lengths(sid, pt))
