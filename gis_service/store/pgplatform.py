"""Keys, sessions, the personal-data access log and local rule overrides in PostgreSQL, when the database is
selected: every process on every machine sees the same keys, sign-ins, revocations, rule values and log.

``PostgresKeyStore`` is ``auth.KeyStore`` over ``gis.api_keys``/``gis.sessions``: the same SQL, the same
per-process cache, whose version is the counter row ``gis.key_changes`` bumped inside every transaction that
writes keys or sessions (so a cache is never older than the version it is filed under). ``PostgresAccessLog``
appends to ``gis.access_log`` (one row per disclosure, the same JSON entry as the file log).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from contextlib import contextmanager

from ..auth import KeyStore
from ..privacy import AccessLog
from .postgis import shared_pool
from .pgschema import migrate

_WRITES = re.compile(r"^\s*(INSERT|UPDATE|DELETE)\b", re.IGNORECASE)


class _Connection:
    """The sqlite3 calls KeyStore makes, on a psycopg connection inside one transaction."""

    def __init__(self, conn):
        self._conn = conn
        self.wrote = False

    def execute(self, sql: str, params=()):
        if sql.lstrip().upper().startswith("PRAGMA"):
            return None
        self.wrote = self.wrote or bool(_WRITES.match(sql))
        return self._conn.execute(sql.replace("?", "%s"), params)


class PostgresKeyStore(KeyStore):
    def __init__(self, url: str):
        super().__init__(path=url)
        self.url = url
        self.pool = shared_pool(url)
        with self.pool.connection() as conn:
            migrate(conn)

    @contextmanager
    def _db(self):
        with self.pool.connection() as conn, conn.transaction():
            wrapped = _Connection(conn)
            yield wrapped
            if wrapped.wrote:
                conn.execute("UPDATE gis.key_changes SET n = n + 1 WHERE id = 1")

    def _version(self) -> tuple | None:
        with self.pool.connection() as conn:
            return ("pg", conn.execute("SELECT n FROM gis.key_changes WHERE id = 1").fetchone()[0])


class PostgresAccessLog(AccessLog):
    def __init__(self, url: str):
        self.url = url
        self.path = None
        self.pool = shared_pool(url)
        with self.pool.connection() as conn:
            migrate(conn)

    def record(self, who: str, role: str, collection: str, fields: list[str], count: int, request: str,
               subjects: list[str] | None = None) -> None:
        entry = dict(time=dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"), who=who, role=role,
                     collection=collection, fields=fields, count=count, request=request)
        if subjects is not None:
            entry["subjects"] = list(subjects)
        with self.pool.connection() as conn:  # autocommit: committed before the data is served
            conn.execute("INSERT INTO gis.access_log (entry) VALUES (%s::json)", (json.dumps(entry, ensure_ascii=False),))

    def entries(self) -> list[dict]:
        with self.pool.connection() as conn:
            return [r[0] for r in conn.execute("SELECT entry FROM gis.access_log ORDER BY id")]


def rules_override_text(url: str) -> str | None:
    """The bureau's local rule values kept in the database (None when there are none)."""
    with shared_pool(url).connection() as conn:
        migrate(conn)
        row = conn.execute("SELECT toml FROM gis.rules_override WHERE id = 1").fetchone()
    return row[0] if row else None


def set_rules_override(url: str, text: str | None) -> None:
    """Store (or with None remove) the local rule values every instance loads at start."""
    with shared_pool(url).connection() as conn:
        migrate(conn)
        if text is None:
            conn.execute("DELETE FROM gis.rules_override WHERE id = 1")
        else:
            conn.execute("INSERT INTO gis.rules_override (id, toml) VALUES (1, %s) ON CONFLICT (id) DO UPDATE "
                         "SET toml = EXCLUDED.toml, updated_at = now()", (text,))
