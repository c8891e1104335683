"""A throwaway PostgreSQL/PostGIS cluster on loopback, for the test suite and the benchmarks (no Docker).

Debian's ``postgresql-15`` and ``postgresql-15-postgis-3`` provide the binaries (``make system-deps``
installs them). The cluster lives in a temporary directory, listens on 127.0.0.1 on a free port with
``trust`` authentication (loopback only, for one test run) and is removed when stopped. PostgreSQL refuses
to run as root: as root the cluster belongs to the ``postgres`` system user (created by the Debian package)
and every command runs through ``runuser``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PG_BIN = Path(os.environ.get("GIS_PG_BIN", "/usr/lib/postgresql/15/bin"))
SUPERUSER = "gis"
DATABASE = "gis"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TempCluster:
    """``with TempCluster() as url:`` a database with PostGIS, dropped with its cluster afterwards."""

    def __init__(self, settings: dict[str, str] | None = None):
        self.port = _free_port()
        self.dir: Path | None = None
        self.settings = {"fsync": "off", "synchronous_commit": "on", "full_page_writes": "off",
                         "max_connections": "200", "shared_buffers": "256MB", "listen_addresses": "'127.0.0.1'",
                         **(settings or {})}
        self.url = f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(a) for a in args]
        if os.geteuid() == 0:  # initdb and postgres refuse root: run as the packaged postgres user
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True)

    def start(self) -> str:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"PostgreSQL binaries not found in {PG_BIN}: run 'make system-deps'")
        self.dir = Path(tempfile.mkdtemp(prefix="gis-pg-"))
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        data = self.dir / "data"
        self._run(PG_BIN / "initdb", "-D", data, "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
        options = " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        options += f" -p {self.port} -c unix_socket_directories='{self.dir}'"
        self._run(PG_BIN / "pg_ctl", "-D", data, "-l", self.dir / "server.log", "-o", options, "-w", "-t", "60",
                  "start")
        self._run(PG_BIN / "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, DATABASE)
        self._run(PG_BIN / "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", DATABASE,
                  "-qc", "CREATE EXTENSION IF NOT EXISTS postgis")
        return self.url

    def stop(self) -> None:
        if self.dir is None:
            return
        self._run(PG_BIN / "pg_ctl", "-D", self.dir / "data", "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> str:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_ready(url: str, timeout: float = 30) -> None:
    import psycopg

    deadline = time.time() + timeout
    while True:
        try:
            psycopg.connect(url).close()
            return
        except psycopg.OperationalError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
