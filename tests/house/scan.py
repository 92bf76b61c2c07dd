"""Reads the tree's imports without importing anything: each module's imports (absolute and relative, at module level
and inside functions), resolved to the project's own modules. The house rules (``test_rules.py``) are checked on
what this returns, for the real tree and for small trees the tests plant."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The project's top-level packages: the engine, the shared kernel, the apps, the project.
PACKAGES = (
    "engine",
    "core",
    "access",
    "audit",
    "notifications",
    "workers",
    "datasets",
    "models_registry",
    "training",
    "detection",
    "labelling",
    "monitoring",
    "scheduler",
    "dumpsite",
)
# The Django apps (an app's admin, API and views are its own): every package but the engine, the kernel, the project.
APPS = tuple(p for p in PACKAGES if p not in ("engine", "core", "dumpsite"))


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted
    target: str  # the imported name, dotted and absolute: a module, or a name in a module
    line: int
    in_function: bool
    commented: bool  # a comment on the import's line(s) or on the line just above


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Every module of the packages, migrations left out (generated, and they name models by strings)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" not in path.parts:
                found[module_name(root, path)] = path
    return found


def _resolve(source: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (``from ..x import y`` inside ``a.b.c`` -> ``a.x``)."""
    if node.level == 0:
        return node.module or ""
    base = source.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path) -> list[Import]:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    tree = ast.parse(text)
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    import_lines = {
        n
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for n in range(node.lineno, (node.end_lineno or node.lineno) + 1)
    }

    def commented(node: ast.stmt) -> bool:
        """A comment on the import, on the block of imports it belongs to, or on the line above that block."""
        first = node.lineno
        while first - 1 in import_lines:
            first -= 1
        span = lines[first - 1 : node.end_lineno]
        above = lines[first - 2].strip() if first >= 2 else ""
        return any("#" in line for line in span) or above.startswith("#")

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(name, alias.name, child.lineno, in_function, commented(child)))
            elif isinstance(child, ast.ImportFrom):
                module = _resolve(name, is_package, child)
                for alias in child.names:
                    # ``module.name``: a submodule, or a name of the module (``project_module`` tells which).
                    found.append(Import(name, f"{module}.{alias.name}", child.lineno, in_function, commented(child)))
            else:
                visit(child, inside)

    visit(tree, False)
    return found


def all_imports(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> list[Import]:
    mods = modules(root, packages)
    return [imp for name, path in mods.items() for imp in imports_of(name, path)]


def top(dotted: str) -> str:
    return dotted.split(".")[0]


def project_module(target: str, known: set[str]) -> str | None:
    """The project module an import lands in (the longest known prefix), or None for a library."""
    parts = target.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return None


def graph_of(imports: list[Import], known: set[str]) -> dict[str, set[str]]:
    """Which project modules each module imports."""
    graph: dict[str, set[str]] = {m: set() for m in known}
    for imp in imports:
        target = project_module(imp.target, known)
        if target is not None and target != imp.source:
            graph[imp.source].add(target)
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph[module])
    return seen


def cycles(imports: list[Import], known: set[str]) -> list[list[str]]:
    """The import cycles between files: groups of modules that each reach the others through imports, whatever the
    place of the import in the file."""
    graph = graph_of(imports, known)
    reach = {module: reachable(graph, module) for module in graph}
    found: list[list[str]] = []
    placed: set[str] = set()
    for module in sorted(graph):
        if module in placed or module not in reach[module]:
            continue
        group = sorted(m for m in reach[module] if module in reach[m])
        placed.update(group)
        found.append(group)
    return found
