"""OGC API – Tiles (Part 1: core, tileset, tilesets-list, geodata-tilesets) for every vector collection, in
the WebMercatorQuad tile matrix set of the OGC 2D Tile Matrix Set standard, as Mapbox vector tiles (MVT 2.1).

Framework-neutral like ogc.py: the web layer only adapts. Generic for every collection, driven by the
layer's definition (catalog.TileDef, the optional ``[tiles]`` table of its TOML):

- from ``detail_zoom`` on, a tile holds the features meeting it (buffer of BUFFER units around the 4096-unit
  extent), clipped, simplified to the tile's resolution, with integer tile coordinates; features whose
  envelope is narrower and lower than a pixel are dropped (the R-tree does that, before anything is read);
- below ``detail_zoom``, a tile holds square cells of ``cell_pixels`` (layer ``<id>_cells``): the number of
  features whose envelope centre lies in the cell and, per aggregate field, the most frequent value and its
  share — the same category styling works zoomed out, for two million plots as for ten;
- properties: ``fields`` of the table (default: label, style category and popup fields), personal ones
  masked in the store for roles not entitled; clear values served are logged in the access log;
- an empty tile is answered 204 No Content (OGC API – Tiles allows it; an empty MVT would be zero bytes too);
- tile coordinates that are not integers are a 400, a tile matrix outside the tileset's zooms or a row or
  column outside the matrix a 404, each with {code, message}.

Geometry: EPSG:4490 lon/lat → spherical Web Mercator (EPSG:3857) by formula, vectorised over all vertices
(CGCS2000 and WGS 84 agree to centimetres, far below a tile unit at any zoom served). The encoder is numpy:
geometries become ragged coordinate arrays (shapely.to_ragged_array), rings are deduplicated and oriented
(exterior clockwise in tile coordinates, i.e. positive surveyor's area with y down), commands and zigzag
deltas are built for all features at once and written as varints in one pass.

A store that encodes tiles itself (a ``mvt`` method: store.postgis, with ST_AsMVTGeom / ST_AsMVT in one
statement) makes the feature tiles instead, from the same selection (``_selection``: buffered box, pixel
filter, max_features) with the same extent, buffer, clipping, simplification, feature ids, properties and
value types; the Python path stays for the other stores, for GCJ-02 tiles and for the cells.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely

from . import crs as crs_mod
from .catalog import MAX_TILE_ZOOM, LayerDef, TileDef
from .errors import GisError, bad_parameter, not_found
from .ogc import Context
from .store import display_title
from .store.scan import scan, scan_chunks

log = logging.getLogger("gis_service")
TMS_ID = "WebMercatorQuad"
TMS_URI = "http://www.opengis.net/def/tilematrixset/OGC/1.0/WebMercatorQuad"
TMS_CRS = "http://www.opengis.net/def/crs/EPSG/0/3857"
MVT = "application/vnd.mapbox-vector-tile"
REL_TILING_SCHEME = "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme"

# WebMercatorQuad (2D TMS annex D.1): spherical Mercator on the WGS 84 semi-major axis, 256-pixel tiles.
EARTH_RADIUS = 6378137.0
ORIGIN = math.pi * EARTH_RADIUS  # 20037508.3427892 m: the grid's top-left corner is (-ORIGIN, ORIGIN)
TILE_PIXELS = 256
PIXEL_SIZE_M = 0.28e-3  # the standardised rendering pixel of OGC scale denominators
MAX_LATITUDE = 85.0511287798066  # where Web Mercator's square world ends
EXTENT = 4096  # MVT units per tile side (the Mapbox default: 1/16 pixel)
BUFFER = 64  # MVT units drawn beyond each tile edge, so strokes do not break at tile seams (4 pixels)
SIMPLIFY_UNITS = 8  # Douglas–Peucker tolerance: half a pixel, invisible at the tile's own zoom
SIMPLIFY_ABOVE = 8  # only geometries with more vertices than this are simplified (strip plots have five)
# coord_sys of a tile's geometry: CGCS2000/WGS 84 (they agree to centimetres), or GCJ-02 — shifted like every
# other layer of a page drawn over the Gaode base map (tiles still addressed in WebMercatorQuad, in that frame)
TILE_COORD_SYSTEMS = ("cgcs2000", "wgs84", "gcj02")
GCJ02_MAX_SHIFT_M = 2000  # GCJ-02 moves points by at most ~700 m; cell centres are looked up this far around a tile
CACHE_BYTES = 64 * 2**20  # encoded tiles kept per process (keyed by data version, so edits are never stale)

_GEOMETRY_DIMENSION = {"Point": 0, "MultiPoint": 0, "LineString": 1, "MultiLineString": 1, "Polygon": 2,
                       "MultiPolygon": 2}
_JSON_TYPES = {"string": "string", "integer": "integer", "real": "number", "boolean": "boolean", "date": "string",
               "datetime": "string"}


def _link(href, rel, type_, title, **extra) -> dict:
    return {"href": href, "rel": rel, "type": type_, "title": title, **extra}


# --- tile matrix set -------------------------------------------------------------------------------------
def tile_matrix_set() -> dict:
    """WebMercatorQuad as the OGC 2D Tile Matrix Set 2.0 JSON encoding describes it."""
    matrices = []
    for z in range(MAX_TILE_ZOOM + 1):
        cell = 2 * ORIGIN / TILE_PIXELS / 2**z
        matrices.append({"id": str(z), "scaleDenominator": cell / PIXEL_SIZE_M, "cellSize": cell,
                         "cornerOfOrigin": "topLeft", "pointOfOrigin": [-ORIGIN, ORIGIN],
                         "tileWidth": TILE_PIXELS, "tileHeight": TILE_PIXELS, "matrixWidth": 2**z, "matrixHeight": 2**z,
                         **_tms1(z=z)})
    return {"id": TMS_ID, "title": "Google Maps Compatible for the World 网络墨卡托四叉树", "uri": TMS_URI,
            "crs": TMS_CRS, "orderedAxes": ["X", "Y"],
            "wellKnownScaleSet": "http://www.opengis.net/def/wkss/OGC/1.0/GoogleMapsCompatible",
            "boundingBox": {"lowerLeft": [-ORIGIN, -ORIGIN], "upperRight": [ORIGIN, ORIGIN], "crs": TMS_CRS,
                            **_tms1(box=True)},
            "tileMatrices": matrices, **_tms1()}


def _tms1(z: int | None = None, box: bool = False) -> dict:
    """The same members in the TMS 1.0 JSON encoding (OGC 17-083r2), besides the 2.0 ones: GDAL before 3.7
    (Debian 12's 3.6, and the QGIS built on it) reads only those — without them its OGC API driver takes the
    whole document for a tile matrix set *name* ("Invalid tiling matrix set name"). 2.0 readers ignore them."""
    if box:
        return {"type": "BoundingBoxType", "lowerCorner": [-ORIGIN, -ORIGIN], "upperCorner": [ORIGIN, ORIGIN]}
    if z is not None:
        return {"type": "TileMatrixType", "identifier": str(z), "topLeftCorner": [-ORIGIN, ORIGIN]}
    return {"type": "TileMatrixSetType", "identifier": TMS_ID, "supportedCRS": TMS_CRS}


def tile_matrix_sets(ctx: Context) -> dict:
    href = f"{ctx.base_url}/tileMatrixSets/{TMS_ID}"
    return {"links": [_link(f"{ctx.base_url}/tileMatrixSets", "self", "application/json", "瓦片矩阵集 Tile matrix sets")],
            "tileMatrixSets": [{"id": TMS_ID, "title": tile_matrix_set()["title"], "uri": TMS_URI, "crs": TMS_CRS,
                                "links": [_link(href, "self", "application/json", TMS_ID)]}]}


def tile_matrix_set_doc(ctx: Context, tms_id: str) -> dict:
    _check_tms(tms_id)
    return tile_matrix_set()


def _check_tms(tms_id: str) -> None:
    if tms_id != TMS_ID:
        raise not_found(f"瓦片矩阵集 {tms_id}（仅支持 {TMS_ID}）", f"tile matrix set '{tms_id}' (only {TMS_ID})")


# --- tileset metadata -------------------------------------------------------------------------------------
def tile_def(layer: LayerDef) -> TileDef:
    return layer.tiles or TileDef()


def carried_fields(layer: LayerDef) -> list[str]:
    """Properties in the feature tiles: the [tiles] fields, else label, style category and popup fields."""
    spec = tile_def(layer)
    if spec.fields is not None:
        return list(spec.fields)
    names = [layer.label_field, layer.style.get("category_field"), *layer.popup]
    return [n for n in dict.fromkeys(names) if n]


def cells_layer(layer: LayerDef) -> str:
    return f"{layer.id}_cells"


def _lonlat_to_tile(lon, lat, z: int) -> tuple[float, float]:
    """Fractional tile column and row of a lon/lat point at zoom z."""
    lat = np.clip(lat, -MAX_LATITUDE, MAX_LATITUDE)
    n = 2**z
    col = (np.asarray(lon) + 180.0) / 360.0 * n
    row = (1 - np.log(np.tan(np.radians(lat)) + 1 / np.cos(np.radians(lat))) / math.pi) / 2 * n
    return col, row


def _limits(extent, z: int) -> dict:
    c0, r0 = _lonlat_to_tile(extent[0], extent[3], z)
    c1, r1 = _lonlat_to_tile(extent[2], extent[1], z)
    top = 2**z - 1
    return {"tileMatrix": str(z), "minTileRow": int(min(max(r0, 0), top)), "maxTileRow": int(min(max(r1, 0), top)),
            "minTileCol": int(min(max(c0, 0), top)), "maxTileCol": int(min(max(c1, 0), top))}


def _schema(layer: LayerDef, names) -> dict:
    return {"type": "object", "properties": {
        n: {"type": _JSON_TYPES[layer.field(n).type], "title": layer.field(n).label} for n in names}}


def tilesets(ctx: Context, collection_id: str) -> dict:
    layer = ctx.layer(collection_id)
    b = f"{ctx.base_url}/collections/{layer.id}/tiles"
    return {"links": [_link(b, "self", "application/json", "矢量瓦片集 Tilesets"),
                      _link(f"{ctx.base_url}/collections/{layer.id}", "collection", "application/json", layer.title_zh)],
            "tilesets": [_tileset_summary(ctx, layer)]}


def _tileset_summary(ctx: Context, layer: LayerDef) -> dict:
    b = f"{ctx.base_url}/collections/{layer.id}/tiles/{TMS_ID}"
    return {"title": display_title(ctx.store, layer), "dataType": "vector", "crs": TMS_CRS, "tileMatrixSetURI": TMS_URI,
            "links": [_link(b, "self", "application/json", f"{layer.title_zh} 矢量瓦片集 tileset"),
                      _link(f"{ctx.base_url}/tileMatrixSets/{TMS_ID}", REL_TILING_SCHEME, "application/json", TMS_ID),
                      _link(b + "/{tileMatrix}/{tileRow}/{tileCol}", "item", MVT, "Mapbox 矢量瓦片 tiles",
                            templated=True)]}


def tileset(ctx: Context, collection_id: str, tms_id: str) -> dict:
    """Tileset metadata (2D TMS 2.0 JSON tileset metadata): layers with their fields, zooms, limits, links."""
    layer = ctx.layer(collection_id)
    _check_tms(tms_id)
    spec = tile_def(layer)
    doc = _tileset_summary(ctx, layer)
    doc["links"].insert(2, _link(f"{ctx.base_url}/collections/{layer.id}", "collection", "application/json",
                                 layer.title_zh))
    detail = spec.detail_zoom if spec.detail_zoom is not None else spec.min_zoom
    layers = [{"id": layer.id, "title": layer.title_zh, "dataType": "vector",
               "geometryDimension": _GEOMETRY_DIMENSION[layer.geometry], "featureType": layer.id,
               "minTileMatrix": str(detail), "maxTileMatrix": str(spec.max_zoom),
               "propertiesSchema": _schema(layer, carried_fields(layer))}]
    if spec.detail_zoom is not None:
        schema = {"type": "object", "properties": {"count": {"type": "integer", "title": "要素数 features in the cell"}}}
        for name in spec.aggregate_fields:
            schema["properties"][name] = {"type": _JSON_TYPES[layer.field(name).type],
                                          "title": f"{layer.field(name).label}（最多的值 most frequent）"}
            schema["properties"][f"{name}_share"] = {"type": "number", "title": f"{layer.field(name).label} 占比 share"}
        layers.append({"id": cells_layer(layer), "title": f"{layer.title_zh}（汇总格网 aggregated cells）",
                       "dataType": "vector", "geometryDimension": 2, "minTileMatrix": str(spec.min_zoom),
                       "maxTileMatrix": str(spec.detail_zoom - 1), "propertiesSchema": schema})
    doc.update({"description": _description(spec), "minTileMatrix": str(spec.min_zoom),
                "maxTileMatrix": str(spec.max_zoom), "layers": layers})
    extent = ctx.store.extent(layer) if ctx.store.exists(layer) else None
    if extent:
        doc["boundingBox"] = {"lowerLeft": list(extent[:2]), "upperRight": list(extent[2:]),
                              "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}
        doc["tileMatrixSetLimits"] = [_limits(extent, z) for z in range(spec.min_zoom, spec.max_zoom + 1)]
    return doc


def _description(spec: TileDef) -> str:
    if spec.detail_zoom is None:
        return "各级均为要素（小于一个像素的要素不显示） features at every zoom (those under a pixel dropped)"
    return (f"{spec.detail_zoom} 级起为要素，以下为 {spec.cell_pixels} 像素汇总格网 features from zoom "
            f"{spec.detail_zoom}, below it {spec.cell_pixels}-pixel aggregated cells")


# --- tiles -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TileBox:
    z: int
    x: int
    y: int
    gcj02: bool = False  # geometry shifted to GCJ-02 (for the Gaode base map)

    @property
    def size(self) -> float:
        return 2 * ORIGIN / 2**self.z

    @property
    def left(self) -> float:
        return -ORIGIN + self.x * self.size

    @property
    def top(self) -> float:
        return ORIGIN - self.y * self.size

    def lonlat_bounds(self, margin_units: float = 0) -> tuple[float, float, float, float]:
        """The (buffered) tile as a CGCS2000 lon/lat box; for a GCJ-02 tile, the box of its corners unshifted."""
        m = self.size * margin_units / EXTENT
        lon, lat = _merc_to_lonlat(np.array([self.left - m, self.left + self.size + m] * 2),
                                   np.array([self.top - self.size - m] * 2 + [self.top + m] * 2))
        if self.gcj02:
            lon, lat = crs_mod.gcj02_to_wgs84(lon, lat)
        return float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())

    def to_units(self, coords: np.ndarray) -> np.ndarray:
        """lon/lat (n, 2) → tile units (float, y down)."""
        lon, lat = coords[:, 0], coords[:, 1]
        if self.gcj02:
            lon, lat = crs_mod.wgs84_to_gcj02(lon, lat)
        x = np.radians(lon) * EARTH_RADIUS
        lat = np.radians(np.clip(lat, -MAX_LATITUDE, MAX_LATITUDE))
        y = EARTH_RADIUS * np.log(np.tan(math.pi / 4 + lat / 2))
        scale = EXTENT / self.size
        return np.column_stack([(x - self.left) * scale, (self.top - y) * scale])


def _merc_to_lonlat(x, y):
    return np.degrees(x / EARTH_RADIUS), np.degrees(2 * np.arctan(np.exp(y / EARTH_RADIUS)) - math.pi / 2)


def parse_tile(layer: LayerDef, tms_id: str, z: str, y: str, x: str, coord_sys: str | None = None) -> TileBox:
    _check_tms(tms_id)
    if coord_sys is not None and coord_sys not in TILE_COORD_SYSTEMS:
        raise bad_parameter("coord_sys", f"须为 {'、'.join(TILE_COORD_SYSTEMS)} 之一",
                            f"must be one of {', '.join(TILE_COORD_SYSTEMS)}")
    values = {}
    for name, text in (("tileMatrix", z), ("tileRow", y), ("tileCol", x)):
        if not text.isascii() or not text.isdigit() or len(text) > 9:
            raise bad_parameter(name, "须为非负整数", "must be a non-negative integer")
        values[name] = int(text)
    z_, y_, x_ = values["tileMatrix"], values["tileRow"], values["tileCol"]
    spec = tile_def(layer)
    if not spec.min_zoom <= z_ <= spec.max_zoom:
        raise GisError("tile_out_of_range", f"瓦片层级 {z_} 不在本瓦片集的 {spec.min_zoom}–{spec.max_zoom} 级内",
                       f"tile matrix {z_} is outside this tileset's {spec.min_zoom}–{spec.max_zoom}", 404)
    if y_ >= 2**z_ or x_ >= 2**z_:
        raise GisError("tile_out_of_range", f"瓦片行列号须小于 {2**z_}（第 {z_} 级）",
                       f"tile row and column must be below {2**z_} at tile matrix {z_}", 404)
    return TileBox(z_, x_, y_, coord_sys == "gcj02")


class _Cache:
    """Encoded tiles, least recently used first out, bounded in bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = max_bytes, 0
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self.bytes += len(value[0]) + 64
            while self.bytes > self.max_bytes and self._items:
                _, old = self._items.popitem(last=False)
                self.bytes -= len(old[0]) + 64


_tiles = _Cache(CACHE_BYTES)


def tile(ctx: Context, collection_id: str, tms_id: str, z: str, y: str, x: str, request: str,
         coord_sys: str | None = None) -> bytes:
    """The MVT bytes of one tile (b"" when the tile is empty), masked for the caller's role; coord_sys=gcj02
    shifts the geometry to GCJ-02 (a page over the Gaode base map)."""
    layer = ctx.layer(collection_id)
    box = parse_tile(layer, tms_id, z, y, x, coord_sys)
    if not ctx.store.exists(layer):
        return b""
    spec = tile_def(layer)
    masked = layer.masked_fields(ctx.role)
    aggregate = spec.detail_zoom is not None and box.z < spec.detail_zoom
    columns = carried_fields(layer)
    key = (layer.id, ctx.store.version(layer), aggregate or tuple(sorted(masked.items())), box)
    hit = _tiles.get(key)
    if hit is None:
        hit = _cells_tile(ctx, layer, spec, box, key[1]) if aggregate else _feature_tile(ctx, layer, box, columns,
                                                                                         masked)
        _tiles.put(key, hit)
    data, count = hit
    if not aggregate:
        ctx.access_log.disclose(ctx.principal, layer, columns, count, request)
    return data


def _feature_tile(ctx: Context, layer: LayerDef, box: TileBox, columns: list[str], masked) -> tuple[bytes, int]:
    """A tile of features: encoded by the store when it can (store.postgis: ST_AsMVT, in one statement), else
    in Python from a scan. GCJ-02 tiles are encoded in Python on every store: the shift (crs.wgs84_to_gcj02,
    a trigonometric series per vertex) has no PostGIS function.

    ST_AsMVT is the faster path at every zoom measured (scripts/bench_tiles.py, 2 000 000 plots, 2 shared
    cores, 2026-12-05, p50 of 190 tiles in-process, PostGIS encoding vs Python over the same PostGIS store):
    z13 (5 700 plots) 38–39 vs 69–77 ms, z14 (1 700) 11.3 vs 21–22 ms, z15 3.6–3.7 vs 8.0–8.2 ms, z16 1.4–1.7
    vs 4.7–6.3 ms, z17 0.7 vs 3.5–4.1 ms — and than the embedded store's Python tiles (z14 14.5 ms)."""
    encode = None if box.gcj02 else getattr(ctx.store, "mvt", None)
    if encode is None:
        return _python_tile(ctx, layer, box, columns, masked)
    query, min_size, most = _selection(layer, box)
    got = encode(layer, (box.z, box.x, box.y), query, columns, masked, min_size, most, extent=EXTENT, buffer=BUFFER,
                 simplify=(SIMPLIFY_ABOVE, SIMPLIFY_UNITS))
    if got is None:
        raise _too_dense(most)
    return got


def _selection(layer: LayerDef, box: TileBox) -> tuple[tuple, tuple[float, float] | None, int]:
    """What a feature tile holds, on every path: the features whose envelope meets the buffered tile (lon/lat)
    and, for lines and polygons, is at least a pixel wide or high; at most max_features of them."""
    query = box.lonlat_bounds(BUFFER)
    min_size = None
    if _GEOMETRY_DIMENSION[layer.geometry] > 0:  # a pixel, in degrees, at the tile's latitude
        pixel = 360.0 / 2**box.z / TILE_PIXELS
        min_size = (pixel, pixel * math.cos(math.radians((query[1] + query[3]) / 2)))
    return query, min_size, tile_def(layer).max_features


def _too_dense(most: int) -> GisError:
    return GisError("tile_too_dense", f"该瓦片超过 {most} 个要素，请放大地图（或在图层的 [tiles] 表设置 detail_zoom 汇总显示）",
                    f"this tile holds more than {most} features: zoom in (or give the layer's [tiles] table a "
                    f"detail_zoom, for aggregated cells)", 422)


def _python_tile(ctx: Context, layer: LayerDef, box: TileBox, columns: list[str], masked) -> tuple[bytes, int]:
    """A tile of features encoded here (numpy) from the store's scan."""
    query, min_size, most = _selection(layer, box)
    found = scan(ctx.store, layer, query, columns, masked, geometry=True, min_size=min_size, limit=most)
    if len(found) > most:
        raise _too_dense(most)
    if not len(found):
        return b"", 0
    geoms = shapely.from_wkb(found.wkb)
    values = {c: _typed(layer, c, found.values[c]) for c in columns}
    # Most features need neither clipping nor simplifying: their coordinates go to tile units as one array,
    # without building new geometries. The rest (on the buffered edge, many vertices, parts, holes) are
    # transformed, clipped and simplified as geometries.
    lo, hi = -BUFFER, EXTENT + BUFFER
    env = found.envelopes
    corner0, corner1 = box.to_units(env[:, [0, 3]]), box.to_units(env[:, [2, 1]])  # (minx, maxy), (maxx, miny)
    edge = (corner0[:, 0] < lo) | (corner0[:, 1] < lo) | (corner1[:, 0] > hi) | (corner1[:, 1] > hi)
    types = shapely.get_type_id(geoms)
    single = (types == 0) | (types == 1) | ((types == 3) & (shapely.get_num_interior_rings(geoms) == 0))
    simple = ~edge & single & (shapely.get_num_coordinates(geoms) <= SIMPLIFY_ABOVE) & (types == types.max(initial=0))
    parts, order = [], []
    if simple.any():
        coords, index = shapely.get_coordinates(geoms[simple], return_index=True)
        lines = np.concatenate([[0], np.cumsum(np.bincount(index, minlength=int(simple.sum())))])
        kind = shapely.GeometryType(int(types[simple][0]))
        offsets = () if kind == shapely.GeometryType.POINT else (lines,) if kind == shapely.GeometryType.LINESTRING \
            else (lines, np.arange(len(lines)))
        parts.append((kind, box.to_units(coords), offsets))
        order.append(np.flatnonzero(simple))
    rest = np.flatnonzero(~simple)
    if len(rest):
        other = shapely.transform(geoms[rest], box.to_units)
        cut = edge[rest]
        if cut.any():
            other[cut] = shapely.clip_by_rect(other[cut], lo, lo, hi, hi)
        many = shapely.get_num_coordinates(other) > SIMPLIFY_ABOVE
        if many.any():
            other[many] = shapely.simplify(other[many], SIMPLIFY_UNITS)
        good = _drawable(other)
        if good.any():
            parts.append(_ragged(other[good]))
            order.append(rest[good])
    if not parts:
        return b"", 0
    order = np.concatenate(order)
    ordered = {c: np.asarray(v, dtype=object)[order] for c, v in values.items()}
    data, count = encode_layer(layer.id, None, found.fids[order], ordered, ragged=parts)
    return (_tile_message([data]) if count else b""), count


def _drawable(geoms) -> np.ndarray:
    """Not empty and of the family the layer's geometry type has (clipping may leave collections or less)."""
    types = shapely.get_type_id(geoms)
    kind = max(set(types.tolist()) - {-1, 7}, default=None)
    family = {0: (0, 4), 4: (0, 4), 1: (1, 5), 5: (1, 5), 3: (3, 6), 6: (3, 6)}.get(kind)
    return np.isin(types, family) & ~shapely.is_empty(geoms) if family else np.zeros(len(geoms), bool)


def _typed(layer: LayerDef, name: str, values: list) -> list:
    if layer.field(name).type == "boolean":
        return [None if v is None else bool(v) for v in values]
    return values


# --- aggregate cells ---------------------------------------------------------------------------------------
@dataclass
class _Centres:
    """Per data version: every feature's envelope centre (Web Mercator, sorted by x) and aggregate codes."""

    x: np.ndarray
    y: np.ndarray
    codes: dict[str, np.ndarray]  # field -> index into labels[field] (-1: no value)
    labels: dict[str, list]


_centres: dict[str, tuple[str, _Centres]] = {}
_centres_locks: dict[str, threading.Lock] = {}
_locks_lock = threading.Lock()


def warm_up(catalog, store) -> threading.Thread:
    """Build the cell data of every layer with aggregate tiles in the background (two million plots take a few
    seconds), so the first zoomed-out map does not wait; returns the (daemon) thread."""
    def run():
        for layer in catalog:
            spec = layer.tiles
            if spec is not None and spec.detail_zoom is not None and not layer.is_raster and store.exists(layer):
                try:
                    _load_centres(store, layer, spec, store.version(layer))
                except Exception:  # a request builds it again and reports the error
                    log.exception("vector tiles: warming up %s failed", layer.id)

    thread = threading.Thread(target=run, name="tiles-warm-up", daemon=True)
    thread.start()
    return thread


def _load_centres(store, layer: LayerDef, spec: TileDef, version: str) -> _Centres:
    with _locks_lock:
        lock = _centres_locks.setdefault(layer.id, threading.Lock())
    with lock:  # one build per layer and version; other requests for the layer wait for it
        cached = _centres.get(layer.id)
        if cached and cached[0] == version:
            return cached[1]
        xs, ys = [], []
        codes: dict[str, list] = {f: [] for f in spec.aggregate_fields}
        index: dict[str, dict] = {f: {} for f in spec.aggregate_fields}
        for part in scan_chunks(store, layer, None, spec.aggregate_fields, None, geometry=False, exact=True):
            env = part.envelopes  # exact: the R-tree's are rounded to 32-bit floats
            lon = (env[:, 0] + env[:, 2]) / 2
            lat = np.clip((env[:, 1] + env[:, 3]) / 2, -MAX_LATITUDE, MAX_LATITUDE)
            xs.append(np.radians(lon) * EARTH_RADIUS)
            ys.append(EARTH_RADIUS * np.log(np.tan(math.pi / 4 + np.radians(lat) / 2)))
            for f in spec.aggregate_fields:
                seen = index[f]
                codes[f].append(np.array([-1 if v is None else seen.setdefault(v, len(seen)) for v in part.values[f]],
                                         dtype=np.int32))
        x = np.concatenate(xs) if xs else np.empty(0)
        order = np.argsort(x, kind="stable")
        labels, sorted_codes = {}, {}
        for f in spec.aggregate_fields:  # codes in value order, so that a tie goes to the lowest value
            values = sorted(index[f], key=lambda v: (str(type(v)), v))
            rank = np.array([values.index(v) for v in index[f]] + [-1], dtype=np.int32)  # [-1]: code -1 stays
            raw = np.concatenate(codes[f]) if codes[f] else np.empty(0, np.int32)
            labels[f], sorted_codes[f] = values, rank[raw][order]
        result = _Centres(x[order], (np.concatenate(ys) if ys else np.empty(0))[order], sorted_codes, labels)
        _centres[layer.id] = (version, result)
        return result


def _cells_tile(ctx: Context, layer: LayerDef, spec: TileDef, box: TileBox, version: str) -> tuple[bytes, int]:
    centres = _load_centres(ctx.store, layer, spec, version)
    pad = GCJ02_MAX_SHIFT_M if box.gcj02 else 0
    lo, hi = np.searchsorted(centres.x, [box.left - pad, box.left + box.size + pad])
    x, y = centres.x[lo:hi], centres.y[lo:hi]
    if box.gcj02:  # the centres where the GCJ-02 frame puts them
        lon, lat = crs_mod.wgs84_to_gcj02(*_merc_to_lonlat(x, y))
        x = np.radians(lon) * EARTH_RADIUS
        y = EARTH_RADIUS * np.log(np.tan(math.pi / 4 + np.radians(np.clip(lat, -MAX_LATITUDE, MAX_LATITUDE)) / 2))
    inside = (x >= box.left) & (x < box.left + box.size) & (y <= box.top) & (y > box.top - box.size)
    if not inside.any():
        return b"", 0
    per_side = TILE_PIXELS // spec.cell_pixels
    cell_m = box.size / per_side
    col = np.minimum(((x[inside] - box.left) / cell_m).astype(np.int64), per_side - 1)
    row = np.minimum(((box.top - y[inside]) / cell_m).astype(np.int64), per_side - 1)
    cell = row * per_side + col
    occupied, counts = np.unique(cell, return_counts=True)
    values: dict[str, list] = {"count": counts.tolist()}
    for f in spec.aggregate_fields:
        code = centres.codes[f][lo:hi][inside]
        dominant, share = _dominant(cell, code, occupied, counts, len(centres.labels[f]))
        labels = centres.labels[f]
        values[f] = [labels[c] if c >= 0 else None for c in dominant]
        values[f"{f}_share"] = [round(float(s), 3) for s in share]
    unit = EXTENT // per_side
    r, c = occupied // per_side, occupied % per_side
    x0, y0 = c * unit, r * unit
    ring = np.stack([np.column_stack([x0, y0]), np.column_stack([x0 + unit, y0]),
                     np.column_stack([x0 + unit, y0 + unit]), np.column_stack([x0, y0 + unit]),
                     np.column_stack([x0, y0])], axis=1).reshape(-1, 2)
    n = len(occupied)
    offsets = (np.arange(n + 1) * 5, np.arange(n + 1), np.arange(n + 1))
    data, count = encode_layer(cells_layer(layer), None, occupied, values,
                               ragged=(shapely.GeometryType.MULTIPOLYGON, ring.astype(np.float64), offsets))
    return _tile_message([data]), count


def _dominant(cell: np.ndarray, code: np.ndarray, occupied: np.ndarray, counts: np.ndarray, n_labels: int):
    """Per occupied cell (sorted), the most frequent code (ties: the lower code) and its share of the cell."""
    width = n_labels + 1  # code -1 (no value) becomes 0
    combined = np.searchsorted(occupied, cell) * width + (code + 1)
    keys, freq = np.unique(combined, return_counts=True)
    cell_of = keys // width
    order = np.lexsort((keys % width, -freq, cell_of))  # per cell: most frequent first, then lowest code
    first = np.ones(len(order), bool)
    first[1:] = cell_of[order][1:] != cell_of[order][:-1]
    best = order[first]
    return (keys[best] % width) - 1, freq[best] / counts


# --- MVT encoding --------------------------------------------------------------------------------------------
_SHIFTS = np.arange(5, dtype=np.uint64) * np.uint64(7)


def _varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Protocol-buffer varints of non-negative integers (< 2**35): the bytes and each value's byte count."""
    v = np.asarray(values).astype(np.uint64)
    n = np.ones(len(v), np.int64)
    for bits in (7, 14, 21, 28):
        n += v >= (1 << bits)
    groups = (v[:, None] >> _SHIFTS) & np.uint64(0x7F)  # (n, 5): 7-bit groups, least significant first
    more = np.arange(5) < (n - 1)[:, None]
    groups |= np.where(more, np.uint64(0x80), np.uint64(0))
    return groups[np.arange(5) < n[:, None]].astype(np.uint8), n


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _zigzag(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.int64)
    return ((v << 1) ^ (v >> 63)).astype(np.uint64)


def _command(op: int, count) -> np.ndarray:
    return (np.asarray(count, np.int64) << 3) | op


def _geometry_stream(kind, coords: np.ndarray, offsets) -> tuple[np.ndarray, np.ndarray, int]:
    """MVT geometry commands for ragged arrays: (uint64 stream, per-geometry value counts, MVT geometry type)."""
    pts = np.rint(coords).astype(np.int64)
    G = shapely.GeometryType
    if kind in (G.POINT, G.MULTIPOINT):
        geom_off = np.arange(len(pts) + 1) if kind == G.POINT else offsets[0]
        return (*_point_stream(pts, geom_off), 1)
    if kind in (G.LINESTRING, G.MULTILINESTRING):
        line_off = offsets[0]
        geom_off = np.arange(len(line_off)) if kind == G.LINESTRING else offsets[1]
        return (*_path_stream(pts, line_off, geom_off, None), 2)
    ring_off, part_off = offsets[0], offsets[1]  # rings → parts (polygons) → geometries
    geom_off = np.arange(len(part_off)) if kind == G.POLYGON else offsets[2]
    return (*_path_stream(pts, ring_off, geom_off, part_off), 3)


def _point_stream(pts: np.ndarray, geom_off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One MoveTo(n) per geometry, deltas running on within it."""
    counts = np.diff(geom_off)
    geom_of = np.repeat(np.arange(len(counts)), counts)
    first = np.zeros(len(pts), bool)
    first[geom_off[:-1][counts > 0]] = True
    delta = _deltas(pts, first)
    per = np.where(counts > 0, 1 + 2 * counts, 0)
    base = np.cumsum(per) - per
    out = np.zeros(int(per.sum()), np.uint64)
    out[base[counts > 0]] = _command(1, counts[counts > 0]).astype(np.uint64)
    pos = base[geom_of] + 1 + 2 * (np.arange(len(pts)) - geom_off[:-1][geom_of])
    out[pos], out[pos + 1] = _zigzag(delta[:, 0]), _zigzag(delta[:, 1])
    return out, per


def _deltas(pts: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Each point minus the one before (the cursor), absolute where a geometry starts."""
    prev = np.vstack([np.zeros((1, 2), np.int64), pts[:-1]])
    return np.where(first[:, None], pts, pts - prev)


def _path_stream(pts, path_off, geom_off, part_off) -> tuple[np.ndarray, np.ndarray]:
    """Lines (part_off None) or polygon rings: drop repeated points, degenerate paths and rings (with the
    holes of a dropped exterior), orient rings, then emit MoveTo/LineTo(/ClosePath) with zigzag deltas."""
    closed = part_off is not None
    n_paths = len(path_off) - 1
    path_of = np.repeat(np.arange(n_paths), np.diff(path_off))
    keep = np.ones(len(pts), bool)
    keep[1:] = np.any(pts[1:] != pts[:-1], axis=1) | (path_of[1:] != path_of[:-1])
    if closed:  # the closing point: ClosePath returns to the start
        keep[path_off[1:][np.diff(path_off) > 0] - 1] = False
    pts, path_of = pts[keep], path_of[keep]
    counts = np.bincount(path_of, minlength=n_paths)
    starts = np.cumsum(counts) - counts
    if closed:
        last = starts + counts - 1
        has = counts > 1
        dup = np.zeros(len(pts), bool)  # the last point rounds onto the first
        dup[last[has]] = np.all(pts[last[has]] == pts[starts[has]], axis=1)
        if dup.any():
            pts, path_of = pts[~dup], path_of[~dup]
            counts = np.bincount(path_of, minlength=n_paths)
            starts = np.cumsum(counts) - counts
        nxt = np.arange(len(pts)) + 1
        live = counts > 0
        nxt[(starts + counts - 1)[live]] = starts[live]
        cross = pts[:, 0] * pts[nxt % max(len(pts), 1), 1] - pts[nxt % max(len(pts), 1), 0] * pts[:, 1]
        area = np.bincount(path_of, weights=cross, minlength=n_paths)
        n_parts = len(part_off) - 1
        ring_part = np.repeat(np.arange(n_parts), np.diff(part_off))
        exterior = np.zeros(n_paths, bool)
        exterior[part_off[:-1][np.diff(part_off) > 0]] = True
        valid = (counts >= 3) & (area != 0)
        part_ok = np.zeros(n_parts, bool)
        part_ok[ring_part[exterior]] = valid[exterior]
        path_ok = valid & part_ok[ring_part]
        reverse = path_ok & ((area < 0) == exterior)
        if reverse.any():  # p0, p1 … pk-1 → p0, pk-1 … p1
            j = np.arange(len(pts)) - starts[path_of]
            k = counts[path_of]
            pts = pts[np.where(reverse[path_of], starts[path_of] + (k - j) % k, np.arange(len(pts)))]
        geom_of_path = np.repeat(np.arange(len(geom_off) - 1), np.diff(geom_off))[ring_part]
    else:
        path_ok = counts >= 2
        geom_of_path = np.repeat(np.arange(len(geom_off) - 1), np.diff(geom_off))
    point_ok = path_ok[path_of]
    pts, path_of = pts[point_ok], path_of[point_ok]
    counts = np.where(path_ok, counts, 0)
    starts = np.cumsum(counts) - counts
    geom_of = geom_of_path[path_of]
    first = np.ones(len(pts), bool)
    first[1:] = geom_of[1:] != geom_of[:-1]
    delta = _deltas(pts, first)
    per = np.where(counts > 0, 2 * counts + (3 if closed else 2), 0)
    base = np.cumsum(per) - per
    j = np.arange(len(pts)) - starts[path_of]
    pos = base[path_of] + np.where(j == 0, 1, 4 + 2 * (j - 1))
    out = np.zeros(int(per.sum()), np.uint64)
    live = counts > 0
    out[base[live]] = _command(1, 1)
    out[base[live] + 3] = _command(2, counts[live] - 1).astype(np.uint64)
    if closed:
        out[base[live] + per[live] - 1] = _command(7, 1)
    out[pos], out[pos + 1] = _zigzag(delta[:, 0]), _zigzag(delta[:, 1])
    per_geom = np.bincount(geom_of_path, weights=per, minlength=len(geom_off) - 1).astype(np.int64)
    return out, per_geom


def _value_bytes(value) -> bytes:
    if type(value) is str:  # the common case first: one-byte lengths
        text = value.encode()
        if len(text) < 126:
            return b"\x22" + bytes((len(text) + 2, 0x0a, len(text))) + text
        body = b"\x0a" + _varint(len(text)) + text
    elif isinstance(value, bool):
        body = b"\x38" + (b"\x01" if value else b"\x00")
    elif isinstance(value, int):  # as PostGIS's ST_AsMVT writes them: uint_value, sint_value if negative
        body = b"\x28" + _varint(value) if value >= 0 else b"\x30" + _varint((value << 1) ^ (value >> 63))
    elif isinstance(value, float):
        body = b"\x19" + np.float64(value).tobytes()  # double_value (little-endian)
    else:
        text = str(value).encode()
        body = b"\x0a" + _varint(len(text)) + text
    return b"\x22" + _varint(len(body)) + body


def _values_bytes(values: list) -> bytes:
    """Layer field 4 (Value messages) for a list of distinct values: strings, doubles, booleans in one pass."""
    if not values:
        return b""
    kinds = {type(v) for v in values}
    if kinds == {str}:
        raw = [v.encode() for v in values]
        n = np.fromiter(map(len, raw), np.int64, len(raw))
        if n.max() < 126:  # one-byte lengths: 0x22, len + 2, 0x0a (string_value), len, text
            heads = np.stack([np.full_like(n, 0x22), n + 2, np.full_like(n, 0x0a), n], axis=1).astype(np.uint8)
            return _interleave(heads, np.frombuffer(b"".join(raw), np.uint8), n)
    if kinds == {float}:  # 0x22, 9, 0x19 (double_value), 8 bytes little-endian
        doubles = np.asarray(values, "<f8").view(np.uint8).reshape(-1, 8)
        heads = np.tile(np.array([0x22, 9, 0x19], np.uint8), (len(values), 1))
        return np.concatenate([heads, doubles], axis=1).tobytes()
    return b"".join(_value_bytes(v) for v in values)


def _interleave(heads: np.ndarray, body: np.ndarray, lengths: np.ndarray) -> bytes:
    """Row i of heads (fixed width) followed by the next lengths[i] bytes of body, for every i."""
    width = heads.shape[1]
    per = width + lengths
    out = np.empty(int(per.sum()), np.uint8)
    start = np.cumsum(per) - per
    out[(start[:, None] + np.arange(width)).ravel()] = heads.ravel()
    owner = np.repeat(np.arange(len(lengths)), lengths)
    offset = np.arange(len(body)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[start[owner] + width + offset] = body
    return out.tobytes()


def _ragged(geoms) -> tuple:
    """shapely.to_ragged_array, with a fast path for polygons without holes (strip plots): one ring each."""
    if (shapely.get_type_id(geoms) == 3).all() and not shapely.get_num_interior_rings(geoms).any():
        coords, index = shapely.get_coordinates(geoms, return_index=True)
        rings = np.concatenate([[0], np.cumsum(np.bincount(index, minlength=len(geoms)))])
        return shapely.GeometryType.POLYGON, coords, (rings, np.arange(len(geoms) + 1))
    return shapely.to_ragged_array(geoms)


def encode_layer(name: str, geoms, fids, values: dict[str, list], ragged=None) -> tuple[bytes, int]:
    """One MVT layer (version 2, extent EXTENT) of geometries in tile units; returns (bytes, features).

    Either geoms (shapely, anything undrawable left out) or ragged: one (kind, coords, offsets) as
    shapely.to_ragged_array gives, or a list of them whose geometries follow each other in fids' order."""
    if ragged is None:
        good = _drawable(geoms)
        if not good.any():
            return b"", 0
        if not good.all():
            geoms, fids = geoms[good], np.asarray(fids)[good]
            values = {k: [v for v, g in zip(col, good) if g] for k, col in values.items()}
        ragged = _ragged(geoms)
    streams = [_geometry_stream(kind, coords, offsets) for kind, coords, offsets in
               (ragged if isinstance(ragged, list) else [ragged])]  # parts of one geometry family, in fid order
    stream = np.concatenate([s[0] for s in streams])
    per_geom = np.concatenate([s[1] for s in streams])
    geom_type = streams[0][2]
    gbytes, gn = _varints(stream)
    gend = np.cumsum(np.bincount(np.repeat(np.arange(len(per_geom)), per_geom), weights=gn,
                                 minlength=len(per_geom)).astype(np.int64))
    keys = list(values)
    tags = np.full((len(per_geom), len(keys), 2), -1, np.int64)
    value_parts, n_values = [], 0
    for ki, k in enumerate(keys):  # values deduplicated per key (a value shared by two keys is stored twice)
        codes, uniques = pd.factorize(pd.Series(values[k], dtype=object))  # None → -1
        tags[:, ki, 0] = ki
        tags[:, ki, 1] = np.where(codes >= 0, codes + n_values, -1)
        value_parts.append(_values_bytes(uniques.tolist()))
        n_values += len(uniques)
    present = tags[:, :, 1] >= 0
    flat = tags[present].reshape(-1)
    tbytes, tn = _varints(flat)
    tcount = 2 * present.sum(axis=1)
    tend = np.cumsum(np.bincount(np.repeat(np.arange(len(tcount)), tcount), weights=tn,
                                 minlength=len(tcount)).astype(np.int64))
    tstart = np.concatenate([[0], tend[:-1]])
    gstart = np.concatenate([[0], gend[:-1]])
    kept = np.flatnonzero(gend > gstart)  # features with every ring or path degenerate at this zoom are left out
    if not len(kept):
        return b"", 0
    features = _features(np.asarray(fids, np.int64)[kept], tbytes, tstart[kept], (tend - tstart)[kept],
                         gbytes, gstart[kept], (gend - gstart)[kept], geom_type)
    head = b"\x78\x02" + b"\x0a" + _varint(len(name.encode())) + name.encode()
    key_bytes = b"".join(b"\x1a" + _varint(len(k.encode())) + k.encode() for k in keys)
    value_bytes = b"".join(value_parts)
    return head + features + key_bytes + value_bytes + b"\x28" + _varint(EXTENT), len(kept)


def _features(fids, tags, tag_start, tag_len, geom, geom_start, geom_len, geom_type: int) -> bytes:
    """Layer field 2 for every feature — tag, length, id (1), tags (2, packed), type (3), geometry (4, packed) —
    assembled for all features at once by gathering byte ranges (no per-feature Python)."""
    fid_b, fid_n = _varints(fids)
    tl_b, tl_n = _varints(tag_len)
    gl_b, gl_n = _varints(geom_len)
    flen = 1 + fid_n + 1 + tl_n + tag_len + 2 + 1 + gl_n + geom_len
    fl_b, fl_n = _varints(flen)
    consts = np.array([0x12, 0x08, 0x18, geom_type, 0x22], np.uint8)
    parts = [consts, fl_b, fid_b, tl_b, gl_b, tags, geom]
    base = np.cumsum([0] + [len(p) for p in parts[:-1]])
    src = np.concatenate(parts)

    def at(i, n):  # where each feature's piece starts in src
        return base[i] + np.cumsum(n) - n

    one = np.ones(len(fids), np.int64)
    starts = np.stack([0 * one, at(1, fl_n), 1 * one, at(2, fid_n), 0 * one, at(3, tl_n), base[5] + tag_start,
                       2 * one, 4 * one, at(4, gl_n), base[6] + geom_start], axis=1).ravel()
    lens = np.stack([one, fl_n, one, fid_n, one, tl_n, tag_len, 2 * one, one, gl_n, geom_len], axis=1).ravel()
    out_start = np.cumsum(lens) - lens
    index = np.repeat(starts - out_start, lens) + np.arange(int(lens.sum()))
    return src[index].tobytes()


def _tile_message(layers: list[bytes]) -> bytes:
    return b"".join(b"\x1a" + _varint(len(data)) + data for data in layers if data)
