"""The shape of the code: no import cycle among the project's modules (lazy imports inside
functions count too, and importing ``a.b.c`` runs ``a/b/__init__.py`` first), every core module
imports on its own, no function longer than 60 lines in the core or the plumbing, and only the
task registry imports the demo world."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("selfevo", "actors", "launch")
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # ``from pkg import mod`` imports the module; ``from mod import name``, the module.
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in modules else base)
    # Importing a.b.c first runs a/__init__ and a/b/__init__ (except the importer's own).
    parents = {".".join(t.split(".")[:i]) for t in targets for i in range(1, t.count(".") + 1)}
    targets |= {p for p in parents if not name.startswith(p + ".")}
    return {t for t in targets if t in modules and t != name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_among_the_projects_modules():
    modules = _modules()
    graph = {name: _imports(path, name, modules) for name, path in modules.items()}
    assert graph["actors.coordinator"], "the import graph was not read"
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_every_core_module_imports_first_in_a_fresh_interpreter():
    """What a cycle at import time looks like: ``partially initialized module``."""
    core = sorted(n for n in _modules() if n.startswith("selfevo") and not n.endswith("__main__"))
    script = "import importlib, sys\nimportlib.import_module(sys.argv[1])\n"
    failed = {}
    for name in core:
        done = subprocess.run([sys.executable, "-c", script, name], capture_output=True, text=True)
        if done.returncode:
            failed[name] = done.stderr.strip().splitlines()[-1]
    assert not failed, failed


def test_no_function_is_longer_than_60_lines():
    long = []
    for name, path in _modules().items():
        if name.startswith("launch"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert not long, "\n".join(long)


@pytest.mark.parametrize("world", ["selfevo.demo_world", "selfevo.division_world"])
def test_only_the_task_registry_imports_a_demo_world(world):
    """General code asks selfevo.tasks; a demo world is one registered task among others."""
    modules = _modules()
    importers = {
        name
        for name, path in modules.items()
        if not (name == world or name.startswith(world + "."))
        and any(t == world or t.startswith(world + ".") for t in _imports(path, name, modules))
    }
    assert importers == {"selfevo.tasks"}
