"""One meaning per flag across the commands (parsing only: nothing runs)."""

from __future__ import annotations

import argparse

import pytest

from densefeat.benchmark.config import ABLATIONS
from densefeat.cli import benchmark, demo, main, train


def _parser(module) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"densefeat {module.__name__.rsplit('.', 1)[-1]}")
    module.add_arguments(parser)
    return parser


@pytest.mark.parametrize("module", [demo, benchmark])
def test_ablations_is_the_same_flag_on_demo_and_benchmark(module):
    p = _parser(module)
    parse = lambda *a: p.parse_args(["--out", "x", *a]).ablations  # noqa: E731
    assert parse("--ablations") == tuple(ABLATIONS)  # alone: every ablation
    assert parse("--ablations", "dense-no_spec,vicreg-no_inv") == ("dense-no_spec", "vicreg-no_inv")
    assert parse("--ablations", "") == ()  # '' means none
    # only the default differs: the demo is small, the benchmark complete
    assert parse() == (() if module is demo else tuple(ABLATIONS))


@pytest.mark.parametrize("module", [demo, benchmark])
def test_k_is_the_subspace_dimension(module):
    assert _parser(module).parse_args(["--out", "x", "--k", "8"]).k == 8


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--out", "r", "--method", "nope"], "invalid choice: 'nope'"),
        (["train", "--out", "r", "--modality", "audio"], "invalid choice: 'audio'"),
        (["benchmark", "--out", "r", "--modality", "audio"], "invalid choice"),
    ],
)
def test_closed_sets_are_argparse_choices(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "choose from" in err


def test_train_choices_are_the_registries():
    from densefeat.methods import METHODS
    from densefeat.train.config import MODALITIES

    actions = {a.dest: a for a in _parser(train)._actions}
    assert tuple(actions["method"].choices) == tuple(METHODS)
    assert tuple(actions["modality"].choices) == tuple(MODALITIES)


def test_empty_set_value_means_none():
    from densefeat.train.config import TrainConfig, parse_overrides

    overrides = parse_overrides(["notes.subject_col=", "note_subject_col="])
    assert overrides == {"notes.subject_col": None}  # not a column named ''
    cfg = TrainConfig.from_dict({**parse_overrides(["text.labels="]), "modality": "text"})
    assert cfg.to_dict()["text"]["labels"] == ""  # none named: the table's boolean columns
