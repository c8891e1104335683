"""Bulk reads for derived products such as vector tiles: plain column values and R-tree envelopes, no JSON.

A tile needs every feature in a box (no paging, no GeoJSON text, no JSON objects per row), and a zoomed-out
tile only the features at least a pixel wide. For the GeoPackage store both come straight from the R-tree
joined to the layer table; personal fields are masked in SQL (privacy.mask_sql) like every other read, so
clear values never leave the store for a caller not entitled. Other stores get the generic path through
``Store.query``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from ..catalog import LayerDef
from ..privacy import mask_sql
from .base import FeatureQuery, Store
from .gpkg import GEOM_COLUMN, GeoPackageStore, gpkg_to_wkb

CHUNK = 100_000  # rows converted to arrays at a time: memory stays bounded over two million features


@dataclass
class Scan:
    fids: np.ndarray  # int64
    envelopes: np.ndarray  # (n, 4) minx, miny, maxx, maxy in lon/lat (EPSG:4490)
    wkb: list[bytes] | None  # ISO WKB in lon/lat, when asked for
    values: dict[str, list]  # column -> values (masked where asked; booleans as stored, 0/1)

    def __len__(self) -> int:
        return len(self.fids)


def scan_chunks(store: Store, layer: LayerDef, bbox=None, columns=(), masked=None, geometry: bool = True,
                min_size: tuple[float, float] | None = None, exact: bool = False, limit: int | None = None):
    """Scans of at most CHUNK features whose envelope meets bbox (lon/lat; None: the whole layer) and, if
    min_size = (width, height) is given, whose envelope is at least that wide or that high (the embedded store
    and PostGIS read at most limit + 1 of them when limit is given; other stores are stopped by scan).

    Envelopes come from the R-tree (32-bit floats rounded outwards, so up to about a metre too large) unless
    exact: then from the GeoPackage geometry header (doubles) without decoding the geometry."""
    masked = masked or {}
    if hasattr(store, "scan_chunks"):  # a store that scans in its database (store.postgis)
        yield from store.scan_chunks(layer, bbox, columns, masked, geometry, min_size, exact, limit=limit)
        return
    if not isinstance(store, GeoPackageStore):  # pages of CHUNK through Store.query, in fid order
        offset = 0
        while True:
            part, got = _generic(store, layer, bbox, columns, masked, geometry, min_size, offset)
            yield part
            offset += CHUNK
            if got < CHUNK:
                return
    exprs = [mask_sql(masked[c], f't."{c}"') if c in masked else f't."{c}"' for c in columns]
    env_cols = [] if exact else ["r.minx", "r.miny", "r.maxx", "r.maxy"]
    # exact without the geometry: the header, its envelope, and a point's coordinates when it has no envelope
    geom_cols = [f"t.{GEOM_COLUMN}"] if geometry else [f"substr(t.{GEOM_COLUMN}, 1, {_HEAD})"] if exact else []
    where, params = [], []
    if bbox is not None:
        x0, y0, x1, y1 = bbox
        where.append("r.minx <= ? AND r.maxx >= ? AND r.miny <= ? AND r.maxy >= ?")
        params += [x1, x0, y1, y0]
    if min_size is not None:
        where.append("(r.maxx - r.minx >= ? OR r.maxy - r.miny >= ?)")
        params += list(min_size)
    rtree = f'"rtree_{layer.id}_{GEOM_COLUMN}" r JOIN ' if where or env_cols else ""  # else a plain table scan
    sql = (f'SELECT {", ".join(["t.fid"] + env_cols + geom_cols + exprs)} FROM {rtree}"{layer.id}" t '
           f'{"ON t.fid = r.id " if rtree else ""}WHERE {" AND ".join(where) or "1"}')
    if limit is not None:  # one more than the caller accepts: enough to know it is too many
        sql += f" LIMIT {int(limit) + 1}"
    g = 1 + len(env_cols)
    first = g + len(geom_cols)
    with store._file(layer).reader() as conn:
        cursor = conn.execute(sql, params)
        while rows := cursor.fetchmany(CHUNK):
            cols = list(zip(*rows))
            if exact:
                envelopes, rest = _exact_envelopes(cols[g])
                if len(rest):  # no envelope in the header (not written by GDAL): decode those geometries
                    blobs = [cols[g][i] for i in rest] if geometry else [conn.execute(
                        f'SELECT {GEOM_COLUMN} FROM "{layer.id}" WHERE fid = ?', (cols[0][i],)).fetchone()[0]
                        for i in rest]
                    envelopes[rest] = shapely.bounds(shapely.from_wkb([gpkg_to_wkb(b) for b in blobs]))
            else:
                envelopes = np.column_stack(cols[1:5]).astype(np.float64)
            yield Scan(np.asarray(cols[0], dtype=np.int64), envelopes,
                       [gpkg_to_wkb(b) for b in cols[g]] if geometry else None,
                       {c: list(v) for c, v in zip(columns, cols[first:])})


_HEAD = 8 + 32 + 21  # GeoPackage header with an xy envelope, or without one followed by a WKB point


def _exact_envelopes(blobs) -> tuple[np.ndarray, np.ndarray]:
    """(n, 4) minx, miny, maxx, maxy from GeoPackage geometry headers — the envelope when the header has one (GDAL
    writes one for everything but points), a point's own coordinates otherwise — and the rows with neither."""
    heads = np.frombuffer(b"".join(bytes(b[:_HEAD]).ljust(_HEAD, b"\0") for b in blobs), np.uint8).reshape(-1, _HEAD)
    flags = heads[:, 3]
    kind = (flags >> 1) & 0x07
    little = (flags & 1) == 1
    out = np.empty((len(heads), 4))
    env = np.ascontiguousarray(heads[:, 8:40]).view("<f8")  # minx, maxx, miny, maxy
    has = (kind >= 1) & (kind <= 4) & little
    out[has] = env[has][:, [0, 2, 1, 3]]
    point_type = np.ascontiguousarray(heads[:, 9:13]).view("<u4")[:, 0]
    point = (kind == 0) & (heads[:, 8] == 1) & (point_type == 1)  # little-endian WKB Point
    xy = np.ascontiguousarray(heads[:, 13:29]).view("<f8")
    out[point] = np.column_stack([xy[point][:, 0], xy[point][:, 1], xy[point][:, 0], xy[point][:, 1]])
    return out, np.flatnonzero(~has & ~point)


