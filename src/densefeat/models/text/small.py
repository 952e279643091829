"""The small text encoder trained from scratch over a dependency-free hashing tokenizer (or
MiniLM's WordPiece vocabulary when the ``text`` extra is installed).
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .config import TextEncoderConfig, masked_mean, pool_chunks
from .pretrained import load_tokenizer, resolve_model_dir

_WORD = re.compile(r"\w+|[^\w\s]")


class HashingTokenizer:
    """Dependency-free tokenizer: lower-cased words and punctuation hashed into ids.

    ids ``0`` (padding) and ``1`` (start of text, so an empty text still has a token) are
    reserved; a token maps to ``2 + crc32(token) % (buckets - 2)``. CRC32 rather than Python's
    ``hash``, which is salted per process and would change every id between runs.
    """

    PAD_ID = 0
    START_ID = 1

    def __init__(self, buckets: int) -> None:
        if buckets < 3:
            raise ValueError(f"HashingTokenizer: buckets {buckets}, want >= 3")
        self.vocab_size = buckets

    def encode(self, text: str, max_tokens: int) -> list[int]:
        """Token ids of ``text``, the start token first, at most ``max_tokens`` of them."""
        ids = [self.START_ID]
        for token in _WORD.findall(text.lower())[: max_tokens - 1]:
            ids.append(2 + zlib.crc32(token.encode()) % (self.vocab_size - 2))
        return ids


class SmallTextEncoder(nn.Module):
    """A small transformer text encoder trained from scratch (the no-pretraining baseline).

    Token embedding + learned positions -> ``small_layers`` pre-norm transformer layers ->
    masked mean over tokens -> per-note mean over chunks -> Linear to ``d_out``. Long notes are
    chunked exactly as for :class:`PretrainedTextEncoder`.

    Args:
        config: a configuration (its ``small_*``, chunking and ``d_out`` fields are used).

    Raises:
        TextModelNotFoundError: ``small_tokenizer="minilm"`` without the ``text`` extra.
    """

    def __init__(self, config: TextEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config = (config or TextEncoderConfig(kind="small")).validate()
        if config.small_tokenizer == "minilm":
            self.tokenizer: Any = load_tokenizer(resolve_model_dir(config.model_path))
            vocab_size = int(self.tokenizer.vocab_size)
            self.pad_id = int(self.tokenizer.pad_token_id)
        else:
            self.tokenizer = HashingTokenizer(config.hash_buckets)
            vocab_size = config.hash_buckets
            self.pad_id = HashingTokenizer.PAD_ID
        d = config.small_d_model
        self.token_embedding = nn.Embedding(vocab_size, d, padding_idx=self.pad_id)
        self.position_embedding = nn.Embedding(config.max_tokens, d)
        layer = nn.TransformerEncoderLayer(
            d,
            config.small_heads,
            dim_feedforward=4 * d,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(
            layer, config.small_layers, norm=nn.LayerNorm(d), enable_nested_tensor=False
        )
        self.head = nn.Linear(d, config.d_out)
        nn.init.normal_(self.token_embedding.weight, std=1 / math.sqrt(d))
        with torch.no_grad():
            self.token_embedding.weight[self.pad_id].zero_()
        nn.init.normal_(self.position_embedding.weight, std=0.02)

    @property
    def d_out(self) -> int:
        """Width of ``forward``'s output."""
        return self.config.d_out

    def _token_ids(self, chunks: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        if isinstance(self.tokenizer, HashingTokenizer):
            rows = [self.tokenizer.encode(c, cfg.max_tokens) for c in chunks]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
            for i, r in enumerate(rows):
                ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            return ids, ids != self.pad_id
        enc = self.tokenizer(
            chunks, padding=True, truncation=True, max_length=cfg.max_tokens, return_tensors="pt"
        )
        return enc["input_ids"], enc["attention_mask"].bool()

    def encode_chunks(self, chunks: list[str]) -> torch.Tensor:
        """(M, small_d_model) pooled embeddings of texts that fit ``max_tokens``."""
        device = self.token_embedding.weight.device
        if not chunks:
            return torch.zeros(0, self.config.small_d_model, device=device)
        parts = []
        for start in range(0, len(chunks), self.config.batch_size):
            ids, mask = self._token_ids(chunks[start : start + self.config.batch_size])
            ids, mask = ids.to(device), mask.to(device)
            positions = torch.arange(ids.shape[1], device=device)
            x = self.token_embedding(ids) + self.position_embedding(positions)
            h = self.transformer(x, src_key_padding_mask=~mask)
            parts.append(masked_mean(h, mask))
        return torch.cat(parts)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Note embeddings.

        Args:
            texts: N notes of any length.

        Returns:
            (N, d_out) float32.
        """
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.d_out, device=self.token_embedding.weight.device)
        return self.head(pool_chunks(texts, self.config, self.encode_chunks))
