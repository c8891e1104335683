"""OGC API – Features core, framework-neutral: parameters in, documents out (the web layer only adapts).

Parts honoured: 1 (core, GeoJSON, HTML, OpenAPI 3.0), 2 (crs, bbox-crs, Content-Crs; coordinates in the
CRS's own axis order, so EPSG:4490 is lat/lon and EPSG:4548/4527 northing/easting, while CRS84 stays
lon/lat) and 3 (filtering with CQL2 text or JSON, queryables, property equality parameters).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from urllib.parse import urlencode

import numpy as np
import orjson
import shapely

from . import crs as crs_mod
from .auth import Principal
from .catalog import Catalog, LayerDef
from .errors import GisError, bad_parameter, not_found
from .privacy import AccessLog
from .store import FeatureQuery, Store, display_title, is_demo, parse_datetime_interval
from .store import cql2

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
GEOJSON = "application/geo+json"

CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/html",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables-query-parameters",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions-plus",
    "http://www.opengis.net/spec/cql2/1.0/conf/spatial-functions",
]
# OGC API – Tiles and the 2D Tile Matrix Set standard, served by gis_service/tiles.py
TILES_CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tileset",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tilesets-list",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/geodata-tilesets",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/mvt",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/tms/2.0/conf/tilematrixset",
    "http://www.opengis.net/spec/tms/2.0/conf/json-tilematrixset",
    "http://www.opengis.net/spec/tms/2.0/conf/tilesetmetadata",
    "http://www.opengis.net/spec/tms/2.0/conf/json-tilesetmetadata",
]
RESERVED_PARAMS = {"f", "bbox", "bbox-crs", "limit", "offset", "datetime", "properties", "sortby", "crs",
                   "filter", "filter-lang", "filter-crs"}
_JSON_TYPES = {"string": "string", "integer": "integer", "real": "number", "boolean": "boolean",
               "date": "string", "datetime": "string"}


@dataclass
class Context:
    """Who is asking and what the service has: passed to every OGC function."""

    catalog: Catalog
    store: Store
    access_log: AccessLog
    principal: Principal | None
    base_url: str  # e.g. http://127.0.0.1:8000/ogc

    @property
    def role(self) -> str | None:
        return self.principal.role if self.principal else None

    def layer(self, collection_id: str) -> LayerDef:
        layer = self.catalog.get(collection_id)
        # Invisible and missing look the same, so restricted layers cannot be discovered by probing.
        if layer is None or layer.is_raster or not layer.can_see_layer(self.role):
            raise not_found(f"要素集合 {collection_id}", f"collection '{collection_id}'")
        return layer

    def visible_fields(self, layer: LayerDef) -> list[str]:
        """Fields a caller may filter and sort on (personal fields only for entitled roles)."""
        sees = layer.sees_personal(self.role)
        return [f.name for f in layer.fields if sees or not f.personal]


def _link(href, rel, type_, title) -> dict:
    return {"href": href, "rel": rel, "type": type_, "title": title}


def landing(ctx: Context) -> dict:
    b = ctx.base_url
    return {
        "title": "廊坊空间决策支持系统 OGC API – Features",
        "description": "廊坊市基础图层与专题图层（大运河、突发环境事件、城区防汛、农村承包地）的要素服务",
        "links": [
            _link(f"{b}?f=json", "self", "application/json", "本文档 This document"),
            _link(f"{b}?f=html", "alternate", "text/html", "网页版 As HTML"),
            _link(f"{b}/openapi", "service-desc", "application/vnd.oai.openapi+json;version=3.0", "OpenAPI 定义"),
            _link(f"{b}/conformance", "conformance", "application/json", "符合性声明 Conformance"),
            _link(f"{b}/collections", "data", "application/json", "要素集合 Collections"),
            _link(f"{b}/tileMatrixSets", "http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes", "application/json",
                  "瓦片矩阵集 Tile matrix sets"),
        ],
    }


def provenance(ctx: Context) -> str:
    """The data sources document (layers/PROVENANCE.md) every collection's licence link points to."""
    path = ctx.catalog.root / PROVENANCE_FILE if ctx.catalog.root else None
    if path is None or not path.exists():
        raise not_found("数据来源说明", "provenance document")
    return path.read_text(encoding="utf-8")


def conformance() -> dict:
    return {"conformsTo": CONFORMANCE + TILES_CONFORMANCE}


