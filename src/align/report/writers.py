"""One table writer for every Markdown, CSV and LaTeX table the commands write.

Markdown: a header row, an alignment row and one row per line; a `|` inside a cell is escaped
and a line break becomes a space, so that a label can never split a row. CSV: the stdlib `csv`
module (RFC 4180 quoting: a cell holding a comma, a quote or a line break is quoted), `\\n` line
ends. LaTeX: a booktabs `table` float; every cell, header and caption is escaped (`tex_escape`:
the ten characters LaTeX treats specially, and line breaks) unless it is a `TexRaw`, a string the
caller already wrote as LaTeX (`$\\pm$`, `\\textbf{...}`).
"""

from __future__ import annotations

import csv
import io
from typing import Iterable, Sequence


def _md_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\r\n", " ").replace("\n", " ")


def markdown_table(head: Sequence[object], rows: Iterable[Sequence[object]],
                   right: Sequence[bool] | None = None) -> str:
    """The table as Markdown lines joined by "\\n" (no final newline).

    Args:
        head: column titles.
        rows: cells per row (each as long as `head`); `str()` of each is written.
        right: per column, whether it is right-aligned (`---:`); default: all left (`---`).
    """
    right = right or [False] * len(head)
    lines = ["| " + " | ".join(_md_cell(h) for h in head) + " |",
             "|" + "".join("---:|" if r else "---|" for r in right)]
    for row in rows:
        if len(row) != len(head):
            raise ValueError(f"a row of {len(row)} cells in a table of {len(head)} columns")
        lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
    return "\n".join(lines)


def csv_table(head: Sequence[object], rows: Iterable[Sequence[object]]) -> str:
    """The table as CSV text, header first, every line ending in "\\n"."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(head)
    writer.writerows(rows)
    return buf.getvalue()


class TexRaw(str):
    """A LaTeX table cell written as is: the caller wrote it as LaTeX (and escaped its text)."""


_TEX = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
        "\r": " ", "\n": " "}


def tex_escape(text: object) -> str:
    """`str(text)` with LaTeX's special characters escaped (a line break becomes a space)."""
    return "".join(_TEX.get(ch, ch) for ch in str(text).replace("\r\n", " "))


def tex_label(*parts: str) -> str:
    """A `\\label` key: "tab:" and the parts joined by ":", anything but letters, digits and
    "-", ":", "." replaced by "-"."""
    return "tab:" + ":".join("".join(ch if ch.isalnum() or ch in "-:." else "-" for ch in p)
                             for p in parts)


def _tex_cell(value: object) -> str:
    return str(value) if isinstance(value, TexRaw) else tex_escape(value)


def latex_table(head: Sequence[object], rows: Iterable[Sequence[object]], *, caption: str,
                label: str, align: str) -> str:
    """The table as one booktabs `table` float, lines joined by "\\n" (no final newline; needs
    \\usepackage{booktabs}).

    Args:
        head, rows: as `markdown_table`; cells are escaped unless they are `TexRaw`.
        caption: plain text (escaped).
        label: the `\\label` key (`tex_label`).
        align: the tabular column spec, one letter per column (e.g. "lrr").
    """
    if len(align) != len(head):
        raise ValueError(f"column spec {align!r} for a table of {len(head)} columns")
    lines = ["\\begin{table}[t]", "\\centering", f"\\caption{{{tex_escape(caption)}}}",
             f"\\label{{{label}}}", f"\\begin{{tabular}}{{{align}}}", "\\toprule",
             " & ".join(_tex_cell(h) for h in head) + " \\\\", "\\midrule"]
    for row in rows:
        if len(row) != len(head):
            raise ValueError(f"a row of {len(row)} cells in a table of {len(head)} columns")
        lines.append(" & ".join(_tex_cell(c) for c in row) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines)
