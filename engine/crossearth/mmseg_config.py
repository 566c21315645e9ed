"""Reads mmseg/mmengine Python config files without executing them.

A config is a Python file of top-level assignments; `_base_` names parent files (relative to
the file) whose variables are merged first, and `{{_base_.a.b}}` inserts a value from them.
The file is parsed with `ast` and only literal-like expressions are evaluated: constants,
containers, names assigned earlier, `dict(...)`, arithmetic, comprehensions and a few pure
builtins. Anything else (a function call with effects, an import that is used) is recorded as
unreadable; reading such a value later raises an error naming the variable, so a config that
merely contains such code in parts the converter does not need still works.

A config comes from the user and may be broken or hostile, so reading one is bounded: the file
size, the number of files, the expression steps evaluated, the elements and characters built
or compared, the size and nesting of each value, integer magnitudes and exponents. Crossing a
bound is a one-line error naming the file and the variable, never a hang or a memory blow-up.
Real configs stay far below every bound (the official ones take a few thousand steps).
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from ..errors import CrossEarthError

DELETE_KEY = "_delete_"
_BASE_REF = re.compile(r"\{\{\s*_base_\.([A-Za-z_][\w.]*)\s*\}\}")
_BASE_REF_CALL = "__crossearth_base_ref__"

# Official configs are a few kB; parsing takes ~1 kB of memory and ~1 us per source byte.
MAX_SOURCE_BYTES = 128 << 10  # one config and its _base_ files together
MAX_FILES = 32  # one config and its _base_ files, every read counted
MAX_STEPS = 50_000  # expression nodes evaluated, all files together
MAX_WORK = 1_000_000  # elements and characters built, copied or compared, all files together
MAX_SIZE = 1_000_000  # elements and characters in one value, shared parts counted each time
MAX_DEPTH = 50  # nesting of expressions and of values (Python's stack must hold both)
MAX_INT = 2**64
MAX_EXPONENT = 64
MAX_INT_TEXT = 100  # longest text int() converts (the conversion is quadratic)
MAX_FORMAT_WIDTH = 10_000  # widths and precisions in '%' formatting
_FIX = "a config needs only small literal values; write the value out or remove the expression"
_FLAT = "a config needs only a few levels of nesting; flatten the expression"
_CONTAINERS = (list, tuple, dict, set, frozenset)
_SEQUENCES = (str, bytes, list, tuple)
_ITERABLES = (str, bytes, list, tuple, dict, set, frozenset)
_FORMAT_SPEC = re.compile(r"%%|%(?:\([^)]*\))?[#0 +-]*(\*|[0-9]*)(?:\.(\*|[0-9]*))?")

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


def _clip(text: str, limit: int = 60) -> str:
    """`text` on one line and short enough for an error message."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_repr(value: Any, limit: int = 60) -> str:
    """A short repr for messages; huge values are cut before they are formatted."""
    if isinstance(value, (str, bytes)) and len(value) > limit:
        return _clip(repr(value[:limit]), limit)
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    if isinstance(value, _CONTAINERS) and len(value) > 8:
        return f"a {type(value).__name__} of {len(value)} items"
    try:
        return _clip(repr(value), limit)
    except (RecursionError, ValueError):
        return f"a {type(value).__name__}"


class _Budget:
    """What one read_config call (its _base_ files included) may spend."""

    def __init__(self) -> None:
        self.steps = 0
        self.work = 0
        self.files = 0
        self.bytes = 0