ACCESS_LABELS = {"public": "公开 public", "internal": "内部 internal", "restricted": "受限 restricted"}
DEMO_NOTE = "演示数据（非调查或权威数据）demo data, not survey or authoritative data"
PROVENANCE_FILE = "PROVENANCE.md"  # in the layers/ directory: source, licence, CRS and accuracy of every layer


def _metadata(ctx: Context, layer: LayerDef, demo: bool) -> dict:
    """What desktop clients show as layer metadata (QGIS's OAPIF provider reads description → abstract,
    keywords, license and the rel=license links, links, extent): description with provenance and demo status."""
    group = ctx.catalog.groups.get(layer.group)
    keywords = [group.title_zh, group.title_en] if group else []
    keywords += [layer.title_zh, layer.title_en, ACCESS_LABELS[layer.access], *layer.keywords]
    if demo:
        keywords.append("演示数据 demo")
    lines = [layer.description_zh or layer.title_en]
    if demo:
        lines.append(DEMO_NOTE)
    if layer.provenance:
        lines.append(f"来源 Provenance：{layer.provenance}")
    licence = layer.license or f"见数据来源说明 see {PROVENANCE_FILE}：{layer.provenance or layer.title_en}"
    return {"description": "\n".join(lines), "keywords": list(dict.fromkeys(keywords)),
            "license": layer.license or "various", "provenance": layer.provenance,
            "license_link": _link(f"{ctx.base_url}/provenance", "license", "text/markdown", licence)}


def _collection_doc(ctx: Context, layer: LayerDef) -> dict:
    b = f"{ctx.base_url}/collections/{layer.id}"
    title = display_title(ctx.store, layer)
    demo = is_demo(ctx.store, layer)
    meta = _metadata(ctx, layer, demo)
    doc = {
        "id": layer.id,
        "title": title,
        "description": meta["description"],
        "keywords": meta["keywords"],
        "license": meta["license"],
        "itemType": "feature",
        "crs": list(crs_mod.ogc_crs_table()),
        "storageCrs": "http://www.opengis.net/def/crs/EPSG/0/4490",
        "links": [
            _link(b, "self", "application/json", title),
            _link(f"{b}?f=html", "alternate", "text/html", title),
            _link(f"{b}/items", "items", GEOJSON, f"{title} 要素"),
            _link(f"{b}/items?f=html", "items", "text/html", f"{title} 要素（网页）"),
            _link(f"{b}/queryables", "http://www.opengis.net/def/rel/ogc/1.0/queryables", "application/schema+json",
                  "可查询字段 Queryables"),
            _link(f"{b}/tiles", "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector", "application/json",
                  "矢量瓦片 Vector tilesets"),
            meta["license_link"],
        ],
        "title_en": layer.title_en,
        "access": layer.access,
        "demo": demo,
        "provenance": meta["provenance"],
    }
    extent = ctx.store.extent(layer) if ctx.store.exists(layer) else None
    if extent:
        doc["extent"] = {"spatial": {"bbox": [list(extent)], "crs": crs_mod.CRS84_URI}}
        times = ctx.store.time_extent(layer)
        if times:
            doc["extent"]["temporal"] = {"interval": [list(times)]}
    return doc


def collections(ctx: Context) -> dict:
    return {
        "links": [_link(f"{ctx.base_url}/collections", "self", "application/json", "要素集合")],
        "collections": [_collection_doc(ctx, layer) for layer in ctx.catalog.visible_to(ctx.role)
                        if not layer.is_raster],
    }


def collection(ctx: Context, collection_id: str) -> dict:
    return _collection_doc(ctx, ctx.layer(collection_id))


def queryables(ctx: Context, collection_id: str) -> dict:
    layer = ctx.layer(collection_id)
    props = {"geom": {"title": "几何", "format": "geometry-any", "x-ogc-role": "primary-geometry"}}
    visible = set(ctx.visible_fields(layer))
    for f in layer.fields:
        if f.name in visible:
            entry = {"title": f.label, "type": _JSON_TYPES[f.type]}
            if f.type in ("date", "datetime"):
                entry["format"] = "date" if f.type == "date" else "date-time"
            props[f.name] = entry
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{ctx.base_url}/collections/{layer.id}/queryables",
        "type": "object",
        "title": layer.title_zh,
        "properties": props,
        "additionalProperties": False,
    }


