"""CQL2 (text or JSON) → parameterised WHERE clause, for SQLite or PostgreSQL (``Dialect``).

Parsing is done by ``cql2`` (developmentseed's cql2-rs); this module keeps what is ours: limits that keep
hostile filters away from the parser, and the translation of its syntax tree (the CQL2-JSON form it
returns from ``Expr.to_json()``, with timestamps already in UTC) into SQL. Supported: comparisons, LIKE,
IN, BETWEEN, IS NULL, AND/OR/NOT, ``CASEI`` (SQLite's ``lower()``: ASCII letters only), DATE/TIMESTAMP
literals and the S_* spatial predicates with geometry or BBOX (4 or 6 numbers) literals. Not supported
(a 400 naming them): ACCENTI, arithmetic, array (A_*) and temporal (T_*) functions.

Only queryable fields reach SQL, values are always bound parameters, a property compared with a literal
of another type is a 400, and spatial predicates are answered by the store's ``spatial`` callback
(R-tree + exact shapely test). Dates and timestamps are compared as instants in UTC: see
``store.temporal`` for how stored texts (date 'YYYY-MM-DD', datetime 'YYYY-MM-DDTHH:MM:SS' in UTC) and
literals are made comparable.

Limits. cql2-rs parses by recursion and *crashes the process* (segmentation fault, not an exception) on
about 1 500 nested parentheses, 3 400 ``NOT``s or 16 000 ``OR`` terms (0.6.0, 8 MiB stack); its Python
conversion raises RecursionError earlier. So before the text reaches it, a lexical scan (strings and
quoted names skipped) refuses filters over ``MAX_CHARS`` characters, nesting of parentheses and NOTs
deeper than ``MAX_NESTING``, more than ``MAX_LOGICAL`` AND/OR/NOT keywords and runs of signs; at these
caps the parser needs under 256 KiB of stack (threads get 8 MiB here). CQL2-JSON is measured with
Python's json first. The parsed tree is then capped at ``MAX_DEPTH`` levels and ``MAX_NODES`` nodes (the
translation recurses, and SQLite binds at most 32 766 parameters). The scan also supplies what cql2-rs
0.6 misses: numbers written ``.5`` (valid CQL2) become ``0.5``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Callable

import cql2 as cql2_rs  # the PyPI package, not this module
import shapely
import shapely.geometry

from ..errors import GisError, bad_parameter
from . import temporal

LANGS = ("cql2-text", "cql2-json")
MAX_CHARS = 1_000_000  # ≈ 45 000 WKT vertices; the city boundary, the largest outline here, is 155 000
MAX_NESTING = 24  # open parentheses + pending NOTs; WKT needs 3 (MULTIPOLYGON), real filters a few more
MAX_LOGICAL = 200  # AND/OR/NOT keywords; many alternatives of one property belong in IN (…)
MAX_SIGNS = 2  # "--5" is a number, "----5" a parser stress test
MAX_OPERATORS = 200  # + - * / % ^ div: arithmetic is refused anyway, but a long chain crashes the parser
MAX_SPATIAL = 4  # S_* predicates: each tests every R-tree candidate of its geometry exactly
MAX_DEPTH = 100  # JSON levels of the parsed tree: about 50 nested operators
MAX_NODES = 10_000  # operators and literals (each IN item is one), geometry literals count once

_COMPARISONS = {"=", "<>", "<", "<=", ">", ">="}
_SPATIAL = {"s_intersects": "intersects", "s_disjoint": "disjoint", "s_contains": "contains",
            "s_within": "within", "s_touches": "touches", "s_overlaps": "overlaps", "s_crosses": "crosses",
            "s_equals": "equals"}
_CONVERSE = {"contains": "within", "within": "contains"}  # S_CONTAINS(literal, geom) = geom within literal
_ARITHMETIC = {"+", "-", "*", "/", "%", "^", "div"}
# One token of the lexical scan: a string, a quoted name, a word (names may hold '.' and ':'), a number
# beginning with a digit, a number beginning with '.', a parenthesis, a run of signs.
_SCAN = re.compile(r"""'(?:[^']|'')*'?|"[^"]*"?|(?P<word>[^\W\d][\w.:]*)|\d[\d.]*(?:[eE][+-]?\d+)?|(?P<dot>\.\d)
                       |(?P<open>\()|(?P<close>\))|(?P<signs>[-+](?:\s*[-+])*)|(?P<op>[*/%^])""", re.VERBOSE)


def _bad(zh: str, en: str) -> GisError:
    return GisError("bad_filter", f"filter 参数无效：{zh}", f"invalid filter: {en}", 400)


def _too_big(zh: str, en: str) -> GisError:
    return _bad(f"过于复杂，{zh}", f"too complex: {en}")


# --- parsing --------------------------------------------------------------------------------------------
def parse(text: str, lang: str = "cql2-text") -> dict | bool:
    """A filter in ``lang`` as its CQL2-JSON tree (dicts, lists and literals), within the limits above."""
    if lang not in LANGS:
        raise bad_parameter("filter-lang", "须为 cql2-text 或 cql2-json", "must be cql2-text or cql2-json")
    if len(text) > MAX_CHARS:
        raise _too_big(f"超过 {MAX_CHARS} 个字符", f"longer than {MAX_CHARS} characters")
    try:
        if lang == "cql2-text":
            expr = cql2_rs.parse_text(_prepare_text(text))
        else:
            _measure(_load_json(text))
            expr = cql2_rs.parse_json(text)
        tree = expr.to_json()
    except (cql2_rs.ParseError, cql2_rs.ValidationError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise _bad(f"无法解析（{lang}）：{detail}", f"cannot parse {lang}: {detail}") from None
    _measure(tree)
    return tree


def _prepare_text(text: str) -> str:
    """Refuse what would exhaust the parser's stack; write '.5' as '0.5'.

    The parser's stack holds one frame per open parenthesis and per NOT still waiting for its operand
    (``NOT NOT a``, ``NOT (NOT (…))``): their sum is the nesting capped at ``MAX_NESTING``."""
    nesting = pending = logical = operators = spatial = 0  # pending: NOTs since the last operand
    opened: list[int] = []  # `pending` when each open parenthesis was entered
    out: list[str] = []
    last = 0
    for m in _SCAN.finditer(text):
        kind, token = m.lastgroup, m.group()
        if kind == "open":
            opened.append(pending)
            nesting += 1
            pending = 0
        elif kind == "close":
            if opened:  # an unmatched ')' is the parser's to report, and must not lower the count
                nesting -= 1 + opened.pop()
            pending = 0
        elif kind == "word" and token.upper() in ("AND", "OR", "NOT"):
            logical += 1
            if logical > MAX_LOGICAL:
                raise _too_big(f"AND/OR/NOT 超过 {MAX_LOGICAL} 个", f"more than {MAX_LOGICAL} AND/OR/NOT")
            if token.upper() == "NOT":
                pending += 1
                nesting += 1
        elif kind == "signs" and sum(c in "+-" for c in token) > MAX_SIGNS:
            raise _bad(f"连续的正负号“{token}”", f"a run of signs {token!r}")
        elif kind in ("signs", "op") or kind == "word" and token.upper() == "DIV":
            operators += 1
            if operators > MAX_OPERATORS:
                raise _too_big(f"运算符超过 {MAX_OPERATORS} 个", f"more than {MAX_OPERATORS} arithmetic operators")
        else:
            if kind == "word" and token.upper().startswith("S_"):
                spatial += 1
                if spatial > MAX_SPATIAL:
                    raise _too_big(f"空间谓词超过 {MAX_SPATIAL} 个", f"more than {MAX_SPATIAL} spatial predicates")
            if kind == "dot":
                out += [text[last:m.start()], "0"]
                last = m.start()
            nesting -= pending  # an operand: the NOTs before it have theirs
            pending = 0
        if nesting > MAX_NESTING:
            raise _too_big(f"括号和 NOT 嵌套超过 {MAX_NESTING} 层",
                           f"parentheses and NOTs nested deeper than {MAX_NESTING}")
    return "".join(out) + text[last:] if out else text


def _load_json(text: str):
    try:
        return json.loads(text)
    except RecursionError:
        raise _too_big(f"嵌套超过 {MAX_DEPTH} 层", f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise _bad(f"不是有效的 JSON：{exc}", f"not valid JSON: {exc}") from None


def _measure(tree) -> None:
    """The caps on the parsed tree, walked without recursion (a CQL2-JSON tree may come straight from a
    client): depth counts JSON levels (an operator and its argument list are two), AND/OR/NOT are counted
    as their keywords would be in text."""
    if tree is None or isinstance(tree, (int, float, str, list)):  # a filter is an expression or a boolean
        raise _bad("须为布尔表达式", "must be a boolean expression")
    nodes = logical = spatial = 0
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if depth > MAX_DEPTH:
            raise _too_big(f"嵌套超过 {MAX_DEPTH} 层", f"nested deeper than {MAX_DEPTH} levels")
        if nodes > MAX_NODES:
            raise _too_big(f"超过 {MAX_NODES} 个运算符和值", f"more than {MAX_NODES} operators and values")
        if isinstance(node, dict):
            op, args = str(node.get("op", "")).lower(), node.get("args")
            if op in ("and", "or", "not") and isinstance(args, list):
                logical += max(len(args) - 1, 1)
                if logical > MAX_LOGICAL:
                    raise _too_big(f"AND/OR/NOT 超过 {MAX_LOGICAL} 个", f"more than {MAX_LOGICAL} AND/OR/NOT")
            spatial += op in _SPATIAL
            if spatial > MAX_SPATIAL:
                raise _too_big(f"空间谓词超过 {MAX_SPATIAL} 个", f"more than {MAX_SPATIAL} spatial predicates")
        stack.extend((child, depth + 1) for child in _children(node))


def _children(node) -> list:
    """What a JSON value holds, except a geometry literal's numbers (bounded by MAX_CHARS, read by shapely)."""
    if isinstance(node, list):
        return node
    if isinstance(node, dict):
        return [v for k, v in node.items() if k not in ("coordinates", "bbox")]
    return []


