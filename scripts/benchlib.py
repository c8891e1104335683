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
