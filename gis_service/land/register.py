"""The non-spatial land register (非空间登记簿): 发包方, 承包方, 承包合同, 流转合同, 抵押 — one SQLite file.

Where it lives: ``layers/land/register.sqlite`` beside the ``plots`` GeoPackage. The catalog holds spatial
layers only, so the register is not a catalog layer; build-layers writes it together with the demo plots
(all or nothing: a temporary file renamed into place), and the server opens it **read-only**. Changes made
through the API never touch it: they are versions in the record store (see history.py). A register whose
``origin`` is not ``demo`` (one day: an imported register) is never overwritten by build-layers.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

FILE_NAME = "register.sqlite"
MMAP_BYTES = 2**31
CHECK_S = 1.0  # a replaced register file is noticed within this many seconds
TABLES = {  # table: (primary key or None, indexed columns)
    "employers": ("fbfbm", ("village_code",)),
    "households": ("cbfbm", ("fbfbm", "name", "village_code")),
    "contracts": ("cbhtbm", ("cbfbm", "fbfbm")),
    "transfers": (None, ("dkbm", "lzhtbm", "cbfbm", "village_code")),
    "mortgages": (None, ("dkbm", "dyid", "village_code")),
}


def path_in(layers_dir: Path) -> Path:
    return Path(layers_dir) / "land" / FILE_NAME


def origin(path: Path) -> str | None:
    """Who wrote the register ('demo', 'imported'), or None when there is none."""
    if not path.exists():
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'origin'").fetchone()
        return row[0] if row else None
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def write(path: Path, tables: dict[str, pd.DataFrame], origin_: str = "demo") -> None:
    """Write the whole register atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.sqlite")
    if tmp.exists():
        tmp.unlink()
    try:
        conn = sqlite3.connect(tmp)
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        for name, (key, indexes) in TABLES.items():
            frame = tables[name].copy()
            if "village_code" not in frame.columns and "dkbm" in frame.columns:
                frame["village_code"] = frame["dkbm"].str[:12]
            for col in frame.columns:
                if frame[col].dtype == bool:
                    frame[col] = frame[col].astype(int)
            frame.to_sql(name, conn, index=False, chunksize=100_000)
            if key:
                conn.execute(f'CREATE UNIQUE INDEX "{name}_{key}" ON "{name}" ("{key}")')
            for col in indexes:
                conn.execute(f'CREATE INDEX "{name}_{col}" ON "{name}" ("{col}")')
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('origin', ?)", (origin_,))
        conn.commit()
        conn.close()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class Register:
    """Read-only access to the register file; one connection per thread, reopened when the file is replaced."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()

    def exists(self) -> bool:
        return self.path.exists()

    def version(self) -> str:
        st = os.stat(self.path)
        return f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"

    @contextmanager
    def conn(self):
        """This thread's connection; the file is checked for replacement at most every CHECK_S seconds."""
        cached = getattr(self._local, "conn", None)
        now = time.monotonic()
        if cached is not None and now - self._local.checked < CHECK_S:
            yield cached[1]
            return
        version = self.version()
        self._local.checked = now
        if cached is None or cached[0] != version:
            if cached is not None:
                cached[1].close()
            c = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            c.row_factory = sqlite3.Row
            c.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")  # page reads from the OS cache, shared by connections
            self._local.conn = cached = (version, c)
        yield cached[1]

    def rows(self, sql: str, params=()) -> list[dict]:
        with self.conn() as c:
            return [dict(r) for r in c.execute(sql, params).fetchall()]

    def frame(self, table: str, columns: str = "*") -> pd.DataFrame:
        with self.conn() as c:
            return pd.read_sql_query(f'SELECT {columns} FROM "{table}"', c)
