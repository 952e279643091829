"""The training methods: a registry of small frozen dataclasses, not a class hierarchy.

Every method trains the same encoder on the same inputs with the same number of encoder passes
(DESIGN.md, Baselines). What differs is the head on top of the encoder and the loss:

=============  ==========  ===================================================================
method         inputs      head and loss
=============  ==========  ===================================================================
``dense``      pairs       projector; :class:`~densefeat.losses.DenseFeatureLoss` (w_spec,
                           w_orth, w_sub; ``--set w_sub=0`` style ablations)
``simclr``     pairs       projector; :class:`~densefeat.losses.InfoNCELoss` (temperature)
``vicreg``     pairs       projector; :class:`~densefeat.losses.VICRegLoss` (25 / 25 / 1)
``barlow``     pairs       projector; :class:`~densefeat.losses.BarlowTwinsLoss` (lambda 5e-3)
``masked``     pairs       next-event code prediction on the causal per-event states,
                           cross-entropy (the generative family; CLMBR-style)
``supervised`` labels      :class:`~densefeat.models.heads.LinearClassifier`, BCE on labels
``random``     none        no training: the untrained encoder
=============  ==========  ===================================================================

"pairs" are window pairs ``(t, t1)`` of one subject; the encoder embeds both cut-offs in ONE
causal pass over the history at ``t1`` (:meth:`EHREncoder.forward_at`). ``masked`` reads the
per-event states of that same pass, so it also costs one pass per pair; ``supervised`` costs
one pass per labelled row.

A method reads its hyperparameters by attribute from the training config (any object with the
named attributes; :class:`densefeat.train.TrainConfig` in practice), so this module does not
import the training package (imports point downward, DESIGN.md Architecture).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data.history import PAD_ID
from .losses import BarlowTwinsLoss, DenseFeatureLoss, InfoNCELoss, VICRegLoss
from .models.heads import LinearClassifier, ProjectionHead

__all__ = ["METHODS", "Method", "get_method"]

#: A loss: ``(outputs, inputs) -> (loss, terms)``; terms are detached 0-d tensors for the log
#: (tensors, not floats: a float() per term would be a host-device sync per step on GPU).
LossFn = Callable[[dict[str, Tensor], dict[str, Any]], tuple[Tensor, dict[str, Tensor]]]


@dataclass(frozen=True)
class Method:
    """One training method.

    Attributes:
        name: registry key.
        inputs: ``"pairs"`` (window pairs), ``"labels"`` (labelled rows) or ``"none"``.
        needs_labels: the method needs ``--labels``.
        build_head: ``(config, d_model, vocab_size) -> head module`` (None: no head).
        forward: ``(encoder, head, inputs) -> outputs`` (one encoder pass; runs inside DDP).
        build_loss: ``config -> loss function`` (runs outside DDP: global-batch collectives).
        uses_all_parameters: False when some encoder parameters get no gradient (DDP must
            then look for unused parameters).
        description: one line for ``--help``.
    """

    name: str
    inputs: str
    needs_labels: bool
    build_head: Callable[[Any, int, int], nn.Module | None]
    forward: Callable[[nn.Module, nn.Module | None, dict[str, Any]], dict[str, Tensor]]
    build_loss: Callable[[Any], LossFn] | None
    uses_all_parameters: bool = True
    description: str = ""

    @property
    def trains(self) -> bool:
        """Whether the method has a loss to optimise (``random`` has none)."""
        return self.build_loss is not None


# ---- heads ------------------------------------------------------------------------------------


def _projector(cfg: Any, d_model: int, vocab_size: int) -> nn.Module:
    return ProjectionHead(
        d_model, cfg.proj_hidden, cfg.proj_dim, n_layers=cfg.proj_layers, norm=cfg.projector_norm
    )


def _code_head(cfg: Any, d_model: int, vocab_size: int) -> nn.Module:
    return nn.Linear(d_model, vocab_size)


def _classifier(cfg: Any, d_model: int, vocab_size: int) -> nn.Module:
    return LinearClassifier(d_model, 1)


def _no_head(cfg: Any, d_model: int, vocab_size: int) -> None:
    return None


# ---- forwards (one encoder pass each) ---------------------------------------------------------


def _forward_pairs(encoder: nn.Module, head: nn.Module | None, inputs: dict[str, Any]) -> dict:
    z = encoder.forward_at(inputs["batch"], inputs["cutoffs"])  # (B, 2, d): t and t1
    b = z.shape[0]
    p = head(z.flatten(0, 1)).view(b, 2, -1)  # type: ignore[misc]
    return {"za": p[:, 0], "zb": p[:, 1]}


def _forward_events(encoder: nn.Module, head: nn.Module | None, inputs: dict[str, Any]) -> dict:
    batch = inputs["batch"]
    states = encoder.event_states(batch)  # (B, L, d), causal
    # The state at event p predicts the code of event p + 1 (both real events).
    target = batch.codes[:, 1:]
    keep = batch.mask[:, 1:] & batch.mask[:, :-1]
    logits = head(states[:, :-1][keep])  # type: ignore[misc]
    return {"logits": logits, "target": target[keep]}


def _forward_labels(encoder: nn.Module, head: nn.Module | None, inputs: dict[str, Any]) -> dict:
    return {"logits": head(encoder(inputs["batch"])).squeeze(-1)}  # type: ignore[misc]


def _forward_none(encoder: nn.Module, head: nn.Module | None, inputs: dict[str, Any]) -> dict:
    return {}


# ---- losses -----------------------------------------------------------------------------------


def _pair_loss(module: nn.Module) -> LossFn:
    def loss_fn(out: dict[str, Tensor], inputs: dict[str, Any]) -> tuple[Tensor, dict]:
        # Objectives in float32 even under bf16 autocast (Cholesky/eigen maths, DESIGN.md).
        loss = module(out["za"].float(), out["zb"].float())
        if isinstance(loss, tuple):
            loss, terms = loss
            return loss, {k: v.detach() for k, v in terms.items() if k != "loss"}
        return loss, {}

    return loss_fn


def _dense_loss(cfg: Any) -> LossFn:
    return _pair_loss(DenseFeatureLoss(cfg.w_spec, cfg.w_orth, cfg.w_sub, top_k=cfg.top_k))


def _simclr_loss(cfg: Any) -> LossFn:
    return _pair_loss(InfoNCELoss(cfg.temperature))


def _vicreg_loss(cfg: Any) -> LossFn:
    return _pair_loss(VICRegLoss(cfg.vicreg_sim, cfg.vicreg_std, cfg.vicreg_cov))


def _barlow_loss(cfg: Any) -> LossFn:
    return _pair_loss(BarlowTwinsLoss(cfg.barlow_lambda))


def _masked_loss(cfg: Any) -> LossFn:
    def loss_fn(out: dict[str, Tensor], inputs: dict[str, Any]) -> tuple[Tensor, dict]:
        logits, target = out["logits"].float(), out["target"]
        if target.numel() == 0:
            # A batch of single-event histories: nothing to predict, but keep the graph (DDP).
            return logits.sum() * 0.0, {}
        # Local mean; DDP averages the gradients over ranks (equal token counts per rank are
        # not guaranteed, so this is a mean of per-rank means, stated in the docs).
        loss = F.cross_entropy(logits, target, ignore_index=PAD_ID)
        acc = (logits.argmax(-1) == target).float().mean()
        return loss, {"accuracy": acc.detach()}

    return loss_fn


def _supervised_loss(cfg: Any) -> LossFn:
    def loss_fn(out: dict[str, Tensor], inputs: dict[str, Any]) -> tuple[Tensor, dict]:
        y = inputs["labels"].to(out["logits"].device, torch.float32)
        return F.binary_cross_entropy_with_logits(out["logits"].float(), y), {}

    return loss_fn


# ---- the registry -----------------------------------------------------------------------------


def _pair_method(name: str, build_loss: Callable[[Any], LossFn], description: str) -> Method:
    return Method(name, "pairs", False, _projector, _forward_pairs, build_loss, True, description)


METHODS: dict[str, Method] = {
    "dense": _pair_method(
        "dense", _dense_loss, "dense-feature objective (spectral + orthogonality + subspace)"
    ),
    "simclr": _pair_method("simclr", _simclr_loss, "SimCLR / InfoNCE on window pairs"),
    "vicreg": _pair_method("vicreg", _vicreg_loss, "VICReg (25/25/1) on window pairs"),
    "barlow": _pair_method("barlow", _barlow_loss, "Barlow Twins (lambda 5e-3) on window pairs"),
    # The readout and cut-off context of the encoder are not used by next-event prediction.
    "masked": Method(
        "masked",
        "pairs",
        False,
        _code_head,
        _forward_events,
        _masked_loss,
        False,
        "next-event code prediction (cross-entropy; generative family)",
    ),
    "supervised": Method(
        "supervised",
        "labels",
        True,
        _classifier,
        _forward_labels,
        _supervised_loss,
        True,
        "binary cross-entropy on task labels (needs --labels)",
    ),
    "random": Method(
        "random", "none", False, _no_head, _forward_none, None, True, "untrained encoder"
    ),
}


def get_method(name: str) -> Method:
    """The registered method ``name``.

    Raises:
        ValueError: an unknown name (the known ones are listed).
    """
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}") from None
