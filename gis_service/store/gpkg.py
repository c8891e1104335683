"""Embedded store: one GeoPackage per layer, in CGCS2000 (EPSG:4490), read through SQLite and its R-tree.

Why not read through GDAL for every request: a bbox page over two million plots is an R-tree lookup plus
a few dozen WKB blobs; doing that directly in SQLite keeps a request in the low milliseconds and the
memory flat (nothing is loaded up front). Writes go through GDAL (pyogrio) into a temporary file that
replaces the old one atomically, so a failed import leaves the previous data intact and readers
reconnect to the new file on their next query.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

from ..catalog import LayerDef
from ..crs import STORAGE_CRS
from ..errors import GisError
from ..privacy import mask_sql
from . import cql2, temporal
from .base import ORIGINS, FeaturePage, FeatureQuery

GEOM_COLUMN = "geom"
GEOJSON_DECIMALS = 7  # 1e-7° ≈ 1 cm: the stored GeoJSON geometries are rounded to this
MMAP_BYTES = 2**31 - 2**16  # SQLite's default compile-time ceiling
_ENVELOPE_BYTES = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}
# "feature PRED literal", evaluated as literal PRED' feature: the prepared literal must be the first argument
# of a shapely predicate for the preparation to be used (GEOS ignores a prepared second argument).
_LITERAL_FIRST = {
    "intersects": shapely.intersects, "within": shapely.contains, "contains": shapely.within,
    "equals": shapely.equals, "touches": shapely.touches, "overlaps": shapely.overlaps, "crosses": shapely.crosses,
}


def gpkg_to_wkb(blob: bytes) -> bytes:
    """Strip the GeoPackage geometry header (magic, flags, srs id, optional envelope)."""
    return blob[8 + _ENVELOPE_BYTES[(blob[3] >> 1) & 0x07]:]


def decode_geometries(blobs) -> np.ndarray:
    return shapely.from_wkb([gpkg_to_wkb(b) for b in blobs])


class _LayerFile:
    """Pooled read-only SQLite connections to one layer file, reopened when the file is replaced.

    A reader checks a connection out for its whole query, so it finishes on the file it started with (the
    replaced file's inode stays readable) while the next query opens the new one. The pool keeps at most as
    many connections as queries ran at once, not one per thread of the server's thread pool: each
    connection memory-maps the file."""

    max_idle = 8

    def __init__(self, layer: LayerDef):
        self.layer = layer
        self.path = layer.data_path
        self._lock = threading.Lock()
        self._identity = None
        self._idle: list[sqlite3.Connection] = []
        self.total: int | None = None  # cached per file version
        self.origin: str | None = None

    @contextmanager
    def reader(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise _not_built(self.path) from None
        identity = (st.st_ino, st.st_mtime_ns, st.st_size)
        stale: list[sqlite3.Connection] = []
        with self._lock:
            if identity != self._identity:  # replaced: idle connections read the old file
                stale, self._idle = self._idle, []
                self._identity, self.total, self.origin = identity, None, None
            conn = self._idle.pop() if self._idle else None
        for old in stale:
            old.close()
        if conn is None:
            conn = _open_reader(self.path)
        try:
            if self.origin is None:
                self.origin = _read_origin(conn, self.layer)
            yield conn
        finally:
            with self._lock:
                keep = identity == self._identity and len(self._idle) < self.max_idle
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()


def _not_built(path: Path) -> GisError:
    return GisError("layer_not_built", f"图层数据文件不存在：{path.name}，请先运行 gis-service build-layers",
                    f"layer data {path.name} is missing; run 'gis-service build-layers'", 503)


def _open_reader(path: Path) -> sqlite3.Connection:
    # Checked out by one thread at a time, possibly a different one each time.
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    conn.execute("PRAGMA case_sensitive_like = ON")  # CQL2 LIKE is case-sensitive
    # Memory-map the file: random R-tree/page reads become memory reads instead of syscalls; the pages are
    # the OS page cache, shared by every connection, not process memory.
    conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
    return conn


class GeoPackageStore:
    """The embedded Store: one GeoPackage per layer beside its TOML definition."""

    # Spatial filters test R-tree candidates in chunks of this many geometries, so memory stays bounded
    # however large the filter geometry (a county outline over two million plots).
    candidate_chunk = 20_000
    spatial_candidate_budget = 1_000_000  # about 4 s of exact tests on this machine

    def __init__(self):
        self._files: dict[Path, _LayerFile] = {}
        self._lock = threading.Lock()

    def _file(self, layer: LayerDef) -> _LayerFile:
        path = layer.data_path
        with self._lock:
            if path not in self._files:
                self._files[path] = _LayerFile(layer)
            return self._files[path]

    def exists(self, layer: LayerDef) -> bool:
        return layer.data_path.exists()

    def version(self, layer: LayerDef) -> str:
        st = os.stat(layer.data_path)
        return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"

    def origin(self, layer: LayerDef) -> str | None:
        if not self.exists(layer):
            return None
        if layer.is_raster:  # rasters are not imported (yet): the definition says what wrote them
            return "demo" if layer.demo else "source"
        file = self._file(layer)
        with file.reader():
            return file.origin

    # --- reading -------------------------------------------------------------------------------------
    def count(self, layer: LayerDef) -> int:
        file = self._file(layer)
        with file.reader() as conn:
            return self._total(file, conn, layer)

    def _total(self, file: _LayerFile, conn, layer: LayerDef) -> int:
        if file.total is None:
            file.total = conn.execute(f'SELECT count(*) FROM "{layer.id}"').fetchone()[0]
        return file.total

    def extent(self, layer: LayerDef) -> tuple[float, float, float, float] | None:
        with self._file(layer).reader() as conn:
            row = conn.execute(
                f'SELECT min(minx), min(miny), max(maxx), max(maxy) FROM "rtree_{layer.id}_{GEOM_COLUMN}"'
            ).fetchone()
        return None if row[0] is None else tuple(float(v) for v in row)

    def time_extent(self, layer: LayerDef) -> tuple[str, str] | None:
        if not layer.time_field:
            return None
        with self._file(layer).reader() as conn:
            row = conn.execute(f'SELECT min("{layer.time_field}"), max("{layer.time_field}") FROM "{layer.id}"').fetchone()
        return None if row[0] is None else (str(row[0]), str(row[1]))

    # Up to this many R-tree candidates, a plain bbox page is answered from one fetch of all candidates
    # (exact test and paging in memory); beyond it, the general SQL path pages in SQLite.
    small_bbox_candidates = 2000

    def query(self, layer: LayerDef, q: FeatureQuery) -> FeaturePage:
        file = self._file(layer)
        with file.reader() as conn:
            return self._query(file, conn, layer, q)

    def _query(self, file: _LayerFile, conn, layer: LayerDef, q: FeatureQuery) -> FeaturePage:
        columns = q.columns if q.columns is not None else [f.name for f in layer.fields]
        if q.bbox is not None and not (q.equals or q.cql is not None or q.datetime or q.sortby or q.intersects):
            page = self._small_bbox_page(conn, layer, q, columns)
            if page is not None:
                return page
        where, params = self._where(conn, layer, q)
        order = ", ".join(f'"{name}" {"ASC" if asc else "DESC"}' for name, asc in q.sortby)
        order = f"{order}, fid" if order else "fid"
        # Filter and page the layer table alone (its column names unqualified), then join the GeoJSON.
        sql = (f'SELECT {_select(layer, columns, q.masked)} FROM (SELECT * FROM "{layer.id}" WHERE {where} '
               f"ORDER BY {order} LIMIT ? OFFSET ?) t {_join_geojson(layer)} ORDER BY {_qualified(order)}")
        rows = conn.execute(sql, params + [q.limit, q.offset]).fetchall()
        if where == "1" and not q.offset and len(rows) < q.limit:
            matched = len(rows)
        elif where == "1":
            matched = self._total(file, conn, layer)
        else:
            matched = conn.execute(f'SELECT count(*) FROM "{layer.id}" WHERE {where}', params).fetchone()[0]
        return _page(rows, matched)

    def _small_bbox_page(self, conn, layer: LayerDef, q: FeatureQuery, columns: list[str]) -> FeaturePage | None:
        """One query for the common map/client case: a small box. None when the box holds too many candidates."""
        x0, y0, x1, y1 = q.bbox
        select = _select(layer, columns, q.masked) + ", r.minx >= ? AND r.maxx <= ? AND r.miny >= ? AND r.maxy <= ?"
        rows = conn.execute(
            f'SELECT {select} FROM {self._rtree(layer)} r JOIN "{layer.id}" t ON t.fid = r.id {_join_geojson(layer)} '
            "WHERE r.minx <= ? AND r.maxx >= ? AND r.miny <= ? AND r.maxy >= ? ORDER BY t.fid LIMIT ?",
            (x0, x1, y0, y1, x1, x0, y1, y0, self.small_bbox_candidates + 1)).fetchall()
        if len(rows) > self.small_bbox_candidates:
            return None
        edge = [i for i, r in enumerate(rows) if not r[-1]]  # envelope straddles the box: test exactly
        if edge:
            hits = shapely.intersects(decode_geometries([rows[i][1] for i in edge]), shapely.box(x0, y0, x1, y1))
            miss = {i for i, hit in zip(edge, hits) if not hit}
            rows = [r for i, r in enumerate(rows) if i not in miss]
        return _page(rows[q.offset:q.offset + q.limit], len(rows))

    def get(self, layer: LayerDef, fid: int, masked: dict[str, str] | None = None) -> FeaturePage:
        """One feature as a page of zero or one."""
        with self._file(layer).reader() as conn:
            rows = conn.execute(f'SELECT {_select(layer, [f.name for f in layer.fields], masked or {})} '
                                f'FROM "{layer.id}" t {_join_geojson(layer)} WHERE t.fid = ?', (fid,)).fetchall()
        return _page(rows, len(rows))

    def read_frame(self, layer: LayerDef) -> gpd.GeoDataFrame:
        """The whole layer as a GeoDataFrame indexed by fid (for exports, maps and analyses)."""
        if not self.exists(layer):
            raise _not_built(layer.data_path)
        frame = pyogrio.read_dataframe(layer.data_path, layer=layer.id, fid_as_index=True)
        return frame.set_crs(STORAGE_CRS, allow_override=True)

    # --- filtering -----------------------------------------------------------------------------------
    def _where(self, conn, layer: LayerDef, q: FeatureQuery) -> tuple[str, list]:
        clauses: list[str] = []
        params: list = []
        budget = [self.spatial_candidate_budget]  # exact tests left for this query's spatial predicates
        if q.bbox is not None:
            sql, p = self._bbox_clause(conn, layer, q.bbox)
            clauses.append(sql)
            params += p
        if q.intersects is not None:
            clauses.append(self._spatial_clause(conn, layer, "intersects", q.intersects, params, budget))
        for name, value in q.equals.items():
            clauses.append(f'"{name}" = ?')
            params.append(value)
        if q.datetime is not None:
            more, values = temporal.interval_clauses(layer.time_field, q.datetime, "?")
            clauses += more
            params += values
        if q.cql is not None:
            translator = cql2.Translator(
                {f.name: f.type for f in layer.fields},
                {GEOM_COLUMN, "geometry"},
                lambda predicate, geom: self._spatial_clause(conn, layer, predicate, geom, translator.params, budget),
                q.cql_to_storage or (lambda g: g),
            )
            clauses.append(translator.translate(q.cql))
            params += translator.params
        return (" AND ".join(clauses) if clauses else "1"), params

    def _rtree(self, layer: LayerDef) -> str:
        return f'"rtree_{layer.id}_{GEOM_COLUMN}"'

    def _candidates(self, conn, layer: LayerDef, bounds, extra_where: str = "", extra_params=()):
        """(fids, geometries) of R-tree candidates intersecting bounds, yielded in bounded chunks."""
        x0, y0, x1, y1 = bounds
        cursor = conn.execute(
            f"SELECT t.fid, t.{GEOM_COLUMN} FROM {self._rtree(layer)} r JOIN \"{layer.id}\" t ON t.fid = r.id "
            f"WHERE r.minx <= ? AND r.maxx >= ? AND r.miny <= ? AND r.maxy >= ? {extra_where}",
            (x1, x0, y1, y0, *extra_params))
        while rows := cursor.fetchmany(self.candidate_chunk):
            yield [r[0] for r in rows], decode_geometries([r[1] for r in rows])

    def _bbox_clause(self, conn, layer: LayerDef, bbox) -> tuple[str, list]:
        """Exact bbox intersection: R-tree candidates minus those straddling the edge that do not touch it.

        Candidates whose envelope lies wholly inside the box certainly intersect it; only the few that
        straddle the edge need an exact test, so this stays cheap for small and huge boxes alike."""
        x0, y0, x1, y1 = bbox
        box = shapely.box(x0, y0, x1, y1)
        shapely.prepare(box)
        excluded: list[int] = []
        straddling = "AND NOT (r.minx >= ? AND r.maxx <= ? AND r.miny >= ? AND r.maxy <= ?)"
        for fids, geoms in self._candidates(conn, layer, bbox, straddling, (x0, x1, y0, y1)):
            hit = shapely.intersects(box, geoms)
            excluded += [fid for fid, h in zip(fids, hit) if not h]
        sql = f"fid IN (SELECT id FROM {self._rtree(layer)} WHERE minx <= ? AND maxx >= ? AND miny <= ? AND maxy >= ?)"
        params: list = [x1, x0, y1, y0]
        if excluded:
            sql += " AND fid NOT IN (SELECT value FROM json_each(?))"
            params.append(json.dumps(excluded))
        return sql, params

    def _spatial_clause(self, conn, layer: LayerDef, predicate: str, geom, params: list, budget: list[int]) -> str:
        """fid set matching 'feature PRED geom', as a SQL clause (its parameter appended to params).

        Every R-tree candidate is tested exactly; a query may test at most spatial_candidate_budget of them
        in all (a 400 beyond), so that no single request can occupy a core for minutes."""
        x0, y0, x1, y1 = geom.bounds
        candidates = conn.execute(f"SELECT count(*) FROM {self._rtree(layer)} WHERE minx <= ? AND maxx >= ? "
                                  "AND miny <= ? AND maxy >= ?", (x1, x0, y1, y0)).fetchone()[0]
        budget[0] -= candidates
        if budget[0] < 0:
            raise GisError("filter_too_broad",
                           f"空间过滤涉及的要素过多（超过 {self.spatial_candidate_budget:,} 个候选），请缩小范围或加 bbox",
                           f"the spatial filter covers too many features (over {self.spatial_candidate_budget:,} "
                           "candidates); narrow it or add a bbox", 400)
        negate = predicate == "disjoint"
        test = _LITERAL_FIRST["intersects" if negate else predicate]
        shapely.prepare(geom)
        matched: list[int] = []
        for fids, geoms in self._candidates(conn, layer, geom.bounds):
            hits = test(geom, geoms)
            matched += [fid for fid, h in zip(fids, hits) if h]
        params.append(json.dumps(matched))
        return f"(fid {'NOT IN' if negate else 'IN'} (SELECT value FROM json_each(?)))"

    # --- writing -------------------------------------------------------------------------------------
    def write(self, layer: LayerDef, frame: gpd.GeoDataFrame, origin: str) -> int:
        """Validate a frame against the layer definition and replace the layer's data atomically."""
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}")
        clean = conform(layer, frame)
        path = layer.data_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.gpkg")
        try:
            # GeoPackage 1.2: read without warnings by the older GDAL of Debian 12 / QGIS LTR installs.
            pyogrio.write_dataframe(clean, tmp, layer=layer.id, driver="GPKG", dataset_options={"VERSION": "1.2"},
                                    geometry_type=layer.geometry,
                                    layer_options={"SPATIAL_INDEX": "YES", "GEOMETRY_NAME": GEOM_COLUMN})
            _write_geojson_table(tmp, layer, clean.geometry.values)
            _write_indexes(tmp, layer)
            _write_origin(tmp, origin)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return len(clean)


