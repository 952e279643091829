"""The probe of an embedding file on a label file: what ``densefeat probe`` computes.

:func:`load_probe_data` joins the embeddings written by ``densefeat embed`` (``.parquet``:
``subject_id``, ``prediction_time``, optionally ``split``, an embedding column) to MEDS labels
(``subject_id``, ``prediction_time``, ``boolean_value``) on (subject_id, prediction_time);
without a ``split`` column subjects are split by a hash of (``split_seed``, subject_id).
:func:`probe_files` runs the full-data (:mod:`~densefeat.eval.probe.protocol`) and k-shot
(:mod:`~densefeat.eval.probe.kshot`) probes on the joined rows, optionally also after ZCA
whitening (:mod:`~densefeat.eval.probe.whitening`), and returns the result object that
``densefeat probe --json`` writes (kind ``densefeat.probe``).

Errors are ``ValueError`` / ``FileNotFoundError`` that name the file (by its command-line flag,
``--embeddings`` / ``--labels``) and what is wrong with it.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...data.splits import SPLIT_NAMES, assign_subject_splits
from .estimator import DEFAULT_CS
from .kshot import FIXED_C, MAX_K_WITHOUT_SELECTION, probe_k_shot
from .protocol import probe_task
from .whitening import whiten

__all__ = ["ProbeData", "load_probe_data", "probe_files", "versions"]


@dataclass(frozen=True)
class ProbeData:
    """Embeddings joined to binary labels on (subject_id, prediction_time).

    Attributes:
        X: (n, d) float embeddings. y: (n,) bool labels. split: (n,) split names.
        subject_id: (n,) int64. prediction_time: (n,) datetime64[us].
        split_source: where the splits came from.
        counts: ``labels`` / ``embeddings`` rows read and ``matched`` rows.
        key: the embedding column used.
    """

    X: np.ndarray
    y: np.ndarray
    split: np.ndarray
    subject_id: np.ndarray
    prediction_time: np.ndarray
    split_source: str
    counts: dict[str, int]
    key: str


def load_probe_data(
    embeddings: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    key: str | None = None,
    split_seed: int = 0,
) -> ProbeData:
    """Read a ``densefeat embed`` parquet and MEDS labels and join them.

    The embeddings file must be ``.parquet`` (or ``.csv`` / ``.tsv``, typed by
    :mod:`densefeat.io.tables` and validated the same way) with ``subject_id`` (integer),
    ``prediction_time`` (naive Datetime), one float-list embedding column (``key``, or the
    only one; read and validated by :func:`densefeat.io.open_embeddings`) and optionally
    ``split``. The labels are MEDS labels (``subject_id``, ``prediction_time``,
    ``boolean_value``; :func:`densefeat.data.meds.read_labels`). Rows are inner-joined on
    (subject_id, prediction_time) and sorted by them. Without a ``split`` column, subjects are
    split by a hash of (``split_seed``, subject_id) into train/tuning/held_out 0.8/0.1/0.1
    (:func:`densefeat.data.splits.assign_subject_splits`; the same assignment as a MEDS
    dataset without a split file read with that seed).

    Raises:
        FileNotFoundError: a missing file.
        ValueError: a non-parquet embeddings file; a missing/mistyped/null column (named);
            duplicate (subject_id, prediction_time) rows; unknown split names or a subject in
            two splits; no label row matching an embedding row (with both match counts);
            labels without ``boolean_value``; a single class among the matched labels.
    """
    import polars as pl
    import pyarrow.parquet as pq

    from ...data.meds import read_labels
    from ...io import open_embeddings
    from ...io.tables import TEXT_TABLE_SUFFIXES, is_text_table, read_table

    emb_path, lab_path = Path(embeddings), Path(labels)
    if not emb_path.exists():
        raise FileNotFoundError(f"--embeddings {emb_path}: no such file")
    if emb_path.suffix.lower() not in (".parquet", *TEXT_TABLE_SUFFIXES):
        raise ValueError(
            f"--embeddings {emb_path}: probing joins labels on subject_id and prediction_time, "
            "so it needs a .parquet (or .csv/.tsv) table with those columns (as written by "
            "`densefeat embed`)"
        )
    src = open_embeddings(emb_path, key)  # validates the embedding column (named errors)
    used_key = src.key or ""
    columns = (
        read_table(emb_path).columns if is_text_table(emb_path) else pq.read_schema(emb_path).names
    )
    for col in ("subject_id", "prediction_time"):
        if col not in columns:
            raise ValueError(
                f"--embeddings {emb_path}: no column {col!r} (columns: "
                f"{', '.join(columns) or 'none'})"
            )
    wanted = ["subject_id", "prediction_time", *(["split"] if "split" in columns else [])]
    ids = read_table(emb_path, columns=wanted)
    sid, ptime = ids.schema["subject_id"], ids.schema["prediction_time"]
    if not sid.is_integer():
        raise ValueError(
            f"--embeddings {emb_path}: column 'subject_id' has dtype {sid}; want Int64"
        )
    if not isinstance(ptime, pl.Datetime) or ptime.time_zone is not None:
        raise ValueError(
            f"--embeddings {emb_path}: column 'prediction_time' has dtype {ptime}; want a naive "
            "Datetime"
        )
    has_split = "split" in ids.columns
    emb = ids.select(
        pl.col("subject_id").cast(pl.Int64),
        pl.col("prediction_time").cast(pl.Datetime("us")),
        *([pl.col("split").cast(pl.Utf8)] if has_split else []),
    ).with_row_index("_row")
    for col in ("subject_id", "prediction_time", *(["split"] if has_split else [])):
        nulls = emb[col].null_count()
        if nulls:
            raise ValueError(f"--embeddings {emb_path}: column {col!r} has {nulls} nulls")
    dup = emb.select("subject_id", "prediction_time").is_duplicated()
    if dup.any():
        first = emb.filter(dup).row(0, named=True)
        raise ValueError(
            f"--embeddings {emb_path}: {int(dup.sum())} rows share a (subject_id, "
            f"prediction_time) with another row (e.g. subject {first['subject_id']} at "
            f"{first['prediction_time']}); the join to labels would be ambiguous"
        )

    lab = read_labels(lab_path)
    if "boolean_value" not in lab.columns:
        have = [c for c in lab.columns if c not in ("subject_id", "prediction_time")]
        raise ValueError(
            f"--labels {lab_path}: no 'boolean_value' column (label columns: {', '.join(have)}); "
            "densefeat probe needs binary labels"
        )
    lab = lab.select("subject_id", "prediction_time", "boolean_value")
    dup = lab.select("subject_id", "prediction_time").is_duplicated()
    if dup.any():
        raise ValueError(
            f"--labels {lab_path}: {int(dup.sum())} rows share a (subject_id, prediction_time) "
            "with another row; one label per prediction time is expected"
        )
    joined = lab.join(emb, on=["subject_id", "prediction_time"], how="inner").sort(
        ["subject_id", "prediction_time"]
    )
    counts = {"labels": lab.height, "embeddings": emb.height, "matched": joined.height}
    if joined.height == 0:
        common = (
            lab.select("subject_id")
            .unique()
            .join(emb.select("subject_id").unique(), on="subject_id")
        )
        raise ValueError(
            f"--labels {lab_path}: no label row matches an embedding row of {emb_path} on "
            f"(subject_id, prediction_time): 0 of {lab.height} label rows and 0 of {emb.height} "
            f"embedding rows matched ({common.height} subjects in common"
            + (
                "; the prediction times differ: were the embeddings made with "
                "`densefeat embed --labels` on this label file?)"
                if common.height
                else ")"
            )
        )
    y = joined["boolean_value"].to_numpy()
    if y.all() or not y.any():
        raise ValueError(
            f"--labels {lab_path}: column 'boolean_value' has a single class (all "
            f"{bool(y[0])}) among the {y.size} matched rows: a probe needs both classes"
        )
    subjects = joined["subject_id"].to_numpy()
    if has_split:
        split = joined["split"].to_numpy().astype(str)
        split_source = f"column 'split' of {emb_path}"
        unknown = sorted(set(np.unique(split).tolist()) - set(SPLIT_NAMES))
        if unknown:
            raise ValueError(
                f"--embeddings {emb_path}: column 'split' holds {unknown}; expected "
                f"{list(SPLIT_NAMES)}"
            )
        mixed = joined.group_by("subject_id").agg(pl.col("split").n_unique().alias("n"))
        mixed = mixed.filter(pl.col("n") > 1)["subject_id"].sort()
        if mixed.len():
            raise ValueError(
                f"--embeddings {emb_path}: column 'split': {mixed.len()} subjects have rows in "
                f"more than one split (e.g. {mixed.head(3).to_list()}); splits must be by subject"
            )
    else:
        uniq, inv = np.unique(subjects, return_inverse=True)
        names = np.asarray(assign_subject_splits(uniq.tolist(), seed=split_seed))
        split = names[inv.reshape(-1)]
        split_source = f"hash of (split seed {split_seed}, subject_id), fractions 0.8/0.1/0.1"
    X_all = np.concatenate(list(src.chunks()), axis=0)
    X = X_all[joined["_row"].to_numpy()]
    return ProbeData(
        X=X,
        y=y.astype(bool),
        split=split,
        subject_id=subjects,
        prediction_time=joined["prediction_time"].to_numpy(),
        split_source=split_source,
        counts=counts,
        key=used_key,
    )


def versions() -> dict[str, str]:
    """Versions of densefeat and of the libraries that computed a probe result."""
    import polars
    import sklearn

    from ... import __version__

    return {
        "densefeat": __version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "polars": polars.__version__,
        "python": platform.python_version(),
    }


def _split_counts(data: ProbeData) -> dict[str, dict[str, int]]:
    """Rows, subjects, positives and negatives of each split of the joined rows."""
    splits: dict[str, dict[str, int]] = {}
    for name in SPLIT_NAMES:
        mask = data.split == name
        splits[name] = {
            "rows": int(mask.sum()),
            "subjects": int(np.unique(data.subject_id[mask]).size),
            "positives": int(data.y[mask].sum()),
            "negatives": int((~data.y[mask]).sum()),
        }
    return splits


def probe_files(
    embeddings: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    *,
    key: str | None = None,
    ks: list[str | int] | tuple[str | int, ...] = ("all",),
    draws: int = 5,
    n_bootstrap: int = 1000,
    seed: int = 0,
    split_seed: int = 0,
    whitened: bool = False,
) -> dict[str, Any]:
    """Run the probe protocol on an embedding file and a label file.

    Args:
        embeddings: the ``densefeat embed`` parquet (see :func:`load_probe_data`).
        labels: MEDS labels (a parquet file or directory); the task is named after it.
        key: the embedding column (default: the only float-list column).
        ks: "all" (the full-data probe) and/or shots per class; repeats are dropped.
        draws: draws per k-shot size.
        n_bootstrap: patient-level bootstrap resamples of the full-data CIs (0: none).
        seed: seed of the bootstrap and of the k-shot draws.
        split_seed: seed of the subject split when the embeddings have no ``split`` column.
        whitened: also probe the ZCA-whitened embeddings (statistics from the train split).

    Returns:
        the result object written by ``--json`` (kind ``densefeat.probe``): inputs, row
        counts, split sizes, config, versions and ``probes`` (one record per embedding
        variant and k, the results-schema probe fields plus ``task`` and ``embedding``).

    Raises:
        FileNotFoundError: a missing file.
        ValueError: everything :func:`load_probe_data` rejects; a split without both classes
            among the matched rows; a k larger than the train split's smaller class.
    """
    t0 = _dt.datetime.now(_dt.UTC)
    ks = list(dict.fromkeys(ks))  # drop repeats, keep order
    shots = [k for k in ks if k != "all"]
    data = load_probe_data(embeddings, labels, key=key, split_seed=split_seed)
    splits = _split_counts(data)
    for name, part in splits.items():
        if part["positives"] == 0 or part["negatives"] == 0:
            raise ValueError(
                f"--labels {labels}: the {name} split has {part['positives']} positive and "
                f"{part['negatives']} negative matched rows ({data.split_source}); the probe "
                "needs both classes in train, tuning and held_out"
            )
    smaller = min(splits["train"]["positives"], splits["train"]["negatives"])
    too_big = [k for k in shots if k > smaller]
    if too_big:
        tr = splits["train"]
        raise ValueError(
            f"--shots {' '.join(map(str, too_big))}: k-shot needs k positive and k negative train "
            f"rows, but the train split has {tr['positives']} positive and {tr['negatives']} "
            f"negative rows (largest possible k: {smaller})"
        )
    task = Path(labels).stem if Path(labels).suffix else Path(labels).name
    variants = [("raw", data.X)]
    if whitened:
        variants.append(("whitened", whiten(data.X[data.split == "train"], data.X)))
    probes: list[dict[str, Any]] = []
    for name, X in variants:
        base = {"task": task, "embedding": name}
        if "all" in ks:
            res = probe_task(
                X, data.y, data.split, data.subject_id, n_bootstrap=n_bootstrap, seed=seed
            )
            probes.append({**base, **res.record})
        if shots:
            for rec in probe_k_shot(
                X, data.y, data.split, data.subject_id, ks=shots, draws=draws, seed=seed
            ):
                probes.append({**base, **rec})
    return {
        "kind": "densefeat.probe",
        "version": 1,
        "created": t0.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": (_dt.datetime.now(_dt.UTC) - t0).total_seconds(),
        "embeddings": str(embeddings),
        "key": data.key,
        "labels": str(labels),
        "task": task,
        "n": int(data.X.shape[0]),
        "d": int(data.X.shape[1]),
        "rows": {
            "labels": data.counts["labels"],
            "embeddings": data.counts["embeddings"],
            "matched": data.counts["matched"],
            "labels_unmatched": data.counts["labels"] - data.counts["matched"],
            "embeddings_unmatched": data.counts["embeddings"] - data.counts["matched"],
        },
        "splits": {"source": data.split_source, **splits},
        "config": {
            "k": ks,
            "draws": draws,
            "bootstrap": n_bootstrap,
            "bootstrap_unit": "subject",
            "confidence": 0.95,
            "seed": seed,
            "split_seed": split_seed,
            "Cs": list(DEFAULT_CS),
            "C_selection": "validation AUROC (roc_auc) on the tuning split; smallest C on ties",
            "fixed_C": FIXED_C,
            "fixed_C_at_k_le": MAX_K_WITHOUT_SELECTION,
            "whiten": whitened,
        },
        "versions": versions(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "probes": probes,
    }
