"""``gis-service db init | migrate | load | status``: the PostgreSQL store's schema and data.

``db load`` copies every vector layer the embedded store holds (the GeoPackage files under the layers
directory) into the database with COPY, in chunks with a progress bar, and indexes each table (GiST on the
geometry) before swapping it in; ``db load --build`` instead generates the layers straight into the
database (``build-layers`` with the PostGIS store). Rasters stay files. The local rule overrides
(``var/rules.local.toml``) are copied too, so every instance starts with the same values.
"""

from __future__ import annotations

import time

import psycopg
from tqdm import tqdm

from ..catalog import Catalog
from .gpkg import GeoPackageStore
from .pgschema import LATEST, MIGRATIONS, applied, migrate
from .postgis import PostGISStore, drop_unused, load_layer


def init(url: str) -> list[int]:
    """Create the schema (every migration) in an empty or partly migrated database."""
    with psycopg.connect(url, autocommit=True) as conn:
        done = migrate(conn)
        drop_unused(conn)
    return done


def status(url: str) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        versions = applied(conn)
        layers = conn.execute("SELECT layer_id, origin, feature_count FROM gis.layer_meta ORDER BY layer_id"
                              ).fetchall() if versions else []
    return {"applied": versions, "latest": LATEST,
            "pending": [v for v, _, _ in MIGRATIONS if v not in versions], "layers": layers}


def load(url: str, catalog: Catalog, source: GeoPackageStore | None = None, only: list[str] | None = None,
         progress: bool = True, rules_file=None) -> dict[str, int]:
    """Copy the embedded store's vector layers into the database; returns {layer id: features}."""
    source = source or GeoPackageStore()
    layers = [layer for layer in catalog if not layer.is_raster and source.exists(layer)
              and (only is None or layer.id in only)]
    missing = sorted(set(only or ()) - {layer.id for layer in layers})
    if missing:
        raise ValueError(f"no vector layer data for: {', '.join(missing)}")
    init(url)
    total = sum(source.count(layer) for layer in layers)
    loaded: dict[str, int] = {}
    bar = tqdm(total=total, desc="载入数据库 loading into PostgreSQL", unit="要素", unit_scale=True,
               disable=not progress)
    with psycopg.connect(url, autocommit=True) as conn:
        for layer in layers:
            bar.set_postfix_str(layer.id)
            frame = source.read_frame(layer)
            load_layer(conn, layer, frame, frame.index.to_numpy(), source.origin(layer) or "imported",
                       progress=bar.update)
            loaded[layer.id] = len(frame)
    bar.close()
    if rules_file is not None and rules_file.exists():
        from .pgplatform import set_rules_override

        set_rules_override(url, rules_file.read_text(encoding="utf-8"))
    return loaded


def build(url: str, catalog: Catalog, plots: int | None = None) -> list[str]:
    """Generate the missing layers straight into the database (as build-layers does for the files)."""
    from ..build import build_layers

    init(url)
    store = PostGISStore(url)
    return build_layers(catalog, store, **({} if plots is None else {"plots": plots}))


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start