def properties(tree) -> set[str]:
    """Every property name a filter mentions (for access checks before any SQL runs): every name the
    translation can reach is found here."""
    names: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict) and isinstance(node.get("property"), str):
            names.add(node["property"])
        stack.extend(_children(node))
    return names


# --- operands -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Prop:
    name: str


@dataclass(frozen=True)
class _Literal:
    value: object  # str, int, float, bool, datetime.date, datetime.datetime or a shapely geometry


@dataclass(frozen=True)
class _CaseI:
    inner: _Prop | _Literal


def _is_literal(operand) -> bool:
    return isinstance(operand.inner if isinstance(operand, _CaseI) else operand, _Literal)


def _show(node) -> str:
    return json.dumps(node, ensure_ascii=False, default=str)[:80]


def _operand(node):
    """A CQL2-JSON value as a property, a literal or CASEI(…) of one; other forms are a 400."""
    if isinstance(node, bool) or isinstance(node, str):
        return _Literal(node)
    if isinstance(node, (int, float)):
        if not math.isfinite(node):
            raise _bad(f"数值无效 {node}", f"invalid number {node}")
        return _Literal(int(node) if float(node).is_integer() and abs(node) < 2**53 else node)
    if node is None:
        raise _bad("NULL 只能用于 IS NULL", "NULL can only be tested with IS NULL")
    if not isinstance(node, dict):
        raise _bad(f"此处应为字段名或值：{_show(node)}",
                   f"expected a property or a value, found {_show(node)}")
    if "property" in node:
        if not isinstance(node["property"], str):
            raise _bad(f"字段名须为字符串：{_show(node)}", f"a property name is a string: {_show(node)}")
        return _Prop(node["property"])
    try:
        if "date" in node:
            return _Literal(temporal.parse_date(node["date"]))
        if "timestamp" in node:
            return _Literal(temporal.parse_instant(node["timestamp"]))
    except ValueError:
        kind = "DATE" if "date" in node else "TIMESTAMP"
        value = node.get("date", node.get("timestamp"))
        raise _bad(f"无法解析 {kind}({value!r})", f"cannot parse {kind}({value!r})") from None
    if "bbox" in node:
        return _Literal(_bbox(node["bbox"]))
    if "type" in node:
        return _Literal(_geometry(node))
    op = str(node.get("op", "")).lower()
    if op == "casei":
        inner = _operand(_args(node, 1)[0])
        if isinstance(inner, _CaseI) or not (isinstance(inner, _Prop) or isinstance(inner.value, str)):
            raise _bad("CASEI 的参数须为字段或字符串", "CASEI takes a property or a string")
        return _CaseI(inner)
    raise _unsupported(node)


