"""The non-spatial land register (非空间登记簿): 发包方, 承包方, 承包合同, 流转合同, 抵押 — one SQLite file.

Where it lives: ``layers/land/register.sqlite`` beside the ``plots`` GeoPackage. The catalog holds spatial
layers only, so the register is not a catalog layer; build-layers writes it together with the demo plots
(all or nothing: a temporary file renamed into place), and the server opens it **read-only**. Changes made
through the API never touch it: they are versions in the record store (see history.py). A register whose
``origin`` is not ``demo`` (one day: an imported register) is never overwritten by build-layers.

With the PostgreSQL store (GIS_DATABASE_URL) the register lives in the database, schema ``land_register``
(``gis-service db load`` copies the file there in one transaction, with a new version token), so every
instance on every machine reads the same register. Each instance reads it through a local read-only copy,
``var/land/register-<version>.sqlite``, made once per version (``DatabaseRegister``): the register only
changes by a load, and the plot cards and lists then cost a local index lookup (about 2 ms) rather than
several database round trips; a new load is noticed within CHECK_S seconds.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import psycopg

from ..errors import GisError

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
# The columns the land service names in its queries (service.py): a register without one of them is refused
# by `db load` (every instance would answer its plot cards and summaries with a 500).
COLUMNS = {
    "employers": ("fbfbm", "name", "village_code"),
    "households": ("cbfbm", "fbfbm", "name", "village_code"),
    "contracts": ("cbhtbm", "fbfbm", "cbfbm", "cbfs", "cbqxq", "cbqxz", "htzmj"),
    "transfers": ("lzhtbm", "cbhtbm", "cbfbm", "dkbm", "transferee", "lzfs", "lzqx_years", "start_date", "end_date",
                  "lzmj", "use", "standard_form", "village_code"),
    "mortgages": ("dyid", "dkbm", "lzhtbm", "borrower", "lender", "amount_wan", "term_years", "start_date",
                  "end_date", "status", "village_code"),
}
DB_SCHEMA = "land_register"
_DB_LOCK = "hashtext('land_register.load')"
_TO_PG = {"INTEGER": "bigint", "REAL": "double precision"}  # anything else: text
_FROM_PG = {"bigint": "INTEGER", "integer": "INTEGER", "double precision": "REAL"}
COPY_ROWS = 50_000
LOAD_WAIT_S = 20  # a copy waits this long for a load in progress (below the 30 s statement timeout), then 503


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
        for name in TABLES:
            frame = tables[name].copy()
            if "village_code" not in frame.columns and "dkbm" in frame.columns:
                frame["village_code"] = frame["dkbm"].str[:12]
            for col in frame.columns:
                if frame[col].dtype == bool:
                    frame[col] = frame[col].astype(int)
            frame.to_sql(name, conn, index=False, chunksize=100_000)
        _finish(conn, origin_)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _finish(conn: sqlite3.Connection, origin_: str) -> None:
    """Index the tables, record the origin, commit and close (the file is then renamed into place)."""
    for name, (key, indexes) in TABLES.items():
        if key:
            conn.execute(f'CREATE UNIQUE INDEX "{name}_{key}" ON "{name}" ("{key}")')
        for col in indexes:
            conn.execute(f'CREATE INDEX "{name}_{col}" ON "{name}" ("{col}")')
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute("INSERT INTO meta VALUES ('origin', ?)", (origin_,))
    conn.commit()
    conn.close()


def _quoted(name: str) -> str:
    """A column name of the file as an SQL identifier (PostgreSQL and SQLite): never read as SQL."""
    return '"' + name.replace('"', '""') + '"'


def _missing(where_zh: str, where_en: str, fix: str) -> GisError:
    return GisError("layer_not_built", f"{where_zh}没有土地登记簿，请先运行 {fix}",
                    f"the land register is missing from {where_en}; run '{fix}'", 503)


class Register:
    """Read-only access to the register file; one connection per thread, reopened when the file is replaced."""

    source = "register (layers/land)"  # where a record's base version comes from, as plot histories say

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()

    def exists(self) -> bool:
        return self.path.exists()

    def require(self) -> None:
        if not self.exists():
            raise _missing("图层目录", "the layers directory", "gis-service build-layers")

    def version(self) -> str:
        st = os.stat(self.path)
        return f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"

    @contextmanager
    def conn(self):
        """This thread's connection; the file is checked for replacement at most every CHECK_S seconds."""
        cached = getattr(self._local, "conn", None)
        now = time.monotonic()
        if cached is not None and not self._check_due(now):
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

    def _check_due(self, now: float) -> bool:
        """Whether this thread's connection is checked against the version now (a stat of the file)."""
        return now - self._local.checked >= CHECK_S

    def rows(self, sql: str, params=()) -> list[dict]:
        with self.conn() as c:
            return [dict(r) for r in c.execute(sql, params).fetchall()]

    def frame(self, table: str, columns: str = "*") -> pd.DataFrame:
        with self.conn() as c:
            return pd.read_sql_query(f'SELECT {columns} FROM "{table}"', c)


