"""Multimodal records at a prediction time: EHR events + notes, as one batch contract.

A multimodal record of subject ``s`` at prediction time ``t`` is everything known at ``t``:

* the coded events (codes, numeric values, time features) and static features, as the
  :class:`~densefeat.data.ehr.EventBatch` of the EHR side (built by
  :class:`~densefeat.data.ehr.HistoryBuilder`, which guarantees no event after ``t``);
* the subject's notes written at or before ``t`` (:func:`~densefeat.data.text.notes_from_meds`,
  which guarantees the same for notes), oldest first.

:class:`MultimodalBatch` keeps the two aligned row by row: row ``i`` of the events and
``notes[i]`` belong to the same ``(subject_id, prediction_time)``. Text stays as Python strings
because tokenisation belongs to the text encoder; the tensors ``note_mask`` and
``note_time_before_prediction`` let an encoder place note embeddings next to each other::

    flat = batch.flat_notes()                    # every note of the batch, row-major
    z = text_encoder(flat)                       # (N, d)
    per_row = z.new_zeros(B, K, d)
    per_row[batch.note_mask] = z                 # (B, K, d); the mask has exactly N True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from .ehr.batch import US_PER_DAY, EventBatch
from .ehr.builder import HistoryBuilder
from .ehr.store import EventStore
from .meds import MedsDataset
from .text.meds_notes import notes_from_meds

__all__ = ["MultimodalBatch", "align_notes", "build_multimodal_batch"]


@dataclass(frozen=True)
class MultimodalBatch:
    """A batch of multimodal records (events + notes) cut at prediction times.

    ``B`` rows, ``K`` note positions (the most notes any row has; 0 if no row has one).

    Note positions are padded on the **left**, as :class:`EventBatch` events are: row ``i`` holds
    its ``n_i = len(notes[i])`` notes in positions ``K - n_i .. K - 1``, oldest first, so the
    most recent note is at ``K - 1``. Because boolean-mask indexing is row-major, assigning the
    embeddings of :meth:`flat_notes` to ``[note_mask]`` puts note ``j`` of row ``i`` at position
    ``K - n_i + j``.

    Attributes:
        events: the EHR part; its ``subject_id`` and ``prediction_time`` identify the rows.
        notes: ``B`` lists of note texts at or before the row's prediction time, oldest first
            (empty lists for rows without notes).
        note_mask: (B, K) bool, True on real notes (left padding).
        note_time_before_prediction: (B, K) float32 days from each note to the prediction time,
            ``>= 0`` on real notes (the no-leakage guarantee) and 0 on padding.
    """

    events: EventBatch
    notes: list[list[str]]
    note_mask: torch.Tensor
    note_time_before_prediction: torch.Tensor

    @property
    def batch_size(self) -> int:
        """B, the number of rows."""
        return self.events.batch_size

    @property
    def max_notes(self) -> int:
        """K, the number of note positions."""
        return int(self.note_mask.shape[1])

    @property
    def has_notes(self) -> torch.Tensor:
        """(B,) bool, whether a row has at least one note."""
        return self.note_mask.any(dim=1)

    def __len__(self) -> int:
        return self.batch_size

    def flat_notes(self) -> list[str]:
        """Every note of the batch in row-major order (matches ``note_mask``'s True entries)."""
        return [note for row in self.notes for note in row]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MultimodalBatch:
        """The same batch with every tensor on ``device`` (the texts stay where they are)."""
        return MultimodalBatch(
            self.events.to(device, non_blocking=non_blocking),
            self.notes,
            self.note_mask.to(device, non_blocking=non_blocking),
            self.note_time_before_prediction.to(device, non_blocking=non_blocking),
        )

    def validate(self) -> MultimodalBatch:
        """Check the contract (the events' own rules, note shapes, left padding, no leakage).

        Returns:
            self, so it chains.

        Raises:
            ValueError: naming the violated rule.
        """
        self.events.validate()
        b = self.batch_size
        if len(self.notes) != b:
            raise ValueError(f"MultimodalBatch.notes: {len(self.notes)} rows, events have {b}")
        k = self.max_notes
        for name, dtype in (
            ("note_mask", torch.bool),
            ("note_time_before_prediction", torch.float32),
        ):
            t = getattr(self, name)
            if t.ndim != 2 or t.shape[0] != b or t.shape[1] != k or t.dtype != dtype:
                raise ValueError(
                    f"MultimodalBatch.{name}: {tuple(t.shape)} {t.dtype}, want ({b}, {k}) {dtype}"
                )
        counts = torch.tensor([len(row) for row in self.notes], dtype=torch.int64)
        if not torch.equal(self.note_mask.sum(dim=1).cpu(), counts):
            raise ValueError("MultimodalBatch.note_mask: row counts differ from len(notes[i])")
        if k > 1 and (self.note_mask[:, 1:].int() < self.note_mask[:, :-1].int()).any():
            raise ValueError(
                "MultimodalBatch.note_mask: notes must be right-aligned (left padding)"
            )
        if (self.note_time_before_prediction[~self.note_mask] != 0).any():
            raise ValueError("MultimodalBatch.note_time_before_prediction: non-zero on padding")
        if (self.note_time_before_prediction[self.note_mask] < 0).any():
            raise ValueError("MultimodalBatch: a note after its prediction time (leakage)")
        return self


def _row_keys(events: EventBatch) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "subject_id": events.subject_id.cpu().numpy(),
            "prediction_time": events.prediction_time.cpu().numpy(),
        },
        schema={"subject_id": pl.Int64, "prediction_time": pl.Int64},
    ).with_row_index("_row")


