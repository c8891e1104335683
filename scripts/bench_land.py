"""Benchmark of the land register with 2 000 000 plots (issue #9 §11). Not part of the test suite.

Builds the layers with ``--plots N`` into their own directory (var/bench/land-<N>/layers, a copy of the
definitions and sources; the shared layers/ directory is never touched), starts ``gis-service serve`` over it
(GIS_LAYERS_DIR, fresh GIS_VAR_DIR) and measures, with one client, sequentially:

- start-up: until the server answers and until the first summary, on a first start (the land index of the data
  version is built then) and on a restart over the same GIS_VAR_DIR;
- plot by code: GET /api/land/plots/{dkbm} for random plots (p50, p95);
- map click: GET /api/land/plots?at=lon,lat&coord_sys=cgcs2000 inside random plots (p50, p95);
- village summary: GET /api/land/villages/{code}/summary for random villages (p50, p95), and the city roll-up;
- server memory: resident set size of the server process after the runs.

    python scripts/bench_land.py [--plots 2000000] [--requests 300]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def build(plots: int) -> tuple[Path, float | None]:
    work = ROOT / "var" / "bench" / f"land-{plots}"
    layers = work / "layers"
    marker = work / ".built"
    if marker.exists():
        return layers, None
    if layers.exists():
        shutil.rmtree(layers)
    shutil.copytree(ROOT / "layers", layers, ignore=shutil.ignore_patterns("*.gpkg", "*.tif", "*.sqlite", ".*"))
    t0 = time.perf_counter()
    env = dict(__import__("os").environ, GIS_LAYERS_DIR=str(layers))
    subprocess.run([sys.executable, "-m", "gis_service.cli", "build-layers", "--plots", str(plots)], env=env,
                   check=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    marker.write_text(f"{seconds:.1f}")
    return layers, seconds


def samples(layers: Path, n: int, seed: int = 9) -> tuple[list[str], list[tuple[float, float]], list[str]]:
    from gis_service.store.gpkg import decode_geometries

    conn = sqlite3.connect(layers / "land" / "plots.gpkg")
    total = conn.execute("SELECT max(fid) FROM plots").fetchone()[0]
    rng = random.Random(seed)
    fids = [rng.randint(1, total) for _ in range(n)]
    rows = [conn.execute("SELECT dkbm, geom FROM plots WHERE fid = ?", (f,)).fetchone() for f in fids]
    codes = [r[0] for r in rows]
    points = [(p.x, p.y) for p in shapely.point_on_surface(decode_geometries([r[1] for r in rows]))]
    villages = sorted({r[0] for r in conn.execute("SELECT DISTINCT village_code FROM plots")})
    return codes, points, rng.sample(villages, min(n, len(villages)))


def timed(client: httpx.Client, urls: list[str]) -> list[float]:
    out = []
    for url in urls:
        t0 = time.perf_counter()
        r = client.get(url)
        out.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code} {r.text[:200]}")
    return out


def start(layers: Path, var: Path) -> tuple[subprocess.Popen, str, float]:
    """gis-service serve over layers with var as GIS_VAR_DIR (kept between the cold and the warm start);
    returns (process, url, seconds until it answered)."""
    import os
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, GIS_VAR_DIR=str(var), GIS_LAYERS_DIR=str(layers), GIS_HOST="127.0.0.1", GIS_PORT=str(port))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "gis_service.cli", "serve"], env=env, cwd=ROOT,
                            stdout=open(var / "server.log", "a"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            httpx.get(url + "/ogc/conformance", timeout=1)
            return proc, url, time.perf_counter() - t0
        except httpx.HTTPError:
            if proc.poll() is not None or time.perf_counter() - t0 > 600:
                raise RuntimeError((var / "server.log").read_text()[-2000:]) from None
            time.sleep(0.1)


def rss_mb(pid: int) -> float:
    total = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total = int(line.split()[1]) / 1024
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plots", type=int, default=2_000_000)
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    layers, build_s = build(args.plots)
    codes, points, villages = samples(layers, args.requests)
    import tempfile

    var = Path(tempfile.mkdtemp(prefix="bench-land-"))
    proc, url, up_cold = start(layers, var)  # cold: the land index of this data version is built after start-up
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            t1 = time.perf_counter()
            client.get("/api/land/summary").raise_for_status()
            ready_cold = up_cold + time.perf_counter() - t1
    finally:
        proc.terminate()
        proc.wait(30)
    proc, url, up_s = start(layers, var)  # warm: the index is there (a restart)
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            t1 = time.perf_counter()
            client.get("/api/land/summary").raise_for_status()
            ready_s = up_s + time.perf_counter() - t1
            # First touch of each random plot reads its pages from disk; the second pass finds them in the OS
            # page cache, as a long-running server with the data in RAM would. Both are reported.
            by_code = timed(client, [f"/api/land/plots/{c}" for c in codes])
            by_code_warm = timed(client, [f"/api/land/plots/{c}" for c in codes])
            click = timed(client, [f"/api/land/plots?at={x:.7f},{y:.7f}&coord_sys=cgcs2000" for x, y in points])
            summary = timed(client, [f"/api/land/villages/{v}/summary" for v in villages])
            city = timed(client, ["/api/land/summary"] * 20)
        memory = rss_mb(proc.pid)
        load = __import__("os").getloadavg()[0]  # other work on the same cores shows in the figures
    finally:
        proc.terminate()
        proc.wait(30)

    def p(values, q):
        return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]

    print(f"machine: {machine()}; load average during the runs: {load:.1f}")
    print(f"plots: {args.plots:,}; build-layers: {'%.0f s' % build_s if build_s else 'reused'}; requests: {args.requests}")
    print(f"{'measure':<34}{'p50 ms':>10}{'p95 ms':>10}{'target':>16}")
    for name, values, target in (("plot by code (first touch)", by_code, "p50 < 5 ms"),
                                 ("plot by code (pages cached)", by_code_warm, "p50 < 5 ms"),
                                 ("map click (pages cached)", click, "p50 < 10 ms"),
                                 ("village summary", summary, "< 50 ms"), ("city roll-up", city, "")):
        print(f"{name:<34}{statistics.median(values):>10.2f}{p(values, 95):>10.2f}{target:>16}")
    print(f"start-up, first start (server answers): {up_cold:.1f} s; land index built and first summary: {ready_cold:.1f} s")
    print(f"start-up, restart (server answers): {up_s:.1f} s (target < 30 s); first summary: {ready_s:.1f} s")
    print(f"server memory (RSS): {memory:,.0f} MB (target < 6 GB)")


if __name__ == "__main__":
    main()
