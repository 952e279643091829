"""``report.html``: one self-contained page (inline CSS, inline SVG plots, no script, no fetch).

Lays out a :class:`~densefeat.report.model.Report` and the :class:`~densefeat.report.plots.Plot`
list. The main table has ``id="comparison"``: exactly one ``<tbody>`` row per method and ablation,
the isotropic reference in its ``<tfoot>``. A missing value is ``—`` with its reason both as a
tooltip (``title``) and as a numbered note under its table. Each plot is a ``<figure>`` with a
caption saying what is plotted and what the reference lines are; a plot whose section is empty is
replaced by a sentence saying so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from html import escape

from .model import NA, Cell, Notes, Report, Row, Table
from .plots import Plot

__all__ = ["to_html"]

_CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #dde2ea; --soft: #f5f7fa; --link: #2456a6; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 28px 28px 64px; }
h1 { font-size: 26px; margin: 0 0 14px; }
h2 { font-size: 19px; margin: 42px 0 8px; padding-bottom: 4px; border-bottom: 1px solid
  var(--line); }
a { color: var(--link); }
nav { font-size: 13.5px; margin: 14px 0 0; color: var(--muted); }
nav a { margin-right: 12px; white-space: nowrap; }
.banner { border-left: 5px solid #d99a00; background: #fff6dc; padding: 10px 14px;
  border-radius: 3px; font-weight: 600; }
.banner.full { border-color: #2c7be5; background: #edf4ff; font-weight: 500; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 3px 18px;
  margin: 16px 0 0; font-size: 14px; }
dl.facts dt { font-weight: 600; color: var(--muted); }
dl.facts dd { margin: 0; }
ul.endpoints { padding-left: 20px; }
ul.endpoints li { margin: 6px 0; }
p.caption, figcaption { font-size: 13.5px; color: var(--muted); max-width: 980px; }
.table-wrap { overflow-x: auto; margin: 8px 0 4px; }
table { border-collapse: collapse; font-size: 13.5px; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: right;
  white-space: nowrap; }
th { background: var(--soft); font-weight: 600; vertical-align: bottom; white-space: normal;
  min-width: 56px; }
th.text, td.text { text-align: left; }
tbody tr:hover td { background: #f8fafc; }
tr.dense td { font-weight: 650; background: #fdf1f1; }
tr.dense:hover td { background: #fbe6e6; }
tr.ablation td:first-child { padding-left: 24px; }
tr.first-ablation td { border-top: 2px solid var(--line); }
tfoot td { font-style: italic; color: var(--muted); background: #fafbfc;
  white-space: normal; }
tr.missing td { font-style: italic; color: var(--muted); }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
  margin-right: 7px; }
.na { color: var(--muted); cursor: help; }
sup.fn { font-size: 10px; margin-left: 1px; }
sup.fn a { text-decoration: none; }
ol.notes { font-size: 12.5px; color: var(--muted); margin: 4px 0 0; padding-left: 22px; }
figure { margin: 26px 0 30px; }
svg.plot { display: block; width: 100%; height: auto; }
p.skipped { font-style: italic; color: var(--muted); border: 1px dashed var(--line);
  padding: 8px 12px; border-radius: 3px; }
dl.defs dt { font-weight: 600; margin-top: 8px; }
dl.defs dd { margin: 0 0 0 18px; font-size: 14px; }
footer { margin-top: 48px; font-size: 12.5px; color: var(--muted); }
@media print { nav { display: none; } main { max-width: none; } }
"""

#: CSS px per SVG pt, and how much larger than its natural size a plot may be drawn.
_PX_PER_PT = 96 / 72
_MAX_ZOOM = 1.15


class _Notes(Notes):
    """Numbered notes of one table (one per distinct text), as tooltips and a list."""

    def cell(self, cell: Cell, *, tag: str, cls: str, swatch: str | None) -> str:
        text = escape(cell.text)
        if cell.text == NA:
            title = f' title="{escape(cell.note)}"' if cell.note else ""
            text = f'<span class="na"{title}>{NA}</span>'
        if swatch:
            text = f'<span class="swatch" style="background:{escape(swatch)}"></span>{text}'
        if cell.note:
            i = self.number(cell.note)
            text += f'<sup class="fn"><a href="#fn-{self.key}-{i}">{i}</a></sup>'
        return f'<{tag} class="{cls}">{text}</{tag}>'

    def html(self) -> str:
        if not self.texts:
            return ""
        items = "".join(
            f'<li id="fn-{self.key}-{i}" value="{i}">{escape(t)}</li>'
            for i, t in enumerate(self.texts, 1)
        )
        return f'<ol class="notes">{items}</ol>'


