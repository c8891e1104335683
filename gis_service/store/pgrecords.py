"""The RecordStore on PostgreSQL: the same tables, transactions and guarantees as ``records.SQLiteRecordStore``,
shared by every process and machine that uses the database.

- Tables live in the schema ``records``; geometries are PostGIS ``geometry(Geometry, 4490)`` with a GiST
  index, json columns ``json`` (the text as written, keys in order), booleans ``boolean``.
- ``transaction()`` is one database transaction that first takes a transaction-scoped advisory lock: write
  transactions are serialised across processes exactly as SQLite's ``BEGIN IMMEDIATE`` serialises them, so
  ids grow in commit order (``find(after_id=…)`` readers miss nothing) and a check-then-insert inside a
  transaction sees every earlier commit. Committed means durable (``synchronous_commit`` is on).
- An insert that breaks a unique key raises ``DuplicateRecord`` and leaves the transaction usable (the
  insert runs in a savepoint), as the embedded store does, so a caller can answer an idempotent retry.
- ``reading()`` is a REPEATABLE READ, READ ONLY transaction: one snapshot, never waits for a writer.
- Nested ``transaction()``/``reading()`` on the same thread join the enclosing one.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import orjson
import psycopg
import shapely
from psycopg.types.json import Json

from ..errors import GisError
from .records import Column, DuplicateRecord, RecordsBase, Table, _geometry_column, check_required, order_sql

SCHEMA = "records"
SRID = 4490
_TYPES = {"text": "text", "integer": "bigint", "real": "double precision", "boolean": "boolean", "json": "json",
          "geometry": f"geometry(Geometry, {SRID})"}
_WRITE_LOCK = "hashtext('gis.records.write')"


def _name(table: Table) -> str:
    return f'{SCHEMA}."{table.name}"'


class PostgresRecords(RecordsBase):
    def __init__(self, conn: psycopg.Connection):
        self._conn = conn

    def insert(self, table: Table, row: dict) -> int:
        names, values, placeholders = _encode(table, row, insert=True)
        columns = ", ".join(f'"{n}"' for n in names)
        sql = (f"INSERT INTO {_name(table)} ({columns}) VALUES ({', '.join(placeholders)}) RETURNING id"
               if names else f"INSERT INTO {_name(table)} DEFAULT VALUES RETURNING id")
        try:
            with self._conn.transaction():  # a savepoint: a refused insert leaves the transaction usable
                return self._conn.execute(sql, values).fetchone()[0]
        except psycopg.errors.UniqueViolation as exc:
            for key in table.unique:
                if all(k in row for k in key) and self.find(table, {k: row[k] for k in key}, limit=1):
                    raise DuplicateRecord(table, {k: row[k] for k in key}) from None
            raise GisError("constraint_failed", f"{table.name} 记录不满足约束：{exc}",
                           f"{table.name}: constraint failed: {exc}", 422) from None
        except psycopg.errors.IntegrityError as exc:
            raise GisError("constraint_failed", f"{table.name} 记录不满足约束：{exc}",
                           f"{table.name}: constraint failed: {exc}", 422) from None

    def update(self, table: Table, record_id: int, values: dict) -> bool:
        names, encoded, placeholders = _encode(table, values, insert=False)
        if not names:
            return self.get(table, record_id) is not None
        assignments = ", ".join(f'"{n}" = {p}' for n, p in zip(names, placeholders))
        return self._conn.execute(f"UPDATE {_name(table)} SET {assignments} WHERE id = %s",
                                  encoded + [record_id]).rowcount == 1

    def delete(self, table: Table, record_id: int) -> bool:
        return self._conn.execute(f"DELETE FROM {_name(table)} WHERE id = %s", (record_id,)).rowcount == 1

    def find(self, table: Table, where: dict | None = None, bbox: tuple | None = None,
             order_by: tuple[tuple[str, bool], ...] = (("id", True),), limit: int | None = None,
             after_id: int | None = None) -> list[dict]:
        clauses, params = [], []
        for name, value in (where or {}).items():
            column = table.column(name) if name != "id" else None
            if value is None:
                clauses.append(f'"{name}" IS NULL')
            elif column is not None and column.type == "json":  # as the embedded store: equal serialisations
                clauses.append(f'"{name}"::text = %s')
                params.append(orjson.dumps(value).decode())
            elif column is not None and column.type == "geometry":
                clauses.append(f'ST_Equals("{name}", ST_GeomFromWKB(%s, {SRID}))')
                params.append(shapely.to_wkb(value))
            else:
                clauses.append(f'"{name}" = %s')
                params.append(bool(value) if column is not None and column.type == "boolean" else value)
        if after_id is not None:
            clauses.append("id > %s")
            params.append(int(after_id))
        if bbox is not None:
            geometry = _geometry_column(table)
            clauses.append(f'"{geometry}" && ST_MakeEnvelope(%s, %s, %s, %s, {SRID})')
            params += [float(v) for v in bbox]
        order = order_sql(table, order_by)
        select = ", ".join(["id"] + [f'ST_AsBinary("{c.name}")' if c.type == "geometry" else f'"{c.name}"'
                                     for c in table.columns])
        sql = f'SELECT {select} FROM {_name(table)} WHERE {" AND ".join(clauses) or "TRUE"} ORDER BY {order}'
        if limit is not None:
            sql += " LIMIT %s"
            params.append(int(limit))
        rows = self._conn.execute(sql, params).fetchall()
        return [_decode(table, r) for r in rows]


class PostgresRecordStore:
    """RecordStore over PostgreSQL; one connection per thread while a transaction or a read is open."""

    def __init__(self, url: str, pool=None):
        from .pgschema import migrate
        from .postgis import shared_pool

        self.pool = pool or shared_pool(url)
        self._local = threading.local()
        self._ensured: set[Table] = set()
        self._lock = threading.Lock()
        with self.pool.connection() as conn:
            migrate(conn)

    def ensure(self, table: Table) -> None:
        if getattr(self._local, "conn", None) is not None:
            raise RuntimeError("ensure() runs in a transaction of its own, not inside another")
        with self._lock:
            if table in self._ensured:
                return
            with self.transaction() as records:
                conn = records._conn
                conn.execute(f"CREATE TABLE IF NOT EXISTS {_name(table)} (id bigserial PRIMARY KEY)")
                present = {r[0] for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
                    (SCHEMA, table.name))}
                for c in table.columns:
                    if c.name not in present:  # new table, or a column added to the definition
                        conn.execute(f'ALTER TABLE {_name(table)} ADD COLUMN "{c.name}" {_TYPES[c.type]}')
                for kind, keys in (("UNIQUE INDEX", table.unique), ("INDEX", table.indexes)):
                    for key in keys:
                        index = f"{table.name}__{'_'.join(key)}"
                        cols = ", ".join(f'"{k}"' for k in key)
                        conn.execute(f'CREATE {kind} IF NOT EXISTS "{index}" ON {_name(table)} ({cols})')
                for c in table.columns:
                    if c.type == "geometry":
                        conn.execute(f'CREATE INDEX IF NOT EXISTS "{table.name}__{c.name}_gist" '
                                     f'ON {_name(table)} USING gist ("{c.name}")')
            self._ensured.add(table)

    @contextmanager
    def _session(self, write: bool) -> Iterator[PostgresRecords]:
        conn = getattr(self._local, "conn", None)
        if conn is not None:  # nested: part of the enclosing transaction (or read)
            if write and self._local.read_only:
                raise RuntimeError("a write transaction cannot be opened inside reading()")
            yield PostgresRecords(conn)
            return
        with self.pool.connection() as conn:
            self._local.conn, self._local.read_only = conn, not write
            try:
                if write:
                    with conn.transaction():
                        # Writers one at a time across every process: ids in commit order, as with SQLite.
                        conn.execute(f"SELECT pg_advisory_xact_lock({_WRITE_LOCK})")
                        yield PostgresRecords(conn)
                else:
                    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    try:
                        yield PostgresRecords(conn)
                    finally:
                        conn.execute("COMMIT")
            finally:
                self._local.conn = None

    def transaction(self):
        return self._session(write=True)

    def reading(self):
        return self._session(write=False)


def _encode_value(column: Column, value):
    if value is None:
        return None
    if column.type == "json":
        return Json(value, dumps=lambda v: orjson.dumps(v).decode())
    if column.type == "boolean":
        return bool(value)
    if column.type == "geometry":
        return shapely.to_wkb(value)
    return value


def _encode(table: Table, row: dict, insert: bool) -> tuple[list[str], list, list[str]]:
    names, values, placeholders = [], [], []
    for name, value in row.items():
        column = table.column(name)
        names.append(name)
        values.append(_encode_value(column, value))
        placeholders.append(f"ST_GeomFromWKB(%s, {SRID})" if column.type == "geometry" else "%s")
    if insert:
        check_required(table, row)
    return names, values, placeholders


def _decode(table: Table, row) -> dict:
    out = {"id": row[0]}
    for c, value in zip(table.columns, row[1:]):
        if value is not None and c.type == "geometry":
            value = shapely.from_wkb(bytes(value))
        out[c.name] = value
    return out
