"""API keys and roles. Keys are random 192-bit tokens; only their SHA-256 is stored.

A fast hash is the right tool here (unlike passwords, the keys carry full entropy, so no brute force
of the hash is feasible); it keeps the per-request check to one dictionary lookup.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from .catalog import ROLES
from .errors import GisError

KEY_PREFIX = "lf_"


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._cache: dict[str, Principal] = {}
        self._identity = None

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path)
        conn.execute("CREATE TABLE IF NOT EXISTS api_keys (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                     "role TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL, "
                     "revoked INTEGER NOT NULL DEFAULT 0)")
        return conn

    def add(self, role: str, name: str) -> str:
        """Create a key; the clear key is returned once and never stored."""
        if role not in ROLES:
            raise GisError("bad_role", f"未知角色 {role}，可选：{', '.join(ROLES)}",
                           f"unknown role {role}; choose one of {', '.join(ROLES)}", 422)
        key = KEY_PREFIX + secrets.token_urlsafe(24)
        with self._connect() as conn:
            conn.execute("INSERT INTO api_keys (name, role, key_hash, created_at) VALUES (?, ?, ?, ?)",
                         (name, role, hash_key(key), dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")))
        return key

    def revoke(self, name: str) -> int:
        with self._connect() as conn:
            return conn.execute("UPDATE api_keys SET revoked = 1 WHERE name = ? AND revoked = 0", (name,)).rowcount

    def list(self) -> list[dict]:
        with self._connect() as conn:
            rows = conn.execute("SELECT name, role, created_at, revoked FROM api_keys ORDER BY id").fetchall()
        return [dict(name=r[0], role=r[1], created_at=r[2], revoked=bool(r[3])) for r in rows]

    def lookup(self, key: str) -> Principal | None:
        """Principal for a clear key, from an in-memory table reloaded when the key file changes."""
        try:
            st = os.stat(self.path)
            identity = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            return None
        if identity != self._identity:
            with self._connect() as conn:
                rows = conn.execute("SELECT key_hash, name, role FROM api_keys WHERE revoked = 0").fetchall()
            self._cache = {h: Principal(n, r) for h, n, r in rows}
            self._identity = identity
        return self._cache.get(hash_key(key))
