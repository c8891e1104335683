"""CQL2 text → parameterised SQLite WHERE clause.

A small recursive-descent parser of our own (pygeofilter's grammar rejects ``NOT (a AND b)``, which
basic CQL2 requires). It covers what the service declares: comparisons, LIKE, IN, BETWEEN, IS NULL,
AND/OR/NOT with parentheses, DATE/TIMESTAMP literals and the S_* spatial predicates with WKT or BBOX
literals. Only queryable fields reach SQL, values are always bound parameters, and spatial predicates are
answered by the store (R-tree + exact shapely test) as ``fid IN (<matching fids>)``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Callable

import shapely

from ..errors import GisError

_COMPARISON_OPS = ("<>", "<=", ">=", "=", "<", ">")
_SPATIAL = {"S_INTERSECTS": "intersects", "S_DISJOINT": "disjoint", "S_CONTAINS": "contains",
            "S_WITHIN": "within", "S_TOUCHES": "touches", "S_OVERLAPS": "overlaps", "S_CROSSES": "crosses",
            "S_EQUALS": "equals"}
_CONVERSE = {"contains": "within", "within": "contains"}  # S_CONTAINS(literal, geom) = geom within literal
_WKT_TYPES = ("POINT", "LINESTRING", "POLYGON", "MULTIPOINT", "MULTILINESTRING", "MULTIPOLYGON",
              "GEOMETRYCOLLECTION")
_TOKEN = re.compile(r"""\s*(?:
    (?P<number>-?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)
  | (?P<string>'(?:[^']|'')*')
  | (?P<quoted>"[^"]+")
  | (?P<word>[A-Za-z_][A-Za-z0-9_:.]*)
  | (?P<op><>|<=|>=|=|<|>)
  | (?P<punct>[(),])
)""", re.VERBOSE)


def _bad(zh: str, en: str) -> GisError:
    return GisError("bad_filter", f"filter 参数无效：{zh}", f"invalid filter: {en}", 400)


# --- syntax tree ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prop:
    name: str


@dataclass(frozen=True)
class Literal:
    value: object


@dataclass(frozen=True)
class Node:
    op: str  # and, or, not, compare, like, in, between, isnull, spatial
    args: tuple
    negated: bool = False


# --- parser ---------------------------------------------------------------------------------------------
class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def _peek(self):
        m = _TOKEN.match(self.text, self.pos)
        if not m or m.end() == self.pos and not self.text[self.pos:].strip():
            return None, None, self.pos
        if m.lastgroup is None:
            return None, None, self.pos
        return m.lastgroup, m.group(m.lastgroup), m.end()

    def _next(self):
        kind, value, end = self._peek()
        if kind is None:
            rest = self.text[self.pos:].strip()
            if rest:
                raise _bad(f"无法识别“{rest[:20]}”", f"unexpected text at position {self.pos}: {rest[:20]!r}")
            raise _bad("表达式不完整", "unexpected end of expression")
        self.pos = end
        return kind, value

    def _keyword(self, *words) -> str | None:
        kind, value, end = self._peek()
        if kind == "word" and value.upper() in words:
            self.pos = end
            return value.upper()
        return None

    def _expect(self, symbol: str) -> None:
        kind, value = self._next()
        if value != symbol and not (kind == "word" and value.upper() == symbol):
            raise _bad(f"此处应为 {symbol}", f"expected {symbol!r} but found {value!r}")

    def parse(self):
        node = self._or()
        if self.text[self.pos:].strip():
            raise _bad(f"多余的内容“{self.text[self.pos:].strip()[:20]}”",
                       f"unexpected text after the expression: {self.text[self.pos:].strip()[:20]!r}")
        return node

    def _or(self):
        node = self._and()
        while self._keyword("OR"):
            node = Node("or", (node, self._and()))
        return node

    def _and(self):
        node = self._not()
        while self._keyword("AND"):
            node = Node("and", (node, self._not()))
        return node

    def _not(self):
        if self._keyword("NOT"):
            return Node("not", (self._not(),))
        return self._primary()

    def _primary(self):
        kind, value, end = self._peek()
        if value == "(":
            self.pos = end
            node = self._or()
            self._expect(")")
            return node
        if kind == "word" and value.upper() in _SPATIAL:
            self.pos = end
            self._expect("(")
            a = self._spatial_operand()
            self._expect(",")
            b = self._spatial_operand()
            self._expect(")")
            return Node("spatial", (_SPATIAL[value.upper()], a, b))
        left = self._scalar()
        negated = bool(self._keyword("NOT"))
        if self._keyword("LIKE"):
            return Node("like", (left, self._scalar()), negated)
        if self._keyword("IN"):
            return Node("in", (left, tuple(self._scalar_list())), negated)
        if self._keyword("BETWEEN"):
            low = self._scalar()
            self._expect("AND")
            return Node("between", (left, low, self._scalar()), negated)
        if negated:
            raise _bad("NOT 之后应为 LIKE、IN 或 BETWEEN", "NOT here must be followed by LIKE, IN or BETWEEN")
        if self._keyword("IS"):
            negated = bool(self._keyword("NOT"))
            self._expect("NULL")
            return Node("isnull", (left,), negated)
        kind, value = self._next()
        if kind != "op":
            raise _bad(f"此处应为比较运算符，而不是“{value}”", f"expected a comparison operator, found {value!r}")
        return Node("compare", (value, left, self._scalar()))

    def _scalar_list(self) -> list:
        """'(' scalar (',' scalar)* ')'"""
        self._expect("(")
        items = [self._scalar()]
        while self._peek()[1] == ",":
            self._next()
            items.append(self._scalar())
        self._expect(")")
        return items

    def _scalar(self):
        kind, value = self._next()
        if kind == "number":
            return Literal(float(value) if any(c in value for c in ".eE") else int(value))
        if kind == "string":
            return Literal(value[1:-1].replace("''", "'"))
        if kind == "quoted":
            return Prop(value[1:-1])
        if kind == "word":
            upper = value.upper()
            if upper in ("TRUE", "FALSE"):
                return Literal(upper == "TRUE")
            if upper in ("DATE", "TIMESTAMP"):
                self._expect("(")
                k, text = self._next()
                self._expect(")")
                if k != "string":
                    raise _bad(f"{upper} 需要带引号的时间", f"{upper} takes a quoted value")
                return Literal(_temporal(upper, text[1:-1]))
            return Prop(value)
        raise _bad(f"此处应为字段名或值，而不是“{value}”", f"expected a property or a value, found {value!r}")

    def _spatial_operand(self):
        kind, value, end = self._peek()
        if kind == "word" and value.upper() in _WKT_TYPES:
            depth, i = 0, end
            while i < len(self.text):
                if self.text[i] == "(":
                    depth += 1
                elif self.text[i] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            wkt = self.text[self.pos:i + 1]
            self.pos = i + 1
            try:
                geom = shapely.from_wkt(wkt)
            except Exception:  # GEOS reports malformed WKT in several ways
                raise _bad(f"几何字面量无效：{wkt[:40]}", f"invalid WKT literal: {wkt[:40]}") from None
            if not geom.is_valid:
                raise _bad("几何字面量自相交或无效", "geometry literal is not valid (self-intersecting?)")
            return Literal(geom)
        if kind == "word" and value.upper() in ("BBOX", "ENVELOPE"):
            self.pos = end
            numbers = self._scalar_list()
            values = [n.value for n in numbers if isinstance(n, Literal) and isinstance(n.value, (int, float))]
            if len(values) != 4 or len(numbers) != 4:
                raise _bad("BBOX 需要4个数字", "BBOX takes 4 numbers")
            return Literal(shapely.box(*values))
        return self._scalar()


def _temporal(kind: str, text: str) -> str:
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(f"无法解析时间“{text}”", f"cannot parse {kind} {text!r}") from None
    if kind == "DATE":
        return parsed.date().isoformat()
    return parsed.replace(tzinfo=None).isoformat(timespec="seconds")


def parse(text: str):
    return _Parser(text).parse()


def properties(node) -> set[str]:
    """Every property name a filter mentions (for access checks before any SQL runs)."""
    if isinstance(node, Prop):
        return {node.name}
    if isinstance(node, Node):
        return set().union(*(properties(a) for a in node.args)) if node.args else set()
    if isinstance(node, tuple):
        return set().union(*(properties(a) for a in node)) if node else set()
    return set()


# --- SQL ------------------------------------------------------------------------------------------------
SpatialResolver = Callable[[str, object], str]
"""Given (predicate name, shapely geometry in storage CRS) return a SQL fragment selecting matching rows."""


class Translator:
    def __init__(self, columns: dict[str, str], geometry_names: set[str], spatial: SpatialResolver,
                 to_storage: Callable):
        self.columns = columns  # queryable name -> field type
        self.geometry_names = geometry_names
        self.spatial = spatial
        self.to_storage = to_storage  # shapely geometry in filter-crs -> storage CRS
        self.params: list = []

    def translate(self, node) -> str:
        op = node.op
        if op in ("and", "or"):
            return f"({self.translate(node.args[0])} {op.upper()} {self.translate(node.args[1])})"
        if op == "not":
            return f"(NOT {self.translate(node.args[0])})"
        if op == "compare":
            symbol, left, right = node.args
            self._check_types(left, right)
            return f"({self._operand(left)} {symbol} {self._operand(right)})"
        if op == "like":
            sql = f"({self._operand(node.args[0])} LIKE {self._operand(node.args[1])} ESCAPE '\\')"
        elif op == "in":
            for v in node.args[1]:
                self._check_types(node.args[0], v)
            items = ", ".join(self._operand(v) for v in node.args[1])
            sql = f"({self._operand(node.args[0])} IN ({items}))"
        elif op == "between":
            self._check_types(node.args[0], node.args[1])
            self._check_types(node.args[0], node.args[2])
            left, low, high = (self._operand(a) for a in node.args)
            sql = f"({left} BETWEEN {low} AND {high})"
        elif op == "isnull":
            sql = f"({self._operand(node.args[0])} IS NULL)"
        else:
            return self._spatial(*node.args)
        return f"(NOT {sql})" if node.negated else sql

    _ACCEPTS = {"string": (str,), "date": (str,), "datetime": (str,), "integer": (int, float),
                "real": (int, float), "boolean": (bool,)}

    def _check_types(self, a, b) -> None:
        """A property compared with a literal of another type is an error (SQLite would just match nothing)."""
        if isinstance(b, Prop) and isinstance(a, Literal):
            a, b = b, a
        if not (isinstance(a, Prop) and isinstance(b, Literal)) or a.name not in self.columns:
            return
        ftype = self.columns[a.name]
        value = b.value
        ok = isinstance(value, self._ACCEPTS[ftype]) and not (ftype in ("integer", "real") and isinstance(value, bool))
        if not ok:
            raise _bad(f"字段 {a.name}（{ftype}）不能与值 {value!r} 比较",
                       f"property '{a.name}' ({ftype}) cannot be compared with {value!r}")

    def _spatial(self, predicate: str, a, b) -> str:
        if isinstance(a, Literal) and isinstance(b, Prop):
            a, b, predicate = b, a, _CONVERSE.get(predicate, predicate)
        if not (isinstance(a, Prop) and a.name in self.geometry_names and isinstance(b, Literal)
                and isinstance(b.value, shapely.Geometry)):
            raise _bad("空间谓词须比较几何字段 geom 与几何字面量",
                       "a spatial predicate compares the geometry 'geom' with a geometry literal")
        return self.spatial(predicate, self.to_storage(b.value))

    def _operand(self, node) -> str:
        if isinstance(node, Prop):
            if node.name not in self.columns:
                raise GisError("unknown_property", f"不可查询的字段：{node.name}",
                               f"property '{node.name}' is not queryable", 400)
            return f'"{node.name}"'
        value = node.value
        if isinstance(value, shapely.Geometry):
            raise _bad("几何只能用于空间谓词", "geometries can only be used in spatial predicates")
        self.params.append(int(value) if isinstance(value, bool) else value)
        return "?"
