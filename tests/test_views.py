"""Views of an EventBatch: seeded, mask-consistent, never empty, never adding events."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import torch

from densefeat.data.ehr import EventBatch, HistoryBuilder
from densefeat.data.ehr.views import (
    event_dropout,
    keep_events,
    numeric_noise,
    random_view,
    time_crop,
)


@pytest.fixture(scope="module")
def batch() -> EventBatch:
    rng = np.random.default_rng(0)
    n = 3000
    subject = np.sort(rng.integers(0, 60, n))
    seconds = np.sort(rng.integers(0, 400 * 86400, n))
    events = pl.DataFrame(
        {
            "subject_id": subject,
            "time": pl.Series(seconds * 1_000_000).cast(pl.Datetime("us")),
            "code": [f"C{c}" for c in rng.integers(0, 30, n)],
            "numeric_value": np.where(rng.random(n) < 0.3, rng.normal(size=n), np.nan),
        }
    ).with_columns(pl.col("numeric_value").fill_nan(None))
    events = events.sort("subject_id", "time")
    builder = HistoryBuilder.fit(events, split=None, min_subjects=1, min_values=3, max_len=32)
    store = builder.encode(events)
    rows = store.end_of_record()
    # A row with no events at all (prediction time before the record) must stay empty.
    early = rows.head(1).with_columns(prediction_time=pl.lit(dt.datetime(1960, 1, 1)))
    return builder.build_batch(store, pl.concat([rows, early])).validate()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _events_of(b: EventBatch, i: int) -> list[tuple[float, int]]:
    m = b.mask[i]
    return list(zip(b.time_before_prediction[i][m].tolist(), b.codes[i][m].tolist(), strict=True))


def _is_subsequence(small: list, big: list) -> bool:
    it = iter(big)
    return all(x in it for x in small)


VIEWS = [
    lambda b, g: event_dropout(b, 0.5, g),
    lambda b, g: time_crop(b, 0.3, g),
    lambda b, g: numeric_noise(b, 0.5, g),
    lambda b, g: random_view(b, g),
]


@pytest.mark.parametrize("view", VIEWS)
def test_views_are_seeded_and_keep_the_contract(batch, view):
    a, b, c = view(batch, _gen(1)), view(batch, _gen(1)), view(batch, _gen(2))
    for name in EventBatch.__dataclass_fields__:
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert any(not torch.equal(getattr(a, n), getattr(c, n)) for n in ("mask", "values"))
    a.validate()  # left padding, zeros on padding, PAD only on padding, no leakage
    for name in ("subject_id", "prediction_time", "static", "age_known"):
        assert torch.equal(getattr(a, name), getattr(batch, name))
    has = batch.mask.any(dim=1)
    assert torch.equal(a.mask.any(dim=1), has)  # rows with events keep >= 1, empty rows stay so
    for i in range(batch.batch_size):
        # Only original events, in their order: nothing added, nothing after the prediction time.
        assert _is_subsequence(_events_of(a, i), _events_of(batch, i))


def test_dropout_rate_and_at_least_one_kept(batch):
    out = event_dropout(batch, 0.3, _gen(0))
    kept = out.lengths.sum() / batch.lengths.sum()
    assert 0.65 < kept.item() < 0.75
    heavy = event_dropout(batch, 0.999, _gen(0))
    assert (heavy.lengths[batch.lengths > 0] == 1).all()
    assert torch.equal(event_dropout(batch, 0.0, _gen(0)).codes, batch.codes)
    with pytest.raises(ValueError):
        event_dropout(batch, 1.0, _gen(0))


def test_crop_is_contiguous_and_long_enough(batch):
    out = time_crop(batch, 0.5, _gen(4))
    for i in range(batch.batch_size):
        full, crop = _events_of(batch, i), _events_of(out, i)
        n = len(full)
        if n == 0:
            assert crop == []
            continue
        assert len(crop) >= max(1, int(np.ceil(0.5 * n)))
        start = next(j for j in range(n) if full[j : j + len(crop)] == crop)
        assert full[start : start + len(crop)] == crop
    assert torch.equal(time_crop(batch, 1.0, _gen(0)).codes, batch.codes)


def test_delta_t_follows_kept_events(batch):
    out = event_dropout(batch, 0.5, _gen(5))
    m = out.mask
    tbp, dtt = out.time_before_prediction, out.delta_t
    # Between adjacent kept events, delta_t is the time between them.
    both = m[:, 1:] & m[:, :-1]
    np.testing.assert_allclose(
        dtt[:, 1:][both].numpy(), (tbp[:, :-1] - tbp[:, 1:])[both].numpy(), atol=1e-3
    )
    # Dropping nothing changes nothing, bit for bit.
    same = keep_events(batch, torch.ones_like(batch.mask))
    assert torch.equal(same.delta_t, batch.delta_t)


def test_noise_touches_only_values(batch):
    out = numeric_noise(batch, 1.0, _gen(0))
    changed = out.values != batch.values
    assert changed.any()
    assert not (changed & ~batch.has_value).any()
    assert torch.equal(out.mask, batch.mask) and torch.equal(out.codes, batch.codes)
