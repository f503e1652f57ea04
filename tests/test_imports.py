"""The shape of the import graph, read from the source (nothing is imported): no module takes part
in an import circle, and the CLI calls the library through its public modules only.

Every import counts, including the ones inside functions and under ``TYPE_CHECKING``: a lazy
import still ties two modules together, and a circle is what makes a module unusable on its own
(``eval/_plots.py`` and ``eval/_report.py`` were one; ``_write.py`` now writes a report's files).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "safe_context_agent": ROOT / "safe_context_agent",
    "safe_context_training": ROOT / "training",
}
CLI = "safe_context_agent.cli"
CLI_INFRASTRUCTURE = {"safe_context_agent._sanitize"}
"""Private modules the CLI may use: redacting its own output is plumbing, not a library feature."""


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def imports_of(name: str) -> set[str]:
    """The package modules ``name`` imports (``from a.b import c`` is ``a.b.c`` when that is a
    module, else ``a.b``)."""
    targets = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names if alias.name in MODULES}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package upwards
                here = name if _is_package(name) else name.rpartition(".")[0]
                base = ".".join(here.split(".")[: len(here.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    targets.add(f"{base}.{alias.name}")
                elif base in MODULES:
                    targets.add(base)
    targets.discard(name)
    return targets


def import_circles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Each group of modules that import one another in a circle, directly or through others
    (Tarjan's strongly connected components of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for name in graph:
        if name not in index:
            visit(name)
    return circles


def test_the_detector_finds_direct_and_longer_circles() -> None:
    graph = {"a": ["b"], "b": ["a"], "c": ["d"], "d": ["e"], "e": ["c"], "f": ["a", "c"]}
    assert sorted(import_circles(graph)) == [["a", "b"], ["c", "d", "e"]]
    assert import_circles({"a": ["b"], "b": [], "c": ["a", "b"]}) == []


def test_the_reader_sees_lazy_and_type_checking_imports() -> None:
    plots = imports_of("safe_context_agent.eval._plots")  # its EvalReport is TYPE_CHECKING-only
    assert "safe_context_agent.eval._report" in plots
    write = imports_of("safe_context_agent.eval._write")  # imports _plots inside write_report
    assert "safe_context_agent.eval._plots" in write


def test_no_module_of_either_package_is_in_an_import_circle() -> None:
    circles = import_circles({name: sorted(imports_of(name)) for name in MODULES})
    assert circles == [], (
        "import circles (each line: modules that import one another):\n"
        + "\n".join(" <-> ".join(group) for group in circles)
    )


def test_the_cli_imports_only_public_modules() -> None:
    private = {}
    for name in MODULES:
        if not (name == CLI or name.startswith(f"{CLI}.")):
            continue
        for target in imports_of(name):
            if target.startswith(f"{CLI}.") or target in CLI_INFRASTRUCTURE:
                continue
            parts = target.split(".")
            if any(part.startswith("_") for part in parts):
                private.setdefault(name, []).append(target)
    assert private == {}, f"the CLI imports private modules (export them publicly): {private}"
