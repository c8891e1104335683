"""The PostGIS store answers exactly what the embedded store answers, on the same layers: the same features,
counts, properties, GeoJSON text and masked values, for bbox, CQL2 (comparisons, LIKE, IN, BETWEEN, NULL,
CASEI, dates and timestamps, S_* with geometry and BBOX literals), sorting, paging and datetime filters; the
personal fields are masked by PostgreSQL exactly as in Python; a layer write is all or nothing."""

import geopandas as gpd
import psycopg
import pytest
import shapely

from gis_service.errors import GisError
from gis_service.privacy import mask_sql, mask_value
from gis_service.store import FeatureQuery, cql2
from gis_service.store.postgis import PostGISStore
from tests.conftest import fresh_database
from tests.test_privacy import SAMPLES

BOX = (116.60, 39.50, 116.64, 39.53)


@pytest.fixture(scope="module")
def pg(pg_loaded):
    return PostGISStore(pg_loaded)


@pytest.mark.parametrize("kind", list(SAMPLES))
def test_postgres_masking_agrees_with_python(pg_url, kind):
    with psycopg.connect(pg_url) as conn:
        for value in SAMPLES[kind]:
            got = conn.execute(f"SELECT {mask_sql(kind, 'v', dialect='postgres')} FROM (SELECT %s::text AS v) s",
                               (value,)).fetchone()[0]
            assert got == mask_value(kind, value)


def same(a, b):
    assert a.number_matched == b.number_matched
    assert a.fids == b.fids
    assert a.properties == b.properties
    assert a.geometry_json == b.geometry_json
    assert shapely.equals(a.geometries, b.geometries).all()


FILTERS = [
    "transfer_status = '出租' AND contract_area_mu >= 2",
    "contract_area_mu BETWEEN 1.5 AND 2.5 OR is_basic_farmland = false",
    "dkmc LIKE '%北洼' AND NOT (county_adcode IN (131003, 131022))",
    "CASEI(current_use) = CASEI('林木') AND mortgage_status <> '抵押中'",
    "contract_start < DATE('1995-01-01') AND contract_end >= DATE('2024-06-30')",
    "contract_start > TIMESTAMP('1994-03-01T10:00:00+08:00')",
    "contractor_phone IS NULL OR (demo = true AND contract_area_mu > 4.4)",
    f"S_INTERSECTS(geom, BBOX({BOX[0]}, {BOX[1]}, {BOX[2]}, {BOX[3]}))",
    f"S_WITHIN(geom, POLYGON(({BOX[0]} {BOX[1]}, {BOX[2]} {BOX[1]}, {BOX[2]} {BOX[3]}, {BOX[0]} {BOX[1]})))",
    f"S_DISJOINT(geom, BBOX(115.0, 38.0, 116.62, 41.0)) AND S_INTERSECTS(geom, BBOX({BOX[0]}, {BOX[1]}, {BOX[2]}, {BOX[3]}))",
]


@pytest.mark.parametrize("text", FILTERS)
def test_cql2_filters_match_the_embedded_store(store, pg, catalog, text):
    plots = catalog.get("plots")
    q = dict(cql=cql2.parse(text), limit=40, sortby=[("dkbm", False)])
    a, b = store.query(plots, FeatureQuery(**q)), pg.query(plots, FeatureQuery(**q))
    same(a, b)
    assert a.number_matched > 0


def test_bbox_paging_sorting_equals_and_datetime_match(store, pg, catalog):
    plots = catalog.get("plots")
    masked = {f.name: f.personal for f in plots.personal_fields}
    for q in (FeatureQuery(bbox=BOX, limit=30), FeatureQuery(bbox=BOX, limit=30, offset=30),
              FeatureQuery(bbox=BOX, limit=25, sortby=[("contract_area_mu", False), ("dkmc", True)]),
              FeatureQuery(limit=10, offset=99_995), FeatureQuery(equals={"is_basic_farmland": 1}, bbox=BOX, limit=5),
              FeatureQuery(datetime=("1995-01-01", "1996-06-30"), bbox=BOX, limit=5, columns=["dkbm", "contract_start"]),
              FeatureQuery(bbox=BOX, limit=20, masked=masked)):
        same(store.query(plots, q), pg.query(plots, q))
    page = pg.query(plots, FeatureQuery(bbox=BOX, limit=20, masked=masked))
    clear = store.query(plots, FeatureQuery(bbox=BOX, limit=20))
    for masked_row, clear_row in zip(page.properties, clear.properties):
        for name, kind in masked.items():
            assert masked_row[name] == mask_value(kind, clear_row[name])
            assert clear_row[name] is None or masked_row[name] != clear_row[name]


def test_metadata_get_and_frames_match(store, pg, catalog):
    for layer in catalog:
        if layer.is_raster or not store.exists(layer) or layer.derived:
            continue
        assert pg.count(layer) == store.count(layer)
        assert pg.extent(layer) == pytest.approx(store.extent(layer), abs=3e-5)  # the R-tree keeps float32 (rounded outwards)
        assert pg.time_extent(layer) == store.time_extent(layer)
        assert pg.origin(layer) == store.origin(layer)
        same(store.get(layer, 1), pg.get(layer, 1))
    villages = catalog.get("villages")
    a, b = store.read_frame(villages), pg.read_frame(villages)
    assert a.index.equals(b.index) and a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert a.geometry.geom_equals(b.geometry).all()