class _Evaluator:
    def __init__(
        self,
        names: dict[str, Any],
        base: dict[str, Any],
        source: Path,
        budget: _Budget | None = None,
    ) -> None:
        self.names = names
        self.base = base
        self.source = source
        self.budget = budget or _Budget()
        # What is being evaluated and where, for error messages.
        self.variable = "?"
        self.line = 0
        self._depth = 0
        # id -> (value, size, depth) of every container seen; holding the value keeps the id
        # from being reused, so sizes of shared parts are computed once.
        self._sizes: dict[int, tuple[Any, int, int]] = {}

    # -- limits ---------------------------------------------------------------------------------

    def _fail(self, node: ast.AST | None, problem: str, fix: str = _FIX) -> CrossEarthError:
        line = getattr(node, "lineno", None) or self.line
        return CrossEarthError(
            f"{self.source}: variable '{_clip(self.variable, 40)}' (line {line}): {problem}; {fix}"
        )

    def _spend(self, amount: int, node: ast.AST | None) -> None:
        self.budget.work += amount
        if self.budget.work > MAX_WORK:
            raise self._fail(
                node,
                f"reading the config builds, copies or compares more than {MAX_WORK} elements "
                "or characters",
            )

    def size(self, value: Any, node: ast.AST | None = None) -> int:
        """Elements and characters of `value` as if every shared part were copied; raises when
        it is over MAX_SIZE or nests deeper than MAX_DEPTH."""
        return self._weigh(value, node, 0)[0]

    def _weigh(self, value: Any, node: ast.AST | None, level: int) -> tuple[int, int]:
        if isinstance(value, (str, bytes)):
            if len(value) > MAX_SIZE:
                raise self._fail(
                    node, f"a text of {len(value)} characters is longer than {MAX_SIZE}"
                )
            return max(len(value), 1), 0
        if not isinstance(value, _CONTAINERS):
            return 1, 0
        known = self._sizes.get(id(value))
        if known is not None:
            return known[1], known[2]
        if level >= MAX_DEPTH:
            raise self._fail(node, f"a value nests deeper than {MAX_DEPTH} levels", _FLAT)
        size, depth = 1, 0
        items = chain.from_iterable(value.items()) if isinstance(value, dict) else value
        for item in items:
            item_size, item_depth = self._weigh(item, node, level + 1)
            size += item_size
            depth = max(depth, item_depth + 1)
            if size > MAX_SIZE:
                raise self._fail(
                    node,
                    f"a {type(value).__name__} would hold more than {MAX_SIZE} elements or "
                    "characters (shared parts counted each time)",
                )
        if depth > MAX_DEPTH:
            raise self._fail(node, f"a value nests deeper than {MAX_DEPTH} levels", _FLAT)
        self._sizes[id(value)] = (value, size, depth)
        return size, depth

    def _check(self, value: Any, node: ast.AST) -> None:
        if type(value) is int:
            if not -MAX_INT <= value <= MAX_INT:
                raise self._fail(node, f"{short_repr(value)} is larger than 2**64")
        elif isinstance(value, (str, bytes, *_CONTAINERS)):
            self.size(value, node)

    def _guard_binary(self, node: ast.BinOp, left: Any, right: Any) -> None:
        """Refuses operations whose result would be huge before they are computed."""
        op = type(node.op)
        if op is ast.Mult:
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, _SEQUENCES) and isinstance(count, int):
                    length = len(sequence) * max(count, 0)
                    if length > MAX_SIZE:
                        raise self._fail(
                            node,
                            f"{short_repr(sequence, 20)} * {short_repr(count)} would hold {length} "
                            f"elements or characters (at most {MAX_SIZE})",
                        )
                    self._spend(length, node)
        elif op is ast.Add:
            if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
                self._spend(len(left) + len(right), node)
        elif op is ast.Pow:
            if isinstance(left, int) and isinstance(right, int) and abs(right) > MAX_EXPONENT:
                raise self._fail(
                    node,
                    f"the exponent in {short_repr(left)} ** {short_repr(right)} is larger than "
                    f"{MAX_EXPONENT}",
                )
        elif op is ast.Mod and isinstance(left, (str, bytes)):
            text = left.decode("latin-1") if isinstance(left, bytes) else left
            for spec in _FORMAT_SPEC.finditer(text):
                for number in spec.groups(""):  # "%%" has no groups
                    # The length test first: int() of 5000 digits is itself refused.
                    if number == "*" or len(number) > 5 or int(number or 0) > MAX_FORMAT_WIDTH:
                        raise self._fail(
                            node,
                            f"the '%' format {short_repr(spec.group(0))} asks for a field wider "
                            f"than {MAX_FORMAT_WIDTH} characters",
                        )
            self._spend(len(left) + self.size(right, node), node)
        elif op is ast.Sub and isinstance(left, (set, frozenset)):
            self._spend(len(left), node)

    # -- evaluation -----------------------------------------------------------------------------

    def eval(self, node: ast.AST, scope: dict[str, Any] | None = None) -> Any:
        self.budget.steps += 1
        if self.budget.steps > MAX_STEPS:
            raise self._fail(node, f"evaluating the config takes more than {MAX_STEPS} steps")
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None or not isinstance(node, ast.expr):
            line = getattr(node, "lineno", self.line)
            return Unreadable(f"{type(node).__name__} expression at line {line}")
        if self._depth >= MAX_DEPTH:
            raise self._fail(node, f"the expression nests deeper than {MAX_DEPTH} levels", _FLAT)
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
        self._spend(sum(self.size(v, node) for v in values), node)  # hashing walks each value
        return self._hashable(set, values)

    def _sequence(self, elements: list[ast.expr], scope: dict[str, Any]) -> Any:
        values: list[Any] = []
        for element in elements:
            if isinstance(element, ast.Starred):
                inner = self.eval(element.value, scope)
                if isinstance(inner, Unreadable):
                    values.append(inner)
                elif isinstance(inner, _ITERABLES):
                    self._spend(len(inner), element)
                    values.extend(inner)
                else:
                    return Unreadable(f"'*' of a non-sequence at line {element.lineno}")
            else:
                values.append(self.eval(element, scope))
        self._spend(len(values), None)
        return values

    @staticmethod
    def _hashable(kind: type, values: list[Any]) -> Any:
        try:
            return kind(values)
        except TypeError as exc:
            return Unreadable(_clip(str(exc), 200))

    def _Dict(self, node: ast.Dict, scope: dict[str, Any]) -> Any:
        result: dict[Any, Any] = {}
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:  # {**other}
                inner = self.eval(value, scope)
                if not isinstance(inner, dict):
                    return Unreadable(f"'**' of a non-dict at line {node.lineno}")
                self._spend(len(inner), node)
                result.update(inner)
                continue
            evaluated_key = self.eval(key, scope)
            if isinstance(evaluated_key, Unreadable):
                return evaluated_key
            self._spend(self.size(evaluated_key, node), node)  # hashing walks the key
            evaluated = self.eval(value, scope)
            try:
                result[evaluated_key] = evaluated
            except TypeError as exc:
                return Unreadable(f"dict key at line {node.lineno}: {_clip(str(exc), 200)}")
        return result

    def _Name(self, node: ast.Name, scope: dict[str, Any]) -> Any:
        if node.id in scope:
            return scope[node.id]
        if node.id in self.names:
            return self.names[node.id]
        if node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        return Unreadable(
            f"name '{_clip(node.id)}' (line {node.lineno}) is not defined in the file"
        )

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
                self._spend(self.size(left, node) + self.size(right, node), node)
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
        self._spend(self.size(index, node), node)  # a dict lookup hashes the key
        value = self._apply(operator.getitem, node, container, index)
        if isinstance(index, slice) and isinstance(value, _SEQUENCES):
            self._spend(len(value), node)
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
                self._spend(self.size(inner, node), node)
                pieces.append(str(inner))
            else:
                pieces.append(str(self.eval(value, scope)))
        return "".join(pieces)

    def _Call(self, node: ast.Call, scope: dict[str, Any]) -> Any:
        if isinstance(node.func, ast.Name) and node.func.id == _BASE_REF_CALL:
            return self._base_reference(node)
        if not isinstance(node.func, ast.Name) or node.func.id not in _BUILTINS:
            return Unreadable(f"call of '{_describe(node.func)}' at line {node.lineno}")
        args = self._sequence(node.args, scope)
        if isinstance(args, Unreadable):
            return args
        kwargs: dict[str, Any] = {}
        for keyword in node.keywords:
            value = self.eval(keyword.value, scope)
            if keyword.arg is None:
                if not isinstance(value, dict):
                    return Unreadable(f"'**' of a non-dict at line {node.lineno}")
                self._spend(len(value), node)
                kwargs.update(value)
            else:
                kwargs[keyword.arg] = value
        name = node.func.id
        function = _BUILTINS[name]
        if function is dict:
            # dict(a=<unreadable>) keeps the unreadable value: it only fails if it is read.
            if any(isinstance(a, Unreadable) for a in args):
                return next(a for a in args if isinstance(a, Unreadable))
            self._spend(sum(self.size(a, node) for a in args), node)  # keys are hashed
            try:
                result = dict(*args) if args else {}
                result.update(kwargs)
            except (TypeError, ValueError) as exc:
                return Unreadable(f"'dict' failed at line {node.lineno}: {_clip(str(exc), 200)}")
            self._spend(len(result), node)
            return result
        if any(isinstance(a, Unreadable) for a in [*args, *kwargs.values()]):
            return Unreadable(f"call of '{name}' on an unreadable value at line {node.lineno}")
        self._spend(sum(self.size(a, node) for a in [*args, *kwargs.values()]), node)
        refused = self._guard_call(node, name, args, kwargs)
        if refused is not None:
            return refused
        try:
            value = function(*args, **kwargs)
        except Exception as exc:
            return Unreadable(f"'{name}' failed at line {node.lineno}: {_clip(str(exc), 200)}")
        if isinstance(value, range):
            value = list(value)
        if isinstance(value, (str, bytes, *_CONTAINERS)):
            self._spend(len(value), node)
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
                isinstance(v, numeric) for v in (items if isinstance(items, _ITERABLES) else ())
            ):
                # sum() of lists or texts takes time that grows with the square of the result.
                return Unreadable(f"'sum' of non-numbers at line {node.lineno}")
        return None

    def _comprehension(self, node: Any, scope: dict[str, Any], build: Any) -> Any:
        if self._depth + len(node.generators) > MAX_DEPTH:
            raise self._fail(node, f"the expression nests deeper than {MAX_DEPTH} levels", _FLAT)
        results: list[Any] = []

        def walk(index: int, local: dict[str, Any]) -> Unreadable | None:
            if index == len(node.generators):
                results.append(build(local))
                return None
            generator = node.generators[index]
            iterable = self.eval(generator.iter, local)
            if isinstance(iterable, Unreadable):
                return iterable
            if not isinstance(iterable, _ITERABLES):
                return Unreadable(f"loop over {type(iterable).__name__} at line {node.lineno}")
            for item in iterable:
                self._spend(len(local) + 1, node)
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
            if isinstance(value, Unreadable):
                return value
            if not isinstance(value, _ITERABLES):
                return Unreadable(f"unpacking of a {type(value).__name__} at line {target.lineno}")
            self._spend(len(value), target)
            items = list(value)
            if len(items) != len(target.elts):
                return Unreadable(f"unpacking mismatch at line {target.lineno}")
            for sub_target, item in zip(target.elts, items, strict=True):
                if (failure := self._bind(sub_target, item, scope)) is not None:
                    return failure
            return None
        return Unreadable(f"assignment target at line {target.lineno}")

    def _ListComp(self, node: ast.ListComp, scope: dict[str, Any]) -> Any:
        return self._comprehension(node, scope, lambda local: self.eval(node.elt, local))

    _GeneratorExp = _ListComp

    def _DictComp(self, node: ast.DictComp, scope: dict[str, Any]) -> Any:
        def pair(local: dict[str, Any]) -> tuple[Any, Any]:
            key = self.eval(node.key, local)
            self._spend(self.size(key, node), node)  # hashing walks the key
            return key, self.eval(node.value, local)

        pairs = self._comprehension(node, scope, pair)
        return pairs if isinstance(pairs, Unreadable) else self._hashable(dict, pairs)

    def _base_reference(self, node: ast.Call) -> Any:
        argument = node.args[0] if len(node.args) == 1 and not node.keywords else None
        if not isinstance(argument, ast.Constant) or not isinstance(argument.value, str):
            return Unreadable(f"call of '{_BASE_REF_CALL}' at line {node.lineno}")
        dotted = argument.value
        value: Any = self.base
        for part in dotted.split("."):
            if not isinstance(value, dict) or part not in value:
                raise CrossEarthError(
                    f"{self.source}: '{{{{_base_.{_clip(dotted)}}}}}' refers to a variable that "
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
            return Unreadable(f"expression at line {line} failed: {_clip(str(exc), 200)}")


def _describe(node: ast.AST) -> str:
    """A short text of an expression for messages (ast.unparse recurses on deep trees)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute) and len(parts) < 8:
        parts.append(node.attr)
        node = node.value
    parts.append(node.id if isinstance(node, ast.Name) else "...")
    return _clip(".".join(reversed(parts)))


def _target_name(target: ast.expr) -> str:
    if isinstance(target, ast.Name):
        return target.id
    if isinstance(target, (ast.Tuple, ast.List)):
        return ", ".join(_target_name(t) for t in target.elts[:4])
    return _describe(target)


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


def _read_text(path: Path, budget: _Budget) -> str:
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


def _parse(path: Path, budget: _Budget) -> ast.Module:
    text = _read_text(path, budget)
    text = _BASE_REF.sub(lambda m: f'{_BASE_REF_CALL}("{m.group(1)}")', text)
    try:
        return ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        hint = ""
        if "nested" in str(exc.msg) or "too complex" in str(exc.msg):
            hint = "; a config needs only a few levels of brackets"
        raise CrossEarthError(
            f"config file {path} is not valid Python (line {exc.lineno}: {_clip(exc.msg, 200)})"
            + hint
        ) from None
    except ValueError as exc:  # null bytes (Python < 3.12)
        raise CrossEarthError(
            f"config file {path} is not valid Python ({_clip(str(exc))}); is it a text file?"
        ) from None
    except (RecursionError, MemoryError):
        raise CrossEarthError(
            f"config file {path} nests brackets or operators too deeply for Python's parser; "
            "a config needs only a few levels"
        ) from None


def _base_files(module: ast.Module, path: Path, budget: _Budget) -> list[Path]:
    for statement in module.body:
        if isinstance(statement, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_base_" for t in statement.targets
        ):
            evaluator = _Evaluator({}, {}, path, budget)
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
        if isinstance(call, ast.Call) and _describe(call.func).split(".")[-1] == "read_base":
            return True
    return False


def read_config(
    path: str | Path, _chain: tuple[Path, ...] = (), _budget: _Budget | None = None
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
    budget = _budget or _Budget()
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


def _read(path: Path, chain_: tuple[Path, ...], budget: _Budget) -> dict[str, Any]:
    module = _parse(path, budget)
    base: dict[str, Any] = {}
    for base_path in _base_files(module, path, budget):
        parent = read_config(base_path, (*chain_, path), budget)
        duplicated = sorted(set(parent) & set(base))
        if duplicated:
            raise CrossEarthError(
                f"{path}: _base_ files define the same variable(s) "
                f"{_clip(', '.join(duplicated), 200)}"
            )
        base.update(parent)
    names: dict[str, Any] = {}
    evaluator = _Evaluator(names, base, path, budget)
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
                if (failure := evaluator._bind(target, value, scope)) is not None:
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
        evaluator._spend(evaluator.size(value), None)
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
