"""The layout shows the architecture, and stays so: posguard's packages import in one direction
(adapters <- actors <- supervisor) without a cycle, no module grows past what one reading
holds, the README's layout table names only what exists (and every package), and nothing
stray is committed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.kit import ROOT

PACKAGES = ("adapters", "actors", "supervisor")
MAX_LINES = 450


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ours it imports, anywhere in it (a function-level import is a dependency
    too), except under `if TYPE_CHECKING:` (annotations only)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree)
                   if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                   for n in ast.walk(block)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_posguard():
    assert cycles(graph()) == []


def test_imports_run_one_way_adapters_then_actors_then_supervisor():
    rank = {package: i for i, package in enumerate(PACKAGES)}
    upward = [(a, b) for a, targets in graph().items() for b in targets
              if rank[b.split(".")[0]] > rank[a.split(".")[0]]]
    assert upward == []


def test_no_module_is_longer_than_one_reading_holds():
    long = {}
    for path in modules().values():
        rel = path.relative_to(ROOT).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            long[rel] = lines
    assert long == {}, f"split these by concern (at most {MAX_LINES} lines): {long}"


def readme_paths() -> list[str]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| where | what |"):]
    table = table[:table.index("\n\n")]
    return [cell.strip("` ") for row in table.splitlines()[2:]
            for cell in row.split("|")[1].split(",")]


def test_the_readme_layout_names_what_exists_and_every_package():
    named = readme_paths()
    assert named, "the README's layout table is gone"
    assert [p for p in named if not (ROOT / p).exists()] == []
    packages = {p.parent.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in (ROOT / pkg).rglob("__init__.py")}
    covered = {p.rstrip("/") for p in named} | {str(Path(p).parent) for p in named}
    assert sorted(packages - covered) == []


@pytest.mark.parametrize("pattern", ["*.orig", "*.rej", "*.bak", "*.swp", "*~"])
def test_nothing_stray_is_in_the_tree(pattern):
    # Read from the tree, not from git: a clean clone holds exactly what is committed.
    stray = [p.relative_to(ROOT).as_posix() for p in ROOT.rglob(pattern)
             if not {".git", "build", ".hypothesis"} & set(p.relative_to(ROOT).parts)]
    assert stray == []


def test_no_comment_cites_a_file_outside_the_repository():
    outside = "../" + "shared"                           # spelt apart: this file would cite it
    citing = [p.relative_to(ROOT).as_posix() for pkg in (*PACKAGES, "tests", "bench", "docs")
              for p in (ROOT / pkg).rglob("*") if p.suffix in (".py", ".md") and outside in p.read_text()]
    citing += ["README.md"] if outside in (ROOT / "README.md").read_text() else []
    assert citing == []