def test_a_write_is_all_or_nothing_and_moves_the_version(pg_loaded, catalog):
    pg = PostGISStore(fresh_database(pg_loaded, "writes"))
    counties = catalog.get("counties")
    before, version = pg.read_frame(counties), pg.version(counties)
    broken = before.copy()
    broken.loc[broken.index[3], "geometry"] = shapely.Polygon([(116, 39), (117, 40), (117, 39), (116, 40)])
    with pytest.raises(GisError) as err:
        pg.write(counties, broken, "imported")
    assert err.value.code == "invalid_geometry"
    assert pg.version(counties) == version and pg.origin(counties) == "source"
    one = gpd.GeoDataFrame(before.iloc[:2].copy(), crs=before.crs)
    assert pg.write(counties, one, "imported") == 2
    assert pg.version(counties) != version and pg.origin(counties) == "imported" and pg.count(counties) == 2
    assert pg.read_frame(counties)["adcode"].tolist() == before["adcode"].iloc[:2].tolist()
    with psycopg.connect(pg.url) as conn:  # the old table is gone, no half-loaded table left behind
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'layers'")}
    assert "counties" in tables and not any(t.startswith("counties__") for t in tables)


def test_scans_for_tiles_match_and_stop_after_the_limit(store, pg, catalog):
    from gis_service.store.scan import scan

    plots = catalog.get("plots")
    masked = {f.name: f.personal for f in plots.personal_fields}
    columns = ("dkbm", "is_basic_farmland", "contractor_name")
    a, b = (scan(s, plots, BOX, columns, masked, exact=True) for s in (store, pg))
    order_a, order_b = a.fids.argsort(), b.fids.argsort()
    assert a.fids[order_a].tolist() == b.fids[order_b].tolist() and len(a) > 100
    assert (abs(a.envelopes[order_a] - b.envelopes[order_b]) < 1e-9).all()
    for c in columns:
        assert [a.values[c][i] for i in order_a] == [b.values[c][i] for i in order_b]
    assert len(scan(pg, plots, BOX, columns, masked, limit=100)) == 101  # enough to refuse a dense tile


def test_db_init_leaves_a_table_being_loaded_alone_and_drops_an_abandoned_one(pg_loaded):
    """`db init` on one machine while a load runs on another: the table being filled (its load's advisory lock
    held) stays; the table of a load that died (no session holds its lock) is dropped."""
    from gis_service.store.postgis import _LOADING, drop_unused

    url = fresh_database(pg_loaded, "drop_unused")
    with psycopg.connect(url, autocommit=True) as loader, psycopg.connect(url, autocommit=True) as other:
        for name in ("counties__v9001", "counties__v9002"):
            loader.execute(f'CREATE TABLE layers."{name}" (fid bigint)')
        loader.execute("SELECT pg_advisory_lock(hashtext(%s))", (_LOADING + "counties__v9001",))  # still loading
        drop_unused(other)
        left = {r[0] for r in other.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'layers' "
                                            "AND tablename LIKE 'counties\\_\\_v%'")}
        assert left == {"counties__v9001"}
        loader.execute("SELECT pg_advisory_unlock(hashtext(%s))", (_LOADING + "counties__v9001",))
        drop_unused(other)
        assert other.execute("SELECT to_regclass('layers.\"counties__v9001\"')").fetchone()[0] is None


def test_indexed_fields_are_indexed_with_the_fid_and_a_sorted_page_reads_the_index(pg, pg_loaded, catalog):
    """plots.toml's indexes: (dkbm, fid) and (village_code, fid) B-trees, so the store's sorted page (ORDER BY
    the field, then fid) is an index scan, not a sort of every plot."""
    with psycopg.connect(pg_loaded) as conn:
        defs = [r[0] for r in conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = 'layers' "
                                           "AND tablename = 'plots'")]
        assert any(d.endswith("(dkbm, fid)") for d in defs) and any(d.endswith("(village_code, fid)") for d in defs)
        plan = " ".join(r[0] for r in conn.execute(
            'EXPLAIN SELECT t.fid FROM layers.plots t WHERE TRUE ORDER BY "dkbm" DESC, fid DESC LIMIT 20 OFFSET 40'))
        assert "Index" in plan and "Sort" not in plan
    page = pg.query(catalog.get("plots"), FeatureQuery(limit=20, offset=40, sortby=[("dkbm", False)]))
    everything = pg.read_frame(catalog.get("plots"))["dkbm"]
    assert [p["dkbm"] for p in page.properties] == sorted(everything, reverse=True)[40:60]


def test_a_sorted_page_of_a_big_table_is_planned_as_a_page(pg_loaded, catalog):
    """With the statistics of 2 000 000 plots, the store's sorted page reads 20 entries of the (dkbm, fid)
    index and joins those 20 rows; with LIMIT/OFFSET as parameters the generic plan assumed a tenth of the
    table and merge-joined every plot (2.7 pages/s in bench_store)."""
    from gis_service.store.postgis import make_pool

    url = fresh_database(pg_loaded, "big_plan")
    with psycopg.connect(url, autocommit=True) as conn:  # what the planner believes of a two-million-plot table
        conn.execute("UPDATE pg_class SET reltuples = 2000000 WHERE relname = 'plots' "
                     "AND relnamespace = 'layers'::regnamespace")
    pool = make_pool(url, max_size=1, name="big-plan")  # one connection: the store's statements are on it
    try:
        store = PostGISStore(url, pool=pool)
        page = store.query(catalog.get("plots"), FeatureQuery(limit=20, offset=40, sortby=[("dkbm", True)]))
        assert len(page.properties) == 20
        with pool.connection() as conn:
            names = [r[0] for r in conn.execute("SELECT name FROM pg_prepared_statements WHERE statement LIKE "
                                                "'SELECT %%ORDER BY \"dkbm\" ASC%%' AND statement NOT LIKE '%%pg_prep%%'")]
            assert len(names) == 1
            plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN EXECUTE {names[0]}"))
    finally:
        pool.close()
    assert "Merge Join" not in plan and "Nested Loop" in plan and "_dkbm" in plan, plan
