"""engine/error_codes.py names every error code once: each raise uses a constant, the command
line and the plugin word every code, and docs/errors.md is the table's own output."""

from __future__ import annotations

import ast
import json
import pickle
from pathlib import Path

from engine import error_codes
from engine.commands.cli_messages import CLI_WORDING
from engine.error_codes import ALL, ErrorCode
from engine.errors import OutputError

REPO = Path(__file__).resolve().parents[1]


def _sources():
    for package in ("engine", "training"):
        yield from sorted((REPO / package).rglob("*.py"))


def _plugin_names(name: str) -> set[str]:
    """The keys (a dict) or members (a frozenset of a tuple) of a plugin constant, read
    without importing the plugin."""
    tree = ast.parse((REPO / "crossearth_qgis/worker/engine_errors.py").read_text("utf-8"))
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign):
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == name:
            value = node.value
            if isinstance(value, ast.Dict):
                return {key.value for key in value.keys}
            return set(ast.literal_eval(value.args[0]))
    raise AssertionError(f"the plugin has no {name}")


def test_no_raise_spells_a_code_out():
    literal = []
    for path in _sources():
        if path.name == "error_codes.py":
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.keyword) and node.arg == "code":
                value = node.value
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                is_default = any(getattr(t, "id", "") == "default_code" for t in targets)
                value = node.value if is_default else None
            else:
                continue
            if isinstance(value, (ast.Constant, ast.JoinedStr)):
                literal.append(f"{path.relative_to(REPO)}:{value.lineno}")
    assert literal == []


def test_every_code_is_used_and_every_used_code_is_defined():
    used = set()
    for path in _sources():
        text = path.read_text("utf-8")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.module == "engine.error_codes":
                used |= {alias.name for alias in node.names}
    constants = {name for name, value in vars(error_codes).items() if isinstance(value, ErrorCode)}
    assert used - constants == set()
    unused = {name for name in constants - used if name not in ("ERROR",)}
    assert unused == set(), "codes nothing raises: remove them"


def test_every_code_has_wording_in_the_plugin_and_the_cli_words_only_codes():
    worded = _plugin_names("WORDING")
    as_is = _plugin_names("ENGINE_WORDS")
    assert worded & as_is == set(), "a code is both worded and shown as it is"
    assert worded | as_is == set(ALL), "each code needs plugin wording (WORDING or ENGINE_WORDS)"
    assert set(CLI_WORDING) <= set(ALL)


def test_the_errors_page_is_the_tables_output():
    page = (REPO / "docs" / "errors.md").read_text("utf-8")
    assert page == error_codes.markdown(), "run: python -m engine.error_codes > docs/errors.md"
    assert page.count("\n| `") == len(ALL) >= 70


def test_a_code_is_its_string_everywhere():
    error = OutputError("o exists", code=error_codes.OUTPUT_EXISTS, path="/o.tif")
    assert error.code == "output.exists" and error.code.fix.startswith("allow overwrite")
    assert json.loads(json.dumps({"code": error.code})) == {"code": "output.exists"}
    copied = pickle.loads(pickle.dumps(error))
    assert copied.code == "output.exists" and type(copied.code) is str
