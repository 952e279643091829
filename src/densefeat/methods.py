"""The training methods: a registry of small frozen dataclasses, not a class hierarchy.

Every method trains the same encoder on the same inputs with the same number of encoder passes
(docs/design.md, Baselines). What differs is the head on top of the encoder and the loss:

=============  ==========  ===================================================================
method         inputs      head and loss
=============  ==========  ===================================================================
``dense``      pairs       projector; :class:`~densefeat.losses.DenseFeatureLoss` (w_spec,
                           w_orth, w_sub; ``--set dense.w_sub=0`` style ablations)
``simclr``     pairs       projector; :class:`~densefeat.losses.InfoNCELoss` (temperature)
``vicreg``     pairs       projector; :class:`~densefeat.losses.VICRegLoss` (25 / 25 / 1)
``barlow``     pairs       projector; :class:`~densefeat.losses.BarlowTwinsLoss` (lambda 5e-3)
``masked``     pairs       next-event code prediction on the causal per-event states (EHR),
                           masked-token prediction (small text encoder); cross-entropy
                           (the generative family; CLMBR- / BERT-style); next-hour
                           prediction with hour tokens (BCE of what is measured + MSE)
``masked+      pairs       ``masked`` + ``hybrid.w_dense`` x ``dense`` on the window pairs, one
dense``                    pass (EHR only; beyond the paper, its own row in reports)
``supervised`` labels      :class:`~densefeat.models.heads.LinearClassifier`, BCE on labels
``random``     none        no training: the untrained encoder
=============  ==========  ===================================================================

"pairs" are two embeddings of the same subject or note, built per modality (the training
package prepares the inputs; :func:`backbone_pairs` reads them):

* EHR: window pairs ``(t, t1)`` of one subject; the encoder embeds both cut-offs in ONE causal
  pass over the history at ``t1`` (:meth:`EHREncoder.forward_at`); or, with
  ``data.pairs="views"``, two random views of the history at ``t1`` (``views``: 2B rows, one
  encoder call; :mod:`densefeat.train.views`).
* text: two stochastic views of one note, or a note and the same subject's next note; the 2B
  texts go through the text encoder in one call (two text encodings per pair).
* multimodal: the codes and notes embeddings of one record at one time
  (``pairs="modalities"``, one pass), or the fused embedding at ``t`` and ``t1``
  (``pairs="windows"``, one pass over 2B rows).

``masked`` is next-event code prediction on EHR (and on the codes encoder of a multimodal
record; its notes side gets no gradient) and masked-token prediction with the small text
encoder (the pretrained MiniLM ships without its masked-LM head); it reads the per-event or
per-token states of one pass. Its loss is the exact mean over the GLOBAL batch's tokens (the
token count is all-reduced), so a DDP step equals the single-process step. ``supervised`` costs
one pass per labelled row and trains one logit per label (BCE; one-vs-rest for several labels).

A method reads its hyperparameters by attribute from the training config (any object with the
named attributes; :class:`densefeat.train.TrainConfig` in practice), so this module does not
import the training package (imports point downward, docs/design.md, Architecture).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .choices import METHOD_NAMES
from .data.ehr.batch import PAD_ID
from .losses import BarlowTwinsLoss, DenseFeatureLoss, InfoNCELoss, VICRegLoss
from .models.heads import LinearClassifier, ProjectionHead

__all__ = [
    "METHODS",
    "Method",
    "backbone_pairs",
    "backbone_rows",
    "get_method",
    "load_loss_state",
    "loss_state",
    "modality_pairs",
]

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
        build_head: ``(config, d_model, vocab_size, n_outputs=1) -> head module`` (None: no
            head); ``vocab_size`` is the code (EHR) or token (text) vocabulary, ``n_outputs``
            the number of labels.
        forward: ``(encoder, head, inputs) -> outputs`` (one encoder pass; runs inside DDP).
        build_loss: ``config -> loss function`` (runs outside DDP: global-batch collectives).
        uses_all_parameters: False when some encoder parameters get no gradient (DDP must
            then look for unused parameters).
        description: one line for ``--help``.
    """

    name: str
    inputs: str
    needs_labels: bool
    build_head: Callable[..., nn.Module | None]
    forward: Callable[[nn.Module, nn.Module | None, dict[str, Any]], dict[str, Tensor]]
    build_loss: Callable[[Any], LossFn] | None
    uses_all_parameters: bool = True
    description: str = ""

    @property
    def trains(self) -> bool:
        """Whether the method has a loss to optimise (``random`` has none)."""
        return self.build_loss is not None


