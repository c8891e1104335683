"""Benchmark of the environment domain (issue #7 item 9): incident assessment with ≥ 100 000 receptors (goal
p50 < 150 ms) and grading (goal p50 < 5 ms), in process; with --http also POST /api/environment/incidents on a
live server over the built layers (assessment + saving the record, synchronous=FULL).

The receptors and residential polygons are synthetic (seeded): points spread over Langfang with most of them
clustered around the county towns, as real schools, clinics and homes are; the counties, neighbouring counties,
rivers and water sources are the built layers.

    .venv/bin/python scripts/bench_environment.py [--receptors 100000] [--residential 20000] [--runs 200] [--http]
"""

from __future__ import annotations

import argparse
import statistics
import time

import geopandas as gpd
import numpy as np
import shapely

from benchlib import machine, serve
from gis_service.catalog import Catalog
from gis_service.config import REPO_ROOT
from gis_service.crs import METRIC_CRS, STORAGE_CRS, transform_xy
from gis_service.environment.assess import Assessor
from gis_service.environment.exposure import Exposure
from gis_service.environment.grading import Grader
from gis_service.environment.river import river_lines
from gis_service.rules import RuleBook
from gis_service.store import GeoPackageStore

TOWNS = [(116.70, 39.52), (116.99, 39.76), (116.40, 39.44), (116.64, 39.12), (116.32, 39.30), (116.88, 39.97)]


def frame(store, catalog, layer_id):
    return store.read_frame(catalog.get(layer_id)).to_crs(METRIC_CRS)


def synthetic(city, n_receptors: int, n_residential: int, rng):
    x0, y0, x1, y1 = city.bounds
    towns = np.column_stack(transform_xy(*np.array(TOWNS).T, STORAGE_CRS, METRIC_CRS))
    clustered = int(n_receptors * 0.7)
    centre = towns[rng.integers(0, len(towns), clustered)]
    pts = np.concatenate([centre + rng.normal(0, 4000, (clustered, 2)),
                          np.column_stack([rng.uniform(x0, x1, n_receptors - clustered),
                                           rng.uniform(y0, y1, n_receptors - clustered)])])
    kinds = rng.choice(["学校", "医院", "养老院"], n_receptors, p=[0.6, 0.2, 0.2])
    receptors = gpd.GeoDataFrame({"name": [f"目标{i}" for i in range(n_receptors)], "kind": kinds,
                                  "capacity": rng.integers(30, 3000, n_receptors), "capacity_unit": "人"},
                                 geometry=shapely.points(pts), crs=METRIC_CRS)
    c = towns[rng.integers(0, len(towns), n_residential)] + rng.normal(0, 6000, (n_residential, 2))
    w, h = rng.uniform(100, 400, n_residential), rng.uniform(100, 400, n_residential)
    residential = gpd.GeoDataFrame({"name": [f"小区{i}" for i in range(n_residential)],
                                    "population": rng.integers(200, 5000, n_residential)},
                                   geometry=shapely.box(c[:, 0], c[:, 1], c[:, 0] + w, c[:, 1] + h), crs=METRIC_CRS)
    return receptors, residential, towns


