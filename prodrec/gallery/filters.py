"""Search filters: which gallery images a search may return, written in Milvus's boolean expression syntax and
meaning the same on every gallery backend.

The grammar is the part of Milvus's that both backends run exactly: the fields ``id`` (int), ``label``,
``name`` and ``path`` (str; an image without a name or path has ``""``), compared with ``==``, ``!=``, ``<``,
``<=``, ``>``, ``>=``, tested with ``in [...]`` / ``not in [...]``, and combined with ``and``, ``or``, ``not``
and parentheses. Milvus evaluates the text itself; the faiss backend evaluates it here over the gallery's
columns, so a filter is checked once, when it is parsed, on either backend.

Example:
    >>> where = parse_filter('label in ["cola", "tea"] and id > 10')
    >>> where.mask({"id": np.array([5, 11]), "label": np.array(["cola", "tea"], dtype=object)}).tolist()
    [False, True]
"""
from __future__ import annotations

import ast
import operator
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Tuple

import numpy as np

from prodrec.retrieval import new_faiss_index
from prodrec.utils import ProdrecError

__all__ = ["FILTER_FIELDS", "GalleryFilter", "parse_filter", "filter_columns", "exact_search"]

FILTER_FIELDS = {"id": int, "label": str, "name": str, "path": str}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}
_HELP = ('write e.g. label in ["a", "b"], label == "a" and id > 10, or not (name == ""); fields: '
         + ", ".join(FILTER_FIELDS) + "; operators: == != < <= > >= in, not in, and, or, not")


@dataclass(frozen=True)
class GalleryFilter:
    """A parsed search filter: ``expression`` (the text, as Milvus takes it) and :meth:`mask`."""

    expression: str
    _evaluate: Callable[[Mapping[str, np.ndarray]], np.ndarray]

    def mask(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Which rows pass, given the gallery's ``id``, ``label``, ``name`` and ``path`` columns (None: ``""``)."""
        return np.asarray(self._evaluate(columns), dtype=bool)


def parse_filter(expression: str) -> GalleryFilter:
    """Check a filter expression and prepare it (module docstring); bad syntax, an unknown field or a value of
    the wrong type raises :class:`~prodrec.utils.ProdrecError` saying what is allowed."""
    if not isinstance(expression, str) or not expression.strip():
        raise ProdrecError(f"a filter must be a non-empty expression; {_HELP}")
    text = expression.strip()
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as error:
        raise ProdrecError(f"cannot parse the filter {text!r} ({error.msg}); {_HELP}") from None
    return GalleryFilter(text, _compile(tree, text))


def _compile(node: ast.AST, text: str) -> Callable[[Mapping[str, np.ndarray]], np.ndarray]:
    if isinstance(node, ast.BoolOp):
        parts = [_compile(value, text) for value in node.values]
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        return lambda columns: _reduce(combine, [part(columns) for part in parts])
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _compile(node.operand, text)
        return lambda columns: ~inner(columns)
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        field = _field(node.left, text)
        op, right = node.ops[0], node.comparators[0]
        if isinstance(op, (ast.In, ast.NotIn)):
            if not isinstance(right, ast.List):
                raise ProdrecError(f"filter {text!r}: 'in' takes a list such as [\"a\", \"b\"]; {_HELP}")
            values = [_literal(item, field, text) for item in right.elts]
            negate = isinstance(op, ast.NotIn)
            return lambda columns: np.isin(_column(columns, field), np.asarray(values, dtype=object)) ^ negate
        if type(op) in _COMPARE:
            value, compare = _literal(right, field, text), _COMPARE[type(op)]
            return lambda columns: np.asarray(compare(_column(columns, field), value), dtype=bool)
    raise ProdrecError(f"filter {text!r}: {ast.unparse(node)!r} is not a comparison of one field with a value, or "
                       f"of comparisons joined by and / or / not; {_HELP}")


def _field(node: ast.AST, text: str) -> str:
    if not isinstance(node, ast.Name) or node.id not in FILTER_FIELDS:
        name = node.id if isinstance(node, ast.Name) else ast.unparse(node)
        raise ProdrecError(f"filter {text!r}: unknown field {name!r}; {_HELP}")
    return node.id


def _literal(node: ast.AST, field: str, text: str) -> Any:
    kind = FILTER_FIELDS[field]
    value = node.value if isinstance(node, ast.Constant) else None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        value = -node.operand.value if isinstance(node.operand.value, int) else None
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ProdrecError(f"filter {text!r}: {field} is compared with {ast.unparse(node)}, but it takes "
                           f"{'an integer' if kind is int else 'a quoted string'}; {_HELP}")
    return value


def _column(columns: Mapping[str, np.ndarray], field: str) -> np.ndarray:
    values = np.asarray(columns[field])
    if FILTER_FIELDS[field] is str:
        values = np.array(["" if value is None else value for value in values.tolist()], dtype=object)
    return values


def _reduce(combine: Callable[..., np.ndarray], values: list) -> np.ndarray:
    result = values[0]
    for value in values[1:]:
        result = combine(result, value)
    return result


def filter_columns(gallery: Any) -> Dict[str, np.ndarray]:
    """A faiss gallery's columns as :meth:`GalleryFilter.mask` takes them."""
    return {"id": gallery.ids, "label": gallery.labels, "name": gallery.names, "path": gallery.paths}


def exact_search(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int, metric: str) -> Tuple[np.ndarray, np.ndarray]:
    """Exact scores and ids ``[Q, k]`` of unit ``queries`` among ``vectors`` (with their ``ids``); ids -1 and the
    worst score beyond them."""
    scores = np.full((len(queries), k), -np.inf if metric == "ip" else np.inf, dtype=np.float32)
    found = np.full((len(queries), k), -1, dtype=np.int64)
    depth = min(k, len(ids))
    if depth and len(queries):
        subset = new_faiss_index(vectors.shape[1], "Flat", metric)
        subset.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))
        subset.search(queries, depth, D=scores[:, :depth], I=found[:, :depth])
    return scores, found
