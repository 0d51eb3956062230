"""One table writer for every Markdown and CSV table the commands write.

Markdown: a header row, an alignment row and one row per line; a `|` inside a cell is escaped
and a line break becomes a space, so that a label can never split a row. CSV: the stdlib `csv`
module (RFC 4180 quoting: a cell holding a comma, a quote or a line break is quoted), `\\n` line
ends.
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