def timed(fn, runs: int) -> tuple[float, float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    out.sort()
    return statistics.median(out), out[min(len(out) - 1, int(len(out) * 0.99))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--receptors", type=int, default=100_000)
    ap.add_argument("--residential", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--http", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    catalog, store = Catalog.load(REPO_ROOT / "layers"), GeoPackageStore()
    rules = RuleBook.load().domain("environment")
    city = shapely.union_all(frame(store, catalog, "city_boundary").geometry.values)
    receptors, residential, towns = synthetic(city, args.receptors, args.residential, rng)
    t = time.perf_counter()
    exposure = Exposure(residential, receptors, frame(store, catalog, "water_sources"), frame(store, catalog, "counties"),
                        frame(store, catalog, "neighbor_counties"), rules.value("home_admin"),
                        frame(store, catalog, "eco_redline"))
    grader = Grader(rules)
    assessor = Assessor(exposure, river_lines(frame(store, catalog, "canal_channels")), rules, grader)
    build_ms = (time.perf_counter() - t) * 1000

    def origin():
        tx, ty = towns[rng.integers(0, len(towns))]
        return shapely.Point(tx + rng.normal(0, 3000), ty + rng.normal(0, 3000))

    def air():
        terms = assessor.source_terms({"kind": "air", "release_rate_g_s": float(rng.uniform(200, 5000)),
                                       "wind_from_deg": float(rng.uniform(0, 360)), "wind_speed_m_s": float(rng.uniform(1, 6)),
                                       "stability": str(rng.choice(list("ABCDEF"))), "levels_of_concern_mg_m3": [3, 20, 100]})
        return assessor.assess(origin(), terms)

    def water():
        return assessor.assess(origin(), assessor.source_terms({"kind": "water", "hours": 24, "river": "北运河"}))

    def soil():
        return assessor.assess(origin(), assessor.source_terms({"kind": "soil", "radius_m": 3000}))

    facts = [{"deaths": int(rng.integers(0, 40)), "evacuated": int(rng.integers(0, 60000)),
              "cross_boundary": str(rng.choice(["county", "city", "province"])), "sensitive_area_or_period": bool(b)}
             for b in rng.integers(0, 2, 64)]
    k = iter(range(10**9))

    def grade():
        return grader.grade(grader.parse(facts[next(k) % len(facts)])).as_dict()

    sample = air()
    inside = max(z["receptor_count"] for z in sample["zones"])
    for fn in (air, water, soil, grade):  # warm up
        fn()
    rows = [("grading (parse + grade)", *timed(grade, args.runs * 10), "< 5 ms"),
            ("air plume, 3 levels + isolation", *timed(air, args.runs), "< 150 ms"),
            ("water trace, 24 h", *timed(water, args.runs), "< 150 ms"),
            ("soil radius 3 km", *timed(soil, args.runs), "< 150 ms")]
    print(f"machine: {machine()}")
    print(f"data: {args.receptors:,} receptors, {args.residential:,} residential polygons (synthetic, seeded); "
          f"indexes built in {build_ms:.0f} ms (once per data version); a sample plume held {inside:,} receptors")
    print(f"{'measure':36} {'p50 ms':>8} {'p99 ms':>8}  goal")
    for name, p50, p99, goal in rows:
        print(f"{name:36} {p50:8.2f} {p99:8.2f}  {goal}")
    if args.http:
        http_bench(args.runs)


def http_bench(runs: int) -> None:
    import subprocess
    import sys

    import httpx

    proc, url, var = serve("bench-env-")
    try:
        key = subprocess.run([sys.executable, "-m", "gis_service.cli", "keys", "add", "--role", "environment", "--name", "bench"],
                             env={**__import__("os").environ, "GIS_VAR_DIR": str(var)}, capture_output=True, text=True,
                             check=True).stdout.strip().splitlines()[-1]
        body = {"location": {"type": "Point", "coordinates": [116.70, 39.52]}, "kind": "air", "release_rate_g_s": 2000,
                "wind_from_deg": 225, "wind_speed_m_s": 2.5, "stability": "D", "levels_of_concern_mg_m3": [3, 20, 100]}
        with httpx.Client(headers={"X-API-Key": key}, timeout=60) as client:
            client.post(url + "/api/environment/incidents", json=body)
            p50, p99 = timed(lambda: client.post(url + "/api/environment/incidents", json=body).raise_for_status(), runs)
            g50, g99 = timed(lambda: client.post(url + "/api/environment/grade", json={"deaths": 3}).raise_for_status(), runs)
        print(f"{'HTTP POST /incidents (demo layers)':36} {p50:8.2f} {p99:8.2f}  (assessment + record saved)")
        print(f"{'HTTP POST /grade':36} {g50:8.2f} {g99:8.2f}")
    finally:
        proc.terminate()
        proc.wait(20)


if __name__ == "__main__":
    main()