def load_into_database(conn, path: Path) -> str | None:
    """Copy the register file into the database (schema land_register) in one transaction: readers see the
    old register or the new one, never a part. Returns the new version token, or None when the database
    holds a register its user imported and the file's is not (nothing overwrites an import)."""
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        file_origin = _check_file(source, path)
        with conn.transaction():
            conn.execute(f"SELECT pg_advisory_xact_lock({_DB_LOCK})")
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {DB_SCHEMA}")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {DB_SCHEMA}.meta (id integer PRIMARY KEY CHECK (id = 1), "
                         "origin text NOT NULL, version text NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now())")
            held = conn.execute(f"SELECT origin FROM {DB_SCHEMA}.meta").fetchone()
            if held is not None and held[0] not in ("demo", file_origin):
                return None
            for name, (key, _) in TABLES.items():
                columns = [(c[1], _TO_PG.get(c[2].upper(), "text"))
                           for c in source.execute(f'PRAGMA table_info("{name}")').fetchall()]
                conn.execute(f'DROP TABLE IF EXISTS {DB_SCHEMA}."{name}"')
                conn.execute(f'CREATE TABLE {DB_SCHEMA}."{name}" ('
                             + ", ".join(f"{_quoted(c)} {t}" for c, t in columns) + ")")
                rows = source.execute(f'SELECT * FROM "{name}"')
                with conn.cursor().copy(f'COPY {DB_SCHEMA}."{name}" FROM STDIN') as copy:
                    while chunk := rows.fetchmany(COPY_ROWS):
                        for row in chunk:
                            copy.write_row(row)
                if key:
                    conn.execute(f'ALTER TABLE {DB_SCHEMA}."{name}" ADD UNIQUE ("{key}")')
            version = uuid.uuid4().hex
            conn.execute(f"INSERT INTO {DB_SCHEMA}.meta (id, origin, version) VALUES (1, %s, %s) ON CONFLICT (id) "
                         "DO UPDATE SET origin = EXCLUDED.origin, version = EXCLUDED.version, loaded_at = now()",
                         (file_origin, version))
        return version
    finally:
        source.close()


def _check_file(source: sqlite3.Connection, path: Path) -> str:
    """The file's origin, after checking it holds every table and column the service reads."""
    try:
        row = source.execute("SELECT value FROM meta WHERE key = 'origin'").fetchone()
        present = {t: {c[1] for c in source.execute(f'PRAGMA table_info("{t}")')} for t in COLUMNS}
    except sqlite3.DatabaseError as exc:
        row, present = None, {"meta": str(exc)}
    missing = [f"{t}.{c}" for t, columns in COLUMNS.items() for c in columns if c not in present.get(t, ())]
    if row is None or missing:
        what = ", ".join(missing) if row is not None else "meta.origin"
        raise GisError("register_incomplete", f"土地登记簿 {path} 缺少：{what}；数据库中的登记簿未改变",
                       f"the land register {path} lacks {what}; the database's register is unchanged", 422)
    return row[0]


def database_load(settings, conn) -> str | None:
    """`gis-service db load`: the layers directory's register into the database (the Domain hook)."""
    path = path_in(settings.layers_dir)
    if not path.exists():
        return None
    if load_into_database(conn, path) is None:
        return "数据库中的土地登记簿为用户导入，未被覆盖 the database's land register was imported: kept"
    return f"已载入土地登记簿 loaded the land register ({origin(path)})"


