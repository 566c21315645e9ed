"""The house's countable rules, read from the tree: module and function sizes, the engine's
top level, and import cycles (function-level imports counted).

`python -m tests.house_rules` prints the figures; tests/test_architecture.py pins them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "training", "crossearth_qgis")
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80
MAX_LONG_FUNCTIONS = 3
MAX_ENGINE_TOP_MODULES = 8


@dataclass(frozen=True)
class LongFunction:
    path: str
    line: int
    name: str
    lines: int
    why: str  # the comment right above the definition ("" when there is none)


def source_files(packages: tuple[str, ...] = PACKAGES) -> Iterator[Path]:
    for package in packages:
        yield from sorted((REPO / package).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def engine_top_modules() -> list[str]:
    return sorted(p.name for p in (REPO / "engine").glob("*.py") if p.name != "__init__.py")


def long_files(limit: int = MAX_FILE_LINES) -> dict[str, int]:
    counts = {}
    for path in source_files():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > limit:
            counts[str(path.relative_to(REPO))] = lines
    return counts


def long_functions(limit: int = MAX_FUNCTION_LINES) -> list[LongFunction]:
    found = []
    for path in source_files():
        text = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(text))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = node.end_lineno - start + 1
            if length <= limit:
                continue
            above = text[start - 2].strip() if start >= 2 else ""
            why = above.lstrip("# ") if above.startswith("#") else ""
            found.append(LongFunction(str(path.relative_to(REPO)), start, node.name, length, why))
    return sorted(found, key=lambda f: -f.lines)


def _imports(path: Path, known: set[str]) -> set[str]:
    """The repository modules that `path` imports, at any level of its code."""
    module = module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join([*package[: len(package) - (node.level - 1)]])
                base = ".".join(p for p in (base, node.module or "") if p)
            else:
                base = node.module or ""
            names = [f"{base}.{a.name}" for a in node.names]
            names = [name if name in known else base for name in names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
    return targets


def import_graph() -> dict[str, set[str]]:
    paths = list(source_files())
    known = {module_name(p) for p in paths}
    return {module_name(p): _imports(p, known) for p in paths}


def import_cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
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
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def main() -> None:
    top = engine_top_modules()
    print(f"engine top-level modules: {len(top)} ({', '.join(top)})")
    files = long_files()
    print(f"files over {MAX_FILE_LINES} lines: {len(files)}")
    for path, lines in sorted(files.items(), key=lambda item: -item[1]):
        print(f"  {path} {lines}")
    functions = long_functions()
    print(f"functions over {MAX_FUNCTION_LINES} lines: {len(functions)}")
    for f in functions:
        print(f"  {f.path}:{f.line} {f.name} {f.lines}" + (f"  # {f.why}" if f.why else ""))
    cycles = import_cycles()
    print(f"import cycles: {len(cycles)}")
    for group in cycles:
        print("  " + " <-> ".join(group))


if __name__ == "__main__":
    main()
