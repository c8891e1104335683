"""Benchmark: items queries on 2 000 000 plots, random bboxes of about 50 features, 8 concurrent connections.

Load comes from wrk (Debian package, installed if missing). Our server (with one and with two uvicorn workers) and
pygeoapi (one uvicorn worker, OGR provider over the same GeoPackage, so it uses the GeoPackage R-tree) are
measured in the same run with the same request sequence. pygeoapi is installed
by this script into its own virtualenv (var/bench/pygeoapi-venv) with the GDAL Python bindings its OGR provider
needs (Debian libgdal-dev). Prints one table and the ratio. Not part of the test suite.

    python scripts/bench_features.py [--plots 2000000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "var" / "bench"
CONNECTIONS = 8


def build_layers(plots: int) -> Path:
    layers = WORK / "layers"
    marker = layers / f".built-{plots}"
    if marker.exists():
        return layers
    if layers.exists():
        shutil.rmtree(layers)
    shutil.copytree(ROOT / "layers", layers, ignore=shutil.ignore_patterns("*.gpkg", "*.tif", ".*"))
    env = dict(os.environ, GIS_LAYERS_DIR=str(layers))
    subprocess.run([sys.executable, "-m", "gis_service.cli", "build-layers", "--plots", str(plots)], env=env, check=True)
    marker.touch()
    return layers


def bboxes(gpkg: Path, n: int, seed: int = 7) -> list[str]:
    """Boxes of about 260 m × 245 m around random plots (≈ 50 plots of 20 m × 60 m on farmland)."""
    conn = sqlite3.connect(gpkg)
    total = conn.execute("SELECT max(id) FROM rtree_plots_geom").fetchone()[0]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        minx, maxx, miny, maxy = conn.execute("SELECT minx, maxx, miny, maxy FROM rtree_plots_geom WHERE id = ?",
                                              (rng.randint(1, total),)).fetchone()
        cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
        out.append(f"{cx - 0.0015:.6f},{cy - 0.0011:.6f},{cx + 0.0015:.6f},{cy + 0.0011:.6f}")
    return out


def wait_for(url: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see the logs in {WORK}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer")


WRK_SCRIPT = """
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
"""


def load(base: str, paths: list[str], seconds: float) -> dict:
    """wrk (C, one thread, 8 connections) replays the same request sequence against each server; a Python
    client on this 2-core machine would itself be the bottleneck."""
    if shutil.which("wrk") is None:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    path_file, script = WORK / "paths.txt", WORK / "replay.lua"
    path_file.write_text("\n".join(paths) + "\n")
    script.write_text(WRK_SCRIPT)
    counts = [len(json.loads(urllib.request.urlopen(base + p, timeout=30).read())["features"]) for p in paths[:100]]
    out = subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{int(seconds)}s", "--latency", "-s", str(script), base],
                         env=dict(os.environ, BENCH_PATHS=str(path_file)), capture_output=True, text=True,
                         check=True).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50": ms("50"), "p99": ms("99"),
            "features": float(np.median(counts)), "errors": int(errors.group(1)) if errors else 0}


def memory_mb(pid: int, field: str) -> float:
    """Resident (Rss) or proportional (Pss) memory of a process and its children (the uvicorn workers).

    Rss counts every mapping of the memory-mapped layer files in full, once per SQLite connection; Pss
    shares each page among the processes that map it, so it is the better figure for what a server costs."""
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        total = next((int(line.split()[1]) / 1024 for line in fh if line.startswith(f"{field}:")), 0.0)
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in (children.read_text().split() if children.exists() else []):
        total += memory_mb(int(child), field)
    return total


def run_ours(layers: Path, boxes, seconds, workers: int) -> dict:
    port = 8765
    env = dict(os.environ, GIS_LAYERS_DIR=str(layers), GIS_VAR_DIR=str(WORK / "var"), GIS_PORT=str(port))
    proc = subprocess.Popen([sys.executable, "-m", "gis_service.cli", "serve", "--workers", str(workers)], env=env,
                            stdout=open(WORK / "gis_service.log", "w"), stderr=subprocess.STDOUT)
    try:
        t0 = time.time()
        wait_for(f"http://127.0.0.1:{port}/ogc/conformance", proc)
        startup = time.time() - t0
        result = load(f"http://127.0.0.1:{port}", [f"/ogc/collections/plots/items?bbox={b}&limit=100" for b in boxes],
                      seconds)
        result["rss_mb"] = memory_mb(proc.pid, "Rss")
        result["pss_mb"] = memory_mb(proc.pid, "Pss")
        result["startup_s"] = startup
        return result
    finally:
        proc.terminate()
        proc.wait(10)


PYGEOAPI_CONFIG = """
server:
  bind: {{host: 127.0.0.1, port: {port}}}
  url: http://127.0.0.1:{port}
  mimetype: application/json; charset=UTF-8
  encoding: utf-8
  language: en-US
  cors: false
  pretty_print: false
  limits: {{default_items: 100, max_items: 10000}}
  map: {{url: 'https://tile.openstreetmap.org/{{z}}/{{x}}/{{y}}.png', attribution: osm}}
