"""Shared fixtures: the repository's catalog and store, and a live uvicorn server on a free port."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from gis_service.catalog import Catalog
from gis_service.config import REPO_ROOT, Settings
from gis_service.backends import open_access_log, open_key_store
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
    """A running server and what it stores: the embedded files under var_dir, or the database at database_url."""

    def __init__(self, url: str, var_dir: Path, database_url: str = ""):
        self.url = url
        self.var_dir = var_dir
        self.database_url = database_url
        self.store_kind = "postgis" if database_url else "embedded"
        self.settings = Settings.from_env(var_dir=var_dir, database_url=database_url)
        self.keys = open_key_store(self.settings)
        self._keys: dict[str, str] = {}

    def key(self, role: str) -> str:
        if role not in self._keys:
            self._keys[role] = self.keys.add(role, f"test-{role}")
        return self._keys[role]

    def access_entries(self) -> list[dict]:
        """The personal-data access log, wherever the server keeps it."""
        return open_access_log(self.settings).entries()

    def access_log_text(self) -> str:
        return "\n".join(json.dumps(e, ensure_ascii=False) for e in self.access_entries())

    def logs(self) -> list[str]:
        """Every log the server writes: its files under var_dir and, with the database, the access log table."""
        texts = [log.read_text(encoding="utf-8", errors="replace") for log in self.var_dir.rglob("*.log")]
        return texts + ([self.access_log_text()] if self.database_url else [])

    def key_storage(self) -> bytes:
        """Everything stored about keys and sessions: the key file's bytes, or the tables' rows."""
        if not self.database_url:
            return (self.var_dir / "keys.sqlite").read_bytes()
        import psycopg

        with psycopg.connect(self.database_url) as conn:
            rows = conn.execute("SELECT k::text FROM gis.api_keys k UNION ALL SELECT s::text FROM gis.sessions s")
            return "\n".join(r[0] for r in rows).encode()

    def key_sql(self, statement: str, params=()) -> list:
        """A statement on the key and session tables (sqlite placeholders '?'), as another process would."""
        if not self.database_url:
            with sqlite3.connect(self.var_dir / "keys.sqlite") as conn:
                return conn.execute(statement, params).fetchall()
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute("SET search_path = gis, public")
            cur = conn.execute(statement.replace("?", "%s"), params)
            rows = cur.fetchall() if cur.description else []
            conn.execute("UPDATE gis.key_changes SET n = n + 1 WHERE id = 1")  # as every writer does
            return rows


@contextmanager
def live_server(var_dir: Path, *args: str, database_url: str = ""):
    """`gis-service serve *args` on a free port over var_dir (and the database, if given); yields (process, url);
    stops it and checks its log for unexpected (500) errors."""
    port = _free_port()
    env = dict(os.environ, GIS_VAR_DIR=str(var_dir), GIS_HOST="127.0.0.1", GIS_PORT=str(port),
               GIS_DATABASE_URL=database_url)
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
def pg_loaded(pg_url, catalog) -> str:
    """The session's database with every layer of the embedded store loaded (gis-service db load)."""
    from gis_service.config import Settings
    from gis_service.domains import load_into_database
    from gis_service.store import pgload

    pgload.load(pg_url, catalog, progress=False)
    load_into_database(Settings.from_env(), pg_url)  # the land register (what `gis-service db load` does next)
    import psycopg

    with psycopg.connect(pg_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute("CREATE DATABASE gis_loaded TEMPLATE gis")  # for fresh_database(): a copy in a second
    return pg_url


def fresh_database(pg_loaded: str, name: str) -> str:
    """A new database with every layer loaded (a copy of the session's, before any server wrote to it)."""
    import psycopg

    with psycopg.connect(pg_loaded.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE gis_loaded')
    return pg_loaded.rsplit("/", 1)[0] + "/" + name


STORES = ("embedded", "postgis")
# Test files whose `server` runs once per store: the API suites, the domains' writes (flood reports, control
# zones, incidents, land edits) and the personal-data tests. Pages in Chromium and the rest use the embedded
# store only, which keeps the added time to a few minutes.
BOTH_STORES = ("tests/api/", "tests/flood/test_api.py", "tests/canal/test_api.py", "tests/canal/test_control_zones.py",
               "tests/environment/test_api.py", "tests/land/test_api.py", "tests/land/test_personal_walk.py",
               "tests/land/test_history.py", "tests/land/test_ops_api.py", "tests/admin/test_api.py",
               "tests/flood/test_scenarios.py")


def pytest_generate_tests(metafunc):
    if "server" in metafunc.fixturenames:
        path = Path(str(metafunc.definition.fspath)).relative_to(REPO_ROOT).as_posix()
        both = path.startswith(BOTH_STORES) and not metafunc.definition.get_closest_marker("embedded_only")
        stores = STORES if both else STORES[:1]
        metafunc.parametrize("server", stores, indirect=True, scope="session")


@pytest.fixture(scope="session")
def server(request, tmp_path_factory) -> LiveServer:
    """The live server over the embedded store, and for the files in BOTH_STORES also over PostGIS."""
    kind = getattr(request, "param", STORES[0])
    var_dir = tmp_path_factory.mktemp(f"var-{kind}")
    database_url = request.getfixturevalue("pg_loaded") if kind == "postgis" else ""
    with live_server(var_dir, database_url=database_url) as (_, url):
        yield LiveServer(url, var_dir, database_url)
