"""Domain discovery and derived layers: a domain publishes computed layers through the store; build-layers
never writes them."""

import shutil

import geopandas as gpd
import pytest
import shapely

from gis_service.build import missing
from gis_service.catalog import Catalog
from gis_service.config import REPO_ROOT, Settings
from gis_service.domains import Domain, contexts, discover, refresh_derived
from gis_service.privacy import AccessLog
from gis_service.rules import RuleBook
from gis_service.store import GeoPackageStore, SQLiteRecordStore

ZONES_TOML = """id = "test_zones"
title_zh = "测试分区"
title_en = "Test zones"
geometry = "Polygon"
access = "public"
derived = true
[[fields]]
name = "width_m"
type = "real"
label = "宽度（米）"
"""


def test_discovery_finds_the_admin_example_with_its_page():
    admin = next(d for d in discover() if d.name == "admin")
    assert admin.page("") is not None and callable(admin.router)


def test_derived_layers_are_published_by_their_domain_not_by_build_layers(tmp_path):
    layers = tmp_path / "layers"
    (layers / "admin").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "layers" / "groups.toml", layers)
    (layers / "admin" / "test_zones.toml").write_text(ZONES_TOML, encoding="utf-8")
    catalog, store = Catalog.load(layers), GeoPackageStore()
    zones = catalog.get("test_zones")
    assert zones.derived and zones not in missing(catalog)

    def derive(ctx):
        width = ctx.rules.value("nearest_village_max_m") / 10  # any rule: the derived layer follows it
        return {"test_zones": gpd.GeoDataFrame({"width_m": [width]}, geometry=[shapely.box(500_000, 4_370_000,
                                               500_000 + width, 4_371_000)], crs="EPSG:4548")}

    domain = Domain("admin", "测试", "test", router=lambda ctx: None, derive=derive)
    settings = Settings.from_env(layers_dir=layers, var_dir=tmp_path / "var")
    ctxs = contexts([domain], settings=settings, catalog=catalog, store=store,
                    records=SQLiteRecordStore(tmp_path / "r.sqlite"), rules=RuleBook.load(),
                    access_log=AccessLog(tmp_path / "log"))
    assert refresh_derived([domain], ctxs) == ["test_zones"]
    frame = store.read_frame(zones)
    assert store.origin(zones) == "derived" and frame["width_m"].tolist() == [500.0]
    assert frame.to_crs("EPSG:4548").area.iloc[0] == pytest.approx(500 * 1000, rel=1e-6)
    with pytest.raises(ValueError):
        ctxs["admin"].publish("counties", frame)


def test_domains_and_maps_read_only_layers_the_caller_may_see(catalog, store):
    from gis_service.auth import Principal
    from gis_service.errors import GisError
    from gis_service.maps.factory import MapFactory

    ctx = contexts([next(d for d in discover() if d.name == "admin")], settings=Settings.from_env(),
                   catalog=catalog, store=store, records=None, rules=RuleBook.load(),
                   access_log=AccessLog("/dev/null"))["admin"]
    internal = catalog.get("risk_sources")
    assert internal.access == "internal"
    with pytest.raises(GisError) as err:
        ctx.frame("risk_sources")  # anonymous unless told otherwise
    assert err.value.status == 404
    assert len(ctx.frame("risk_sources", who=Principal("t", "environment"))) == store.count(internal)
    factory = MapFactory(catalog, store, Settings.from_env())
    m = factory.new_map("t")
    with pytest.raises(GisError) as err:
        factory.add_layer(m, internal, None)
    assert err.value.status == 404
