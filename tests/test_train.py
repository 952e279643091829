"""Training: methods registry, the loop, checkpoints, and the train/embed CLI."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from _helpers import ddp_train_worker, events_frame, free_port
from densefeat.cli import main
from densefeat.data.meds import write_meds_dataset
from densefeat.eval.analyze import analyze_files
from densefeat.methods import METHODS, get_method
from densefeat.train import TrainConfig, parse_overrides, train
from densefeat.train import checkpoint as ckpt_mod
from densefeat.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from densefeat.train.modalities.ehr import prepare_data

# Tiny models (d=16) collapse in a few steps by design of these tests; the warning is expected.
pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:.*representation collapse:RuntimeWarning"),
]

N_SUBJECTS = 48
N_TRAIN = 40


def _events(seed: int = 0) -> pl.DataFrame:
    """Subjects of two kinds (codes A* or B*), each with ~5 years of monthly-ish events."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(1, N_SUBJECTS + 1):
        kind = "A" if s % 2 else "B"
        rows.append((s, None, f"SEX/{'F' if s % 3 else 'M'}", None))
        rows.append((s, dt.datetime(1960 + s % 30, 1, 1), "MEDS_BIRTH", None))
        day = dt.datetime(2010, 1, 1) + dt.timedelta(days=int(rng.integers(0, 60)))
        for _ in range(int(rng.integers(30, 45))):
            day += dt.timedelta(days=int(rng.integers(20, 70)))
            code = (
                f"{kind}{int(rng.integers(0, 6))}"
                if rng.random() < 0.8
                else f"C{rng.integers(0, 4)}"
            )
            value = float(rng.normal()) if code.startswith("C0") else None
            rows.append((s, day, code, value))
    return events_frame(rows)


