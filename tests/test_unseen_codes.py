"""Unseen codes: parent back-off, trained UNK and parent embeddings, the embed report."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from _helpers import events_frame
from densefeat.cli import main
from densefeat.data.ehr import HistoryBuilder
from densefeat.data.ehr.batch import N_RESERVED, UNK_ID
from densefeat.data.ehr.views import keyed_uniforms, unknown_codes
from densefeat.data.ehr.vocabulary import Vocabulary, unseen_codes
from densefeat.data.meds import write_meds_dataset
from densefeat.train import TrainConfig, train

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:.*representation collapse:RuntimeWarning"),
]

N_SUBJECTS = 24


def _events(extra_code: str | None = None) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for s in range(1, N_SUBJECTS + 1):
        rows.append((s, None, "SEX/F" if s % 2 else "SEX/M", None))
        rows.append((s, dt.datetime(1970, 1, 1), "MEDS_BIRTH", None))
        t = dt.datetime(2020, 1, 1)
        for i in range(30):
            t += dt.timedelta(hours=int(rng.integers(1, 5)))
            code = f"LAB//L{int(rng.integers(0, 4))}" if rng.random() < 0.7 else "VISIT"
            if extra_code is not None and i % 5 == 0:
                code = extra_code
            rows.append((s, t, code, float(rng.normal()) if code.startswith("LAB") else None))
    return events_frame(rows)


def test_parent_backoff_and_ids():
    vocab = Vocabulary(min_subjects=1).fit(_events())
    observed = [c for c in vocab.codes_ if c != "LAB"]
    # Parents come after every observed code: no observed code is renumbered by them.
    want = {f"LAB//L{i}" for i in range(4)} | {"VISIT", "MEDS_BIRTH"}
    assert vocab.codes_[-1] == "LAB" and set(observed) == want
    lab = N_RESERVED + vocab.codes_.index("LAB")
    own = N_RESERVED + vocab.codes_.index("LAB//L1")
    ids = vocab.encode(["LAB//L1", "LAB//NEW", "OTHER//X", "NOPARENT", "LAB//L1//mg"])
    assert ids.tolist() == [own, lab, UNK_ID, UNK_ID, own]
    parents = vocab.parent_ids()
    assert parents[own] == lab and parents[lab] == UNK_ID
    assert parents[N_RESERVED + vocab.codes_.index("VISIT")] == UNK_ID
    # The store encodes with the same back-off.
    builder = HistoryBuilder(vocab, None, max_len=8)
    new = _events(extra_code="LAB//NEW")
    store = builder.encode(new)
    codes = store.code[:-1]
    n_new = int((new["code"] == "LAB//NEW").sum())
    assert int((codes == lab).sum()) == n_new
    # Old checkpoints (no parents, no static values) load unchanged.
    state = vocab.to_dict()
    for key in ("parents", "static_value_codes"):
        state.pop(key)
    old = Vocabulary.from_dict(state)
    assert old.codes_ == vocab.codes_ and old.static_value_codes_ == ()


def test_unknown_codes_view():
    vocab = Vocabulary(min_subjects=1).fit(_events())
    builder = HistoryBuilder(vocab, None, max_len=16)
    store = builder.encode(_events())
    sid = store.subject_ids
    batch = store.gather(sid, np.full(sid.size, store.time[:-1].max()))
    parents = torch.from_numpy(vocab.parent_ids())
    draws = keyed_uniforms(np.arange(sid.size), (2, batch.seq_len), seed=3)
    out = unknown_codes(batch, 0.5, parents, draws)
    changed = out.codes != batch.codes
    assert changed.any() and not (changed & ~batch.mask).any()
    allowed = (out.codes == UNK_ID) | (out.codes == parents[batch.codes])
    assert bool(allowed[changed].all())
    assert (out.codes[batch.mask] != 0).all()
    for name in ("values", "has_value", "mask", "time_before_prediction"):
        assert torch.equal(getattr(out, name), getattr(batch, name))
    # Row draws depend on the row's key, not on its position: a DDP shard draws the same.
    half = keyed_uniforms(np.arange(5, sid.size), (2, batch.seq_len), seed=3)
    assert torch.equal(half, draws[:, 5:])
    assert unknown_codes(batch, 0.0, parents, draws) is batch


def _cfg(unk_rate: float, tokens: str = "events") -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "method": "masked",
            "d_model": 16,
            "n_heads": 2,
            "n_layers": 1,
            "max_len": 16,
            "dropout": 0.0,
            "min_code_subjects": 1,
            "progress": False,
            "monitor_every": 0,
            "checkpoint_every": 100,
            "weight_decay": 0.0,  # a row without gradient then stays exactly at its initial value
            "warmup_steps": 0,
            "lr": 1e-2,
            "batch_size": 16,
            "max_steps": 4,
            "window_days": 0.25,
            "device": "cpu",
            "data": {"unk_rate": unk_rate, "tokens": tokens},
        }
    )


@pytest.fixture(scope="module")
def meds(tmp_path_factory):
    root = tmp_path_factory.mktemp("unseen")
    ids = list(range(1, N_SUBJECTS + 1))
    splits = pl.DataFrame({"subject_id": ids, "split": ["train"] * 20 + ["held_out"] * 4})
    train_path = write_meds_dataset(root / "train", _events(), dataset_name="t", splits=splits)
    other = write_meds_dataset(
        root / "other", _events(extra_code="NEWSITE//X"), dataset_name="o", splits=splits
    )
    return train_path, other


def test_unk_embedding_is_trained(meds, tmp_path):
    data, _ = meds
    rows = {}
    for rate in (0.0, 0.2):
        out = train(_cfg(rate), data, tmp_path / f"r{rate}")
        rows[rate] = load_file(out / "model.safetensors")
    w0 = rows[0.0]["encoder.code_embedding.weight"]
    w1 = rows[0.2]["encoder.code_embedding.weight"]
    # Same seed, same init: without replacement the UNK row never gets a gradient.
    from densefeat.models.ehr import EHREncoder, EHREncoderConfig

    cfg = _cfg(0.0)
    vocab_size = w0.shape[0]
    torch.manual_seed(cfg.seed)
    init = EHREncoder(
        EHREncoderConfig(vocab_size=vocab_size, n_static=4, d_model=16, n_heads=2, n_layers=1,
                         max_len=16, dropout=0.0)
    ).code_embedding.weight.detach()  # fmt: skip
    assert torch.equal(w0[UNK_ID], init[UNK_ID])
    assert not torch.allclose(w1[UNK_ID], init[UNK_ID])
    lab = vocab_size - 1  # the parent "LAB" is the last id
    assert torch.equal(w0[lab], init[lab]) and not torch.allclose(w1[lab], init[lab])


def test_embed_reports_unseen_codes(meds, tmp_path, capsys):
    data, other = meds
    run = tmp_path / "run"
    train(_cfg(0.02), data, run)
    out = tmp_path / "emb.parquet"
    with pytest.warns(UserWarning, match="never saw in training"):
        assert main(["embed", "--run", str(run), "--data", str(other), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "NEWSITE//X" in err and "-> UNK" in err
    meta = json.loads(pl.read_parquet_metadata(out)["densefeat.unseen_codes"])
    events = _events(extra_code="NEWSITE//X")
    timed = events.filter(pl.col("time").is_not_null() & (pl.col("code") != "MEDS_BIRTH"))
    n_new = int((timed["code"] == "NEWSITE//X").sum())
    assert meta["codes"][0]["code"] == "NEWSITE//X"
    assert meta["codes"][0]["n_events"] == n_new
    # MEDS_BIRTH is a timed event too (in the vocabulary), so the share is over all timed events.
    report = unseen_codes(Vocabulary(min_subjects=1).fit(_events()), events)
    assert report["share"] == pytest.approx(meta["share"])
    assert report["n_unseen_events"] == n_new
    # The training data itself has no unseen codes: no warning, empty report.
    out2 = tmp_path / "emb2.parquet"
    assert main(["embed", "--run", str(run), "--data", str(data), "--out", str(out2)]) == 0
    assert json.loads(pl.read_parquet_metadata(out2)["densefeat.unseen_codes"])["codes"] == []


def _hour_batch():
    vocab = Vocabulary(min_subjects=1).fit(_events())
    builder = HistoryBuilder(vocab, None, max_len=16, tokens="hours")
    store = builder.encode(_events())
    sid = store.subject_ids
    return vocab, store.gather(sid, np.full(sid.size, store.time[:-1].max()))


def test_unknown_codes_on_hour_tokens_move_measurements_with_their_values():
    vocab, batch = _hour_batch()
    assert batch.is_binned
    parents = torch.from_numpy(vocab.parent_ids())
    b, seq, v = batch.bin_values.shape
    draws = keyed_uniforms(np.arange(b), (2, seq * v), seed=3)
    out = unknown_codes(batch, 0.5, parents, draws)
    d = draws.reshape(2, b, seq, v)
    picked = batch.bin_mask & (d[0] < 0.5)
    assert picked.any()
    # A picked variable is missing in its hour unless something else moved onto it.
    lab = int(vocab.encode(["LAB"])[0])
    for i, p, var in picked.nonzero().tolist():
        to_parent = int(parents[var]) != UNK_ID and float(d[1, i, p, var]) < 0.5
        target = int(parents[var]) if to_parent else UNK_ID
        assert bool(out.bin_mask[i, p, target])
        sources = [
            w
            for w in range(v)
            if picked[i, p, w]
            and (int(parents[w]) if int(parents[w]) != UNK_ID and d[1, i, p, w] < 0.5 else UNK_ID)
            == target
        ]
        kept = batch.bin_mask[i, p, target] and not picked[i, p, target]
        want = batch.bin_values[i, p, target] if kept else batch.bin_values[i, p, max(sources)]
        assert float(out.bin_values[i, p, target]) == float(want)
    # Only UNK / a parent can gain a measurement; nothing enters an hour that had none; the
    # (B, L) fields are untouched; level 0 is the identity.
    gained = out.bin_mask & ~batch.bin_mask
    assert set(gained.nonzero()[:, 2].tolist()) <= {UNK_ID, lab}
    assert torch.equal(out.mask, batch.mask) and torch.equal(out.codes, batch.codes)
    assert (out.bin_values[~out.bin_mask] == 0).all() and out.validate()
    assert torch.equal(out.bin_mask.any(-1), batch.bin_mask.any(-1))
    assert unknown_codes(batch, 0.0, parents, draws) is batch


def test_unk_column_of_hour_tokens_is_trained(meds, tmp_path):
    data, _ = meds
    weights = {}
    for rate in (0.0, 0.2):
        out = train(_cfg(rate, tokens="hours"), data, tmp_path / f"h{rate}")
        weights[rate] = load_file(out / "model.safetensors")["encoder.bin_embedding.weight"]
    # Inputs [values; mask] (V each). Same seed, same initial weights: the PAD column, never
    # measured, keeps them in both runs; UNK, never measured without replacement, moves only
    # with it (before this, unk_rate was a silent no-op on hour tokens).
    v = weights[0.0].shape[1] // 2
    w0, w1 = weights[0.0], weights[0.2]
    assert torch.equal(w0[:, v], w1[:, v])  # PAD's mask column: the shared initial value
    assert not torch.allclose(w0[:, v + UNK_ID], w1[:, v + UNK_ID])
    assert not torch.allclose(w0[:, UNK_ID], w1[:, UNK_ID])
