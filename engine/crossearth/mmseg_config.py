"""Reads mmseg/mmengine Python config files without executing them.

A config is a Python file of top-level assignments; `_base_` names parent files (relative to
the file) whose variables are merged first, and `{{_base_.a.b}}` inserts a value from them.
The file is parsed with `ast` and only literal-like expressions are evaluated: constants,
containers, names assigned earlier, `dict(...)`, arithmetic, comprehensions and a few pure
builtins. Anything else (a function call with effects, an import that is used) is recorded as
unreadable; reading such a value later raises an error naming the variable, so a config that
merely contains such code in parts the converter does not need still works.
"""

from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CrossEarthError

DELETE_KEY = "_delete_"
_BASE_REF = re.compile(r"\{\{\s*_base_\.([A-Za-z_][\w.]*)\s*\}\}")
_BASE_REF_CALL = "__crossearth_base_ref__"
_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_BUILTINS = {
    "dict": dict,
    "list": list,
    "tuple": tuple,
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "range": range,
    "len": len,
    "min": min,
    "max": max,
    "abs": abs,
    "round": round,
    "sum": sum,
}


@dataclass(frozen=True)
class Unreadable:
    """A value the reader could not evaluate without running code."""

    reason: str


class _Evaluator:
    def __init__(self, names: dict[str, Any], base: dict[str, Any], source: Path) -> None:
        self.names = names
        self.base = base
        self.source = source

    def eval(self, node: ast.AST, scope: dict[str, Any] | None = None) -> Any:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            return Unreadable(f"{type(node).__name__} expression at line {node.lineno}")
        return method(node, scope or {})

    def _Constant(self, node: ast.Constant, scope: dict[str, Any]) -> Any:
        return node.value

    def _List(self, node: ast.List, scope: dict[str, Any]) -> Any:
        return self._sequence(node.elts, scope)

    def _Tuple(self, node: ast.Tuple, scope: dict[str, Any]) -> Any:
        return tuple(self._sequence(node.elts, scope))

    def _Set(self, node: ast.Set, scope: dict[str, Any]) -> Any:
        return self._hashable(set, self._sequence(node.elts, scope))

    def _sequence(self, elements: list[ast.expr], scope: dict[str, Any]) -> list[Any]:
        values: list[Any] = []
        for element in elements:
            if isinstance(element, ast.Starred):
                inner = self.eval(element.value, scope)
                if isinstance(inner, Unreadable):
                    values.append(inner)
                else:
                    values.extend(inner)
            else:
                values.append(self.eval(element, scope))
        return values

    @staticmethod
    def _hashable(kind: type, values: list[Any]) -> Any:
        try:
            return kind(values)
        except TypeError as exc:
            return Unreadable(str(exc))

    def _Dict(self, node: ast.Dict, scope: dict[str, Any]) -> Any:
        result: dict[Any, Any] = {}
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:  # {**other}
                inner = self.eval(value, scope)
                if isinstance(inner, dict):
                    result.update(inner)
                else:
                    return Unreadable(f"'**' of a non-dict at line {node.lineno}")
                continue
            evaluated_key = self.eval(key, scope)
            if isinstance(evaluated_key, Unreadable):
                return evaluated_key
            result[evaluated_key] = self.eval(value, scope)
        return result

    def _Name(self, node: ast.Name, scope: dict[str, Any]) -> Any:
        if node.id in scope:
            return scope[node.id]
        if node.id in self.names:
            return self.names[node.id]
        if node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        return Unreadable(f"name '{node.id}' (line {node.lineno}) is not defined in the file")

    def _BinOp(self, node: ast.BinOp, scope: dict[str, Any]) -> Any:
        left, right = self.eval(node.left, scope), self.eval(node.right, scope)
        return self._apply(_BINARY.get(type(node.op)), node, left, right)

    def _UnaryOp(self, node: ast.UnaryOp, scope: dict[str, Any]) -> Any:
        return self._apply(_UNARY.get(type(node.op)), node, self.eval(node.operand, scope))

    def _Compare(self, node: ast.Compare, scope: dict[str, Any]) -> Any:
        left = self.eval(node.left, scope)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = self.eval(comparator, scope)
            result = self._apply(_COMPARE.get(type(op)), node, left, right)
            if isinstance(result, Unreadable) or not result:
                return result
            left = right
        return True

    def _BoolOp(self, node: ast.BoolOp, scope: dict[str, Any]) -> Any:
        value: Any = None
        for operand in node.values:
            value = self.eval(operand, scope)
            if isinstance(value, Unreadable):
                return value
            if isinstance(node.op, ast.And) and not value:
                return value
            if isinstance(node.op, ast.Or) and value:
                return value
        return value

    def _IfExp(self, node: ast.IfExp, scope: dict[str, Any]) -> Any:
        test = self.eval(node.test, scope)
        if isinstance(test, Unreadable):
            return test
        return self.eval(node.body if test else node.orelse, scope)

    def _Subscript(self, node: ast.Subscript, scope: dict[str, Any]) -> Any:
        container = self.eval(node.value, scope)
        index = self.eval(node.slice, scope)
        return self._apply(operator.getitem, node, container, index)

    def _Slice(self, node: ast.Slice, scope: dict[str, Any]) -> Any:
        parts = [
            None if p is None else self.eval(p, scope) for p in (node.lower, node.upper, node.step)
        ]
        if any(isinstance(p, Unreadable) for p in parts):
            return Unreadable(f"slice at line {node.lineno}")
        return slice(*parts)

    def _JoinedStr(self, node: ast.JoinedStr, scope: dict[str, Any]) -> Any:
        pieces = []
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                if value.format_spec is not None or value.conversion != -1:
                    return Unreadable(f"formatted string at line {node.lineno}")
                inner = self.eval(value.value, scope)
                if isinstance(inner, Unreadable):
                    return inner
                pieces.append(str(inner))
            else:
                pieces.append(str(self.eval(value, scope)))
        return "".join(pieces)

    def _Call(self, node: ast.Call, scope: dict[str, Any]) -> Any:
        if isinstance(node.func, ast.Name) and node.func.id == _BASE_REF_CALL:
            return self._base_reference(node.args[0].value)  # type: ignore[attr-defined]
        if not isinstance(node.func, ast.Name) or node.func.id not in _BUILTINS:
            name = ast.unparse(node.func)
            return Unreadable(f"call of '{name}' at line {node.lineno}")
        args = self._sequence(node.args, scope)
        kwargs: dict[str, Any] = {}
        for keyword in node.keywords:
            value = self.eval(keyword.value, scope)
            if keyword.arg is None:
                if not isinstance(value, dict):
                    return Unreadable(f"'**' of a non-dict at line {node.lineno}")
                kwargs.update(value)
            else:
                kwargs[keyword.arg] = value
        function = _BUILTINS[node.func.id]
        if function is dict:
            result = dict(*args) if args else {}
            result.update(kwargs)
            return result
        if any(isinstance(a, Unreadable) for a in [*args, *kwargs.values()]):
            return Unreadable(
                f"call of '{node.func.id}' on an unreadable value at line {node.lineno}"
            )
        try:
            value = function(*args, **kwargs)
        except Exception as exc:
            return Unreadable(f"'{node.func.id}' failed at line {node.lineno}: {exc}")
        return list(value) if isinstance(value, range) else value

    def _comprehension(self, node: Any, scope: dict[str, Any], build: Any) -> Any:
        results: list[Any] = []

        def walk(index: int, local: dict[str, Any]) -> Unreadable | None:
            if index == len(node.generators):
                results.append(build(local))
                return None
            generator = node.generators[index]
            iterable = self.eval(generator.iter, local)
            if isinstance(iterable, Unreadable):
                return iterable
            for item in iterable:
                inner = dict(local)
                failure = self._bind(generator.target, item, inner)
                if failure is not None:
                    return failure
                keep = True
                for condition in generator.ifs:
                    test = self.eval(condition, inner)
                    if isinstance(test, Unreadable):
                        return test
                    keep = keep and bool(test)
                if keep and (failure := walk(index + 1, inner)) is not None:
                    return failure
            return None

        failure = walk(0, dict(scope))
        return failure if failure is not None else results

    def _bind(self, target: ast.expr, value: Any, scope: dict[str, Any]) -> Unreadable | None:
        if isinstance(target, ast.Name):
            scope[target.id] = value
            return None
        if isinstance(target, (ast.Tuple, ast.List)):
            items = list(value)
            if len(items) != len(target.elts):
                return Unreadable(f"unpacking mismatch at line {target.lineno}")
            for sub_target, item in zip(target.elts, items, strict=True):
                if (failure := self._bind(sub_target, item, scope)) is not None:
                    return failure
            return None
        return Unreadable(f"comprehension target at line {target.lineno}")

    def _ListComp(self, node: ast.ListComp, scope: dict[str, Any]) -> Any:
        return self._comprehension(node, scope, lambda local: self.eval(node.elt, local))

    _GeneratorExp = _ListComp

    def _DictComp(self, node: ast.DictComp, scope: dict[str, Any]) -> Any:
        pairs = self._comprehension(
            node, scope, lambda local: (self.eval(node.key, local), self.eval(node.value, local))
        )
        return pairs if isinstance(pairs, Unreadable) else dict(pairs)

    def _base_reference(self, dotted: str) -> Any:
        value: Any = self.base
        for part in dotted.split("."):
            if not isinstance(value, dict) or part not in value:
                raise CrossEarthError(
                    f"{self.source}: '{{{{_base_.{dotted}}}}}' refers to a variable that no "
                    "_base_ file defines"
                )
            value = value[part]
        return value

    @staticmethod
    def _apply(function: Any, node: ast.AST, *values: Any) -> Any:
        if function is None:
            return Unreadable(f"operator at line {node.lineno}")  # type: ignore[attr-defined]
        for value in values:
            if isinstance(value, Unreadable):
                return value
        try:
            return function(*values)
        except Exception as exc:
            return Unreadable(f"expression at line {node.lineno} failed: {exc}")  # type: ignore[attr-defined]


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


