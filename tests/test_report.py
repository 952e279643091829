"""The benchmark report: results.md and the self-contained report.html (densefeat.report)."""

from __future__ import annotations

import math
import os
import re
import shutil
import statistics
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from _results_fixture import (
    ABLATIONS,
    KSHOT,
    KSHOT_SKIPPED,
    METHODS,
    NULL_REASON,
    POSITIVES,
    SKIPPED_TASK,
    TASKS,
    WINDOWS,
    make_results,
)

if not os.environ.get("CI"):  # CI installs the eval extra: a missing matplotlib fails there
    pytest.importorskip("matplotlib", reason="the report's plots need the eval extra (matplotlib)")

from densefeat.report import build_report, render, to_markdown
from densefeat.report.format import num, signed
from densefeat.report.prose import endpoint_sentence

ROWS = [*METHODS, *ABLATIONS]
NAN = re.compile(r"\b(nan|infinity)\b", re.IGNORECASE)
SCREENSHOT = Path("/tmp/densefeat-report.png")


# --------------------------------------------------------------------------- helpers
class _Tables(HTMLParser):
    """Cell texts of every <table id=...>: {id: {"thead"|"tbody"|"tfoot": [[cell, ...], ...]}}."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict[str, list[list[str]]]] = {}
        self._table: str | None = None
        self._part = ""
        self._cell: list[str] | None = None
        self._sup = 0
        self.titles: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id") or f"table{len(self.tables)}"
            self.tables[self._table] = {"thead": [], "tbody": [], "tfoot": []}
        elif tag in ("thead", "tbody", "tfoot"):
            self._part = tag
        elif tag == "tr" and self._table:
            self.tables[self._table][self._part].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []
        elif tag == "sup":
            self._sup += 1
        if a.get("title"):
            self.titles.append(a["title"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][self._part][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "sup":
            self._sup -= 1

    def handle_data(self, data: str) -> None:
        if self._cell is not None and not self._sup:
            self._cell.append(data)


def _html_tables(text: str) -> _Tables:
    parser = _Tables()
    parser.feed(text)
    return parser


def _md_table(text: str, title: str) -> list[list[str]]:
    """Rows (header first, separator dropped) of the Markdown table under ``## title``."""
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows.append([re.sub(r"^\*\*(.*)\*\*$|^_(.*)_$", r"\1\2", c) for c in cells])
    return rows


def _row(rows: list[list[str]], first: str) -> list[str]:
    return next(r for r in rows if r[0] == first)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    results = make_results()
    # hand-picked values with known rounding (the fixture's own numbers are incidental)
    dense = next(r for r in results["table"] if r["method"] == "dense")
    dense.update(
        effective_rank=15.8249,
        effective_rank_sd=0.1349,
        condition_number=14.66,
        condition_number_k=2.0,
        temporal_subspace_distance=0.17449,
        probe_auroc=0.71249,
        probe_auroc_sd=0.00351,
        robustness_drop=0.0314,
        seed_alignment_cka=0.8886,
    )
    next(r for r in results["table"] if r["method"] == "vicreg")["condition_number"] = 1234.7
    out = tmp_path_factory.mktemp("report")
    paths = render(results, out)
    return {
        "results": results,
        "out": out,
        "paths": paths,
        "md": paths["markdown"].read_text(encoding="utf-8"),
        "html": paths["html"].read_text(encoding="utf-8"),
    }


# --------------------------------------------------------------------------- files
def test_render_writes_both_files_and_nothing_else(rendered: dict[str, Any]) -> None:
    out: Path = rendered["out"]
    assert rendered["paths"] == {"markdown": out / "results.md", "html": out / "report.html"}
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "results.md"]
    assert len(rendered["html"].encode()) < 5 * 2**20
    mask = os.umask(0)
    os.umask(mask)
    for path in rendered["paths"].values():  # not mkstemp's 0600
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_html_is_self_contained(rendered: dict[str, Any]) -> None:
    page = rendered["html"]
    assert "<script" not in page and "<link" not in page and "@import" not in page
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(r.startswith(("#", "data:")) for r in refs), refs
    assert not re.search(r"url\((?!#)", page)  # CSS/SVG url() only to in-page ids
    assert not re.search(r"<\?xml|<!DOCTYPE svg", page)


