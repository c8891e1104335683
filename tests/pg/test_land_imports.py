"""Land imports on two instances over one database (issue #10): what one instance imports, the other lists and
rolls back — the saved version is in the database, not in the importing instance's var directory — and the
history of the import and of the rollback is the same seen from both."""

import dataclasses

import pytest

from gis_service.config import Settings
from gis_service.domains import DomainContext
from gis_service.errors import GisError
from gis_service.land import imports
from gis_service.land.history import History
from gis_service.rules import RuleBook
from gis_service.store.pgrecords import PostgresRecordStore
from gis_service.store.postgis import PostGISStore
from tests.conftest import fresh_database
from tests.land.test_imports import national_frame, sample_plots


@pytest.fixture(scope="module")
def database(pg_loaded, catalog, store):
    url = fresh_database(pg_loaded, "land_imports")
    PostGISStore(url).write(catalog.get("plots"), sample_plots(catalog, store), origin="demo")
    return url


def instance(database, catalog, var_dir):
    settings = Settings(var_dir=var_dir, database_url=database)
    return DomainContext(settings, catalog, PostGISStore(database), PostgresRecordStore(database),
                         RuleBook.load().domain("land"), None)


def test_an_import_on_one_instance_is_rolled_back_on_the_other(database, catalog, tmp_path):
    a, b = instance(database, catalog, tmp_path / "a"), instance(database, catalog, tmp_path / "b")
    layer = catalog.get("plots")
    before = a.store.read_frame(layer)
    frame = national_frame(before, "EPSG:4548")
    frame["DKMC"] = "甲实例导入"
    frame.to_file(tmp_path / "new.gpkg")
    result = imports.run_import(a, tmp_path / "new.gpkg", dry_run=False)
    assert result["written"] == len(before) and result["history_changed"] == len(before)
    assert set(b.store.read_frame(layer)["dkmc"]) == {"甲实例导入"} and b.store.origin(layer) == "imported"
    listed = [imports.versions_for(ctx, layer, 0).list() for ctx in (a, b)]
    assert listed[0] == listed[1] and [m["origin"] for m in listed[0]] == ["demo"]
    assert listed[0][0]["features"] == len(before)
    assert not list((tmp_path / "a").rglob("*.gpkg"))  # nothing saved in the importing instance's files

    restored = imports.run_rollback(b)  # the other instance
    assert restored["features"] == len(before) and restored["history_changed"] == len(before)
    back = a.store.read_frame(layer)
    assert back["dkmc"].tolist() == before["dkmc"].tolist() and a.store.origin(layer) == "demo"
    assert imports.versions_for(a, layer, 0).list() == []
    with pytest.raises(GisError) as err:
        imports.run_rollback(a)
    assert err.value.status == 409
    dkbm = before["dkbm"].iloc[0]
    seen = [[v["data"]["dkmc"] for v in History(ctx.records).versions("plot", dkbm)] for ctx in (a, b)]
    assert seen[0] == seen[1] == [before["dkmc"].iloc[0], "甲实例导入", before["dkmc"].iloc[0]]
    # the saved copy's table and metadata are gone with it
    import psycopg

    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM gis.layer_meta WHERE layer_id LIKE 'plots\\_\\_saved%'"
                            ).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'plots\\_\\_saved%'").fetchone()[0] == 0


@pytest.fixture()
def own_database(pg_loaded, catalog, store, request):
    url = fresh_database(pg_loaded, f"land_imports_{request.node.name[5:40]}")
    PostGISStore(url).write(catalog.get("plots"), sample_plots(catalog, store), origin="demo")
    return url


def import_named(ctx, tmp_path, name):
    layer = ctx.catalog.get("plots")
    frame = national_frame(ctx.store.read_frame(layer), "EPSG:4548")
    frame["DKMC"] = name
    frame.to_file(tmp_path / f"{name}.gpkg")
    return imports.run_import(ctx, tmp_path / f"{name}.gpkg", dry_run=False)


