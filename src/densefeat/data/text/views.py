"""Seeded stochastic views of a text: sentence dropout, span (token) dropout, contiguous crop.

Used twice: as the augmentations that make the two views of a note for the self-supervised
baselines (SimCLR, VICReg, Barlow Twins) and for dense training on text, and as the perturbations
of the robustness evaluation (token/sentence dropout at 10 and 30%, docs/design.md).

Every view is a pure function of ``(text, parameters, rng)``: the randomness comes only from the
explicit ``rng`` argument (a :class:`numpy.random.Generator`, a :class:`random.Random` or an int
seed), so the same seed always gives the same view. A view never returns an empty text: when the
draw would drop everything, one unit (sentence, span) drawn at random is kept. Kept pieces keep
their original separators, so a view with ``p=0`` or ``fraction=1`` returns the text unchanged.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .chunks import sentence_spans

__all__ = [
    "Rng",
    "TextViewConfig",
    "crop",
    "perturb_texts",
    "random_view",
    "sentence_dropout",
    "span_dropout",
]

#: What the views accept as their source of randomness.
Rng = np.random.Generator | random.Random | int

_TOKEN = re.compile(r"\S+\s*")


def _generator(rng: Rng) -> np.random.Generator | random.Random:
    if isinstance(rng, np.random.Generator | random.Random):
        return rng
    if isinstance(rng, int | np.integer):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator, random.Random or int, got {type(rng)}")


def _uniform(rng: np.random.Generator | random.Random, n: int) -> np.ndarray:
    if isinstance(rng, random.Random):
        return np.array([rng.random() for _ in range(n)], dtype=np.float64)
    return rng.random(n)


def _integer(rng: np.random.Generator | random.Random, high: int) -> int:
    """A uniform integer in ``[0, high)``."""
    if isinstance(rng, random.Random):
        return rng.randrange(high)
    return int(rng.integers(high))


def _check_text(text: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text)}")
    if not text.strip():
        raise ValueError("cannot make a view of an empty text")


def _check_p(p: float, name: str = "p") -> None:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {p}")


def _token_spans(text: str) -> list[tuple[int, int]]:
    """Whitespace tokens with their trailing whitespace; leading whitespace joins the first."""
    spans = [m.span() for m in _TOKEN.finditer(text)]
    if spans:
        spans[0] = (0, spans[0][1])
    return spans


def _keep_units(
    text: str, spans: Sequence[tuple[int, int]], p: float, rng: np.random.Generator | random.Random
) -> str:
    """Drop each span with probability ``p``; keep one at random if all would go."""
    keep = _uniform(rng, len(spans)) >= p
    if not keep.any():
        keep[_integer(rng, len(spans))] = True
    return "".join(text[a:b] for (a, b), k in zip(spans, keep, strict=True) if k).strip()


def sentence_dropout(text: str, p: float, rng: Rng) -> str:
    """Drop each sentence independently with probability ``p``.

    Args:
        text: a non-empty text.
        p: drop probability in ``[0, 1)``.
        rng: the randomness (Generator, random.Random or int seed).

    Returns:
        the kept sentences in order, with their original separators, ends stripped; at least one
        sentence.
    """
    _check_text(text)
    _check_p(p)
    if p == 0:
        return text
    return _keep_units(text, sentence_spans(text), p, _generator(rng))


def span_dropout(text: str, p: float, rng: Rng, span_length: int = 1) -> str:
    """Drop spans of ``span_length`` whitespace tokens, each with probability ``p``.

    With ``span_length=1`` this is token dropout. The spans tile the token sequence from a random
    offset, so about a fraction ``p`` of the tokens is dropped for any span length.

    Args:
        text: a non-empty text.
        p: drop probability of a span, in ``[0, 1)``.
        rng: the randomness (Generator, random.Random or int seed).
        span_length: tokens per span (>= 1).

    Returns:
        the kept tokens in order with their original separators, ends stripped; at least one span.
    """
    _check_text(text)
    _check_p(p)
    if span_length < 1:
        raise ValueError(f"span_length must be >= 1, got {span_length}")
    if p == 0:
        return text
    gen = _generator(rng)
    tokens = _token_spans(text)
    offset = _integer(gen, span_length) if span_length > 1 else 0
    # Span boundaries: the first span may be shorter, so every token can start a span.
    cuts = [0, *range(offset or span_length, len(tokens), span_length), len(tokens)]
    spans = [(tokens[a][0], tokens[b - 1][1]) for a, b in itertools.pairwise(cuts) if b > a]
    return _keep_units(text, spans, p, gen)


def crop(text: str, fraction: float, rng: Rng) -> str:
    """A contiguous run of ``ceil(fraction * n_tokens)`` whitespace tokens at a random start.

    Args:
        text: a non-empty text.
        fraction: share of tokens kept, in ``(0, 1]``.
        rng: the randomness (Generator, random.Random or int seed).

    Returns:
        the cropped text (an exact substring of ``text``, ends stripped); at least one token.
    """
    _check_text(text)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return text
    tokens = _token_spans(text)
    k = max(1, math.ceil(fraction * len(tokens)))
    start = _integer(_generator(rng), len(tokens) - k + 1)
    return text[tokens[start][0] : tokens[start + k - 1][1]].strip()


@dataclass(frozen=True)
class TextViewConfig:
    """The augmentation of one self-supervised view: crop, then sentence and span dropout.

    Attributes:
        crop_fraction: share of tokens kept by :func:`crop` (1 = no crop).
        sentence_p: :func:`sentence_dropout` probability (0 = off).
        span_p: :func:`span_dropout` probability (0 = off).
        span_length: tokens per dropped span.
    """

    crop_fraction: float = 1.0
    sentence_p: float = 0.1
    span_p: float = 0.1
    span_length: int = 1


def random_view(text: str, rng: Rng, config: TextViewConfig = TextViewConfig()) -> str:
    """One stochastic view of ``text`` (draw two with the same rng for a positive pair).

    The crop comes first so that dropout rates apply to the cropped text.
    """
    gen = _generator(rng)
    view = crop(text, config.crop_fraction, gen)
    view = sentence_dropout(view, config.sentence_p, gen)
    return span_dropout(view, config.span_p, gen, config.span_length)


_PERTURBATIONS: dict[str, Callable[[str, float, np.random.Generator], str]] = {
    "sentence_dropout": sentence_dropout,
    "token_dropout": lambda t, p, g: span_dropout(t, p, g, 1),
    "crop": crop,
}


def perturb_texts(texts: Sequence[str], kind: str, amount: float, seed: int) -> list[str]:
    """Perturb a list of texts for the robustness evaluation, reproducibly.

    Text ``i`` uses its own generator seeded by ``(seed, i)``, so its perturbation does not
    depend on batch size or on the other texts.

    Args:
        texts: non-empty texts.
        kind: ``"sentence_dropout"``, ``"token_dropout"`` (probability ``amount``) or ``"crop"``
            (keep fraction ``amount``).
        amount: the perturbation's parameter.
        seed: the evaluation seed.

    Returns:
        the perturbed texts, in order.
    """
    if kind not in _PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; choose one of {sorted(_PERTURBATIONS)}")
    fn = _PERTURBATIONS[kind]
    return [fn(t, amount, np.random.default_rng([seed, i])) for i, t in enumerate(texts)]