def test_svg_ids_are_unique_across_figures(rendered: dict[str, Any]) -> None:
    ids = re.findall(r'\bid="([^"]+)"', rendered["html"])
    assert len(ids) == len(set(ids))
    for target in re.findall(r'href="#([^"]+)"|url\(#([^)]+)\)', rendered["html"]):
        assert (target[0] or target[1]) in ids


def test_no_nan_in_either_file(rendered: dict[str, Any]) -> None:
    assert not NAN.search(rendered["md"])
    assert not NAN.search(rendered["html"])


def test_stray_non_finite_values_print_as_dash(tmp_path: Path) -> None:
    results = make_results()
    results["table"][1]["temporal_subspace_distance"] = float("nan")
    results["table"][2]["effective_rank_sd"] = float("nan")
    results["probes"][0]["auroc"] = float("nan")
    results["geometry"][0]["eigenvalues"][3] = float("nan")
    results["robustness"][0]["auroc_drop"] = float("inf")
    paths = render(results, tmp_path)
    md = paths["markdown"].read_text(encoding="utf-8")
    for text in (md, paths["html"].read_text(encoding="utf-8")):
        assert not NAN.search(text)
        assert not re.search(r"\binf\b", text)
    simclr = _row(_md_table(md, "Comparison of methods"), "simclr")
    assert simclr[6].startswith("—[^comparison-")


