"""Text views: deterministic per seed, never empty, rates as asked, identity at zero strength."""

from __future__ import annotations

import random

import numpy as np
import pytest

from densefeat.data.text.views import (
    TextViewConfig,
    crop,
    perturb_texts,
    random_view,
    sentence_dropout,
    span_dropout,
)

TEXT = (
    "HISTORY: , The patient is a 54-year-old man with chest pain.,EXAM: , Lungs clear. "
    "Heart regular. Abdomen soft!\nPLAN: Follow up in two weeks? Repeat labs in one month."
)
WORDS = " ".join(f"w{i}" for i in range(1000))

VIEWS = [
    lambda t, rng: sentence_dropout(t, 0.5, rng),
    lambda t, rng: span_dropout(t, 0.3, rng),
    lambda t, rng: span_dropout(t, 0.3, rng, span_length=4),
    lambda t, rng: crop(t, 0.3, rng),
    lambda t, rng: random_view(t, rng, TextViewConfig(0.8, 0.2, 0.2, 2)),
]


@pytest.mark.parametrize("view", VIEWS)
def test_deterministic_per_seed(view) -> None:
    seeds = range(20)
    first = [view(TEXT, s) for s in seeds]
    assert first == [view(TEXT, s) for s in seeds]
    assert first == [view(TEXT, np.random.default_rng(s)) for s in seeds]  # int = Generator(int)
    assert len(set(first)) > 1  # and the seed matters
    by_random = [view(TEXT, random.Random(s)) for s in seeds]
    assert by_random == [view(TEXT, random.Random(s)) for s in seeds]


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("text", [TEXT, "one", "  two words  ", "A. B. C."])
def test_never_empty(view, text: str) -> None:
    for seed in range(30):
        assert view(text, seed).strip()


def test_never_empty_at_extreme_rates() -> None:
    for seed in range(50):
        assert sentence_dropout(TEXT, 0.999, seed).strip()
        assert span_dropout(TEXT, 0.999, seed, span_length=3).strip()
        assert crop(TEXT, 1e-6, seed).strip()


def test_zero_strength_is_the_identity() -> None:
    assert sentence_dropout(TEXT, 0.0, 1) == TEXT
    assert span_dropout(TEXT, 0.0, 1) == TEXT
    assert crop(TEXT, 1.0, 1) == TEXT
    assert random_view(TEXT, 1, TextViewConfig(1.0, 0.0, 0.0)) == TEXT


def test_dropout_rates_and_order() -> None:
    for length in (1, 5):
        kept = [len(span_dropout(WORDS, 0.3, s, length).split()) for s in range(40)]
        assert np.mean(kept) == pytest.approx(700, rel=0.05)
    view = span_dropout(WORDS, 0.5, 0).split()
    assert view == sorted(view, key=lambda w: int(w[1:]))  # kept tokens keep their order
    sentences = " ".join(f"S{i}." for i in range(500))
    kept_sentences = len(sentence_dropout(sentences, 0.1, 0).split())
    assert kept_sentences == pytest.approx(450, rel=0.06)


def test_span_dropout_drops_contiguous_runs() -> None:
    view = [int(w[1:]) for w in span_dropout(WORDS, 0.5, 3, span_length=10).split()]
    gaps = np.diff(view)
    assert set(gaps[gaps > 1] - 1) <= {10 * k for k in range(1, 100)}  # gaps are whole spans


def test_crop_is_a_contiguous_substring() -> None:
    for seed in range(20):
        view = crop(WORDS, 0.25, seed)
        assert view in WORDS
        assert len(view.split()) == 250


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="empty text"):
        sentence_dropout("   ", 0.1, 0)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        span_dropout(TEXT, 1.0, 0)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        crop(TEXT, 0.0, 0)
    with pytest.raises(ValueError, match="span_length"):
        span_dropout(TEXT, 0.1, 0, span_length=0)
    with pytest.raises(TypeError, match="rng"):
        span_dropout(TEXT, 0.1, "seed")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb_texts([TEXT], "shuffle", 0.1, 0)


def test_perturb_texts_does_not_depend_on_the_batch() -> None:
    texts = [TEXT, WORDS, "short note here"]
    full = perturb_texts(texts, "token_dropout", 0.3, seed=7)
    # Text i is perturbed by its own (seed, i) stream: same index, same result.
    assert perturb_texts(texts[:2], "token_dropout", 0.3, seed=7) == full[:2]
    assert perturb_texts(texts, "token_dropout", 0.3, seed=7) == full
    assert perturb_texts(texts, "sentence_dropout", 0.3, seed=8) != perturb_texts(
        texts, "sentence_dropout", 0.3, seed=9
    )
    assert all(t.strip() for t in perturb_texts(texts, "crop", 0.1, seed=1))
