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
                min_size: tuple[float, float] | None = None):
    """Scans of at most CHUNK features whose envelope meets bbox (lon/lat; None: the whole layer) and, if
    min_size = (width, height) is given, whose envelope is at least that wide or that high."""
    masked = masked or {}
    if not isinstance(store, GeoPackageStore):
        yield _generic(store, layer, bbox, columns, masked, geometry, min_size)
        return
    exprs = [mask_sql(masked[c], f't."{c}"') if c in masked else f't."{c}"' for c in columns]
    select = ", ".join(["r.id", "r.minx", "r.miny", "r.maxx", "r.maxy"] + ([f"t.{GEOM_COLUMN}"] if geometry else [])
                       + exprs)
    where, params = [], []
    if bbox is not None:
        x0, y0, x1, y1 = bbox
        where.append("r.minx <= ? AND r.maxx >= ? AND r.miny <= ? AND r.maxy >= ?")
        params += [x1, x0, y1, y0]
    if min_size is not None:
        where.append("(r.maxx - r.minx >= ? OR r.maxy - r.miny >= ?)")
        params += list(min_size)
    sql = (f'SELECT {select} FROM "rtree_{layer.id}_{GEOM_COLUMN}" r JOIN "{layer.id}" t ON t.fid = r.id '
           f"WHERE {' AND '.join(where) or '1'}")
    first = 6 if geometry else 5
    with store._file(layer).reader() as conn:
        cursor = conn.execute(sql, params)
        while rows := cursor.fetchmany(CHUNK):
            cols = list(zip(*rows))
            yield Scan(np.asarray(cols[0], dtype=np.int64), np.column_stack(cols[1:5]).astype(np.float64),
                       [gpkg_to_wkb(b) for b in cols[5]] if geometry else None,
                       {c: list(v) for c, v in zip(columns, cols[first:])})


def scan(store: Store, layer: LayerDef, bbox=None, columns=(), masked=None, geometry: bool = True,
         min_size: tuple[float, float] | None = None) -> Scan:
    """All of scan_chunks in one Scan (for a tile's worth of features)."""
    parts = list(scan_chunks(store, layer, bbox, columns, masked, geometry, min_size))
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return Scan(np.empty(0, np.int64), np.empty((0, 4)), [] if geometry else None, {c: [] for c in columns})
    return Scan(np.concatenate([p.fids for p in parts]), np.concatenate([p.envelopes for p in parts]),
                [w for p in parts for w in p.wkb] if geometry else None,
                {c: [v for p in parts for v in p.values[c]] for c in columns})


def _generic(store: Store, layer: LayerDef, bbox, columns, masked, geometry: bool, min_size) -> Scan:
    count = store.count(layer)
    page = store.query(layer, FeatureQuery(bbox=bbox, columns=list(columns), masked=dict(masked),
                                           limit=max(count, 1)))
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
                [w for w, k in zip(page.geometry_wkb, keep) if k] if geometry else None, values)
