"""Patient histories at a prediction time -> model-ready batches (:class:`EventBatch`).

The pipeline, and where leakage is ruled out:

1. :class:`Vocabulary` and :class:`NumericNormalizer` are fitted on the **training split only**
   (:meth:`HistoryBuilder.fit` takes the dataset and reads ``dataset.events("train")``), and are
   serialisable to a JSON-able dict so they live in a checkpoint. Codes unseen in training (e.g.
   at another hospital) map to ``UNK``.
2. :meth:`HistoryBuilder.encode` turns MEDS events into an :class:`EventStore`: one compact,
   sorted event array (time, code id, normalised value, delta_t; ~17 bytes an event) plus
   per-subject start/end offsets, birth times and static-code indicators. It is built shard by
   shard, so the strings of only one MEDS data file are in memory at a time. The store carries
   the builder's ``max_len``: the builder is the one owner of the history length.
3. :meth:`EventStore.gather` cuts each requested ``(subject_id, prediction_time)`` row with a
   vectorised binary search (``time <= prediction_time``; static events always enter through
   ``static``), keeps the last ``max_len`` events and gathers them into an :class:`EventBatch`.
   After gathering it re-checks, on the gathered times, that no event is later than its row's
   prediction time (a cheap guarantee, not a convention) and raises if one is.
4. :mod:`~densefeat.data.ehr.windows` cuts the same subjects at successive times (window
   pairs); :mod:`~densefeat.data.ehr.views` makes seeded stochastic views of a batch;
   :mod:`~densefeat.data.ehr.count_features` is the count-features baseline.

Everything is vectorised numpy/polars: the only Python loops run over shards, batches or the
~log2(events per subject) steps of the binary search, never over events.
"""

from .batch import (
    DAYS_PER_YEAR,
    N_RESERVED,
    PAD_ID,
    STATIC_EXTRA,
    UNK_ID,
    US_PER_DAY,
    US_PER_YEAR,
    EventBatch,
)
from .builder import COVERAGE_MARKER_CODES, DEFAULT_MAX_LEN, HistoryBuilder, end_of_record
from .normalizer import NumericNormalizer
from .store import EventStore, rows_searchsorted
from .vocabulary import Vocabulary
from .windows import pair_batches, periodic_cuts, visit_cuts, window_pairs

__all__ = [
    "COVERAGE_MARKER_CODES",
    "DAYS_PER_YEAR",
    "DEFAULT_MAX_LEN",
    "N_RESERVED",
    "PAD_ID",
    "STATIC_EXTRA",
    "UNK_ID",
    "US_PER_DAY",
    "US_PER_YEAR",
    "EventBatch",
    "EventStore",
    "HistoryBuilder",
    "NumericNormalizer",
    "Vocabulary",
    "end_of_record",
    "pair_batches",
    "periodic_cuts",
    "rows_searchsorted",
    "visit_cuts",
    "window_pairs",
]
