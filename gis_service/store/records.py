"""Writable domain data (flood reports, control zones, incidents, land edits): tables of records with
transactions, behind one interface so that a PostGIS implementation can follow without touching callers.

The embedded implementation is one SQLite database in WAL mode (``var/records.sqlite``): nothing to
install, readers never block the writer, several worker processes share it, and a committed transaction
is on disk before the caller answers (``synchronous = FULL``). Geometries are stored in EPSG:4490 as WKB
with their envelope beside them, so records can be found by box without a spatial extension.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import orjson
import shapely

from ..errors import GisError

COLUMN_TYPES = {"text": "TEXT", "integer": "INTEGER", "real": "REAL", "boolean": "INTEGER", "json": "TEXT",
                "geometry": "BLOB"}
_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
_ENVELOPE = ("minx", "miny", "maxx", "maxy")


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # one of COLUMN_TYPES
    required: bool = False


@dataclass(frozen=True)
class Table:
    """A table of records; every table has an integer primary key ``id`` assigned by the store."""

    name: str
    columns: tuple[Column, ...]
    unique: tuple[tuple[str, ...], ...] = ()  # each tuple a unique key (e.g. a client's report_id)
    indexes: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self):
        names = [self.name] + [c.name for c in self.columns]
        for name in names:
            if not _IDENTIFIER.match(name) or name == "id":
                raise ValueError(f"table {self.name}: {name!r} is not a valid identifier")
        known = {c.name for c in self.columns}
        for key in self.unique + self.indexes:
            if not set(key) <= known:
                raise ValueError(f"table {self.name}: key {key} names unknown columns")
        for c in self.columns:
            if c.type not in COLUMN_TYPES:
                raise ValueError(f"table {self.name}: column {c.name} has unknown type {c.type!r}")

    def column(self, name: str) -> Column:
        found = next((c for c in self.columns if c.name == name), None)
        if found is None:
            raise GisError("unknown_column", f"表 {self.name} 没有字段 {name}", f"table {self.name} has no column '{name}'")
        return found


class DuplicateRecord(GisError):
    """A unique key already exists: the caller decides whether that is an idempotent retry or a conflict."""

    def __init__(self, table: Table, key: dict):
        super().__init__("duplicate_record", f"{table.name} 中已存在相同记录 {key}",
                         f"a record with {key} already exists in {table.name}", 409)
        self.key = key


class Records(Protocol):
    """Operations inside one transaction."""

    def insert(self, table: Table, row: dict) -> int: ...

    def update(self, table: Table, record_id: int, values: dict) -> bool: ...

    def delete(self, table: Table, record_id: int) -> bool: ...

    def get(self, table: Table, record_id: int) -> dict | None: ...

    def find(self, table: Table, where: dict | None = None, bbox: tuple | None = None,
             order_by: tuple[tuple[str, bool], ...] = (("id", True),), limit: int | None = None,
             after_id: int | None = None) -> list[dict]:
        """Records matching where (equality) and bbox; after_id: only ids greater than it (an incremental
        reader of an append-only table: ids grow in commit order, the write lock serialises inserts)."""
        ...


class RecordStore(Protocol):
    def ensure(self, table: Table) -> None:
        """Create the table (and add columns new in its definition); idempotent."""

    def transaction(self) -> Iterator[Records]:
        """A context manager: everything inside commits together, or nothing does."""

    def reading(self) -> Iterator[Records]:
        """A context manager for reads only: one consistent snapshot that never waits for (or blocks) a
        writer. Do not write inside it (use transaction())."""


class RecordsBase:
    """What both record stores' transactions share."""

    def get(self, table: Table, record_id: int) -> dict | None:
        rows = self.find(table, {"id": record_id}, limit=1)
        return rows[0] if rows else None


def check_required(table: Table, row: dict) -> None:
    absent = [c.name for c in table.columns if c.required and row.get(c.name) is None]
    if absent:
        raise GisError("missing_field", f"{table.name} 缺少必填字段 {absent[0]}",
                       f"{table.name}: required field '{absent[0]}' is missing", 422)


def order_sql(table: Table, order_by: tuple[tuple[str, bool], ...]) -> str:
    for name, _ in order_by:
        if name != "id":
            table.column(name)
    return ", ".join(f'"{n}" {"ASC" if asc else "DESC"}' for n, asc in order_by)