@pytest.fixture(scope="module")
def meds(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    ids = list(range(1, N_SUBJECTS + 1))
    splits = pl.DataFrame(
        {"subject_id": ids, "split": ["train" if i <= N_TRAIN else "held_out" for i in ids]}
    )
    path = write_meds_dataset(root / "meds", _events(), dataset_name="toy", splits=splits)
    # One label per training subject at the end of year 2, value = its kind.
    labels = pl.DataFrame(
        {
            "subject_id": ids,
            "prediction_time": [dt.datetime(2013, 1, 1)] * len(ids),
            "boolean_value": [bool(i % 2) for i in ids],
        },
        schema={
            "subject_id": pl.Int64,
            "prediction_time": pl.Datetime("us"),
            "boolean_value": pl.Boolean,
        },
    )
    labels.write_parquet(root / "labels.parquet")
    return path, root / "labels.parquet"


def _tiny(**changes) -> TrainConfig:
    base = dict(
        d_model=16,
        n_heads=2,
        n_layers=1,
        max_len=16,
        proj_hidden=32,
        proj_dim=16,
        dropout=0.0,
        min_code_subjects=1,
        progress=False,
        monitor_size=8,
        monitor_every=2,
        log_every=1,
        checkpoint_every=100,
        lr=3e-3,
        warmup_steps=0,
        device="cpu",
    )
    return TrainConfig.from_dict({**base, **changes})


def _rows(cfg: TrainConfig, meds) -> int:
    data, labels = meds
    _, d = prepare_data(cfg.replace(batch_size=2), data, labels)
    return d.rows.height


def _losses(run) -> list[float]:
    import json

    return [json.loads(line)["loss"] for line in (run / "stats.jsonl").read_text().splitlines()]


# ---- methods ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [m for m in METHODS if m != "random"])
def test_each_method_loss_goes_down(name, meds, tmp_path):
    data, labels = meds
    cfg = _tiny(method=name, max_steps=12)
    # The whole training set as one batch: every step sees the same rows, so the loss is
    # comparable from step to step.
    cfg = cfg.replace(batch_size=_rows(cfg, meds))
    train(cfg, data, tmp_path / "run", labels if name == "supervised" else None)
    losses = _losses(tmp_path / "run")
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 1e-3, losses


def test_random_writes_untrained_checkpoint(meds, tmp_path):
    data, _ = meds
    path = train(_tiny(method="random"), data, tmp_path / "run")
    weights, _, state = load_checkpoint(path)
    assert state["step"] == 0 and any(k.startswith("encoder.") for k in weights)


def test_registry_and_overrides():
    assert set(METHODS) == {
        "dense",
        "simclr",
        "vicreg",
        "barlow",
        "masked",
        "masked+dense",
        "supervised",
        "random",
    }
    assert METHODS["supervised"].needs_labels and not METHODS["random"].trains
    with pytest.raises(ValueError, match="nope"):
        get_method("nope")
    # Today's flat keys stay aliases of the section.key addresses, which they parse to.
    assert parse_overrides(["w_sub=0", "top_k=none", "amp=false", "lr=1e-2"]) == {
        "dense.w_sub": 0.0,
        "dense.top_k": None,
        "amp": False,
        "optim.lr": 0.01,
    }
    assert parse_overrides(["dense.w_sub=0", "optim.lr=1e-2"]) == {
        "dense.w_sub": 0.0,
        "optim.lr": 0.01,
    }
    with pytest.raises(ValueError, match="w_bogus"):
        parse_overrides(["w_bogus=1"])
    with pytest.raises(ValueError, match="batch_size"):
        parse_overrides(["batch_size=abc"])


def test_dense_ablation_changes_the_loss(meds, tmp_path):
    data, _ = meds
    cfg = _tiny(max_steps=1)
    cfg = cfg.replace(batch_size=_rows(cfg, meds))
    train(cfg, data, tmp_path / "full")
    train(cfg.replace(w_sub=0.0), data, tmp_path / "nosub")
    full, nosub = _losses(tmp_path / "full")[0], _losses(tmp_path / "nosub")[0]
    assert full > nosub  # the subspace term is positive and is gone


# ---- resume and checkpoints -------------------------------------------------------------------


class _Interrupt(Exception):
    pass


def test_resume_equals_uninterrupted(meds, tmp_path):
    data, _ = meds
    # Dropout on and several batches per epoch: resume must restore data order and RNG.
    cfg = _tiny(max_steps=6, batch_size=32, checkpoint_every=2, dropout=0.1, warmup_steps=2)
    full = train(cfg, data, tmp_path / "a")

    def stop(done: int) -> None:
        if done == 3:  # killed after step 3; the latest checkpoint is step 2
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train(cfg, data, tmp_path / "b", on_step=stop)
    assert latest_checkpoint(tmp_path / "b").name == "step-0000002"
    resumed = train(cfg, data, tmp_path / "b", resume=True)
    wa, wb = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    # A third, different run would differ: the comparison can fail.
    other = train(cfg.replace(seed=1), data, tmp_path / "c")
    wc = load_file(other / "model.safetensors")
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    assert [r for r in _losses(tmp_path / "a")] == _losses(tmp_path / "b")


def test_resume_restores_the_pooled_statistics_of_dense_momentum(meds, tmp_path, monkeypatch):
    """``dense.momentum`` keeps covariances across steps; a checkpoint carries them, so a run
    killed after step 3 and resumed from step 2 ends with the uninterrupted run's weights."""
    data, _ = meds
    cfg = _tiny(max_steps=5, batch_size=32, checkpoint_every=2, **{"dense.momentum": 0.9})

    def stop(done: int) -> None:
        if done == 3:
            raise _Interrupt

    def killed_and_resumed(out: Path) -> dict[str, torch.Tensor]:
        with pytest.raises(_Interrupt):
            train(cfg, data, out, on_step=stop)
        return load_file(train(cfg, data, out, resume=True) / "model.safetensors")

    full = load_file(train(cfg, data, tmp_path / "a") / "model.safetensors")
    resumed = killed_and_resumed(tmp_path / "b")
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    # Resumed without the saved statistics, the run ends elsewhere: the check above can fail.
    monkeypatch.setattr("densefeat.train.loop.load_loss_state", lambda fn, states: None)
    forgetful = killed_and_resumed(tmp_path / "c")
    assert any(not torch.equal(full[k], forgetful[k]) for k in full)


@pytest.mark.parametrize("where", ["state", "pointer"])
def test_checkpoint_write_is_atomic(tmp_path, monkeypatch, where):
    weights = {"w": torch.ones(3)}
    save_checkpoint(tmp_path, 1, weights, {"a": 1}, {"step": 1})

    def boom(*args, **kwargs):
        if where == "state":  # a partial file, then the process dies
            with open(args[1], "wb") as f:
                f.write(b"partial")
        raise KeyboardInterrupt

    target = "torch.save" if where == "state" else "_write_pointer"
    if where == "state":
        monkeypatch.setattr(ckpt_mod.torch, "save", boom)
    else:
        monkeypatch.setattr(ckpt_mod, target, boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, {"w": torch.zeros(3)}, {"a": 2}, {"step": 2})
    monkeypatch.undo()
    path = latest_checkpoint(tmp_path)
    w, _, state = load_checkpoint(path)
    assert path.name == "step-0000001" and state["step"] == 1 and torch.equal(w["w"], weights["w"])
    if where == "state":  # nothing half-written is left behind
        assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
            "latest",
            "step-0000001",
        ]