# --- items ----------------------------------------------------------------------------------------------
def _parse_int(name: str, value: str | None, default: int, minimum: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise bad_parameter(name, "须为整数", "must be an integer") from None
    if number < minimum:
        raise bad_parameter(name, f"不能小于 {minimum}", f"must be at least {minimum}")
    if number >= 2**63:  # SQLite integers are 64-bit
        raise bad_parameter(name, "数值过大", "is too large")
    return number


def parse_bbox(value: str, bbox_crs: str | None):
    """bbox in bbox-crs axis order → a lon/lat box (CRS84, EPSG:4490) or, for projected CRSs, the exact
    shape of the projected rectangle in storage lon/lat (a densified polygon, not its envelope)."""
    try:
        numbers = [float(v) for v in value.split(",")]
    except ValueError:
        raise bad_parameter("bbox", "须为逗号分隔的数字", "must be comma-separated numbers") from None
    if len(numbers) == 6:
        numbers = numbers[0:2] + numbers[3:5]
    if len(numbers) != 4 or not all(np.isfinite(numbers)):
        raise bad_parameter("bbox", "须为4个（或6个）数字", "must have 4 (or 6) numbers")
    target = crs_mod.parse_ogc_crs(bbox_crs, "bbox-crs")
    a0, b0, a1, b1 = numbers
    x0, y0, x1, y1 = (b0, a0, b1, a1) if target.swap_axes else (a0, b0, a1, b1)
    if x0 > x1 or y0 > y1:
        raise bad_parameter("bbox", "下限须不大于上限", "lower corner must not exceed the upper corner")
    if target.pyproj_id in ("OGC:CRS84", "EPSG:4490"):
        if not (-180 <= x0 <= 180 and -180 <= x1 <= 180 and -90 <= y0 <= 90 and -90 <= y1 <= 90):
            raise bad_parameter("bbox", "经纬度超出范围", "longitude/latitude out of range")
        return (x0, y0, x1, y1)
    with np.errstate(all="ignore"):
        if x0 == x1 or y0 == y1:  # a point or a line: its corners, transformed, bound it
            lon, lat = crs_mod.transform_xy([x0, x1], [y0, y1], target.pyproj_id, crs_mod.STORAGE_CRS)
            if not np.isfinite([*lon, *lat]).all():
                raise bad_parameter("bbox", "无法转换到 CGCS2000", "cannot be transformed to CGCS2000")
            return (float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max()))
        ring = shapely.segmentize(shapely.box(x0, y0, x1, y1), max((x1 - x0), (y1 - y0)) / 50)
        shape = crs_mod.transform_geometry(ring, target.pyproj_id, crs_mod.STORAGE_CRS)
    if not np.isfinite(shapely.get_coordinates(shape)).all() or not shape.is_valid:
        raise bad_parameter("bbox", "无法转换到 CGCS2000", "cannot be transformed to CGCS2000")
    return shape


def _coerce_value(layer: LayerDef, name: str, value: str):
    ftype = layer.field(name).type
    try:
        if ftype == "integer":
            return int(value)
        if ftype == "real":
            return float(value)
        if ftype == "boolean":
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return int(value.lower() in ("true", "1"))
    except ValueError:
        raise bad_parameter(name, f"须为 {ftype} 类型", f"must be of type {ftype}") from None
    return value


def _check_field(ctx: Context, layer: LayerDef, name: str, param: str, selecting: bool = False) -> None:
    """The field exists; to filter or sort on a personal field the role must be entitled (selecting one is
    allowed: its values come back masked)."""
    field = layer.field(name)
    if field is None:
        raise GisError("unknown_property", f"参数 {param}：集合 {layer.id} 没有字段 {name}",
                       f"{param}: collection '{layer.id}' has no property '{name}'", 400)
    if field.personal and not selecting and not layer.sees_personal(ctx.role):
        raise GisError("personal_field_forbidden", f"参数 {param}：无权按个人信息字段 {name} 查询或排序",
                       f"{param}: your role may not query or sort by the personal field '{name}'", 403)


