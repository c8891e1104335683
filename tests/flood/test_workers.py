"""serve --workers 2: each worker keeps its own in-memory status and reads the reports the other appended
(RecordStore find(after_id=…)), so every status answer, from either worker, reflects every committed report."""

import datetime as dt
import uuid

import httpx

from gis_service.auth import KeyStore
from tests.conftest import live_server


def test_status_from_either_worker_reflects_every_report(tmp_path):
    with live_server(tmp_path, "--workers", "2") as (_, url):
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
