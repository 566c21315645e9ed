"""Evaluates the expressions of an mmseg config without running code.

Only literal-like expressions are evaluated: constants, containers, names assigned earlier,
`dict(...)`, arithmetic, comprehensions and a few pure builtins. Anything else (a function call
with effects, an import that is used) evaluates to Unreadable, which says why; every step is
metered against the bounds of engine.crossearth.mmseg_config_limits.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.crossearth.mmseg_config_limits import (
    CONTAINERS,
    FIX_FLAT,
    ITERABLES,
    MAX_DEPTH,
    MAX_EXPONENT,
    MAX_INT_TEXT,
    MAX_SIZE,
    MAX_STEPS,
    SEQUENCES,
    Budget,
    Meter,
    clip,
)
from engine.errors import CrossEarthError

# `{{_base_.a.b}}` in a config's text is rewritten into a call of this name before parsing.
BASE_REF_CALL = "__crossearth_base_ref__"

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
_BUILTINS: dict[str, Callable[..., Any]] = {
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


class Evaluator(Meter):
    """Evaluates one file's expressions over the names it assigned and its _base_ values."""

    def __init__(
        self,
        names: dict[str, Any],
        base: dict[str, Any],
        source: Path,
        budget: Budget | None = None,
    ) -> None:
        super().__init__(source, budget)
        self.names = names
        self.base = base
        self._depth = 0

    def eval(self, node: ast.AST, scope: dict[str, Any] | None = None) -> Any:
        """The value of one expression of the config, within the step and depth budgets."""
        self.budget.steps += 1
        if self.budget.steps > MAX_STEPS:
            raise self._fail(node, f"evaluating the config takes more than {MAX_STEPS} steps")
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None or not isinstance(node, ast.expr):
            line = getattr(node, "lineno", self.line)
            return Unreadable(f"{type(node).__name__} expression at line {line}")
        if self._depth >= MAX_DEPTH:
            raise self._fail(node, f"the expression nests deeper than {MAX_DEPTH} levels", FIX_FLAT)
        self._depth += 1
        try:
            value = method(node, scope or {})
        finally:
            self._depth -= 1
        self._check(value, node)
        return value

    def _Constant(self, node: ast.Constant, scope: dict[str, Any]) -> Any:
        return node.value

    def _List(self, node: ast.List, scope: dict[str, Any]) -> Any:
        return self._sequence(node.elts, scope)

    def _Tuple(self, node: ast.Tuple, scope: dict[str, Any]) -> Any:
        values = self._sequence(node.elts, scope)
        return values if isinstance(values, Unreadable) else tuple(values)

    def _Set(self, node: ast.Set, scope: dict[str, Any]) -> Any:
        values = self._sequence(node.elts, scope)
        if isinstance(values, Unreadable):
            return values
        self.spend(sum(self.size(v, node) for v in values), node)  # hashing walks each value
        return self._hashable(set, values)

    def _sequence(self, elements: list[ast.expr], scope: dict[str, Any]) -> Any:
        values: list[Any] = []
        for element in elements:
            if isinstance(element, ast.Starred):
                inner = self.eval(element.value, scope)
                if isinstance(inner, Unreadable):
                    values.append(inner)
                elif isinstance(inner, ITERABLES):
                    self.spend(len(inner), element)
                    values.extend(inner)
                else:
                    return Unreadable(f"'*' of a non-sequence at line {element.lineno}")
            else:
                values.append(self.eval(element, scope))
        self.spend(len(values), None)
        return values

    @staticmethod
    def _hashable(kind: type, values: list[Any]) -> Any:
        try:
            return kind(values)
        except TypeError as exc:
            return Unreadable(clip(str(exc), 200))

    def _Dict(self, node: ast.Dict, scope: dict[str, Any]) -> Any:
        result: dict[Any, Any] = {}
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:  # {**other}
                inner = self.eval(value, scope)
                if not isinstance(inner, dict):
                    return Unreadable(f"'**' of a non-dict at line {node.lineno}")
                self.spend(len(inner), node)
                result.update(inner)
                continue
            evaluated_key = self.eval(key, scope)
            if isinstance(evaluated_key, Unreadable):
                return evaluated_key
            self.spend(self.size(evaluated_key, node), node)  # hashing walks the key
            evaluated = self.eval(value, scope)
            try:
                result[evaluated_key] = evaluated
            except TypeError as exc:
                return Unreadable(f"dict key at line {node.lineno}: {clip(str(exc), 200)}")
        return result

    def _Name(self, node: ast.Name, scope: dict[str, Any]) -> Any:
        if node.id in scope:
            return scope[node.id]
        if node.id in self.names:
            return self.names[node.id]
        if node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        return Unreadable(f"name '{clip(node.id)}' (line {node.lineno}) is not defined in the file")

    def _BinOp(self, node: ast.BinOp, scope: dict[str, Any]) -> Any:
        left, right = self.eval(node.left, scope), self.eval(node.right, scope)
        if not isinstance(left, Unreadable) and not isinstance(right, Unreadable):
            self._guard_binary(node, left, right)
        return self._apply(_BINARY.get(type(node.op)), node, left, right)

    def _UnaryOp(self, node: ast.UnaryOp, scope: dict[str, Any]) -> Any:
        return self._apply(_UNARY.get(type(node.op)), node, self.eval(node.operand, scope))

    def _Compare(self, node: ast.Compare, scope: dict[str, Any]) -> Any:
        left = self.eval(node.left, scope)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = self.eval(comparator, scope)
            if not isinstance(left, Unreadable) and not isinstance(right, Unreadable):
                self.spend(self.size(left, node) + self.size(right, node), node)
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
        if isinstance(index, Unreadable):
            return index
        self.spend(self.size(index, node), node)  # a dict lookup hashes the key
        value = self._apply(operator.getitem, node, container, index)
        if isinstance(index, slice) and isinstance(value, SEQUENCES):
            self.spend(len(value), node)
        return value

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
                self.spend(self.size(inner, node), node)
                pieces.append(str(inner))
            else:
                pieces.append(str(self.eval(value, scope)))
        return "".join(pieces)

    def _Call(self, node: ast.Call, scope: dict[str, Any]) -> Any:
        if isinstance(node.func, ast.Name) and node.func.id == BASE_REF_CALL:
            return self._base_reference(node)
        if not isinstance(node.func, ast.Name) or node.func.id not in _BUILTINS:
            return Unreadable(f"call of '{describe(node.func)}' at line {node.lineno}")
        args = self._sequence(node.args, scope)
        if isinstance(args, Unreadable):
            return args
        kwargs: dict[str, Any] = {}
        for keyword in node.keywords:
            value = self.eval(keyword.value, scope)
            if keyword.arg is None:
                if not isinstance(value, dict):
                    return Unreadable(f"'**' of a non-dict at line {node.lineno}")
                self.spend(len(value), node)
                kwargs.update(value)
            else:
                kwargs[keyword.arg] = value
        name = node.func.id
        function = _BUILTINS[name]
        if function is dict:
            # dict(a=<unreadable>) keeps the unreadable value: it only fails if it is read.
            if any(isinstance(a, Unreadable) for a in args):
                return next(a for a in args if isinstance(a, Unreadable))
            self.spend(sum(self.size(a, node) for a in args), node)  # keys are hashed
            try:
                result = dict(*args) if args else {}
                result.update(kwargs)
            except (TypeError, ValueError) as exc:
                return Unreadable(f"'dict' failed at line {node.lineno}: {clip(str(exc), 200)}")
            self.spend(len(result), node)
            return result
        if any(isinstance(a, Unreadable) for a in [*args, *kwargs.values()]):
            return Unreadable(f"call of '{name}' on an unreadable value at line {node.lineno}")
        self.spend(sum(self.size(a, node) for a in [*args, *kwargs.values()]), node)
        refused = self._guard_call(node, name, args, kwargs)
        if refused is not None:
            return refused
        try:
            value = function(*args, **kwargs)
        except Exception as exc:
            return Unreadable(f"'{name}' failed at line {node.lineno}: {clip(str(exc), 200)}")
        if isinstance(value, range):
            value = list(value)
        if isinstance(value, (str, bytes, *CONTAINERS)):
            self.spend(len(value), node)
        return value

    def _guard_call(
        self, node: ast.Call, name: str, args: list[Any], kwargs: dict[str, Any]
    ) -> Unreadable | None:
        """Refuses builtin calls whose work or result would be huge before they run."""
        if name == "range":
            try:
                numbers = range(*args, **kwargs)
            except (TypeError, ValueError):
                return None  # the call fails and says why
            # len() raises OverflowError beyond 2**63; the arithmetic does not.
            step = numbers.step
            span = numbers.stop - numbers.start if step > 0 else numbers.start - numbers.stop
            length = max(0, (span + abs(step) - 1) // abs(step))
            if length > MAX_SIZE:
                raise self._fail(node, f"range(...) of {length} numbers is longer than {MAX_SIZE}")
        elif name == "int" and args and isinstance(args[0], (str, bytes)):
            if len(args[0]) > MAX_INT_TEXT:
                raise self._fail(
                    node, f"int() of a text of {len(args[0])} characters (at most {MAX_INT_TEXT})"
                )
        elif name == "round":
            digits = args[1] if len(args) > 1 else kwargs.get("ndigits")
            if isinstance(digits, int) and abs(digits) > MAX_EXPONENT:
                raise self._fail(node, f"round(..., {digits}) asks for more than 64 digits")
        elif name == "sum":
            numeric = (int, float, complex)
            items = args[0] if args else kwargs.get("iterable", ())
            start = args[1] if len(args) > 1 else kwargs.get("start", 0)
            if not isinstance(start, numeric) or not all(
                isinstance(v, numeric) for v in (items if isinstance(items, ITERABLES) else ())
            ):
                # sum() of lists or texts takes time that grows with the square of the result.
                return Unreadable(f"'sum' of non-numbers at line {node.lineno}")
        return None

    def _comprehension(self, node: Any, scope: dict[str, Any], build: Any) -> Any:
        if self._depth + len(node.generators) > MAX_DEPTH:
            raise self._fail(node, f"the expression nests deeper than {MAX_DEPTH} levels", FIX_FLAT)
        results: list[Any] = []

        def walk(index: int, local: dict[str, Any]) -> Unreadable | None:
            if index == len(node.generators):
                results.append(build(local))
                return None
            generator = node.generators[index]
            iterable = self.eval(generator.iter, local)
            if isinstance(iterable, Unreadable):
                return iterable
            if not isinstance(iterable, ITERABLES):
                return Unreadable(f"loop over {type(iterable).__name__} at line {node.lineno}")
            for item in iterable:
                self.spend(len(local) + 1, node)
                inner = dict(local)
                failure = self.bind(generator.target, item, inner)
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

    def bind(self, target: ast.expr, value: Any, scope: dict[str, Any]) -> Unreadable | None:
        """Assigns `value` to the names of `target` in `scope`; an Unreadable says why not."""
        if isinstance(target, ast.Name):
            scope[target.id] = value
            return None
        if isinstance(target, (ast.Tuple, ast.List)):
            if isinstance(value, Unreadable):
                return value
            if not isinstance(value, ITERABLES):
                return Unreadable(f"unpacking of a {type(value).__name__} at line {target.lineno}")
            self.spend(len(value), target)
            items = list(value)
            if len(items) != len(target.elts):
                return Unreadable(f"unpacking mismatch at line {target.lineno}")
            for sub_target, item in zip(target.elts, items, strict=True):
                if (failure := self.bind(sub_target, item, scope)) is not None:
                    return failure
            return None
        return Unreadable(f"assignment target at line {target.lineno}")

    def _ListComp(self, node: ast.ListComp, scope: dict[str, Any]) -> Any:
        return self._comprehension(node, scope, lambda local: self.eval(node.elt, local))

    _GeneratorExp = _ListComp

    def _DictComp(self, node: ast.DictComp, scope: dict[str, Any]) -> Any:
        def pair(local: dict[str, Any]) -> tuple[Any, Any]:
            key = self.eval(node.key, local)
            self.spend(self.size(key, node), node)  # hashing walks the key
            return key, self.eval(node.value, local)

        pairs = self._comprehension(node, scope, pair)
        return pairs if isinstance(pairs, Unreadable) else self._hashable(dict, pairs)

    def _base_reference(self, node: ast.Call) -> Any:
        argument = node.args[0] if len(node.args) == 1 and not node.keywords else None
        if not isinstance(argument, ast.Constant) or not isinstance(argument.value, str):
            return Unreadable(f"call of '{BASE_REF_CALL}' at line {node.lineno}")
        dotted = argument.value
        value: Any = self.base
        for part in dotted.split("."):
            if not isinstance(value, dict) or part not in value:
                raise CrossEarthError(
                    f"{self.source}: '{{{{_base_.{clip(dotted)}}}}}' refers to a variable that "
                    "no _base_ file defines"
                )
            value = value[part]
        return value

    @staticmethod
    def _apply(function: Any, node: ast.AST, *values: Any) -> Any:
        line = getattr(node, "lineno", "?")
        if function is None:
            return Unreadable(f"operator at line {line}")
        for value in values:
            if isinstance(value, Unreadable):
                return value
        try:
            return function(*values)
        except Exception as exc:
            return Unreadable(f"expression at line {line} failed: {clip(str(exc), 200)}")


def describe(node: ast.AST) -> str:
    """A short text of an expression for messages (ast.unparse recurses on deep trees)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute) and len(parts) < 8:
        parts.append(node.attr)
        node = node.value
    parts.append(node.id if isinstance(node, ast.Name) else "...")
    return clip(".".join(reversed(parts)))