# ---- heads ------------------------------------------------------------------------------------


def _projector(cfg: Any, d_model: int, vocab_size: int, n_outputs: int = 1) -> nn.Module:
    return ProjectionHead(
        d_model,
        cfg.projector.hidden,
        cfg.projector.dim,
        n_layers=cfg.projector.layers,
        norm=cfg.projector.norm,
    )


def _code_head(cfg: Any, d_model: int, vocab_size: int, n_outputs: int = 1) -> nn.Module:
    return nn.Linear(d_model, vocab_size)


def _hybrid_head(cfg: Any, d_model: int, vocab_size: int, n_outputs: int = 1) -> nn.Module:
    return nn.ModuleDict(
        {"events": _code_head(cfg, d_model, vocab_size), "projector": _projector(cfg, d_model, 0)}
    )


def _classifier(cfg: Any, d_model: int, vocab_size: int, n_outputs: int = 1) -> nn.Module:
    return LinearClassifier(d_model, n_outputs)


def _no_head(cfg: Any, d_model: int, vocab_size: int, n_outputs: int = 1) -> None:
    return None


# ---- forwards (one encoder pass each) ---------------------------------------------------------


def backbone_pairs(encoder: nn.Module, inputs: dict[str, Any]) -> Tensor:
    """(B, 2, d) backbone embeddings of both sides of B pairs, in one encoder call.

    The kind of pair is read from the inputs (see the module docstring): ``cutoffs`` (EHR
    windows), ``texts`` (2B texts, side a then side b) or ``mm`` (a multimodal batch with
    ``pairs`` = ``"modalities"``, or 2B rows for ``"windows"``).
    """
    if "views" in inputs:  # EHR: two views of one history, 2B rows (view a, then view b)
        z = encoder(inputs["views"])
        b = z.shape[0] // 2
        return torch.stack([z[:b], z[b:]], dim=1)
    if "cutoffs" in inputs:
        return encoder.forward_at(inputs["batch"], inputs["cutoffs"])
    if "texts" in inputs:
        z = encoder(inputs["texts"])
        b = z.shape[0] // 2
        return torch.stack([z[:b], z[b:]], dim=1)
    if "mm" in inputs:
        fused, per = encoder(inputs["mm"])
        if inputs["pairs"] == "modalities":
            if "notes" in per:  # codes + notes: the one cross-modal pair
                return torch.stack([per["codes"], per["notes"]], dim=1)
            return modality_pairs(per)
        b = fused.shape[0] // 2
        return torch.stack([fused[:b], fused[b:]], dim=1)
    raise ValueError(f"no pair inputs among {sorted(inputs)}")


def modality_pairs(per: dict[str, Tensor]) -> Tensor:
    """(P B, 2, d): every pair of modalities (in order, ``m < n``) of the same B rows, stacked.

    Code-group runs (``multimodal.groups``) have three or more modalities (e.g. vitals, labs,
    static): each unordered pair is a positive pair of the same record, so a batch of B rows
    gives ``P = M (M - 1) / 2`` pairs (documented choice: all pairs, each row once per pair).
    """
    names = list(per)
    sides = [
        torch.stack([per[a], per[b]], dim=1) for i, a in enumerate(names) for b in names[i + 1 :]
    ]
    return torch.cat(sides, dim=0)


def backbone_rows(encoder: nn.Module, inputs: dict[str, Any]) -> Tensor:
    """(B, d) backbone embeddings of B rows (texts, multimodal records or EHR histories)."""
    if "texts" in inputs:
        return encoder(inputs["texts"])
    if "mm" in inputs:
        return encoder(inputs["mm"])[0]
    return encoder(inputs["batch"])


def _forward_pairs(encoder: nn.Module, head: nn.Module | None, inputs: dict[str, Any]) -> dict:
    z = backbone_pairs(encoder, inputs)  # (B, 2, d): side a and side b
    b = z.shape[0]
    p = head(z.flatten(0, 1)).view(b, 2, -1)  # type: ignore[misc]
    return {"za": p[:, 0], "zb": p[:, 1]}


def _forward_tokens(encoder: nn.Module, head: nn.Module | None, inputs: dict[str, Any]) -> dict:
    """Masked-token prediction with the small text encoder (BERT-style, no [MASK] embedding).

    A masked position's input is the padding id, whose embedding is the zero vector, so it
    carries only its position; it stays visible to attention (it is not padding) and its final
    state predicts the original token id (hash bucket).
    """
    ids, real, masked = inputs["token_ids"], inputs["token_mask"], inputs["mlm_mask"]
    x_ids = ids.masked_fill(masked, encoder.pad_id)
    positions = torch.arange(ids.shape[1], device=ids.device)
    x = encoder.token_embedding(x_ids) + encoder.position_embedding(positions)
    states = encoder.transformer(x, src_key_padding_mask=~real)
    return {"logits": head(states[masked]), "target": ids[masked]}  # type: ignore[misc]


