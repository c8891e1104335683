"""PostgreSQL/PostGIS store: the same ``Store`` as the embedded one, over one database many processes share.

Selected by ``GIS_DATABASE_URL=postgresql://…`` (see ``open_store``). Layout (created by the versioned
migrations of ``store.pgschema``; ``gis-service db init`` / ``db migrate`` / ``db load``):

- ``layers."<layer id>"``: one table per vector layer — ``fid bigint`` primary key, the defined fields
  (string → text, integer → bigint, real → double precision, boolean → boolean, date/datetime → text in the
  stored form of ``store.temporal``, so CQL2 compares exactly as in the embedded store), ``geom
  geometry(…, 4490)`` with a GiST index, and ``geojson``: the geometry pre-serialised as GeoJSON text
  (lon/lat, 1e-7°), written with the data, so a page is assembled from text without per-request encoding.
- ``gis.layer_meta``: per layer its origin, a version number from a sequence (changes on every write: the
  cache key of derived data in every process), the feature count, extent and time extent.

Reads are single statements over a connection pool (autocommit, no transaction round trips); psycopg
prepares each statement text on its first use per connection and reuses it. Filters run in the database:
bbox and S_* predicates as PostGIS predicates the GiST index answers, CQL2 through ``cql2.Translator`` in
the PostgreSQL dialect, personal fields masked in the SELECT list (``privacy.mask_sql``), so clear values
never leave the database for a caller not entitled. Vector tiles of features are encoded by PostGIS
(``mvt``: ST_AsMVTGeom and ST_AsMVT in one prepared statement per layer and masking). A write loads a new
table (COPY) and swaps it in with the metadata in one transaction: readers see the old data or the new,
never a mix.

Rasters (the DEM) stay files beside their definitions, as in the embedded store.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from functools import lru_cache

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import shapely
from psycopg import sql as pgsql
from psycopg.types.numeric import Int4
from psycopg_pool import ConnectionPool

from ..catalog import LayerDef
from ..crs import STORAGE_CRS
from ..errors import GisError
from ..privacy import mask_sql
from . import cql2, pgschema, temporal
from .base import ORIGINS, FeaturePage, FeatureQuery
from .gpkg import GEOJSON_DECIMALS, GEOM_COLUMN, conform

SCHEMA = "layers"
SRID = 4490
_LOADING = "gis.load:"  # advisory-lock key prefix of a table being filled by load_layer
_PG_TYPES = {"string": "text", "integer": "bigint", "real": "double precision", "boolean": "boolean",
             "date": "text", "datetime": "text"}
# "feature PRED literal" as PostGIS functions of (feature, literal); disjoint is NOT intersects (indexable).
_PREDICATES = {"intersects": "ST_Intersects", "within": "ST_Within", "contains": "ST_Contains",
               "equals": "ST_Equals", "touches": "ST_Touches", "overlaps": "ST_Overlaps", "crosses": "ST_Crosses"}
STATEMENT_TIMEOUT_MS = 30_000  # no single request occupies a database core for longer (answered as a 400)


def table(layer_id: str) -> str:
    return f'{SCHEMA}."{layer_id}"'


def make_pool(url: str, max_size: int = 8, name: str = "gis") -> ConnectionPool:
    """A pool of autocommit connections with the statement timeout set; opened at once."""

    def configure(conn: psycopg.Connection) -> None:
        conn.prepare_threshold = 0  # prepare every statement on first use; reused on the same connection
        conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        conn.execute("SET search_path = public, gis")  # PostGIS functions, then the platform's tables
        # Plan each prepared statement once: a custom plan per execution costs 5–20 ms of planning (PostGIS
        # selectivity of the box) for a query that then runs in 0.1 ms; the generic plan uses the GiST index.
        conn.execute("SET plan_cache_mode = force_generic_plan")
        # No JIT: it compiles for the planner's cost guesses (tens of ms) queries that then run in one.
        conn.execute("SET jit = off")

    # Half the pool opened at start: a burst of requests does not wait for new connections (and their first
    # planning of each statement) one by one.
    return ConnectionPool(url, min_size=max(1, max_size // 2), max_size=max_size, kwargs={"autocommit": True},
                          configure=configure, name=name, open=True, timeout=60)


_POOLS: dict[str, ConnectionPool] = {}
_POOLS_LOCK = threading.Lock()


def shared_pool(url: str) -> ConnectionPool:
    """One pool per database and process, shared by the layer store, the record store, keys and the log."""
    with _POOLS_LOCK:
        pool = _POOLS.get(url)
        if pool is None or pool.closed:
            pool = _POOLS[url] = make_pool(url, max_size=int(os.environ.get("GIS_DB_POOL", "10")))
        return pool


def _too_slow() -> GisError:
    """A statement cancelled by STATEMENT_TIMEOUT_MS."""
    return GisError("filter_too_broad", "查询耗时过长，请缩小范围或加 bbox", "the query takes too long; narrow it or add a bbox",
                    400)


def _not_built(layer: LayerDef) -> GisError:
    return GisError("layer_not_built", f"数据库中没有图层 {layer.id} 的数据，请先运行 gis-service db load",
                    f"layer {layer.id} has no data in the database; run 'gis-service db load'", 503)


class PostGISStore:
    """The Store over PostgreSQL/PostGIS."""

    def __init__(self, url: str, pool: ConnectionPool | None = None, migrate: bool = True):
        self.url = url
        self.pool = pool or shared_pool(url)
        if migrate:
            with self.pool.connection() as conn:
                pgschema.migrate(conn)

    def close(self) -> None:
        self.pool.close()

    # --- metadata ------------------------------------------------------------------------------------
    def _meta(self, layer: LayerDef):
        with self.pool.connection() as conn:
            return conn.execute("SELECT origin, version, feature_count, extent, time_min, time_max "
                                "FROM gis.layer_meta WHERE layer_id = %s", (layer.id,)).fetchone()

    def _meta_or_fail(self, layer: LayerDef):
        row = self._meta(layer)
        if row is None:
            raise _not_built(layer)
        return row

    def exists(self, layer: LayerDef) -> bool:
        if layer.is_raster:
            return layer.data_path.exists()
        return self._meta(layer) is not None

    def version(self, layer: LayerDef) -> str:
        if layer.is_raster:
            st = os.stat(layer.data_path)
            return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"
        return f"pg:{self._meta_or_fail(layer)[1]}"

    def origin(self, layer: LayerDef) -> str | None:
        if layer.is_raster:
            return None if not layer.data_path.exists() else ("demo" if layer.demo else "source")
        row = self._meta(layer)
        return row[0] if row else None

    def count(self, layer: LayerDef) -> int:
        return int(self._meta_or_fail(layer)[2])

    def extent(self, layer: LayerDef) -> tuple[float, float, float, float] | None:
        extent = self._meta_or_fail(layer)[3]
        return None if extent is None else tuple(float(v) for v in extent)

    def time_extent(self, layer: LayerDef) -> tuple[str, str] | None:
        if not layer.time_field:
            return None
        row = self._meta_or_fail(layer)
        return None if row[4] is None else (row[4], row[5])

    # --- reading -------------------------------------------------------------------------------------
    def query(self, layer: LayerDef, q: FeatureQuery) -> FeaturePage:
        columns = q.columns if q.columns is not None else [f.name for f in layer.fields]
        where, params = self._where(layer, q)
        order = ", ".join(f'"{name}" {"ASC" if asc else "DESC"}' for name, asc in q.sortby)
        order = f"{order}, fid" if order else "fid"
        select = _select(layer, tuple(columns), tuple(sorted(q.masked.items())))
        # Filter, sort and page the fids alone, then build the JSON of that page only (a sort below the
        # projection would build it for every matching row). LIMIT and OFFSET are literals (checked integers):
        # as parameters the generic plan guesses a tenth of the table and, at 2 000 000 plots, merge-joined every
        # plot for a page of 20 (2.7 pages/s sorted by dkbm); each (limit, offset) is its own prepared statement.
        page_sql = (f"SELECT {select} FROM (SELECT t.fid FROM {table(layer.id)} t WHERE {where} ORDER BY {order} "
                    f"LIMIT {int(q.limit)} OFFSET {int(q.offset)}) p JOIN {table(layer.id)} t ON t.fid = p.fid "
                    f"ORDER BY {_qualified(order)}")
        with self.pool.connection() as conn:
            try:
                rows = conn.execute(page_sql, params).fetchall()
                if not q.offset and len(rows) < q.limit:
                    matched = len(rows)
                elif where == "TRUE":
                    matched = int(conn.execute("SELECT feature_count FROM gis.layer_meta WHERE layer_id = %s",
                                               (layer.id,)).fetchone()[0])
                else:
                    matched = conn.execute(f"SELECT count(*) FROM {table(layer.id)} t WHERE {where}",
                                           params).fetchone()[0]
            except psycopg.errors.QueryCanceled:
                raise _too_slow() from None
            except psycopg.errors.UndefinedTable:  # no round trip to check first: the table is there or not
                raise _not_built(layer) from None
        return _page(rows, matched)

    def _check_exists(self, conn, layer: LayerDef) -> None:
        if conn.execute("SELECT 1 FROM gis.layer_meta WHERE layer_id = %s", (layer.id,)).fetchone() is None:
            raise _not_built(layer)

    def get(self, layer: LayerDef, fid: int, masked: dict[str, str] | None = None) -> FeaturePage:
        select = _select(layer, tuple(f.name for f in layer.fields), tuple(sorted((masked or {}).items())))
        with self.pool.connection() as conn:
            try:
                rows = conn.execute(f"SELECT {select} FROM {table(layer.id)} t WHERE t.fid = %s", (fid,)).fetchall()
            except psycopg.errors.UndefinedTable:
                raise _not_built(layer) from None
        return _page(rows, len(rows))

    def read_frame(self, layer: LayerDef) -> gpd.GeoDataFrame:
        """The whole layer as a GeoDataFrame indexed by fid, in EPSG:4490, clear values."""
        names = [f.name for f in layer.fields]
        cols = ", ".join(f't."{n}"' for n in names)
        with self.pool.connection() as conn:
            self._check_exists(conn, layer)
            with conn.cursor(binary=True) as cur:
                rows = cur.execute(f"SELECT t.fid, ST_AsBinary(t.geom){', ' + cols if cols else ''} "
                                   f"FROM {table(layer.id)} t ORDER BY t.fid").fetchall()
        columns = list(zip(*rows)) if rows else [[] for _ in range(len(names) + 2)]
        index = pd.Index(list(columns[0]), name="fid", dtype="int64")
        data = {}
        for f, values in zip(layer.fields, columns[2:]):
            data[f.name] = _frame_column(f.type, pd.Series(list(values), dtype=object, index=index))
        geoms = shapely.from_wkb([bytes(b) for b in columns[1]]) if rows else np.empty(0, dtype=object)
        frame = gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(geoms, crs=STORAGE_CRS, index=index), index=index)
        return frame

    def scan_chunks(self, layer: LayerDef, bbox=None, columns=(), masked=None, geometry: bool = True,
                    min_size: tuple[float, float] | None = None, exact: bool = False, chunk: int = 100_000,
                    limit: int | None = None):
        """store.scan's bulk read done in the database: fids, envelopes (exact doubles), WKB if asked and
        plain values (personal fields masked in SQL, booleans as 0/1), streamed from a server-side cursor
        through the GiST index, in chunks of at most ``chunk`` features (at most limit + 1 in all, if given)."""
        from .scan import Scan

        masked = masked or {}
        exprs = []
        for c in columns:
            value = _value_sql(c, masked)
            exprs.append(f"({value})::int" if layer.field(c).type == "boolean" else value)
        select = ["t.fid", "ST_XMin(t.geom)", "ST_YMin(t.geom)", "ST_XMax(t.geom)", "ST_YMax(t.geom)"]
        select += (["ST_AsBinary(t.geom)"] if geometry else []) + exprs
        where, params = _scan_where(bbox, min_size)
        sql = f"SELECT {', '.join(select)} FROM {table(layer.id)} t WHERE {where}"
        if limit is not None:  # one more than the caller accepts: enough to know it is too many
            sql += f" LIMIT {int(limit) + 1}"
        first = 6 if geometry else 5
        with self.pool.connection() as conn:
            self._check_exists(conn, layer)
            try:  # the statement timeout, at the execute or at any fetch: a 400, not a psycopg error (500)
                with conn.transaction(), conn.cursor(name="gis_scan") as cur:
                    cur.itersize = chunk
                    cur.execute(sql, params)
                    while rows := cur.fetchmany(chunk):
                        cols = list(zip(*rows))
                        yield Scan(np.asarray(cols[0], dtype=np.int64),
                                   np.column_stack(cols[1:5]).astype(np.float64),
                                   [bytes(b) for b in cols[5]] if geometry else None,
                                   {c: list(v) for c, v in zip(columns, cols[first:])})
            except psycopg.errors.QueryCanceled:
                raise _too_slow() from None

    def mvt(self, layer: LayerDef, tile: tuple[int, int, int], bbox, columns=(), masked=None,
            min_size: tuple[float, float] | None = None, limit: int | None = None, *, extent: int, buffer: int,
            simplify: tuple[int, float]) -> tuple[bytes, int] | None:
        """One Mapbox vector tile (one layer, named after the layer) computed by PostGIS in one statement (the
        WebMercatorQuad tile (z, x, y) of ST_TileEnvelope; ST_AsMVTGeom, ST_AsMVT): the features scan_chunks
        would read for bbox and min_size, their fids as feature ids, the columns as properties (personal
        fields masked in SQL; booleans as booleans), geometries clipped to buffer units around the extent and
        — those with more than simplify[0] vertices after clipping — simplified by simplify[1] units
        (Douglas–Peucker preserving topology), as the Python encoder does. Returns (bytes, features drawn),
        (b"", 0) for an empty tile, or None when more than limit features meet the tile (nothing encoded)."""
        sql = _mvt_sql(layer, tuple(columns), tuple(sorted((masked or {}).items())), min_size is not None,
                       limit, extent, buffer, simplify[0])
        where_params = _scan_where(bbox, min_size)[1]
        z, x, y = (Int4(v) for v in tile)  # one parameter type whatever the value: one prepared statement
        with self.pool.connection() as conn, conn.cursor(binary=True) as cur:
            try:
                matched, data, count = cur.execute(sql, [z, x, y, float(simplify[1])] + where_params).fetchone()
            except psycopg.errors.UndefinedTable:
                raise _not_built(layer) from None
            except psycopg.errors.QueryCanceled:  # the statement timeout: a 4xx as for a tile too dense
                raise GisError("tile_too_slow", "该瓦片在数据库中计算超时，请放大地图",
                               "this tile takes too long to compute in the database: zoom in", 422) from None
        if limit is not None and matched > limit:
            return None
        return (bytes(data) if count else b""), int(count)

    # --- filtering -----------------------------------------------------------------------------------
    def _where(self, layer: LayerDef, q: FeatureQuery) -> tuple[str, list]:
        clauses: list[str] = []
        params: list = []
        if q.bbox is not None:
            clauses.append(f"ST_Intersects(t.geom, ST_MakeEnvelope(%s, %s, %s, %s, {SRID}))")
            params += [float(v) for v in q.bbox]
        if q.intersects is not None:
            clauses.append(_spatial_sql("intersects", q.intersects, params))
        for name, value in q.equals.items():
            clauses.append(f'"{name}" = %s')
            params.append(bool(value) if layer.field(name).type == "boolean" else value)
        if q.datetime is not None:
            more, values = temporal.interval_clauses(layer.time_field, q.datetime, "%s")
            clauses += more
            params += values
        if q.cql is not None:
            translator = cql2.Translator(
                {f.name: f.type for f in layer.fields}, {GEOM_COLUMN, "geometry"},
                lambda predicate, geom: _spatial_sql(predicate, geom, translator.params),
                q.cql_to_storage or (lambda g: g), dialect=cql2.POSTGRES)
            clauses.append(translator.translate(q.cql))
            params += translator.params
        return (" AND ".join(clauses) if clauses else "TRUE"), params

    # --- writing -------------------------------------------------------------------------------------
    def write(self, layer: LayerDef, frame: gpd.GeoDataFrame, origin: str) -> int:
        """Validate a frame against the layer definition and replace the layer's data atomically."""
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}")
        clean = conform(layer, frame)
        fids = np.arange(1, len(clean) + 1, dtype=np.int64)
        with self.pool.connection() as conn:
            load_layer(conn, layer, clean, fids, origin)
        return len(clean)


