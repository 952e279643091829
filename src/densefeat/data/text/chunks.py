"""Whitespace normalisation, sentence spans and chunking of long notes."""

from __future__ import annotations

import hashlib
import re

_WS = re.compile(r"\s+")


def normalize_whitespace(text: str) -> str:
    """Collapse runs of whitespace to one space and strip the ends (the identity of a text)."""
    return _WS.sub(" ", text).strip()


def text_group_key(text: str) -> str:
    """Stable key of a text's group: a hash of its whitespace-normalised form.

    Identical texts (up to whitespace) get the same key on every machine and in every dataset
    version, so their split never depends on which other rows are present.
    """
    digest = hashlib.blake2b(normalize_whitespace(text).encode(), digest_size=12)
    return "text:" + digest.hexdigest()


# A sentence ends at . ! or ? followed by whitespace or a comma (MTSamples replaced its line breaks
# with commas, giving ".,NEXT SECTION"), or at a line break. The separator stays with the sentence
# before it, so the pieces concatenate back to the original text.
_SENTENCE_END = re.compile(r"[.!?]+(?:,\s*|\s+)|\n\s*")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentence-ish pieces of ``text``, covering it exactly.

    Each span includes the separator that follows its sentence, so
    ``"".join(text[a:b] for a, b in spans) == text``. Whitespace-only pieces are merged into the
    previous span. Heuristic on purpose (no language model): abbreviations such as "Dr." also end
    a piece, which is harmless for dropout views and chunking.
    """
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end()
        if text[start:end].strip():
            spans.append((start, end))
        elif spans:
            spans[-1] = (spans[-1][0], end)
        else:  # leading whitespace belongs to the first sentence
            continue
        start = end
    if start < len(text):
        if text[start:].strip() or not spans:
            spans.append((start, len(text)))
        else:
            spans[-1] = (spans[-1][0], len(text))
    return spans


def split_sentences(text: str) -> list[str]:
    """Sentence-ish pieces of ``text``, stripped, empty pieces removed."""
    return [p for a, b in sentence_spans(text) if (p := text[a:b].strip())]


def _split_long(sentence: str, max_words: int | None, max_chars: int | None) -> list[str]:
    """Cut one over-long sentence at word boundaries (a single over-long word by characters)."""
    pieces: list[str] = []
    current: list[str] = []
    for word in sentence.split():
        if max_chars is not None and len(word) > max_chars:
            if current:
                pieces.append(" ".join(current))
                current = []
            pieces.extend(word[i : i + max_chars] for i in range(0, len(word), max_chars))
            continue
        candidate = [*current, word]
        too_many = max_words is not None and len(candidate) > max_words
        too_long = max_chars is not None and len(" ".join(candidate)) > max_chars
        if current and (too_many or too_long):
            pieces.append(" ".join(current))
            current = [word]
        else:
            current = candidate
    if current:
        pieces.append(" ".join(current))
    return pieces


def chunk_text(
    text: str, *, max_words: int | None = None, max_chars: int | None = None
) -> list[str]:
    """Split a note into chunks of whole sentences, each within the given limits.

    For chunk-and-pool encoders (a 256-token model cannot read a 3,000-word note at once):
    sentences are packed greedily into chunks of at most ``max_words`` words and ``max_chars``
    characters; a sentence longer than a limit is cut at word boundaries, and a word longer than
    ``max_chars`` by characters. Whitespace inside a chunk is normalised to single spaces.

    Args:
        text: the note.
        max_words: word limit per chunk (whitespace-separated words).
        max_chars: character limit per chunk.

    Returns:
        the chunks in reading order; ``[]`` for an empty or whitespace-only text. No character
        is lost: without whitespace, the chunks concatenate to the text without whitespace.

    Raises:
        ValueError: no limit given, or a limit below 1.
    """
    if max_words is None and max_chars is None:
        raise ValueError("chunk_text needs max_words or max_chars")
    for name, value in (("max_words", max_words), ("max_chars", max_chars)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")

    def fits(words: list[str]) -> bool:
        ok_words = max_words is None or len(words) <= max_words
        return ok_words and (max_chars is None or len(" ".join(words)) <= max_chars)

    chunks: list[str] = []
    current: list[str] = []
    for sentence in split_sentences(text):
        words = sentence.split()
        if fits([*current, *words]):
            current.extend(words)
            continue
        if current:
            chunks.append(" ".join(current))
            current = []
        if fits(words):
            current = words
        else:
            *full, last = _split_long(sentence, max_words, max_chars)
            chunks.extend(full)
            current = last.split()
    if current:
        chunks.append(" ".join(current))
    return chunks
