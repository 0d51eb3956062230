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


def _python_block(text: str, after: str) -> str:
    start = text.index("```python", text.index(after)) + len("```python")
    return text[start:text.index("```", start)]


def test_readme_python_api_runs_twice_in_one_interpreter(tiny_synth, tmp_path, monkeypatch):
    """The README's Python example, on the tests' tiny benchmark, executed twice in one process:
    `pretrained=None` means no weights, and `align.train` stays the function after the training
    stack was imported (it used to be shadowed by the `align.train` subpackage)."""
    readme = (DOCS.parent / "README.md").read_text()
    code = _python_block(readme, "**Python API**")
    for old, new in (("quickstart/data", str(tiny_synth)), ("steps=300", "steps=4"),
                     ("image_size=64", "image_size=32"), ("3, 64, 64", "3, 32, 32")):
        assert old in code, old
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "runs" / "erm" / "done").is_file()
