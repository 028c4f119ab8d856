"""Task queries: a small expression language over manifest columns, parsed as data.

A query is read with Python's `ast` parser and then checked against a short list of what
it may contain; our own tree walker evaluates it over the manifest's pandas columns.
Nothing in a query is ever executed as code (no `eval`, no attribute access, no calls).

    query      := condition
    condition  := condition and condition | condition or condition | not condition
                | ( condition ) | comparison | True | False
    comparison := value OP value [OP value ...]        OP: == != < <= > >=
                | value in [literal, ...] | value not in [literal, ...]
    value      := column | literal
    column     := a name (ch, age) or a back-quoted name (`age group`)
    literal    := number, "text", 'text', True, False
"""

from __future__ import annotations

import ast
import operator
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from posturescreen.errors import PostureScreenError

MAX_QUERY_CHARS = 1000
ALLOWED = ("column names, literals (numbers, \"text\", True/False), == != < <= > >=, "
           "in [...], and/or/not, parentheses")

_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
    ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
}
_BACKQUOTED = re.compile(r"`([^`]*)`")


class QueryError(PostureScreenError, ValueError):
    """A query that is not in the language, or that does not fit the manifest."""


@dataclass(frozen=True)
class Query:
    """A parsed, checked query; `evaluate` it on a table."""

    text: str
    source: str  # the text with back-quoted names replaced by identifiers
    tree: ast.expr
    columns: dict[str, str]  # placeholder identifier -> back-quoted column name


def _shown(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _error(query: Query | str, node: ast.AST | None, why: str) -> QueryError:
    text = query.text if isinstance(query, Query) else query
    if node is None or not isinstance(query, Query) or not hasattr(node, "col_offset"):
        return QueryError(f"query {_shown(text)}: {why}")
    # ast counts UTF-8 bytes; the user counts characters
    raw = query.source.encode()
    start = len(raw[:node.col_offset].decode(errors="ignore"))
    end = len(raw[:node.end_col_offset or node.col_offset + 1].decode(errors="ignore"))
    token = text[start:max(end, start + 1)]
    return QueryError(f"query {_shown(text)}: {_shown(token, 40)} at column {start + 1}: {why}")


def _hide_backquotes(text: str) -> tuple[str, dict[str, str]]:
    """`age group` -> an identifier of the same length, so error columns stay right."""
    columns: dict[str, str] = {}

    def replace(match: re.Match) -> str:
        name = match.group(1)
        ident = f"_{len(columns)}_".ljust(len(match.group(0)), "_")
        if not name.strip() or len(ident) > len(match.group(0)) or ident in text:
            raise QueryError(f"query {_shown(text)}: back-quoted column name "
                             f"{_shown(match.group(0), 40)} cannot be used")
        columns[ident] = name
        return ident

    return _BACKQUOTED.sub(replace, text), columns


def parse_query(text: str) -> Query:
    """Parse and check a query; raises QueryError pointing at the offending token."""
    if not isinstance(text, str) or not text.strip():
        raise QueryError("a query must be non-empty text, e.g. `ch == 1`")
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"query {_shown(text)}: longer than {MAX_QUERY_CHARS} characters")
    if any(c in text for c in "\n\r\x00"):
        raise QueryError(f"query {_shown(text)}: must be one line of text")
    source, columns = _hide_backquotes(text)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. SyntaxWarning for "\d" in a literal
            tree = ast.parse(source, mode="eval").body
    except SyntaxError as e:
        col = (e.offset or 0) - 1
        where = (f"column {col + 1} ({text[col]!r})" if 0 <= col < len(text)
                 else "the end of the query")
        raise QueryError(f"query {_shown(text)}: {e.msg} at {where}; a query may use "
                         f"{ALLOWED}") from None
    except (RecursionError, MemoryError):
        raise QueryError(f"query {_shown(text)}: too deeply nested") from None
    query = Query(text, source, tree, columns)
    _check_condition(query, tree)
    return query


def _check_condition(q: Query, node: ast.expr) -> None:
    if isinstance(node, ast.BoolOp):
        for v in node.values:
            _check_condition(q, v)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        _check_condition(q, node.operand)
    elif isinstance(node, ast.Compare):
        _check_compare(q, node)
    elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
        pass
    elif isinstance(node, ast.Name | ast.Constant | ast.UnaryOp):
        _check_value(q, node)
        raise _error(q, node, "is a value, not a condition; compare it, e.g. `ch == 1`")
    else:
        _not_allowed(q, node)


def _not_allowed(q: Query, node: ast.AST) -> None:
    pandas_style = {ast.BitAnd: "and", ast.BitOr: "or", ast.Invert: "not"}
    op = type(getattr(node, "op", None))
    if op in pandas_style:
        raise _error(q, node, f"write `{pandas_style[op]}` instead of & | ~")
    raise _error(q, node, f"is not allowed; a query may use {ALLOWED}")


