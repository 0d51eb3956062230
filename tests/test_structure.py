"""Checks on the shape of `src/` that issue 9 asks anyone to be able to run: no module of a lower
layer imports a higher one, and no source file grows past 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "align"
LOWER = ("data", "models", "explain", "metrics", "losses", "masks", "maps")
HIGHER = ("training", "evaluate", "evaluation_presets", "report", "experiments", "cli", "api",
          "quickstart", "sweep", "regimes")
MAX_LINES = 400


def _modules(top: str) -> list[Path]:
    path = SRC / top
    return sorted(path.rglob("*.py")) if path.is_dir() else [p for p in [SRC / f"{top}.py"]
                                                               if p.is_file()]


def _imported(path: Path) -> set[str]:
    """Every `align.X` module an import statement of `path` names (module level or inside a
    function: a lazy import is still a dependency)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("align.")}


@pytest.mark.parametrize("top", LOWER)
def test_lower_layers_do_not_import_higher_ones(top):
    bad = [f"{p.relative_to(SRC.parent)} imports {m}" for p in _modules(top)
           for m in sorted(_imported(p)) if m.split(".")[1] in HIGHER]
    assert not bad, "\n".join(bad)


def test_the_layer_check_sees_the_lower_layers():
    assert all(_modules(top) for top in ("data", "models", "explain", "metrics", "losses"))


def test_no_source_file_is_longer_than_400_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these by concept: {long}"
