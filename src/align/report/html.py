"""`index.html`: every table and figure of a report on one self-contained page.

Offline by construction: inline CSS, no script, and the only links are relative ones to files of
the report folder (figures/*.png|pdf, tables.md|csv|tex).
"""

from __future__ import annotations

from html import escape
from urllib.parse import quote

from .collect import RunRecord, Setting
from .figures import FigureFile
from .paper_tables import LEGEND, Table, arrow, format_cell

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid #444; }
.note { color: #555; font-size: 0.9em; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; border: 1px solid #eee; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def table_html(t: Table) -> str:
    best = t.best()
    head = "".join(f"<th>{escape(c + arrow(d, '↑', '↓'))}</th>"
                   for c, d in zip(t.columns, t.directions))
    rows = []
    for i, (label, seeds, cells) in enumerate(t.rows):
        tds = "".join(f"<td><strong>{escape(format_cell(c))}</strong></td>" if i in best[j]
                      else f"<td>{escape(format_cell(c))}</td>" for j, c in enumerate(cells))
        rows.append(f"<tr><td>{escape(label)}</td><td>{seeds}</td>{tds}</tr>")
    note = f'<p class="note">{escape(t.note)}</p>' if t.note else ""
    return (f"<h3>{escape(t.title)}</h3>{note}<table><thead><tr><th>method</th><th>seeds</th>"
            f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _url(path: str) -> str:
    """A relative file path as an attribute value. Figure names hold the domain names, and a
    domain's "#", "%", "?" or space would end or corrupt the URL: percent-encode all but "/"."""
    return escape(quote(path))


def figure_html(f: FigureFile) -> str:
    return (f'<figure><a href="{_url(f.pdf)}"><img src="{_url(f.png)}" '
            f'alt="{escape(f.caption)}"></a><figcaption>{escape(f.caption)} '
            f'(<a href="{_url(f.pdf)}">PDF</a>)</figcaption></figure>')


def _evaluated(r: RunRecord) -> str:
    if r.evaluation is None:
        return "not evaluated"
    c = r.evaluation["config"]
    return f"{c['checkpoint']} (step {c['step']})"


def runs_html(runs: list[RunRecord]) -> str:
    rows = "".join(
        f"<tr><td>{escape(r.algorithm)}</td><td>{r.seed}</td><td>{escape(r.name())}</td>"
        f"<td>{escape(_evaluated(r))}</td><td><code>{escape(str(r.path))}</code></td></tr>"
        for r in runs)
    return ("<table><thead><tr><th>algorithm</th><th>seed</th><th>run</th><th>evaluated checkpoint"
            "</th><th>directory</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def render(sections: list[tuple[Setting, list[Table], list[FigureFile]]],
           runs: list[RunRecord], notes: list[str], files: list[str]) -> str:
    """The page. `files`: the report's other files (tables.md, ...), linked at the top."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>align report</title>", f"<style>{CSS}</style></head><body>",
             "<h1>align report</h1>",
             "<p>Tables: " + " · ".join(f'<a href="{_url(f)}">{escape(f)}</a>' for f in files)
             + "</p>", f'<p class="note">{escape(LEGEND)}</p>']
    for setting, tables, figures in sections:
        parts.append(f"<h2>{escape(setting.title)}</h2>")
        parts += [table_html(t) for t in tables]
        parts += [figure_html(f) for f in figures]
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes)
                     + "</ul>")
    parts += ["<h2>Runs</h2>", runs_html(runs), "</body></html>"]
    return "\n".join(parts) + "\n"
