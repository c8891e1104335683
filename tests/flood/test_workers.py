"""serve --workers 2: each worker keeps its own in-memory status and reads the reports the other appended
(RecordStore find(after_id=…)), so every status answer, from either worker, reflects every committed report."""

import datetime as dt
import os
import subprocess
import sys
import time
import uuid

import httpx

from gis_service.auth import KeyStore
from gis_service.config import REPO_ROOT
from tests.conftest import _free_port


def test_status_from_either_worker_reflects_every_report(tmp_path):
    port = _free_port()
    env = dict(os.environ, GIS_VAR_DIR=str(tmp_path), GIS_PORT=str(port))
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "gis_service.cli", "serve", "--workers", "2"], env=env,
                            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if httpx.get(url + "/ogc/conformance", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert proc.poll() is None, (tmp_path / "server.log").read_text()
                time.sleep(0.3)
        headers = {"X-API-Key": KeyStore(tmp_path / "keys.sqlite").add("flood", "two-workers")}
        now = dt.datetime.now(dt.timezone.utc)
        for i, depth in enumerate((10, 35, 20, 40, 5)):
            when = (now - dt.timedelta(minutes=30 - i)).isoformat()
            body = {"report_id": uuid.uuid4().hex, "point_id": "UP-002", "depth_cm": depth, "observed_at": when}
            # a new connection per request: the kernel hands them to either worker
            assert httpx.post(url + "/api/flood/reports", json=body, headers=headers, timeout=30).status_code == 201
            for _ in range(6):
                points = httpx.get(url + "/api/flood/status", headers=headers, timeout=30).json()["points"]
                point = next(p for p in points if p["point_id"] == "UP-002")
                assert point["depth_cm"] == depth
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
    assert "unexpected error" not in (tmp_path / "server.log").read_text()
