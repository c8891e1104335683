"""Layer definitions: every layer describes itself in a TOML file beside its data.

The catalog, the OGC API, the map factory and the exporters all read these definitions; no code
special-cases a layer by name. A wrong definition stops start-up with the file and key named.
"""

from __future__ import annotations

import re
import sqlite3
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .errors import DefinitionError

ACCESS_CLASSES = ("public", "internal", "restricted")
ROLES = ("planner", "flood", "environment", "rural", "admin")
FIELD_TYPES = ("string", "integer", "real", "boolean", "date", "datetime")
GEOMETRY_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon", "Raster")
PERSONAL_KINDS = ("name", "id_number", "phone")
# Masking kind given to every personal field for a caller without a key: no value at all (null in JSON, left out
# of tiles and popups) — issue #9 §8 "without a key, plots come without persons".
WITHHELD = "withheld"
# Layer ids and field names are spliced into SQL (table and column names), so only plain identifiers pass.
IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
RESERVED_FIELD_NAMES = ("fid", "geom", "geometry")  # the store's own columns
GROUPS_FILE = "groups.toml"  # map-index groups, one per folder under layers/


@dataclass(frozen=True)
class FieldDef:
    name: str
    type: str
    label: str
    personal: str | None = None  # one of PERSONAL_KINDS when the field holds personal data
    source: str | None = None  # property name in the source file when it differs


@dataclass(frozen=True)
class LayerDef:
    id: str
    group: str
    title_zh: str
    title_en: str
    geometry: str
    access: str
    fields: tuple[FieldDef, ...]
    path: Path  # the TOML file
    description_zh: str = ""
    roles: tuple[str, ...] = ()  # who may see a restricted layer (admin always may)
    personal_roles: tuple[str, ...] = ("admin",)  # who sees personal fields unmasked
    popup: tuple[str, ...] = ()
    label_field: str | None = None
    time_field: str | None = None
    style: dict = field(default_factory=dict, hash=False)
    source: str | None = None  # real data file (relative to the TOML) imported by build-layers
    source_crs: str = "EPSG:4326"
    demo: bool = False
    derived: bool = False  # computed by a domain from other layers and its rules (written at start-up or on edit)
    tiles: TileDef | None = None  # the [tiles] table (vector tiles); None: the defaults of TileDef
    provenance: str = ""
    basemap: bool = False  # drawn under every map (the offline base map); public vector layers only
    basemap_order: int = 0  # base layers are drawn in this order (lower first, i.e. underneath)
    label_min_zoom: int | None = None  # permanent labels (label_field) from this zoom level on; None: none
    license: str = ""  # licence of the data (e.g. "CC-BY-4.0"), shown to OGC clients; "" = see layers/PROVENANCE.md
    keywords: tuple[str, ...] = ()  # extra keywords for OGC clients (group, titles and status are always given)
    # Fields the stores index on write (codes looked up, filtered or sorted on: a sorted OGC page or a
    # `dkbm = …` filter over two million plots reads the index instead of sorting or scanning every row).
    indexes: tuple[str, ...] = ()

    @property
    def data_path(self) -> Path:
        suffix = ".tif" if self.geometry == "Raster" else ".gpkg"
        return self.path.with_name(self.id + suffix)

    @property
    def is_raster(self) -> bool:
        return self.geometry == "Raster"

    def field(self, name: str) -> FieldDef | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def personal_fields(self) -> tuple[FieldDef, ...]:
        return tuple(f for f in self.fields if f.personal)

    def can_see_layer(self, role: str | None) -> bool:
        if self.access == "public":
            return True
        if role is None:
            return False
        if self.access == "internal":
            return True
        return role == "admin" or role in self.roles

    def sees_personal(self, role: str | None) -> bool:
        return role is not None and (role == "admin" or role in self.personal_roles)

    def masked_fields(self, role: str | None) -> dict[str, str]:
        """Personal field -> masking kind for a role not entitled to clear values (empty when entitled): the
        field's own kind (e.g. 张**) for a signed-in role, WITHHELD (no value at all) without a key (role None)."""
        if self.sees_personal(role):
            return {}
        return {f.name: f.personal if role is not None else WITHHELD for f in self.personal_fields}