def scan(store: Store, layer: LayerDef, bbox=None, columns=(), masked=None, geometry: bool = True,
         min_size: tuple[float, float] | None = None, exact: bool = False, limit: int | None = None) -> Scan:
    """All of scan_chunks in one Scan (for a tile's worth of features); with limit, reading stops once more
    than limit features have been read (the caller sees len > limit and refuses)."""
    parts, read = [], 0
    for part in scan_chunks(store, layer, bbox, columns, masked, geometry, min_size, exact, limit):
        parts.append(part)
        read += len(part)
        if limit is not None and read > limit:
            break
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return Scan(np.empty(0, np.int64), np.empty((0, 4)), [] if geometry else None, {c: [] for c in columns})
    return Scan(np.concatenate([p.fids for p in parts]), np.concatenate([p.envelopes for p in parts]),
                [w for p in parts for w in p.wkb] if geometry else None,
                {c: [v for p in parts for v in p.values[c]] for c in columns})


def _generic(store: Store, layer: LayerDef, bbox, columns, masked, geometry: bool, min_size,
             offset: int) -> tuple[Scan, int]:
    page = store.query(layer, FeatureQuery(bbox=bbox, columns=list(columns), masked=dict(masked), limit=CHUNK,
                                           offset=offset))
    geoms = page.geometries
    env = shapely.bounds(geoms).reshape(-1, 4) if len(geoms) else np.empty((0, 4))
    keep = np.ones(len(env), bool)
    if min_size is not None:
        keep = (env[:, 2] - env[:, 0] >= min_size[0]) | (env[:, 3] - env[:, 1] >= min_size[1])
    rows = page.properties
    boolean = {c for c in columns if layer.field(c).type == "boolean"}
    values = {c: [(int(r.get(c)) if c in boolean and r.get(c) is not None else r.get(c))
                  for r, k in zip(rows, keep) if k] for c in columns}
    return Scan(np.asarray(page.fids, np.int64)[keep], env[keep],
                [w for w, k in zip(page.geometry_wkb, keep) if k] if geometry else None, values), len(page.fids)
