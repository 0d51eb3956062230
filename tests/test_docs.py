"""The docs' generated tables equal what the code generates (they cannot drift)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from align.algorithms import ALGORITHMS
from align.hparams import markdown_table

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"<!-- hparams:(\w+)[^>]*-->\n(.*?)<!-- /hparams:\1 -->", re.S)


def _blocks():
    return [(f.name, name, body) for f in sorted(DOCS.glob("*.md"))
            for name, body in BLOCK.findall(f.read_text())]


def test_align_defaults_table_is_in_the_docs():
    assert ("align.md", "align") in {(f, n) for f, n, _ in _blocks()}


@pytest.mark.parametrize("doc,name,body", _blocks())
def test_generated_hparam_tables_match_the_code(doc, name, body):
    assert body == markdown_table(ALGORITHMS.get(name).hparam_spec()), (
        f"docs/{doc}: the hparams table of {name!r} is stale; regenerate it with "
        f"`align hparams {name}`")