def _spatial_sql(predicate: str, geom, params: list) -> str:
    """'feature PRED literal' in PostGIS, the literal bound as WKB in EPSG:4490; the GiST index is used."""
    params.append(shapely.to_wkb(geom))
    literal = f"ST_GeomFromWKB(%s, {SRID})"
    if predicate == "disjoint":
        return f"(NOT ST_Intersects(t.geom, {literal}))"
    return f"{_PREDICATES[predicate]}(t.geom, {literal})"


def _frame_column(ftype: str, series: pd.Series) -> pd.Series:
    """The dtypes GDAL gives the embedded store's frames: str, int64 (float64 with nulls), float64, bool
    (object with nulls), so that domain code sees the same frame from either store."""
    nulls = series.isna().any()
    if ftype == "integer":
        return series.astype("float64" if nulls else "int64")
    if ftype == "real":
        return series.astype("float64")
    if ftype == "boolean":
        return series if nulls else series.astype(bool)
    return series.astype("str")


def _value_sql(name: str, masked: dict[str, str]) -> str:
    """A field of t as read by a caller: masked in SQL (privacy.mask_sql) when the field is in masked."""
    value = f't."{name}"'
    return mask_sql(masked[name], value, dialect="postgres") if name in masked else value


def _scan_where(bbox, min_size) -> tuple[str, list]:
    """Envelope meets bbox (the GiST index) and, with min_size, is at least that wide or that high."""
    where, params = [], []
    if bbox is not None:
        where.append(f"t.geom && ST_MakeEnvelope(%s, %s, %s, %s, {SRID})")
        params += [float(v) for v in bbox]
    if min_size is not None:
        where.append("(ST_XMax(t.geom) - ST_XMin(t.geom) >= %s OR ST_YMax(t.geom) - ST_YMin(t.geom) >= %s)")
        params += [float(v) for v in min_size]
    return (" AND ".join(where) or "TRUE"), params


