"""Code-group modalities (``multimodal.groups``): parsing, views, no leakage, training."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest
import torch

from _grouped_cohort import grouped_cohort
from densefeat.data.ehr import HistoryBuilder
from densefeat.data.ehr.batch import N_RESERVED
from densefeat.data.ehr.groups import code_group_ids, group_view, parse_groups
from densefeat.data.meds import read_meds_dataset
from densefeat.methods import modality_pairs
from densefeat.train import TrainConfig, load_run, train
from densefeat.train.modalities.multimodal import embed_multimodal, prepare_multimodal_data

GROUPS = "vitals=VITAL//,labs=LAB//"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return str(grouped_cohort(tmp_path_factory.mktemp("groups"), n_subjects=60))


def _tiny(**changes) -> TrainConfig:
    base = {
        "modality": "multimodal",
        "multimodal.groups": GROUPS,
        "multimodal.static": True,
        "d_model": 16,
        "n_heads": 2,
        "n_layers": 1,
        "max_len": 32,
        "proj_hidden": 32,
        "proj_dim": 16,
        "dropout": 0.0,
        "min_code_subjects": 1,
        "window_days": 0.5,
        "progress": False,
        "monitor_size": 8,
        "monitor_every": 4,
        "log_every": 1,
        "checkpoint_every": 100,
        "lr": 3e-3,
        "warmup_steps": 0,
        "device": "cpu",
        "batch_size": 16,
    }
    return TrainConfig.from_dict({**base, **changes})


def test_parse_groups_and_errors():
    assert parse_groups("vitals=VITAL//, labs=LAB//|CHEM//") == {
        "vitals": ("VITAL//",),
        "labs": ("LAB//", "CHEM//"),
    }
    for bad in ("vitals", "=VITAL//", "a=", "static=X", "a=X,a=Y"):
        with pytest.raises(ValueError, match=r"multimodal\.groups"):
            parse_groups(bad)
    with pytest.raises(ValueError, match="at least two modalities"):
        _tiny(**{"multimodal.groups": "vitals=VITAL//", "multimodal.static": False})
    with pytest.raises(ValueError, match="matches no code"):
        code_group_ids(["VITAL//HR"], parse_groups("v=VITAL//,l=LAB//"), N_RESERVED)


def test_group_of_each_code_first_group_wins():
    ids = code_group_ids(
        ["VITAL//HR", "LAB//X", "GENDER//F"], {"a": ("VITAL",), "b": ("LAB", "VITAL")}, 2
    )
    assert ids.tolist() == [-1, -1, 0, 1, -1]


def test_group_view_holds_only_its_events_and_never_one_after_the_prediction_time(cohort):
    """A lab 1 s after the prediction time never enters the labs view (nor any other)."""
    ds = read_meds_dataset(cohort)
    builder = HistoryBuilder.fit(ds, max_len=64, min_subjects=1)
    store = builder.encode(ds)
    codes = builder.vocabulary.code_table()["code"].to_list()
    table = torch.from_numpy(code_group_ids(codes, parse_groups(GROUPS), N_RESERVED))
    ev = ds.events().filter(pl.col("code") == "LAB//LACT").collect().sort("subject_id", "time")
    first = ev.group_by("subject_id", maintain_order=True).first().head(20)
    sid = first["subject_id"].to_numpy()
    lab_us = first["time"].cast(pl.Datetime("us")).cast(pl.Int64).to_numpy()
    batch = store.gather(sid, lab_us - 1_000_000)  # 1 s before each subject's first lactate
    lact = builder.vocabulary.encode(["LAB//LACT"])[0]
    labs = group_view(batch, table, 1)
    vitals = group_view(batch, table, 0)
    assert not (labs.codes[labs.mask] == lact).any()  # the lactate 1 s later never enters
    assert not (vitals.codes[vitals.mask] == lact).any()
    assert (table[labs.codes[labs.mask]] == 1).all() and (
        table[vitals.codes[vitals.mask]] == 0
    ).all()
    assert (labs.time_before_prediction[labs.mask] >= 0).all()
    # At the lactate's own time it is the labs view's last event, and only there.
    at = group_view(store.gather(sid, lab_us), table, 1)
    assert (at.codes[:, -1] == lact).all()
    assert not (group_view(store.gather(sid, lab_us), table, 0).codes == lact).any()
    # A group's view keeps every one of its events among the gathered ones, in order.
    n_lab = ((table[batch.codes] == 1) & batch.mask).sum(1)
    assert torch.equal(labs.mask.sum(1), n_lab)


def test_modality_pairs_are_every_pair_of_the_same_rows():
    per = {m: torch.full((3, 2), float(i)) for i, m in enumerate(("a", "b", "c"))}
    z = modality_pairs(per)
    assert z.shape == (9, 2, 2)
    sides = [(float(z[i * 3, 0, 0]), float(z[i * 3, 1, 0])) for i in range(3)]
    assert sides == [(0.0, 1.0), (0.0, 2.0), (1.0, 2.0)]


@pytest.mark.parametrize("method", ["dense", "vicreg", "supervised"])
def test_grouped_run_trains_and_embeds_every_modality(cohort, tmp_path, method):
    labels = f"{cohort}/labels/sick.parquet" if method == "supervised" else None
    cfg = _tiny(method=method, max_steps=6)
    _, data = prepare_multimodal_data(cfg, cohort, labels)
    assert data.rows["notes"].list.len().max() == 0  # code-group runs read no notes
    run_dir = tmp_path / "run"
    train(cfg, cohort, run_dir, labels)
    losses = [json.loads(x)["loss"] for x in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert len(losses) == 6 and np.isfinite(losses).all()
    run = load_run(run_dir)
    assert run.net.encoder.modalities == ("vitals", "labs", "static")
    rows = pl.DataFrame(
        {
            "subject_id": [0, 1, 2, 3],
            "prediction_time": [dt.datetime(2021, 1, 1)] * 4,
        },
        schema={"subject_id": pl.Int64, "prediction_time": pl.Datetime("us")},
    )
    z = embed_multimodal(run.net.encoder, data.store, data.dataset, rows, run.cfg)
    for m in ("fused", "vitals", "labs", "static"):
        assert z[m].shape == (4, 16) and np.isfinite(z[m]).all()
    assert z["present/vitals"].dtype == bool and z["present/labs"].shape == (4,)


def test_masked_is_refused_under_groups(cohort):
    with pytest.raises(ValueError, match="next-event prediction"):
        prepare_multimodal_data(_tiny(method="masked"), cohort, None)
