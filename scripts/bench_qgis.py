"""QGIS 3.22 (Debian's python3-qgis, headless) opening a planner's project over a large plots layer (issue #11:
"plots at 2 000 000 open in the project without downloading the whole layer"). Not part of the test suite.

Serves an already built layers directory (default: the one scripts/bench_land.py builds with 2 000 000 plots)
with the access log on, writes the planner's project with `gis-service qgis-project`, opens it in QGIS with a
Basic authentication configuration and reads the plots inside a view of a few km² (as the map canvas would), then
prints from the server's access log how many plots requests QGIS made and how many features they could return.

    python scripts/bench_qgis.py [--layers var/bench/land-2000000/layers]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine, serve  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "tests" / "qgis" / "driver.py"  # the PyQGIS side the QGIS tests use
VIEW = (116.60, 39.50, 116.65, 39.53)  # lon/lat: a few km² of farmland, a canvas at about 1:25 000
REQUEST_LINE = re.compile(r'"GET (\S+) HTTP/[\d.]+" (\d{3})')


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=Path, default=ROOT / "var" / "bench" / "land-2000000" / "layers")
    args = ap.parse_args()
    print(machine())
    env = {"GIS_LAYERS_DIR": str(args.layers)}
    proc, url, var = serve("bench-qgis-", "--access-log", **env)
    try:
        cli_env = dict(os.environ, GIS_VAR_DIR=str(var), **env)
        out = subprocess.run([sys.executable, "-m", "gis_service.cli", "keys", "add", "--role", "planner", "--name",
                              "bench"], env=cli_env, capture_output=True, text=True, check=True).stdout
        key = out.strip().splitlines()[-1]
        total = httpx.get(f"{url}/ogc/collections/plots/items", params={"limit": 1}, headers={"X-API-Key": key},
                          timeout=120).json()["numberMatched"]
        in_view = httpx.get(f"{url}/ogc/collections/plots/items", headers={"X-API-Key": key}, timeout=120,
                            params={"limit": 1, "bbox": ",".join(map(str, VIEW))}).json()["numberMatched"]
        work = Path(tempfile.mkdtemp(prefix="bench-qgis-work-"))
        project = work / "planner.qgz"
        subprocess.run([sys.executable, "-m", "gis_service.cli", "qgis-project", "--role", "planner", "--authcfg",
                        "lfgis01", "--url", url, "--output", str(project)], env=cli_env, check=True,
                       capture_output=True)
        before = len(REQUEST_LINE.findall((var / "server.log").read_text(errors="replace")))
        (work / "profile").mkdir()
        (work / "runtime").mkdir(mode=0o700)
        job = {"project": str(project), "profile": str(work / "profile"), "report": str(work / "report.json"),
               "authcfg": {"id": "lfgis01", "username": "qgis", "password": key}, "read": [],
               "rect": {"plots": list(VIEW)}}
        qenv = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        qenv.update(QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR=str(work / "runtime"))
        t0 = time.perf_counter()
        subprocess.run(["/usr/bin/python3", str(DRIVER)], input=json.dumps(job), text=True, capture_output=True,
                       env=qenv, timeout=1800, check=True)
        seconds = time.perf_counter() - t0
        report = json.loads((work / "report.json").read_text(encoding="utf-8"))
        lines = REQUEST_LINE.findall((var / "server.log").read_text(errors="replace"))[before:]
        plots = [urlsplit(path) for path, _ in lines if path.startswith("/ogc/collections/plots/items")]
        limits = [int(parse_qs(u.query).get("limit", ["10"])[0]) for u in plots]
        unbounded = [u.geturl() for u, n in zip(plots, limits) if "bbox" not in parse_qs(u.query) and n > 10]
        print(f"plots in the layer: {total:,}; in the view: {in_view:,}; read by QGIS in the view: "
              f"{report['layers']['plots']['rect_count']:,}")
        print(f"QGIS: project opened and the view read in {seconds:.1f} s (whole run of the PyQGIS driver)")
        print(f"plots requests: {len(plots)} (at most {sum(limits):,} features); without bbox and more than 10 "
              f"features: {len(unbounded)}")
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
