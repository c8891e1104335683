"""Shared fixtures: the repository's catalog and store, and a live uvicorn server on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from gis_service.auth import KeyStore
from gis_service.catalog import Catalog
from gis_service.config import REPO_ROOT
from gis_service.store import GeoPackageStore

OUTPUT_DIR = REPO_ROOT / "test-output"


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return Catalog.load(REPO_ROOT / "layers")


@pytest.fixture(scope="session")
def pg_url():
    """A throwaway PostgreSQL/PostGIS cluster on loopback for the whole session (gis_service.store.pgtemp)."""
    from gis_service.store.pgtemp import TempCluster

    with TempCluster() as url:
        yield url


@pytest.fixture(scope="session")
def store() -> GeoPackageStore:
    return GeoPackageStore()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, url: str, var_dir: Path):
        self.url = url
        self.var_dir = var_dir
        self.keys = KeyStore(var_dir / "keys.sqlite")
        self._keys: dict[str, str] = {}

    def key(self, role: str) -> str:
        if role not in self._keys:
            self._keys[role] = self.keys.add(role, f"test-{role}")
        return self._keys[role]


@contextmanager
def live_server(var_dir: Path, *args: str):
    """`gis-service serve *args` on a free port over var_dir; yields (process, url); stops it and checks its log
    for unexpected (500) errors."""
    port = _free_port()
    env = dict(os.environ, GIS_VAR_DIR=str(var_dir), GIS_HOST="127.0.0.1", GIS_PORT=str(port))
    log = var_dir / "server.log"  # a file, not a pipe: a full pipe would block the server
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gis_service.cli", "serve", *args], env=env, cwd=REPO_ROOT,
                                stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 90
            while True:
                try:
                    urllib.request.urlopen(url + "/ogc/conformance", timeout=1)
                    break
                except OSError:
                    if proc.poll() is not None or time.time() > deadline:
                        raise RuntimeError(f"server did not start: {log.read_text()}") from None
                    time.sleep(0.2)
            yield proc, url
        finally:
            proc.terminate()
            proc.wait(20)
    assert "unexpected error" not in log.read_text(), "the server logged an unexpected (500) error"


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> LiveServer:
    var_dir = tmp_path_factory.mktemp("var")
    with live_server(var_dir) as (_, url):
        yield LiveServer(url, var_dir)