def _forward_events(encoder: nn.Module, head: nn.Module | None, inputs: dict[str, Any]) -> dict:
    if "token_ids" in inputs:
        return _forward_tokens(encoder, head, inputs)
    # A multimodal encoder: next-event prediction trains its codes (EHR) encoder only.
    ehr = getattr(encoder, "ehr_encoder", encoder)
    batch = inputs["batch"]
    return _next_event_outputs(ehr.event_states(batch), head, batch)


def _next_event_outputs(states: Tensor, head: nn.Module | None, batch: Any) -> dict:
    """Next-event (or next-hour) prediction outputs from causal per-position states."""
    # The state at position p predicts position p + 1 (both real).
    keep = batch.mask[:, 1:] & batch.mask[:, :-1]
    out = head(states[:, :-1][keep])  # type: ignore[misc]
    if batch.is_binned:
        # Hour tokens: which variables the next hour measures (a logit each) and their values.
        v = batch.bin_values.shape[-1]
        return {
            "bin_logits": out[:, :v],
            "bin_pred": out[:, v:],
            "bin_mask": batch.bin_mask[:, 1:][keep],
            "bin_values": batch.bin_values[:, 1:][keep],
        }
    return {"logits": out, "target": batch.codes[:, 1:][keep]}


def _forward_hybrid(encoder: nn.Module, head: nn.Module | None, inputs: dict[str, Any]) -> dict:
    """Next-event prediction on the history at ``t1`` and the projected pair.

    Window pairs ``(t, t1)``: one causal pass gives both
    (:meth:`~densefeat.models.ehr.EHREncoder.states_and_cutoffs`). Pairs whose sides are
    separate histories (``views`` of ``data.pairs`` = ``views``, ``mixed`` or ``future``: the
    history at ``t`` against the events of ``(t, t1]`` alone) cannot share that pass: the
    pair is embedded as the dense method embeds it and the history at ``t1`` is predicted as
    ``masked`` predicts it (two encoder calls).
    """
    if not hasattr(encoder, "states_and_cutoffs") or not ("cutoffs" in inputs or "views" in inputs):
        raise ValueError(
            "method 'masked+dense' is defined for EHR histories (window pairs of the EHR "
            "encoder); use masked or dense for text and multimodal runs"
        )
    batch = inputs["batch"]
    if "views" in inputs:
        states, z = encoder.event_states(batch), backbone_pairs(encoder, inputs)
    else:
        states, z = encoder.states_and_cutoffs(batch, inputs["cutoffs"])
    out = _next_event_outputs(states, head["events"], batch)  # type: ignore[index]
    b = z.shape[0]
    p = head["projector"](z.flatten(0, 1)).view(b, 2, -1)  # type: ignore[index]
    return {**out, "za": p[:, 0], "zb": p[:, 1]}


def _forward_labels(encoder: nn.Module, head: nn.Module | None, inputs: dict[str, Any]) -> dict:
    logits = head(backbone_rows(encoder, inputs))  # type: ignore[misc]
    # One label: (B,), as the labels; several (one-vs-rest): (B, k).
    return {"logits": logits.squeeze(-1) if logits.shape[-1] == 1 else logits}


def _forward_none(encoder: nn.Module, head: nn.Module | None, inputs: dict[str, Any]) -> dict:
    return {}


# ---- losses -----------------------------------------------------------------------------------


def _pair_loss(module: nn.Module) -> LossFn:
    def loss_fn(out: dict[str, Tensor], inputs: dict[str, Any]) -> tuple[Tensor, dict]:
        # Objectives in float32 even under bf16 autocast (Cholesky/eigen maths, docs/design.md).
        loss = module(out["za"].float(), out["zb"].float())
        if isinstance(loss, tuple):
            loss, terms = loss
            return loss, {k: v.detach() for k, v in terms.items() if k != "loss"}
        return loss, {}

    loss_fn.state_modules = (module,)  # type: ignore[attr-defined]
    return loss_fn


