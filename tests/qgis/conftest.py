"""A live server with its access log on (serve --access-log: every request line, query string included), and a
runner for the PyQGIS driver in Debian's Python (python3-qgis is built for /usr/bin/python3, not for the project's venv)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import OUTPUT_DIR, LiveServer, live_server

QGIS_PYTHON = "/usr/bin/python3"  # Debian's python3-qgis (make system-deps installs python3-qgis qgis-providers)
DRIVER = Path(__file__).with_name("driver.py")
SHOTS = OUTPUT_DIR / "qgis"
REQUEST_LINE = re.compile(r'"GET (\S+) HTTP/[\d.]+" (\d{3})')


class LoggedServer(LiveServer):
    def __init__(self, url: str, var_dir: Path, log: Path):
        super().__init__(url, var_dir)
        self.log = log

    def requests(self) -> list[tuple[str, int]]:
        """(path with query, status) of every request so far, from uvicorn's access log."""
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return [(m.group(1), int(m.group(2))) for m in REQUEST_LINE.finditer(text)]


@pytest.fixture(scope="session")
def logged_server(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("qgis-var")
    with live_server(var_dir, "--access-log") as (_, url):
        yield LoggedServer(url, var_dir, var_dir / "server.log")


def run_qgis(job: dict, work: Path) -> dict:
    """Run the driver on a job (see driver.py) in a fresh QGIS profile; return its report."""
    assert Path(QGIS_PYTHON).exists(), "Debian's python3 with python3-qgis is needed (make system-deps)"
    profile = work / "profile"
    profile.mkdir(parents=True)
    report = work / "report.json"
    job = dict(job, profile=str(profile), report=str(report))
    runtime = work / "runtime"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR=str(runtime))
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):  # the venv's packages are not for Debian's Python
        env.pop(name, None)
    done = subprocess.run([QGIS_PYTHON, str(DRIVER)], input=json.dumps(job), text=True, capture_output=True,
                          env=env, timeout=600)
    assert done.returncode == 0 and report.exists(), done.stderr[-4000:] + done.stdout[-2000:]
    return json.loads(report.read_text(encoding="utf-8"))