def _unsupported(node) -> GisError:
    op = str(node.get("op", "")) if isinstance(node, dict) else ""
    low = op.lower()
    if low in _ARITHMETIC:
        return _bad(f"不支持算术运算 {op}", f"arithmetic ({op}) is not supported")
    if low == "accenti":
        return _bad("不支持 ACCENTI", "ACCENTI is not supported")
    if low.startswith(("t_", "a_")) or "interval" in (node if isinstance(node, dict) else {}):
        return _bad(f"不支持时间或数组函数 {op or 'INTERVAL'}",
                    f"temporal and array functions ({op or 'INTERVAL'}) are not supported")
    if op:
        return _bad(f"不支持的函数或运算符 {op}", f"unsupported function or operator {op!r}")
    return _bad(f"无法识别：{_show(node)}", f"not understood: {_show(node)}")


def _args(node: dict, count: int | None = None, at_least: int = 1) -> list:
    args = node.get("args")
    if not isinstance(args, list) or (len(args) != count if count is not None else len(args) < at_least):
        want = count if count is not None else f"≥{at_least}"
        raise _bad(f"{node.get('op')} 需要 {want} 个参数", f"{node.get('op')} takes {want} arguments")
    return args


def _bbox(numbers) -> shapely.Geometry:
    if not (isinstance(numbers, list) and len(numbers) in (4, 6)
            and all(isinstance(n, (int, float)) and not isinstance(n, bool) and math.isfinite(n) for n in numbers)):
        raise _bad("BBOX 需要4个或6个数字", "BBOX takes 4 or 6 numbers")
    x0, y0, x1, y1 = numbers if len(numbers) == 4 else (numbers[0], numbers[1], numbers[3], numbers[4])
    if x0 > x1 or y0 > y1:
        raise _bad("BBOX 下限须不大于上限", "BBOX lower corner must not exceed the upper corner")
    return shapely.box(x0, y0, x1, y1)


