"""Every public engine function says what it does: the engine is the library other code calls."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "engine"


def undocumented(source: str, where: str) -> list[str]:
    """Public module-level functions and public methods of public classes without a docstring,
    as 'where:line name'."""
    missing = []
    for node in ast.parse(source).body:
        items = [node]
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            items += node.body
        for item in items:
            if (
                isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                and not item.name.startswith("_")
                and ast.get_docstring(item) is None
            ):
                missing.append(f"{where}:{item.lineno} {item.name}")
    return missing


def test_every_public_engine_function_has_a_docstring() -> None:
    files = sorted(ENGINE.rglob("*.py"))
    assert len(files) > 20  # the walk found the engine
    missing = [
        name
        for path in files
        for name in undocumented(path.read_text(encoding="utf-8"), str(path.relative_to(ENGINE)))
    ]
    assert not missing, "public engine functions without a docstring:\n" + "\n".join(missing)


def test_the_check_sees_functions_methods_and_skips_private_ones() -> None:
    source = '''
def public(): pass
def _private(): pass
def documented():
    """Says why."""
class Public:
    def method(self): pass
    def _helper(self): pass
    @property
    def value(self): return 1
class _Private:
    def method(self): pass
'''
    assert undocumented(source, "m.py") == [
        "m.py:2 public",
        "m.py:7 method",
        "m.py:10 value",
    ]
