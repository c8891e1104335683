"""What every benchmark script prints about the machine it ran on (scripts/bench_*.py import it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    return f"{os.cpu_count()} cores ({cpu}), {mem / 1024 ** 2:.1f} GB RAM, Python {platform.python_version()}"


def serve(prefix: str, *args: str, **env_vars: str):
    """`gis-service serve *args` on a free port with a fresh var directory (and env_vars, e.g. GIS_LAYERS_DIR);
    returns (process, url, var directory) once it answers."""
    import socket
    import subprocess
    import sys
    import tempfile
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    var = Path(tempfile.mkdtemp(prefix=prefix))
    env = dict(os.environ, GIS_VAR_DIR=str(var), GIS_HOST="127.0.0.1", GIS_PORT=str(port), **env_vars)
    proc = subprocess.Popen([sys.executable, "-m", "gis_service.cli", "serve", *args], env=env,
                            cwd=Path(__file__).resolve().parents[1],
                            stdout=open(var / "server.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(900):
        try:
            urllib.request.urlopen(url + "/ogc/conformance", timeout=1)
            return proc, url, var
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not start; see {var / 'server.log'}")
