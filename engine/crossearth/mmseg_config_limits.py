"""The bounds on reading one mmseg config, and the meter that enforces them.

A config comes from the user and may be broken or hostile, so reading one is bounded: the file
size, the number of files, the expression steps evaluated, the elements and characters built
or compared, the size and nesting of each value, integer magnitudes and exponents. Crossing a
bound is a one-line error naming the file and the variable, never a hang or a memory blow-up.
Real configs stay far below every bound (the official ones take a few thousand steps).
"""

from __future__ import annotations

import ast
import re
from itertools import chain
from pathlib import Path
from typing import Any

from engine.errors import CrossEarthError

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
# The advice that ends a limit's message: how to write the config so that it reads.
FIX_SMALL = "a config needs only small literal values; write the value out or remove the expression"
FIX_FLAT = "a config needs only a few levels of nesting; flatten the expression"
CONTAINERS = (list, tuple, dict, set, frozenset)
SEQUENCES = (str, bytes, list, tuple)
ITERABLES = (str, bytes, list, tuple, dict, set, frozenset)
_FORMAT_SPEC = re.compile(r"%%|%(?:\([^)]*\))?[#0 +-]*(\*|[0-9]*)(?:\.(\*|[0-9]*))?")


def clip(text: str, limit: int = 60) -> str:
    """`text` on one line and short enough for an error message."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_repr(value: Any, limit: int = 60) -> str:
    """A short repr for messages; huge values are cut before they are formatted."""
    if isinstance(value, (str, bytes)) and len(value) > limit:
        return clip(repr(value[:limit]), limit)
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    if isinstance(value, CONTAINERS) and len(value) > 8:
        return f"a {type(value).__name__} of {len(value)} items"
    try:
        return clip(repr(value), limit)
    except (RecursionError, ValueError):
        return f"a {type(value).__name__}"


class Budget:
    """What one read_config call (its _base_ files included) may spend."""

    def __init__(self) -> None:
        self.steps = 0
        self.work = 0
        self.files = 0
        self.bytes = 0


class Meter:
    """Counts what evaluating one file's expressions spends, and refuses values and
    operations that would cross a bound before they are built."""

    def __init__(self, source: Path, budget: Budget | None = None) -> None:
        self.source = source
        self.budget = budget or Budget()
        # What is being evaluated and where, for error messages.
        self.variable = "?"
        self.line = 0
        # id -> (value, size, depth) of every container seen; holding the value keeps the id
        # from being reused, so sizes of shared parts are computed once.
        self._sizes: dict[int, tuple[Any, int, int]] = {}

    def _fail(self, node: ast.AST | None, problem: str, fix: str = FIX_SMALL) -> CrossEarthError:
        line = getattr(node, "lineno", None) or self.line
        return CrossEarthError(
            f"{self.source}: variable '{clip(self.variable, 40)}' (line {line}): {problem}; {fix}"
        )

    def spend(self, amount: int, node: ast.AST | None) -> None:
        """Counts `amount` elements or characters built, copied or compared; raises past
        MAX_WORK."""
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
        if not isinstance(value, CONTAINERS):
            return 1, 0
        known = self._sizes.get(id(value))
        if known is not None:
            return known[1], known[2]
        if level >= MAX_DEPTH:
            raise self._fail(node, f"a value nests deeper than {MAX_DEPTH} levels", FIX_FLAT)
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
            raise self._fail(node, f"a value nests deeper than {MAX_DEPTH} levels", FIX_FLAT)
        self._sizes[id(value)] = (value, size, depth)
        return size, depth

    def _check(self, value: Any, node: ast.AST) -> None:
        if type(value) is int:
            if not -MAX_INT <= value <= MAX_INT:
                raise self._fail(node, f"{short_repr(value)} is larger than 2**64")
        elif isinstance(value, (str, bytes, *CONTAINERS)):
            self.size(value, node)

    def _guard_binary(self, node: ast.BinOp, left: Any, right: Any) -> None:
        """Refuses operations whose result would be huge before they are computed."""
        op = type(node.op)
        if op is ast.Mult:
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, SEQUENCES) and isinstance(count, int):
                    length = len(sequence) * max(count, 0)
                    if length > MAX_SIZE:
                        raise self._fail(
                            node,
                            f"{short_repr(sequence, 20)} * {short_repr(count)} would hold {length} "
                            f"elements or characters (at most {MAX_SIZE})",
                        )
                    self.spend(length, node)
        elif op is ast.Add:
            if isinstance(left, SEQUENCES) and isinstance(right, SEQUENCES):
                self.spend(len(left) + len(right), node)
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
            self.spend(len(left) + self.size(right, node), node)
        elif op is ast.Sub and isinstance(left, (set, frozenset)):
            self.spend(len(left), node)
