"""The ``masked+dense`` hybrid: one pass, and a loss that is exactly the sum of its named terms."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from _helpers import events_frame
from densefeat.data.ehr import HistoryBuilder
from densefeat.losses import DenseFeatureLoss
from densefeat.methods import METHODS, get_method
from densefeat.models.ehr import EHREncoder, EHREncoderConfig
from densefeat.train import TrainConfig, train

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:.*representation collapse:RuntimeWarning"),
]
T0 = dt.datetime(2020, 1, 1)
H = 3_600_000_000


def _events(n: int = 40) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for s in range(1, n + 1):
        rows.append((s, None, "GENDER/F" if s % 2 else "GENDER/M", None))
        rows.append((s, T0 - dt.timedelta(days=365 * 60), "MEDS_BIRTH", None))
        for m in np.sort(rng.integers(0, 60 * 48, size=80)):
            code = ("VITAL//HR", "VITAL//MAP", "LAB//Lactate")[int(rng.integers(0, 3))]
            rows.append((s, T0 + dt.timedelta(minutes=int(m)), code, float(rng.normal(80, 10))))
    return events_frame(rows)


def _cfg(**over) -> TrainConfig:
    base = {"method": "masked+dense", "d_model": 16, "n_heads": 2, "n_layers": 1,
            "proj_hidden": 32, "proj_dim": 16, "dropout": 0.0}  # fmt: skip
    return TrainConfig.from_dict({**base, **over})


def _network(tokens: str, cfg: TrainConfig, carry_forward: bool = False) -> tuple:
    """The fixture's store, a seeded encoder and the hybrid's head, and a prediction time."""
    events = _events()
    builder = HistoryBuilder.fit(events, split=None, max_len=32, min_subjects=1, tokens=tokens)
    store = builder.encode(events)
    torch.manual_seed(0)
    enc = EHREncoder(
        EHREncoderConfig.from_builder(
            builder, d_model=16, n_heads=2, n_layers=1, dropout=0.0, carry_forward=carry_forward
        )
    )
    n_out = 2 * enc.config.n_variables if tokens == "hours" else enc.config.vocab_size
    head = get_method("masked+dense").build_head(cfg, 16, n_out)
    t1 = np.full(store.n_subjects, np.datetime64(T0 + dt.timedelta(hours=40), "us")).astype(
        np.int64
    )
    return store, enc, head, t1


@pytest.mark.parametrize("tokens", ["events", "hours"])
def test_hybrid_loss_is_the_sum_of_its_named_terms(tokens):
    cfg = _cfg(hybrid={"w_dense": 0.7})
    method = get_method("masked+dense")
    store, enc, head, t1 = _network(tokens, cfg)
    cutoffs = torch.from_numpy(np.stack([t1 - 12 * H, t1], axis=1))
    inputs = {"batch": store.gather(store.subject_ids, t1), "cutoffs": cutoffs}
    out = method.forward(enc, head, inputs)
    loss, terms = method.build_loss(cfg)(out, inputs)
    torch.testing.assert_close(loss.detach(), terms["masked"] + 0.7 * terms["dense"])
    assert any(k.startswith("dense.") for k in terms)
    assert any(k.startswith("masked.") for k in terms)
    # Each part equals its own method computed independently on the same encoder.
    za, zb = out["za"], out["zb"]
    dense = DenseFeatureLoss(cfg.dense.w_spec, cfg.dense.w_orth, cfg.dense.w_sub,
                             top_k=cfg.dense.top_k)(za.float(), zb.float())  # fmt: skip
    dense = dense[0] if isinstance(dense, tuple) else dense
    torch.testing.assert_close(terms["dense"], dense.detach())
    masked_out = get_method("masked").forward(enc, head["events"], inputs)
    masked, _ = get_method("masked").build_loss(cfg)(masked_out, inputs)
    torch.testing.assert_close(terms["masked"], masked.detach())
    if tokens == "events":
        ce = F.cross_entropy(masked_out["logits"], masked_out["target"])
        torch.testing.assert_close(terms["masked"], ce.detach())
    # One pass gives what the two separate calls give.
    states, z = enc.states_and_cutoffs(inputs["batch"], cutoffs)
    torch.testing.assert_close(states, enc.event_states(inputs["batch"]))
    torch.testing.assert_close(z, enc.forward_at(inputs["batch"], cutoffs))
    loss.backward()
    assert enc.time_encoding.proj.weight.grad is not None


@pytest.mark.parametrize("tokens", ["events", "hours"])
def test_hybrid_on_future_pairs_is_masked_plus_dense_of_its_own_inputs(tokens):
    """``data.pairs=future`` (the ICU default): the pair is the history at t against the
    events of (t, t1] alone, so it is embedded apart from the history at t1 it predicts."""
    from densefeat.train.views import future_pair

    cfg = _cfg(hybrid={"w_dense": 0.4})
    method = get_method("masked+dense")
    store, enc, head, t1 = _network(tokens, cfg, carry_forward=tokens == "hours")
    batch = store.gather(store.subject_ids, t1)
    past = store.gather(store.subject_ids, t1 - 12 * H)
    views = future_pair(past, batch, torch.full((store.n_subjects,), 0.5, dtype=torch.float64))
    inputs = {"batch": batch, "views": views}
    out = method.forward(enc, head, inputs)
    loss, terms = method.build_loss(cfg)(out, inputs)
    torch.testing.assert_close(loss.detach(), terms["masked"] + 0.4 * terms["dense"])
    # The pair: each side embedded by the encoder on its own rows, then projected.
    z = enc(views)
    b = store.n_subjects
    torch.testing.assert_close(out["za"], head["projector"](z[:b]))
    torch.testing.assert_close(out["zb"], head["projector"](z[b:]))
    # The predictive part: what ``masked`` computes on the history at t1.
    masked_out = get_method("masked").forward(enc, head["events"], inputs)
    masked, _ = get_method("masked").build_loss(cfg)(masked_out, inputs)
    torch.testing.assert_close(terms["masked"], masked.detach())
    loss.backward()
    assert enc.time_encoding.proj.weight.grad is not None


def test_hybrid_refuses_non_ehr_inputs():
    method = get_method("masked+dense")
    with pytest.raises(ValueError, match="EHR"):
        method.forward(torch.nn.Identity(), None, {"texts": ["a", "b"]})
    assert "masked+dense" in METHODS


@pytest.mark.parametrize("pairs", ["windows", "future"])
def test_hybrid_trains_and_logs_its_terms(tmp_path, pairs):
    root = tmp_path / "meds"
    from densefeat.data.meds import write_meds_dataset

    ids = list(range(1, 41))
    splits = pl.DataFrame({"subject_id": ids, "split": ["train"] * 32 + ["held_out"] * 8})
    data = write_meds_dataset(root, _events(), dataset_name="h", splits=splits)
    cfg = _cfg(max_steps=2, batch_size=16, window_days=0.5, max_len=32, min_code_subjects=1,
               progress=False, monitor_every=0, device="cpu", data={"pairs": pairs})  # fmt: skip
    out = train(cfg, data, tmp_path / "run")
    stats = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").open()]
    terms = stats[-1]["terms"]
    assert {"masked", "dense", "masked.accuracy"} <= set(terms)
    assert stats[-1]["loss"] == pytest.approx(terms["masked"] + terms["dense"], rel=1e-5)
    assert (out / "model.safetensors").is_file()