# ---- CLI --------------------------------------------------------------------------------------

_TINY_SET = [
    "--set",
    "d_model=16",
    "--set",
    "n_heads=2",
    "--set",
    "n_layers=1",
    "--set",
    "max_len=16",
    "--set",
    "proj_hidden=32",
    "--set",
    "proj_dim=16",
    "--set",
    "min_code_subjects=1",
    "--set",
    "batch_size=32",
    "--set",
    "monitor_size=8",
    "--set",
    "device=cpu",
]


def test_cli_train_embed_analyze(meds, tmp_path, capsys):
    data, labels = meds
    run = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(data),
        "--method",
        "dense",
        "--out",
        str(run),
        "--max-steps",
        "2",
        "--no-progress",
        *_TINY_SET,
    ]
    assert main(args) == 0
    out = tmp_path / "emb.parquet"
    assert main(["embed", "--run", str(run), "--data", str(data), "--out", str(out)]) == 0
    table = pl.read_parquet(out)
    assert table.height == N_SUBJECTS and table["subject_id"].n_unique() == N_SUBJECTS
    assert table.columns[:4] == ["subject_id", "prediction_time", "split", "embedding"]
    result = analyze_files(out)
    assert result["n"] == N_SUBJECTS and result["d"] == 16
    # With labels: one row per label row, at its prediction time.
    out2 = tmp_path / "emb_labels.parquet"
    assert (
        main(
            [
                "embed",
                "--run",
                str(run),
                "--data",
                str(data),
                "--labels",
                str(labels),
                "--out",
                str(out2),
            ]
        )
        == 0
    )
    t2 = pl.read_parquet(out2)
    assert t2.height == N_SUBJECTS and "boolean_value" in t2.columns
    # The labelled embedding at 2013 differs from the end-of-record one.
    assert not np.allclose(
        np.stack(t2["embedding"].to_list()), np.stack(table["embedding"].to_list())
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "nope"], "invalid choice: 'nope'"),
        (["--modality", "text"], "has no notes"),
        (["--modality", "multimodal"], "no notes"),
        (["--epochs", "2"], "--epochs and --max-steps are exclusive"),
        (["--modality", "audio"], "invalid choice: 'audio'"),
        (["--set", "w_bogus=1"], "w_bogus"),
        (["--method", "supervised"], "needs --labels"),
        (["--set", "batch_size=100000"], "too few training rows for batch_size 100000"),
    ],
)
def test_cli_train_bad_input(meds, tmp_path, capsys, extra, message):
    data, _ = meds
    args = [
        "train",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "r"),
        "--max-steps",
        "1",
        "--no-progress",
        *_TINY_SET,
        *extra,
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "densefeat train: error:" in err and message in err, err