@lru_cache(maxsize=256)
def _mvt_sql(layer: LayerDef, columns: tuple[str, ...], masked: tuple[tuple[str, str], ...], min_size: bool,
             limit: int | None, extent: int, buffer: int, simplify_above: int) -> str:
    """The tile statement (one text per layer, fields and masking: psycopg prepares it once per connection).
    Parameters: z, x, y, the simplification tolerance in tile units, then _scan_where's.

    ``hit``: the features the Python path would scan (at most limit + 1); the tile is encoded only when there
    are at most limit of them. Per feature, in EPSG:3857: geometries with more than simplify_above vertices
    or reaching beyond the buffered tile are clipped to it (ST_ClipByBox2D, GEOS's clip by rectangle, as
    shapely.clip_by_rect), then simplified if still over simplify_above vertices (ST_SimplifyPreserveTopology,
    GEOS's TopologyPreservingSimplifier, as shapely.simplify); ST_AsMVTGeom then places them in tile units.
    The two OFFSET 0 keep PostgreSQL from inlining the subqueries, which computed ST_Transform three times and
    ST_AsMVTGeom twice per feature (a z14 tile of 1 700 plots: 25 ms, 15 ms with them)."""
    kinds = dict(masked)
    values = "".join(f', {_value_sql(name, kinds)} AS "{name}"' for name in columns)
    props = "".join(f', h."{name}"' for name in columns)
    where = _scan_where((0, 0, 0, 0), (0, 0) if min_size else None)[0]
    cap = f" LIMIT {int(limit) + 1}" if limit is not None else ""
    gate = f"WHERE (SELECT count(*) FROM hit) <= {int(limit)}" if limit is not None else ""
    return (
        f"WITH e AS MATERIALIZED (SELECT ST_TileEnvelope(%s, %s, %s) AS env), "
        f"b AS MATERIALIZED (SELECT e.env, ST_Expand(e.env, (ST_XMax(e.env) - ST_XMin(e.env)) * {buffer} / {extent}) "
        f"AS clip, (ST_XMax(e.env) - ST_XMin(e.env)) * %s / {extent} AS tol FROM e), "
        f"hit AS MATERIALIZED (SELECT t.fid, t.geom{values} FROM {table(layer.id)} t WHERE {where}{cap}) "
        f"SELECT (SELECT count(*) FROM hit), "
        f"ST_AsMVT(f, {_literal(layer.id)}, {extent}, 'geom', 'fid'), count(*) FROM ("
        f"SELECT h.fid, ST_AsMVTGeom(CASE WHEN ST_NPoints(p.g) > {simplify_above} OR NOT p.g @ b.clip THEN "
        f"(SELECT CASE WHEN ST_NPoints(c) > {simplify_above} THEN ST_SimplifyPreserveTopology(c, b.tol) ELSE c END "
        f"FROM ST_ClipByBox2D(p.g, b.clip) c) ELSE p.g END, b.env, {extent}, {buffer}, true) AS geom{props} "
        f"FROM b, hit h CROSS JOIN LATERAL (SELECT ST_Transform(h.geom, 3857) AS g OFFSET 0) p {gate} OFFSET 0) f "
        f"WHERE f.geom IS NOT NULL")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@lru_cache(maxsize=256)
def _select(layer: LayerDef, columns: tuple[str, ...], masked: tuple[tuple[str, str], ...]) -> str:
    """fid, ISO WKB, GeoJSON geometry text and the properties as one JSON object built by PostgreSQL."""
    kinds = dict(masked)
    values = [f'{_value_sql(name, kinds)} AS "{name}"' for name in columns]
    props = f"(SELECT row_to_json(p)::text FROM (SELECT {', '.join(values)}) p)" if values else "'{}'"
    return f"t.fid, ST_AsBinary(t.geom), t.geojson, {props}"


def _qualified(order: str) -> str:
    return ", ".join(f"t.{part.strip()}" for part in order.split(","))


def _page(rows: list, matched: int) -> FeaturePage:
    if not rows:
        return FeaturePage([], [], [], [], matched)
    fids, blobs, geometry, props = (list(c) for c in zip(*rows))
    return FeaturePage(fids, [bytes(b) for b in blobs], geometry, props, matched)


# --- loading ---------------------------------------------------------------------------------------------
def geojson_texts(geoms: np.ndarray) -> list[str]:
    """GeoJSON geometries rounded to 1e-7° — the very text the embedded store keeps."""
    rounded = shapely.transform(np.asarray(geoms), lambda c: np.round(c, GEOJSON_DECIMALS))
    return shapely.to_geojson(rounded).tolist()


