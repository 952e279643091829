"""Cross-modal alignment: debiased CKA against an n x n reference, planted fixtures, and the
multimodal benchmark end to end (vitals / labs / static groups) at a tiny budget."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from scipy.stats import ortho_group

from _grouped_cohort import grouped_cohort
from densefeat.benchmark.config import BenchmarkConfig
from densefeat.eval.crossmodal import (
    CI_METRICS,
    modality_alignment,
    modality_alignment_records,
    paired_alignment_differences,
)
from densefeat.functional import linear_cka_debiased


def _hsic_unbiased_gram(k: np.ndarray, ll: np.ndarray) -> float:
    """Song et al. (2012), eq. 5, on n x n Gram matrices with the diagonal removed."""
    n = k.shape[0]
    kt, lt = k.copy(), ll.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    return float(
        np.trace(kt @ lt)
        + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ kt @ lt @ one)
    ) / (n * (n - 3))


def _cka_debiased_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Debiased linear CKA (Nguyen et al. 2021) from the n x n Gram matrices of the centred
    features: an independent route from the d x d statistics densefeat uses."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    k, ll = x @ x.T, y @ y.T
    return _hsic_unbiased_gram(k, ll) / math.sqrt(
        _hsic_unbiased_gram(k, k) * _hsic_unbiased_gram(ll, ll)
    )


@pytest.mark.parametrize(("n", "da", "db"), [(7, 3, 5), (50, 8, 8), (120, 20, 6)])
def test_debiased_cka_equals_the_gram_matrix_reference(n, da, db):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, da))
    y = x[:, :1] @ rng.normal(size=(1, db)) + rng.normal(size=(n, db))
    assert linear_cka_debiased(x, y) == pytest.approx(_cka_debiased_reference(x, y), rel=1e-10)


def test_debiased_cka_is_invariant_to_orthogonal_maps_and_isotropic_scale():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 6))
    y = x @ rng.normal(size=(6, 6)) + 0.5 * rng.normal(size=(80, 6))
    ref = linear_cka_debiased(x, y)
    q = ortho_group.rvs(6, random_state=2)
    assert linear_cka_debiased(3.7 * x @ q, y + 5.0) == pytest.approx(ref, rel=1e-10)
    assert linear_cka_debiased(x, 0.01 * y @ q.T) == pytest.approx(ref, rel=1e-10)
    assert linear_cka_debiased(x, x @ q) == pytest.approx(1.0, rel=1e-12)


def test_shared_subspace_is_near_the_floor_and_independent_near_chance():
    rng = np.random.default_rng(0)
    n, d, r = 600, 16, 4
    s = rng.normal(size=(n, r)) * np.array([5.0, 4.0, 3.0, 2.5])  # the shared patterns
    za = s @ rng.normal(size=(r, d)) + 0.05 * rng.normal(size=(n, d))
    zb = s @ rng.normal(size=(r, d)) + 0.05 * rng.normal(size=(n, d))
    shared = modality_alignment(za, zb, k=r)
    assert shared["floor"] == 0.0 and shared["subspace_distance"] < 0.05
    assert shared["linear_cka_debiased"] > 0.5
    assert shared["k_erank"] <= r and shared["subspace_distance_erank"] < 0.05
    assert max(shared["principal_angles_deg"]) < 5.0
    # Independent modalities: every distance near its chance level, CKA near 0.
    zc = rng.normal(size=(n, d))
    indep = modality_alignment(za, zc, k=r)
    assert indep["subspace_distance"] == pytest.approx(indep["chance"], abs=0.03)
    assert indep["subspace_distance_whole"] == pytest.approx(indep["chance_whole"], abs=0.03)
    assert abs(indep["linear_cka_debiased"]) < 0.05
    assert indep["chance"] == pytest.approx(math.sqrt(1 - r / (n - 1)))
    # Whole space = canonical correlations: an invertible linear map of one side is distance 0.
    m = rng.normal(size=(d, d)) + 3 * np.eye(d)
    same = modality_alignment(zc, zc @ m, k=r)
    assert same["subspace_distance_whole"] == pytest.approx(0.0, abs=1e-6)
    # d >= n - 1: the whole space is undefined, null with a reason (never a fake 0).
    small = modality_alignment(za[:10], zb[:10], k=r)
    assert small["subspace_distance_whole"] is None and "n - 1" in small["whole_reason"]


def test_records_use_only_rows_where_both_modalities_are_present():
    rng = np.random.default_rng(3)
    per = {m: rng.normal(size=(40, 5)) for m in ("vitals", "labs", "static")}
    present = {"labs": np.arange(40) % 4 != 0}  # labs missing on 10 rows
    errors: list[str] = []
    recs = modality_alignment_records(per, present, 3, {"method": "dense", "seed": 0}, errors)
    pairs = [(r["a"], r["b"], r["n"]) for r in recs]
    assert pairs == [("vitals", "labs", 30), ("vitals", "static", 40), ("labs", "static", 30)]
    assert all(r["kind"] == "modalities" and r["n_rows"] == 40 for r in recs)
    # A pair without enough shared rows is reported, not raised.
    recs = modality_alignment_records(
        per, {"labs": np.arange(40) < 2}, 3, {"method": "dense", "seed": 0}, errors
    )
    assert len(recs) == 1 and len(errors) == 2 and "at least 3 rows" in errors[0]


# ---- bootstrap CIs ------------------------------------------------------------------------


def _subject_fixture(n_subjects: int = 150, rows_per: int = 3, seed: int = 7):
    """Three modalities of ``rows_per`` rows per subject: a and b share a subject-level
    pattern, c is independent; labs are missing on a few rows."""
    rng = np.random.default_rng(seed)
    subj = np.repeat(np.arange(n_subjects), rows_per)
    latent = rng.normal(size=(n_subjects, 3))[subj] + 0.3 * rng.normal(size=(subj.size, 3))
    per = {
        "vitals": latent @ rng.normal(size=(3, 8)) + rng.normal(size=(subj.size, 8)),
        "labs": latent @ rng.normal(size=(3, 6)) + rng.normal(size=(subj.size, 6)),
        "static": rng.normal(size=(subj.size, 5)),
    }
    present = {"labs": np.arange(subj.size) % 10 != 0}
    return per, present, subj


def test_alignment_cis_contain_the_point_estimate():
    per, present, subj = _subject_fixture()
    arrays: dict[str, np.ndarray] = {}
    recs = modality_alignment_records(
        per, present, 4, {"method": "dense", "seed": 0},
        groups=subj, n_resamples=200, seed=3, arrays=arrays,
    )  # fmt: skip
    assert len(recs) == 3
    for r in recs:
        assert r["ci_resamples"] == 200 and r["ci_valid"] == 200
        assert arrays[f"crossmodal/{r['a']}/{r['b']}"].shape == (200, len(CI_METRICS))
        for m in CI_METRICS:
            lo, hi = r[f"{m}_ci"]
            assert lo <= r[m] <= hi, (r["a"], r["b"], m, lo, r[m], hi)
            assert hi - lo > 0.0  # subject sampling moves every number
    # The shared pair is far from chance with a CI that says so; the independent one is not.
    va, vs = recs[0], recs[1]
    assert (va["a"], va["b"], vs["b"]) == ("vitals", "labs", "static")
    assert va["subspace_distance_ci"][1] < va["chance"]
    assert va["linear_cka_debiased_ci"][0] > 0.3
    assert vs["linear_cka_debiased_ci"][0] < 0.0 < vs["linear_cka_debiased_ci"][1]


def test_the_resampling_keeps_subjects_whole_and_is_shared_by_every_pair(monkeypatch):
    import densefeat.eval.crossmodal as cm

    per, present, subj = _subject_fixture(n_subjects=40)
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    real = cm.alignment_resamples

    def spy(z_a, z_b, ks, weights):
        seen.append(np.asarray(weights))
        return real(z_a, z_b, ks, weights)

    monkeypatch.setattr(cm, "alignment_resamples", spy)
    cm.modality_alignment_records(
        per, present, 3, {"method": "m", "seed": 0}, groups=subj, n_resamples=50, seed=1
    )
    both_labs = present["labs"]
    w_vl, w_vs = seen[0], seen[1]  # vitals vs labs (labs rows only), vitals vs static (all)
    assert w_vs.shape == (50, subj.size) and w_vl.shape == (50, int(both_labs.sum()))
    for b in range(50):
        # A subject's rows are all in or all out, with one multiplicity (its draw count).
        for s in np.unique(subj):
            counts = w_vs[b, subj == s]
            assert np.all(counts == counts[0])
        assert np.all(w_vs[b] == np.rint(w_vs[b]))
        # Every pair restricts the same draw of subjects to its own rows.
        np.testing.assert_array_equal(w_vl[b], w_vs[b, both_labs])
    # Subjects, not rows, are drawn: each resample draws 40 subjects (3 rows each).
    assert np.all(w_vs.sum(1) == subj.size)


def test_paired_differences_of_identical_methods_are_exactly_zero_and_else_paired():
    per, present, subj = _subject_fixture()
    arrays: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    records = []
    rng = np.random.default_rng(0)
    worse = {m: z + 3.0 * rng.normal(size=z.shape) for m, z in per.items()}
    for method, emb in (("dense", per), ("twin", per), ("noisy", worse)):
        arrays[(method, 0)] = {}
        records += modality_alignment_records(
            emb, present, 4, {"method": method, "seed": 0},
            groups=subj, n_resamples=100, seed=5, arrays=arrays[(method, 0)],
        )  # fmt: skip
    diffs = paired_alignment_differences(records, arrays)
    assert {(d["method"], d["a"], d["b"]) for d in diffs} == {
        (m, a, b)
        for m in ("twin", "noisy")
        for a, b in (("vitals", "labs"), ("vitals", "static"), ("labs", "static"))
    }
    for d in diffs:
        assert d["reference"] == "dense" and d["n_resamples"] == 100
        for m in CI_METRICS:
            if d["method"] == "twin":
                assert d[m]["difference"] == 0.0 and d[m]["difference_ci"] == [0.0, 0.0]
    # Noise destroys the shared pattern: dense is closer (lower distance, higher CKA) with a
    # paired CI excluding 0; the point difference equals the records' difference.
    noisy = next(d for d in diffs if d["method"] == "noisy" and d["b"] == "labs")
    rec = {r["method"]: r for r in records if r["b"] == "labs" and r["a"] == "vitals"}
    dist = noisy["subspace_distance"]
    assert dist["difference"] == pytest.approx(
        rec["dense"]["subspace_distance"] - rec["noisy"]["subspace_distance"], abs=1e-12
    )
    assert dist["difference_ci"][1] < 0.0
    assert noisy["linear_cka_debiased"]["difference_ci"][0] > 0.0


# ---- the multimodal benchmark end to end ------------------------------------------------------


@pytest.fixture(scope="module")
def mm_bench(tmp_path_factory) -> dict[str, Any]:
    from densefeat.benchmark.run import run_benchmark

    root = tmp_path_factory.mktemp("mmbench")
    data = grouped_cohort(root, n_subjects=100)
    bench = BenchmarkConfig(
        modality="multimodal",
        methods=("dense", "vicreg", "masked", "supervised", "random"),
        ablations=(),
        seeds=1,
        budget=2,
        train={
            "d_model": 16,
            "n_heads": 2,
            "n_layers": 1,
            "proj_hidden": 16,
            "proj_dim": 16,
            "max_len": 64,
            "multimodal.groups": "vitals=VITAL//,labs=LAB//",
            "multimodal.static": True,
        },
        kshots=(2,),
        draws=1,
        bootstrap=20,
        device="cpu",
        trials=1,
        perturbations=(("event_dropout", 0.3),),
    )
    messages: list[str] = []
    res = run_benchmark(data, root / "out", bench, say=messages.append)
    return {"res": res, "out": root / "out", "messages": messages}


def test_multimodal_benchmark_end_to_end(mm_bench):
    res, out = mm_bench["res"], mm_bench["out"]
    assert res["errors"] == []
    cfg = res["config"]
    assert cfg["modality"] == "multimodal"
    assert cfg["multimodal"]["groups"] == "vitals=VITAL//,labs=LAB//"
    # masked is dropped with its reason; the others are trained and probed on the fused space.
    assert [s["method"] for s in cfg["methods_skipped"]] == ["masked"]
    probed = {p["method"] for p in res["probes"] if p["k"] == "all"}
    assert {"dense", "vicreg", "supervised", "random", "count_features"} <= probed
    assert all(0.0 <= p["auroc"] <= 1.0 for p in res["probes"] if p["k"] == "all")
    # The cross-modal alignment table: every pair of the three modalities, per trained method.
    cross = [a for a in res["alignment"] if a["kind"] == "modalities"]
    assert {(a["method"], a["a"], a["b"]) for a in cross} == {
        (m, a, b)
        for m in ("dense", "vicreg", "supervised", "random")
        for a, b in (("vitals", "labs"), ("vitals", "static"), ("labs", "static"))
    }
    for a in cross:
        for key in ("subspace_distance", "chance", "subspace_distance_erank", "chance_erank"):
            assert 0.0 <= a[key] <= 1.0 + 1e-9, (key, a)
        assert -1.0 <= a["linear_cka_debiased"] <= 1.0 + 1e-9
        assert all(0.0 <= x <= 90.0 for x in a["principal_angles_deg"])
        assert a["floor"] == 0.0 and 1 <= a["k_erank"] <= a["k"] + 16
    # Robustness through the fused event encoder (a perturbation reaches every group).
    assert {r["method"] for r in res["robustness"]} >= {"dense", "random"}
    md = (out / "results.md").read_text()
    assert "## Cross-modal alignment" in md and "vitals vs labs" in md
    assert "Cross-modal alignment" in (out / "report.html").read_text()
    # Every number of the table has a subject-level CI (min(--bootstrap, 200) = 20 resamples)
    # containing it, and dense is compared with every other method on paired resamples.
    for a in cross:
        assert a["ci_resamples"] == 20
        for m in ("subspace_distance", "subspace_distance_erank", "linear_cka_debiased"):
            assert a[f"{m}_ci"][0] <= a[m] <= a[f"{m}_ci"][1], (m, a)
    paired = res["crossmodal_comparison"]
    assert {(p["method"], p["a"], p["b"]) for p in paired} == {
        (m, a, b)
        for m in ("vicreg", "supervised", "random")
        for a, b in (("vitals", "labs"), ("vitals", "static"), ("labs", "static"))
    }
    assert all(p["subspace_distance"]["difference_ci"] is not None for p in paired)
    assert "## Cross-modal alignment: dense minus each method" in md and "dense − vicreg" in md
    # Temporal windows hold fewer than 4k = 64 held-out subjects here: scored at a clipped k
    # (floor(n / 4)) with the clip stated, instead of an empty table.
    temporal = res["temporal"]
    assert temporal and {r["method"] for r in temporal} >= {"dense", "random"}
    for r in temporal:
        assert r["n"] < 64 and r["k"] == r["n"] // 4 < 16 and r["k_requested"] == 16
        assert r["chance"] == pytest.approx(math.sqrt(1 - r["k"] / (r["n"] - 1)))
    assert "Windows with fewer than 4k subjects are scored at k = floor(n / 4)" in md
    saved = json.loads((out / "results.json").read_text())
    assert len([a for a in saved["alignment"] if a["kind"] == "modalities"]) == len(cross)


def test_a_low_rank_modality_clips_every_k_to_its_rank_without_a_warning():
    """A static modality is constant within a stay: 12 distinct rows of 60 have rank <= 11."""
    import warnings

    rng = np.random.default_rng(5)
    za = rng.normal(size=(60, 16))
    zb = np.repeat(rng.normal(size=(12, 16)), 5, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        al = modality_alignment(za, zb, k=16)
    assert al["k"] == 11 and al["k_whole"] == 11 and al["k_erank"] <= 11
    assert al["chance_whole"] == pytest.approx(math.sqrt(1 - 11 / 59))