def _dense_loss(cfg: Any) -> LossFn:
    return _pair_loss(
        DenseFeatureLoss(
            cfg.dense.w_spec,
            cfg.dense.w_orth,
            cfg.dense.w_sub,
            top_k=cfg.dense.top_k,
            consistency=cfg.dense.consistency,
            shrinkage=cfg.dense.shrinkage,
            momentum=cfg.dense.momentum,
        )
    )


def _simclr_loss(cfg: Any) -> LossFn:
    return _pair_loss(InfoNCELoss(cfg.simclr.temperature))


def _vicreg_loss(cfg: Any) -> LossFn:
    return _pair_loss(VICRegLoss(cfg.vicreg.sim, cfg.vicreg.std, cfg.vicreg.cov))


def _barlow_loss(cfg: Any) -> LossFn:
    return _pair_loss(BarlowTwinsLoss(cfg.barlow.lambd))


def _world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _global_means(sums: list[Tensor], counts: list[Tensor]) -> list[Tensor]:
    """Exact means over the GLOBAL batch of per-rank sums (one all-reduce of the counts).

    Value: ``global_sum / global_count`` on every rank. Gradient: ``world * d(local sum) /
    count``, which DDP's average over ranks turns into ``d(global sum) / count``, the
    single-process gradient of the global batch. A zero count gives 0.
    """
    stats = torch.stack([s.detach() for s in sums] + [c.to(sums[0].dtype) for c in counts])
    world = _world()
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(stats)  # detached numbers: a plain all_reduce is exact here
    k = len(sums)
    out = []
    for i, local_sum in enumerate(sums):
        count = stats[k + i].clamp_min(1.0)
        local = local_sum * (world / count)
        out.append(local - local.detach() + stats[i] / count)
    return out


def _hour_loss(out: dict[str, Tensor]) -> tuple[Tensor, dict]:
    """Next-hour prediction: BCE of which variables are measured + MSE of their values.

    ``loss = mean_{tokens, variables} BCE(logit, measured) + mean_{measured} (pred - value)^2``,
    each an exact global-batch mean (:func:`_global_means`).
    """
    logits, measured = out["bin_logits"].float(), out["bin_mask"]
    pred, value = out["bin_pred"].float(), out["bin_values"].float()
    bce = F.binary_cross_entropy_with_logits(logits, measured.to(logits.dtype), reduction="sum")
    sq = ((pred - value) ** 2 * measured.to(pred.dtype)).sum()
    n_bce = torch.tensor(float(logits.numel()), device=logits.device)
    presence, values = _global_means([bce, sq], [n_bce, measured.sum()])
    return presence + values, {"presence_bce": presence.detach(), "value_mse": values.detach()}


def _masked_loss(cfg: Any) -> LossFn:
    def loss_fn(out: dict[str, Tensor], inputs: dict[str, Any]) -> tuple[Tensor, dict]:
        if "bin_logits" in out:
            return _hour_loss(out)
        logits, target = out["logits"].float(), out["target"]
        total = F.cross_entropy(logits, target, ignore_index=PAD_ID, reduction="sum")
        stats = torch.stack(
            [
                total.detach(),
                (target != PAD_ID).sum().to(total.dtype),
                (logits.argmax(-1) == target).sum().to(total.dtype)
                if target.numel()
                else total.new_zeros(()),
            ]
        )
        world = _world()
        if world > 1:
            import torch.distributed as dist

            # Counts carry no gradient: a plain all_reduce of detached numbers is exact here.
            dist.all_reduce(stats)
        global_sum, count, correct = stats.unbind()
        count = count.clamp_min(1.0)  # a global batch of single-event histories: loss 0
        # The exact mean over the GLOBAL batch's tokens. Value: global_sum / count on every
        # rank. Gradient: world * d(local sum) / count, which DDP's average over ranks turns
        # into d(global sum) / count, the single-process gradient of the global batch.
        local = total * (world / count)
        loss = local - local.detach() + global_sum / count
        return loss, {"accuracy": correct / count, "tokens": count}

    return loss_fn


def _hybrid_loss(cfg: Any) -> LossFn:
    """``masked + w_dense * dense`` with every term logged under its part's name.

    Terms: ``masked`` and ``dense`` (the two losses, so ``loss == masked + w_dense * dense``
    exactly), and each part's own terms prefixed (``masked.accuracy``, ``dense.spectral``, ...).
    """
    masked_fn, dense_fn = _masked_loss(cfg), _dense_loss(cfg)
    w = float(cfg.hybrid.w_dense)

    def loss_fn(out: dict[str, Tensor], inputs: dict[str, Any]) -> tuple[Tensor, dict]:
        lm, tm = masked_fn(out, inputs)
        ld, td = dense_fn(out, inputs)
        terms = {"masked": lm.detach(), "dense": ld.detach()}
        terms.update({f"masked.{k}": v for k, v in tm.items()})
        terms.update({f"dense.{k}": v for k, v in td.items()})
        return lm + w * ld, terms

    loss_fn.state_modules = loss_state_modules(dense_fn)  # type: ignore[attr-defined]
    return loss_fn


