"""Benchmark of the canal analyses (issue #6, item 10): all zones built and all villages classified under 1 s;
siting check p50 under 20 ms. Not run by the tests.

Inputs are the repository's layers (built by `gis-service build-layers`) and the rules in force; the check
geometries are drawn with a fixed seed around the canal channels (points, 100–500 m squares and lines).
Zones and villages are timed from the layer frames with no cache (a cold analysis); the check is timed in
process (CanalService.check: GeoJSON parsing, coordinate conversion, validation, verdict, serialisation)
and over HTTP against a live `gis-service serve` (one uvicorn worker, sequential requests).

    .venv/bin/python scripts/bench_canal.py [--runs 20] [--checks 500]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import shapely

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchlib import machine, serve  # noqa: E402
from gis_service import crs  # noqa: E402
from gis_service.api.app import create_app  # noqa: E402
from gis_service.canal import analysis  # noqa: E402
from gis_service.canal.service import CanalService, zone_specs  # noqa: E402


def timed(fn, runs: int, warmup: int = 2) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return np.array(out) * 1000


def geometries(svc: CanalService, n: int, seed: int = 6) -> list[dict]:
    """Points, squares and lines within 3 km of the channels and inside the city, in WGS84 GeoJSON."""
    rng = np.random.default_rng(seed)
    channel = shapely.union_all([b.geometry for b in svc.baselines()])
    city = svc.city()[0]
    x0, y0, x1, y1 = shapely.bounds(shapely.buffer(channel, 3_000))
    out = []
    while len(out) < n:
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        if shapely.distance(channel, shapely.Point(x, y)) > 3_000 or not city.contains(shapely.Point(x, y)):
            continue
        size = rng.uniform(100, 500)
        kind = len(out) % 3
        if kind == 0:
            g = shapely.Point(x, y)
        elif kind == 1:
            g = shapely.box(x, y, x + size, y + size)
        else:
            g = shapely.LineString([(x, y), (x + size, y + size / 2), (x + 2 * size, y)])
        lonlat = crs.transform_geometry(g, crs.METRIC_CRS, crs.STORAGE_CRS)
        out.append(shapely.geometry.mapping(lonlat))
    return [{"type": g["type"], "coordinates": np.asarray(g["coordinates"]).tolist()} for g in out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--checks", type=int, default=500)
    parser.add_argument("--no-http", action="store_true")
    args = parser.parse_args()

    ctx = create_app().state.services.domain_contexts["canal"]
    svc = CanalService(ctx)
    rules = ctx.rules
    channels, city, counties = ctx.frame("canal_channels"), ctx.frame("city_boundary"), ctx.frame("counties")
    neighbours, villages = ctx.frame("neighbor_counties"), ctx.frame("villages")
    boundaries = ctx.frame("river_boundaries") if svc.has("river_boundaries") else None
    rivers, within = list(rules.value("canal_rivers")), rules.value("village_remediation_distance_m")

    def zones_and_villages():
        base = analysis.baselines(channels, rivers, boundaries)
        analysis.zones(base, zone_specs(rules), city, counties, neighbours)
        analysis.villages_within(base, villages, within)

    base = analysis.baselines(channels, rivers, boundaries)
    rows = [
        ("全部分区 zones (3 kinds × rivers × banks × counties)",
         timed(lambda: analysis.zones(analysis.baselines(channels, rivers, boundaries), zone_specs(rules), city,
                                      counties, neighbours), args.runs), "< 1000 (with villages)"),
        (f"全部村庄分类 villages ({len(villages)}) within {within:g} m",
         timed(lambda: analysis.villages_within(base, villages, within), args.runs), ""),
        ("分区 + 村庄 zones + villages", timed(zones_and_villages, args.runs), "< 1000"),
    ]
    if svc.has("green_corridors"):
        corridors = ctx.frame("green_corridors")
        rows.append(("绿廊宽度量测 green-belt stations", timed(lambda: analysis.corridor_widths(
            [b for b in base if b.river in rules.value("green_corridor_rivers")], corridors, counties,
            rules.value("green_belt_station_spacing_m"), rules.value("green_belt_probe_length_m"),
            rules.value("green_corridor_min_width_m")), max(3, args.runs // 4)), ""))
    svc.prepared()  # built once per data version, as in the server
    shapes = geometries(svc, args.checks)
    it = iter(range(10 ** 9))
    rows.append((f"选址审查 check, in process ({len(shapes)} geometries)",
                 timed(lambda: svc.check(shapes[next(it) % len(shapes)], "wgs84", None), len(shapes), warmup=20),
                 "p50 < 20"))
    if not args.no_http:
        proc, url, var = serve("bench-canal-")
        try:
            with httpx.Client(timeout=30) as client:
                it2 = iter(range(10 ** 9))

                def post():
                    r = client.post(url + "/api/canal/check", json={"geometry": shapes[next(it2) % len(shapes)]})
                    r.raise_for_status()
                rows.append(("选址审查 check, HTTP POST /api/canal/check", timed(post, len(shapes), warmup=20), "p50 < 20"))
        finally:
            proc.terminate()
            proc.wait(10)

    print(f"\nMachine: {machine()}")
    print(f"Layers: {len(channels)} channel pieces, {len(villages)} villages; rules: {', '.join(rivers)}\n")
    print(f"| {'measurement':<58} | {'runs':>5} | {'p50 ms':>8} | {'p99 ms':>8} | {'max ms':>8} | goal |")
    print(f"|{'-' * 60}|{'-' * 7}|{'-' * 10}|{'-' * 10}|{'-' * 10}|------|")
    for name, ms, goal in rows:
        print(f"| {name:<58} | {len(ms):>5} | {np.median(ms):>8.2f} | {np.percentile(ms, 99):>8.2f} | {ms.max():>8.2f} | {goal} |")


if __name__ == "__main__":
    main()
