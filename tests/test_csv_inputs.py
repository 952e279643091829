"""CSV and TSV embeddings and labels: read by analyze, probe and the label reader (benchmark
--labels) exactly as their Parquet twins, with the same validation and errors."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from densefeat.cli import main
from densefeat.data.meds import read_labels
from densefeat.eval.probe.files import probe_files
from densefeat.io import EmbeddingFileError, iter_embedding_chunks, open_embeddings

N, D = 120, 5


def _frames(seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    y = rng.random(N) < 0.4
    X = rng.normal(size=(N, D)) + 0.8 * y[:, None]
    times = [dt.datetime(2020, 1, 1) + dt.timedelta(days=int(i), hours=7) for i in range(N)]
    split = np.where(
        np.arange(N) % 10 < 6, "train", np.where(np.arange(N) % 10 < 8, "tuning", "held_out")
    )
    emb = pl.DataFrame(
        {
            "subject_id": np.arange(1, N + 1, dtype=np.int64),
            "prediction_time": times,
            "split": split,
            "embedding": X.tolist(),
        },
        schema_overrides={"embedding": pl.List(pl.Float64)},
    )
    labels = pl.DataFrame(
        {"subject_id": emb["subject_id"], "prediction_time": times, "boolean_value": y}
    )
    return emb, labels


def _twins(tmp: Path, sep: str = ",") -> dict[str, Path]:
    """Parquet files and their CSV (or TSV) twins: the list column printed as ``[a, b, ...]``
    (how polars and pandas print lists), and a scalar-column variant ``f0..f4``."""
    emb, labels = _frames()
    ext = "tsv" if sep == "\t" else "csv"
    paths = {
        "emb.parquet": tmp / "emb.parquet",
        "emb.text": tmp / f"emb.{ext}",
        "cols.parquet": tmp / "cols.parquet",
        "cols.text": tmp / f"cols.{ext}",
        "labels.parquet": tmp / "labels.parquet",
        "labels.text": tmp / f"labels.{ext}",
    }
    emb.write_parquet(paths["emb.parquet"])
    emb.with_columns(
        pl.Series("embedding", [json.dumps(v) for v in emb["embedding"].to_list()])
    ).write_csv(paths["emb.text"], separator=sep)
    cols = emb.drop("embedding").with_columns(
        [pl.Series(f"f{j}", np.array(emb["embedding"].to_list())[:, j]) for j in range(D)]
    )
    cols.write_parquet(paths["cols.parquet"])
    cols.write_csv(paths["cols.text"], separator=sep)
    labels.write_parquet(paths["labels.parquet"])
    labels.write_csv(paths["labels.text"], separator=sep)
    return paths


def _matrix(path: Path, key: str | None = None) -> np.ndarray:
    return np.concatenate(list(iter_embedding_chunks(path, key, chunk_rows=7)))


@pytest.mark.parametrize("sep", [",", "\t"])
def test_text_embeddings_equal_their_parquet_twins(tmp_path, sep):
    p = _twins(tmp_path, sep)
    for kind in ("emb", "cols"):
        a, b = open_embeddings(p[f"{kind}.parquet"]), open_embeddings(p[f"{kind}.text"])
        assert (a.n, a.d, a.key, a.dtype) == (b.n, b.d, b.key, b.dtype)
        np.testing.assert_array_equal(_matrix(p[f"{kind}.text"]), _matrix(p[f"{kind}.parquet"]))
    np.testing.assert_array_equal(
        _matrix(p["cols.text"], "f3,f1"), _matrix(p["cols.parquet"], "f3,f1")
    )


@pytest.mark.parametrize("sep", [",", "\t"])
def test_text_labels_equal_their_parquet_twins(tmp_path, sep):
    p = _twins(tmp_path, sep)
    assert read_labels(p["labels.text"]).equals(read_labels(p["labels.parquet"]))


def test_probe_and_analyze_give_the_same_numbers_from_csv(tmp_path, capsys):
    p = _twins(tmp_path)
    kw = dict(ks=["all", 4], draws=2, n_bootstrap=50, seed=0)
    a = probe_files(p["emb.parquet"], p["labels.parquet"], **kw)
    b = probe_files(p["emb.text"], p["labels.text"], **kw)
    assert a["probes"] == b["probes"] and a["rows"] == b["rows"]
    out_a, out_b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["analyze", str(p["emb.parquet"]), "--json", str(out_a)]) == 0
    assert main(["analyze", str(p["emb.text"]), "--json", str(out_b)]) == 0
    ga, gb = json.loads(out_a.read_text()), json.loads(out_b.read_text())
    ga.pop("file"), gb.pop("file")
    assert ga == gb  # every geometry number, the dtype and the column
    assert ga["n"] == N and ga["d"] == D and ga["key"] == "embedding"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.with_columns(pl.col("f2").cast(pl.Int64)), "'f2' has type int64"),
        (
            lambda f: f.with_columns(
                pl.when(pl.col("subject_id") == 9)
                .then(float("nan"))
                .otherwise(pl.col("f1"))
                .alias("f1")
            ),
            "row 8",
        ),
    ],
)
def test_bad_text_embeddings_fail_like_parquet(tmp_path, edit, message):
    emb, _ = _frames()
    cols = emb.drop("embedding").with_columns(
        [pl.Series(f"f{j}", np.array(emb["embedding"].to_list())[:, j]) for j in range(D)]
    )
    bad = edit(cols)
    bad.write_parquet(tmp_path / "bad.parquet")
    bad.write_csv(tmp_path / "bad.csv")
    errors = []
    for path in (tmp_path / "bad.parquet", tmp_path / "bad.csv"):
        with pytest.raises(EmbeddingFileError) as info:
            _matrix(path, "f0,f1,f2,f3,f4")
        errors.append(str(info.value).replace(path.name, "FILE"))
    assert errors[0] == errors[1] and message in errors[0]


def test_unreadable_list_column_is_named(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text('subject_id,embedding\n1,"[1.0, x]"\n2,"[2.0, 3.0]"\n')
    with pytest.raises(EmbeddingFileError, match="column 'embedding'"):
        open_embeddings(path)
