"""``densefeat analyze`` and the chunked embedding readers of ``densefeat.io``.

Parity: every file type, streamed in chunks that do not divide n, gives the same metrics as the
in-memory functions of ``densefeat.functional`` (principal angles: against
``scipy.linalg.subspace_angles`` of NumPy singular vectors) on the very values stored in the
file. CLI: exit codes, messages and the JSON contract (every docs/design.md metric; nothing written
when a run fails).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.linalg
import torch
from safetensors.numpy import save_file as save_safetensors
from safetensors.torch import save_file as save_safetensors_torch

import densefeat.functional as F
from densefeat.cli import main
from densefeat.eval.analyze import analyze_files
from densefeat.io import (
    EmbeddingFileError,
    embedding_shape,
    iter_embedding_chunks,
    iter_paired_chunks,
    open_embeddings,
)
from densefeat.io.atomic import to_json_safe

RTOL = 1e-8
N = 403  # prime: no chunk size below divides it
CHUNK = 50
ROW_GROUP = 41  # Parquet batches end at row-group boundaries: a second, different chunking

DESIGN_METRICS = (
    "effective_rank",
    "effective_rank_eig",
    "spectral_entropy",
    "rankme",
    "participation_ratio",
    "stable_rank",
    "numerical_rank",
    "condition_number",
    "condition_number_k",
    "alpha_req",
    "n",
    "d",
    "eigenvalues",
)


def _wellcond(n: int = N, d: int = 12, seed: int = 0, offset: float = 50.0) -> np.ndarray:
    """Well-conditioned (condition number ~5) float64 matrix with a large mean offset."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return rng.standard_normal((n, d)) @ (q * np.linspace(1.0, 0.2, d)) + offset


