"""Versioned schema migrations of the PostgreSQL store (``gis-service db init`` / ``db migrate``).

Each migration is applied once, in order, in its own transaction, and recorded in ``gis.schema_migrations``;
an advisory lock makes concurrent starts (several service processes, a CLI) apply each exactly once. Add a
migration by appending to ``MIGRATIONS``; never edit one that has shipped.
"""

from __future__ import annotations

import psycopg

_LOCK = "hashtext('gis.schema_migrations')"

MIGRATIONS: list[tuple[int, str, tuple[str, ...]]] = [
    (1, "layers: schemas, layer metadata, version sequence", (
        "CREATE EXTENSION IF NOT EXISTS postgis",
        "CREATE SCHEMA IF NOT EXISTS layers",
        "CREATE SCHEMA IF NOT EXISTS records",
        "CREATE SEQUENCE gis.layer_version",
        "CREATE TABLE gis.layer_meta (layer_id text PRIMARY KEY, origin text NOT NULL, version bigint NOT NULL, "
        "feature_count bigint NOT NULL, extent double precision[], time_min text, time_max text, "
        "written_at timestamptz NOT NULL)",
    )),
    (2, "keys and map-page sessions", (
        "CREATE TABLE gis.api_keys (id bigserial PRIMARY KEY, name text NOT NULL, role text NOT NULL, "
        "key_hash text NOT NULL UNIQUE, created_at text NOT NULL, revoked integer NOT NULL DEFAULT 0)",
        "CREATE TABLE gis.sessions (token_hash text PRIMARY KEY, key_hash text NOT NULL, name text NOT NULL, "
        "role text NOT NULL, created_at text NOT NULL, expires_at text NOT NULL)",
        "CREATE INDEX sessions_key_hash ON gis.sessions (key_hash)",
        # Bumped inside every transaction that writes keys or sessions: each process's cache is valid while
        # it is unchanged (a counter row, not a sequence: it changes when the write commits, not before).
        "CREATE TABLE gis.key_changes (id integer PRIMARY KEY CHECK (id = 1), n bigint NOT NULL)",
        "INSERT INTO gis.key_changes VALUES (1, 0)",
    )),
    (3, "personal-data access log", (
        "CREATE TABLE gis.access_log (id bigserial PRIMARY KEY, logged_at timestamptz NOT NULL DEFAULT now(), "
        "entry json NOT NULL)",
    )),
    (4, "local rule overrides", (
        "CREATE TABLE gis.rules_override (id integer PRIMARY KEY CHECK (id = 1), toml text NOT NULL, "
        "updated_at timestamptz NOT NULL DEFAULT now())",
    )),
]
LATEST = MIGRATIONS[-1][0]


def applied(conn: psycopg.Connection) -> list[int]:
    exists = conn.execute("SELECT to_regclass('gis.schema_migrations')").fetchone()[0]
    if exists is None:
        return []
    return [r[0] for r in conn.execute("SELECT version FROM gis.schema_migrations ORDER BY version")]


def migrate(conn: psycopg.Connection, target: int | None = None) -> list[int]:
    """Apply the pending migrations up to target (default: all); returns the versions applied now."""
    target = LATEST if target is None else target
    done: list[int] = []
    if conn.autocommit and set(applied(conn)) >= {v for v, _, _ in MIGRATIONS if v <= target}:
        return done  # the common case at start-up: one query, no lock
    with conn.transaction():
        conn.execute(f"SELECT pg_advisory_xact_lock({_LOCK})")
        conn.execute("CREATE SCHEMA IF NOT EXISTS gis")
        conn.execute("CREATE TABLE IF NOT EXISTS gis.schema_migrations (version integer PRIMARY KEY, "
                     "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        present = set(applied(conn))
        for version, name, statements in MIGRATIONS:
            if version in present or version > target:
                continue
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO gis.schema_migrations (version, name) VALUES (%s, %s)", (version, name))
            done.append(version)
    return done