def _check_compare(q: Query, node: ast.Compare) -> None:
    _check_value(q, node.left)
    for op, right in zip(node.ops, node.comparators, strict=True):
        if isinstance(op, ast.In | ast.NotIn):
            if len(node.ops) > 1:
                raise _error(q, node, "`in` cannot be chained with other comparisons")
            if not isinstance(node.left, ast.Name):
                raise _error(q, node.left, "the left side of `in` must be a column")
            if not isinstance(right, ast.List | ast.Tuple):
                raise _error(q, right, "the right side of `in` must be a list, e.g. "
                                       "`site in [\"A\", \"B\"]`")
            for element in right.elts:
                _check_literal(q, element)
        elif type(op) in _COMPARE:
            _check_value(q, right)
        else:  # `is`, `is not`
            _not_allowed(q, node)


def _check_value(q: Query, node: ast.expr) -> None:
    if isinstance(node, ast.Name):
        return
    _check_literal(q, node)


def _check_literal(q: Query, node: ast.expr) -> None:
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd)
            and isinstance(node.operand, ast.Constant)
            and type(node.operand.value) in (int, float)):
        return  # a signed number
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and not node.value.strip():
        raise _error(q, node, "empty text never matches: missing cells never match any "
                              "comparison")
    if isinstance(node, ast.Constant) and type(node.value) in (int, float, str, bool):
        return
    _not_allowed(q, node)


def _literal(node: ast.expr) -> Any:
    if isinstance(node, ast.UnaryOp):
        value = _literal(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    assert isinstance(node, ast.Constant)
    return node.value


def evaluate(query: Query, table: pd.DataFrame) -> pd.Series:
    """True/False per row of `table`. A comparison with a missing cell (empty, NaN) is
    unknown, and stays unknown under `not` (three-valued logic: unknown and False is False,
    unknown or True is True); a row matches only when its query is True. So missing cells
    never match any comparison: not `!=`, not `not in`, not `not (...)`."""
    result = _condition(query, query.tree, table)
    if not isinstance(result, pd.Series):
        result = pd.Series(bool(result), index=table.index)
    return result.fillna(False).astype(bool)


def _missing(value: Any) -> pd.Series | bool:
    """Where a column's cell is missing: NaN/None, or text that is empty or blank."""
    if not isinstance(value, pd.Series):
        return False
    blank = value.map(lambda v: isinstance(v, str) and not v.strip()).astype(bool)
    return value.isna() | blank


def _unknown_where(part: Any, missing: pd.Series | bool) -> Any:
    """A comparison's result with pd.NA (unknown) where an operand's cell is missing."""
    if not isinstance(part, pd.Series):
        return part
    part = part.astype("boolean")
    return part.mask(missing, pd.NA) if isinstance(missing, pd.Series) else part


def _condition(q: Query, node: ast.expr, table: pd.DataFrame) -> Any:
    if isinstance(node, ast.BoolOp):
        parts = [_condition(q, v, table) for v in node.values]
        out = parts[0]
        for p in parts[1:]:
            out = (out & p) if isinstance(node.op, ast.And) else (out | p)
        return out
    if isinstance(node, ast.UnaryOp):
        inner = _condition(q, node.operand, table)
        return ~inner if isinstance(inner, pd.Series) else not inner
    if isinstance(node, ast.Constant):
        return bool(node.value)
    assert isinstance(node, ast.Compare)
    return _compare(q, node, table)


def _value(q: Query, node: ast.expr, table: pd.DataFrame) -> Any:
    if not isinstance(node, ast.Name):
        return _literal(node)
    name = q.columns.get(node.id, node.id)
    if name not in table.columns:
        raise _error(q, node, f"unknown column {name!r}; columns are: "
                              f"{', '.join(map(str, table.columns))}")
    return table[name]


def _check_types(q: Query, node: ast.expr, column: pd.Series, value: Any) -> None:
    """A number compared with a text column (or text with a number column) matches
    nothing in pandas; say so instead of silently selecting no photo."""
    if isinstance(value, pd.Series | bool) or column.isna().all():
        return
    numeric = is_numeric_dtype(column) and not is_bool_dtype(column)
    if numeric and isinstance(value, str):
        raise _error(q, node, f"column {column.name!r} holds numbers; compare it with a "
                              f"number (no quotes)")
    if not numeric and not is_bool_dtype(column) and isinstance(value, int | float):
        raise _error(q, node, f"column {column.name!r} holds text; put the value in quotes, "
                              f"e.g. \"{value}\"")


def _compare(q: Query, node: ast.Compare, table: pd.DataFrame) -> Any:
    left_node, left = node.left, _value(q, node.left, table)
    out: Any = True
    for op, right_node in zip(node.ops, node.comparators, strict=True):
        if isinstance(op, ast.In | ast.NotIn):
            values = [_literal(e) for e in right_node.elts]  # type: ignore[attr-defined]
            for e, v in zip(right_node.elts, values, strict=True):  # type: ignore[attr-defined]
                _check_types(q, e, left, v)
            mask = left.isin(values)
            return _unknown_where(~mask if isinstance(op, ast.NotIn) else mask, _missing(left))
        right = _value(q, right_node, table)
        if isinstance(left, pd.Series):
            _check_types(q, right_node, left, right)
        if isinstance(right, pd.Series):
            _check_types(q, left_node, right, left)
        try:
            part = _COMPARE[type(op)](left, right)
        except (TypeError, ValueError, OverflowError) as e:
            raise _error(q, node, f"cannot be compared ({e})") from None
        part = _unknown_where(part, _missing(left) | _missing(right))
        out = part if out is True else (out & part)
        left_node, left = right_node, right
    return out
