"""Benchmark: vector tiles of 2 000 000 plots (issue #9 §11: a z14 tile p50 under 50 ms, a z10 tile under 200 ms).

Builds the layers with the plots into a copy (var/bench/layers, shared with bench_features.py; or --layers DIR
already built; the shared layers/ directory is never touched), starts `gis-service serve` on it and fetches, one at a time over HTTP:
distinct z14 tiles around random plots (features), z12 and z10 tiles over the plots (aggregated cells), and
the same z14 tiles again (served from the per-process tile cache). Every tile is a cache miss in the first
pass. Also times the numpy encoder against mapbox-vector-tile's encoder on the same z14 geometries.
Prints figures; not part of the test suite.

    python scripts/bench_tiles.py [--plots 2000000] [--tiles 200] [--layers DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_features import build_layers  # noqa: E402  (the same 2 000 000-plot copy of the layers, var/bench)
from benchlib import machine, serve  # noqa: E402

TMS = "WebMercatorQuad"


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2**z
    col = int((lon + 180) / 360 * n)
    row = int((1 - np.log(np.tan(np.radians(lat)) + 1 / np.cos(np.radians(lat))) / np.pi) / 2 * n)
    return col, row


def plot_centres(gpkg: Path, n: int, seed: int = 11) -> list[tuple[float, float]]:
    conn = sqlite3.connect(gpkg)
    top = conn.execute("SELECT max(id) FROM rtree_plots_geom").fetchone()[0]
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        row = conn.execute("SELECT minx, maxx, miny, maxy FROM rtree_plots_geom WHERE id = ?",
                           (rng.randint(1, top),)).fetchone()
        if row:
            out.append(((row[0] + row[1]) / 2, (row[2] + row[3]) / 2))
    return out


def fetch(url: str) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as resp:
        body = resp.read()
        status = resp.status
    return (time.perf_counter() - t0) * 1000, status, len(body)


def run(base: str, tiles: list[tuple[int, int, int]]) -> dict:
    times, sizes, empty = [], [], 0
    for z, col, row in tiles:
        ms, status, size = fetch(f"{base}/ogc/collections/plots/tiles/{TMS}/{z}/{row}/{col}")
        times.append(ms)
        sizes.append(size)
        empty += status == 204
    q = np.percentile(times, [50, 90, 99])
    return {"n": len(times), "p50": q[0], "p90": q[1], "p99": q[2], "max": max(times), "kb": statistics.median(sizes) / 1024,
            "empty": empty}


def rss_mb(pid: int) -> float:
    total = 0.0
    for p in [pid] + [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]:
        with open(f"/proc/{p}/status") as fh:
            total += next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024
    return total


def encoders(layers: Path, centres) -> dict:
    """The numpy encoder and mapbox-vector-tile's on the same z14 tiles (geometries already in tile units)."""
    os.environ["GIS_LAYERS_DIR"] = str(layers)
    import mapbox_vector_tile
    import shapely

    from gis_service import tiles
    from gis_service.catalog import Catalog
    from gis_service.store import GeoPackageStore
    from gis_service.store.scan import scan

    catalog, store = Catalog.load(layers), GeoPackageStore()
    layer = catalog.get("plots")
    columns = tiles.carried_fields(layer)
    ours, theirs, sizes = [], [], []
    for lon, lat in centres:
        col, row = tile_of(lon, lat, 14)
        box = tiles.TileBox(14, col, row)
        found = scan(store, layer, box.lonlat_bounds(tiles.BUFFER), columns, layer.masked_fields(None))
        geoms = shapely.transform(shapely.from_wkb(found.wkb), box.to_units)
        values = {c: found.values[c] for c in columns}
        t0 = time.perf_counter()
        data, _ = tiles.encode_layer("plots", geoms, found.fids, values)
        t1 = time.perf_counter()
        features = [{"geometry": g, "properties": {c: values[c][i] for c in columns if values[c][i] is not None},
                     "id": int(f)} for i, (g, f) in enumerate(zip(geoms, found.fids))]
        other = mapbox_vector_tile.encode([{"name": "plots", "features": features}],
                                          default_options={"y_coord_down": True, "extents": tiles.EXTENT})
        t2 = time.perf_counter()
        ours.append((t1 - t0) * 1000)
        theirs.append((t2 - t1) * 1000)
        sizes.append((len(data), len(other), len(features)))
    return {"ours": statistics.median(ours), "theirs": statistics.median(theirs),
            "features": statistics.median(s[2] for s in sizes), "bytes": (statistics.median(s[0] for s in sizes),
                                                                          statistics.median(s[1] for s in sizes))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plots", type=int, default=2_000_000)
    ap.add_argument("--tiles", type=int, default=200, help="distinct tiles per zoom")
    ap.add_argument("--layers", type=Path, help="an already built layers directory (with the plots)")
    ap.add_argument("--settle", type=float, default=30, help="seconds to wait after the first tile (start-up work)")
    args = ap.parse_args()
    layers = args.layers or build_layers(args.plots)
    gpkg = layers / "land" / "plots.gpkg"
    count = sqlite3.connect(gpkg).execute("SELECT count(*) FROM plots").fetchone()[0]
    centres = plot_centres(gpkg, args.tiles * 3)
    by_zoom = {}
    for z in (14, 12, 10):
        seen = []
        for lon, lat in centres:
            t = (z, *tile_of(lon, lat, z))
            if t not in seen:
                seen.append(t)
        by_zoom[z] = seen[:args.tiles]
    t0 = time.time()
    proc, base, _ = serve("bench-tiles-", GIS_LAYERS_DIR=str(layers))
    startup = time.time() - t0
    try:
        first_ms, _, _ = fetch(f"{base}/ogc/collections/plots/tiles/{TMS}/{by_zoom[10][0][0]}/{by_zoom[10][0][2]}/"
                               f"{by_zoom[10][0][1]}")
        time.sleep(args.settle)
        results = {f"z{z} cells" if z < 14 else "z14 features": run(base, tiles) for z, tiles in by_zoom.items()}
        results["z14 again (cached)"] = run(base, by_zoom[14])
        memory = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(20)
    enc = encoders(layers, centres[:30])
    print(f"machine: {machine()}")
    print(f"plots: {count:,}; one request at a time over HTTP (urllib), distinct tiles per zoom; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} (other work on the machine slows every figure)")
    print(f"server start-up {startup:.1f} s; first z10 tile right after start-up {first_ms:.0f} ms "
          f"(cells built in the background at start-up); server RSS after the run {memory:.0f} MB\n")
    print(f"{'tiles':<22}{'n':>5}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'KB p50':>8}{'204':>6}")
    for name, r in results.items():
        print(f"{name:<22}{r['n']:>5}{r['p50']:>9.1f}{r['p90']:>9.1f}{r['p99']:>9.1f}{r['max']:>9.1f}{r['kb']:>8.1f}"
              f"{r['empty']:>6}")
    print(f"\nencoding one z14 tile ({enc['features']:.0f} plots, geometry in tile units, median of 30): numpy "
          f"{enc['ours']:.1f} ms ({enc['bytes'][0] / 1024:.0f} KB), mapbox-vector-tile {enc['theirs']:.1f} ms "
          f"({enc['bytes'][1] / 1024:.0f} KB)")
    z14, z10 = results["z14 features"], results["z10 cells"]
    print(f"goals: z14 p50 {z14['p50']:.1f} ms (< 50) {'ok' if z14['p50'] < 50 else 'MISSED'}; "
          f"z10 max {z10['max']:.1f} ms (< 200) {'ok' if z10['max'] < 200 else 'MISSED'}")


if __name__ == "__main__":
    main()
