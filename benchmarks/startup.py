"""Start-up time of ``densefeat [CMD] --help``, each as a whole process (issue 14, item 3).

Every help (the top level, each command, and each nested command such as ``densify fit``) runs
``--repeat`` times as ``python -m densefeat ... --help`` in a fresh interpreter, interleaved
(round ``r`` runs every help once before round ``r + 1``) so a change in the machine's load
hits them alike. Prints the median, min and max wall seconds of each, whether it is under the
target (0.5 s), the heavy modules its parser imported (measured in one extra run), a bare
``python -c pass`` for the interpreter's own start-up, and the load average before and after.

Usage::

    PYTHONPATH=src python benchmarks/startup.py            # 7 rounds
    PYTHONPATH=src python benchmarks/startup.py --repeat 15 --only train,benchmark,demo
    python benchmarks/startup.py --src ../other-checkout/src     # the same table, other code
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 0.5
HEAVY = ("torch", "numpy", "scipy", "sklearn", "polars", "pyarrow", "pandas", "matplotlib")

_PROBE = (
    f"HEAVY = {HEAVY!r}\n"
    + """
import json, runpy, sys
sys.argv = ["densefeat", *json.loads(sys.argv[1])]
try:
    runpy.run_module("densefeat", run_name="__main__")
except SystemExit:
    pass
print(json.dumps(sorted(m for m in HEAVY if m in sys.modules)))
"""
)


def _env(src: str) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{path}" if path else src}


def _helps(src: str) -> list[list[str]]:
    """Every ``--help`` the CLI has: top level, commands, nested commands."""
    sys.path.insert(0, src)
    from importlib import import_module

    from densefeat.cli import SUBCOMMANDS, build_parser

    out: list[list[str]] = [[]]
    for command, (module, _) in SUBCOMMANDS.items():
        out.append([command])
        sub = build_parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
        import_module(module).add_arguments(sub)
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                out.extend([command, name] for name in action.choices)
    return out


def _time(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs per help (median of these)")
    parser.add_argument("--only", default="", help="comma-separated commands (default: all)")
    parser.add_argument(
        "--src",
        default=str(Path(__file__).resolve().parents[1] / "src"),
        help="the src/ directory to time (default: this checkout's; another checkout's src/ "
        "gives a before/after comparison)",
    )
    args = parser.parse_args()

    env = _env(args.src)
    helps = _helps(args.src)
    if args.only:
        keep = set(args.only.split(","))
        helps = [h for h in helps if h and h[0] in keep]
    cases = {"(python -c pass)": [sys.executable, "-c", "pass"]}
    for h in helps:
        cases[" ".join(["densefeat", *h, "--help"])] = [
            sys.executable,
            "-m",
            "densefeat",
            *h,
            "--help",
        ]

    load_before = os.getloadavg()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeat):
        for name, cmd in cases.items():
            times[name].append(_time(cmd, env))
    load_after = os.getloadavg()

    heavy = {}
    for h in helps:
        out = subprocess.run(
            [sys.executable, "-c", _PROBE, json.dumps([*h, "--help"])],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        heavy[" ".join(["densefeat", *h, "--help"])] = json.loads(out.stdout.splitlines()[-1])

    width = max(map(len, cases))
    print(f"{'command':<{width}}  median_s   min_s   max_s  <{TARGET_S}s  heavy imports")
    for name, ts in times.items():
        ok = "" if name.startswith("(") else ("yes" if statistics.median(ts) < TARGET_S else "NO")
        mods = ",".join(heavy.get(name, [])) or ("-" if name in heavy else "")
        print(
            f"{name:<{width}}  {statistics.median(ts):8.3f} {min(ts):7.3f} {max(ts):7.3f}"
            f"  {ok:>5}  {mods}"
        )
    worst = max((statistics.median(ts), n) for n, ts in times.items() if not n.startswith("("))
    print(
        f"\n{args.repeat} runs each, interleaved; slowest median {worst[0]:.3f} s ({worst[1]}); "
        f"load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/"
        f"{load_before[2]:.2f}, after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}; "
        f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}"
    )


if __name__ == "__main__":
    main()