def _row(row: Row, table: Table, notes: _Notes, colours: dict[str, str], cls: str) -> str:
    cells = []
    for j, cell in enumerate(row.cells):
        swatch = colours.get(row.method) if (j == 0 and row.method) else None
        kind = "text" if j < table.text_columns else "num"
        cells.append(notes.cell(cell, tag="td", cls=kind, swatch=swatch))
    classes = [c for c in (cls, "dense" if row.method == "dense" else "") if c]
    attr = f' class="{" ".join(classes)}"' if classes else ""
    return f"<tr{attr}>{''.join(cells)}</tr>"


def _table(table: Table, colours: dict[str, str]) -> str:
    parts = [
        f'<section id="sec-{table.key}"><h2>{escape(table.title)}</h2>',
        f'<p class="caption">{escape(table.caption)}</p>',
    ]
    if table.empty:
        parts.append(f'<p class="skipped">Not available: {escape(table.empty)}</p></section>')
        return "".join(parts)
    notes = _Notes(table.key)
    head = "".join(
        f'<th class="{"text" if j < table.text_columns else "num"}" scope="col">'
        f"{escape(h).replace('_', '_<wbr>')}</th>"
        for j, h in enumerate(table.header)
    )
    body = []
    seen_ablation = False
    for row in table.rows:
        cls = row.kind if row.kind != "method" else ""
        if row.kind == "ablation" and not seen_ablation:
            cls, seen_ablation = "ablation first-ablation", True
        body.append(_row(row, table, notes, colours, cls))
    foot = [_row(row, table, notes, colours, "reference") for row in table.foot]
    parts.append(
        f'<div class="table-wrap"><table id="{escape(table.key)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody>"
        + (f"<tfoot>{''.join(foot)}</tfoot>" if foot else "")
        + "</table></div>"
    )
    parts.append(notes.html())
    parts.append("</section>")
    return "".join(parts)


def _figure(plot: Plot, number: int) -> str:
    if plot.svg is None:
        return (
            f'<p class="skipped" id="fig-{plot.key}">{escape(plot.title)}: not plotted, '
            f"{escape(plot.skipped or 'no data')}</p>"
        )
    view = re.search(r'viewBox="[\d.]+ [\d.]+ ([\d.]+) [\d.]+"', plot.svg)
    style = ""
    if view:
        style = f' style="max-width:{float(view.group(1)) * _PX_PER_PT * _MAX_ZOOM:.0f}px"'
    return (
        f'<figure id="fig-{plot.key}"{style}>{plot.svg}'
        f"<figcaption><strong>Figure {number}. {escape(plot.title)}.</strong> "
        f"{escape(plot.caption)}</figcaption></figure>"
    )


def to_html(report: Report, plots: Sequence[Plot], *, generator: str = "densefeat") -> str:
    """Render ``report`` and ``plots`` as one self-contained HTML page.

    Args:
        report: the content built by :func:`~densefeat.report.build.build_report`.
        plots: from :func:`~densefeat.report.plots.make_plots`.
        generator: written into ``<meta name="generator">``.

    Returns:
        the page's text (UTF-8, no external resources).
    """
    colours = dict(report.colours)
    banner_cls = "banner" if report.scale == "smoke" else "banner full"
    facts = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in report.facts)
    endpoints = "".join(f"<li>{escape(s)}</li>" for s in report.endpoints)
    figures = []
    number = 0
    for plot in plots:
        if plot.svg is not None:
            number += 1
        figures.append(_figure(plot, number))
    nav = [("sec-endpoints", "Primary endpoints"), ("sec-comparison", "Comparison")]
    nav += [("sec-plots", "Plots")]
    nav += [(f"sec-{t.key}", t.title) for t in report.tables if t.nav]
    nav += [("sec-definitions", "Definitions")]
    nav_html = " ".join(f'<a href="#{k}">{escape(v)}</a>' for k, v in nav)
    defs = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in report.definitions)
    body = [
        f"<header><h1>{escape(report.title)}</h1>",
        f'<p class="{banner_cls}">{escape(report.scale_banner)}</p>',
        f'<dl class="facts">{facts}</dl><nav>{nav_html}</nav></header>',
        '<section id="sec-endpoints"><h2>Primary endpoints</h2>',
        f'<ul class="endpoints">{endpoints}</ul></section>',
        _table(report.comparison, colours),
        '<section id="sec-plots"><h2>Plots</h2>',
        '<p class="caption">Colours are the same in every plot and table; dense is the thick '
        "red line. Ablations are in the tables only.</p>",
        *figures,
        "</section>",
        *(_table(t, colours) for t in report.tables),
        f'<section id="sec-definitions"><h2>Definitions</h2><dl class="defs">{defs}</dl></section>',
        "<footer>Rendered by densefeat.report from results.json; results.md carries the same "
        "numbers.</footer>",
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="{escape(generator)}">'
        f"<title>{escape(report.title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )
