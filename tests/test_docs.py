"""The docs' generated tables equal what the code generates, and every documented `align`
command parses (they cannot drift). The helpers that find the docs' code blocks are shared with
tests/test_doc_examples.py, which runs every example."""

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


README = DOCS.parent / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def fenced_blocks(lang: str) -> list[tuple[str, str]]:
    """(doc file name, body) of every ```lang block of README.md and docs/*.md, in order. The
    Python blocks run in tests/test_doc_examples.py."""
    return [(f.name, body) for f in doc_files()
            for block_lang, body in FENCE.findall(f.read_text()) if block_lang == lang]


def shell_lines() -> list[tuple[str, str]]:
    """(doc, line) for every line of every bash block in README.md and docs/ (continuation
    lines joined, comments and blank lines dropped)."""
    out = []
    for doc, block in fenced_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = " ".join(line.split(" #")[0].split())
            if line and not line.startswith("#"):
                out.append((doc, line))
    return out


def shell_commands() -> list[tuple[str, str]]:
    """(doc, command line) for every `align ...` command of the docs' bash blocks (also after
    `&&`). tests/test_doc_examples.py runs each of them."""
    out = []
    for doc, line in shell_lines():
        if line.startswith("align ") or line == "align":
            out.append((doc, line))
        elif "&& align " in line:
            out.append((doc, "align " + line.split("&& align ", 1)[1]))
    return out


@pytest.mark.parametrize("doc,line", shell_commands())
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
    assert len(shell_commands()) >= 10


@pytest.mark.parametrize("kind", ["algorithm", "dataset preset", "training preset"])
def test_the_readme_names_every_registered_choice(kind):
    """The README's overview lists what can be chosen by name; a name added to a registry must
    appear there too (the dataset presets list once lacked `pacs` and `office_home`)."""
    from align.data.presets import PRESETS as DATASETS
    from align.training.presets import PRESETS as TRAINING

    names = {"algorithm": ALGORITHMS.names(), "dataset preset": list(DATASETS),
             "training preset": TRAINING.names()}[kind]
    text = README.read_text()
    missing = [n for n in names if f"`{n}`" not in text and f"--preset {n}" not in text]
    assert not missing, f"README.md does not name the {kind}(s) {missing}"
