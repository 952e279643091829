"""``densefeat densify``: adapters fitted on frozen embeddings (docs/design.md, densify).

Each test compares against an independent computation: the stored weights by hand (linear),
``torch.nn`` (MLP), SciPy's matrix power of the NumPy covariance (whitening), and exact weight
equality under perturbation of the rows outside the training split.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from densefeat.cli import main
from densefeat.data.splits import assign_subject_splits
from densefeat.densify import Adapter, apply_file, fit_files, load_adapter, zca_whitening

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D = 6


def _rows(n_subjects: int = 40, n_times: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """Anisotropic embeddings with a slowly drifting per-subject latent (so adjacent times
    pair up), one row per (subject, time)."""
    rng = np.random.default_rng(seed)
    rot, _ = np.linalg.qr(rng.normal(size=(D, D)))
    mix = rot * np.array([10.0, 3.0, 1.0, 0.3, 0.1, 0.03])
    subj = np.repeat(np.arange(100, 100 + n_subjects), n_times)
    t = np.tile(np.arange(n_times), n_subjects)
    latent = np.repeat(rng.normal(size=(n_subjects, D)), n_times, axis=0)
    latent += 0.3 * rng.normal(size=latent.shape)
    emb = (latent @ mix.T + 1.0).astype(np.float32)
    times = np.datetime64("2020-01-01T00:00:00", "us") + t.astype("timedelta64[D]")
    split = np.asarray(assign_subject_splits(subj.tolist(), seed=0))
    return {"subject_id": subj, "prediction_time": times, "split": split, "embedding": emb}


def _write(path: Path, cols: dict[str, np.ndarray], *, split: bool = True) -> Path:
    emb = cols["embedding"]
    table = {
        "subject_id": pa.array(cols["subject_id"], pa.int64()),
        "prediction_time": pa.array(cols["prediction_time"]),
    }
    if split:
        table["split"] = pa.array(cols["split"])
    table["embedding"] = pa.array(list(emb), pa.list_(pa.float32()))
    table["label"] = pa.array(cols["subject_id"] % 2 == 0)
    pq.write_table(pa.table(table), path)
    return path


def _fit_args(files: list[Path], out: Path, *extra: str) -> list[str]:
    return ["densify", "fit", *map(str, files), "--out", str(out), *extra]


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- apply is the map
def test_linear_apply_equals_hand_computation(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    cols = _rows()
    src = _write(tmp_path / "emb.parquet", cols)
    ad = tmp_path / "ad.safetensors"
    assert main(_fit_args([src], ad, "--steps", "20", "--batch-size", "64")) == 0
    w = load_file(str(ad))
    assert set(w) == {"W", "b"} and w["W"].shape == (D, D)
    hand = (cols["embedding"].astype(np.float64) @ w["W"] + w["b"]).astype(np.float32)

    out = tmp_path / "out.parquet"
    args = ["densify", "apply", str(ad), str(src), "--out", str(out)]
    assert main([*args, "--chunk-rows", "7"]) == 0
    got = pq.read_table(out)
    adapted = np.stack(got.column("embedding").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(adapted, hand)
    for c in ("subject_id", "prediction_time", "split", "label"):
        assert got.column(c).equals(pq.read_table(src).column(c)), c
    out_npy = tmp_path / "out.npy"
    assert main(["densify", "apply", str(ad), str(src), "--out", str(out_npy)]) == 0
    np.testing.assert_array_equal(np.load(out_npy), hand)
    cfg = json.loads((tmp_path / "ad.json").read_text())
    assert cfg["kind"] == "linear" and cfg["method"] == "dense"
    assert cfg["pairs"] == "adjacent prediction times of a subject"
    assert cfg["n_train"] == int((cols["split"] == "train").sum())


def test_mlp_adapter_equals_torch_forward() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, D))
    net = torch.nn.Sequential(
        torch.nn.Linear(D, 9, dtype=torch.float64),
        torch.nn.GELU(),
        torch.nn.Linear(9, 4, dtype=torch.float64),
    )
    mean, scale = rng.normal(size=D), 2.5
    ref = net(torch.from_numpy((x - mean) / scale)).detach().numpy()
    adapter = Adapter(
        "mlp",
        {
            "in_mean": mean,
            "in_scale": np.array([scale]),
            "W1": net[0].weight.detach().numpy().T,
            "b1": net[0].bias.detach().numpy(),
            "W2": net[2].weight.detach().numpy().T,
            "b2": net[2].bias.detach().numpy(),
        },
    )
    np.testing.assert_allclose(adapter(x), ref, rtol=1e-5, atol=1e-6)


def test_fitted_mlp_round_trips_through_its_files(tmp_path: Path) -> None:
    src = _write(tmp_path / "emb.parquet", _rows())
    adapter = fit_files(src, method="vicreg", hidden=8, dim=3, steps=5, batch_size=32)
    from densefeat.densify import save_adapter

    save_adapter(adapter, tmp_path / "mlp.safetensors")
    loaded = load_adapter(tmp_path / "mlp.json")
    assert loaded.kind == "mlp" and (loaded.d_in, loaded.d_out) == (D, 3)
    x = _rows()["embedding"]
    np.testing.assert_array_equal(loaded(x), adapter(x))


# --------------------------------------------------------------------------- training rows only
@pytest.mark.parametrize("method", ["dense", "barlow", "whiten"])
@pytest.mark.parametrize("split_column", [True, False])
def test_fit_never_reads_rows_outside_the_training_split(
    tmp_path: Path, method: str, split_column: bool
) -> None:
    cols = _rows()
    train = cols["split"] == "train"
    assert 0 < train.sum() < len(train)
    a = _write(tmp_path / "a.parquet", cols, split=split_column)
    noisy = dict(cols)
    emb = cols["embedding"].copy()
    emb[~train] = np.random.default_rng(5).normal(size=emb[~train].shape) * 100
    noisy["embedding"] = emb
    b = _write(tmp_path / "b.parquet", noisy, split=split_column)
    kw = {"method": method, "steps": 10, "batch_size": 32}
    fa, fb = fit_files(a, **kw), fit_files(b, **kw)
    for name in fa.tensors:
        np.testing.assert_array_equal(fa.tensors[name], fb.tensors[name])
    assert fa.config["n_train"] == train.sum()
    # Control: perturbing one training row does change the weights.
    emb2 = cols["embedding"].copy()
    emb2[np.flatnonzero(train)[0]] += 5.0
    c = _write(tmp_path / "c.parquet", {**cols, "embedding": emb2}, split=split_column)
    assert not np.array_equal(fit_files(c, **kw).tensors["W"], fa.tensors["W"])


def test_two_file_fit_ignores_held_out_rows_of_either_file(tmp_path: Path) -> None:
    cols = _rows()
    train = cols["split"] == "train"
    a = _write(tmp_path / "a.parquet", cols)
    shifted = {**cols, "embedding": cols["embedding"] * 1.1}
    b = _write(tmp_path / "b.parquet", shifted)
    emb = shifted["embedding"].copy()
    emb[~train] = -emb[~train] * 7
    b2 = _write(tmp_path / "b2.parquet", {**cols, "embedding": emb})
    kw = {"method": "dense", "steps": 10, "batch_size": 32}
    f1, f2 = fit_files(a, b, **kw), fit_files(a, b2, **kw)
    np.testing.assert_array_equal(f1.tensors["W"], f2.tensors["W"])
    assert f1.config["pairs"] == "row i of both files"
    assert f1.config["n_pairs"] == train.sum()


# --------------------------------------------------------------------------- whitening control
def test_whiten_equals_zca_from_the_numpy_covariance() -> None:
    from scipy.linalg import fractional_matrix_power

    x = _rows()["embedding"].astype(np.float64)
    ridge = 1e-5
    w, b = zca_whitening(x, ridge)
    cov = np.cov(x, rowvar=False)
    eps = ridge * np.trace(cov) / D
    ref = np.real(fractional_matrix_power(cov + eps * np.eye(D), -0.5))
    np.testing.assert_allclose(w, ref, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(b, -x.mean(0) @ ref, rtol=1e-6, atol=1e-9)
    y = x @ w + b
    # Closed form: cov(y) = W C W = (C + eps I)^-1 C, the identity up to the ridge.
    shrunk = np.linalg.solve(cov + eps * np.eye(D), cov)
    np.testing.assert_allclose(np.cov(y, rowvar=False), shrunk, atol=1e-8)
    # PCA whitening onto the top 2 directions: identity covariance in 2-D.
    w2, b2 = zca_whitening(x, ridge, dim=2)
    np.testing.assert_allclose(np.cov(x @ w2 + b2, rowvar=False), np.eye(2), atol=1e-4)


def test_whiten_cli_uses_training_rows_only(tmp_path: Path) -> None:
    cols = _rows()
    src = _write(tmp_path / "emb.parquet", cols)
    ad = tmp_path / "w.safetensors"
    assert main(_fit_args([src], ad, "--method", "whiten")) == 0
    w, _ = zca_whitening(cols["embedding"][cols["split"] == "train"].astype(np.float64))
    np.testing.assert_allclose(load_adapter(ad).tensors["W"], w, rtol=1e-10)


# --------------------------------------------------------------------------- objectives work
def test_dense_adapter_raises_effective_rank(tmp_path: Path) -> None:
    """The input is strongly anisotropic (scales 10 .. 0.03): the dense adapter must spread it."""
    cols = _rows(n_subjects=80)
    src = _write(tmp_path / "emb.parquet", cols)
    ad, out = tmp_path / "d.safetensors", tmp_path / "d.parquet"
    assert main(_fit_args([src], ad, "--steps", "150", "--lr", "1e-2")) == 0
    assert main(["densify", "apply", str(ad), str(src), "--out", str(out)]) == 0
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    assert main(["analyze", str(src), "--json", str(before)]) == 0
    assert main(["analyze", str(out), "--json", str(after)]) == 0
    rb = json.loads(before.read_text())
    ra = json.loads(after.read_text())
    assert ra["n"] == rb["n"] and ra["d"] == D
    assert ra["effective_rank"] > rb["effective_rank"] + 1.5
    assert ra["condition_number"] < rb["condition_number"] / 100


def test_one_file_without_keys_runs_unpaired(tmp_path: Path) -> None:
    x = _rows()["embedding"]
    np.save(tmp_path / "x.npy", x)
    adapter = fit_files(tmp_path / "x.npy", method="dense", steps=5, batch_size=32)
    assert adapter.config["pairs"].startswith("none")
    assert adapter.config["n_pairs"] == 0
    assert "row index" in adapter.config["train_rows"]
    out = tmp_path / "y.parquet"
    apply_file(adapter, tmp_path / "x.npy", out)
    assert pq.read_table(out).column_names == ["embedding"]


# --------------------------------------------------------------------------- bad inputs
def _no_output(directory: Path, *names: str) -> None:
    for name in names:
        assert not (directory / name).exists(), name
    assert _leftovers(directory) == []


def test_mismatched_rows_error(tmp_path: Path, capsys) -> None:
    a = _write(tmp_path / "a.parquet", _rows())
    b = _write(tmp_path / "b.parquet", _rows(n_subjects=30))
    assert main(_fit_args([a, b], tmp_path / "ad.safetensors")) == 2
    err = capsys.readouterr().err
    assert "a.parquet" in err and "b.parquet" in err and "200" in err and "150" in err
    _no_output(tmp_path, "ad.safetensors", "ad.json")


def test_paired_files_with_other_subjects_error(tmp_path: Path, capsys) -> None:
    cols = _rows()
    a = _write(tmp_path / "a.parquet", cols)
    b = _write(tmp_path / "b.parquet", {**cols, "subject_id": cols["subject_id"][::-1].copy()})
    assert main(_fit_args([a, b], tmp_path / "ad.safetensors")) == 2
    assert "row 0 has subject_id" in capsys.readouterr().err
    _no_output(tmp_path, "ad.safetensors", "ad.json")


@pytest.mark.parametrize("bad_row", [3, 150])  # a training row, and (likely) a held-out one
def test_nan_errors_name_file_and_row(tmp_path: Path, capsys, bad_row: int) -> None:
    cols = _rows()
    emb = cols["embedding"].copy()
    emb[bad_row, 2] = np.nan
    src = _write(tmp_path / "nan.parquet", {**cols, "embedding": emb})
    assert main(_fit_args([src], tmp_path / "ad.safetensors", "--steps", "2")) == 2
    err = capsys.readouterr().err
    assert "nan.parquet" in err and f"row {bad_row}" in err
    _no_output(tmp_path, "ad.safetensors", "ad.json")
    # apply: a good adapter on the bad file writes nothing, even past the first chunks.
    good = _write(tmp_path / "good.parquet", cols)
    assert main(_fit_args([good], tmp_path / "g.safetensors", "--steps", "2")) == 0
    args = ["densify", "apply", str(tmp_path / "g.safetensors"), str(src)]
    assert main([*args, "--out", str(tmp_path / "o.parquet"), "--chunk-rows", "16"]) == 2
    assert f"row {bad_row}" in capsys.readouterr().err
    _no_output(tmp_path, "o.parquet")


def test_unknown_key_columns_error(tmp_path: Path, capsys) -> None:
    src = _write(tmp_path / "a.parquet", _rows())
    ad = tmp_path / "ad.safetensors"
    for flag in ("--subject-col", "--time-col", "--split-col", "--key"):
        assert main(_fit_args([src], ad, flag, "nope")) == 2
        err = capsys.readouterr().err
        assert "'nope'" in err and "a.parquet" in err, (flag, err)
    np.save(tmp_path / "x.npy", _rows()["embedding"])
    assert main(_fit_args([tmp_path / "x.npy"], ad, "--subject-col", "subject_id")) == 2
    assert "only .parquet" in capsys.readouterr().err
    _no_output(tmp_path, "ad.safetensors", "ad.json")


def test_apply_width_mismatch_and_bad_targets(tmp_path: Path, capsys) -> None:
    src = _write(tmp_path / "a.parquet", _rows())
    ad = tmp_path / "ad.safetensors"
    assert main(_fit_args([src], ad, "--steps", "2")) == 0
    np.save(tmp_path / "wide.npy", np.ones((5, D + 1), np.float32))
    out = tmp_path / "o.parquet"
    assert main(["densify", "apply", str(ad), str(tmp_path / "wide.npy"), "--out", str(out)]) == 2
    assert "d=7" in capsys.readouterr().err
    assert main(["densify", "apply", str(ad), str(src), "--out", str(tmp_path / "o.csv")]) == 2
    assert main(["densify", "apply", str(tmp_path / "none"), str(src), "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(_fit_args([src], tmp_path / "ad.bin")) == 2
    _no_output(tmp_path, "o.parquet", "o.csv", "ad.bin")


# --------------------------------------------------------------------------- round trip
def test_cli_round_trip_fit_apply_analyze_probe(tmp_path: Path) -> None:
    cols = _rows(n_subjects=120)
    src = _write(tmp_path / "emb.parquet", cols)
    for method in ("dense", "vicreg", "barlow", "whiten"):
        ad, out = tmp_path / f"{method}.safetensors", tmp_path / f"{method}.parquet"
        assert main(_fit_args([src], ad, "--method", method, "--steps", "20")) == 0
        assert main(["densify", "apply", str(ad), str(src), "--out", str(out)]) == 0
        report = tmp_path / f"{method}.json"
        assert main(["analyze", str(out), "--json", str(report)]) == 0
        r = json.loads(report.read_text())
        assert (r["n"], r["d"]) == (len(cols["subject_id"]), D)
    labels = tmp_path / "labels.parquet"
    pq.write_table(
        pa.table(
            {
                "subject_id": pa.array(cols["subject_id"], pa.int64()),
                "prediction_time": pa.array(cols["prediction_time"]),
                "boolean_value": pa.array(cols["subject_id"] % 3 == 0),
            }
        ),
        labels,
    )
    probe = tmp_path / "probe.json"
    args = ["probe", "--embeddings", str(tmp_path / "dense.parquet"), "--labels", str(labels)]
    assert main([*args, "--bootstrap", "0", "--json", str(probe)]) == 0


def test_an_exact_null_direction_needs_dim_below_the_rank() -> None:
    """A linear map cannot create variance: at D = d the null direction survives (whitening
    included); at D = rank the dense adapter's output is well conditioned."""
    cols = _rows(n_subjects=80)
    x = cols["embedding"].astype(np.float64)
    x[:, -1] = x[:, :-1].sum(axis=1)  # exact linear dependence: rank d - 1
    w, b = zca_whitening(x)
    assert np.linalg.svd(x @ w + b - (x @ w + b).mean(0), compute_uv=False)[-1] < 1e-6
    w2, b2 = zca_whitening(x, dim=D - 1)
    ev = np.linalg.eigvalsh(np.cov(x @ w2 + b2, rowvar=False))
    assert ev.max() / ev.min() < 1.05  # 1 up to the ridge
    from densefeat.densify import fit_adapter

    pairs = (x[:-1], x[1:])
    adapter = fit_adapter(x, pairs, method="dense", dim=D - 1, steps=150, batch_size=128)
    ev = np.linalg.eigvalsh(np.cov(adapter(x), rowvar=False))
    assert ev.max() / ev.min() < 10


def test_apply_streams_in_bounded_memory(tmp_path: Path) -> None:
    """Peak traced memory of apply (.npy -> .npy) is bounded by the chunk, not by the file."""
    import tracemalloc

    n, d = 100_000, 16
    x = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    rng = np.random.default_rng(1)
    adapter = Adapter("linear", {"W": rng.normal(size=(d, 4)), "b": rng.normal(size=4)})
    del x
    tracemalloc.start()
    apply_file(adapter, tmp_path / "x.npy", tmp_path / "y.npy", chunk_rows=1000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < n * d * 4 / 8, peak  # an eighth of the input file
    x = np.load(tmp_path / "x.npy")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), adapter(x), rtol=1e-6)
