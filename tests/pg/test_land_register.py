"""The land register in PostgreSQL (issue #10): `db load` copies the register file into the database in one
transaction; every instance reads it through a local copy per version; a reload is seen within a second; a
failed load keeps the previous register; a register the user imported is never overwritten by a demo one."""

import sqlite3
import time

import pandas as pd
import psycopg
import pytest

from gis_service.config import Settings
from gis_service.land import imports, register
from gis_service.store.postgis import make_pool
from tests.conftest import fresh_database
from tests.land.conftest import REGISTER


@pytest.fixture(scope="module")
def database(pg_loaded):
    return fresh_database(pg_loaded, "land_register_tests")


@pytest.fixture(scope="module")
def pool(database):
    pool = make_pool(database, max_size=2, name="register-tests")
    yield pool
    pool.close()


def file_rows(path, table) -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return sorted(conn.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)
    finally:
        conn.close()


def db_rows(database, table) -> list[tuple]:
    with psycopg.connect(database) as conn:
        return sorted(conn.execute(f'SELECT * FROM land_register."{table}"').fetchall(), key=repr)


def small_register(path, origin, transferee):
    """A register of one employer, household, contract, transfer and mortgage, written as build-layers does."""
    one = {"dkbm": "131002101001000100001"[:19], "village_code": "131002101001"}
    tables = {
        "employers": pd.DataFrame([{"fbfbm": "13100210100101", "name": "一村", "village_code": one["village_code"]}]),
        "households": pd.DataFrame([{"cbfbm": "131002101001010001", "fbfbm": "13100210100101", "name": "张三",
                                     "village_code": one["village_code"]}]),
        "contracts": pd.DataFrame([{"cbhtbm": "131002101001010001J", "cbfbm": "131002101001010001",
                                    "fbfbm": "13100210100101", "htzmj": 3.5, "cbfs": "家庭承包",
                                    "cbqxq": "1998-10-01", "cbqxz": "2028-09-30"}]),
        "transfers": pd.DataFrame([{"lzhtbm": "LZ1", "dkbm": one["dkbm"], "cbfbm": "131002101001010001",
                                    "transferee": transferee, "lzmj": 1.25, "standard_form": True,
                                    "cbhtbm": "131002101001010001J", "lzfs": "出租", "lzqx_years": 5,
                                    "start_date": "2024-01-01", "end_date": "2028-12-31", "use": "种植粮食作物"}]),
        "mortgages": pd.DataFrame([{"dyid": "DY1", "dkbm": one["dkbm"], "amount_wan": 10.0, "lzhtbm": "LZ1",
                                    "borrower": "王二", "lender": "农商银行", "term_years": 3,
                                    "start_date": "2024-03-01", "end_date": "2027-02-28", "status": "抵押中"}]),
    }
    register.write(path, tables, origin)
    return path


def test_db_load_copies_every_table_of_the_register_file_unchanged(pg_loaded):
    # pg_loaded ran what `gis-service db load` runs: the layers, then each domain's database_load
    for table in register.TABLES:
        assert db_rows(pg_loaded, table) == file_rows(REGISTER, table), table
    with psycopg.connect(pg_loaded) as conn:
        assert conn.execute("SELECT origin FROM land_register.meta").fetchone()[0] == register.origin(REGISTER)


def test_instances_read_the_database_register_through_a_local_copy_per_version(database, pool, tmp_path):
    reader = register.DatabaseRegister(pool, tmp_path / "cache")
    households = reader.rows("SELECT cbfbm, name FROM households ORDER BY cbfbm LIMIT 5")
    conn = sqlite3.connect(REGISTER)
    expected = [dict(zip(("cbfbm", "name"), r)) for r in conn.execute(
        "SELECT cbfbm, name FROM households ORDER BY cbfbm LIMIT 5")]
    conn.close()
    assert households == expected
    first = reader.version()
    assert [p.name for p in (tmp_path / "cache").glob("register-*.sqlite")] == [f"register-{first}.sqlite"]

    # a reload (another machine's `db load`) is seen within CHECK_S; the old copy is replaced
    replacement = small_register(tmp_path / "small.sqlite", "demo", "李四")
    with psycopg.connect(database, autocommit=True) as conn:
        second = register.load_into_database(conn, replacement)
    assert second is not None and second != first
    time.sleep(register.CHECK_S + 0.1)
    assert reader.rows("SELECT transferee, lzmj, standard_form FROM transfers") == [
        {"transferee": "李四", "lzmj": 1.25, "standard_form": 1}]
    assert reader.version() == second
    assert [p.name for p in (tmp_path / "cache").glob("register-*.sqlite")] == [f"register-{second}.sqlite"]


def test_a_failed_load_keeps_the_previous_register(database, pool, tmp_path):
    good = small_register(tmp_path / "good.sqlite", "demo", "王五")
    with psycopg.connect(database, autocommit=True) as conn:
        before = register.load_into_database(conn, good)
    broken = small_register(tmp_path / "broken.sqlite", "demo", "赵六")
    conn = sqlite3.connect(broken)
    # the last table copied has a value its column's type refuses: the failure comes after four tables were replaced
    conn.execute("UPDATE mortgages SET amount_wan = 'abc'")
    conn.commit()
    conn.close()
    with psycopg.connect(database, autocommit=True) as conn, pytest.raises(psycopg.errors.InvalidTextRepresentation):
        register.load_into_database(conn, broken)
    assert db_rows(database, "transfers")[0][3] == "王五"
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT version FROM land_register.meta").fetchone()[0] == before


def test_a_demo_register_never_overwrites_an_imported_one(database, pool, tmp_path):
    imported = small_register(tmp_path / "imported.sqlite", "imported", "用户导入")
    demo = small_register(tmp_path / "demo.sqlite", "demo", "演示")
    with psycopg.connect(database, autocommit=True) as conn:
        assert register.load_into_database(conn, imported) is not None
        assert register.load_into_database(conn, demo) is None
        assert conn.execute("SELECT origin FROM land_register.meta").fetchone()[0] == "imported"
        # a newer import replaces the import
        assert register.load_into_database(conn, small_register(tmp_path / "i2.sqlite", "imported", "再次导入"))
    assert db_rows(database, "transfers")[0][3] == "再次导入"


def test_a_database_without_a_register_says_how_to_load_it(pg_url, tmp_path):
    base = pg_url.rsplit("/", 1)[0]
    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS no_register")
        conn.execute("CREATE DATABASE no_register")
    pool = make_pool(base + "/no_register", max_size=1, name="no-register")
    try:
        reader = register.DatabaseRegister(pool, tmp_path)
        assert not reader.exists()
        with pytest.raises(register.GisError) as err:
            reader.require()
        assert err.value.status == 503 and "gis-service db load" in err.value.message_en
    finally:
        pool.close()


def test_one_land_import_at_a_time_across_instances(database, catalog, tmp_path):
    """Two instances (own var directories) over one database: the second import waits for nothing and is told
    another is running; once the first ends, it may run."""
    layer = catalog.get("plots")
    first, second = (imports.Versions(Settings(var_dir=tmp_path / name, database_url=database), layer, 5, None)
                     for name in ("a", "b"))
    with first.lock():
        with pytest.raises(register.GisError) as err, second.lock():
            pass
        assert err.value.status == 409 and err.value.code == "import_busy"
    with second.lock():
        with pytest.raises(register.GisError), first.lock():
            pass