def test_cli_embed_bad_run(meds, tmp_path, capsys):
    data, _ = meds
    (tmp_path / "notarun").mkdir()
    code = main(
        [
            "embed",
            "--run",
            str(tmp_path / "notarun"),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "e.parquet"),
        ]
    )
    assert code == 2 and "not a densefeat run directory" in capsys.readouterr().err


def test_resume_refuses_existing_run_without_flag(meds, tmp_path):
    data, _ = meds
    cfg = _tiny(max_steps=1, batch_size=32)
    train(cfg, data, tmp_path / "r")
    with pytest.raises(ValueError, match="already holds a run"):
        train(cfg, data, tmp_path / "r")


# ---- distributed ------------------------------------------------------------------------------


@pytest.mark.parametrize("pairs", ["windows", "future"])
def test_two_process_step_equals_single_process(pairs, meds, tmp_path):
    data, _ = meds
    # Adam with a large eps makes the update linear in the gradient, so equal weights mean
    # equal gradients. With eps 1e-8, Adam maps gradients that are float noise around an exact
    # zero (the projector's last bias under centred losses) to +-lr, whatever the noise.
    # "future" pairs (history at t vs the events of (t, t1] alone) draw nothing at random, so
    # they keep the DDP equality of "windows" (views do not: their draws are per rank).
    cfg = _tiny(max_steps=1, batch_size=32, monitor_every=0, adam_eps=1.0, lr=1.0)
    cfg = cfg.replace(**{"data.pairs": pairs})
    single = train(cfg, data, tmp_path / "single")
    torch.multiprocessing.spawn(
        ddp_train_worker,
        args=(2, free_port(), str(data), str(tmp_path / "ddp"), cfg.to_dict()),
        nprocs=2,
        join=True,
    )
    ws = load_file(single / "model.safetensors")
    wd = load_file(latest_checkpoint(tmp_path / "ddp") / "model.safetensors")
    for k in ws:
        # float32 sums in another order (per-rank partial moments): ~1e-6 of the weights.
        torch.testing.assert_close(wd[k], ws[k], rtol=1e-4, atol=2e-5, msg=k)
    assert _losses(tmp_path / "ddp")[0] == pytest.approx(_losses(tmp_path / "single")[0], rel=1e-5)
    # The comparison can fail: the initial weights differ from the trained ones.
    init = train(cfg.replace(method="random"), data, tmp_path / "init")
    wi = load_file(init / "model.safetensors")
    moved = max((wi[k] - ws[k]).abs().max().item() for k in wi)
    assert moved > 50 * 2e-5, moved


def test_masked_two_process_step_equals_single_process(meds, tmp_path):
    # The masked loss is the exact mean over the global batch's tokens (the count is
    # all-reduced), so the DDP step equals the single-process step although the two ranks hold
    # different numbers of tokens.
    data, _ = meds
    # max_len 64 keeps whole histories (30-45 events), so the ranks' token counts differ.
    cfg = _tiny(
        method="masked", max_steps=1, batch_size=32, monitor_every=0, adam_eps=1.0, lr=1.0
    ).replace(max_len=64)
    single = train(cfg, data, tmp_path / "single")
    torch.multiprocessing.spawn(
        ddp_train_worker,
        args=(2, free_port(), str(data), str(tmp_path / "ddp"), cfg.to_dict()),
        nprocs=2,
        join=True,
    )
    ws = load_file(single / "model.safetensors")
    wd = load_file(latest_checkpoint(tmp_path / "ddp") / "model.safetensors")
    for k in ws:
        torch.testing.assert_close(wd[k], ws[k], rtol=1e-4, atol=2e-5, msg=k)
    assert _losses(tmp_path / "ddp")[0] == pytest.approx(_losses(tmp_path / "single")[0], rel=1e-5)
    # The ranks' token counts differ, so a mean of per-rank means would not be this loss.
    _, d = prepare_data(cfg, data, None)
    from densefeat.train.loop import step_rows
    from densefeat.train.modalities.ehr import _inputs

    rows = step_rows(cfg, d.rows.height, 0)
    counts = []
    for half in (rows[:16], rows[16:]):
        batch = _inputs(get_method("masked"), d, half, torch.device("cpu"))["batch"]
        counts.append(int((batch.mask[:, 1:] & batch.mask[:, :-1]).sum()))
    assert counts[0] != counts[1], counts