def _pad_left(
    note_times: Sequence[np.ndarray], prediction_time: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """``note_mask`` and ``note_time_before_prediction`` from per-row note times (us)."""
    lengths = np.array([t.size for t in note_times], dtype=np.int64)
    b, k = lengths.size, int(lengths.max(initial=0))
    mask = np.arange(k)[None, :] >= (k - lengths)[:, None]
    before = np.zeros((b, k), dtype=np.float32)
    if k:
        flat = np.concatenate(note_times).astype(np.int64)
        rows = np.repeat(np.arange(b), lengths)
        # Differences in int64 first: float32 microseconds since 1970 would lose minutes.
        before[mask] = ((prediction_time[rows] - flat) / US_PER_DAY).astype(np.float32)
    return torch.from_numpy(mask), torch.from_numpy(before)


def align_notes(events: EventBatch, notes: pl.DataFrame) -> MultimodalBatch:
    """Attach notes to an event batch by ``(subject_id, prediction_time)``.

    Args:
        events: the EHR batch; its row order is kept.
        notes: the output of :func:`~densefeat.data.text.notes_from_meds` with prediction
            times (``subject_id``, ``prediction_time``, ``note_times``, ``notes``; any row order,
            duplicates of a key allowed when they agree). It must cover every row of
            ``events``.

    Returns:
        the validated :class:`MultimodalBatch`.

    Raises:
        ValueError: a missing column, a row of ``events`` without a notes row, or two different
            note lists for one key.
    """
    for name in ("subject_id", "prediction_time", "note_times", "notes"):
        if name not in notes.columns:
            raise ValueError(
                f"notes: missing column {name!r} (columns: {', '.join(notes.columns)})"
            )
    table = notes.select(
        pl.col("subject_id").cast(pl.Int64),
        pl.col("prediction_time").cast(pl.Datetime("us")).cast(pl.Int64),
        pl.col("note_times").cast(pl.List(pl.Datetime("us"))).cast(pl.List(pl.Int64)),
        pl.col("notes"),
    ).unique(maintain_order=True)
    dup = table.filter(pl.struct("subject_id", "prediction_time").is_duplicated())
    if dup.height:
        row = dup.row(0, named=True)
        raise ValueError(
            f"notes: two different note lists for subject {row['subject_id']} at prediction time "
            f"{row['prediction_time']} us"
        )
    joined = (
        _row_keys(events)
        .join(table, on=["subject_id", "prediction_time"], how="left", maintain_order="left")
        .sort("_row")
    )
    missing = joined.filter(pl.col("notes").is_null())
    if missing.height:
        row = missing.row(0, named=True)
        raise ValueError(
            f"notes: no row for {missing.height} batch rows (e.g. subject {row['subject_id']} at "
            f"prediction time {row['prediction_time']} us): build the notes for the batch's rows"
        )
    times = [np.asarray(t, dtype=np.int64) for t in joined["note_times"].to_list()]
    mask, before = _pad_left(times, joined["prediction_time"].to_numpy())
    return MultimodalBatch(events, joined["notes"].to_list(), mask, before).validate()


def build_multimodal_batch(
    builder: HistoryBuilder,
    events: EventStore | pl.DataFrame | pl.LazyFrame,
    rows: pl.DataFrame,
    note_source: MedsDataset | pl.DataFrame | pl.LazyFrame,
    *,
    code_prefixes: str | Sequence[str] | None = None,
    max_notes: int | None = None,
    max_len: int | None = None,
) -> MultimodalBatch:
    """One :class:`MultimodalBatch` for ``rows`` (``subject_id``, ``prediction_time``), in order.

    Args:
        builder: the fitted history builder (vocabulary and normaliser from the training split).
        events: an encoded :class:`EventStore` or MEDS events (see ``HistoryBuilder.build_batch``).
        rows: labels or cut-offs; other columns are ignored.
        note_source: where the notes are: a MEDS dataset or MEDS events with ``text_value``
            (often the same data as ``events``).
        code_prefixes: which codes are notes (see :func:`~densefeat.data.text.notes_from_meds`).
        max_notes: keep only the most recent this many notes per row.
        max_len: overrides the builder's number of events per row.

    Returns:
        the validated batch; both parts hold only what was recorded at or before each row's
        prediction time.
    """
    batch = builder.build_batch(events, rows, max_len)
    queries = rows.select("subject_id", "prediction_time")
    notes = notes_from_meds(note_source, queries, code_prefixes=code_prefixes, max_notes=max_notes)
    return align_notes(batch, notes)
