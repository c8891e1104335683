"""serve --workers 2: two processes over the same layers, keys and sessions; a sign-in made through one
worker holds in the other, and revoking the key ends it in both."""

from pathlib import Path

import httpx

from gis_service.auth import KeyStore
from tests.conftest import live_server


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def test_two_workers_share_sessions_and_revocation(tmp_path):
    with live_server(tmp_path, "--workers", "2") as (proc, url):
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
