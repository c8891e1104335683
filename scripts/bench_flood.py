"""Benchmark of the flood reports and status (issue #8 item 7): a report POST p50 under 10 ms, status with 500
monitored points p50 under 20 ms, against a live `gis-service serve` (one uvicorn worker). Not run by the tests.

The server runs on a private copy of the layers directory (every file a symlink to the repository's, so nothing
there is touched) in which the waterlogging points are replaced by seeded synthetic points so that underpasses +
waterlogging points = --points (500); its records database is a fresh temporary one. Reports: --reports POSTs
with random depths and times on random points, sequential (one connection) and then from 8 threads; status:
sequential GETs after the reports (so every point has a status history), with and without a new report in
between (the incremental path: one point reclassified, the document rebuilt).

Scenarios: one cold POST /api/flood/scenarios over the whole DEM (16.5 M cells: the DEM analysis + routing +
GeoTIFF/PNG), then --scenario-runs with the analysis cached; goal under 30 s.

    .venv/bin/python scripts/bench_flood.py [--points 500] [--reports 2000] [--runs 200] [--scenario-runs 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import geopandas as gpd
import httpx
import numpy as np
import shapely

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchlib import machine, serve  # noqa: E402
from gis_service import crs  # noqa: E402
from gis_service.auth import KeyStore  # noqa: E402
from gis_service.catalog import Catalog  # noqa: E402
from gis_service.store import GeoPackageStore  # noqa: E402


def layers_with_points(n_points: int, seed: int = 8) -> Path:
    """A layers directory of symlinks with n_points monitored points (synthetic waterlogging points added)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-flood-layers-"))
    layers = tmp / "layers"
    shutil.copytree(ROOT / "layers", layers, copy_function=os.symlink)
    target = layers / "flood" / "waterlogging_points.gpkg"
    target.unlink()
    catalog, store = Catalog.load(layers), GeoPackageStore()
    unders = store.read_frame(Catalog.load(ROOT / "layers").get("underpasses"))
    districts = store.read_frame(catalog.get("urban_districts")).to_crs(crs.METRIC_CRS)
    n = n_points - len(unders)
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = districts.total_bounds
    pts = []
    area = shapely.union_all(districts.geometry.values)
    while len(pts) < n:  # at least 100 m apart so that snapping stays unambiguous
        p = shapely.Point(rng.uniform(x0, x1), rng.uniform(y0, y1))
        if area.contains(p) and all(p.distance(q) > 100 for q in pts[-50:]):
            pts.append(p)
    frame = gpd.GeoDataFrame({
        "point_id": [f"WL-{i:03d}" for i in range(1, n + 1)], "name": [f"积水点{i}（基准测试）" for i in range(1, n + 1)],
        "history": "基准测试", "district": districts["name"].values[districts.sindex.nearest(pts)[1]],
        "name_source": "虚构", "demo": True}, geometry=pts, crs=crs.METRIC_CRS).to_crs(crs.STORAGE_CRS)
    store.write(catalog.get("waterlogging_points"), frame, origin="imported")
    return layers


def report(rng, point_ids, now) -> dict:
    return {"report_id": uuid.uuid4().hex, "point_id": str(rng.choice(point_ids)),
            "depth_cm": round(float(rng.uniform(0, 60)), 1), "reporter": "基准测试",
            "observed_at": (now - dt.timedelta(seconds=int(rng.integers(60, 86400)))).isoformat()}


def ms(samples) -> tuple[float, float]:
    a = np.array(samples) * 1000
    return float(np.median(a)), float(np.percentile(a, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=500)
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--scenario-runs", type=int, default=5, help="rainfall scenarios after the first (cold) one")
    args = parser.parse_args()

    layers = layers_with_points(args.points)
    proc, url, var = serve("bench-flood-var-", GIS_LAYERS_DIR=str(layers))
    try:
        key = KeyStore(var / "keys.sqlite").add("flood", "bench")
        rng = np.random.default_rng(8)
        now = dt.datetime.now(dt.timezone.utc)
        rows = []
        with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as http:
            status = http.get("/api/flood/status").json()
            point_ids = [p["point_id"] for p in status["points"]]
            assert len(point_ids) == args.points, len(point_ids)
            for _ in range(20):  # warm-up
                http.post("/api/flood/reports", json=report(rng, point_ids, now))
            times = []
            for _ in range(args.reports):
                body = report(rng, point_ids, now)
                t = time.perf_counter()
                r = http.post("/api/flood/reports", json=body)
                times.append(time.perf_counter() - t)
                assert r.status_code == 201, r.text
            rows.append(("report POST, 1 connection", len(times), *ms(times), "< 10"))

            lock, conc = threading.Lock(), []

            def worker(seed):
                local = np.random.default_rng(seed)
                with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as c:
                    for _ in range(args.reports // 8):
                        t = time.perf_counter()
                        r = c.post("/api/flood/reports", json=report(local, point_ids, now))
                        with lock:
                            conc.append(time.perf_counter() - t)
                        assert r.status_code == 201, r.text
            threads = [threading.Thread(target=worker, args=(100 + i,)) for i in range(8)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            rows.append((f"report POST, 8 connections ({len(conc) / wall:.0f}/s)", len(conc), *ms(conc), ""))

            for _ in range(5):
                http.get("/api/flood/status")
            times = []
            for _ in range(args.runs):
                t = time.perf_counter()
                r = http.get("/api/flood/status")
                times.append(time.perf_counter() - t)
                assert r.status_code == 200 and r.json()["count"] == args.points
            rows.append((f"status, {args.points} points, unchanged", len(times), *ms(times), "< 20"))
            times = []
            for _ in range(args.runs // 2):
                http.post("/api/flood/reports", json=report(rng, point_ids, now))
                t = time.perf_counter()
                r = http.get("/api/flood/status")
                times.append(time.perf_counter() - t)
            rows.append((f"status, {args.points} points, after a new report", len(times), *ms(times), "< 20"))

            # scenario: POST /api/flood/scenarios over the whole DEM (3984 × 4139 = 16.5 M cells). The first run
            # includes the rain-independent analysis (fill, catchments, storage curves), cached afterwards.
            presets = ["2021-07-18 短时强降雨", "2018-07-24 台风安比"]
            t = time.perf_counter()
            r = http.post("/api/flood/scenarios", json={"preset": presets[0]}, timeout=600)
            cold = time.perf_counter() - t
            assert r.status_code == 200, r.text
            rows.append(("scenario, whole DEM, first (with the DEM analysis)", 1, cold * 1000, cold * 1000, "< 30 000"))
            times = []
            for i in range(args.scenario_runs):
                t = time.perf_counter()
                r = http.post("/api/flood/scenarios", json={"preset": presets[i % 2]}, timeout=600)
                times.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
            if times:  # --scenario-runs 0 measures the cold run only
                rows.append(("scenario, whole DEM, analysis cached", len(times), *ms(times), "< 30 000"))
        total = args.reports + 20 + (args.reports // 8) * 8 + args.runs // 2
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(layers.parent, ignore_errors=True)
        shutil.rmtree(var, ignore_errors=True)

    print(f"\nflood benchmark — {machine()}; one uvicorn worker, {args.points} monitored points, "
          f"{total} reports in the records store at the end\n")
    print("| measurement | n | p50 ms | p99 ms | goal p50 ms |\n|---|---|---|---|---|")
    for name, n, p50, p99, goal in rows:
        print(f"| {name} | {n} | {p50:.2f} | {p99:.2f} | {goal} |")


if __name__ == "__main__":
    main()