def _parse(path: Path) -> ast.Module:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CrossEarthError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise CrossEarthError(f"cannot read config file {path}: {exc.strerror}") from exc
    text = _BASE_REF.sub(lambda m: f'{_BASE_REF_CALL}("{m.group(1)}")', text)
    try:
        return ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise CrossEarthError(
            f"config file {path} is not valid Python (line {exc.lineno}: {exc.msg})"
        ) from None


def _base_files(module: ast.Module, path: Path) -> list[Path]:
    for statement in module.body:
        if isinstance(statement, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_base_" for t in statement.targets
        ):
            value = _Evaluator({}, {}, path).eval(statement.value)
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
                raise CrossEarthError(f"{path}: _base_ must be a file name or a list of them")
            return [(path.parent / name).resolve() for name in names]
    return []


def read_config(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
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
    module = _parse(path)
    base: dict[str, Any] = {}
    for base_path in _base_files(module, path):
        parent = read_config(base_path, (*_chain, path))
        duplicated = sorted(set(parent) & set(base))
        if duplicated:
            raise CrossEarthError(
                f"{path}: _base_ files define the same variable(s) {', '.join(duplicated)}"
            )
        base.update(parent)
    names: dict[str, Any] = {}
    evaluator = _Evaluator(names, base, path)
    for statement in module.body:
        if isinstance(statement, ast.With) and "read_base" in ast.unparse(statement.items[0]):
            raise CrossEarthError(
                f"{path} uses mmengine's new-style 'read_base' imports; use the classic "
                "_base_ = [...] config of the model instead"
            )
        if isinstance(statement, ast.Assign):
            value = evaluator.eval(statement.value)
            for target in statement.targets:
                scope: dict[str, Any] = {}
                if evaluator._bind(target, value, scope) is None:
                    names.update(scope)
        elif (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and statement.value is not None
        ):
            names[statement.target.id] = evaluator.eval(statement.value)
    names.pop("_base_", None)
    own = {k: v for k, v in names.items() if not k.startswith("__")}
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