def _supervised_loss(cfg: Any) -> LossFn:
    def loss_fn(out: dict[str, Tensor], inputs: dict[str, Any]) -> tuple[Tensor, dict]:
        # Mean over rows (and labels): per-rank means averaged by DDP equal the global mean
        # because every rank holds the same number of rows.
        y = inputs["labels"].to(out["logits"].device, torch.float32)
        return F.binary_cross_entropy_with_logits(out["logits"].float(), y), {}

    return loss_fn


def loss_state_modules(loss_fn: LossFn) -> tuple[nn.Module, ...]:
    """The loss modules of ``loss_fn`` that carry state across steps (e.g. the pooled statistics
    of ``dense.momentum``), in a fixed order: a checkpoint saves their ``state_dict`` so a
    resumed run continues exactly where it stopped."""
    return tuple(getattr(loss_fn, "state_modules", ()))


def loss_state(loss_fn: LossFn | None) -> list[dict[str, Any]]:
    """``state_dict`` of every stateful loss module of ``loss_fn`` (see
    :func:`loss_state_modules`); ``[]`` for a stateless loss."""
    return [] if loss_fn is None else [m.state_dict() for m in loss_state_modules(loss_fn)]


def load_loss_state(loss_fn: LossFn | None, states: list[dict[str, Any]]) -> None:
    """Restore :func:`loss_state` into a freshly built ``loss_fn`` of the same configuration."""
    modules = () if loss_fn is None else loss_state_modules(loss_fn)
    if len(modules) != len(states):
        raise ValueError(
            f"checkpoint holds the state of {len(states)} loss module(s), the method has "
            f"{len(modules)}: was it saved by another method or version?"
        )
    for module, state in zip(modules, states, strict=True):
        module.load_state_dict(state)


# ---- the registry -----------------------------------------------------------------------------


def _pair_method(name: str, build_loss: Callable[[Any], LossFn], description: str) -> Method:
    return Method(name, "pairs", False, _projector, _forward_pairs, build_loss, True, description)


METHODS: dict[str, Method] = {
    "dense": _pair_method(
        "dense", _dense_loss, "dense-feature objective (spectral + orthogonality + subspace)"
    ),
    "simclr": _pair_method("simclr", _simclr_loss, "SimCLR / InfoNCE on the pairs"),
    "vicreg": _pair_method("vicreg", _vicreg_loss, "VICReg (25/25/1) on the pairs"),
    "barlow": _pair_method("barlow", _barlow_loss, "Barlow Twins (lambda 5e-3) on the pairs"),
    # Next-event prediction does not use the EHR encoder's readout and cut-off context, nor
    # masked-token prediction the small text encoder's output Linear.
    "masked": Method(
        "masked",
        "pairs",
        False,
        _code_head,
        _forward_events,
        _masked_loss,
        False,
        "next-event code / masked-token prediction (cross-entropy; generative family)",
    ),
    # Beyond the paper (which uses no reconstruction): reported as its own row, never as dense.
    "masked+dense": Method(
        "masked+dense",
        "pairs",
        False,
        _hybrid_head,
        _forward_hybrid,
        _hybrid_loss,
        False,
        "next-event prediction + w_dense * dense objective on the window pairs (EHR only)",
    ),
    "supervised": Method(
        "supervised",
        "labels",
        True,
        _classifier,
        _forward_labels,
        _supervised_loss,
        True,
        "binary cross-entropy on task labels (--labels, or a note table's label columns)",
    ),
    "random": Method(
        "random", "none", False, _no_head, _forward_none, None, True, "untrained encoder"
    ),
}

# The parsers offer densefeat.choices.METHOD_NAMES without importing this module (and torch):
# the two lists must be the same, in the same order.
if tuple(METHODS) != METHOD_NAMES:  # pragma: no cover - a registry edit without its twin
    raise RuntimeError(
        f"densefeat.methods.METHODS {tuple(METHODS)} differs from "
        f"densefeat.choices.METHOD_NAMES {METHOD_NAMES}: edit both"
    )


def get_method(name: str) -> Method:
    """The registered method ``name``.

    Raises:
        ValueError: an unknown name (the known ones are listed).
    """
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}") from None