def _geometry(node: dict) -> shapely.Geometry:
    try:
        geom = shapely.geometry.shape(node)
    except Exception:  # shapely reports malformed coordinates in several ways
        raise _bad(f"几何字面量无效：{_show(node)}", f"invalid geometry literal: {_show(node)}") from None
    if geom.is_empty or not geom.is_valid:
        raise _bad("几何字面量为空、自相交或无效",
                   "geometry literal is empty or not valid (self-intersecting?)")
    return geom


# --- SQL ------------------------------------------------------------------------------------------------
SpatialResolver = Callable[[str, object], str]
"""Given (predicate name, shapely geometry in storage CRS) return a SQL fragment selecting matching rows."""

_ACCEPTS = {"string": (str,), "integer": (int, float), "real": (int, float), "boolean": (bool,)}
_KIND = {"string": "string", "integer": "number", "real": "number", "boolean": "boolean", "date": "temporal",
         "datetime": "temporal"}


@dataclass(frozen=True)
class Dialect:
    """What differs between the SQL the stores speak: placeholders, boolean literals and parameters."""

    placeholder: str
    true: str
    false: str
    native_booleans: bool  # False: booleans are stored and bound as 0/1


SQLITE = Dialect("?", "1", "0", False)
POSTGRES = Dialect("%s", "TRUE", "FALSE", True)  # psycopg's placeholder


