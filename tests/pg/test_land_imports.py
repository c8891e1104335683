"""Land imports on two instances over one database (issue #10): what one instance imports, the other lists and
rolls back — the saved version is in the database, not in the importing instance's var directory — and the
history of the import and of the rollback is the same seen from both."""

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
