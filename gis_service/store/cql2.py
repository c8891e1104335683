"""CQL2 text → parameterised SQLite WHERE clause.

Parsing is pygeofilter's; translation is ours so that only queryable fields reach SQL, values are always
bound parameters, and spatial predicates are answered by the store's R-tree plus an exact shapely test
(the predicate becomes ``fid IN (<matching fids>)``).
"""

from __future__ import annotations

import datetime as dt
from typing import Callable

import shapely
from pygeofilter import ast, values
from pygeofilter.parsers.cql2_text import parse as parse_cql2_text

from ..errors import GisError

_COMPARISONS = {
    ast.Equal: "=", ast.NotEqual: "<>", ast.LessThan: "<", ast.LessEqual: "<=",
    ast.GreaterThan: ">", ast.GreaterEqual: ">=",
}
_SPATIAL = {
    ast.GeometryIntersects: "intersects", ast.GeometryWithin: "within", ast.GeometryContains: "contains",
    ast.GeometryDisjoint: "disjoint", ast.GeometryEquals: "equals", ast.GeometryTouches: "touches",
    ast.GeometryOverlaps: "overlaps", ast.GeometryCrosses: "crosses",
}


def _bad(zh: str, en: str) -> GisError:
    return GisError("bad_filter", f"filter 参数无效：{zh}", f"invalid filter: {en}", 400)


def parse(text: str):
    try:
        return parse_cql2_text(text)
    except Exception as exc:  # lark raises many types; all mean "not CQL2 text we understand"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _bad(f"不是有效的 CQL2 文本（{first_line}）", f"not valid CQL2 text ({first_line})") from None


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
        if isinstance(node, ast.And):
            return f"({self.translate(node.lhs)} AND {self.translate(node.rhs)})"
        if isinstance(node, ast.Or):
            return f"({self.translate(node.lhs)} OR {self.translate(node.rhs)})"
        if isinstance(node, ast.Not):
            return f"(NOT {self.translate(node.sub_node)})"
        if type(node) in _COMPARISONS:
            return f"({self._column(node.lhs)} {_COMPARISONS[type(node)]} {self._value(node.rhs)})"
        if isinstance(node, ast.Like):
            col = self._column(node.lhs)
            pattern = str(node.pattern)
            if node.wildcard != "%" or node.singlechar not in (".", "_"):
                pattern = pattern.replace(node.wildcard, "%")
            sql = f"({col} LIKE {self._value(pattern)} ESCAPE '\\')"
            return f"(NOT {sql})" if node.not_ else sql
        if isinstance(node, ast.In):
            col = self._column(node.lhs)
            items = ", ".join(self._value(v) for v in node.sub_nodes)
            return f"({col} {'NOT IN' if node.not_ else 'IN'} ({items}))"
        if isinstance(node, ast.IsNull):
            return f"({self._column(node.lhs)} IS {'NOT ' if node.not_ else ''}NULL)"
        if isinstance(node, ast.Between):
            col = self._column(node.lhs)
            sql = f"({col} BETWEEN {self._value(node.low)} AND {self._value(node.high)})"
            return f"(NOT {sql})" if node.not_ else sql
        if type(node) in _SPATIAL:
            attr, geom = node.lhs, node.rhs
            if isinstance(geom, ast.Attribute):
                attr, geom = geom, attr
            if not isinstance(attr, ast.Attribute) or attr.name not in self.geometry_names:
                raise _bad("空间谓词的一侧须为几何字段 geom", "one side of a spatial predicate must be the geometry 'geom'")
            return self.spatial(_SPATIAL[type(node)], self.to_storage(_literal_geometry(geom)))
        if isinstance(node, ast.Include):
            return "1"
        raise _bad(f"不支持的运算 {type(node).__name__}", f"unsupported operation {type(node).__name__}")

    def _column(self, node) -> str:
        if not isinstance(node, ast.Attribute):
            raise _bad("比较的左侧须为字段名", "the left side of a comparison must be a property name")
        if node.name not in self.columns:
            raise GisError("unknown_property", f"不可查询的字段：{node.name}",
                           f"property '{node.name}' is not queryable", 400)
        return f'"{node.name}"'

    def _value(self, value) -> str:
        if isinstance(value, ast.Attribute):
            return self._column(value)
        if isinstance(value, bool):
            self.params.append(int(value))
        elif isinstance(value, (int, float, str)):
            self.params.append(value)
        elif isinstance(value, dt.datetime):
            self.params.append(value.isoformat().replace("+00:00", "Z"))
        elif isinstance(value, dt.date):
            self.params.append(value.isoformat())
        else:
            raise _bad(f"不支持的值 {value!r}", f"unsupported value {value!r}")
        return "?"


def _literal_geometry(node):
    if isinstance(node, values.Geometry):
        try:
            geom = shapely.geometry.shape(node.geometry)
        except Exception:
            raise _bad("几何字面量无效", "invalid geometry literal") from None
        if not geom.is_valid:
            raise _bad("几何字面量自相交或无效", "geometry literal is not valid (self-intersecting?)")
        return geom
    if isinstance(node, values.Envelope):
        return shapely.box(node.x1, node.y1, node.x2, node.y2)
    raise _bad("空间谓词须带几何字面量", "a spatial predicate needs a geometry literal")
