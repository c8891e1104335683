"""serve --workers 2: two processes over the same layers, keys and sessions; a sign-in made through one
worker holds in the other, and revoking the key ends it in both."""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from gis_service.auth import KeyStore
from gis_service.config import REPO_ROOT
from tests.conftest import _free_port


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def test_two_workers_share_sessions_and_revocation(tmp_path):
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
        keys = KeyStore(tmp_path / "keys.sqlite")
        key = keys.add("rural", "two-workers")
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.post("/maps/session", data={"api_key": key}).status_code == 303
            cookies = dict(client.cookies)
        # A new connection per request: the kernel hands them to either worker.
        pages = [httpx.get(url + "/maps/", cookies=cookies, timeout=30).text for _ in range(20)]
        assert all("当前身份：two-workers（rural）" in page for page in pages)
        assert len([c for c in _children(proc.pid) if Path(f"/proc/{c}").exists()]) >= 2
        keys.revoke("two-workers")
        after = [httpx.get(url + "/maps/", cookies=cookies, timeout=30).text for _ in range(20)]
        assert all("当前为匿名访问" in page for page in after)
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
    assert "unexpected error" not in (tmp_path / "server.log").read_text()