# ---- epochs, monitoring geometry ----------------------------------------------------------------


def test_epochs_sets_the_number_of_steps(meds, tmp_path):
    data, _ = meds
    cfg = _tiny(epochs=2.0, batch_size=32, monitor_every=0)
    n_rows = _rows(cfg, meds)
    train(cfg, data, tmp_path / "run")
    run = json.loads((tmp_path / "run" / "config.json").read_text())
    assert run["train"]["max_steps"] == 2 * (n_rows // 32) and run["train"]["epochs"] == 2.0
    assert len(_losses(tmp_path / "run")) == 2 * (n_rows // 32)
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0.0)


def test_monitor_records_backbone_and_projector_geometry(meds, tmp_path):
    data, _ = meds
    train(_tiny(max_steps=2, batch_size=32), data, tmp_path / "run")
    records = [json.loads(x) for x in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    mon = records[-1]["monitor"]
    for key in (
        "effective_rank",
        "condition_number",
        "projector_effective_rank",
        "projector_condition_number",
    ):
        assert np.isfinite(mon[key]) and mon[key] >= 1.0, (key, mon)
    assert mon["projector_effective_rank"] != mon["effective_rank"]
    # A method without a projector (supervised: a linear classifier) reports the backbone only.
    _, labels = meds
    train(_tiny(method="supervised", max_steps=2, batch_size=32), data, tmp_path / "s", labels)
    last = [json.loads(x) for x in (tmp_path / "s" / "stats.jsonl").read_text().splitlines()][-1]
    assert "effective_rank" in last["monitor"] and "projector_effective_rank" not in last["monitor"]


def _trait_events(n: int, n_traits: int, seed: int = 0) -> pl.DataFrame:
    """Subjects of widely spread ages with independent binary traits that recur every year."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(1, n + 1):
        traits = np.flatnonzero(rng.random(n_traits) < 0.5)
        rows.append((s, dt.datetime(1920 + int(rng.integers(0, 90)), 1, 1), "MEDS_BIRTH"))
        for year in range(6):
            start = dt.datetime(2010, 1, 1) + dt.timedelta(days=365 * year)
            for k in traits:
                rows.append(
                    (s, start + dt.timedelta(days=10 * int(k) + int(rng.integers(0, 5))), f"T{k}")
                )
            rows.append((s, start + dt.timedelta(days=200), "VISIT"))
    return pl.DataFrame(
        rows,
        schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.Utf8},
        orient="row",
    )


def test_dense_raises_the_monitoring_effective_rank_over_the_untrained_encoder(tmp_path):
    """The fixture makes the untrained encoder's embedding low-rank and the signal high-rank.

    Why this must happen here. Every record ends with the same VISIT code at the same gap, and
    the residual branches start at std 0.02 / sqrt(2 L), so an untrained encoder's embedding is
    the last token's plus small attention averages over the history; what varies most across
    subjects is age (0-90 years, entering every token's time encoding and the readout's
    context), one scalar spread over the few directions of its Fourier features: its spectrum
    is dominated by a handful of directions. The only other between-subject variation, 12
    independent binary traits that recur every year, is exactly what the window pair (t, t+1)
    shares, so the subspace term must encode it, and the spectral term (zero only for an
    isotropic covariance) penalises the dominance of the age directions. Measured on this
    fixture (d=16, n=32 monitoring rows, seeds 0-2): untrained 8.7-9.0, dense after 30 steps
    11.0-11.6. With every subject of the same age the gap vanishes (5.4 vs 5.0-5.4): the
    deficit of the untrained encoder is the age dominance this fixture builds in.

    This holds for the ``"cca"`` form of the subspace term (1 - mean squared canonical
    correlation), asserted here. The default ``"shrunk"`` form (CKA of shrinkage-whitened
    features, g = 3) does not raise the rank on this fixture (measured, seeds 0-1: 8.3-8.4 vs
    the untrained 8.5; ``"cca"`` 10.2): it weights directions by their variance and is
    satisfied by the shared traits alone, where ``"cca"`` asks every one of the d directions
    to pair up. What it does instead is learn the pairing: its monitored value ends far below
    its row-shuffled control (0.18-0.22 vs 0.71-0.73; ``"cca"`` 0.37-0.40 vs 0.59), asserted
    below and in tests/test_consistency.py.
    """
    n = 96
    ids = list(range(1, n + 1))
    splits = pl.DataFrame(
        {"subject_id": ids, "split": ["train" if i <= 64 else "held_out" for i in ids]}
    )
    data = write_meds_dataset(
        tmp_path / "meds", _trait_events(n, 12), dataset_name="traits", splits=splits
    )
    cfg = _tiny(max_len=32, monitor_size=32, batch_size=64, max_steps=30, monitor_every=30)
    train(cfg.replace(method="random"), data, tmp_path / "random")
    cca = TrainConfig.from_dict({**cfg.to_dict(), "dense": {"consistency": "cca"}})
    train(cca, data, tmp_path / "dense")
    train(cfg, data, tmp_path / "shrunk")

    def last_monitor(run):
        recs = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
        return [r["monitor"] for r in recs if "monitor" in r][-1]

    untrained = last_monitor(tmp_path / "random")["effective_rank"]
    dense = last_monitor(tmp_path / "dense")["effective_rank"]
    assert dense > untrained + 1.0, (untrained, dense)
    shrunk = last_monitor(tmp_path / "shrunk")
    assert shrunk["subspace_consistency"] < shrunk["subspace_consistency_shuffled"] - 0.3, shrunk


def test_config_sections_and_flat_aliases_address_the_same_settings(tmp_path):
    nested = TrainConfig.from_dict({"data": {"max_len": 16}, "dense": {"w_sub": 0.0}})
    dotted = TrainConfig.from_dict({"data.max_len": 16, "dense.w_sub": 0.0})
    flat = TrainConfig.from_dict({"max_len": 16, "w_sub": 0.0})
    assert nested == dotted == flat
    assert flat.data.max_len == 16 and flat.dense.w_sub == 0.0
    # Every flat key of densefeat 0.1 is an alias, and the saved form round-trips.
    from densefeat.train.config import FLAT_ALIASES

    defaults = TrainConfig().flat()
    for old, new in FLAT_ALIASES.items():
        assert new in defaults, (old, new)
    assert TrainConfig.from_dict(flat.to_dict()) == flat
    assert (
        flat.replace(lr=0.5).optim.lr == 0.5 and flat.replace(**{"optim.lr": 0.5}).optim.lr == 0.5
    )
    # A file may use any form; --set wins over it.
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"max_len": 8, "optim": {"lr": 0.01}}))
    cfg = TrainConfig.from_file(path, **{"data.max_len": 32})
    assert cfg.data.max_len == 32 and cfg.optim.lr == 0.01
    with pytest.raises(ValueError, match=r"dense\.w_bogus"):
        TrainConfig.from_dict({"dense": {"w_bogus": 1}})
    with pytest.raises(ValueError, match="'bogus'"):
        TrainConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match=r"data\.max_len"):
        TrainConfig.from_dict({"max_len": 0})
    # An empty --set value of an optional setting means none.
    assert parse_overrides(["notes.subject_col="]) == {"notes.subject_col": None}
