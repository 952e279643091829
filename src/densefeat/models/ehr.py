"""A causal transformer over patient events: one pass, embeddings at any number of cut-offs.

Input is the :class:`~densefeat.data.ehr.EventBatch` contract (left padding, most recent
event at position ``L - 1``). Output is one ``d_model``-dimensional patient embedding per row
(:meth:`EHREncoder.forward`) or per ``(row, cut-off)`` (:meth:`EHREncoder.forward_at`).

Design (and why):

* **Tokens.** Each event is ``E[code] + value(code, value) + time(delta_t, age)``:

  - code embedding with ``padding_idx = 0`` (BEHRT, Li et al. 2020; CEHR-BERT, Pang et al.
    2021);
  - value embedding (``value_embedding``): ``"code"`` (default) adds ``has_value * (v * V[code]
    + u)``, a learned direction per code scaled by the normalised value plus a shared "has a
    value" vector, so a lab's value moves its token along a direction of its own; ``"mlp"``
    adds ``has_value * MLP(v)`` shared by all codes (fewer parameters: no ``vocab x d`` table).
    Padded positions and events without a value add nothing;
  - time encoding: learned Fourier features (Tancik et al. 2020; Time2Vec, Kazemi et al. 2019)
    of ``log1p(delta_t days) / log1p(36525)`` and ``age / 100`` years, with log-spaced initial
    frequencies (the log makes minutes and decades both resolvable). Age features are zeroed
    where the birth time is unknown, so "unknown" differs from "age 0".

  No positional embedding: the causal mask already tells a token what comes before it, and
  absolute positions would change with padding and truncation. No token feature depends on
  the prediction time: ``time_before_prediction`` is *not* an input. That is what lets one
  pass serve every cut-off (see below).
* **Static token.** The time-invariant static features (static-code indicators and
  ``age_known``) are projected to one extra token placed *before* the events (index 0), so
  every event attends to them and a row without events still has a real token to read. Age at
  the prediction time changes with the cut-off, so it is *not* in this token; it enters at the
  readout.
* **Encoder.** Pre-LN transformer blocks (Xiong et al. 2020) with a **causal** mask (each token
  attends to itself and earlier tokens) and key padding, as in CLMBR (Steinberg et al. 2021)
  and other autoregressive EHR models. Because events are sorted by time, the history at a
  cut-off ``tau`` is a prefix of the sequence, and the hidden state at the last event with
  ``time <= tau`` depends on exactly that prefix. A window pair ``(t, t1)`` therefore costs one
  pass over the ``t1`` batch instead of two.
* **Readout at a cut-off ``tau``.** ``z = W2 GELU(W1 [LN(h_last); c(tau)] + b1) + b2`` where
  ``h_last`` is the state of the last event at or before ``tau`` (the static token if there is
  none) and ``c(tau)`` embeds the cut-off-dependent context: age at ``tau`` (the age column of
  ``static`` moved back by ``T - tau``), ``age_known``, ``log1p`` of the days from the last
  event to ``tau`` and whether any event precedes ``tau``. The output ends in a Linear after
  a GELU, not in a LayerNorm: a LayerNorm output lies in an affine hyperplane (coordinates,
  scaled by the gain, sum to a constant), which gives every embedding matrix an exact null
  direction after centring (docs/design.md, condition_number).

Cut-off resolution. ``forward_at`` decides which events precede a cut-off either from exact
event times (``event_time``, see :func:`event_times`) or, by default, from the batch alone: an
event is at or before ``tau`` iff ``time_before_prediction >= float32((T - tau) / 1 day)``,
the same float64-then-float32 rounding the batch builder applies to event times. Rounding is
monotone, so this is exact for every event at or before ``tau`` (an event exactly at ``tau``,
the usual case with date-only data, is included as the builder includes it) and can only err
by *including* an event later than ``tau`` by less than one float32 step of its
``time_before_prediction``: 2**-9 day (169 s) when it lies within 2**15 days (89.7 years) of
the prediction time, 2**-8 day (338 s) within 179 years. The days from the last event to
``tau`` carry the same absolute error. Pass ``event_time`` for exact results.

Truncation. ``forward_at(batch, tau)`` equals ``forward`` on a batch built at ``tau`` when that
batch's events are all present in ``batch`` (no event at or before ``tau`` was cut off by the
``max_len`` window of ``batch``). Otherwise it sees only the most recent events ``<= tau``
that ``batch`` holds: the sliding-window cost of one pass.

Size at the defaults (d_model 128, 2 layers, 4 heads, ff_mult 4, 16 frequencies):
``0.456 M + 2 * 128 * vocab_size`` parameters with ``value_embedding="code"``, ``0.460 M +
128 * vocab_size`` with ``"mlp"`` (plus ``128`` per static code); ~0.27 GFLOP (2 x
multiply-adds) per row forward at L = 256. Leading positions that are padding in every row are
dropped before the pass (exact), so a batch costs what its longest history needs, not
``max_len``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.ehr.batch import DAYS_PER_YEAR, PAD_ID, US_PER_DAY, EventBatch
from ..data.ehr.builder import DEFAULT_MAX_LEN, HistoryBuilder
from ..data.ehr.store import EventStore, rows_searchsorted

__all__ = ["HOUR_STATE_CHANNELS", "EHREncoder", "EHREncoderConfig", "event_times", "hour_state"]

_US_PER_YEAR = US_PER_DAY * DAYS_PER_YEAR
#: ``log1p`` of 100 years in days: scales ``log1p(delta_t)`` to about [0, 1].
_LOG_DAYS_SCALE = math.log1p(100 * DAYS_PER_YEAR)
#: Columns at the end of ``EventBatch.static``: age at the prediction time, age known.
_N_STATIC_EXTRA = 2
_VALUE_EMBEDDINGS = ("code", "mlp")


# --------------------------------------------------------------------------------------------
# Configuration.


@dataclass
class EHREncoderConfig:
    """Hyperparameters of :class:`EHREncoder` (saved in checkpoints through :meth:`to_dict`).

    Attributes:
        vocab_size: size of the code table, ``len(builder.vocabulary)`` (PAD and UNK included).
        n_static: width of ``EventBatch.static``, ``builder.vocabulary.n_static`` (static-code
            indicators + age at prediction + age known; so at least 2).
        d_model: token and embedding width.
        n_layers: transformer blocks.
        n_heads: attention heads; must divide ``d_model``.
        max_len: the most events a batch may hold (the builder's ``max_len``); longer batches
            raise rather than silently costing more than configured.
        dropout: dropout on tokens and residual branches (training only). Attention
            probabilities are not dropped: on CPU that costs a random (B, heads, L, L) tensor per
            layer (~15% of a step at L = 256) and forces the slow attention kernel.
        ff_mult: feed-forward width as a multiple of ``d_model``.
        time_frequencies: Fourier frequencies per time input (delta_t, age).
        time_max_frequency: highest initial frequency, in cycles per unit of the scaled input
            (``age / 100``: 100 means a period of one year).
        learn_time_frequencies: train the frequencies (else they stay a fixed buffer).
        value_embedding: ``"code"`` (a value direction per code) or ``"mlp"`` (one shared MLP).
        tokens: ``"events"`` (a token per event: code + value + time embeddings) or
            ``"hours"`` (a token per hour bin: ``W [bin_values; bin_mask] + time``, one Linear
            of every variable's last value in the hour and its missingness mask; the batches
            must carry ``bin_values``, see :class:`~densefeat.data.ehr.EventBatch`).
        n_variables: V of hour tokens (``len(vocabulary)``); 0 for event tokens.
        carry_forward: hour tokens only: each token also carries every variable's **state**
            up to its hour, read from the batch's own earlier tokens (GRU-D's inputs, Che et
            al. 2018): the last value measured at or before the hour, whether one was, the
            time since it, and how many hours measured it (:func:`hour_state`). The
            observation channels are unchanged (missing stays missing); nothing comes from a
            later hour. False here, as in every run written before it (the token is the hour
            alone); training's ``encoder.carry_forward`` turns it on for hour-token runs.
    """

    vocab_size: int
    n_static: int
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    max_len: int = DEFAULT_MAX_LEN
    dropout: float = 0.1
    ff_mult: int = 4
    time_frequencies: int = 16
    time_max_frequency: float = 100.0
    learn_time_frequencies: bool = True
    value_embedding: str = "code"
    tokens: str = "events"
    n_variables: int = 0
    carry_forward: bool = False

    def __post_init__(self) -> None:
        def positive_int(name: str, minimum: int = 1) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"EHREncoderConfig.{name} must be an int, got {value!r}")
            if value < minimum:
                raise ValueError(f"EHREncoderConfig.{name} must be >= {minimum}, got {value}")

        positive_int("vocab_size", 3)  # PAD, UNK and at least one code
        positive_int("n_static", _N_STATIC_EXTRA)
        for name in ("d_model", "n_layers", "n_heads", "max_len", "ff_mult", "time_frequencies"):
            positive_int(name)
        if self.d_model % self.n_heads:
            raise ValueError(
                f"EHREncoderConfig.n_heads ({self.n_heads}) must divide d_model ({self.d_model})"
            )
        if not (isinstance(self.dropout, int | float) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"EHREncoderConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not (
            isinstance(self.time_max_frequency, int | float)
            and math.isfinite(self.time_max_frequency)
            and self.time_max_frequency > 0.5
        ):
            raise ValueError(
                "EHREncoderConfig.time_max_frequency must be a finite number > 0.5 (the lowest "
                f"initial frequency), got {self.time_max_frequency!r}"
            )
        if not isinstance(self.learn_time_frequencies, bool):
            raise ValueError(
                "EHREncoderConfig.learn_time_frequencies must be a bool, "
                f"got {self.learn_time_frequencies!r}"
            )
        if self.tokens not in ("events", "hours"):
            raise ValueError(
                f"EHREncoderConfig.tokens must be 'events' or 'hours', got {self.tokens!r}"
            )
        if self.tokens == "hours":
            positive_int("n_variables")
        if not isinstance(self.carry_forward, bool):
            raise ValueError(
                f"EHREncoderConfig.carry_forward must be a bool, got {self.carry_forward!r}"
            )
        if self.carry_forward and self.tokens != "hours":
            raise ValueError(
                "EHREncoderConfig.carry_forward needs hour tokens (tokens='hours'), "
                f"got tokens={self.tokens!r}"
            )
        if self.value_embedding not in _VALUE_EMBEDDINGS:
            raise ValueError(
                f"EHREncoderConfig.value_embedding must be one of {_VALUE_EMBEDDINGS}, "
                f"got {self.value_embedding!r}"
            )

    @classmethod
    def from_builder(cls, builder: HistoryBuilder, **overrides: Any) -> EHREncoderConfig:
        """A config sized for ``builder`` (vocab_size, n_static, max_len), plus ``overrides``."""
        tokens = getattr(builder, "tokens", "events")
        sizes = {
            "vocab_size": len(builder.vocabulary),
            "n_static": builder.vocabulary.n_static,
            "max_len": builder.max_len,
            "tokens": tokens,
            "n_variables": len(builder.vocabulary) if tokens == "hours" else 0,
        }
        return cls(**{**sizes, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> EHREncoderConfig:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: keys that are not fields (named), or invalid values.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(state) - known)
        if unknown:
            raise ValueError(f"EHREncoderConfig: unknown keys {unknown}")
        return cls(**state)


# --------------------------------------------------------------------------------------------
# Building blocks.


#: Channels per variable that :func:`hour_state` adds to an hour token.
HOUR_STATE_CHANNELS = 4
#: ``log1p`` of 1,000 hours (~6 weeks): scales ``log1p(hours since a measurement)`` to about
#: [0, 1] over an ICU stay.
_LOG_HOURS_SCALE = math.log1p(1000.0)


def hour_state(batch: EventBatch, max_len: int) -> Tensor:
    """(B, L, 4V): every variable's state at each hour token, from the batch's tokens up to it.

    For token ``p`` and variable ``v``, with ``q = max{q' <= p : bin_mask[q', v]}`` (the last
    hour at or before ``p`` that measured ``v``), the channels are, in blocks of V:

    * ``bin_values[q, v]``: the last value, carried forward (0 where no such ``q``);
    * ``seen = [q exists]``;
    * ``log1p(hours from q to p) / log1p(1000)``, hours from the tokens'
      ``time_before_prediction`` (0 where not seen);
    * ``log1p(#{q' <= p : bin_mask[q', v]}) / log1p(max_len)``: how many hours measured ``v``.

    These are the inputs GRU-D gives its cell besides the observation and its mask (Che et al.
    2018, "Recurrent Neural Networks for Multivariate Time Series with Missing Values"): the
    last observation and the time since it, so that the most recent token alone holds what a
    "last value + count" feature set holds. Strictly causal (only tokens ``q <= p``), so a
    cut-off reading at ``p`` is unchanged by later hours; it reads only the batch, so views
    and perturbations that edit ``bin_values`` / ``bin_mask`` move the state with them. The
    state starts at the oldest token the batch holds (``max_len`` hours with events), not at
    the start of the record.
    """
    measured = batch.bin_mask
    b, length, v = measured.shape
    position = torch.arange(length, device=measured.device).view(1, length, 1)
    # The index of the last measuring token at or before each position (-1: none yet).
    last = torch.where(measured, position, -1).cummax(dim=1).values
    seen = last >= 0
    at = last.clamp_min(0)
    values = batch.bin_values
    carried = values.gather(1, at) * seen.to(values.dtype)
    tbp = batch.time_before_prediction.unsqueeze(-1).expand(b, length, v)
    hours = (tbp.gather(1, at) - tbp).clamp_min(0) * 24.0 * seen.to(tbp.dtype)
    count = measured.to(values.dtype).cumsum(dim=1)
    return torch.cat(
        [
            carried,
            seen.to(values.dtype),
            torch.log1p(hours).to(values.dtype) / _LOG_HOURS_SCALE,
            torch.log1p(count) / math.log1p(max_len),
        ],
        dim=-1,
    )


class FourierTimeEncoding(nn.Module):
    """Learned Fourier features of scalar inputs, projected to ``d_model``.

    For each input ``x_i`` (already scaled to about [0, 1]) and frequency ``f_ik``:
    ``[x_i, sin(2 pi f_ik x_i), cos(2 pi f_ik x_i)]``, then one Linear. Initial frequencies are
    log-spaced from 0.5 (monotone over the range) to ``max_frequency``.

    Args:
        n_inputs: number of scalar inputs.
        n_frequencies: frequencies per input.
        max_frequency: highest initial frequency.
        d_model: output width.
        learnable: whether the frequencies train.
    """

    def __init__(
        self,
        n_inputs: int,
        n_frequencies: int,
        max_frequency: float,
        d_model: int,
        learnable: bool = True,
    ):
        super().__init__()
        freqs = torch.logspace(math.log10(0.5), math.log10(max_frequency), n_frequencies)
        freqs = (2 * math.pi * freqs).repeat(n_inputs, 1)  # (n_inputs, F)
        if learnable:
            self.freqs = nn.Parameter(freqs)
        else:
            self.register_buffer("freqs", freqs)
        self.proj = nn.Linear(n_inputs * (2 * n_frequencies + 1), d_model)

    def features(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """(..., n_inputs) -> (..., n_inputs * (2F + 1)); ``keep`` (..., n_inputs) zeroes inputs."""
        angle = x.unsqueeze(-1) * self.freqs  # (..., n_inputs, F)
        feats = torch.cat([x.unsqueeze(-1), torch.sin(angle), torch.cos(angle)], dim=-1)
        if keep is not None:
            feats = feats * keep.unsqueeze(-1).to(feats.dtype)
        return feats.flatten(-2)

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """(..., n_inputs) -> (..., d_model)."""
        return self.proj(self.features(x, keep))


class ValueEmbedding(nn.Module):
    """Embedding of an event's normalised numeric value (zero where it has none).

    Args:
        vocab_size: code table size (mode ``"code"``).
        d_model: output width.
        mode: ``"code"``: ``v * V[code] + u``; ``"mlp"``: ``MLP(v)`` shared by all codes.
    """

    def __init__(self, vocab_size: int, d_model: int, mode: str = "code"):
        super().__init__()
        self.mode = mode
        if mode == "code":
            self.direction = nn.Embedding(vocab_size, d_model, padding_idx=PAD_ID)
            self.present = nn.Parameter(torch.zeros(d_model))
        elif mode == "mlp":
            self.mlp = nn.Sequential(nn.Linear(1, 32), nn.GELU(), nn.Linear(32, d_model))
        else:  # pragma: no cover - the config validates it
            raise ValueError(f"unknown value embedding {mode!r}")

    def forward(self, codes: Tensor, values: Tensor, has_value: Tensor) -> Tensor:
        """(B, L) codes, values, has_value -> (B, L, d_model)."""
        if self.mode == "code":
            out = values.unsqueeze(-1) * self.direction(codes) + self.present
        else:
            out = self.mlp(values.unsqueeze(-1))
        return out * has_value.unsqueeze(-1).to(out.dtype)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention`` with a bool mask."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        """``x`` (B, N, d); ``allowed`` (B, 1, N, N) True where query i may attend to key j."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, d // self.n_heads).unbind(2)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=allowed,
        )
        return self.out(y.transpose(1, 2).reshape(b, n, d))

    def forward_queries(self, x: Tensor, index: Tensor, allowed: Tensor) -> Tensor:
        """The outputs of :meth:`forward` at query positions ``index`` only.

        ``x`` (B, N, d) are the keys and values; ``index`` (B, K) the query positions;
        ``allowed`` (B, 1, K, N) the mask rows of those queries. Equals
        ``forward(x, full_mask).gather(1, index)`` (up to float rounding): a query's output
        depends on its own row of the mask only, so the other queries need not be computed.
        """
        b, n, d = x.shape
        k_rows = index.shape[1]
        h = self.n_heads
        q_in = x.gather(1, index.unsqueeze(-1).expand(-1, -1, d))  # (B, K, d)
        # The q rows of the packed weight for the K queries, the k and v rows for every key.
        q = F.linear(q_in, self.qkv.weight[:d], self.qkv.bias[:d])
        kv = F.linear(x, self.qkv.weight[d:], self.qkv.bias[d:])
        k, v = kv.view(b, n, 2, h, d // h).unbind(2)
        y = F.scaled_dot_product_attention(
            q.view(b, k_rows, h, d // h).transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=allowed,
        )
        return self.out(y.transpose(1, 2).reshape(b, k_rows, d))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(LN(x))``, then ``x + FF(LN(x))``."""

    def __init__(self, d_model: int, n_heads: int, ff_mult: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, ff_mult * d_model), nn.GELU(), nn.Linear(ff_mult * d_model, d_model)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x), allowed))
        return x + self.drop(self.ff(self.norm2(x)))

    def forward_queries(self, x: Tensor, index: Tensor, allowed: Tensor) -> Tensor:
        """``forward(x, full_mask).gather(1, index)``: (B, K, d) at positions ``index`` (B, K)
        only, ``allowed`` (B, 1, K, N) their mask rows. For the last block, whose other
        outputs nothing reads: the feed-forward (2/3 of a block's FLOPs) runs on K tokens
        instead of N."""
        d = x.shape[-1]
        x_q = x.gather(1, index.unsqueeze(-1).expand(-1, -1, d))
        x_q = x_q + self.drop(self.attn.forward_queries(self.norm1(x), index, allowed))
        return x_q + self.drop(self.ff(self.norm2(x_q)))


# --------------------------------------------------------------------------------------------
# The encoder.


class EHREncoder(nn.Module):
    """Causal transformer patient encoder (see the module docstring for every design choice).

    Args:
        config: an :class:`EHREncoderConfig`.

    Example::

        cfg = EHREncoderConfig.from_builder(builder)
        enc = EHREncoder(cfg)
        z = enc(batch)                                   # (B, d_model) at prediction_time
        z_t, z_t1 = enc.forward_at(batch_t1, torch.stack([t, t1], 1)).unbind(1)
    """

    #: In eval mode, run the last block at the read-out tokens only (:meth:`_states` with
    #: ``at``). Not part of the config (the outputs are the same); False gives the full pass,
    #: the reference the tests and ``benchmarks/embed.py`` compare against.
    fast_readout: bool = True

    def __init__(self, config: EHREncoderConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        if config.tokens == "hours":
            # An hour token: every variable's last value in the hour and whether it was
            # measured, in one Linear (the missingness mask is an input, nothing is imputed),
            # with the variables' carried state when configured (HOUR_STATE_CHANNELS more).
            width = 2 + (HOUR_STATE_CHANNELS if config.carry_forward else 0)
            self.bin_embedding = nn.Linear(width * config.n_variables, d)
        else:
            self.code_embedding = nn.Embedding(config.vocab_size, d, padding_idx=PAD_ID)
            self.value_embedding = ValueEmbedding(config.vocab_size, d, config.value_embedding)
        self.time_encoding = FourierTimeEncoding(
            2,
            config.time_frequencies,
            config.time_max_frequency,
            d,
            learnable=config.learn_time_frequencies,
        )
        # Static codes + age_known -> the token at index 0.
        self.static_token = nn.Linear(config.n_static - _N_STATIC_EXTRA + 1, d)
        self.token_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(d, config.n_heads, config.ff_mult, config.dropout) for _ in range(config.n_layers)
        )
        self.final_norm = nn.LayerNorm(d)
        # Cut-off context: age at tau / 100, age_known, log1p(days since last event), any event.
        self.context = nn.Sequential(nn.Linear(4, d), nn.GELU())
        self.readout = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, d))
        self.apply(self._init_weights)
        # GPT-2's scaling of residual-branch outputs keeps the stream's variance at init
        # independent of depth.
        for block in self.blocks:
            for proj in (block.attn.out, block.ff[2]):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    @property
    def embed_dim(self) -> int:
        """Width of the patient embedding (``d_model``)."""
        return self.config.d_model

    # ---- the shared pass ----------------------------------------------------------------

    def _check(self, batch: EventBatch) -> None:
        cfg = self.config
        if batch.codes.ndim != 2:
            raise ValueError(f"EventBatch.codes must be (B, L), got {tuple(batch.codes.shape)}")
        if batch.seq_len > cfg.max_len:
            raise ValueError(
                f"batch has L={batch.seq_len} events per row, more than max_len={cfg.max_len}"
            )
        if (cfg.tokens == "hours") != batch.is_binned:
            raise ValueError(
                f"the encoder reads {cfg.tokens} tokens but the batch holds "
                f"{'hour' if batch.is_binned else 'event'} tokens (a store encoded with "
                "another history builder?)"
            )
        if batch.is_binned and batch.bin_values.shape[-1] != cfg.n_variables:
            raise ValueError(
                f"batch.bin_values has {batch.bin_values.shape[-1]} variables, the encoder "
                f"was built for n_variables={cfg.n_variables}"
            )
        if batch.static.shape[-1] != cfg.n_static:
            raise ValueError(
                f"batch.static has {batch.static.shape[-1]} columns, the encoder was built for "
                f"n_static={cfg.n_static} (a batch from another vocabulary?)"
            )

    def _tokens(self, batch: EventBatch) -> Tensor:
        """(B, 1 + L, d): the static token, then one token per event position."""
        known = batch.age_known.unsqueeze(-1)  # (B, 1)
        time_in = torch.stack(
            [torch.log1p(batch.delta_t.clamp_min(0)) / _LOG_DAYS_SCALE, batch.age / 100.0], -1
        )
        keep = torch.stack([torch.ones_like(batch.mask), known.expand_as(batch.mask)], -1)
        if batch.is_binned:
            measured = batch.bin_mask.to(batch.bin_values.dtype)
            channels = [batch.bin_values, measured]
            if self.config.carry_forward:
                channels.append(hour_state(batch, self.config.max_len))
            content = self.bin_embedding(torch.cat(channels, dim=-1))
            content = content * batch.mask.unsqueeze(-1).to(content.dtype)  # padding adds 0
        else:
            content = self.code_embedding(batch.codes) + self.value_embedding(
                batch.codes, batch.values, batch.has_value
            )
        events = content + self.time_encoding(time_in, keep)
        static_in = torch.cat(
            [batch.static[:, :-_N_STATIC_EXTRA], known.to(batch.static.dtype)], dim=-1
        )
        static = self.static_token(static_in).unsqueeze(1)
        return self.token_dropout(torch.cat([static, events], dim=1))

    def _states(self, batch: EventBatch, at: Tensor | None = None) -> Tensor:
        """(B, 1 + L, d) final-normed states; index 0 is the static token.

        With ``at`` (B, K) token indices: only the states at those indices, (B, K, d), the
        last block run at those K queries alone (:meth:`Block.forward_queries`; exact, since
        nothing else reads the last block's other outputs).
        """
        x = self._tokens(batch)
        b, n = x.shape[:2]
        valid = torch.cat([batch.mask.new_ones(b, 1), batch.mask], dim=1)  # (B, N)
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        # Padding queries still see the static token, so no softmax row is empty (no NaN).
        allowed = (causal.unsqueeze(0) & valid.unsqueeze(1)).unsqueeze(1)  # (B, 1, N, N)
        if at is None:
            for block in self.blocks:
                x = block(x, allowed)
            return self.final_norm(x)
        for block in self.blocks[:-1]:
            x = block(x, allowed)
        rows = allowed.gather(2, at[:, None, :, None].expand(-1, 1, -1, n))  # (B, 1, K, N)
        return self.final_norm(self.blocks[-1].forward_queries(x, at, rows))

    @staticmethod
    def _trim(batch: EventBatch, event_time: Tensor | None) -> tuple[EventBatch, Tensor | None]:
        """Drop the leading positions that are padding in every row.

        Exact (padding never reaches a real token), and it makes cost follow the longest
        history in the batch rather than ``max_len``: the builder always pads to ``max_len``.
        """
        # Keep one position so that the gathers below never index an empty axis.
        drop = batch.seq_len - max(int(batch.lengths.max()), 1) if batch.batch_size else 0
        if drop <= 0:
            return batch, event_time
        cut = {name: getattr(batch, name)[:, drop:] for name in batch.position_fields()}
        return replace(batch, **cut), None if event_time is None else event_time[:, drop:]

    def event_states(self, batch: EventBatch) -> Tensor:
        """Per-event states (B, L, d_model), aligned with ``batch.codes``.

        State ``p`` depends only on the static features and events ``0..p`` (causal): the input
        of a next-event (CLMBR-style) prediction head. Padded positions hold zeros or finite
        values that mean nothing: select real ones with ``batch.mask``. These states end in
        the final LayerNorm (they are per-token features, not the patient embedding).
        """
        self._check(batch)
        trimmed, _ = self._trim(batch, None)
        states = self._states(trimmed)[:, 1:]
        return F.pad(states, (0, 0, batch.seq_len - trimmed.seq_len, 0))

    # ---- cut-offs -------------------------------------------------------------------------

    def _cutoff_index(
        self, batch: EventBatch, cutoffs: Tensor, event_time: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Per (row, cut-off): token index to read, days since its event, events included.

        Returns:
            ``index`` (B, K) int64 into the ``1 + L`` tokens (0 = static token), ``gap_days``
            (B, K) float32 (0 where nothing is included), ``count`` (B, K) int64.
        """
        seq = batch.seq_len
        pt = batch.prediction_time.unsqueeze(1)  # (B, 1)
        if event_time is not None:
            inside = event_time.unsqueeze(1) <= cutoffs.unsqueeze(2)  # (B, K, L)
        else:
            # The builder's rounding (int64 us -> float64 days -> float32), applied to the
            # cut-off: monotone, so an event exactly at tau compares equal (module docstring).
            offset = ((pt - cutoffs).to(torch.float64) / US_PER_DAY).to(torch.float32)
            inside = batch.time_before_prediction.unsqueeze(1) >= offset.unsqueeze(2)
        count = (inside & batch.mask.unsqueeze(1)).sum(-1)  # (B, K)
        n_row = batch.lengths.unsqueeze(1)
        # Left padding: the row's events sit at L - n_row .. L - 1, oldest first.
        last_event = (seq - n_row + count - 1).clamp_min(0)  # (B, K) event position
        has = count > 0
        if event_time is not None:
            t_last = event_time.gather(1, last_event)
            gap = (cutoffs - t_last).to(torch.float64) / US_PER_DAY
        else:
            tbp_last = batch.time_before_prediction.gather(1, last_event).to(torch.float64)
            gap = tbp_last - offset.to(torch.float64)
        gap = torch.where(has, gap.clamp_min(0), torch.zeros_like(gap)).to(torch.float32)
        index = torch.where(has, last_event + 1, torch.zeros_like(last_event))
        return index, gap, count

    def _check_cutoffs(self, batch: EventBatch, cutoffs: Tensor, event_time: Tensor | None):
        b = batch.batch_size
        if cutoffs.ndim != 2 or cutoffs.shape[0] != b or cutoffs.dtype != torch.int64:
            raise ValueError(
                f"cutoffs must be a (B={b}, K) int64 tensor of microseconds, got "
                f"{tuple(cutoffs.shape)} {cutoffs.dtype}"
            )
        if (cutoffs > batch.prediction_time.unsqueeze(1)).any():
            raise ValueError(
                "cutoffs must be at or before each row's prediction_time: the batch holds no "
                "event after it, so a later cut-off cannot be embedded faithfully"
            )
        if event_time is not None and (
            event_time.shape != batch.codes.shape or event_time.dtype != torch.int64
        ):
            raise ValueError(
                f"event_time must be (B, L) int64 like batch.codes, got "
                f"{tuple(event_time.shape)} {event_time.dtype}"
            )

    def forward_at(
        self, batch: EventBatch, cutoffs: Tensor, event_time: Tensor | None = None
    ) -> Tensor:
        """Patient embeddings at several cut-off times, from ONE encoder pass.

        The embedding at ``tau`` depends only on the static codes and the events of ``batch``
        with ``time <= tau``; it equals :meth:`forward` on a batch built at ``tau`` (up to
        float rounding, and within the resolution and truncation limits in the module
        docstring). Age at ``tau`` is the batch's age at the prediction time minus
        ``(prediction_time - tau)`` in years (0 where age is unknown).

        Args:
            batch: histories cut at their prediction times.
            cutoffs: (B, K) int64 microseconds, each ``<= batch.prediction_time`` of its row;
                any order, repeats allowed.
            event_time: optional (B, L) int64 exact event times (:func:`event_times`); without
                it, times are resolved from ``time_before_prediction`` (float32).

        Returns:
            (B, K, d_model).

        Raises:
            ValueError: a batch or cut-offs that do not fit the encoder (named).
        """
        self._check(batch)
        self._check_cutoffs(batch, cutoffs, event_time)
        batch, event_time = self._trim(batch, event_time)
        index, gap, count = self._cutoff_index(batch, cutoffs, event_time)
        if self.training or not self.fast_readout:
            states = self._states(batch)
            h = states.gather(1, index.unsqueeze(-1).expand(-1, -1, states.shape[-1]))
        else:
            # Eval: the last block at the K read-out tokens only (exact; ~40% less work at 2
            # layers). Training keeps the full pass so its dropout draws stay as they were.
            h = self._states(batch, at=index)
        return self._readout(batch, h, cutoffs, gap, count)

    def states_and_cutoffs(self, batch: EventBatch, cutoffs: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`event_states` and :meth:`forward_at` from ONE pass (the hybrid's inputs).

        Returns:
            per-event states (B, L, d_model) and embeddings at the cut-offs (B, K, d_model).
        """
        self._check(batch)
        self._check_cutoffs(batch, cutoffs, None)
        trimmed, _ = self._trim(batch, None)
        states = self._states(trimmed)
        index, gap, count = self._cutoff_index(trimmed, cutoffs, None)
        h = states.gather(1, index.unsqueeze(-1).expand(-1, -1, states.shape[-1]))
        z = self._readout(trimmed, h, cutoffs, gap, count)
        events = F.pad(states[:, 1:], (0, 0, batch.seq_len - trimmed.seq_len, 0))
        return events, z

    def _readout(
        self, batch: EventBatch, h: Tensor, cutoffs: Tensor, gap: Tensor, count: Tensor
    ) -> Tensor:
        """(B, K, d): the readout of the states ``h`` (B, K, d) read at each cut-off, with
        the static context at that cut-off (age, time since the last event)."""
        known = batch.age_known.unsqueeze(1).to(torch.float32)  # (B, 1)
        age_pred = batch.static[:, -_N_STATIC_EXTRA].to(torch.float64).unsqueeze(1)
        back = (batch.prediction_time.unsqueeze(1) - cutoffs).to(torch.float64) / _US_PER_YEAR
        age = (age_pred - back).to(torch.float32) * known
        context = torch.stack(
            [
                age / 100.0,
                known.expand_as(age),
                torch.log1p(gap) / _LOG_DAYS_SCALE,
                (count > 0).to(torch.float32),
            ],
            dim=-1,
        ).to(h.dtype)
        return self.readout(torch.cat([h, self.context(context)], dim=-1))

    def forward(self, batch: EventBatch, event_time: Tensor | None = None) -> Tensor:
        """Patient embeddings (B, d_model) at each row's prediction time.

        Reads the state of the row's last event (the static token for a row without events)
        with the static context at the prediction time; finite for every row.
        """
        return self.forward_at(batch, batch.prediction_time.unsqueeze(1), event_time)[:, 0]


def event_times(store: EventStore, batch: EventBatch) -> Tensor:
    """Exact (B, L) int64 event times of a batch gathered from ``store`` (0 on padding).

    For hour tokens, the time of each token's last event.

    ``EventBatch`` carries event times only as float32 days before the prediction time; this
    recovers the int64 microseconds from the store with the same search the gather used, for
    :meth:`EHREncoder.forward_at` at sub-minute resolution.

    Raises:
        ValueError: the batch was not gathered from this store (its times disagree).
    """
    sid = batch.subject_id.cpu().numpy()
    pt = batch.prediction_time.cpu().numpy()
    mask = batch.mask.cpu().numpy()
    seq = mask.shape[1]
    if batch.is_binned:
        # Hour tokens: the time of each token's last event (a token is at or before tau
        # exactly when its whole hour is), from the same binning as the gather.
        ref, times = store.hours_and_times(sid, pt, seq)
        if not (
            np.array_equal(ref.mask.numpy(), mask)
            and torch.equal(ref.time_before_prediction, batch.time_before_prediction.cpu())
        ):
            raise ValueError("event_times: the batch was not gathered from this store")
        return torch.from_numpy(times.astype(np.int64)).to(batch.codes.device)
    idx = store.index_of(sid)
    cut = rows_searchsorted(store.time, store.start[idx], store.end[idx], pt)
    n = mask.sum(axis=1)
    pos = np.arange(seq)[None, :] - (seq - n)[:, None]
    ev = np.where(mask, (cut - n)[:, None] + pos, store.n_events)
    time = np.where(mask, store.time[ev], 0)
    tbp = np.where(mask, (pt[:, None] - time) / US_PER_DAY, 0.0).astype(np.float32)
    if (cut - store.start[idx] < n).any() or not np.array_equal(
        tbp, batch.time_before_prediction.cpu().numpy()
    ):
        raise ValueError("event_times: the batch was not gathered from this store")
    return torch.from_numpy(time.astype(np.int64)).to(batch.codes.device)