def load_layer(conn: psycopg.Connection, layer: LayerDef, frame: gpd.GeoDataFrame, fids: np.ndarray, origin: str,
               progress=None, chunk: int = 50_000) -> None:
    """Load a conformed frame (EPSG:4490) into a new table with COPY, index it, and swap it in with the
    metadata in one transaction. progress(n) is called after every chunk of n rows."""
    with conn.transaction():
        version = conn.execute("SELECT nextval('gis.layer_version')").fetchone()[0]
    new = f"{layer.id}__v{version}"
    field_sql = "".join(f', "{f.name}" {_PG_TYPES[f.type]}' for f in layer.fields)
    names = [f.name for f in layer.fields]
    # Held while the new table is being filled: drop_unused (db init/load on another machine) leaves it alone.
    conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (_LOADING + new,))
    try:
        conn.execute(f'CREATE TABLE {SCHEMA}."{new}" (fid bigint NOT NULL{field_sql}, '
                     f"geom geometry({layer.geometry}, {SRID}) NOT NULL, geojson text NOT NULL)")
        columns = ", ".join(["fid"] + [f'"{n}"' for n in names] + ["geom", "geojson"])
        geoms = np.asarray(frame.geometry.values)
        value_columns = [_copy_values(layer.field(n).type, frame[n]) for n in names]
        with conn.cursor() as cur:
            for start in range(0, len(frame), chunk):
                stop = min(start + chunk, len(frame))
                part = geoms[start:stop]
                wkb = shapely.to_wkb(shapely.set_srid(part, SRID), hex=True, include_srid=True)
                texts = geojson_texts(part)
                with cur.copy(f'COPY {SCHEMA}."{new}" ({columns}) FROM STDIN') as copy:
                    for i in range(start, stop):
                        copy.write_row([int(fids[i])] + [v[i] for v in value_columns]
                                       + [wkb[i - start], texts[i - start]])
                if progress is not None:
                    progress(stop - start)
        conn.execute(f'ALTER TABLE {SCHEMA}."{new}" ADD CONSTRAINT "{new}_pkey" PRIMARY KEY (fid)')
        conn.execute(f'CREATE INDEX "{new}_geom" ON {SCHEMA}."{new}" USING gist (geom)')
        for name in layer.indexes:  # (field, fid): the order of a sorted page, read from the index
            conn.execute(f'CREATE INDEX "{new}_{name}" ON {SCHEMA}."{new}" ("{name}", fid)')
        conn.execute(f'ANALYZE {SCHEMA}."{new}"')
        extent = shapely.total_bounds(geoms).tolist() if len(frame) else None
        times = (None, None)
        if layer.time_field:
            present = frame[layer.time_field].dropna()
            if len(present):
                times = (str(present.min()), str(present.max()))
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('gis.layer:' || %s))", (layer.id,))
            conn.execute(f"DROP TABLE IF EXISTS {table(layer.id)}")
            conn.execute(f'ALTER TABLE {SCHEMA}."{new}" RENAME TO "{layer.id}"')
            conn.execute(
                "INSERT INTO gis.layer_meta (layer_id, origin, version, feature_count, extent, time_min, time_max, "
                "written_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (layer_id) DO UPDATE SET "
                "origin = EXCLUDED.origin, version = EXCLUDED.version, feature_count = EXCLUDED.feature_count, "
                "extent = EXCLUDED.extent, time_min = EXCLUDED.time_min, time_max = EXCLUDED.time_max, "
                "written_at = EXCLUDED.written_at",
                (layer.id, origin, version, len(frame), extent, times[0], times[1], dt.datetime.now(dt.timezone.utc)))
    except BaseException:
        conn.execute(f'DROP TABLE IF EXISTS {SCHEMA}."{new}"')
        raise
    finally:
        try:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (_LOADING + new,))
        except psycopg.Error:  # the session is gone, and its lock with it
            pass


def _copy_values(ftype: str, series: pd.Series) -> list:
    """Python values COPY can write for a field: None for missing, bool for booleans."""
    values = series.astype(object).where(series.notna(), None).tolist()
    if ftype == "boolean":
        return [None if v is None else bool(v) for v in values]
    if ftype == "integer":
        return [None if v is None else int(v) for v in values]
    if ftype == "real":
        return [None if v is None else float(v) for v in values]
    return [None if v is None else str(v) for v in values]


def drop_unused(conn: psycopg.Connection) -> None:
    """Tables of interrupted loads (``<id>__v<n>`` not swapped in) are dropped; one being filled by a load
    still running (its advisory lock held, on this machine or another) is left alone."""
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE '%%\\_\\_v%%'",
                        (SCHEMA,)).fetchall()
    for (name,) in rows:
        if not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (_LOADING + name,)).fetchone()[0]:
            continue
        try:
            conn.execute(pgsql.SQL("DROP TABLE IF EXISTS {}.{}").format(pgsql.Identifier(SCHEMA),
                                                                        pgsql.Identifier(name)))
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (_LOADING + name,))