def saved_tables(url):
    import psycopg

    with psycopg.connect(url) as conn:
        meta = conn.execute("SELECT layer_id FROM gis.layer_meta WHERE layer_id LIKE 'plots\\_\\_saved%' "
                            "ORDER BY 1").fetchall()
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'plots\\_\\_saved%' "
                              "ORDER BY 1").fetchall()
    return [r[0] for r in meta], [r[0] for r in tables]


def test_versions_keep_their_order_when_an_instance_clock_is_behind(own_database, catalog, tmp_path, monkeypatch):
    """Instance b's clock is an hour behind a's: the version b saves after a's is still the newest, so a
    rollback restores what b replaced (the ids came from each machine's clock and sorted b's first)."""
    import datetime as dt
    import types

    a, b = instance(own_database, catalog, tmp_path / "a"), instance(own_database, catalog, tmp_path / "b")
    layer = catalog.get("plots")
    import_named(a, tmp_path, "甲")  # a saves the demo data

    class Behind(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime.now(tz) - dt.timedelta(hours=1)

    monkeypatch.setattr(imports, "dt", types.SimpleNamespace(datetime=Behind, timezone=dt.timezone,
                                                             timedelta=dt.timedelta))
    import_named(b, tmp_path, "乙")  # b saves a's import, with its clock an hour behind
    listed = imports.versions_for(a, layer, 5).list()
    assert [m["origin"] for m in listed] == ["demo", "imported"] and listed[1]["replaced_by"] == "乙.gpkg"
    imports.run_rollback(a)
    assert set(a.store.read_frame(layer)["dkmc"]) == {"甲"}
    imports.run_rollback(b)
    assert a.store.origin(layer) == "demo" and imports.versions_for(a, layer, 5).list() == []


def test_a_failed_save_leaves_no_saved_table_and_an_interrupted_one_is_cleaned(own_database, catalog, tmp_path):
    """The versions row refused (a trigger raising, as a full disk or a lost connection would) leaves no saved
    table behind — 2 000 000 plots' copy, listed nowhere and dropped by nothing; what a crashed save left (a row
    without its table, a table without its row) is not listed and is removed by the next save."""
    import psycopg

    a = instance(own_database, catalog, tmp_path / "a")
    layer = catalog.get("plots")
    versions = imports.versions_for(a, layer, 5)
    assert versions.list() == []  # creates land_imports.versions
    with psycopg.connect(own_database, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION land_imports.refuse() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$BEGIN RAISE EXCEPTION 'refused (test)'; END$$")
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON land_imports.versions FOR EACH ROW "
                     "EXECUTE FUNCTION land_imports.refuse()")
    with pytest.raises(psycopg.Error, match="refused"):
        import_named(a, tmp_path, "甲")
    assert saved_tables(own_database) == ([], []) and a.store.origin(layer) == "demo"
    with psycopg.connect(own_database, autocommit=True) as conn:
        conn.execute("DROP TRIGGER refuse ON land_imports.versions")
        # a crash after the row and before its table; one (of the earlier code) after a table without its row
        conn.execute("INSERT INTO land_imports.versions VALUES ('plots', '20200101T000000000000Z', %s)",
                     ('{"id": "20200101T000000000000Z", "origin": "demo"}',))
    a.store.write(dataclasses.replace(layer, id="plots__saved_20200102t000000000000z"), a.store.read_frame(layer),
                  origin="demo")
    assert versions.list() == []
    import_named(a, tmp_path, "甲")
    listed = versions.list()
    assert [m["origin"] for m in listed] == ["demo"]
    assert saved_tables(own_database) == ([f"plots__saved_{listed[0]['id'].lower()}"],) * 2
    with psycopg.connect(own_database) as conn:
        assert conn.execute("SELECT count(*) FROM land_imports.versions").fetchone()[0] == 1


def test_import_versions_and_rollback_over_http_on_postgis(own_database, catalog, tmp_path):
    """POST /api/land/import, GET /api/land/import/versions and POST /api/land/import/rollback on a live server
    over PostGIS: the saved version is listed, restored, and seen nowhere else (OGC collections)."""
    import requests

    from tests.conftest import LiveServer, live_server

    layer = catalog.get("plots")
    plots = PostGISStore(own_database).read_frame(layer)
    frame = national_frame(plots, "EPSG:4527")
    frame["DKMC"] = "导入地块"
    frame.to_file(tmp_path / "new.gpkg")
    dkbm = plots["dkbm"].iloc[0]
    var = tmp_path / "var"
    var.mkdir()
    with live_server(var, database_url=own_database) as (_, url):
        server = LiveServer(url, var, own_database)
        headers = {"X-API-Key": server.key("rural")}

        def call(method, path, **kwargs):
            return requests.request(method, url + path, headers=headers, timeout=120, **kwargs)

        card = lambda: call("GET", f"/api/land/plots/{dkbm}").json()["dkmc"]  # noqa: E731
        assert card() == plots["dkmc"].iloc[0]
        done = call("POST", "/api/land/import", data=(tmp_path / "new.gpkg").read_bytes())
        assert done.status_code == 200, done.text
        assert done.json()["written"] == len(plots) and done.json()["history_changed"] == len(plots)
        assert card() == "导入地块"
        listed = call("GET", "/api/land/import/versions").json()["versions"]
        assert [(v["origin"], v["features"]) for v in listed] == [("demo", len(plots))]
        collections = [c["id"] for c in call("GET", "/ogc/collections").json()["collections"]]
        assert "plots" in collections and not [c for c in collections if "__saved" in c]
        back = call("POST", "/api/land/import/rollback")
        assert back.status_code == 200, back.text
        assert back.json()["restored"]["id"] == listed[0]["id"] and back.json()["features"] == len(plots)
        assert card() == plots["dkmc"].iloc[0] and call("GET", "/api/land/import/versions").json()["versions"] == []
        again = call("POST", "/api/land/import/rollback")
        assert again.status_code == 409 and again.json()["code"] == "no_previous_version"
    assert saved_tables(own_database) == ([], [])


def test_an_import_done_while_its_lock_connection_was_lost_is_not_reported_failed(own_database, catalog, tmp_path,
                                                                                   monkeypatch):
    """The advisory lock's own session ends during the write (terminated, as an idle_session_timeout or a
    dropped connection would): the import is written and its history recorded, so it answers its result —
    unlocking raised, and the client got an error for a done import (and, retrying, imported twice)."""
    import psycopg

    a = instance(own_database, catalog, tmp_path / "a")
    layer = catalog.get("plots")
    write = a.store.write

    def write_then_lose_the_lock(target, *args, **kwargs):
        count = write(target, *args, **kwargs)
        if target.id == "plots":
            with psycopg.connect(own_database, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                             "AND pid <> pg_backend_pid()")
        return count

    monkeypatch.setattr(a.store, "write", write_then_lose_the_lock)
    result = import_named(a, tmp_path, "甲")
    assert result["written"] == len(a.store.read_frame(layer)) and a.store.origin(layer) == "imported"
    monkeypatch.setattr(a.store, "write", write)
    imports.run_rollback(a)  # the lock is free
    assert a.store.origin(layer) == "demo"


def test_the_first_listings_on_several_instances_at_once_all_answer(own_database, catalog, tmp_path):
    """The versions table is made on first use; several instances (threads here) using it first at the same
    moment each ran CREATE TABLE IF NOT EXISTS, and all but one could fail on pg_type's unique key (a 500 for
    GET /api/land/import/versions, or a failed import)."""
    import threading

    import psycopg

    layer = catalog.get("plots")
    contexts = [instance(own_database, catalog, tmp_path / str(i)) for i in range(4)]
    errors = []
    for _ in range(8):
        with psycopg.connect(own_database, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS land_imports CASCADE")
        barrier = threading.Barrier(len(contexts))

        def first_listing(ctx):
            barrier.wait()
            try:
                assert imports.versions_for(ctx, layer, 5).list() == []
            except Exception as exc:  # noqa: BLE001  collected, asserted below
                errors.append(repr(exc)[:200])

        threads = [threading.Thread(target=first_listing, args=(ctx,)) for ctx in contexts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
