"""Static values (age, admission offset) reach the encoder, normalised on the training split."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import torch

from _helpers import events_frame
from densefeat.data.ehr import HistoryBuilder
from densefeat.models.ehr import EHREncoder, EHREncoderConfig

N = 30


def _events(age_of: dict[int, float] | None = None) -> pl.DataFrame:
    rows = []
    for s in range(1, N + 1):
        age = (age_of or {}).get(s, 40.0 + s)
        rows.append((s, None, "DEMOGRAPHIC//Age", age))
        rows.append((s, None, "GENDER/F" if s % 2 else "GENDER/M", None))
        if s % 3:  # a third of the subjects have no admission offset
            rows.append((s, None, "DEMOGRAPHIC//HospAdmTime", -float(s)))
        t = dt.datetime(2020, 1, 1)
        for h in range(6):
            rows.append((s, t + dt.timedelta(hours=h), "VITAL//HR", 80.0 + h))
    return events_frame(rows)


def _fit(events: pl.DataFrame) -> HistoryBuilder:
    train = events.filter(pl.col("subject_id") <= 20)
    return HistoryBuilder.fit(train, split=None, max_len=8, min_subjects=2)


def test_static_values_are_normalised_columns():
    events = _events()
    builder = _fit(events)
    vocab = builder.vocabulary
    assert vocab.static_value_codes_ == ("DEMOGRAPHIC//Age", "DEMOGRAPHIC//HospAdmTime")
    n_codes = len(vocab.static_codes_)
    assert vocab.n_static == n_codes + 2 + 2
    store = builder.encode(events)
    batch = store.gather(store.subject_ids, np.full(N, store.time[:-1].max()))
    ages = batch.static[:, n_codes].numpy()
    # Median / IQR of the TRAINING subjects' ages (41..60), independent references.
    train_ages = np.arange(41, 61, dtype=np.float64)
    q1, q3 = np.percentile(train_ages, [25, 75])
    want = (40.0 + np.arange(1, N + 1) - np.median(train_ages)) / ((q3 - q1) / 1.3489795)
    np.testing.assert_allclose(ages, want, rtol=1e-5)
    # Missing stays 0 with its indicator 0; present values have indicator 1.
    adm = batch.static[:, n_codes + 1].numpy()
    has_adm = batch.static[:, vocab.static_codes_.index("DEMOGRAPHIC//HospAdmTime")].numpy()
    missing = np.arange(1, N + 1) % 3 == 0
    assert (adm[missing] == 0).all() and (has_adm[missing] == 0).all()
    assert (has_adm[~missing] == 1).all() and (adm[~missing] != 0).all()
    # Held-out ages do not move the statistics (training split only).
    other = _fit(_events({25: 1000.0}))
    assert other.normalizer.to_dict() == builder.normalizer.to_dict()


def test_static_value_reaches_the_encoder():
    builder = _fit(_events())
    torch.manual_seed(0)
    enc = EHREncoder(EHREncoderConfig.from_builder(builder, d_model=16, n_heads=2, n_layers=1))
    enc.eval()

    def embed(events):
        store = builder.encode(events)
        return enc(store.gather(store.subject_ids, np.full(N, store.time[:-1].max())))

    base = embed(_events())
    moved = embed(_events({3: 90.0}))
    diff = (base - moved).abs().amax(dim=1)
    assert diff[2] > 1e-6  # subject 3's embedding changed with its age value
    assert torch.equal(diff[np.arange(N) != 2], torch.zeros(N - 1))


@pytest.mark.parametrize("value", [None])
def test_static_code_without_values_is_indicator_only(value):
    events = _events().with_columns(
        pl.when(pl.col("code") == "DEMOGRAPHIC//Age")
        .then(pl.lit(value, pl.Float32))
        .otherwise(pl.col("numeric_value"))
        .alias("numeric_value")
    )
    vocab = _fit(events).vocabulary
    assert vocab.static_value_codes_ == ("DEMOGRAPHIC//HospAdmTime",)
