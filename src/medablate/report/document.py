"""A tiny document model rendered twice: as one self-contained HTML page and as Markdown.

Both renderings come from the same blocks, so report.html and report.md always say the same thing.
Every string is escaped on output: names from study files and file names appear as text, never as markup.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Heading:
    level: int
    text: str
    anchor: str = ""


@dataclass
class Paragraph:
    text: str
    kind: str = ""  # "" or "warning" or "note"


@dataclass
class Items:
    items: list[str]
    kind: str = ""


@dataclass
class Table:
    header: list[str]
    rows: list[list[Any]]
    sortable: bool = False
    links: dict[int, list[str]] = field(default_factory=dict)  # column -> relative href per row
    element_id: str = ""


@dataclass
class Figure:
    stem: Path  # figures/x -> x.svg inline in HTML, x.png in Markdown
    caption: str


@dataclass
class Image:
    path: Path  # a PNG, embedded as data: URI in HTML
    caption: str


Block = Heading | Paragraph | Items | Table | Figure | Image


def fmt(value: Any) -> str:
    if value is None or value == "" or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


# ---------------------------------------------------------------- HTML

STYLE = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1300px;margin:0 auto;padding:1.5rem;color:#1a1a1a}
h1{font-size:1.7rem;margin-bottom:.2rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:13px;max-width:100%}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top;overflow-wrap:break-word}
table.wide{font-size:12px}table.wide th,table.wide td{padding:.2rem .35rem}
.table{max-width:100%;overflow-x:auto}
@media (max-width:900px){table.wide,table.wide tbody,table.wide tr,table.wide td{display:block}table.wide thead{display:none}
table.wide tr{border:1px solid #ddd;margin-bottom:.5rem}table.wide td{border:none;text-align:left}
table.wide td::before{content:attr(data-label) ": ";font-weight:600}}
th{background:#f4f4f4}table.sortable th{cursor:pointer}table.sortable th[data-order=asc]::after{content:" ▲"}
table.sortable th[data-order=desc]::after{content:" ▼"}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
figure{margin:1rem 0}figure svg,figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:13px;color:#555}.warning{background:#fff4e5;border-left:4px solid #f0a020;padding:.4rem .8rem}
.note{background:#eef5ff;border-left:4px solid #4a8ad8;padding:.4rem .8rem}nav a{margin-right:1rem}
.examples{display:flex;flex-wrap:wrap;gap:.5rem}.examples figure{width:220px;margin:0}
@media print{nav{display:none}h2{break-before:auto}figure,table{break-inside:avoid}body{max-width:none}}
"""

SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, column) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var ascending = th.getAttribute('data-order') !== 'asc';
      rows.sort(function (a, b) {
        var x = a.cells[column].getAttribute('data-value'), y = b.cells[column].getAttribute('data-value');
        var nx = parseFloat(x), ny = parseFloat(y);
        var order = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return ascending ? order : -order;
      });
      table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('data-order'); });
      th.setAttribute('data-order', ascending ? 'asc' : 'desc');
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _inline_svg(path: Path) -> str:
    text = path.read_text()
    text = re.sub(r"<\?xml[^>]*\?>", "", text)
    return re.sub(r"<!DOCTYPE[^>]*>", "", text).strip()


def _embedded_png(path: Path, caption: str) -> str:
    """A figure written without its SVG copy ($MEDABLATE_FIGURE_FORMATS): the PNG, inside the page."""
    return f'<img alt="{_e(caption)}" src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _wbr(text: str) -> str:
    """Long dotted or underscored keys (training.scheduler.step_size) may break after '.' and '_'."""
    return re.sub(r"([._])(?=\w)", r"\1<wbr>", text)


def _html_table(table: Table) -> str:
    classes = " ".join(c for c, on in (("sortable", table.sortable), ("wide", len(table.header) > 6)) if on)
    attrs = (f' class="{classes}"' if classes else "") + (f' id="{_e(table.element_id)}"' if table.element_id else "")
    head = "".join(f"<th>{_wbr(_e(h))}</th>" for h in table.header)
    rows = []
    for r, row in enumerate(table.rows):
        cells = []
        for c, value in enumerate(row):
            shown = _e(fmt(value))
            if c in table.links and table.links[c][r]:
                shown = f'<a href="{_e(table.links[c][r])}">{shown}</a>'
            raw = "" if value is None else value
            css = ' class="num"' if _is_number(value) else ""
            label = _e(table.header[c]) if c < len(table.header) else ""
            cells.append(f'<td{css} data-value="{_e(raw)}" data-label="{label}">{shown}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    body = f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return f'<div class="table">{body}</div>'  # never wider than the page: a table too wide scrolls in its box


def render_html(title: str, blocks: list[Block], root: Path) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            anchor = f' id="{_e(block.anchor)}"' if block.anchor else ""
            parts.append(f"<h{block.level}{anchor}>{_e(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            css = f' class="{block.kind}"' if block.kind else ""
            parts.append(f"<p{css}>{_e(block.text)}</p>")
        elif isinstance(block, Items):
            css = f' class="{block.kind}"' if block.kind else ""
            parts.append(f"<ul{css}>" + "".join(f"<li>{_e(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            parts.append(_html_table(block))
        elif isinstance(block, Figure):
            svg, png = root / f"{block.stem}.svg", root / f"{block.stem}.png"
            body = _inline_svg(svg) if svg.exists() else _embedded_png(png, block.caption) if png.exists() \
                else "<p>(figure not available)</p>"
            parts.append(f"<figure>{body}<figcaption>{_e(block.caption)}</figcaption></figure>")
        elif isinstance(block, Image):
            data = base64.b64encode((root / block.path).read_bytes()).decode()
            parts.append(f'<figure class="example"><img alt="{_e(block.caption)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{_e(block.caption)}</figcaption></figure>")
    body = "\n".join(parts)
    # example images side by side as thumbnails; a figure drawn as PNG alone ($MEDABLATE_FIGURE_FORMATS) keeps its width
    body = re.sub(r'(<figure class="example"><img[^>]*>.*?</figure>\n?)+',
                  lambda m: f'<div class="examples">{m.group(0)}</div>', body)
    nav = "".join(f'<a href="#{_e(b.anchor)}">{_e(b.text)}</a>' for b in blocks if isinstance(b, Heading) and b.level == 2)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{STYLE}</style></head>\n<body><nav>{nav}</nav>\n{body}\n"
            f"<script>{SCRIPT}</script></body></html>\n")


# ---------------------------------------------------------------- Markdown


def _md(text: Any) -> str:
    """Markdown text with HTML and table-breaking characters neutralised."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + _md(block.text), ""]
        elif isinstance(block, Paragraph):
            lines += [("> " if block.kind else "") + _md(block.text), ""]
        elif isinstance(block, Items):
            lines += [f"- {_md(i)}" for i in block.items] + [""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(_md(h) for h in block.header) + " |")
            lines.append("|" + "---|" * len(block.header))
            for r, row in enumerate(block.rows):
                cells = [_md(fmt(v)) for v in row]
                for c, links in block.links.items():
                    if links[r]:
                        cells[c] = f"[{cells[c]}]({links[r]})"
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        elif isinstance(block, Figure):
            lines += [f"![{_md(block.caption)}]({block.stem}.png)", ""]
        elif isinstance(block, Image):
            lines += [f"![{_md(block.caption)}]({block.path})", ""]
    return "\n".join(lines)
