"""Benchmark: the embedded store and the PostGIS store on the same 2 000 000 plots, side by side, and tipg 1.x
over the same PostGIS database on the same bbox items queries (issue #10).

Steps, all in one run:

1. a layers directory with the plots (``--layers DIR`` to reuse one, else built like bench_features.py);
2. a throwaway PostgreSQL/PostGIS cluster on loopback (store.pgtemp) and ``gis-service db load`` of every
   layer into it — the load time is printed;
3. in-process store queries on both stores (no HTTP): bbox pages of about 50 plots, a bbox with a CQL2
   filter, a masked page, a count-heavy attribute filter — queries per second each, and the ratio;
4. the same bbox items requests through HTTP (wrk, 8 connections, one uvicorn worker each): our server on
   the embedded store, our server on PostGIS, and tipg (installed by this script into its own virtualenv
   under /tmp, never into the project) over the same database and table — requests per second, latency,
   and the ratios. Goal: our server on PostGIS ≥ 3× tipg with one worker.

    python scripts/bench_store.py [--plots 2000000] [--layers DIR] [--seconds 20]

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_features as bf  # noqa: E402  (wrk replay, bbox sampling, layer build)
from benchlib import machine  # noqa: E402

TIPG_VENV = Path("/tmp/tipg-venv")


def layers_dir(args) -> Path:
    if args.layers:
        return Path(args.layers)
    bf.WORK.mkdir(parents=True, exist_ok=True)
    return bf.build_layers(args.plots)


def store_queries(layers: Path, url: str, boxes: list[str], seconds: float) -> dict[str, dict[str, float]]:
    """Queries per second of the same Store calls on both stores, in this process, one thread."""
    os.environ["GIS_LAYERS_DIR"] = str(layers)
    from gis_service.catalog import Catalog
    from gis_service.store import FeatureQuery, GeoPackageStore, cql2
    from gis_service.store.postgis import PostGISStore

    catalog = Catalog.load(layers)
    plots = catalog.get("plots")
    masked = {f.name: f.personal for f in plots.personal_fields}
    parsed = [tuple(float(v) for v in b.split(",")) for b in boxes]
    cases = {
        "bbox page (≈50 plots)": lambda b: FeatureQuery(bbox=b, limit=100),
        "bbox + masked fields": lambda b: FeatureQuery(bbox=b, limit=100, masked=masked),
        "bbox + CQL2 filter": lambda b: FeatureQuery(bbox=b, limit=100, cql=cql2.parse(
            "transfer_status = '未流转' AND contract_area_mu >= 1.5")),
        "CQL2 S_INTERSECTS": lambda b: FeatureQuery(limit=100, cql=cql2.parse(
            f"S_INTERSECTS(geom, BBOX({b[0]}, {b[1]}, {b[2]}, {b[3]}))")),
        "page 20 by dkbm (sortby)": lambda b: FeatureQuery(limit=20, offset=int(b[0] * 1e4) % 5000,
                                                          sortby=[("dkbm", True)]),
    }
    out: dict[str, dict[str, float]] = {}
    stores = {"embedded": GeoPackageStore(), "postgis": PostGISStore(url)}
    for case, make in cases.items():
        out[case] = {}
        for name, store in stores.items():
            store.query(plots, make(parsed[0]))  # warm
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                store.query(plots, make(parsed[n % len(parsed)]))
                n += 1
            out[case][name] = n / (time.perf_counter() - start)
        print(f"  {case:<28} embedded {out[case]['embedded']:8.1f}/s   postgis {out[case]['postgis']:8.1f}/s",
              flush=True)
    return out


def serve_ours(layers: Path, url: str | None, port: int) -> subprocess.Popen:
    var = bf.WORK / f"var-store-{'pg' if url else 'gpkg'}"
    var.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GIS_LAYERS_DIR=str(layers), GIS_VAR_DIR=str(var), GIS_PORT=str(port),
               GIS_DATABASE_URL=url or "", GIS_WORKERS="1")
    proc = subprocess.Popen([sys.executable, "-m", "gis_service.cli", "serve"], env=env, cwd=ROOT,
                            stdout=open(var / "server.log", "w"), stderr=subprocess.STDOUT)
    bf.wait_for(f"http://127.0.0.1:{port}/ogc/conformance", proc, 900)
    return proc


def install_tipg() -> Path:
    py = TIPG_VENV / "bin" / "python"
    if not (py.exists() and subprocess.run([py, "-c", "import tipg, uvicorn"]).returncode == 0):
        subprocess.run([sys.executable, "-m", "venv", str(TIPG_VENV)], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "tipg>=1,<2", "uvicorn"], check=True)
    return py


def serve_tipg(url: str, port: int) -> subprocess.Popen:
    py = install_tipg()
    env = dict(os.environ, DATABASE_URL=url, TIPG_DB_SCHEMAS='["layers"]', TIPG_DB_EXCLUDE_FUNCTION_SCHEMAS='["public"]',
               TIPG_MAX_FEATURES_PER_QUERY="10000", TIPG_DEFAULT_FEATURES_PER_QUERY="10")
    proc = subprocess.Popen([py, "-m", "uvicorn", "tipg.main:app", "--port", str(port), "--workers", "1",
                             "--log-level", "warning"], env=env, stdout=open(bf.WORK / "tipg.log", "w"),
                            stderr=subprocess.STDOUT)
    bf.wait_for(f"http://127.0.0.1:{port}/collections/layers.plots", proc, 300)
    return proc


def http_runs(layers: Path, url: str, boxes: list[str], seconds: float, settle: float) -> dict[str, dict]:
    results = {}
    items = "/ogc/collections/plots/items?bbox={}&limit=100"
    for name, start, path in (
            ("gis_service embedded ×1", lambda: serve_ours(layers, None, 8771), items),
            ("gis_service PostGIS ×1", lambda: serve_ours(layers, url, 8772), items),
            ("tipg PostGIS ×1", lambda: serve_tipg(url, 8773), "/collections/layers.plots/items?bbox={}&limit=100")):
        proc = start()
        time.sleep(settle)  # start-up work in the background (vector-tile cells) finishes first
        port = {"gis_service embedded ×1": 8771, "gis_service PostGIS ×1": 8772}.get(name, 8773)
        try:
            results[name] = bf.load(f"http://127.0.0.1:{port}", [path.format(b) for b in boxes], seconds)
            results[name]["rss_mb"] = bf.memory_mb(proc.pid, "Rss")
        finally:
            proc.terminate()
            proc.wait(20)
        r = results[name]
        print(f"  {name:<26}{r['rps']:>9.1f} req/s  p50 {r['p50']:.1f} ms  p99 {r['p99']:.1f} ms  "
              f"features {r['features']:.0f}  errors {r['errors']}", flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plots", type=int, default=2_000_000)
    ap.add_argument("--layers", help="an existing layers directory with built layers (default: var/bench/layers)")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--store-seconds", type=float, default=5, help="seconds per in-process store query case")
    ap.add_argument("--settle", type=float, default=30, help="seconds to wait after each server starts")
    ap.add_argument("--skip-tipg", action="store_true")
    args = ap.parse_args()
    bf.WORK.mkdir(parents=True, exist_ok=True)
    layers = layers_dir(args)
    boxes = bf.bboxes(layers / "land" / "plots.gpkg", 2000)

    from gis_service.catalog import Catalog
    from gis_service.store import pgload
    from gis_service.store.pgtemp import TempCluster

    with TempCluster({"shared_buffers": "1GB", "work_mem": "16MB", "max_parallel_workers_per_gather": "0",
                      "jit": "off"}) as url:
        print(f"machine: {machine()}")
        t0 = time.perf_counter()
        loaded = pgload.load(url, Catalog.load(layers))
        load_s = time.perf_counter() - t0
        print(f"db load: {sum(loaded.values()):,} features in {len(loaded)} layers, {loaded.get('plots', 0):,} plots, "
              f"{load_s:.0f} s", flush=True)
        print("\nin-process store queries (one thread):")
        store = store_queries(layers, url, boxes, args.store_seconds)
        print(f"\nHTTP bbox items, wrk {bf.CONNECTIONS} connections, {args.seconds:.0f} s each:")
        http = http_runs(layers, url, boxes, args.seconds, args.settle) if not args.skip_tipg else {}
    print(f"\n{'store query':<30}{'embedded/s':>12}{'postgis/s':>12}{'pg/emb':>8}")
    for case, r in store.items():
        print(f"{case:<30}{r['embedded']:>12.1f}{r['postgis']:>12.1f}{r['postgis'] / r['embedded']:>8.2f}")
    if http:
        print(f"\n{'HTTP server (1 worker)':<28}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'features':>10}{'errors':>8}")
        for name, r in http.items():
            print(f"{name:<28}{r['rps']:>9.1f}{r['p50']:>9.1f}{r['p99']:>9.1f}{r['features']:>10.0f}{r['errors']:>8}")
        tipg = http["tipg PostGIS ×1"]["rps"]
        print(f"\nratio gis_service PostGIS / tipg:   {http['gis_service PostGIS ×1']['rps'] / tipg:.1f}×")
        print(f"ratio gis_service embedded / tipg:  {http['gis_service embedded ×1']['rps'] / tipg:.1f}×")
        print(f"ratio gis_service PostGIS / embedded: "
              f"{http['gis_service PostGIS ×1']['rps'] / http['gis_service embedded ×1']['rps']:.2f}×")
    print(f"db load of {args.plots:,} plots: {load_s:.0f} s")
    shutil.rmtree(bf.WORK / "var-store-pg", ignore_errors=True)


if __name__ == "__main__":
    main()