def build_query(ctx: Context, layer: LayerDef, params: dict[str, str]) -> tuple[FeatureQuery, crs_mod.OgcCrs]:
    q = FeatureQuery()
    q.limit = min(_parse_int("limit", params.get("limit"), DEFAULT_LIMIT, 1), MAX_LIMIT)
    q.offset = _parse_int("offset", params.get("offset"), 0, 0)
    q.masked = layer.masked_fields(ctx.role)
    out_crs = crs_mod.parse_ogc_crs(params.get("crs"), "crs")
    if params.get("bbox"):
        box = parse_bbox(params["bbox"], params.get("bbox-crs"))
        if isinstance(box, tuple):
            q.bbox = box
        else:
            q.intersects = box
    elif params.get("bbox-crs"):
        crs_mod.parse_ogc_crs(params["bbox-crs"], "bbox-crs")
    if params.get("datetime"):
        if not layer.time_field:
            raise bad_parameter("datetime", f"集合 {layer.id} 没有时间字段", f"collection '{layer.id}' has no time property")
        q.datetime = parse_datetime_interval(params["datetime"], layer.field(layer.time_field).type)
    if params.get("properties") is not None:
        names = [n.strip() for n in params["properties"].split(",") if n.strip()]
        for name in names:
            _check_field(ctx, layer, name, "properties", selecting=True)
        q.columns = names
    if params.get("sortby"):
        for item in params["sortby"].split(","):
            item = item.strip()
            asc = not item.startswith("-")
            name = item.lstrip("+-").strip()
            _check_field(ctx, layer, name, "sortby")
            q.sortby.append((name, asc))
    for name, value in params.items():
        if name in RESERVED_PARAMS:
            continue
        _check_field(ctx, layer, name, name)
        q.equals[name] = _coerce_value(layer, name, value)
    if params.get("filter"):
        q.cql = cql2.parse(params["filter"], params.get("filter-lang", "cql2-text"))
        for name in sorted(cql2.properties(q.cql) - {"geom", "geometry"}):
            _check_field(ctx, layer, name, "filter")
        filter_crs = crs_mod.parse_ogc_crs(params.get("filter-crs"), "filter-crs")
        q.cql_to_storage = _geometry_to_storage(filter_crs)
    return q, out_crs


def _geometry_to_storage(source: crs_mod.OgcCrs):
    def convert(geom):
        if source.pyproj_id == "OGC:CRS84":
            return geom
        if source.swap_axes:
            geom = shapely.transform(geom, lambda c: c[:, ::-1])
        if source.pyproj_id == "EPSG:4490":
            return geom
        return crs_mod.transform_geometry(geom, source.pyproj_id, crs_mod.STORAGE_CRS)

    return convert


def _output_geometries(page, out_crs: crs_mod.OgcCrs) -> list[str]:
    """GeoJSON geometry texts: the stored lon/lat text for CRS84, else transformed (authority axis order)."""
    if out_crs.pyproj_id == "OGC:CRS84":
        return page.geometry_json
    if not page.fids:
        return []
    geoms = page.geometries
    if out_crs.pyproj_id == "EPSG:4490":
        result = shapely.transform(geoms, lambda c: c[:, ::-1])
    else:
        result = crs_mod.transform_geometry(geoms, crs_mod.STORAGE_CRS, out_crs.pyproj_id, swap_output=out_crs.swap_axes)
    return list(shapely.to_geojson(result))


def items(ctx: Context, collection_id: str, params: dict[str, str], request: str) -> tuple[bytes, dict, dict]:
    """GeoJSON FeatureCollection bytes, headers, and a summary (for the HTML page)."""
    layer = ctx.layer(collection_id)
    q, out_crs = build_query(ctx, layer, params)
    page = ctx.store.query(layer, q)
    columns = q.columns if q.columns is not None else [f.name for f in layer.fields]
    ctx.access_log.disclose(ctx.principal, layer, columns, len(page.fids), request)
    features = [
        '{"type":"Feature","id":%d,"geometry":%s,"properties":%s}' % (fid, g, p)
        for fid, g, p in zip(page.fids, _output_geometries(page, out_crs), page.properties_json)
    ]
    base = f"{ctx.base_url}/collections/{layer.id}/items"
    kept = urlencode({k: v for k, v in params.items() if k not in ("offset", "f")})
    page_url = f"{base}?{kept}&offset=" if kept else f"{base}?offset="
    links = [_link(f"{page_url}{q.offset}", "self", GEOJSON, "本页"),
             _link(f"{page_url}{q.offset}&f=html", "alternate", "text/html", "网页版"),
             _link(f"{ctx.base_url}/collections/{layer.id}", "collection", "application/json", layer.title_zh)]
    if q.offset + len(features) < page.number_matched:
        links.append(_link(f"{page_url}{q.offset + q.limit}", "next", GEOJSON, "下一页"))
    if q.offset > 0:
        links.append(_link(f"{page_url}{max(q.offset - q.limit, 0)}", "prev", GEOJSON, "上一页"))
    head = orjson.dumps({
        "numberMatched": page.number_matched,
        "numberReturned": len(features),
        "timeStamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "links": links,
    })
    body = b'{"type":"FeatureCollection","features":[' + ",".join(features).encode() + b"]," + head[1:]
    headers = {"Content-Crs": f"<{out_crs.uri}>"}
    summary = {"layer": layer, "page": page, "matched": page.number_matched, "offset": q.offset, "limit": q.limit,
               "links": links}
    return body, headers, summary