_ORIGIN_TABLE = "gis_layer_origin"


def _write_indexes(path: Path, layer: LayerDef) -> None:
    """The layer's `indexes` fields (SQLite adds the fid to each index: a page sorted on one needs no sort)."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            for name in layer.indexes:
                conn.execute(f'CREATE INDEX "{layer.id}__{name}" ON "{layer.id}" ("{name}")')
    finally:
        conn.close()


def _write_origin(path: Path, origin: str) -> None:
    """Record who wrote the data (a plain table GDAL ignores), so a rebuild never overwrites an import."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute(f"CREATE TABLE {_ORIGIN_TABLE} (origin TEXT NOT NULL, written_at TEXT NOT NULL)")
            conn.execute(f"INSERT INTO {_ORIGIN_TABLE} VALUES (?, ?)",
                         (origin, dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")))
    finally:
        conn.close()


def _read_origin(conn: sqlite3.Connection, layer: LayerDef) -> str:
    try:
        return conn.execute(f"SELECT origin FROM {_ORIGIN_TABLE}").fetchone()[0]
    except sqlite3.OperationalError:  # written before origins were recorded, or by another tool
        pass
    # A demo layer whose every feature says demo is the generator's; anything else counts as a user's.
    if layer.demo and layer.field("demo") and not conn.execute(
            f'SELECT 1 FROM "{layer.id}" WHERE NOT coalesce("demo", 0) LIMIT 1').fetchone():
        return "demo"
    return "imported"


def _geojson_table(layer: LayerDef) -> str:
    return f'"{layer.id}__geojson"'


def _join_geojson(layer: LayerDef) -> str:
    return f"JOIN {_geojson_table(layer)} j ON j.fid = t.fid"


def _write_geojson_table(path: Path, layer: LayerDef, geoms: np.ndarray) -> None:
    """Each geometry pre-serialised as GeoJSON (lon/lat, 1 cm): CRS84 pages are then assembled from text.

    A plain SQLite table, not registered in gpkg_contents, so GDAL, QGIS and exports do not see it; it is
    rewritten with the layer on every write, so it cannot drift from the geometry column."""
    rounded = shapely.transform(geoms, lambda c: np.round(c, GEOJSON_DECIMALS))
    texts = shapely.to_geojson(rounded)
    conn = sqlite3.connect(path)
    try:
        fids = [r[0] for r in conn.execute(f'SELECT fid FROM "{layer.id}" ORDER BY fid')]
        with conn:
            conn.execute(f"CREATE TABLE {_geojson_table(layer)} (fid INTEGER PRIMARY KEY, geometry TEXT NOT NULL)")
            conn.executemany(f"INSERT INTO {_geojson_table(layer)} VALUES (?, ?)", zip(fids, texts.tolist()))
    finally:
        conn.close()


def _select(layer: LayerDef, columns: list[str], masked: dict[str, str]) -> str:
    """fid, geometry blob, GeoJSON geometry and the properties as one JSON object built by SQLite."""
    return _select_cached(layer, tuple(columns), tuple(sorted(masked.items())))


@lru_cache(maxsize=256)
def _select_cached(layer: LayerDef, columns: tuple[str, ...], masked: tuple[tuple[str, str], ...]) -> str:
    kinds = dict(masked)
    pairs = []
    for name in columns:
        value = f't."{name}"'
        if name in kinds:
            value = mask_sql(kinds[name], value)
        elif layer.field(name).type == "boolean":  # SQLite keeps booleans as 0/1
            value = f"CASE WHEN {value} IS NULL THEN NULL WHEN {value} THEN json('true') ELSE json('false') END"
        pairs.append(f"'{name}', {value}")
    return f"t.fid, t.{GEOM_COLUMN}, j.geometry, json_object({', '.join(pairs)})"


def _qualified(order: str) -> str:
    return ", ".join(f"t.{part.strip()}" for part in order.split(","))


def _page(rows: list, matched: int) -> FeaturePage:
    """Rows start with fid, geometry blob, GeoJSON geometry, properties JSON (any further columns are ignored)."""
    fids, blobs, geometry, props = (list(c) for c in list(zip(*rows))[:4]) if rows else ([], [], [], [])
    return FeaturePage(fids, [gpkg_to_wkb(b) for b in blobs], geometry, props, matched)


_DTYPES = {"string": "object", "integer": "Int64", "real": "float64", "boolean": "boolean"}


def conform(layer: LayerDef, frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Check and coerce a frame to the definition: every field present, typed; geometry valid, in EPSG:4490."""
    if frame.crs is None:
        raise GisError("missing_crs", "数据没有坐标系信息，请指定来源坐标系",
                       "the data has no coordinate reference system; state the source CRS", 422)
    data = {}
    for f in layer.fields:
        if f.name not in frame.columns:
            raise GisError("missing_field", f"图层 {layer.id} 缺少字段 {f.name}（{f.label}）",
                           f"layer {layer.id}: field '{f.name}' is missing", 422)
        data[f.name] = _coerce(layer, f, frame[f.name])
    geoms = frame.geometry.values
    if geoms.isna().any() or shapely.is_empty(np.asarray(geoms)).any():
        raise GisError("empty_geometry", f"图层 {layer.id} 含空几何", f"layer {layer.id} has empty geometries", 422)
    invalid = ~shapely.is_valid(np.asarray(geoms))
    if invalid.any():
        i = int(np.flatnonzero(invalid)[0])
        reason = shapely.is_valid_reason(np.asarray(geoms)[i])
        raise GisError("invalid_geometry", f"图层 {layer.id} 第 {i + 1} 个要素几何无效（{reason}）",
                       f"layer {layer.id}: feature {i + 1} has an invalid geometry ({reason})", 422)
    kinds = set(shapely.get_type_id(np.asarray(geoms)))
    single, multi = {"Point": (0, 4), "LineString": (1, 5), "Polygon": (3, 6)}[layer.geometry.replace("Multi", "")]
    allowed = {single, multi} if layer.geometry.startswith("Multi") else {single}
    if not kinds <= allowed:
        raise GisError("wrong_geometry_type", f"图层 {layer.id} 应为 {layer.geometry} 几何",
                       f"layer {layer.id} expects {layer.geometry} geometries", 422)
    stored = gpd.GeoSeries(geoms, crs=frame.crs).to_crs(STORAGE_CRS).values
    if layer.geometry.startswith("Multi"):
        promote = {"MultiPoint": shapely.MultiPoint, "MultiLineString": shapely.MultiLineString,
                   "MultiPolygon": shapely.MultiPolygon}[layer.geometry]
        stored = np.array([g if g.geom_type == layer.geometry else promote([g]) for g in stored], dtype=object)
    out = gpd.GeoDataFrame(data, geometry=stored, crs=STORAGE_CRS)
    return out.reset_index(drop=True)


def _coerce(layer: LayerDef, f, series: pd.Series) -> pd.Series:
    try:
        if f.type in ("date", "datetime"):
            parsed = pd.to_datetime(series, errors="raise")
            fmt = "%Y-%m-%d" if f.type == "date" else "%Y-%m-%dT%H:%M:%S"
            return parsed.dt.strftime(fmt).astype(object).where(series.notna(), None)
        if f.type == "string":
            values = series.astype(object).where(series.notna(), None)
            if isinstance(series.dtype, pd.StringDtype):  # already text: no per-value conversion (millions of rows)
                return values
            return values.map(lambda v: v if v is None else str(v))
        return series.astype(_DTYPES[f.type])
    except (ValueError, TypeError) as exc:
        raise GisError("bad_field_value", f"图层 {layer.id} 字段 {f.name} 的值不是 {f.type} 类型",
                       f"layer {layer.id}: field '{f.name}' has values that are not {f.type} ({exc})", 422) from None
