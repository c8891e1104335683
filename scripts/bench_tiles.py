"""Benchmark: vector tiles of 2 000 000 plots (issue #9 §11: a z14 tile p50 under 50 ms, a z10 tile under 200 ms),
on the embedded store and on PostGIS side by side (issue #10), and on PostGIS the two encoders.

Builds the layers with the plots into a copy (var/bench/layers, shared with bench_features.py; or --layers DIR
already built; the shared layers/ directory is never touched), starts `gis-service serve` on it and fetches, one at a time over HTTP:
distinct z14 tiles around random plots (features), z12 and z10 tiles over the plots (aggregated cells), and
the same z14 tiles again (served from the per-process tile cache). Every tile is a cache miss in the first
pass. Also times the numpy encoder against mapbox-vector-tile's encoder on the same z14 geometries.

Then the same on PostGIS: a throwaway cluster (store.pgtemp) loaded with `gis-service db load`'s loader (or
--database-url of a database already loaded), a server on it fetching the same tiles plus z13 cells and
z15–z17 features (the embedded server fetches those too), and in this process, on the same tiles, the
feature tiles of the PostGIS store encoded in Python (scan + numpy encoder) and by PostGIS (ST_AsMVT, what
the server serves), with the embedded store's Python tiles for reference: p50/p95 and size per zoom. z13 is
below the plots' detail_zoom (cells are served there); its feature tiles are timed to show the trend.
Prints figures; not part of the test suite.

    python scripts/bench_tiles.py [--plots 2000000] [--tiles 200] [--layers DIR] [--database-url URL]
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
    q = np.percentile(times, [50, 90, 95, 99])
    return {"n": len(times), "p50": q[0], "p90": q[1], "p95": q[2], "p99": q[3], "max": max(times),
            "kb": statistics.median(sizes) / 1024, "empty": empty}


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


FEATURE_ZOOMS = (13, 14, 15, 16, 17)  # in-process encoders (13: below the plots' detail_zoom, not served)
HTTP_ZOOMS = {"z14 features": 14, "z12 cells": 12, "z10 cells": 10, "z13 cells": 13, "z15 features": 15,
              "z16 features": 16, "z17 features": 17}


def distinct_tiles(centres, z: int, n: int) -> list[tuple[int, int, int]]:
    seen = []
    for lon, lat in centres:
        t = (z, *tile_of(lon, lat, z))
        if t not in seen:
            seen.append(t)
    return seen[:n]


def cpu_seconds(pid: int) -> float:
    """CPU time of the server process and its workers (utime + stime)."""
    total = 0
    for p in [pid] + [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def settle(pid: int, at_least: float, most: float = 600) -> float:
    """Wait at least `at_least` seconds, then until the server is idle (under 5 % of a core for 3 s): its
    start-up work (cell data of the plots, the land domain's index of them) runs in the background, longer
    on PostGIS (two million rows through a cursor), and would be timed with the first tiles. Returns the wait."""
    t0 = time.time()
    time.sleep(at_least)
    while time.time() - t0 < most:
        before = cpu_seconds(pid)
        time.sleep(3)
        if cpu_seconds(pid) - before < 0.15:
            break
    return time.time() - t0


def http_pass(proc_base, by_zoom: dict, warm: dict, at_least: float) -> tuple[dict, float]:
    """The tiles of every row over HTTP (the first z14 tiles again at the end: the cache), and the RSS; first,
    unrecorded, a few other tiles per row (statements prepared, PROJ and the pools set up)."""
    proc, base = proc_base
    try:
        waited = settle(proc.pid, at_least)
        print(f"  server idle after {waited:.0f} s", flush=True)
        for name in HTTP_ZOOMS:
            if warm[name]:
                run(base, warm[name])
        results = {name: run(base, by_zoom[name]) for name in HTTP_ZOOMS}
        results["z14 again (cached)"] = run(base, by_zoom["z14 features"])
        memory = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(20)
    return results, memory


def encoders_by_zoom(layers: Path, url: str, by_zoom: dict, warm: int = 10) -> dict:
    """Per zoom, the same feature tiles (anonymous caller, as the HTTP runs): the embedded store's Python
    tiles, the PostGIS store's tiles encoded in Python and encoded by PostGIS — ms (p50, p95) and KB (p50).
    The first `warm` tiles of each zoom are fetched once unrecorded (statements prepared on the pool's
    connections, PROJ set up)."""
    os.environ["GIS_LAYERS_DIR"] = str(layers)
    from gis_service import tiles
    from gis_service.catalog import Catalog
    from gis_service.ogc import Context
    from gis_service.store import GeoPackageStore
    from gis_service.store.postgis import PostGISStore

    catalog = Catalog.load(layers)
    plots = catalog.get("plots")
    columns, masked = tiles.carried_fields(plots), plots.masked_fields(None)
    pg = PostGISStore(url)
    cases = {"embedded, Python": (GeoPackageStore(), tiles._python_tile),
             "PostGIS, Python": (pg, tiles._python_tile), "PostGIS, ST_AsMVT": (pg, tiles._feature_tile)}
    out: dict = {}
    for z, boxes in by_zoom.items():
        for name, (store, encode) in cases.items():
            ctx = Context(catalog, store, None, None, "")
            times, sizes = [], []
            for i, (_, col, row) in enumerate(boxes):
                t0 = time.perf_counter()
                data, _ = encode(ctx, plots, tiles.TileBox(z, col, row), columns, masked)
                if i >= warm:
                    times.append((time.perf_counter() - t0) * 1000)
                    sizes.append(len(data))
            q = np.percentile(times, [50, 95])
            out[(z, name)] = {"p50": q[0], "p95": q[1], "kb": statistics.median(sizes) / 1024, "n": len(times)}
        print(f"  z{z} " + "   ".join(f"{name} {out[(z, name)]['p50']:.1f} ms" for name in cases), flush=True)
    pg.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plots", type=int, default=2_000_000)
    ap.add_argument("--tiles", type=int, default=200, help="distinct tiles per zoom")
    ap.add_argument("--layers", type=Path, help="an already built layers directory (with the plots)")
    ap.add_argument("--settle", type=float, default=30, help="seconds to wait after the first tile (start-up work)")
    ap.add_argument("--database-url", help="a PostGIS database with the layers loaded (default: a throwaway "
                                           "cluster, loaded here)")
    args = ap.parse_args()
    layers = args.layers or build_layers(args.plots)
    gpkg = layers / "land" / "plots.gpkg"
    count = sqlite3.connect(gpkg).execute("SELECT count(*) FROM plots").fetchone()[0]
    centres = plot_centres(gpkg, args.tiles * 3)
    by_zoom = {name: distinct_tiles(centres, z, args.tiles) for name, z in HTTP_ZOOMS.items()}
    warm = {name: distinct_tiles(centres, z, args.tiles + 10)[len(by_zoom[name]):] for name, z in HTTP_ZOOMS.items()}
    t0 = time.time()
    proc, base, _ = serve("bench-tiles-", GIS_LAYERS_DIR=str(layers))
    startup = time.time() - t0
    first_ms, _, _ = fetch(f"{base}/ogc/collections/plots/tiles/{TMS}/{by_zoom['z10 cells'][0][0]}/"
                           f"{by_zoom['z10 cells'][0][2]}/{by_zoom['z10 cells'][0][1]}")
    results, memory = http_pass((proc, base), by_zoom, warm, args.settle)
    enc = encoders(layers, centres[:30])

    from contextlib import nullcontext

    from gis_service.catalog import Catalog
    from gis_service.store import pgload
    from gis_service.store.pgtemp import TempCluster

    cluster = nullcontext(args.database_url) if args.database_url else TempCluster(
        {"shared_buffers": "1GB", "work_mem": "16MB", "max_parallel_workers_per_gather": "0", "jit": "off"})
    load_s = None
    with cluster as url:
        if not args.database_url:
            t1 = time.perf_counter()
            pgload.load(url, Catalog.load(layers), progress=False)
            load_s = time.perf_counter() - t1
        pg_proc, pg_base, _ = serve("bench-tiles-pg-", GIS_LAYERS_DIR=str(layers), GIS_DATABASE_URL=url)
        pg_results, pg_memory = http_pass((pg_proc, pg_base), by_zoom, warm, args.settle)
        print("in-process feature tiles (one thread):", flush=True)
        encoded = encoders_by_zoom(layers, url, {z: distinct_tiles(centres, z, args.tiles) for z in FEATURE_ZOOMS})

    print(f"machine: {machine()}")
    print(f"plots: {count:,}; one request at a time over HTTP (urllib), distinct tiles per zoom; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} (other work on the machine slows every figure)")
    print(f"server start-up {startup:.1f} s; first z10 tile right after start-up {first_ms:.0f} ms "
          f"(cells built in the background at start-up); server RSS after the run {memory:.0f} MB\n")
    for store, rows in (("embedded", results), ("PostGIS", pg_results)):
        if store == "PostGIS":
            print(f"\nPostGIS store ({'db load ' + format(load_s, '.0f') + ' s; ' if load_s else ''}"
                  f"feature tiles by ST_AsMVT); server RSS after the run {pg_memory:.0f} MB")
        print(f"{'tiles':<22}{'n':>5}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'KB p50':>8}{'204':>6}")
        for name, r in rows.items():
            print(f"{name:<22}{r['n']:>5}{r['p50']:>9.1f}{r['p90']:>9.1f}{r['p99']:>9.1f}{r['max']:>9.1f}"
                  f"{r['kb']:>8.1f}{r['empty']:>6}")
    print(f"\nencoding one z14 tile ({enc['features']:.0f} plots, geometry in tile units, median of 30): numpy "
          f"{enc['ours']:.1f} ms ({enc['bytes'][0] / 1024:.0f} KB), mapbox-vector-tile {enc['theirs']:.1f} ms "
          f"({enc['bytes'][1] / 1024:.0f} KB)")
    z14, z10 = results["z14 features"], results["z10 cells"]
    print(f"goals: z14 p50 {z14['p50']:.1f} ms (< 50) {'ok' if z14['p50'] < 50 else 'MISSED'}; "
          f"z10 max {z10['max']:.1f} ms (< 200) {'ok' if z10['max'] < 200 else 'MISSED'}")

    print(f"\nHTTP side by side (ms, KB p50){'':<8}{'embedded p50':>13}{'p95':>8}{'KB':>7}{'PostGIS p50':>13}{'p95':>8}"
          f"{'KB':>7}")
    for name in results:
        a, b = results[name], pg_results[name]
        print(f"{name:<38}{a['p50']:>13.1f}{a['p95']:>8.1f}{a['kb']:>7.1f}{b['p50']:>13.1f}{b['p95']:>8.1f}{b['kb']:>7.1f}")
    names = ("embedded, Python", "PostGIS, Python", "PostGIS, ST_AsMVT")
    print(f"\nfeature tiles in-process, {encoded[(FEATURE_ZOOMS[0], names[0])]['n']} per zoom (p50 / p95 ms, KB p50)")
    print(f"{'zoom':<6}" + "".join(f"{n:>26}" for n in names) + f"{'Python/ST_AsMVT':>17}")
    for z in FEATURE_ZOOMS:
        cells = [encoded[(z, n)] for n in names]
        print(f"z{z:<5}" + "".join(f"{c['p50']:>9.1f} /{c['p95']:>7.1f} /{c['kb']:>6.0f}" for c in cells)
              + f"{cells[1]['p50'] / cells[2]['p50']:>16.1f}×")


if __name__ == "__main__":
    main()
