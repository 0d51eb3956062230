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


def _shell_commands() -> list[tuple[str, str]]:
    """(doc, command line) for every `align ...` line of every bash block in README.md and
    docs/ (continuation lines joined, comments dropped)."""
    out = []
    for f in [DOCS.parent / "README.md", *sorted(DOCS.glob("*.md"))]:
        for block in re.findall(r"```bash\n(.*?)```", f.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].strip()
                if line.startswith("align ") or line == "align":
                    out.append((f.name, line))
                elif "&& align " in line:
                    out.append((f.name, "align " + line.split("&& align ", 1)[1]))
    return out


@pytest.mark.parametrize("doc,line", _shell_commands())
def test_every_documented_align_command_parses(doc, line):
    """Each documented `align` command names an existing subcommand with options that exist
    and values of the right types (click parses it; nothing runs), so the docs cannot drift
    from the CLI."""
    import shlex

    import typer.main

    from align.cli import app, expand_multi

    group = typer.main.get_command(app)
    args = expand_multi(shlex.split(line)[1:])
    name, rest = args[0], args[1:]
    sub = group.get_command(None, name)
    assert sub is not None, f"docs/{doc}: unknown command {name!r} in {line!r}"
    sub.make_context(name, rest)  # raises a click error on an unknown option or a bad value


def test_the_docs_have_align_commands_to_check():
    assert len(_shell_commands()) >= 10