def _require(data: dict, key: str, path: Path, kind=str):
    if key not in data:
        raise DefinitionError(path, key, "缺少必填项", "missing required key")
    value = data[key]
    if not isinstance(value, kind):
        raise DefinitionError(path, key, f"类型应为 {kind.__name__}", f"must be of type {kind.__name__}")
    return value


def _choice(value, allowed, path: Path, key: str):
    if value not in allowed:
        raise DefinitionError(path, key, f"取值 {value!r} 不在 {allowed} 中", f"value {value!r} not one of {allowed}")
    return value


@lru_cache(maxsize=None)
def _is_sql_keyword(name: str) -> bool:
    """True when SQLite will not take the name unquoted (SELECT, ORDER, GROUP …); asks SQLite itself."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(f'SELECT {name} FROM (SELECT 1 AS "{name}")')  # name already matched IDENTIFIER
    except sqlite3.Error:
        return True
    finally:
        conn.close()
    return False


def _identifier(value, path: Path, key: str) -> str:
    """A name that becomes a table or column name: lower-case ASCII, no '__' (internal names), no SQL keyword."""
    if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
        raise DefinitionError(path, key, f"{value!r} 须为小写英文标识符（a-z、0-9、_，不以数字开头）",
                              f"{value!r} must be a lower-case identifier matching ^[a-z_][a-z0-9_]*$")
    if "__" in value:
        raise DefinitionError(path, key, f"{value!r} 含双下划线（留作内部名称）",
                              f"{value!r} contains '__' (reserved for internal names)")
    if _is_sql_keyword(value):
        raise DefinitionError(path, key, f"{value!r} 是 SQL 保留字", f"{value!r} is an SQL keyword")
    return value


def load_definition(path: Path) -> LayerDef:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise DefinitionError(path, "(syntax)", f"TOML 语法错误 {exc}", f"TOML syntax error: {exc}") from exc
    known = {"id", "title_zh", "title_en", "description_zh", "geometry", "access", "roles", "personal_roles",
             "popup", "label_field", "time_field", "style", "source", "source_crs", "demo", "provenance", "fields",
             "basemap", "basemap_order", "label_min_zoom", "derived", "license", "keywords", "indexes"}
    known.add("tiles")  # vector tiles, see TileDef
    for key in data:
        if key not in known:
            raise DefinitionError(path, key, "未知的键", "unknown key")
    layer_id = _identifier(_require(data, "id", path), path, "id")
    if path.stem != layer_id:
        raise DefinitionError(path, "id", f"须与文件名 {path.stem} 一致", f"must equal the file name '{path.stem}'")
    geometry = _choice(_require(data, "geometry", path), GEOMETRY_TYPES, path, "geometry")
    access = _choice(_require(data, "access", path), ACCESS_CLASSES, path, "access")
    roles = tuple(_choice(r, ROLES, path, "roles") for r in data.get("roles", []))
    if access == "restricted" and not roles:
        raise DefinitionError(path, "roles", "受限图层须列出可访问角色", "a restricted layer must list its roles")
    personal_roles = tuple(_choice(r, ROLES, path, "personal_roles") for r in data.get("personal_roles", ["admin"]))
    fields = []
    for i, f in enumerate(data.get("fields", [])):
        key = f"fields[{i}]"
        if not isinstance(f, dict):
            raise DefinitionError(path, key, "须为表", "must be a table")
        name = _identifier(_require(f, "name", path), path, f"{key}.name")
        if name in RESERVED_FIELD_NAMES:
            raise DefinitionError(path, f"{key}.name", f"{name!r} 是存储保留的列名",
                                  f"{name!r} is a column name the store reserves")
        ftype = _choice(f.get("type"), FIELD_TYPES, path, f"{key}.type")
        label = _require(f, "label", path)
        personal = f.get("personal")
        if personal is not None:
            _choice(personal, PERSONAL_KINDS, path, f"{key}.personal")
        unknown = set(f) - {"name", "type", "label", "personal", "source"}
        if unknown:
            raise DefinitionError(path, f"{key}.{sorted(unknown)[0]}", "未知的键", "unknown key")
        fields.append(FieldDef(name, ftype, label, personal, f.get("source")))
    names = [f.name for f in fields]
    if len(set(names)) != len(names):
        raise DefinitionError(path, "fields", "字段名重复", "duplicate field names")
    for key in ("popup",):
        for name in data.get(key, []):
            if name not in names:
                raise DefinitionError(path, key, f"字段 {name} 未定义", f"field '{name}' is not defined")
    indexes = data.get("indexes", [])
    if not isinstance(indexes, list) or not all(isinstance(n, str) for n in indexes):
        raise DefinitionError(path, "indexes", "须为字段名列表", "must be a list of field names")
    for name in indexes:
        if name not in names:
            raise DefinitionError(path, "indexes", f"字段 {name} 未定义", f"field '{name}' is not defined")
    for key in ("label_field", "time_field"):
        if key in data and data[key] not in names:
            raise DefinitionError(path, key, f"字段 {data[key]} 未定义", f"field '{data[key]}' is not defined")
    style = data.get("style", {})
    if not isinstance(style, dict):
        raise DefinitionError(path, "style", "须为表", "must be a table")
    _check_style(style, path, names)
    basemap, basemap_order, label_min_zoom = _basemap_keys(data, path, geometry, access)
    license_ = data.get("license", "")
    if not isinstance(license_, str):
        raise DefinitionError(path, "license", "须为字符串", "must be a string")
    keywords = data.get("keywords", [])
    if not isinstance(keywords, list) or not all(isinstance(k, str) and k for k in keywords):
        raise DefinitionError(path, "keywords", "须为非空字符串的列表", "must be a list of non-empty strings")
    derived = data.get("derived", False)
    if not isinstance(derived, bool):
        raise DefinitionError(path, "derived", "须为 true 或 false", "must be true or false")
    if derived and (data.get("source") or data.get("demo")):
        raise DefinitionError(path, "derived", "派生图层不能同时有 source 或 demo", "a derived layer has no source and is not demo")
    tiles = _tiles_def(data.get("tiles"), path, fields, style, geometry)
    return LayerDef(
        id=layer_id,
        group=path.parent.name,
        title_zh=_require(data, "title_zh", path),
        title_en=_require(data, "title_en", path),
        description_zh=data.get("description_zh", ""),
        geometry=geometry,
        access=access,
        roles=roles,
        personal_roles=personal_roles,
        fields=tuple(fields),
        popup=tuple(data.get("popup", [])),
        label_field=data.get("label_field"),
        time_field=data.get("time_field"),
        style=style,
        source=data.get("source"),
        source_crs=data.get("source_crs", "EPSG:4326"),
        demo=bool(data.get("demo", False)),
        derived=derived,
        tiles=tiles,
        provenance=data.get("provenance", ""),
        basemap=basemap,
        basemap_order=basemap_order,
        label_min_zoom=label_min_zoom,
        license=license_,
        keywords=tuple(keywords),
        indexes=tuple(dict.fromkeys(indexes)),
        path=path,
    )


# Keys of a layer's style table, drawn by gis_service/maps/factory.py (Style; a test keeps the two equal).
_NUMBER = (int, float)
# Style key -> the TOML types it takes (every map page draws base layers: a wrong value must stop start-up).
STYLE_TYPES = {"color": str, "weight": _NUMBER, "fill": bool, "fill_color": str, "fill_opacity": _NUMBER,
               "radius": _NUMBER, "dash_array": str, "category_field": str, "categories": dict, "category_labels": dict,
               "label_size": int}
STYLE_KEYS = frozenset(STYLE_TYPES)
_COLOR = re.compile(r"^(#[0-9a-fA-F]{3,8}|[a-z]+)$")
_DASH = re.compile(r"^\d+(\.\d+)?([ ,]+\d+(\.\d+)?)*$")


def _check_style(style: dict, path: Path, names: list[str]) -> None:
    for key, value in style.items():
        if key not in STYLE_KEYS:
            raise DefinitionError(path, f"style.{key}", "未知的样式键", f"unknown style key; known: {sorted(STYLE_KEYS)}")
        kinds = STYLE_TYPES[key]
        if not isinstance(value, kinds) or isinstance(value, bool) and kinds is not bool:
            raise DefinitionError(path, f"style.{key}", "取值类型不对", f"wrong type {type(value).__name__}")
    colors = [style[k] for k in ("color", "fill_color") if k in style] + list(style.get("categories", {}).values())
    for color in colors:
        if not isinstance(color, str) or not _COLOR.match(color):
            raise DefinitionError(path, "style", f"颜色 {color!r} 无效（#rrggbb 或颜色名）",
                                  f"invalid colour {color!r} (#rrggbb or a colour name)")
    if "dash_array" in style and not _DASH.match(style["dash_array"]):
        raise DefinitionError(path, "style.dash_array", "须为数字序列，如 \"8 4\"", 'must be numbers, e.g. "8 4"')
    unlabelled = set(style.get("category_labels", {})) - set(style.get("categories", {}))
    if unlabelled:
        raise DefinitionError(path, "style.category_labels", f"{sorted(unlabelled)} 不在 categories 中",
                              f"{sorted(unlabelled)} are not in categories")
    if "category_field" in style and style["category_field"] not in names:
        raise DefinitionError(path, "style.category_field", f"字段 {style['category_field']} 未定义",
                              f"field '{style['category_field']}' is not defined")


def _basemap_keys(data: dict, path: Path, geometry: str, access: str) -> tuple[bool, int, int | None]:
    """basemap (bool), basemap_order (int), label_min_zoom (0–20, needs label_field)."""
    basemap = data.get("basemap", False)
    if not isinstance(basemap, bool):
        raise DefinitionError(path, "basemap", "须为 true 或 false", "must be true or false")
    if basemap and (access != "public" or geometry == "Raster"):
        raise DefinitionError(path, "basemap", "底图图层须为公开的矢量图层（每个地图页面都会显示）",
                              "a base-map layer must be a public vector layer (every map page shows it)")
    order = data.get("basemap_order", 0)
    if not isinstance(order, int) or isinstance(order, bool):
        raise DefinitionError(path, "basemap_order", "须为整数", "must be an integer")
    zoom = data.get("label_min_zoom")
    if zoom is not None:
        if not isinstance(zoom, int) or isinstance(zoom, bool) or not 0 <= zoom <= 20:
            raise DefinitionError(path, "label_min_zoom", "须为 0–20 的整数", "must be an integer from 0 to 20")
        if "label_field" not in data:
            raise DefinitionError(path, "label_min_zoom", "须同时设置 label_field", "needs label_field")
    return basemap, order, zoom


MAX_TILE_ZOOM = 24  # the deepest tile matrix of WebMercatorQuad (OGC 2D Tile Matrix Set, annex D.1)


@dataclass(frozen=True)
class TileDef:
    """How a vector layer is served as Mapbox vector tiles (gis_service/tiles.py): its ``[tiles]`` table.

    From ``detail_zoom`` on every feature is in the tiles (features smaller than a pixel dropped); below it a
    tile holds square cells of ``cell_pixels`` with the number of features whose envelope centre lies in the
    cell and, for each of ``aggregate_fields``, the most frequent value and its share — so a dense layer keeps
    its styling when zoomed out. ``fields`` are the properties carried by the feature tiles (personal ones
    masked per role); by default the label, style category and popup fields."""

    min_zoom: int = 0
    max_zoom: int = 20
    detail_zoom: int | None = None  # None: features at every zoom (no aggregate)
    fields: tuple[str, ...] | None = None
    aggregate_fields: tuple[str, ...] = ()
    cell_pixels: int = 8
    max_features: int = 20_000  # a feature tile needing more is refused (tile_too_dense): zoom in, or set detail_zoom


# Features one tile may hold unless the [tiles] table says otherwise: a zoom-14 tile of plots holds ~1 000;
# 20 000 points encode in about half a second into ~1.3 MB. Without it a layer with no [tiles] table (no
# cells) made whole-layer tiles zoomed out: 37 000 households were one 2.5 MB z0 tile, 740 000 at 2 000 000 plots.
_TILE_KEYS = {"min_zoom", "max_zoom", "detail_zoom", "fields", "aggregate_fields", "cell_pixels", "max_features"}


def _tiles_def(table, path: Path, fields: list[FieldDef], style: dict, geometry: str) -> TileDef | None:
    """The [tiles] table checked: zooms within WebMercatorQuad, fields defined, aggregates not personal."""
    if table is None:
        return None
    if not isinstance(table, dict) or geometry == "Raster":
        raise DefinitionError(path, "tiles", "须为表（仅矢量图层）", "must be a table (vector layers only)")
    unknown = set(table) - _TILE_KEYS
    if unknown:
        raise DefinitionError(path, f"tiles.{sorted(unknown)[0]}", "未知的键", f"unknown key; known: {sorted(_TILE_KEYS)}")
    zooms = {}
    for key, default in (("min_zoom", 0), ("max_zoom", 20), ("detail_zoom", None)):
        value = table.get(key, default)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TILE_ZOOM):
            raise DefinitionError(path, f"tiles.{key}", f"须为 0–{MAX_TILE_ZOOM} 的整数",
                                  f"must be an integer from 0 to {MAX_TILE_ZOOM}")
        zooms[key] = value
    if zooms["min_zoom"] > zooms["max_zoom"]:
        raise DefinitionError(path, "tiles.min_zoom", "不能大于 max_zoom", "must not exceed max_zoom")
    detail = zooms["detail_zoom"]
    if detail is not None and not zooms["min_zoom"] < detail <= zooms["max_zoom"]:
        raise DefinitionError(path, "tiles.detail_zoom", "须大于 min_zoom 且不大于 max_zoom",
                              "must be above min_zoom and not above max_zoom")
    by_name = {f.name: f for f in fields}
    chosen = {}
    for key in ("fields", "aggregate_fields"):
        names = table.get(key)
        if names is None:
            continue
        if not isinstance(names, list) or any(n not in by_name for n in names) or len(set(names)) != len(names):
            raise DefinitionError(path, f"tiles.{key}", "须为已定义字段名的列表（不重复）",
                                  "must be a list of defined field names, each once")
        chosen[key] = tuple(names)
    aggregate = chosen.get("aggregate_fields")
    if aggregate is None:  # default when aggregating: the style's category field
        aggregate = (style["category_field"],) if style.get("category_field") and detail is not None else ()
    if aggregate and detail is None:
        raise DefinitionError(path, "tiles.aggregate_fields", "须同时设置 detail_zoom", "needs detail_zoom")
    personal = [n for n in aggregate if by_name[n].personal]
    if personal:
        raise DefinitionError(path, "tiles.aggregate_fields", f"{personal} 是个人信息字段，不能汇总展示",
                              f"{personal} are personal fields and cannot be aggregated")
    clash = [n for n in aggregate if n == "count" or n.endswith("_share") and n[:-6] in aggregate]
    if clash:
        raise DefinitionError(path, "tiles.aggregate_fields", f"{clash} 与汇总格网的属性名（count、*_share）冲突",
                              f"{clash} clash with the cells' own properties (count, *_share)")
    cell = table.get("cell_pixels", 8)
    if not isinstance(cell, int) or isinstance(cell, bool) or cell < 1 or 256 % cell:
        raise DefinitionError(path, "tiles.cell_pixels", "须为 256 的约数（1、2、4 … 256）",
                              "must divide 256 (1, 2, 4 … 256)")
    most = table.get("max_features", TileDef.max_features)
    if not isinstance(most, int) or isinstance(most, bool) or most < 1:
        raise DefinitionError(path, "tiles.max_features", "须为正整数", "must be a positive integer")
    return TileDef(zooms["min_zoom"], zooms["max_zoom"], detail, chosen.get("fields"), aggregate, cell, most)


@dataclass(frozen=True)
class GroupDef:
    """A map-index group: a folder under layers/ with its titles and place in the index."""
    id: str
    title_zh: str
    title_en: str
    order: int


def load_groups(path: Path) -> dict[str, GroupDef]:
    """Group id -> GroupDef from groups.toml, in display order (order, then id); a missing file has no groups."""
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise DefinitionError(path, "(syntax)", f"TOML 语法错误 {exc}", f"TOML syntax error: {exc}") from exc
    groups = []
    for group_id, entry in data.items():
        _identifier(group_id, path, group_id)
        if not isinstance(entry, dict):
            raise DefinitionError(path, group_id, "须为表", "must be a table")
        for key, kind in (("title_zh", str), ("title_en", str), ("order", int)):
            value = entry.get(key)
            if not isinstance(value, kind) or isinstance(value, bool) or value == "":
                raise DefinitionError(path, f"{group_id}.{key}", f"缺少或类型不是 {kind.__name__}",
                                      f"missing or not of type {kind.__name__}")
        unknown = set(entry) - {"title_zh", "title_en", "order"}
        if unknown:
            raise DefinitionError(path, f"{group_id}.{sorted(unknown)[0]}", "未知的键", "unknown key")
        groups.append(GroupDef(group_id, entry["title_zh"], entry["title_en"], entry["order"]))
    return {g.id: g for g in sorted(groups, key=lambda g: (g.order, g.id))}


class Catalog:
    """All layer definitions under a layers/ directory, in a stable order (group, then id), and their groups."""

    def __init__(self, layers: list[LayerDef], groups: dict[str, GroupDef] | None = None, root: Path | None = None):
        self._layers = {layer.id: layer for layer in layers}
        self.groups = groups or {}  # group id -> GroupDef, in display order
        self.root = root  # the layers/ directory the definitions came from

    @classmethod
    def load(cls, root: Path) -> "Catalog":
        seen: dict[str, Path] = {}
        layers = []
        for path in sorted(Path(root).glob("*/*.toml")):
            layer = load_definition(path)
            if layer.id in seen:
                raise DefinitionError(path, "id", f"与 {seen[layer.id]} 重复", f"duplicates {seen[layer.id]}")
            seen[layer.id] = path
            layers.append(layer)
        groups_path = Path(root) / GROUPS_FILE
        groups = load_groups(groups_path)
        for layer in layers:
            if layer.group not in groups:
                raise DefinitionError(groups_path, layer.group, f"图层文件夹 {layer.group}/ 没有分组条目",
                                      f"layer folder '{layer.group}/' has no group entry")
        return cls(layers, groups, Path(root))

    def __iter__(self):
        return iter(self._layers.values())

    def __len__(self) -> int:
        return len(self._layers)

    def get(self, layer_id: str) -> LayerDef | None:
        return self._layers.get(layer_id)

    def visible_to(self, role: str | None) -> list[LayerDef]:
        return [layer for layer in self if layer.can_see_layer(role)]
