"""The modalities densefeat trains on, each an implementation of the contract in
:mod:`~densefeat.train.modalities.base`: ``ehr`` (patient histories), ``text`` (clinical notes)
and ``multimodal`` (coded events + notes of one record)."""

from __future__ import annotations

from .base import MONITOR_SPLITS, Embeddings, Modality, Network, Run, Session

__all__ = [
    "MONITOR_SPLITS",
    "Embeddings",
    "Modality",
    "Network",
    "Run",
    "Session",
    "get_modality",
]


def get_modality(name: str) -> Modality:
    """The modality ``name`` (its module is imported on first use).

    Raises:
        ValueError: an unknown name (the known ones are listed).
    """
    if name == "ehr":
        from .ehr import EHR

        return EHR
    if name == "text":
        from .text import TEXT

        return TEXT
    if name == "multimodal":
        from .multimodal import MULTIMODAL

        return MULTIMODAL
    raise ValueError(f"unknown modality {name!r}; choose one of ('ehr', 'text', 'multimodal')")
