"""Task definitions: outcome codes and a horizon (the rules are in :mod:`densefeat.data.tasks`),
and the built-in tasks of the default dataset.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..meds import MedsDataset, MedsFormatError

if TYPE_CHECKING:
    pass


_NAME = re.compile(r"[a-z0-9][a-z0-9_]*")


@dataclass(frozen=True)
class TaskDefinition:
    """A binary onset task: does any outcome code first occur within the horizon?

    Attributes:
        name: identifier and label file stem (lower case, digits, underscores).
        outcome_codes: MEDS codes whose first occurrence is the outcome.
        horizon_days: length of the outcome window after the prediction time.
        description: what the task predicts and why these codes, for people.
    """

    name: str
    outcome_codes: tuple[str, ...]
    horizon_days: int = 365
    description: str = ""

    def __post_init__(self) -> None:
        # Accept a list for convenience but store a tuple: the dataclass is frozen and hashable.
        object.__setattr__(self, "outcome_codes", tuple(self.outcome_codes))
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"task name {self.name!r}: use lower-case letters, digits and _")
        if not self.outcome_codes or not all(isinstance(c, str) and c for c in self.outcome_codes):
            raise ValueError(f"task {self.name!r}: outcome_codes must be non-empty strings")
        if int(self.horizon_days) <= 0:
            raise ValueError(f"task {self.name!r}: horizon_days must be positive")


def _onset(name: str, codes: Sequence[str], what: str) -> TaskDefinition:
    return TaskDefinition(
        name=name,
        outcome_codes=tuple(codes),
        horizon_days=365,
        description=f"first {what} within 365 days after the prediction time",
    )


#: Built-in tasks of the default dataset (Eunomia GiBleed). Codes are the SNOMED concepts of
#: the converted data (``metadata/codes.parquet``); a descendant is added only where Eunomia's
#: own concept_ancestor table lists one among the conditions present (osteoporosis ->
#: pathological fracture due to osteoporosis, Alzheimer's disease -> its familial early-onset
#: form). The other concepts have no descendant in the data. Every condition occurs at most
#: once per person in Eunomia, so "first occurrence" is "the" occurrence.
EUNOMIA_TASKS: tuple[TaskDefinition, ...] = (
    _onset("gastrointestinal_hemorrhage", ["SNOMED/74474003"], "gastrointestinal hemorrhage"),
    _onset("peptic_ulcer", ["SNOMED/13200003"], "peptic ulcer"),
    _onset("cerebrovascular_accident", ["SNOMED/230690007"], "cerebrovascular accident"),
    _onset("coronary_arteriosclerosis", ["SNOMED/53741008"], "coronary arteriosclerosis"),
    _onset("atrial_fibrillation", ["SNOMED/49436004"], "atrial fibrillation"),
    _onset("ulcerative_colitis", ["SNOMED/64766004"], "ulcerative colitis"),
    _onset("osteoporosis", ["SNOMED/64859006", "SNOMED/443165006"], "osteoporosis"),
    _onset("alzheimers_disease", ["SNOMED/26929004", "SNOMED/230265002"], "Alzheimer's disease"),
)


#: dataset_name (``metadata/dataset.json``) -> its built-in tasks.
BUILTIN_TASKS: dict[str, tuple[TaskDefinition, ...]] = {"eunomia-gibleed": EUNOMIA_TASKS}


def builtin_tasks(dataset: MedsDataset) -> tuple[TaskDefinition, ...]:
    """The built-in tasks of a dataset, recognised by its ``dataset_name``.

    Raises:
        ValueError: the dataset has no built-in tasks (the message says how to bring labels).
    """
    name = dataset.metadata.get("dataset_name")
    if name in BUILTIN_TASKS:
        return BUILTIN_TASKS[name]
    known = ", ".join(sorted(BUILTIN_TASKS))
    raise ValueError(
        f"{dataset.root}: no built-in tasks for dataset {name!r} (built-in tasks exist for: "
        f"{known}); bring your own labels as MEDS label parquet (e.g. made by ACES) with "
        "--labels FILE_OR_DIR"
    )


def check_task_codes(tasks: Iterable[TaskDefinition], dataset: MedsDataset) -> None:
    # A misspelt code would silently make a task with no positives: refuse it instead.
    known = set(dataset.codes["code"].to_list()) if dataset.codes.height else None
    if known is None:
        return
    for task in tasks:
        missing = [c for c in task.outcome_codes if c not in known]
        if len(missing) == len(task.outcome_codes):
            raise MedsFormatError(
                f"{dataset.root}: task {task.name!r}: none of its outcome codes "
                f"({', '.join(missing)}) is in metadata/codes.parquet"
            )