def test_failed_render_keeps_previous_files(tmp_path: Path) -> None:
    paths = render(make_results(), tmp_path)
    before = {k: p.read_bytes() for k, p in paths.items()}
    broken = make_results()
    del broken["comparison"]["difference"]
    with pytest.raises(ValueError):
        render(broken, tmp_path)
    assert {k: p.read_bytes() for k, p in paths.items()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "results.md"]


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "path",
    [
        "scale",
        "dataset.name",
        "config.methods",
        "config.seeds",
        "comparison",
        "comparison.difference_ci",
        "comparison.dense_wins",
        "table",
        "table[3].probe_auroc",
        "geometry[2].output",
        "reference[1].eigenvalues",
        "probes[0].auroc",
    ],
)
def test_missing_key_raises_value_error_naming_it(path: str, tmp_path: Path) -> None:
    results = make_results()
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    node: Any = results
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    del node[parts[-1]]
    with pytest.raises(ValueError, match=re.escape(f"'{path}'")):
        render(results, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_table_must_match_config_rows() -> None:
    results = make_results()
    results["table"] = [r for r in results["table"] if r["method"] != "vicreg"]
    with pytest.raises(ValueError, match="vicreg"):
        build_report(results)
    results = make_results()
    results["config"]["ablations"] = ["dense-no_spec"]
    with pytest.raises(ValueError, match="dense-no_sub"):
        build_report(results)


def test_wrong_kind_or_version_is_refused() -> None:
    for key, value in (("kind", "densefeat.demo"), ("version", 2)):
        results = make_results()
        results[key] = value
        with pytest.raises(ValueError, match=key):
            build_report(results)


# --------------------------------------------------------------------------- Markdown
def test_markdown_header_states_scale_and_provenance(rendered: dict[str, Any]) -> None:
    md = rendered["md"]
    assert md.startswith("# densefeat benchmark report (smoke scale)\n")
    assert "these are not benchmark-grade numbers" in md
    for text in (
        "eunomia-gibleed, 2,694 subjects",
        "0, 1 (2 seeds); a benchmark needs at least 3",
        "200 optimizer steps × batch 64 = 12,800 samples",
        "torch 2.13.0",
        "2 CPUs, device cpu",
    ):
        assert text in md


def test_markdown_comparison_table_rows(rendered: dict[str, Any]) -> None:
    rows = _md_table(rendered["md"], "Comparison of methods")
    header, body = rows[0], rows[1:]
    assert header[0] == "method" and "effective rank" in header and "probe AUROC" in header
    assert [r[0] for r in body] == [*ROWS, "isotropic Gaussian (n=60, d=16)"]
    assert all(len(r) == len(header) for r in body)
    ref = body[-1]
    fixture_ref = rendered["results"]["reference"][0]
    assert ref[header.index("effective rank")] == f"{fixture_ref['effective_rank']:.1f}"
    assert ref[header.index("condition number")] == f"{fixture_ref['condition_number']:#.3g}"
    assert ref[header.index("temporal subspace distance")] == (
        f"{math.sqrt(1 - 4 / 60):.3f} (chance)"
    )


def test_hand_picked_values_are_rounded_the_same_in_both_files(rendered: dict[str, Any]) -> None:
    expected = {
        "effective rank": "15.8 ± 0.1",
        "condition number": "14.7",
        "cond. number @k": "2.00",
        "temporal subspace distance": "0.174",
        "probe AUROC": "0.712 ± 0.004",
        "robustness drop": "0.031",
        "seed alignment (CKA)": "0.889",
    }
    md_rows = _md_table(rendered["md"], "Comparison of methods")
    html = _html_tables(rendered["html"]).tables["comparison"]
    html_header = html["thead"][0]
    assert html_header == md_rows[0]
    for rows in (md_rows[1:], html["tbody"]):
        dense, vicreg = _row(rows, "dense"), _row(rows, "vicreg")
        for column, text in expected.items():
            assert dense[md_rows[0].index(column)] == text, column
        assert vicreg[md_rows[0].index("condition number")] == "1,235"
    # the per-task probe table: mean over seeds, CI bounds averaged over seeds
    probes = _md_table(rendered["md"], "Linear probes per task: AUROC")
    assert _row(probes, "dense")[2] == "0.703 [0.662, 0.741]"
    assert "count_features" in [r[0] for r in probes]


def test_null_condition_number_shows_dash_and_reason(rendered: dict[str, Any]) -> None:
    rows = _md_table(rendered["md"], "Comparison of methods")
    cell = _row(rows, "random")[rows[0].index("condition number")]
    label = re.fullmatch(r"—\[\^(comparison-\d+)\]", cell)
    assert label, cell
    assert re.search(rf"^\[\^{label.group(1)}\]: .*{re.escape(NULL_REASON)}", rendered["md"], re.M)
    assert any(NULL_REASON in t for t in _html_tables(rendered["html"]).titles)


def test_kshot_robustness_and_temporal_tables(rendered: dict[str, Any]) -> None:
    md = rendered["md"]
    kshot = _md_table(md, "k-shot linear probes: AUROC")
    assert kshot[0] == ["method", *(f"k = {k}" for k in KSHOT)]  # every k, k = 128 included
    assert "supervised" not in [r[0] for r in kshot]  # the fixture has no k-shot supervised rows
    assert re.fullmatch(r"0\.\d{3} ± 0\.\d{3}", _row(kshot, "dense")[1])
    rob = _md_table(md, "Robustness: AUROC drop under perturbation")
    assert rob[0][1:] == ["event_dropout 10%", "event_dropout 30%", "event_dropout 50%",
                          "time_jitter ±1 d"]  # fmt: skip
    assert [r[0] for r in rob[1:]] == METHODS
    temporal = _md_table(md, "Temporal stability")
    chance = _row(temporal, "chance √(1 − k/(n − 1))")
    assert chance[temporal[0].index("median distance")] == f"{math.sqrt(1 - 4 / 60):.3f}"


# --------------------------------------------------------------------------- endpoint
def _endpoints(results: dict[str, Any]) -> str:
    return "\n".join(build_report(results).endpoints)


def test_losing_sentence_is_stated_as_a_loss() -> None:
    text = _endpoints(make_results())
    assert (
        "dense does not beat the best baseline (vicreg) on probe AUROC (macro over 2 tasks): "
        "difference -0.012, 95% CI [-0.031, 0.006]"
    ) in text
    assert "dense beats the best baseline (vicreg) on probe AUROC" not in text


def test_sentence_flips_when_the_comparison_flips(tmp_path: Path) -> None:
    results = make_results(dense_wins=True)
    paths = render(results, tmp_path)
    for text in (p.read_text(encoding="utf-8") for p in paths.values()):
        assert "dense beats the best baseline (vicreg) on probe AUROC" in text
        assert "95% CI [0.004, 0.021]" in text
        assert "dense does not beat the best baseline (vicreg) on probe AUROC" not in text


def test_higher_point_estimate_with_ci_over_zero_is_not_a_win() -> None:
    results = make_results()
    results["comparison"].update(difference=0.004, difference_ci=[-0.003, 0.011], dense_wins=True)
    text = _endpoints(results)
    assert "dense does not significantly beat the best baseline (vicreg)" in text
    assert "includes 0" in text
    assert "dense beats" not in text.split("\n")[0]


def test_significant_loss_says_the_baseline_is_better() -> None:
    results = make_results()
    results["comparison"].update(difference=-0.03, difference_ci=[-0.05, -0.01])
    assert "the CI excludes 0: vicreg is better" in _endpoints(results)


def test_win_flag_contradicting_the_difference_is_an_error() -> None:
    results = make_results()
    results["comparison"]["dense_wins"] = True  # but difference is -0.012
    with pytest.raises(ValueError, match="dense_wins"):
        build_report(results)


def test_robustness_endpoint_lower_is_better() -> None:
    cmp = make_results()["comparison"]["robustness"]
    assert cmp["difference"] < 0 and cmp["dense_wins"]
    assert endpoint_sentence(cmp, "AUROC drop", higher_is_better=False).startswith(
        "dense beats the best baseline (vicreg) on AUROC drop"
    )
    cmp.update(difference=0.015, difference_ci=[0.004, 0.025], dense_wins=False)
    text = endpoint_sentence(cmp, "AUROC drop", higher_is_better=False)
    assert text.startswith("dense does not beat") and "vicreg is better" in text


# --------------------------------------------------------------------------- plots
def test_figures_have_captions_and_consistent_colours(rendered: dict[str, Any]) -> None:
    page = rendered["html"]
    figures = re.findall(r"<figure.*?</figure>", page, re.S)
    assert len(figures) == 5
    for fig in figures:
        assert "<svg" in fig and "<figcaption>" in fig
    colours = build_report(rendered["results"]).colours
    assert colours["dense"] == "#d62728"
    assert len({colours[m] for m in ROWS}) == len(ROWS)
    eigen = figures[0]
    for method in METHODS:  # every method's line has its table swatch colour
        assert f"stroke: {colours[method]}" in eigen, method
    assert f"background:{colours['vicreg']}" in page
    assert "isotropic Gaussian" in eigen  # the reference line's legend entry (as paths: caption)
    assert "dashed black line is an isotropic Gaussian matrix" in eigen
    training = next(f for f in figures if "Effective rank during training" in f)
    assert "rows shuffled" in training and "subspace-consistency term" in training


def test_empty_sections_are_skipped_and_said_so(tmp_path: Path) -> None:
    results = make_results()
    for section in ("robustness", "temporal", "training_curves", "alignment"):
        results[section] = []
    results["probes"] = [p for p in results["probes"] if p["k"] == "all"]
    del results["comparison"]["robustness"]
    paths = render(results, tmp_path)
    page = paths["html"].read_text(encoding="utf-8")
    md = paths["markdown"].read_text(encoding="utf-8")
    assert len(re.findall(r"<figure", page)) == 1  # only the eigenspectra remain
    for title in (
        "Robustness curves",
        "Temporal subspace distance",
        "Effective rank during training",
        "k-shot linear probes",
    ):
        assert f"{title}: not plotted" in page
    assert "_Not available: results.json has no robustness records._" in md
    assert "No robustness comparison in results.json" in md
    assert not NAN.search(page) and not NAN.search(md)


def test_markdown_does_not_need_plots() -> None:
    md = to_markdown(build_report(make_results()))
    assert "report.html" in md and "<svg" not in md


# --------------------------------------------------------------------------- browser
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless system Chromium through playwright (skipped without it, except under CI)."""
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright (python) is not installed: pip install 'densefeat[dev]'"
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if reason is None and executable is None:
        reason = "no system Chromium on PATH (Debian/Ubuntu: apt-get install chromium)"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the report's browser test: {reason}")
        pytest.skip(reason)
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield instance
        finally:
            instance.close()


#: In the page: tick labels of each figure that overlap (text boxes, per SVG) and tables wider
#: than the page's content column (or scrolling inside their wrapper).
_LAYOUT_JS = """() => {
  const overlaps = [];
  for (const svg of document.querySelectorAll("svg.plot")) {
    const boxes = [];
    for (const tick of svg.querySelectorAll('g[id*="tick_"]')) {
      const label = tick.querySelector('g[id*="-text_"]');
      const r = label && label.getBoundingClientRect();
      if (r && r.width > 0 && r.height > 0) boxes.push([tick.id, r]);
    }
    for (let i = 0; i < boxes.length; i++)
      for (let j = i + 1; j < boxes.length; j++) {
        const a = boxes[i][1], b = boxes[j][1];
        const dx = Math.min(a.right, b.right) - Math.max(a.left, b.left);
        const dy = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
        if (dx > 0.5 && dy > 0.5) overlaps.push([boxes[i][0], boxes[j][0]]);
      }
  }
  const main = document.querySelector("main");
  const cs = getComputedStyle(main);
  const page = main.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
  const wide = [...document.querySelectorAll("table")]
    .map(t => [t.id, t.getBoundingClientRect().width, t.parentElement.scrollWidth,
               t.parentElement.clientWidth])
    .filter(([id, w, sw, cw]) => w > page + 1 || sw > cw + 1);
  const ticks = document.querySelectorAll('svg.plot g[id*="tick_"]').length;
  return {overlaps, wide, ticks, tables: document.querySelectorAll("table").length};
}"""


def _open(browser: Any, path: Path) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    return page


def _many_windows(results: dict[str, Any]) -> dict[str, Any]:
    """A demo-like temporal section: 51 yearly windows with calendar labels, 44-48 left out."""
    template = {(r["method"], r["seed"]): r for r in results["temporal"]}
    results["temporal"] = [
        {
            **rec,
            "window": w,
            "label": f"{2000 + w}-01-01 -> {2001 + w}-01-01",
            "subspace_distance": rec["subspace_distance"] + 0.05 * math.sin(w),
        }
        for rec in template.values()
        for w in range(1, 52)
        if not 44 <= w <= 48
    ]
    return results


def test_report_page_in_headless_chromium(rendered: dict[str, Any], browser: Any) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    external: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: external.append(r.url) if not r.url.startswith("file:") else None)
    page.goto(rendered["paths"]["html"].resolve().as_uri())
    page.wait_for_load_state("load")
    assert errors == []
    assert external == []
    figures = page.query_selector_all("figure")
    assert len(figures) == 5
    for fig in figures:
        graphics = fig.query_selector_all("svg, img")
        assert graphics
        for g in graphics:
            box = g.bounding_box()
            assert box is not None and box["width"] > 100 and box["height"] > 100, box
    assert len(page.query_selector_all("#comparison tbody tr")) == len(ROWS)
    assert len(page.query_selector_all("#comparison tfoot tr")) == 1
    layout = page.evaluate(_LAYOUT_JS)
    assert layout["ticks"] > 50 and layout["tables"] >= 10
    assert layout["overlaps"] == [], "figure tick labels overlap"
    assert layout["wide"] == [], "tables wider than the page at 1,400 px"
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000
    page.close()


def test_demo_sized_report_fits_the_page(browser: Any, tmp_path: Path) -> None:
    """Dozens of windows, every k to 128, all methods: still no overlap and no wide table."""
    results = _many_windows(make_results())
    extra = [f"method_{i}" for i in range(5)]  # 10 methods + 2 ablations: the window table splits
    results["config"]["methods"] += extra
    for name in extra:
        results["table"].append({**results["table"][1], "method": name})
        results["temporal"] += [
            {**r, "method": name} for r in results["temporal"] if r["method"] == "simclr"
        ]
    paths = render(results, tmp_path)
    md = paths["markdown"].read_text(encoding="utf-8")
    assert "## Temporal stability by window (columns 1–" in md  # split, not 13 columns wide
    page = _open(browser, paths["html"])
    layout = page.evaluate(_LAYOUT_JS)
    page.close()
    assert layout["overlaps"] == [], "figure tick labels overlap"
    assert layout["wide"] == [], "tables wider than the page at 1,400 px"
    for line in md.splitlines():
        if line.startswith("|---"):
            assert line.count("|") - 1 <= 12, line  # at most 12 columns per table


def test_full_scale_header_does_not_carry_the_smoke_warning() -> None:
    results = make_results()
    results["scale"] = "full"
    md = to_markdown(build_report(results))
    assert md.startswith("# densefeat benchmark report (full scale)\n")
    assert "not benchmark-grade" not in md
    assert "Only 2 seed(s): fewer than the 3 a benchmark needs." in md
    results["config"]["seeds"] = [0, 1, 2]
    assert "fewer than the 3" not in to_markdown(build_report(results))


def test_absent_comparison_is_said_not_invented() -> None:
    results = make_results()
    results["comparison"] = {"endpoint": "probe_auroc_macro", "n_bootstrap": 1000,
                             "robustness": None}  # fmt: skip
    text = _endpoints(results)
    assert "No primary-endpoint comparison in results.json" in text
    assert "No robustness comparison in results.json" in text
    results["comparison"] = None
    assert "No primary-endpoint comparison in results.json" in _endpoints(results)
    results["comparison"] = {"dense": 0.7, "difference": 0.01}  # partial: an error, named
    with pytest.raises(ValueError, match=re.escape("'comparison.best_baseline'")):
        build_report(results)


def test_comparison_without_ci_claims_nothing() -> None:
    results = make_results(dense_wins=True)
    results["comparison"]["difference_ci"] = None
    first = _endpoints(results).split("\n")[0]
    assert "no bootstrap CI in results.json" in first
    assert "by the point estimate only" in first and "beats" not in first


def test_lower_is_better_field_sets_the_direction() -> None:
    cmp = make_results()["comparison"]["robustness"]  # dense drops less than vicreg
    results = make_results()
    results["comparison"]["robustness"] = {**cmp, "lower_is_better": True}
    assert "dense beats the best baseline (vicreg) on AUROC drop" in _endpoints(results)
    results["comparison"]["robustness"] = {**cmp, "lower_is_better": False, "dense_wins": False}
    assert "dense does not beat the best baseline (vicreg) on AUROC drop" in _endpoints(results)


def test_probe_only_method_row_has_reasons_for_missing_geometry() -> None:
    results = make_results()
    results["config"]["methods"].append("count_features")
    results["table"].append(
        {"method": "count_features", "n_seeds": 1, "effective_rank": None,
         "effective_rank_sd": None, "condition_number": None, "condition_number_k": None,
         "temporal_subspace_distance": None, "probe_auroc": 0.661, "probe_auroc_sd": None,
         "robustness_drop": None, "seed_alignment_cka": None}
    )  # fmt: skip
    md = to_markdown(build_report(results))
    rows = _md_table(md, "Comparison of methods")
    row = _row(rows, "count_features")
    assert row[rows[0].index("probe AUROC")] == "0.661"
    assert all(c.startswith("—[^comparison-") for c in row[3:7]), row
    assert "no embedding geometry" in md
    seeds = re.fullmatch(r"—\[\^(comparison-\d+)\]", row[rows[0].index("seeds")])
    assert seeds, row  # not "1": no encoder was trained, so there is no seed count
    assert re.search(rf"^\[\^{seeds.group(1)}\]: probe-only baseline", md, re.M)
    assert [r[0] for r in rows[1:-1]] == [*METHODS, "count_features", *ABLATIONS]


# --------------------------------------------------------------------------- AUPRC, skips, zero
def _mean_ci(recs: list[dict[str, Any]], key: str) -> str:
    mean = statistics.fmean(r[key] for r in recs)
    if not all(r[f"{key}_ci"] for r in recs):  # count_features here: no bootstrap CI
        return f"{mean:.3f}"
    lo = statistics.fmean(r[f"{key}_ci"][0] for r in recs)
    hi = statistics.fmean(r[f"{key}_ci"][1] for r in recs)
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


def test_auprc_in_the_tables_is_the_value_in_results_json(rendered: dict[str, Any]) -> None:
    results = rendered["results"]
    probes = [p for p in results["probes"] if p["k"] == "all"]
    md_rows = _md_table(rendered["md"], "Linear probes per task: AUPRC")
    html = _html_tables(rendered["html"]).tables["probes-auprc"]
    assert html["thead"][0] == md_rows[0] == ["method", "embedding", *TASKS, "macro"]
    for rows in (md_rows[1:], html["tbody"] + html["tfoot"]):
        checked = 0
        for row in rows:
            recs = [p for p in probes if (p["method"], p["embedding"]) == (row[0], row[1])]
            if not recs:
                continue
            for j, task in enumerate(TASKS, start=2):
                assert row[j] == _mean_ci([p for p in recs if p["task"] == task], "auprc")
                checked += 1
        assert checked == 2 * len({(p["method"], p["embedding"]) for p in probes})
        counts = _row(rows, "held-out positives / rows")
        assert counts[2:4] == [f"{POSITIVES[t]} / 60" for t in TASKS]
        chance = _row(rows, "chance: prevalence")
        assert chance[2] == "0.015 (1.5%)" and chance[3] == "0.007 (0.71%)"
    # the AUROC table carries the same positives; the comparison table the macro AUPRC
    auroc = _md_table(rendered["md"], "Linear probes per task: AUROC")
    assert _row(auroc, "held-out positives / rows")[2:4] == ["9 / 60", "7 / 60"]
    comparison = _md_table(rendered["md"], "Comparison of methods")
    dense = [p for p in probes if p["method"] == "dense" and p["embedding"] == "raw"]
    macro = statistics.fmean(
        statistics.fmean(p["auprc"] for p in dense if p["seed"] == s) for s in (0, 1)
    )
    sd = statistics.stdev(
        statistics.fmean(p["auprc"] for p in dense if p["seed"] == s) for s in (0, 1)
    )
    cell = _row(comparison, "dense")[comparison[0].index("probe AUPRC")]
    assert cell == f"{macro:.3f} ± {sd:.3f}"
    tasks = _md_table(rendered["md"], "Tasks")
    assert tasks[0][-2:] == ["test positives / rows", "prevalence (held-out)"]
    assert _row(tasks, "gi_bleed")[-2:] == ["9 / 60", "1.5%"]


def test_kshot_tables_show_every_k_and_auprc(rendered: dict[str, Any]) -> None:
    for metric in ("AUROC", "AUPRC"):
        rows = _md_table(rendered["md"], f"k-shot linear probes: {metric}")
        assert rows[0] == ["method", *(f"k = {k}" for k in KSHOT)]
        dense = [
            p
            for p in rendered["results"]["probes"]
            if p["method"] == "dense" and p["k"] == 1 and p["embedding"] == "raw"
        ]
        key = metric.lower()
        mean = statistics.fmean(p[key] for p in dense)
        sd = statistics.fmean(p[f"{key}_sd"] for p in dense)
        assert _row(rows, "dense")[1] == f"{mean:.3f} ± {sd:.3f}"
    assert (
        "Held-out positives / rows per task: gi_bleed 9 / 60; peptic_ulcer 7 / 60."
        in (rendered["md"])
    )


def test_every_skipped_task_window_and_probe_is_explained(rendered: dict[str, Any]) -> None:
    md = rendered["md"]

    def note(cell: str) -> str:
        label = re.search(r"\[\^([\w-]+)\]$", cell)
        assert label, cell
        return re.search(rf"^\[\^{label.group(1)}\]: (.*)$", md, re.M).group(1)

    tasks = _md_table(md, "Tasks")
    skipped = next(r for r in tasks if r[0].startswith(SKIPPED_TASK["task"]))
    assert "not probed" in skipped[0] and note(skipped[0]) == SKIPPED_TASK["reason"]
    assert f"{SKIPPED_TASK['task']} ({SKIPPED_TASK['reason']})" in md  # header: Not run
    summary = _md_table(md, "Temporal stability")
    windows = _row(summary, "dense")[1]
    assert windows.startswith(f"{len(WINDOWS)} of 14")
    assert note(windows).startswith("windows 9–10 not measured: a window is measured only when ")
    assert "at least 4 k = 16 held-out subjects" in note(windows)
    by_window = _md_table(md, "Temporal stability by window")
    assert [r[0].split("[")[0] for r in by_window[1:]] == [
        f"w{w} -> w{w + 1}" for w in range(1, 15)
    ]
    assert note(_row(by_window, "w9 -> w10[^temporal-windows-1]")[0]).startswith("not measured")
    method, k, reason = KSHOT_SKIPPED
    kshot = _md_table(md, "k-shot linear probes: AUROC")
    assert note(_row(kshot, method)[kshot[0].index(f"k = {k}")]) == reason
    page = _html_tables(rendered["html"])
    assert SKIPPED_TASK["reason"] in page.titles or SKIPPED_TASK["reason"] in rendered["html"]
    assert reason in page.titles  # the k-shot cell's tooltip


def test_a_value_rounding_to_zero_has_no_sign(tmp_path: Path) -> None:
    assert num(-0.0004, "drop") == "0.000" and num(-0.04, "pct") == "-4.0%"
    assert signed(-0.0004) == "0.000" == signed(0.0004) and signed(0.012) == "+0.012"
    assert num(-0.0, "rank") == "0.0" and num(-0.04, "rank") == "0.0"
    results = make_results()
    for rec in results["robustness"]:
        if rec["method"] == "simclr":
            rec["auroc_drop"] = -0.0002 * (1 + rec["seed"])
            rec["subspace_distance"] = -0.0001
    next(r for r in results["table"] if r["method"] == "simclr")["robustness_drop"] = -0.0003
    for rec in results["temporal"]:
        if rec["method"] == "vicreg":
            rec["floor"] = rec["subspace_distance"] + 0.0002  # distance − floor rounds to 0
    results["comparison"]["difference_ci"] = [-0.0004, 0.0]
    paths = render(results, tmp_path)
    for path in paths.values():
        text = re.sub(r"<svg.*?</svg>", "", path.read_text(encoding="utf-8"), flags=re.S)
        signed_zeros = [m for m in re.findall(r"[-−+]0\.(\d+)", text) if not m.strip("0")]
        assert signed_zeros == [], path.name
    md = paths["markdown"].read_text(encoding="utf-8")
    assert "95% CI [0.000, 0.000]" in md
    rob = _md_table(md, "Robustness: AUROC drop under perturbation")
    assert _row(rob, "simclr")[1] == "0.000"


def test_the_window_rule_states_the_temporal_minimum_and_the_clip() -> None:
    from densefeat.eval import temporal
    from densefeat.report import prose

    # The report may not import eval: its twin constants must equal the rule they describe.
    assert prose._MIN_ROWS_PER_K == temporal.ROWS_PER_K
    assert prose._MIN_CLIPPED_K == temporal.MIN_CLIPPED_K
    # A run whose only window was scored at a clipped k states the requested k's minimum.
    results = {"config": {"k": 16}, "temporal": [{"k": 3, "k_requested": 16, "n": 12}]}
    rule = prose.window_rule(results)
    assert "at least 4 k = 64 held-out subjects" in rule
    assert "clipped k = floor(n / 4)" in rule and "not below 8" in rule
