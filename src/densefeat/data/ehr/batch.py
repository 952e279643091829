"""The EHR batch contract: :class:`EventBatch`, reserved code ids and time units."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

#: Reserved code ids: padding and codes unseen (or too rare) in the training split.
PAD_ID = 0
UNK_ID = 1
N_RESERVED = 2
US_PER_DAY = 86_400_000_000
DAYS_PER_YEAR = 365.25
US_PER_YEAR = US_PER_DAY * DAYS_PER_YEAR
#: Extra columns at the end of :attr:`EventBatch.static`, after the static-code indicators.
STATIC_EXTRA = ("age_at_prediction_years", "age_known")


@dataclass(frozen=True)
class EventBatch:
    """A batch of patient histories cut at prediction times: THE contract of densefeat's EHR side.

    ``B`` rows (one per ``(subject_id, prediction_time)``), ``L`` event positions, ``S`` static
    features. All tensors are on one device.

    Padding is on the **left**: row ``i`` holds its ``n_i = mask[i].sum()`` events in positions
    ``L - n_i .. L - 1``, oldest first, so the most recent event is always at position ``L - 1``
    (models may pool the last position; windows and truncation align at the end). Every padded
    position holds 0 in every ``(B, L)`` field (``codes == PAD_ID``, ``has_value`` False). A row
    may have ``n_i == 0`` (only static events before its prediction time): models must cope with
    an all-False ``mask`` row.

    Attributes:
        subject_id: (B,) int64.
        prediction_time: (B,) int64, microseconds since 1970-01-01 (MEDS's naive timestamps).
        codes: (B, L) int64 vocabulary ids; ``PAD_ID`` (0) on padding, ``UNK_ID`` (1) for codes
            unseen or too rare in the training split.
        values: (B, L) float32 normalised numeric values (see :class:`NumericNormalizer`); 0
            where the event has no (usable) value.
        has_value: (B, L) bool, True where ``values`` holds a normalised value.
        delta_t: (B, L) float32 days since the subject's previous timed event in the full record
            (also when that event was truncated away); 0 for the first event and for events at
            the same time as their predecessor.
        age: (B, L) float32 years at the event (from the ``MEDS_BIRTH`` event); 0 where the birth
            time is unknown (see ``age_known``).
        time_before_prediction: (B, L) float32 days from the event to the prediction time,
            ``>= 0`` on every real event (the no-leakage guarantee).
        mask: (B, L) bool, True on real events.
        static: (B, S) float32: one-hot (0/1) indicators of the vocabulary's static codes
            (``Vocabulary.static_codes_``, events with null time) followed by
            ``age_at_prediction_years`` (0 if unknown) and ``age_known`` (0/1).
        age_known: (B,) bool, whether the subject has a ``MEDS_BIRTH`` event.
        bin_values: (B, L, 0) (empty) for event tokens; for **hour tokens** (``data.tokens=hours``,
            :meth:`EventStore.gather` of a store encoded with ``tokens="hours"``) a (B, L, V)
            float32 tensor: position ``p`` is one hour bin ``(T - (k+1) h, T - k h]`` before
            the prediction time ``T`` that holds at least one event, and ``bin_values[i, p, v]``
            is the normalised value of the **last** event of code id ``v`` in that hour (0
            where none, or where that event has no value). ``V = len(vocabulary)`` (code ids
            index it). The ``(B, L)`` fields then describe the hour's last event: ``codes``,
            ``values``, ``has_value`` of that event, ``time_before_prediction`` and ``age`` at
            it, ``delta_t`` the days since the previous hour's last event (so a token is "at or
            before tau" exactly when every event of its hour is).
        bin_mask: (B, L, 0) for event tokens, or (B, L, V) bool: code ``v`` occurred in that
            hour (the missingness mask: missing stays missing, nothing is imputed, least of all
            from a later hour).
    """

    subject_id: torch.Tensor
    prediction_time: torch.Tensor
    codes: torch.Tensor
    values: torch.Tensor
    has_value: torch.Tensor
    delta_t: torch.Tensor
    age: torch.Tensor
    time_before_prediction: torch.Tensor
    mask: torch.Tensor
    static: torch.Tensor
    age_known: torch.Tensor
    bin_values: torch.Tensor = None  # type: ignore[assignment]  (set in __post_init__)
    bin_mask: torch.Tensor = None  # type: ignore[assignment]

    #: The (B, L, V) fields of hour tokens (V = 0 for event tokens).
    BIN_FIELDS = ("bin_values", "bin_mask")

    def __post_init__(self) -> None:
        # Event batches get empty (B, L, 0) hour fields, so that every field is a tensor that
        # slices, moves and compares like the others.
        # An empty pair always follows the shape of ``codes`` (``dataclasses.replace`` with a
        # longer or shorter ``codes`` keeps it consistent).
        shape = (*self.codes.shape, 0)
        for name, dtype in (("bin_values", torch.float32), ("bin_mask", torch.bool)):
            value = getattr(self, name)
            if value is None or (value.shape[-1] == 0 and tuple(value.shape) != shape):
                empty = torch.zeros(shape, dtype=dtype, device=self.codes.device)
                object.__setattr__(self, name, empty)

    #: The (B, L) fields, which views gather and padding zeroes.
    SEQUENCE_FIELDS = (
        "codes",
        "values",
        "has_value",
        "delta_t",
        "age",
        "time_before_prediction",
        "mask",
    )

    @property
    def is_binned(self) -> bool:
        """Whether the positions are hour tokens (``bin_values`` set)."""
        return self.bin_values.shape[-1] > 0

    def position_fields(self) -> tuple[str, ...]:
        """Every field indexed by position on axis 1: :attr:`SEQUENCE_FIELDS`, plus the
        :attr:`BIN_FIELDS` of hour tokens (what a truncation or re-ordering must move)."""
        return self.SEQUENCE_FIELDS + self.BIN_FIELDS

    @property
    def batch_size(self) -> int:
        """B, the number of rows."""
        return int(self.codes.shape[0])

    @property
    def seq_len(self) -> int:
        """L, the number of event positions."""
        return int(self.codes.shape[1])

    @property
    def lengths(self) -> torch.Tensor:
        """(B,) int64, the number of real events of each row."""
        return self.mask.sum(dim=1)

    def __len__(self) -> int:
        return self.batch_size

    def to(self, device: torch.device | str, non_blocking: bool = False) -> EventBatch:
        """The same batch with every tensor on ``device``."""
        return EventBatch(
            **{
                f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                for f in fields(self)
            }
        )

    def pin_memory(self) -> EventBatch:
        """Pinned copy (torch's DataLoader calls this with ``pin_memory=True``)."""
        return EventBatch(
            **{
                f.name: None
                if getattr(self, f.name) is None
                else getattr(self, f.name).pin_memory()
                for f in fields(self)
            }
        )

    def validate(self) -> EventBatch:
        """Check the contract (shapes, dtypes, left padding, zeros on padding, no leakage).

        Returns:
            self, so it chains.

        Raises:
            ValueError: naming the violated rule.
        """
        b, seq = self.codes.shape
        want = {
            "subject_id": ((b,), torch.int64),
            "prediction_time": ((b,), torch.int64),
            "codes": ((b, seq), torch.int64),
            "values": ((b, seq), torch.float32),
            "has_value": ((b, seq), torch.bool),
            "delta_t": ((b, seq), torch.float32),
            "age": ((b, seq), torch.float32),
            "time_before_prediction": ((b, seq), torch.float32),
            "mask": ((b, seq), torch.bool),
            "age_known": ((b,), torch.bool),
        }
        for name, (shape, dtype) in want.items():
            t = getattr(self, name)
            if tuple(t.shape) != shape or t.dtype != dtype:
                raise ValueError(
                    f"EventBatch.{name}: {tuple(t.shape)} {t.dtype}, want {shape} {dtype}"
                )
        if self.static.ndim != 2 or self.static.shape[0] != b:
            raise ValueError(f"EventBatch.static: shape {tuple(self.static.shape)}")
        # Left padding: once a row's mask turns True it stays True.
        if seq > 1 and (self.mask[:, 1:].int() < self.mask[:, :-1].int()).any():
            raise ValueError("EventBatch.mask: real events must be right-aligned (left padding)")
        pad = ~self.mask
        for name in self.SEQUENCE_FIELDS:
            if name != "mask" and (getattr(self, name)[pad] != 0).any():
                raise ValueError(f"EventBatch.{name}: non-zero on padding")
        if (self.codes[self.mask] == PAD_ID).any():
            raise ValueError("EventBatch.codes: PAD_ID on a real event")
        if (self.has_value & ~self.mask).any():
            raise ValueError("EventBatch.has_value: True on padding")
        if (self.time_before_prediction[self.mask] < 0).any():
            raise ValueError("EventBatch: an event after its prediction time (leakage)")
        v = self.bin_values
        if v.ndim != 3 or v.shape[:2] != (b, seq) or v.dtype != torch.float32:
            raise ValueError(f"EventBatch.bin_values: {tuple(v.shape)} {v.dtype}")
        if self.bin_mask.shape != v.shape or self.bin_mask.dtype != torch.bool:
            raise ValueError(f"EventBatch.bin_mask: {tuple(self.bin_mask.shape)}")
        if (self.bin_mask & ~self.mask.unsqueeze(-1)).any() or (v[pad] != 0).any():
            raise ValueError("EventBatch: hour-token fields non-zero on padding")
        if (v[~self.bin_mask] != 0).any():
            raise ValueError("EventBatch.bin_values: a value where bin_mask is False")
        return self