class SQLiteRecords(RecordsBase):
    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def insert(self, table: Table, row: dict) -> int:
        names, values = _encode(table, row, insert=True)
        columns = ", ".join(f'"{n}"' for n in names)
        sql = f'INSERT INTO "{table.name}" ({columns}) VALUES ({", ".join("?" for _ in names)})'
        try:
            return self._conn.execute(sql, values).lastrowid
        except sqlite3.IntegrityError as exc:
            for key in table.unique:
                if all(k in row for k in key) and self.find(table, {k: row[k] for k in key}, limit=1):
                    raise DuplicateRecord(table, {k: row[k] for k in key}) from None
            raise GisError("constraint_failed", f"{table.name} 记录不满足约束：{exc}",
                           f"{table.name}: constraint failed: {exc}", 422) from None

    def update(self, table: Table, record_id: int, values: dict) -> bool:
        names, encoded = _encode(table, values, insert=False)
        if not names:
            return self.get(table, record_id) is not None
        assignments = ", ".join(f'"{n}" = ?' for n in names)
        return self._conn.execute(f'UPDATE "{table.name}" SET {assignments} WHERE id = ?',
                                  encoded + [record_id]).rowcount == 1

    def delete(self, table: Table, record_id: int) -> bool:
        return self._conn.execute(f'DELETE FROM "{table.name}" WHERE id = ?', (record_id,)).rowcount == 1

    def find(self, table: Table, where: dict | None = None, bbox: tuple | None = None,
             order_by: tuple[tuple[str, bool], ...] = (("id", True),), limit: int | None = None,
             after_id: int | None = None) -> list[dict]:
        clauses, params = [], []
        for name, value in (where or {}).items():
            if name != "id":
                table.column(name)
            if value is None:
                clauses.append(f'"{name}" IS NULL')
            else:
                clauses.append(f'"{name}" = ?')
                params.append(_encode_value(table.column(name), value) if name != "id" else value)
        if after_id is not None:
            clauses.append("id > ?")
            params.append(int(after_id))
        if bbox is not None:
            geometry = _geometry_column(table)
            x0, y0, x1, y1 = bbox
            clauses.append(f'"{geometry}_minx" <= ? AND "{geometry}_maxx" >= ? AND '
                           f'"{geometry}_miny" <= ? AND "{geometry}_maxy" >= ?')
            params += [x1, x0, y1, y0]
        order = order_sql(table, order_by)
        sql = f'SELECT * FROM "{table.name}" WHERE {" AND ".join(clauses) or "1"} ORDER BY {order}'
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        cursor = self._conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [_decode(table, dict(zip(names, r))) for r in cursor.fetchall()]


class SQLiteRecordStore:
    """The embedded RecordStore: one SQLite file in WAL mode, one connection per thread."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self._ensured: set[Table] = set()
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")  # committed means on disk, before the caller answers
            self._local.conn = conn
        return conn

    def ensure(self, table: Table) -> None:
        if self._connection().in_transaction:  # a rollback of the caller's transaction would undo it
            raise RuntimeError("ensure() runs in a transaction of its own, not inside another")
        with self._lock:
            if table in self._ensured:
                return
            with self.transaction():
                conn = self._connection()
                columns = ["id INTEGER PRIMARY KEY"]
                for c in table.columns:
                    columns += [f'"{n}" {t}' for n, t in _sql_columns(c)]
                conn.execute(f'CREATE TABLE IF NOT EXISTS "{table.name}" ({", ".join(columns)})')
                present = {r[1] for r in conn.execute(f'PRAGMA table_info("{table.name}")')}
                for c in table.columns:
                    for name, sql_type in _sql_columns(c):
                        if name not in present:  # a column added to the definition: migrate in place
                            conn.execute(f'ALTER TABLE "{table.name}" ADD COLUMN "{name}" {sql_type}')
                for kind, keys in (("UNIQUE INDEX", table.unique), ("INDEX", table.indexes)):
                    for key in keys:
                        index = f"{table.name}__{'_'.join(key)}"
                        cols = ", ".join(f'"{k}"' for k in key)
                        conn.execute(f'CREATE {kind} IF NOT EXISTS "{index}" ON "{table.name}" ({cols})')
            self._ensured.add(table)

    @contextmanager
    def transaction(self) -> Iterator[SQLiteRecords]:
        conn = self._connection()
        if conn.in_transaction:  # nested: part of the enclosing transaction
            yield SQLiteRecords(conn)
            return
        conn.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlocks between processes
        try:
            yield SQLiteRecords(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # the body failed, or COMMIT itself did (disk full, I/O error)
                conn.execute("ROLLBACK")
            raise


    @contextmanager
    def reading(self) -> Iterator[SQLiteRecords]:
        conn = self._connection()
        if conn.in_transaction:  # inside a transaction or another read: its snapshot
            yield SQLiteRecords(conn)
            return
        conn.execute("BEGIN")  # deferred: a WAL read snapshot, no write lock
        try:
            yield SQLiteRecords(conn)
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")


def _sql_columns(column: Column) -> list[tuple[str, str]]:
    if column.type == "geometry":
        return [(column.name, "BLOB")] + [(f"{column.name}_{e}", "REAL") for e in _ENVELOPE]
    return [(column.name, COLUMN_TYPES[column.type])]


def _geometry_column(table: Table) -> str:
    names = [c.name for c in table.columns if c.type == "geometry"]
    if not names:
        raise GisError("no_geometry", f"表 {table.name} 没有几何字段", f"table {table.name} has no geometry column")
    return names[0]


def _encode_value(column: Column, value):
    if value is None:
        return None
    if column.type == "json":
        return orjson.dumps(value).decode()
    if column.type == "boolean":
        return int(bool(value))
    if column.type == "geometry":
        return shapely.to_wkb(value)
    return value


def _encode(table: Table, row: dict, insert: bool) -> tuple[list[str], list]:
    names, values = [], []
    for name, value in row.items():
        column = table.column(name)
        names.append(name)
        values.append(_encode_value(column, value))
        if column.type == "geometry":
            bounds = value.bounds if value is not None else (None,) * 4
            names += [f"{name}_{e}" for e in _ENVELOPE]
            values += list(bounds)
    if insert:
        check_required(table, row)
    return names, values


def _decode(table: Table, row: dict) -> dict:
    out = {"id": row["id"]}
    for c in table.columns:
        value = row.get(c.name)
        if value is not None:
            if c.type == "json":
                value = orjson.loads(value)
            elif c.type == "boolean":
                value = bool(value)
            elif c.type == "geometry":
                value = shapely.from_wkb(value)
        out[c.name] = value
    return out