logging: {{level: ERROR}}
metadata:
  identification: {{title: bench, description: bench, keywords: [bench], keywords_type: theme, terms_of_service: none, url: 'http://example.org'}}
  license: {{name: none, url: 'http://example.org'}}
  provider: {{name: bench, url: 'http://example.org'}}
  contact: {{name: bench, position: bench, address: x, city: x, stateorprovince: x, postalcode: x, country: x, phone: x, fax: x, email: x, url: 'http://example.org', hours: x, instructions: x, role: pointOfContact}}
resources:
  plots:
    type: collection
    title: plots
    description: plots
    keywords: [plots]
    extents:
      spatial: {{bbox: [115.0, 38.0, 118.0, 41.0], crs: 'http://www.opengis.net/def/crs/OGC/1.3/CRS84'}}
    providers:
      - type: feature
        name: OGR
        data:
          source_type: GPKG
          source: {gpkg}
          source_srs: EPSG:4490
          target_srs: EPSG:4490
          source_capabilities: {{paging: true}}
          source_options: {{}}
          gdal_ogr_options: {{}}
        id_field: dkbm
        layer: plots
"""


def install_pygeoapi() -> Path:
    venv = WORK / "pygeoapi-venv"
    py = venv / "bin" / "python"
    if py.exists() and subprocess.run([py, "-c", "import pygeoapi, osgeo.ogr, starlette, uvicorn"]).returncode == 0:
        return venv
    if shutil.which("gdal-config") is None:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "libgdal-dev"], check=True)
    version = subprocess.run(["gdal-config", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "pygeoapi", "starlette", "uvicorn", "setuptools", "wheel", "numpy"], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-build-isolation", f"GDAL=={version}"], check=True)
    return venv


def run_pygeoapi(layers: Path, boxes, seconds) -> dict:
    venv = install_pygeoapi()
    port = 8766
    config = WORK / "pygeoapi.yml"
    config.write_text(PYGEOAPI_CONFIG.format(port=port, gpkg=layers / "land" / "plots.gpkg"))
    openapi = WORK / "pygeoapi-openapi.yml"
    env = dict(os.environ, PYGEOAPI_CONFIG=str(config), PYGEOAPI_OPENAPI=str(openapi))
    subprocess.run([venv / "bin" / "pygeoapi", "openapi", "generate", str(config), "--output-file", str(openapi)],
                   env=env, check=True, capture_output=True)
    proc = subprocess.Popen([venv / "bin" / "python", "-m", "uvicorn", "pygeoapi.starlette_app:APP", "--port", str(port),
                             "--workers", "1", "--log-level", "warning"], env=env,
                            stdout=open(WORK / "pygeoapi.log", "w"), stderr=subprocess.STDOUT)
    try:
        wait_for(f"http://127.0.0.1:{port}/conformance", proc)
        result = load(f"http://127.0.0.1:{port}",
                      [f"/collections/plots/items?bbox={b}&limit=100&f=json" for b in boxes], seconds)
        result["rss_mb"] = memory_mb(proc.pid, "Rss")
        result["pss_mb"] = memory_mb(proc.pid, "Pss")
        return result
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plots", type=int, default=2_000_000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--skip-pygeoapi", action="store_true")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    layers = build_layers(args.plots)
    boxes = bboxes(layers / "land" / "plots.gpkg", 2000)
    ours = {}
    for workers in (1, 2):
        ours[workers] = run_ours(layers, boxes, args.seconds, workers)
        print(f"gis_service ×{workers}: {ours[workers]}", flush=True)
    peer = None if args.skip_pygeoapi else run_pygeoapi(layers, boxes, args.seconds)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"\nmachine: {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.python_implementation()} {platform.python_version()}")
    print(f"plots: {args.plots:,}; {CONNECTIONS} connections; {args.seconds:.0f} s per server\n")
    print(f"{'server':<16}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'features':>10}{'errors':>8}{'RSS MB':>9}{'PSS MB':>9}")
    rows = [(f"gis_service ×{w}", r) for w, r in ours.items()] + [("pygeoapi ×1", peer)]
    for name, r in rows:
        if r:
            print(f"{name:<16}{r['rps']:>9.1f}{r['p50']:>9.1f}{r['p99']:>9.1f}{r['features']:>10.0f}{r['errors']:>8}"
                  f"{r['rss_mb']:>9.0f}{r['pss_mb']:>9.0f}")
    print(f"\ngis_service start-up (layers built): {ours[1]['startup_s']:.1f} s (1 worker), {ours[2]['startup_s']:.1f} s (2)")
    if peer:
        for w, r in ours.items():
            print(f"ratio gis_service ×{w} / pygeoapi: {r['rps'] / peer['rps']:.1f}× requests/s")


if __name__ == "__main__":
    main()
