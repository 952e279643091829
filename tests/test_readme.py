"""The README's demo results are rendered from the committed results file, never pasted.

``docs/demo-results.json`` (a demo's ``results.json``) and ``docs/demo-run.json`` (how it
ran) are rendered into the README's generated block by ``scripts/readme.py``; these tests
fail when the README and those files disagree, and check that the renderer survives the keys
a newer densefeat adds.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

from _results_fixture import make_results

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def readme():
    spec = importlib.util.spec_from_file_location("readme_script", ROOT / "scripts" / "readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_block_is_the_committed_demo_results(readme):
    results = json.loads((ROOT / "docs" / "demo-results.json").read_text())
    run = json.loads((ROOT / "docs" / "demo-run.json").read_text())
    assert results["kind"] == "densefeat.benchmark" and results["scale"] == "smoke"
    block = readme.current_block((ROOT / "README.md").read_text())
    assert block == readme.render_block(results, run), (
        "README.md's demo results differ from docs/demo-results.json: run python scripts/readme.py"
    )
    # the block shows the file's numbers: dense's AUROC and the comparison's CI, as rounded
    dense = next(r for r in results["table"] if r["method"] == "dense")
    assert "| dense |" in block and readme._num(dense["probe_auroc"], "auroc") in block
    lo, hi = results["comparison"]["difference_ci"]
    assert f"[{readme._signed(lo)}, {readme._signed(hi)}]" in block
    assert "Timing: wall time" in block and "load average" in block


def test_a_changed_number_makes_the_readme_stale(readme):
    results = make_results()
    block = readme.render_block(results)
    results["table"][0]["probe_auroc"] += 0.01
    assert readme.render_block(results) != block
    text = f"intro\n{block}\nafter\n"
    new = readme.replace_block(text, readme.render_block(results))
    assert new.startswith("intro\n") and new.endswith("\nafter\n")
    assert readme.current_block(new) == readme.render_block(results)


def test_render_survives_new_keys_and_missing_sections(readme):
    results = make_results()
    base = readme.render_block(results)
    newer = copy.deepcopy(results)
    for row in newer["table"]:
        row["some_future_metric"] = 1.5  # a column the README does not know: left out
    newer["future_section"] = [{"x": 1}]
    newer["comparison"]["future_field"] = "x"
    assert readme.render_block(newer) == base
    older = copy.deepcopy(results)
    for key in ("comparison", "reference", "temporal", "machine", "tasks_skipped"):
        older.pop(key)
    for row in older["table"]:
        row.pop("seed_alignment_cka")  # a column no row has: left out
    text = readme.render_block(older)
    assert "seed alignment" not in text and "Primary endpoints" not in text
    assert "| dense |" in text


def test_readme_markers_are_required(readme):
    with pytest.raises(ValueError, match="generated block"):
        readme.replace_block("no markers here", "x")


def test_primary_endpoints_and_untrained_comparison_are_rendered(readme):
    """AUROC under perturbation is a primary endpoint, the drop secondary, and dense against the
    untrained encoder is stated; each line carries the numbers of results.json."""
    results = json.loads((ROOT / "docs" / "demo-results.json").read_text())
    text = readme.render_block(results)
    primary, secondary = text.split("Secondary:")
    rob = results["comparison"]["robustness_auroc"]
    assert "probe AUROC under perturbation" in primary
    assert f"dense {rob['dense']:.3f}" in primary
    assert "AUROC drop under perturbation" in secondary
    unt = results["comparison"]["untrained"]
    assert f"dense − random = {unt['difference']:+.3f}" in secondary
    lo, hi = unt["difference_ci"]
    assert f"[{lo:+.3f}, {hi:+.3f}]" in secondary
    changed = json.loads(json.dumps(results))
    changed["comparison"]["untrained"]["difference"] += 0.1
    assert readme.render_block(changed) != text
