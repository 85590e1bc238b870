"""Reading a PaddleClas config key by key, with safe numbers.

``Notes`` collects warnings (what prodrec cannot honour) and errors (what cannot be translated);
``Section`` reads a mapping key by key and reports the keys nobody read, so nothing in a PaddleClas
file is dropped silently; ``parse_number`` reads PaddleClas's arithmetic strings without ``eval``.
"""
from __future__ import annotations

import ast
import operator
from fractions import Fraction
from typing import Any, List, Optional

from prodrec.config import ConfigError
from prodrec.utils import ProdrecError, brief

__all__ = ["Notes", "Section", "parse_number"]

_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


class Notes:
    """Warnings and errors gathered while translating; :meth:`raise_errors` reports all errors at once."""

    def __init__(self) -> None:
        self.warnings: List[str] = []
        self.errors: List[str] = []

    def warn(self, key: str, message: str) -> None:
        self.warnings.append(f"{key}: {message}")

    def fail(self, key: str, message: str) -> None:
        self.errors.append(f"{key}: {message}")

    def raise_errors(self, what: str) -> None:
        if self.errors:
            shown = "".join(f"\n  {line}" for line in self.errors[:20])
            more = f"\n  ... and {len(self.errors) - 20} more" if len(self.errors) > 20 else ""
            raise ConfigError(f"{what}: {len(self.errors)} problem(s) prodrec cannot translate:{shown}{more}")


class Section:
    """A PaddleClas mapping at ``key``; :meth:`finish` warns about every key that was never read."""

    def __init__(self, data: Any, key: str, notes: Notes) -> None:
        if data is not None and not isinstance(data, dict):
            notes.fail(key, f"expected a mapping, got {brief(data)}")
        self.data = data if isinstance(data, dict) else {}
        self.key, self.notes, self.read = key, notes, set()

    def __contains__(self, name: str) -> bool:
        return name in self.data

    def get(self, name: str, default: Any = None) -> Any:
        self.read.add(name)
        value = self.data.get(name)
        return default if value is None else value

    def child(self, name: str) -> "Section":
        return Section(self.get(name), f"{self.key}.{name}" if self.key else name, self.notes)

    def number(self, name: str, default: Optional[float] = None, *, text: bool = False) -> Optional[float]:
        """A number; with ``text`` also an arithmetic string such as ``1.0/255.0`` (PaddleClas evals those)."""
        value = self.get(name, default)
        if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            return value
        if text and isinstance(value, str):
            try:
                return parse_number(value, f"{self.key}.{name}")
            except ConfigError as error:
                self.notes.errors.append(str(error))
                return default
        self.notes.fail(f"{self.key}.{name}", f"expected a number, got {brief(value)}")
        return default

    def skip(self, *names: str) -> None:
        """Mark keys that have no effect on what prodrec computes (logging, export, performance)."""
        self.read.update(names)

    def finish(self) -> None:
        for name in self.data:
            if name not in self.read:
                self.notes.warn(f"{self.key}.{name}", "not used by prodrec (ignored)")


def parse_number(value: Any, key: str) -> float:
    """A number, or a string of numbers joined by ``+ - * /`` (e.g. ``"1.0/255.0"``), computed exactly.

    PaddleClas ``eval``s such strings; prodrec parses them and refuses anything else (names, calls,
    attribute access), so a config can never run code.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a number, got {brief(value)}")
    try:
        return float(_arithmetic(ast.parse(value.strip(), mode="eval").body))
    except (SyntaxError, ValueError, TypeError, OverflowError, RecursionError, MemoryError):
        raise ConfigError(f"{key}: {brief(value)} is not a number nor numbers joined by + - * / (such as 1.0/255.0); "
                          "prodrec never evaluates code from a config") from None


def _arithmetic(node: ast.AST) -> Fraction:
    """The exact value of a tree of number constants and + - * /; ValueError for anything else."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        operand = _arithmetic(node.operand)
        return operand if isinstance(node.op, ast.UAdd) else -operand
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        left, right = _arithmetic(node.left), _arithmetic(node.right)
        if isinstance(node.op, ast.Div) and right == 0:
            raise ProdrecError("division by zero")
        return _ARITHMETIC[type(node.op)](left, right)
    raise ProdrecError(f"not arithmetic: {ast.dump(node)[:40]}")

