"""Start-up (issue 14, item 3): ``densefeat [CMD] --help`` imports no heavy stack, and the
import-free lists the parsers offer (:mod:`densefeat.choices`) are the torch-side registries.

Each help is built in a fresh interpreter through the real entry point (``python -m
densefeat``), so a module already imported by another test cannot hide a heavy import.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import densefeat
from densefeat.cli import SUBCOMMANDS, build_parser

#: What ``--help`` must not import: torch and the NumPy-based stacks.
HEAVY = ("torch", "numpy", "scipy", "sklearn", "polars", "pyarrow", "pandas", "matplotlib")

_PROBE = (
    f"HEAVY = {HEAVY!r}\n"
    + """
import json, runpy, sys
code = None
sys.argv = ["densefeat", *json.loads(sys.argv[1])]
try:
    runpy.run_module("densefeat", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": sorted(m for m in HEAVY if m in sys.modules)}))
"""
)


def _help_in_fresh_process(argv: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(densefeat.__file__).parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps([*argv, "--help"])],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    # The help text comes first on stdout; the probe's verdict is the last line.
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "text": out.stdout}


def _sub_parser(command: str) -> argparse.ArgumentParser:
    """The parser of ``densefeat COMMAND`` with its arguments declared (as main() does)."""
    from importlib import import_module

    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    import_module(SUBCOMMANDS[command][0]).add_arguments(sub)
    return sub


def _nested(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _every_help_argv() -> list[list[str]]:
    argvs: list[list[str]] = [[]]
    for command in SUBCOMMANDS:
        argvs.append([command])
        argvs.extend([command, name] for name in _nested(_sub_parser(command)))
    return argvs


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


def test_every_help_is_listed() -> None:
    argvs = _every_help_argv()
    # Nested commands exist (convert's sources, densify fit/apply): the walk must reach them.
    assert ["densify", "fit"] in argvs and ["densify", "apply"] in argvs
    assert len(argvs) > len(SUBCOMMANDS) + 1


@pytest.mark.parametrize("argv", _every_help_argv(), ids=lambda a: " ".join(a) or "densefeat")
def test_help_imports_no_heavy_module(argv: list[str]) -> None:
    result = _help_in_fresh_process(argv)
    assert result["code"] == 0, result["text"]
    assert "usage: densefeat" in result["text"]
    assert result["heavy"] == [], f"densefeat {' '.join(argv)} --help imported {result['heavy']}"


def test_train_help_lists_the_registry_methods() -> None:
    from densefeat.methods import METHODS

    parser = _sub_parser("train")
    assert tuple(_option(parser, "--method").choices) == tuple(METHODS)
    # ... and the text a user reads names each of them.
    text = _help_in_fresh_process(["train"])["text"]
    assert "{" + ",".join(METHODS) + "}" in text


def test_benchmark_and_demo_methods_are_registry_methods() -> None:
    from densefeat.benchmark.config import ABLATIONS, BenchmarkConfig
    from densefeat.methods import METHODS

    for command in ("benchmark", "demo"):
        default = _option(_sub_parser(command), "--methods").default
        assert set(default) <= set(METHODS), command
    assert {method for method, _ in ABLATIONS.values()} <= set(METHODS)
    # The config accepts every registry method and refuses a name the registry lacks.
    assert BenchmarkConfig(methods=tuple(METHODS)).methods == tuple(METHODS)
    with pytest.raises(ValueError, match="unknown method"):
        BenchmarkConfig(methods=("dense", "not-a-method"))


def test_benchmark_text_defaults_match_the_text_source() -> None:
    from densefeat.benchmark.sources import text

    parser = _sub_parser("benchmark")
    assert _option(parser, "--min-positives").default == text.MIN_TASK_POSITIVES
    assert tuple(_option(parser, "--baselines").default) == text.TEXT_BASELINES


def test_densify_fit_choices_are_the_fit_methods() -> None:
    from densefeat.densify import fit

    fit_parser = _nested(_sub_parser("densify"))["fit"]
    assert tuple(_option(fit_parser, "--method").choices) == tuple(fit.METHODS)
    assert _option(fit_parser, "--ridge").default == fit.DEFAULT_RIDGE


def test_config_defaults_are_the_library_defaults() -> None:
    from densefeat.data.ehr import HistoryBuilder
    from densefeat.functional import objectives
    from densefeat.train import TrainConfig

    cfg = TrainConfig()
    builder_default = inspect.signature(HistoryBuilder).parameters["max_len"].default
    assert cfg.data.max_len == builder_default == 256
    assert {k: getattr(cfg.dense, k) for k in objectives.DEFAULT_WEIGHTS} == (
        objectives.DEFAULT_WEIGHTS
    )
    assert cfg.dense.consistency == objectives.DEFAULT_CONSISTENCY
    assert cfg.dense.shrinkage == objectives.DEFAULT_SHRINKAGE


@pytest.mark.parametrize("package", ["densefeat.train", "densefeat.densify"])
def test_lazy_packages_export_their_names(package: str) -> None:
    from importlib import import_module

    module = import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        owner = import_module(f"{package}.{module._EXPORTS[name]}")
        assert value is getattr(owner, name), name
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match="no_such_name"):
        module.no_such_name  # noqa: B018


def test_wait_policy_passive_only_on_a_busy_machine_and_never_over_the_user() -> None:
    from densefeat.cli import BUSY_LOAD, omp_wait_policy

    assert omp_wait_policy({}, BUSY_LOAD) == "PASSIVE"
    assert omp_wait_policy({}, 3.0) == "PASSIVE"
    assert omp_wait_policy({}, BUSY_LOAD - 0.01) is None
    assert omp_wait_policy({}, None) is None  # no load average on this platform
    assert omp_wait_policy({"OMP_WAIT_POLICY": "ACTIVE"}, 3.0) is None
    assert omp_wait_policy({"GOMP_SPINCOUNT": "1000"}, 3.0) is None


@pytest.mark.parametrize(("load", "expected"), [(5.0, "PASSIVE"), (0.0, None)])
def test_the_entry_point_sets_the_policy_before_torch_loads(load: float, expected: str | None):
    # Through the real entry point in a fresh interpreter with the load average pinned: the
    # variable is set in the process environment, and torch is not loaded yet (the OpenMP
    # runtime reads it once, when torch loads it).
    probe = (
        "import json, os, runpy, sys\n"
        f"os.getloadavg = lambda: ({load}, {load}, {load})\n"
        "sys.argv = ['densefeat', 'analyze', '--help']\n"
        "try:\n"
        "    runpy.run_module('densefeat', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps([os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    policy, torch_loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert policy == expected and torch_loaded is False
