"""API keys, roles and map-page sessions. Keys and session tokens are random; only their SHA-256 is stored.

A fast hash is the right tool here (unlike passwords, keys and tokens carry full entropy, so no brute force
of the hash is feasible); it keeps the per-request check to one dictionary lookup.

Keys and sessions live in one SQLite file (``var/keys.sqlite``) that every worker process shares. Each process
caches what it has read (all live keys; the sessions it has been shown) and drops the cache as soon as the file
changes: in rollback-journal mode, SQLite's default and enforced here, every committed write increments the
file change counter in the database header (offset 24, see https://sqlite.org/fileformat2.html#file_change_counter).
So a revocation, sign-out or sign-in by any process is seen by the next request of every other process, for
the price of reading four bytes. Expiry is checked on every use, so a cached session cannot outlive its time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .catalog import ROLES
from .errors import GisError

KEY_PREFIX = "lf_"
SESSION_CACHE_LIMIT = 10_000  # sessions remembered per process between changes of the key file

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS api_keys (id INTEGER PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, "
    "key_hash TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0)",
    # Times are UTC ISO-8601 with milliseconds, always the same width, so text order is time order.
    "CREATE TABLE IF NOT EXISTS sessions (token_hash TEXT PRIMARY KEY, key_hash TEXT NOT NULL, name TEXT NOT NULL, "
    "role TEXT NOT NULL, created_at TEXT NOT NULL, expires_at TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS sessions_key_hash ON sessions (key_hash)",
)


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


@dataclass(frozen=True)
class _Session:
    principal: Principal
    expires: float  # seconds since the epoch


@dataclass(frozen=True)
class _Cache:
    """What one process knows about the key file at one version of it; replaced whole when the file changes."""
    version: tuple
    keys: dict[str, Principal]
    sessions: dict[str, _Session | None] = field(default_factory=dict)  # None: no live session with that hash


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")


class KeyStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._cache: _Cache | None = None

    @contextmanager
    def _db(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10)
        try:
            conn.execute("PRAGMA journal_mode = DELETE")  # the change counter the caches rely on is kept only here
            with conn:  # one transaction: committed on success, rolled back on error
                for statement in _SCHEMA:
                    conn.execute(statement)
                yield conn
        finally:
            conn.close()

    def add(self, role: str, name: str) -> str:
        """Create a key; the clear key is returned once and never stored."""
        if role not in ROLES:
            raise GisError("bad_role", f"未知角色 {role}，可选：{', '.join(ROLES)}",
                           f"unknown role {role}; choose one of {', '.join(ROLES)}", 422)
        key = KEY_PREFIX + secrets.token_urlsafe(24)
        with self._db() as conn:
            conn.execute("INSERT INTO api_keys (name, role, key_hash, created_at) VALUES (?, ?, ?, ?)",
                         (name, role, hash_key(key), dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")))
        return key

    def revoke(self, name: str) -> int:
        """Revoke every live key with this name and end their sessions; returns the number of keys revoked."""
        with self._db() as conn:
            count = conn.execute("UPDATE api_keys SET revoked = 1 WHERE name = ? AND revoked = 0", (name,)).rowcount
            conn.execute("DELETE FROM sessions WHERE key_hash IN "
                         "(SELECT key_hash FROM api_keys WHERE name = ? AND revoked = 1)", (name,))
        return count

    def list(self) -> list[dict]:
        with self._db() as conn:
            rows = conn.execute("SELECT name, role, created_at, revoked FROM api_keys ORDER BY id").fetchall()
        return [dict(name=r[0], role=r[1], created_at=r[2], revoked=bool(r[3])) for r in rows]

    def _version(self) -> tuple | None:
        """(inode, change counter) of the key file, None when there is none yet: four bytes, no SQL."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            return os.fstat(fd).st_ino, os.pread(fd, 4, 24)
        finally:
            os.close(fd)

    def _current(self) -> _Cache | None:
        """The cache for the file as it is now. Everything put into a cache was read after its version was
        seen, so it is never older than that version; a later write makes a new version and a new cache."""
        version = self._version()
        if version is None:
            return None
        cache = self._cache
        if cache is None or cache.version != version:
            with self._db() as conn:
                rows = conn.execute("SELECT key_hash, name, role FROM api_keys WHERE revoked = 0").fetchall()
            cache = _Cache(version, {h: Principal(n, r) for h, n, r in rows})
            self._cache = cache
        return cache

    def lookup(self, key: str) -> Principal | None:
        """Principal for a clear key (None when unknown or revoked)."""
        cache = self._current()
        return cache.keys.get(hash_key(key)) if cache else None

    # --- map-page sessions -------------------------------------------------------------------------------

    def create_session(self, key: str, hours: float) -> str | None:
        """Sign in with a key: a new session token (returned once, stored hashed), or None for a wrong key."""
        principal = self.lookup(key)
        if principal is None:
            return None
        token = secrets.token_urlsafe(32)
        now = dt.datetime.now(dt.timezone.utc)
        with self._db() as conn:
            conn.execute("DELETE FROM sessions WHERE expires_at <= ?", (_utc(now),))  # housekeeping
            conn.execute("INSERT INTO sessions (token_hash, key_hash, name, role, created_at, expires_at) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (hash_key(token), hash_key(key), principal.name, principal.role,
                                                       _utc(now), _utc(now + dt.timedelta(hours=hours))))
        return token

    def session(self, token: str) -> Principal | None:
        """Principal of a live session; None when the token is unknown, expired, signed out or its key revoked.

        A cache hit is one dictionary lookup; a miss is one read by primary key."""
        cache = self._current()
        if cache is None:
            return None
        token_hash = hash_key(token)
        if token_hash in cache.sessions:
            entry = cache.sessions[token_hash]
        else:
            with self._db() as conn:
                row = conn.execute("SELECT s.name, s.role, s.expires_at FROM sessions s JOIN api_keys k "
                                   "ON k.key_hash = s.key_hash AND k.revoked = 0 WHERE s.token_hash = ?",
                                   (token_hash,)).fetchone()
            entry = _Session(Principal(row[0], row[1]), dt.datetime.fromisoformat(row[2]).timestamp()) if row else None
            if len(cache.sessions) >= SESSION_CACHE_LIMIT:
                cache.sessions.clear()
            cache.sessions[token_hash] = entry
        return entry.principal if entry is not None and time.time() < entry.expires else None

    def end_session(self, token: str) -> bool:
        """Sign out: delete the session; True when there was one."""
        with self._db() as conn:
            return conn.execute("DELETE FROM sessions WHERE token_hash = ?", (hash_key(token),)).rowcount > 0
