"""The local copies of the database's land register (DatabaseRegister, issue #10) when a load commits while a
copy is being made, and when two workers of one instance (`serve --workers 2`) share var/land."""

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from gis_service.land import register
from gis_service.store.postgis import make_pool
from tests.conftest import fresh_database
from tests.pg.test_land_register import small_register


def load(url, path):
    with psycopg.connect(url, autocommit=True) as conn:
        return register.load_into_database(conn, path)


def wait_for_blocked(url, n):
    """Until n sessions of the database wait for a lock (a loop on the server's lock table, 60 s at most)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(600):
            if conn.execute("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                            "WHERE NOT l.granted AND a.datname = current_database()").fetchone()[0] >= n:
                return
            time.sleep(0.1)
    raise AssertionError(f"{n} sessions never waited for a lock")


def copy_tables(path) -> dict:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in register.TABLES}
    finally:
        conn.close()


@pytest.fixture
def pool_for(pg_loaded):
    pools = []

    def make(name):
        url = fresh_database(pg_loaded, name)
        pools.append(make_pool(url, max_size=4, name=name))
        return url, pools[-1]

    yield make
    for pool in pools:
        pool.close()


def test_a_copy_made_while_a_load_commits_is_the_old_or_the_new_register_never_an_empty_one(pool_for, tmp_path):
    url, pool = pool_for("register_copy_race")
    old, new = (small_register(tmp_path / f"{n}.sqlite", "demo", n) for n in ("旧", "新"))
    load(url, old)
    reader = register.DatabaseRegister(pool, tmp_path / "cache")
    old_version = reader.version()  # the old register is current; no local copy made yet
    answers: dict = {}
    with psycopg.connect(url) as holder:
        # the load below replaces every table, then waits at its last step (the version row) until we commit
        holder.execute("LOCK TABLE land_register.meta IN EXCLUSIVE MODE")
        loading = threading.Thread(target=lambda: answers.update(version=load(url, new)))
        loading.start()
        wait_for_blocked(url, 1)
        copying = threading.Thread(target=lambda: answers.update(
            rows=reader.rows("SELECT transferee FROM transfers"), households=reader.rows("SELECT name FROM households")))
        copying.start()  # reads the version row (the old one) and then waits for the tables the load holds
        wait_for_blocked(url, 2)
    loading.join(60)
    copying.join(60)
    assert answers["version"] not in (None, old_version)
    # the copy holds one whole register, the old or the new one: here the new (the load committed before the
    # copy read any table), which is also what the database holds now
    assert answers["rows"] == [{"transferee": "新"}] and answers["households"] == [{"name": "张三"}]
    copies = list((tmp_path / "cache").glob("register-*.sqlite"))
    assert [p.name for p in copies] == [f"register-{answers['version']}.sqlite"]
    assert copy_tables(copies[0]) == copy_tables(new)


def read_in_new_thread(reader, sql):
    """A request on a thread of its own (its first register read: the thread opens the local copy)."""
    out: dict = {}

    def run():
        try:
            out["rows"] = reader.rows(sql)
        except Exception as exc:  # noqa: BLE001 - the test reports what the request met
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join(120)
    return out


def test_two_workers_sharing_var_land_never_remove_each_others_current_copy(pool_for, tmp_path, monkeypatch):
    # Each worker checks the database's version at most every CHECK_S; made long here so that worker B still
    # holds the old version when worker A has already copied the new one (as in the second after a load).
    monkeypatch.setattr(register, "CHECK_S", 3600.0)
    url, pool = pool_for("register_two_workers")
    cache = tmp_path / "var" / "land"
    old, new = (small_register(tmp_path / f"{n}.sqlite", "demo", n) for n in ("旧", "新"))
    load(url, old)
    worker_b = register.DatabaseRegister(pool, cache)
    assert worker_b.rows("SELECT transferee FROM transfers") == [{"transferee": "旧"}]
    new_version = load(url, new)
    worker_a = register.DatabaseRegister(pool, cache)  # its first check comes after the load
    assert read_in_new_thread(worker_a, "SELECT transferee FROM transfers") == {"rows": [{"transferee": "新"}]}
    current = cache / f"register-{new_version}.sqlite"
    assert current.exists()
    # worker B's new thread: B still believes the old version is current; its copy was replaced by A's
    answer = read_in_new_thread(worker_b, "SELECT transferee FROM transfers")
    assert answer == {"rows": [{"transferee": "新"}]}
    assert current.exists() and copy_tables(current) == copy_tables(new)  # A's copy kept, not made again
    assert read_in_new_thread(worker_a, "SELECT transferee FROM transfers") == {"rows": [{"transferee": "新"}]}


def test_column_names_with_quotes_are_kept_as_names_not_read_as_sql(pool_for, tmp_path):
    url, pool = pool_for("register_column_names")
    path = small_register(tmp_path / "quoted.sqlite", "imported", "名")
    odd = 'remark"); DROP TABLE land_register.meta; --'
    conn = sqlite3.connect(path)
    conn.execute(f'ALTER TABLE transfers ADD COLUMN "{odd.replace(chr(34), chr(34) * 2)}" TEXT')
    conn.execute("UPDATE transfers SET " + f'"{odd.replace(chr(34), chr(34) * 2)}"' + " = '备注'")
    conn.commit()
    conn.close()
    version = load(url, path)
    reader = register.DatabaseRegister(pool, tmp_path / "cache")
    assert reader.version() == version
    with reader.conn() as c:
        row = c.execute("SELECT * FROM transfers").fetchone()
    assert dict(row)[odd] == "备注" and dict(row)["transferee"] == "名"
    assert copy_tables(reader.path) == copy_tables(path)


@pytest.mark.parametrize("damage", ["ALTER TABLE transfers DROP COLUMN standard_form", "DROP TABLE mortgages",
                                    "DELETE FROM meta"])
def test_a_register_file_without_what_the_service_reads_is_refused_and_the_previous_one_kept(
        pool_for, tmp_path, damage):
    url, pool = pool_for("register_incomplete")
    before = load(url, small_register(tmp_path / "good.sqlite", "demo", "好"))
    broken = small_register(tmp_path / "broken.sqlite", "demo", "坏")
    conn = sqlite3.connect(broken)
    conn.execute(damage)
    conn.commit()
    conn.close()
    with pytest.raises(register.GisError) as err:
        load(url, broken)
    assert err.value.code == "register_incomplete" and err.value.status == 422
    lacking = {"standard_form": "transfers.standard_form", "mortgages": "mortgages.dyid", "meta": "meta.origin"}
    assert next(v for k, v in lacking.items() if k in damage) in err.value.message_en
    reader = register.DatabaseRegister(pool, tmp_path / "cache")
    assert reader.version() == before
    assert reader.rows("SELECT transferee, standard_form FROM transfers") == [{"transferee": "好", "standard_form": 1}]


def test_every_thread_reads_the_register_of_the_version_its_process_last_saw(pool_for, tmp_path, monkeypatch):
    monkeypatch.setattr(register, "CHECK_S", 3600.0)  # no check comes due by itself during the test
    url, pool = pool_for("register_thread_versions")
    old, new = (small_register(tmp_path / f"{n}.sqlite", "demo", n) for n in ("旧", "新"))
    load(url, old)
    reader = register.DatabaseRegister(pool, tmp_path / "cache")
    sql = "SELECT transferee FROM transfers"
    with ThreadPoolExecutor(1) as one:  # one request thread; its connection is kept between requests
        assert one.submit(reader.rows, sql).result() == [{"transferee": "旧"}]
        new_version = load(url, new)
        reader._checked = None  # the process's version check comes due (CHECK_S after the last one) ...
        assert reader.version() == new_version  # ... and names the new register (LandService keys its caches by it)
        assert one.submit(reader.rows, sql).result() == [{"transferee": "新"}]