# Bytes of Link header beyond `next`: each link repeats the whole query, and a long filter (a CQL2 IN list, a
# drawn polygon) would make a header that proxies refuse (nginx's proxy_buffer_size, one 4 KiB page by default,
# holds all response headers: a 502) and clients too (curl: 100 KiB). The body always carries every link.
LINK_HEADER_BUDGET = 4_000


def link_header(links: list[dict], html: bool) -> str:
    """A page's or a feature's links as an HTTP Link header (RFC 8288; OGC API – Features /rec/core/link-header),
    for the format actually served: for an HTML page `self` is the HTML page, `alternate` the GeoJSON one and
    `next`/`prev` stay HTML. Titles are left out (a header is Latin-1; the body carries them).

    `next` is always there (a client paging by the header must not stop early); the other links only while the
    header stays within LINK_HEADER_BUDGET bytes besides `next`."""
    by_rel = {link["rel"]: link for link in links}
    values = {}
    for link in links:
        rel, href, type_ = link["rel"], link["href"], link["type"]
        if html and rel == "self":
            href, type_ = by_rel["alternate"]["href"], "text/html"
        elif html and rel == "alternate":
            href, type_ = by_rel["self"]["href"], GEOJSON
        elif html and rel in ("next", "prev"):
            href, type_ = f"{href}&f=html", "text/html"
        values[rel] = f'<{href}>; rel="{rel}"; type="{type_}"'
    header, used = ([values.pop("next")] if "next" in values else []), 0
    for value in values.values():
        if used + len(value) + 2 <= LINK_HEADER_BUDGET:
            header.append(value)
            used += len(value) + 2
    return ", ".join(header)


def item(ctx: Context, collection_id: str, feature_id: str, params: dict[str, str], request: str
         ) -> tuple[bytes, dict, list[dict]]:
    """GeoJSON Feature bytes, headers and its links (self and alternate keep the crs asked for)."""
    layer = ctx.layer(collection_id)
    unknown = set(params) - {"f", "crs"}
    if unknown:
        raise bad_parameter(sorted(unknown)[0], "单个要素不支持此参数", "not supported for a single feature")
    out_crs = crs_mod.parse_ogc_crs(params.get("crs"), "crs")
    try:
        fid = int(feature_id)
    except ValueError:
        raise not_found(f"要素 {feature_id}", f"feature '{feature_id}'") from None
    page = ctx.store.get(layer, fid, layer.masked_fields(ctx.role)) if -2**63 <= fid < 2**63 else None
    if page is None or not page.fids:
        raise not_found(f"要素 {feature_id}", f"feature '{feature_id}'")
    ctx.access_log.disclose(ctx.principal, layer, [f.name for f in layer.fields], 1, request)
    geometry = _output_geometries(page, out_crs)[0]
    base = f"{ctx.base_url}/collections/{layer.id}"
    kept = urlencode({"crs": params["crs"]}) if params.get("crs") else ""
    links = [_link(f"{base}/items/{fid}" + (f"?{kept}" if kept else ""), "self", GEOJSON, "本要素"),
             _link(f"{base}/items/{fid}?" + (f"{kept}&" if kept else "") + "f=html", "alternate", "text/html",
                   "网页版"),
             _link(base, "collection", "application/json", layer.title_zh)]
    body = ('{"type":"Feature","id":%d,"geometry":%s,"properties":%s,"links":%s}' % (
        fid, geometry, page.properties_json[0], orjson.dumps(links).decode())).encode()
    return body, {"Content-Crs": f"<{out_crs.uri}>"}, links
