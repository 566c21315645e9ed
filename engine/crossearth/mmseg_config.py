"""Reads mmseg/mmengine Python config files without executing them.

A config is a Python file of top-level assignments; `_base_` names parent files (relative to
the file) whose variables are merged first, and `{{_base_.a.b}}` inserts a value from them.
The file is parsed with `ast` and its expressions are evaluated by
engine.crossearth.mmseg_config_eval, which runs no code: a value that would need code to run
is recorded as unreadable; reading such a value later raises an error naming the variable, so a
config that merely contains such code in parts the converter does not need still works.
Reading is bounded (engine.crossearth.mmseg_config_limits): a broken or hostile config is a
one-line error, never a hang or a memory blow-up.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from engine.crossearth.mmseg_config_eval import BASE_REF_CALL, Evaluator, Unreadable, describe
from engine.crossearth.mmseg_config_limits import (
    MAX_DEPTH,
    MAX_EXPONENT,
    MAX_FILES,
    MAX_FORMAT_WIDTH,
    MAX_INT,
    MAX_INT_TEXT,
    MAX_SIZE,
    MAX_SOURCE_BYTES,
    MAX_STEPS,
    MAX_WORK,
    Budget,
    clip,
    short_repr,
)
from engine.errors import CrossEarthError

# Callers import the reader's whole interface from here, what it shares with the evaluator too.
__all__ = [
    "DELETE_KEY",
    "MAX_DEPTH",
    "MAX_EXPONENT",
    "MAX_FILES",
    "MAX_FORMAT_WIDTH",
    "MAX_INT",
    "MAX_INT_TEXT",
    "MAX_SIZE",
    "MAX_SOURCE_BYTES",
    "MAX_STEPS",
    "MAX_WORK",
    "Unreadable",
    "lookup",
    "merge",
    "read_config",
    "short_repr",
]

DELETE_KEY = "_delete_"
_BASE_REF = re.compile(r"\{\{\s*_base_\.([A-Za-z_][\w.]*)\s*\}\}")


def _target_name(target: ast.expr) -> str:
    if isinstance(target, ast.Name):
        return target.id
    if isinstance(target, (ast.Tuple, ast.List)):
        return ", ".join(_target_name(t) for t in target.elts[:4])
    return describe(target)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """mmengine's rule: dicts merge key by key unless the override says `_delete_=True`;
    every other value replaces the base's."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict):
            value = dict(value)
            delete = value.pop(DELETE_KEY, False)
            if not delete and isinstance(result.get(key), dict):
                result[key] = merge(result[key], value)
                continue
            result[key] = merge({}, value)
        else:
            result[key] = value
    return result


def _read_text(path: Path, budget: Budget) -> str:
    try:
        if not path.is_file():
            if path.exists():
                raise CrossEarthError(
                    f"config file {path} is not a regular file; give the path of a .py config"
                )
            raise CrossEarthError(f"config file {path} does not exist")
        with open(path, "rb") as handle:
            data = handle.read(MAX_SOURCE_BYTES - budget.bytes + 1)
    except OSError as exc:
        raise CrossEarthError(f"cannot read config file {path}: {exc.strerror}") from None
    if budget.bytes + len(data) > MAX_SOURCE_BYTES:
        what = "is" if budget.bytes == 0 else "and the config files read before it are"
        raise CrossEarthError(
            f"config file {path} {what} larger than {MAX_SOURCE_BYTES >> 10} kB; an mmseg "
            "config is a few kB of Python: check that this is the right file"
        )
    budget.bytes += len(data)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise CrossEarthError(
            f"config file {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
            "save it with UTF-8 encoding"
        ) from None


def _parse(path: Path, budget: Budget) -> ast.Module:
    text = _read_text(path, budget)
    text = _BASE_REF.sub(lambda m: f'{BASE_REF_CALL}("{m.group(1)}")', text)
    try:
        return ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        hint = ""
        if "nested" in str(exc.msg) or "too complex" in str(exc.msg):
            hint = "; a config needs only a few levels of brackets"
        raise CrossEarthError(
            f"config file {path} is not valid Python (line {exc.lineno}: {clip(exc.msg, 200)})"
            + hint
        ) from None
    except ValueError as exc:  # null bytes (Python < 3.12)
        raise CrossEarthError(
            f"config file {path} is not valid Python ({clip(str(exc))}); is it a text file?"
        ) from None
    except (RecursionError, MemoryError):
        raise CrossEarthError(
            f"config file {path} nests brackets or operators too deeply for Python's parser; "
            "a config needs only a few levels"
        ) from None


