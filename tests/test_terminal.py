"""The terminal summary of a benchmark (densefeat.report.terminal): what stdout shows."""

from __future__ import annotations

from _results_fixture import make_results
from densefeat.report.build import build_report
from densefeat.report.terminal import terminal_summary, text_table


def test_text_table_aligns_text_left_and_numbers_right():
    text = text_table(["method", "AUROC"], [["dense", "0.9"], ["count_features", "0.812"]])
    lines = text.splitlines()
    assert lines[0] == "method          AUROC"
    assert lines[2] == "dense             0.9"
    assert lines[3] == "count_features  0.812"
    assert {len(line) for line in lines} == {len(lines[0])}


def test_summary_is_the_reports_numbers_compact_and_aligned(tmp_path):
    results = make_results()
    text = terminal_summary(results, tmp_path)
    lines = text.splitlines()
    assert lines[0] == "densefeat benchmark report (smoke scale)"
    assert "2 tasks, 2 seeds" in lines[1]
    table = text.split("\n\n")[1].splitlines()
    assert table[0].split()[:2] == ["method", "seeds"]
    assert "AUROC ↑" in table[0] and "drop ↓" in table[0]
    # one row per method and ablation, then the isotropic reference; the report's cells
    report = build_report(results)
    names = [*results["config"]["methods"], *results["config"]["ablations"]]
    assert [line.split()[0] for line in table[2:]] == [*names, "isotropic"]
    auroc = report.comparison.header.index("probe AUROC")
    dense_row = table[2]
    assert report.comparison.rows[0].cells[auroc].text in dense_row
    # right-aligned numbers: every row ends its AUROC cell at the header's column
    end = table[0].index("AUROC ↑") + len("AUROC ↑")
    for line in table[2:]:
        assert line[end - 5 : end].strip()[-1].isdigit()
    assert max(len(line) for line in lines if str(tmp_path) not in line) <= 100
    assert "|" not in text and "[^" not in text and "**" not in text
    assert "Primary endpoints:" in text and "95% CI" in text
    assert "ulcerative_colitis: no positive label in the tuning split" in text
    assert f"report: {(tmp_path / 'report.html').resolve()}" in text


def test_summary_skips_columns_the_table_does_not_have(tmp_path, monkeypatch):
    from densefeat.report import terminal

    monkeypatch.setitem(terminal.TERMINAL_COLUMNS, "a column no table has", "x")
    text = terminal_summary(make_results())
    assert " x " not in text.split("\n\n")[1].splitlines()[0] + " "