class Translator:
    def __init__(self, columns: dict[str, str], geometry_names: set[str], spatial: SpatialResolver,
                 to_storage: Callable, dialect: Dialect = SQLITE):
        self.columns = columns  # queryable name -> field type
        self.geometry_names = geometry_names
        self.spatial = spatial
        self.to_storage = to_storage  # shapely geometry in filter-crs -> storage CRS
        self.dialect = dialect
        self.params: list = []

    def translate(self, tree) -> str:
        """SQL for a tree from ``parse``; its values are appended to ``params`` in placeholder order."""
        if isinstance(tree, bool):
            return self.dialect.true if tree else self.dialect.false
        if not isinstance(tree, dict) or "op" not in tree:
            raise _bad(f"此处应为条件：{_show(tree)}", f"expected a condition, found {_show(tree)}")
        op = str(tree["op"]).lower()
        if op in ("and", "or"):
            return "(" + f" {op.upper()} ".join(self.translate(a) for a in _args(tree, at_least=2)) + ")"
        if op == "not":
            return f"(NOT {self.translate(_args(tree, 1)[0])})"
        if op in _COMPARISONS:
            a, b = (_operand(x) for x in _args(tree, 2))
            left, right = self._pair(a, b)
            return f"({left} {op} {right})"
        if op == "like":
            return self._like(*(_operand(x) for x in _args(tree, 2)))
        if op == "in":
            subject, items = _args(tree, 2)
            if not isinstance(items, list):
                raise _bad("IN 需要值列表", "IN takes a list of values")
            subject, values = _operand(subject), [_operand(v) for v in items]
            for value in values:
                self._check(subject, value)
            ftype = self._type(subject)
            # A literal subject (DATE(…) IN (a_date_field)) is converted for the fields it is compared with.
            item_types = {self._type(v) for v in values} - {None}
            left = self._sql(subject, item_types.pop() if ftype is None and len(item_types) == 1 else None)
            return f"({left} IN ({', '.join(self._sql(v, ftype) for v in values)}))"
        if op == "between":
            subject, low, high = (_operand(x) for x in _args(tree, 3))
            self._check(subject, low)
            self._check(subject, high)
            ftype = self._type(subject)
            left, low_sql, high_sql = self._sql(subject, self._type(low)), self._sql(low, ftype), self._sql(high, ftype)
            return f"({left} BETWEEN {low_sql} AND {high_sql})"
        if op == "isnull":
            return f"({self._sql(_operand(_args(tree, 1)[0]), None)} IS NULL)"
        if op in _SPATIAL:
            return self._spatial(_SPATIAL[op], *_args(tree, 2))
        raise _unsupported(tree)

    # -- operands ------------------------------------------------------------------------------------
    def _type(self, operand) -> str | None:
        """The field type behind an operand (None for literals)."""
        if isinstance(operand, _CaseI):
            return self._type(operand.inner)
        if isinstance(operand, _Prop):
            if operand.name not in self.columns:
                raise GisError("unknown_property", f"不可查询的字段：{operand.name}",
                               f"property '{operand.name}' is not queryable", 400)
            return self.columns[operand.name]
        return None

    def _check(self, a, b) -> None:
        """A property compared with a literal of another type, or with a property of another kind, is a 400
        (SQLite would silently match nothing); CASEI compares strings only."""
        if _is_literal(a):
            a, b = b, a
        ftype = self._type(a)
        if ftype is None:
            return  # two literals
        base = b.inner if isinstance(b, _CaseI) else b
        other = self._type(base)
        if isinstance(a, _CaseI) or isinstance(b, _CaseI):
            ok = ftype == "string" and (other == "string" or other is None and isinstance(base.value, str))
        elif other is not None:
            ok = _KIND[ftype] == _KIND[other]
        else:
            ok = self._accepts(ftype, base.value)
        if not ok:
            name = a.inner.name if isinstance(a, _CaseI) else a.name
            shown = base.name if isinstance(base, _Prop) else base.value
            raise _bad(f"字段 {name}（{ftype}）不能与 {shown!r} 比较",
                       f"property '{name}' ({ftype}) cannot be compared with {shown!r}")

    @staticmethod
    def _accepts(ftype: str, value) -> bool:
        if isinstance(value, shapely.Geometry):
            return False
        if ftype in ("date", "datetime"):
            if isinstance(value, str):
                try:
                    temporal.parse_value(value)
                except ValueError:
                    return False
                return True
            return hasattr(value, "isoformat")  # a date or an instant
        return isinstance(value, _ACCEPTS[ftype]) and not (ftype in ("integer", "real") and isinstance(value, bool))

    def _pair(self, a, b) -> tuple[str, str]:
        self._check(a, b)
        ta, tb = self._type(a), self._type(b)
        return self._sql(a, tb), self._sql(b, ta)

    def _sql(self, operand, against: str | None) -> str:
        """SQL for an operand compared with a field of type ``against`` (None: with a literal)."""
        if isinstance(operand, _CaseI):
            return f"lower({self._sql(operand.inner, against)})"
        if isinstance(operand, _Prop):
            ftype = self._type(operand)
            if ftype == "date" and against == "datetime":
                return f"(\"{operand.name}\" || 'T00:00:00')"  # a date is 00:00:00 UTC of its day
            return f'"{operand.name}"'
        value = operand.value
        if isinstance(value, shapely.Geometry):
            raise _bad("几何只能用于空间谓词", "geometries can only be used in spatial predicates")
        if against in ("date", "datetime"):
            value = temporal.stored_text(temporal.parse_value(value) if isinstance(value, str) else value, against)
        elif hasattr(value, "isoformat"):  # a date or an instant compared with a literal: both as instants
            value = temporal.stored_text(value, "datetime")
        self.params.append(int(value) if isinstance(value, bool) and not self.dialect.native_booleans else value)
        return self.dialect.placeholder

    # -- predicates ----------------------------------------------------------------------------------
    def _like(self, subject, pattern) -> str:
        ftype = self._type(subject)
        inner = pattern.inner if isinstance(pattern, _CaseI) else pattern
        if not (isinstance(inner, _Literal) and isinstance(inner.value, str)):
            raise _bad("LIKE 的模式须为字符串", "the LIKE pattern must be a string")
        base = subject.inner if isinstance(subject, _CaseI) else subject
        if ftype not in ("string", "date", "datetime") and not (ftype is None and isinstance(base.value, str)):
            raise _bad(f"LIKE 只能用于文本字段（{ftype}）", f"LIKE applies to text properties, not {ftype}")
        # case_sensitive_like is on in the store; '\' escapes % and _ as CQL2 says.
        return f"({self._sql(subject, None)} LIKE {self._sql(pattern, None)} ESCAPE '\\')"

    def _spatial(self, predicate: str, a, b) -> str:
        a, b = _operand(a), _operand(b)
        if isinstance(a, _Literal) and isinstance(b, _Prop):
            a, b, predicate = b, a, _CONVERSE.get(predicate, predicate)
        if not (isinstance(a, _Prop) and a.name in self.geometry_names and isinstance(b, _Literal)
                and isinstance(b.value, shapely.Geometry)):
            raise _bad("空间谓词须比较几何字段 geom 与几何字面量",
                       "a spatial predicate compares the geometry 'geom' with a geometry literal")
        return self.spatial(predicate, self.to_storage(b.value))

