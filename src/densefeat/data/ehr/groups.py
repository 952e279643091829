"""Code groups: one dataset's coded events split into modalities by code prefix.

``multimodal.groups = "vitals=VITAL//,labs=LAB//"`` makes the vital signs and the laboratory
values of a PhysioNet 2019 stay two modalities of the same record (the static values are the
third, :class:`~densefeat.models.code_groups.CodeGroupEncoder`'s ``static`` branch). A group's
view of a batch is the batch with only the events whose code starts with one of the group's
prefixes (:func:`group_view`, via :func:`~densefeat.data.ehr.views.keep_events`, so ``delta_t``
becomes the gap to the group's previous kept event). Every group is cut at the **same**
prediction time because it is carved out of one history gathered at that time: no group can
see an event after it (the batch's no-leakage guarantee carries over).

Limit (stated, not hidden): a group sees its events among the last ``max_len`` events of the
whole record, so a sparse group (labs) next to a dense one (vitals) keeps fewer events than
``max_len``; gather a longer history (``data.max_len``) to give it more.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .batch import EventBatch
from .views import keep_events

__all__ = ["code_group_ids", "group_view", "parse_groups"]


def parse_groups(spec: str) -> dict[str, tuple[str, ...]]:
    """``"vitals=VITAL//,labs=LAB//|LABS//"`` -> ``{"vitals": ("VITAL//",), "labs": (...)}``.

    Groups are separated by commas, a group's prefixes by ``|``.

    Raises:
        ValueError: a group without ``=``, an empty name or prefix, a repeated name, a name
            that is reserved (``static``, ``codes``, ``notes``, ``fused``), or fewer than two
            groups when no other modality is added (checked by the caller).
    """
    groups: dict[str, tuple[str, ...]] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, prefixes = part.partition("=")
        name = name.strip()
        pre = tuple(p.strip() for p in prefixes.split("|") if p.strip())
        if not sep or not name or not pre:
            raise ValueError(
                f"multimodal.groups: {part!r} is not NAME=PREFIX[|PREFIX...] "
                "(e.g. vitals=VITAL//,labs=LAB//)"
            )
        if name in ("static", "codes", "notes", "fused"):
            raise ValueError(f"multimodal.groups: the name {name!r} is reserved")
        if name in groups:
            raise ValueError(f"multimodal.groups: group {name!r} given twice")
        groups[name] = pre
    return groups


def code_group_ids(
    codes: Sequence[str], groups: dict[str, tuple[str, ...]], n_reserved: int
) -> np.ndarray:
    """``(n_reserved + len(codes),)`` int64: the group index of each vocabulary id, -1 for none.

    Reserved ids (padding, unknown) belong to no group; a code matching the prefixes of two
    groups belongs to the first (groups are listed in their order).

    Raises:
        ValueError: a group whose prefixes match no code of the vocabulary (named).
    """
    out = np.full(n_reserved + len(codes), -1, dtype=np.int64)
    for g, (name, prefixes) in enumerate(groups.items()):
        hit = np.array([c.startswith(prefixes) for c in codes], dtype=bool)
        hit &= out[n_reserved:] < 0
        if not hit.any():
            raise ValueError(
                f"multimodal.groups: group {name!r} ({'|'.join(prefixes)}) matches no code of "
                "the training vocabulary"
            )
        out[n_reserved:][hit] = g
    return out


def group_view(batch: EventBatch, group_of_id: torch.Tensor, group: int) -> EventBatch:
    """The batch with only the events of group ``group`` (left-padded, ``delta_t`` re-summed).

    Args:
        batch: an event-token batch (``data.tokens = "events"``).
        group_of_id: (V,) int64 from :func:`code_group_ids`, on the batch's device.
        group: the group index.

    Raises:
        ValueError: an hour-token batch (an hour mixes the groups' variables).
    """
    if batch.bin_values.shape[-1]:
        raise ValueError(
            "multimodal.groups needs event tokens (data.tokens=events): an hour token mixes "
            "the variables of every group"
        )
    return keep_events(batch, group_of_id[batch.codes] == group)