class DatabaseRegister(Register):
    """The register in the database, read through a local copy per version (see the module docstring)."""

    source = f"register (database schema {DB_SCHEMA})"

    def __init__(self, pool, cache_dir: Path):
        self.pool, self.cache_dir = pool, Path(cache_dir)
        self._local = threading.local()
        self._copy_lock = threading.Lock()
        self._checked: tuple[float, str | None] | None = None

    def _db_version(self) -> str | None:
        now = time.monotonic()
        cached = self._checked
        if cached is not None and now - cached[0] < CHECK_S:
            return cached[1]
        with self.pool.connection() as conn:
            present = conn.execute(f"SELECT to_regclass('{DB_SCHEMA}.meta')").fetchone()[0]
            row = conn.execute(f"SELECT version FROM {DB_SCHEMA}.meta").fetchone() if present else None
        self._checked = (now, row[0] if row else None)
        return self._checked[1]

    def exists(self) -> bool:
        return self._db_version() is not None

    def _check_due(self, now: float) -> bool:
        """Always: the version is this process's (read from the database at most every CHECK_S), so the check
        costs nothing, and every thread reads the register of the version the land service's caches are keyed
        by (a thread checking on its own clock read the previous register up to CHECK_S after that)."""
        return True

    def require(self) -> None:
        if not self.exists():
            raise _missing("数据库中", "the database", "gis-service db load")

    def version(self) -> str:
        version = self._db_version()
        if version is None:
            self.require()
        return version

    @property
    def path(self) -> Path:
        """The local copy of the current version, made if missing. One copier at a time per var/land: a thread
        lock within the process and a file lock shared with the other workers of the instance (`serve
        --workers N`); the others wait, then use that copy. A version found replaced meanwhile (this process
        checked it up to CHECK_S ago) is looked up again."""
        for _ in range(3):
            version = self.version()
            path = self.cache_dir / f"register-{version}.sqlite"
            if path.exists():
                return path
            with self._copy_lock, _file_lock(self.cache_dir / ".register.lock"):
                if path.exists() or self._copy(version, path):
                    return path
            self._checked = None  # the database holds a newer register than this process knew of
        raise GisError("register_reloaded", "土地登记簿正在重新载入，请重试",
                       "the land register was reloaded meanwhile; retry", 503)

    def _copy(self, version: str, path: Path) -> bool:
        """Copy `version` of the database's register to `path`; False (nothing written) when the database
        holds another version now. Older copies are removed once the new one is in place (an open connection
        to a removed copy keeps reading it)."""
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        out = sqlite3.connect(tmp)
        try:
            out.execute("PRAGMA journal_mode = OFF")
            with self.pool.connection() as conn, conn.transaction():
                # The load lock held shared, then each statement READ COMMITTED: no load commits while this
                # copy reads, and the copy reads what the last load committed. (A snapshot taken before a
                # load's commit sees the tables that load re-created as empty.) A load in progress is waited
                # for up to LOAD_WAIT_S.
                conn.execute(f"SET LOCAL lock_timeout = '{LOAD_WAIT_S}s'")
                try:
                    conn.execute(f"SELECT pg_advisory_xact_lock_shared({_DB_LOCK})")
                except psycopg.errors.LockNotAvailable:
                    raise GisError("register_loading", "土地登记簿正在载入数据库，请稍后重试",
                                   "the land register is being loaded into the database; retry later", 503) from None
                held = conn.execute(f"SELECT origin, version FROM {DB_SCHEMA}.meta").fetchone()
                if held is None or held[1] != version:
                    return False
                for name in TABLES:
                    columns = conn.execute(
                        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s "
                        "AND table_name = %s ORDER BY ordinal_position", (DB_SCHEMA, name)).fetchall()
                    out.execute(f'CREATE TABLE "{name}" ('
                                + ", ".join(f'{_quoted(c)} {_FROM_PG.get(t, "TEXT")}' for c, t in columns) + ")")
                    marks = ", ".join("?" * len(columns))
                    with conn.cursor(name=f"copy_{name}") as cur:
                        cur.execute(f'SELECT * FROM {DB_SCHEMA}."{name}"')
                        while chunk := cur.fetchmany(COPY_ROWS):
                            out.executemany(f'INSERT INTO "{name}" VALUES ({marks})', chunk)
            _finish(out, held[0])
            os.replace(tmp, path)
        finally:
            out.close()
            tmp.unlink(missing_ok=True)
        for old in path.parent.glob("register-*.sqlite"):  # earlier versions
            if old != path:
                old.unlink(missing_ok=True)
        return True


@contextmanager
def _file_lock(path: Path):
    """An exclusive lock on `path` shared by every process on this machine (released when closed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def open_register(settings) -> Register:
    """The register where the settings put the data: the layers directory, or the database."""
    if settings.database_url:
        from ..store.postgis import shared_pool

        return DatabaseRegister(shared_pool(settings.database_url), settings.var_dir / "land")
    return Register(path_in(settings.layers_dir))