def _related(za: np.ndarray, d_b: int = 9, seed: int = 1) -> np.ndarray:
    """A second view sharing part of ``za``'s sample-space structure (moderate angles)."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((za.shape[1], d_b))
    return (za - za.mean(0)) @ mix / 3 + rng.standard_normal((za.shape[0], d_b)) - 7.0


# ----------------------------------------------------------------------------- writers
# Each writer stores z and returns (path, key, the float64 values actually stored).
Writer = Callable[[Path, np.ndarray], tuple[Path, str | None, np.ndarray]]


def _npy(dtype: str, fortran: bool = False) -> Writer:
    def write(base: Path, z: np.ndarray) -> tuple[Path, str | None, np.ndarray]:
        arr = z.astype(dtype)
        if fortran:
            arr = np.asfortranarray(arr)
        path = base.with_suffix(".npy")
        np.save(path, arr)
        return path, None, arr.astype(np.float64)

    return write


def _parquet_list(fixed: bool) -> Writer:
    def write(base: Path, z: np.ndarray) -> tuple[Path, str | None, np.ndarray]:
        n, d = z.shape
        values = pa.array(z.reshape(-1))
        if fixed:
            emb = pa.FixedSizeListArray.from_arrays(values, d)
        else:
            emb = pa.ListArray.from_arrays(
                pa.array(np.arange(0, n * d + 1, d, dtype=np.int32)), values
            )
        table = pa.table(
            {
                "subject_id": np.arange(n, dtype=np.int64),
                "emb": emb,
                "prediction_time": pa.array(
                    np.datetime64("2020-01-01T00:00:00") + np.arange(n) * np.timedelta64(1, "h")
                ),
            }
        )
        path = base.with_suffix(".parquet")
        pq.write_table(table, path, row_group_size=ROW_GROUP)
        return path, None, z

    return write


def _parquet_columns(base: Path, z: np.ndarray) -> tuple[Path, str | None, np.ndarray]:
    cols = {"subject_id": np.arange(len(z), dtype=np.int64)}
    cols |= {f"f{j}": z[:, j] for j in range(z.shape[1])}
    path = base.with_suffix(".parquet")
    pq.write_table(pa.table(cols), path, row_group_size=ROW_GROUP)
    return path, None, z


def _pt_tensor(base: Path, z: np.ndarray) -> tuple[Path, str | None, np.ndarray]:
    path = base.with_suffix(".pt")
    torch.save(torch.from_numpy(z.astype(np.float32)), path)
    return path, None, z.astype(np.float32).astype(np.float64)


def _pt_dict(base: Path, z: np.ndarray) -> tuple[Path, str | None, np.ndarray]:
    path = base.with_suffix(".pt")
    # Beside the embedding: a 1-D id tensor and a 2-D integer one, neither a float matrix.
    extra = {"subject_id": torch.arange(len(z)), "codes": torch.ones(len(z), 2, dtype=torch.int64)}
    torch.save({"emb": torch.from_numpy(z), **extra}, path)
    return path, None, z


def _safetensors(base: Path, z: np.ndarray) -> tuple[Path, str | None, np.ndarray]:
    path = base.with_suffix(".safetensors")
    tensors = {"ids": np.arange(len(z)), "codes": np.ones((len(z), 2), np.int32)}
    save_safetensors({**tensors, "emb": z.astype(np.float32)}, str(path))
    return path, None, z.astype(np.float32).astype(np.float64)


def _safetensors_bf16(base: Path, z: np.ndarray) -> tuple[Path, str | None, np.ndarray]:
    path = base.with_suffix(".safetensors")
    t = torch.from_numpy(z).bfloat16()
    save_safetensors_torch({"emb": t, "other": torch.zeros(3, 2)}, str(path))
    return path, "emb", t.double().numpy()


WRITERS: dict[str, Writer] = {
    "npy_float32": _npy("<f4"),
    "npy_float64": _npy("<f8"),
    "npy_float16": _npy("<f2"),
    "npy_bigendian": _npy(">f8"),
    "npy_fortran": _npy("<f4", fortran=True),
    "parquet_list": _parquet_list(fixed=False),
    "parquet_fixed_size_list": _parquet_list(fixed=True),
    "parquet_float_columns": _parquet_columns,
    "pt_tensor": _pt_tensor,
    "pt_dict": _pt_dict,
    "safetensors": _safetensors,
    "safetensors_bf16": _safetensors_bf16,
}


def _assert_same(actual: object, expected: object, what: str) -> None:
    if isinstance(expected, float):
        assert isinstance(actual, float), what
        assert actual == pytest.approx(expected, rel=RTOL, abs=0.0), what
    elif isinstance(expected, list):
        np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=0.0, err_msg=what)
    else:
        assert actual == expected, what


def _assert_geometry(result: dict, z: np.ndarray) -> None:
    expected = F.geometry(torch.from_numpy(z))
    for name, value in expected.items():
        _assert_same(result[name], value, name)


# ----------------------------------------------------------------------------- readers
@pytest.mark.parametrize("fmt", WRITERS)
def test_chunks_reproduce_the_stored_matrix(tmp_path: Path, fmt: str) -> None:
    path, key, stored = WRITERS[fmt](tmp_path / "z", _wellcond())
    assert embedding_shape(path, key) == stored.shape
    chunks = list(iter_embedding_chunks(path, key, chunk_rows=CHUNK))
    assert all(len(c) <= CHUNK for c in chunks)
    assert all(c.dtype in (np.float32, np.float64) and c.dtype.isnative for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks).astype(np.float64), stored)


def test_default_chunk_size_is_bounded_in_bytes(tmp_path: Path) -> None:
    path, _, _ = _npy("<f4")(tmp_path / "z", _wellcond(n=20, d=3))
    chunk = next(iter_embedding_chunks(path))
    assert len(chunk) == 20  # 64 MiB of float64 holds far more than 20 rows of 3


def test_paired_chunks_align_different_chunkings() -> None:
    a = np.arange(40.0).reshape(20, 2)
    b = -np.arange(20.0).reshape(20, 1)
    pieces = list(iter_paired_chunks(iter(np.array_split(a, 3)), iter(np.array_split(b, 7))))
    assert all(len(x) == len(y) for x, y in pieces)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in pieces]), a)
    np.testing.assert_array_equal(np.concatenate([y for _, y in pieces]), b)
    with pytest.raises(ValueError, match="different rows"):
        list(iter_paired_chunks(iter([a]), iter([b[:19]])))


def test_missing_file_is_both_value_and_file_not_found_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        open_embeddings(tmp_path / "absent.npy")
    with pytest.raises(EmbeddingFileError):
        open_embeddings(tmp_path / "absent.npy")


# ----------------------------------------------------------------------------- parity
@pytest.mark.parametrize("fmt", WRITERS)
def test_single_file_matches_functional(tmp_path: Path, fmt: str) -> None:
    path, key, stored = WRITERS[fmt](tmp_path / "z", _wellcond())
    result = analyze_files(path, key=key, k=5, chunk_rows=CHUNK)
    _assert_geometry(result, stored)
    assert result["condition_number_reason"] is None
    # the reference's condition_number_k is taken at the measured matrix's k
    assert result["isotropic_reference"] == F.isotropic_reference(
        N, 12, k=5, condition_k=result["condition_number_k_at"]
    )
    assert result["isotropic_reference"]["condition_number_k_at"] == result["condition_number_k_at"]
    assert result["file"] == str(path)


@pytest.mark.parametrize(
    ("fmt_a", "fmt_b"),
    [
        ("npy_float64", "npy_float64"),
        ("npy_float32", "parquet_list"),
        ("parquet_float_columns", "safetensors"),
        ("pt_dict", "pt_tensor"),
        ("safetensors", "npy_fortran"),
    ],
)
def test_pair_matches_functional_and_scipy(tmp_path: Path, fmt_a: str, fmt_b: str) -> None:
    k = 4
    za = _wellcond()
    path_a, key_a, sa = WRITERS[fmt_a](tmp_path / "a", za)
    path_b, key_b, sb = WRITERS[fmt_b](tmp_path / "b", _related(za))
    result = analyze_files(path_a, path_b, key=key_a, key_b=key_b, k=k, chunk_rows=CHUNK)

    _assert_geometry(result, sa)
    _assert_geometry(result["b"], sb)
    ta, tb = torch.from_numpy(sa), torch.from_numpy(sb)
    _assert_same(result["subspace_distance"], F.subspace_distance(ta, tb, k), "distance")
    _assert_same(result["linear_cka"], F.linear_cka(ta, tb), "linear_cka")
    _assert_same(result["linear_cka_debiased"], F.linear_cka_debiased(ta, tb), "debiased")
    assert result["subspace_k"] == k
    assert result["subspace_distance_chance"] == pytest.approx(F.chance_subspace_distance(N, k))

    ua = np.linalg.svd(sa - sa.mean(0), full_matrices=False)[0][:, :k]
    ub = np.linalg.svd(sb - sb.mean(0), full_matrices=False)[0][:, :k]
    expected = scipy.linalg.subspace_angles(ua, ub)
    assert expected.min() > 0.1  # not tiny: arccos of a cosine near 1 loses digits
    np.testing.assert_allclose(result["principal_angles"], expected, rtol=RTOL, atol=0.0)


def test_pair_chunk_size_does_not_change_the_result(tmp_path: Path) -> None:
    za = _wellcond()
    path_a, _, _ = _npy("<f8")(tmp_path / "a", za)
    path_b, _, _ = _parquet_list(fixed=False)(tmp_path / "b", _related(za))
    small = analyze_files(path_a, path_b, k=3, chunk_rows=7)
    whole = analyze_files(path_a, path_b, k=3)
    for name in ("subspace_distance", "linear_cka", "linear_cka_debiased", "effective_rank"):
        assert small[name] == pytest.approx(whole[name], rel=1e-10)


# ----------------------------------------------------------------------------- CLI + JSON
def _load_strict_json(path: Path) -> dict:
    def refuse(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_cli_writes_json_with_every_design_metric(tmp_path: Path, capsys) -> None:
    path, _, stored = _npy("<f4")(tmp_path / "z", _wellcond())
    out = tmp_path / "out.json"
    assert main(["analyze", str(path), "--json", str(out), "--chunk-rows", "64"]) == 0
    data = _load_strict_json(out)
    missing = [m for m in DESIGN_METRICS if m not in data]
    assert not missing
    assert data["n"] == N and data["d"] == 12
    assert data["eigenvalues"] == sorted(data["eigenvalues"], reverse=True)
    assert data["effective_rank"] == pytest.approx(F.effective_rank(stored), rel=RTOL)
    assert all(m in data["isotropic_reference"] for m in DESIGN_METRICS)
    shown = capsys.readouterr().out
    assert "effective_rank_eig" in shown and "isotropic" in shown
    assert not list(tmp_path.glob(".out.json*"))  # no temporary file left behind


def test_cli_pair_json(tmp_path: Path) -> None:
    za = _wellcond()
    path_a, _, _ = _pt_dict(tmp_path / "a", za)
    path_b, _, _ = _safetensors(tmp_path / "b", _related(za))
    out = tmp_path / "pair.json"
    assert main(["analyze", str(path_a), str(path_b), "--k", "3", "--json", str(out)]) == 0
    data = _load_strict_json(out)
    for name in (
        "subspace_distance",
        "subspace_distance_chance",
        "principal_angles",
        "linear_cka",
        "linear_cka_debiased",
    ):
        assert name in data
    assert len(data["principal_angles"]) == 3
    assert all(m in data["b"] for m in DESIGN_METRICS)
    assert data["b"]["file"] == str(path_b) and data["b"]["key"] == "emb"


def test_infinite_condition_number_is_null_with_reason(tmp_path: Path, capsys) -> None:
    z = _wellcond()
    z[:, 3] = 2.5  # a constant column: an exact null direction after centring
    path, _, _ = _npy("<f8")(tmp_path / "z", z)
    out = tmp_path / "out.json"
    assert main(["analyze", str(path), "--json", str(out)]) == 0
    data = _load_strict_json(out)
    assert data["condition_number"] is None
    assert "rank-deficient" in data["condition_number_reason"]
    assert data["numerical_rank"] == 11
    shown = capsys.readouterr().out
    assert "inf" in shown and "condition_number = inf: rank-deficient" in shown


def test_to_json_safe_adds_a_reason_for_every_null() -> None:
    safe = to_json_safe({"x": math.inf, "y": [1.0, math.nan], "z_reason": "kept", "z": math.inf})
    assert safe == {
        "x": None,
        "x_reason": "x is inf (written as null)",
        "y": [1.0, None],
        "z_reason": "kept",
        "z": None,
    }
    json.dumps(safe, allow_nan=False)


# ----------------------------------------------------------------------------- bad input
def _save(path: Path, arr: np.ndarray) -> list[str]:
    np.save(path, arr)
    return [str(path)]


def _with_nan(row: int, value: float = math.nan) -> np.ndarray:
    z = _wellcond(n=120, d=4)
    z[row, 2] = value
    return z


def _ragged_parquet(path: Path) -> list[str]:
    rows = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0], [8.0, 9.0]]
    pq.write_table(pa.table({"subject_id": list(range(5)), "emb": rows}), path)
    return [str(path)]


def _null_list_parquet(path: Path) -> list[str]:
    rows: list = [[1.0, 2.0], [3.0, 5.0], [5.0, 6.0], [7.0, 1.0], [8.0, 9.0], None]
    pq.write_table(pa.table({"emb": pa.array(rows, pa.list_(pa.float32()))}), path)
    return [str(path)]


def _nan_list_parquet(path: Path) -> list[str]:
    z = _with_nan(44)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(z.reshape(-1)), 4)
    pq.write_table(pa.table({"emb": emb}), path, row_group_size=ROW_GROUP)
    return [str(path), "--chunk-rows", "16"]


def _null_column_parquet(path: Path) -> list[str]:
    f1 = pa.array([float(i) for i in range(20)], mask=np.arange(20) == 13)
    pq.write_table(pa.table({"f0": np.arange(20.0) ** 2, "f1": f1}), path)
    return [str(path)]


def _pickled_object(path: Path) -> list[str]:
    class Payload:
        # Unpickling this would create a marker file: the test checks it never runs.
        def __reduce__(self):
            return (Path.touch, (path.with_name("pwned"),))

    torch.save({"emb": torch.randn(10, 3), "extra": Payload()}, path)
    return [str(path)]


def _two_pt_matrices(path: Path) -> list[str]:
    torch.save({"a": torch.randn(10, 3), "b": torch.randn(10, 4)}, path)
    return [str(path)]


def _different_rows(path: Path) -> list[str]:
    a, b = path.with_name("a.npy"), path.with_name("b.npy")
    np.save(a, _wellcond(n=20, d=3))
    np.save(b, _wellcond(n=19, d=3))
    return [str(a), str(b)]


def _nan_in_second(path: Path) -> list[str]:
    a, b = path.with_name("a.npy"), path.with_name("b.npy")
    np.save(a, _wellcond(n=120, d=4))
    np.save(b, _with_nan(77))
    return [str(a), str(b), "--chunk-rows", "10"]


def _truncated_npy(path: Path) -> list[str]:
    np.save(path, _wellcond(n=30, d=4))
    path.write_bytes(path.read_bytes()[:-40])
    return [str(path)]


# name -> (make the input and return the CLI args, substrings the error must contain)
BAD_INPUTS: dict[str, tuple[Callable[[Path], list[str]], tuple[str, ...]]] = {
    "unknown_extension": (
        lambda p: [str(p.with_suffix(".txt"))],
        ("unknown embedding file extension '.txt'", "x.txt"),
    ),
    "missing_file": (lambda p: [str(p.with_suffix(".npy"))], ("x.npy", "no such file")),
    "key_for_npy": (
        lambda p: [*_save(p.with_suffix(".npy"), _wellcond(n=5, d=2)), "--key", "emb"],
        ("--key does not apply",),
    ),
    "parquet_key_not_found": (
        lambda p: (
            _parquet_columns(p, _wellcond(n=5, d=2)),
            [str(p.with_suffix(".parquet")), "--key", "nope"],
        )[1],
        ("x.parquet", "'nope' not found", "'subject_id' (int64)", "'f0' (double)"),
    ),
    "pt_key_not_found": (
        lambda p: (_pt_dict(p, _wellcond(n=5, d=2)), [str(p.with_suffix(".pt")), "--key", "z"])[1],
        ("x.pt", "'z' not found", "'emb'", "'subject_id'"),
    ),
    "safetensors_key_not_found": (
        lambda p: (
            _safetensors(p, _wellcond(n=5, d=2)),
            [str(p.with_suffix(".safetensors")), "--key", "z"],
        )[1],
        ("x.safetensors", "'z' not found", "'emb' (F32 [5, 2])", "'ids'"),
    ),
    "parquet_no_float_column": (
        lambda p: (
            pq.write_table(
                pa.table({"subject_id": [1, 2, 3], "code": ["a", "b", "c"]}),
                p.with_suffix(".parquet"),
            ),
            [str(p.with_suffix(".parquet"))],
        )[1],
        ("no float column", "'code' (string)"),
    ),
    "parquet_integer_list": (
        lambda p: (
            pq.write_table(pa.table({"emb": [[1, 2], [3, 4], [5, 6]]}), p.with_suffix(".parquet")),
            [str(p.with_suffix(".parquet"))],
        )[1],
        ("no float column", "'emb' (list<", "int64>"),
    ),
    "parquet_key_is_integer_column": (
        lambda p: (
            _parquet_columns(p, _wellcond(n=5, d=2)),
            [str(p.with_suffix(".parquet")), "--key", "subject_id"],
        )[1],
        ("'subject_id' has type int64",),
    ),
    "npy_integer": (
        lambda p: _save(p.with_suffix(".npy"), np.arange(12).reshape(6, 2)),
        ("x.npy", "int64 is integer"),
    ),
    "npy_bool": (
        lambda p: _save(p.with_suffix(".npy"), np.ones((6, 2), bool)),
        ("bool is boolean",),
    ),
    "npy_complex": (
        lambda p: _save(p.with_suffix(".npy"), np.ones((6, 2), complex)),
        ("complex128 is complex",),
    ),
    "pt_integer": (
        lambda p: (
            torch.save(torch.ones(6, 2, dtype=torch.int32), p.with_suffix(".pt")),
            [str(p.with_suffix(".pt"))],
        )[1],
        ("x.pt", "torch.int32 is integer"),
    ),
    "safetensors_integer": (
        lambda p: (
            save_safetensors(
                {"emb": np.ones((6, 2), np.int64)}, str(p.with_suffix(".safetensors"))
            ),
            [str(p.with_suffix(".safetensors"))],
        )[1],
        ("[emb]", "I64 is not a float dtype"),
    ),
    "npy_1d": (lambda p: _save(p.with_suffix(".npy"), np.ones(10)), ("got shape (10,)",)),
    "npy_3d": (lambda p: _save(p.with_suffix(".npy"), np.ones((4, 3, 2))), ("(4, 3, 2)",)),
    "pt_3d": (
        lambda p: (
            torch.save(torch.ones(4, 3, 2), p.with_suffix(".pt")),
            [str(p.with_suffix(".pt"))],
        )[1],
        ("expected a 2-D (n, d) matrix, got shape (4, 3, 2)",),
    ),
    "npy_d0": (lambda p: _save(p.with_suffix(".npy"), np.ones((5, 0))), ("d is 0",)),
    "npy_one_row": (
        lambda p: _save(p.with_suffix(".npy"), np.ones((1, 4))),
        ("at least 2 rows, got n=1",),
    ),
    "parquet_one_row": (
        lambda p: (_parquet_columns(p, _wellcond(n=1, d=3)), [str(p.with_suffix(".parquet"))])[1],
        ("at least 2 rows, got n=1",),
    ),
    "npy_nan_row": (
        lambda p: [*_save(p.with_suffix(".npy"), _with_nan(57)), "--chunk-rows", "10"],
        ("x.npy", "row 57 ", "NaN or inf"),
    ),
    "npy_inf_first_row": (
        lambda p: _save(p.with_suffix(".npy"), _with_nan(0, math.inf)),
        ("row 0 ", "NaN or inf"),
    ),
    "parquet_nan_in_list": (
        lambda p: _nan_list_parquet(p.with_suffix(".parquet")),
        ("x.parquet [emb]", "row 44 "),
    ),
    "parquet_null_in_column": (
        lambda p: _null_column_parquet(p.with_suffix(".parquet")),
        ("x.parquet [f0,f1]", "row 13 "),
    ),
    "parquet_ragged": (
        lambda p: _ragged_parquet(p.with_suffix(".parquet")),
        ("x.parquet [emb]", "ragged", "row 3 has 1 values"),
    ),
    "parquet_null_list": (
        lambda p: _null_list_parquet(p.with_suffix(".parquet")),
        ("x.parquet [emb]", "row 5 is null"),
    ),
    "different_row_counts": (_different_rows, ("a.npy has 20 rows", "b.npy has 19")),
    "nan_in_second_file": (_nan_in_second, ("b.npy", "row 77 ")),
    "pickled_object": (
        lambda p: _pickled_object(p.with_suffix(".pt")),
        ("x.pt", "refused", "it references", "weights_only=True"),
    ),
    "pt_list": (
        lambda p: (
            torch.save([torch.ones(3, 2)], p.with_suffix(".pt")),
            [str(p.with_suffix(".pt"))],
        )[1],
        ("holds a list",),
    ),
    "pt_ambiguous_dict": (
        lambda p: _two_pt_matrices(p.with_suffix(".pt")),
        ("several 2-D tensors", "'a'", "'b'", "--key"),
    ),
    "npy_truncated": (lambda p: _truncated_npy(p.with_suffix(".npy")), ("truncated",)),
    "json_is_a_directory": (
        lambda p: [*_save(p.with_suffix(".npy"), _wellcond(n=5, d=2)), "--json", str(p.parent)],
        ("is an existing directory",),
    ),
    "json_parent_missing": (
        lambda p: [
            *_save(p.with_suffix(".npy"), _wellcond(n=5, d=2)),
            "--json",
            str(p.parent / "no" / "o.json"),
        ],
        ("does not exist",),
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_exits_2_with_message_and_no_json(tmp_path: Path, capsys, case: str) -> None:
    make, expected = BAD_INPUTS[case]
    args = make(tmp_path / "x")
    out = tmp_path / "out.json"
    if "--json" not in args:
        args += ["--json", str(out)]
    assert main(["analyze", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("densefeat analyze: error: ")
    for fragment in expected:
        assert fragment in err, (fragment, err)
    assert not out.exists()
    assert not list(tmp_path.glob(".out.json*"))
    assert not (tmp_path / "pwned").exists()  # the pickled payload never ran


def test_failed_run_keeps_an_existing_json(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    out.write_text('{"previous": true}')
    bad = tmp_path / "bad.npy"
    np.save(bad, _with_nan(3))
    assert main(["analyze", str(bad), "--json", str(out)]) == 2
    assert json.loads(out.read_text()) == {"previous": True}


# ----------------------------------------------------------------------------- console script
def test_console_script_exit_codes(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("densefeat")
    if not script.exists():
        pytest.skip("the densefeat console script is not installed next to this interpreter")
    good, bad = tmp_path / "x.npy", tmp_path / "bad.npy"
    np.save(good, _wellcond(n=50, d=4).astype(np.float32))
    np.save(bad, np.arange(10).reshape(5, 2))
    out = tmp_path / "out.json"

    ok = subprocess.run(
        [str(script), "analyze", str(good), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert _load_strict_json(out)["n"] == 50

    out.unlink()
    fail = subprocess.run(
        [str(script), "analyze", str(bad), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert fail.returncode == 2
    assert "densefeat analyze: error:" in fail.stderr and "integer" in fail.stderr
    assert not out.exists()


def test_cli_table_reads_as_numbers_with_direction_degrees_and_the_reference(
    tmp_path: Path, capsys
) -> None:
    from densefeat.cli.analyze import _fmt

    # 4 significant digits, thousands separated, no "-0", scientific only at the extremes
    assert [_fmt(x) for x in (7043.51, 0.912345, 12.0, -0.00001, 1234567.0, 2)] == [
        "7,044",
        "0.9123",
        "12.00",
        "-1.000e-05",
        "1.235e+06",
        "2",
    ]
    assert _fmt(-0.00004999) != "-0.000"
    za = _wellcond()
    path_a, _, _ = _pt_dict(tmp_path / "a", za)
    path_b, _, _ = _safetensors(tmp_path / "b", _related(za))
    out = tmp_path / "pair.json"
    assert main(["analyze", str(path_a), str(path_b), "--k", "3", "--json", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "effective_rank ↑" in shown and "condition_number ↓" in shown
    assert "principal angles (k=3, °) ↓" in shown and "linear_cka_debiased ↑" in shown
    assert "mean over 8 random isotropic Gaussian matrices" in shown
    data = _load_strict_json(out)
    deg = data["principal_angles_deg"]
    assert deg == pytest.approx([math.degrees(a) for a in data["principal_angles"]])
    assert all(0 <= a <= 90 for a in deg)
    lo, hi = min(deg), max(deg)
    assert f"{_fmt(lo)} / " in shown and f" / {_fmt(hi)}" in shown