def _base_files(module: ast.Module, path: Path, budget: Budget) -> list[Path]:
    for statement in module.body:
        if isinstance(statement, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_base_" for t in statement.targets
        ):
            evaluator = Evaluator({}, {}, path, budget)
            evaluator.variable, evaluator.line = "_base_", statement.lineno
            value = evaluator.eval(statement.value)
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
                raise CrossEarthError(f"{path}: _base_ must be a file name or a list of them")
            files = []
            for name in names:
                try:
                    files.append((path.parent / name).resolve())
                except (OSError, ValueError, RuntimeError):
                    raise CrossEarthError(
                        f"{path}: _base_ names {short_repr(name)}, which is not a usable file path"
                    ) from None
            return files
    return []


def _is_read_base(statement: ast.stmt) -> bool:
    """`with read_base():`, mmengine's new-style config imports."""
    if not isinstance(statement, ast.With):
        return False
    for item in statement.items:
        call = item.context_expr
        if isinstance(call, ast.Call) and describe(call.func).split(".")[-1] == "read_base":
            return True
    return False


def read_config(
    path: str | Path, _chain: tuple[Path, ...] = (), _budget: Budget | None = None
) -> dict[str, Any]:
    """The config's variables with every _base_ merged in, as plain Python values (Unreadable
    where a value needs code to be run)."""
    path = Path(path).resolve()
    if path in _chain:
        cycle = " -> ".join(p.name for p in (*_chain, path))
        raise CrossEarthError(f"config _base_ files include each other: {cycle}")
    if path.suffix != ".py":
        raise CrossEarthError(
            f"{path} is not a Python config (.py); YAML/JSON configs are not read"
        )
    budget = _budget or Budget()
    budget.files += 1
    if budget.files > MAX_FILES:
        raise CrossEarthError(
            f"{path}: the config and its _base_ files make more than {MAX_FILES} files to read; "
            "check the _base_ lists for files included again and again"
        )
    try:
        return _read(path, _chain, budget)
    except (RecursionError, MemoryError) as exc:
        raise CrossEarthError(
            f"config file {path} nests too deeply to be read ({type(exc).__name__}); a config "
            "needs only a few levels of brackets and _base_ files"
        ) from None


def _read(path: Path, chain_: tuple[Path, ...], budget: Budget) -> dict[str, Any]:
    module = _parse(path, budget)
    base: dict[str, Any] = {}
    for base_path in _base_files(module, path, budget):
        parent = read_config(base_path, (*chain_, path), budget)
        duplicated = sorted(set(parent) & set(base))
        if duplicated:
            raise CrossEarthError(
                f"{path}: _base_ files define the same variable(s) "
                f"{clip(', '.join(duplicated), 200)}"
            )
        base.update(parent)
    names: dict[str, Any] = {}
    evaluator = Evaluator(names, base, path, budget)
    for statement in module.body:
        if _is_read_base(statement):
            raise CrossEarthError(
                f"{path} uses mmengine's new-style 'read_base' imports; use the classic "
                "_base_ = [...] config of the model instead"
            )
        if isinstance(statement, ast.Assign):
            evaluator.variable = _target_name(statement.targets[0])
            evaluator.line = statement.lineno
            value = evaluator.eval(statement.value)
            for target in statement.targets:
                scope: dict[str, Any] = {}
                if (failure := evaluator.bind(target, value, scope)) is not None:
                    # `a, b = f()`: reading a or b later says why they are unknown.
                    scope = {n.id: failure for n in ast.walk(target) if isinstance(n, ast.Name)}
                names.update(scope)
        elif (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and statement.value is not None
        ):
            evaluator.variable, evaluator.line = statement.target.id, statement.lineno
            names[statement.target.id] = evaluator.eval(statement.value)
    names.pop("_base_", None)
    own = {k: v for k, v in names.items() if not k.startswith("__")}
    # merge() copies nested dicts: what it walks is bounded like the evaluation itself.
    evaluator.variable = "(merging with _base_)"
    for value in own.values():
        evaluator.spend(evaluator.size(value), None)
    return merge(base, own)


def lookup(config: dict[str, Any], dotted: str, default: Any = ..., source: str = "config") -> Any:
    """config['a']['b'] for 'a.b', with an error naming the path when it is missing or could
    not be read without running code."""
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            if default is not ...:
                return default
            raise CrossEarthError(f"{source} has no '{dotted}'; is this a CrossEarth config?")
        value = value[part]
    if isinstance(value, Unreadable):
        raise CrossEarthError(
            f"{source}: '{dotted}' cannot be read without executing the config ({value.reason})"
        )
    return value
