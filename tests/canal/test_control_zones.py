"""Control zones drawn by planners (/api/canal/control-zones): who may create, edit and delete; every version
kept; invalid polygons repaired and the repair reported; coordinates checked and converted; the OGC collection
follows every write; a failed publish leaves records and layer as they were."""

from __future__ import annotations

import math
import shutil
import sqlite3
from contextlib import contextmanager

import geopandas as gpd
import httpx
import numpy as np
import pytest
import shapely
from pyproj import Geod

from gis_service import crs
from gis_service.auth import Principal
from gis_service.canal import control_zones
from gis_service.catalog import Catalog
from gis_service.config import REPO_ROOT, Settings
from gis_service.domains import DomainContext
from gis_service.errors import GisError
from gis_service.privacy import AccessLog
from gis_service.rules import RuleBook
from gis_service.store import GeoPackageStore, SQLiteRecordStore
from tests.canal.test_api import border_points

API = "/api/canal/control-zones"
RULES = RuleBook.load().domain("canal")
LON, LAT = 116.70, 39.50  # east of Langfang's city centre (广阳区)


def square(lon=LON, lat=LAT, d=0.01):
    ring = [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


def bow_tie(lon=LON, lat=LAT, d=0.01):
    """Two triangles meeting at the centre: the ring crosses itself there."""
    ring = [[lon, lat], [lon + d, lat + d], [lon + d, lat], [lon, lat + d], [lon, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


def call(server, method, path="", role=None, **kwargs):
    headers = {"X-API-Key": server.key(role)} if role else {}
    return httpx.request(method, server.url + API + path, headers=headers, timeout=30, **kwargs)


def create(server, role="planner", **body):
    body = {"geometry": square(), "name": "测试管控区", "kind": "core_monitoring", **body}
    return call(server, "POST", role=role, json=body)


def ogc_items(server, role="planner"):
    r = httpx.get(f"{server.url}/ogc/collections/{control_zones.LAYER}/items", params={"limit": 1000},
                  headers={"X-API-Key": server.key(role)} if role else {}, timeout=30)
    return r


def geodesic_area(geojson) -> float:
    return abs(Geod(ellps="GRS80").geometry_area_perimeter(shapely.geometry.shape(geojson))[0])


# --- roles ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("role, status", [(None, 401), ("rural", 403), ("flood", 403), ("environment", 403)])
def test_only_planners_and_admins_create(server, role, status):
    r = create(server, role=role)
    assert r.status_code == status and set(r.json()) == {"code", "message"}


def test_planner_creates_and_the_author_comes_from_the_key(server):
    r = create(server, name="北运河香河段核心监控区", note="第一稿")
    assert r.status_code == 201
    zone = r.json()
    assert zone["author"] == zone["created_by"] == "test-planner" and zone["version"] == 1
    assert zone["name"] == "北运河香河段核心监控区" and zone["kind_zh"] == "生态空间核心监控区" and zone["note"] == "第一稿"
    assert zone["repaired"] is False and zone["repair_note_zh"] is None
    assert zone["area_m2"] == pytest.approx(geodesic_area(square()), rel=1e-3)  # Gauss–Krüger vs ellipsoid


def test_an_edit_is_a_new_version_and_history_keeps_every_version(server):
    zone = create(server, name="第一版").json()
    moved = square(lon=LON + 0.02)
    r = call(server, "PUT", f"/{zone['id']}", role="admin",
             json={"geometry": moved, "name": "第二版", "kind": "heritage_protection", "base_version": 1})
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["author"] == "test-admin"
    assert r.json()["created_by"] == "test-planner"
    history = call(server, "GET", f"/{zone['id']}/history", role="rural").json()  # any signed-in caller reads
    versions = history["versions"]
    assert [(v["version"], v["action"], v["author"], v["name"]) for v in versions] == [
        (1, "create", "test-planner", "第一版"), (2, "update", "test-admin", "第二版")]
    assert versions[0]["saved_at"] <= versions[1]["saved_at"] and versions[1]["kind"] == "heritage_protection"
    assert shapely.geometry.shape(versions[0]["geometry"]).equals(shapely.geometry.shape(square()))
    assert shapely.geometry.shape(versions[1]["geometry"]).equals(shapely.geometry.shape(moved))


def test_an_edit_based_on_an_old_version_is_refused_409(server):
    zone = create(server).json()
    body = {"geometry": square(), "name": "改", "kind": "other", "base_version": 1}
    assert call(server, "PUT", f"/{zone['id']}", role="planner", json=body).status_code == 200
    stale = call(server, "PUT", f"/{zone['id']}", role="planner", json=body)
    assert stale.status_code == 409 and stale.json()["code"] == "version_conflict"
    assert len(call(server, "GET", f"/{zone['id']}/history", role="planner").json()["versions"]) == 2


@pytest.mark.parametrize("role, status", [(None, 401), ("rural", 403)])
def test_others_may_not_edit(server, role, status):
    zone = create(server).json()
    r = call(server, "PUT", f"/{zone['id']}", role=role, json={"geometry": square(), "name": "x", "kind": "other"})
    assert r.status_code == status
    assert call(server, "GET", f"/{zone['id']}", role="planner").json()["version"] == 1


def test_only_admin_deletes_softly_and_history_is_kept(server):
    zone = create(server, name="待删除").json()
    path = f"/{zone['id']}"
    assert call(server, "DELETE", path).status_code == 401
    assert call(server, "DELETE", path, role="planner").status_code == 403
    r = call(server, "DELETE", path, role="admin")
    assert r.status_code == 200 and r.json()["deleted"] is True and r.json()["deleted_by"] == "test-admin"
    history = call(server, "GET", f"{path}/history", role="planner").json()
    assert history["deleted"] is True
    assert [(v["version"], v["action"], v["author"]) for v in history["versions"]] == [
        (1, "create", "test-planner"), (2, "delete", "test-admin")]
    edit = call(server, "PUT", path, role="planner", json={"geometry": square(), "name": "复活", "kind": "other"})
    assert edit.status_code == 409 and edit.json()["code"] == "control_zone_deleted"
    assert call(server, "DELETE", path, role="admin").status_code == 409
    assert zone["id"] not in [f["id"] for f in call(server, "GET", role="planner").json()["features"]]


def test_reading_needs_a_key_and_unknown_ids_are_404(server):
    zone = create(server).json()
    assert call(server, "GET", f"/{zone['id']}/history").status_code == 401
    assert call(server, "GET").status_code == 401
    assert call(server, "GET", "/999999/history", role="planner").status_code == 404
    assert call(server, "GET", f"/{2**64}", role="planner").status_code == 400  # beyond SQLite's integers
    assert call(server, "PUT", "/999999", role="planner",
                json={"geometry": square(), "name": "x", "kind": "other"}).status_code == 404


# --- geometry -----------------------------------------------------------------------------------------------
def test_a_bow_tie_is_repaired_into_two_triangles_and_the_repair_reported(server):
    r = create(server, geometry=bow_tie(), name="自相交")
    assert r.status_code == 201
    zone = r.json()
    assert zone["repaired"] is True and "make_valid" in zone["repair_note_zh"] and "自相交" in zone["repair_note_zh"]
    stored = shapely.geometry.shape(zone["geometry"])
    assert stored.is_valid and stored.geom_type == "MultiPolygon" and len(stored.geoms) == 2
    d, c = 0.01, (LON + 0.005, LAT + 0.005)  # the two triangles, computed by hand
    left = shapely.Polygon([(LON, LAT), c, (LON, LAT + d)])
    right = shapely.Polygon([(LON + d, LAT), (LON + d, LAT + d), c])
    assert stored.symmetric_difference(shapely.MultiPolygon([left, right])).area < 1e-12
    assert zone["area_m2"] == pytest.approx(geodesic_area(left) + geodesic_area(right), rel=1e-3)
    history = call(server, "GET", f"/{zone['id']}/history", role="planner").json()["versions"]
    assert history[0]["repaired"] is True and history[0]["repair_note_zh"] == zone["repair_note_zh"]


def test_area_is_computed_in_gauss_krueger_metres(server):
    x, y = (round(float(v)) for v in crs.transform_xy(LON, LAT, crs.STORAGE_CRS, crs.METRIC_CRS))  # in the city
    # EPSG:4548 (CM 117°E): a 1000 m × 400 m rectangle
    rect = {"type": "Polygon", "coordinates": [[[x, y], [x + 1000, y], [x + 1000, y + 400], [x, y + 400], [x, y]]]}
    zone = create(server, geometry=rect, coord_sys="epsg:4548").json()
    assert zone["area_m2"] == pytest.approx(400_000, abs=1)


@pytest.mark.parametrize("geometry, coord_sys, expected", [
    ({"type": "Polygon", "coordinates": [[[LAT, LON], [LAT, LON + 0.01], [LAT + 0.01, LON + 0.01], [LAT, LON]]]},
     "wgs84", "axes swapped"),
    ({"type": "Polygon", "coordinates": [[[500_000, 4_372_000], [501_000, 4_372_000], [501_000, 4_373_000],
                                          [500_000, 4_372_000]]]}, "wgs84", "projected metres sent as degrees"),
    (square(lon=121.47, lat=31.23), "wgs84", "outside Langfang"),  # Shanghai
    (square(), "epsg:4548", "degrees sent as projected metres"),
])
def test_outside_langfang_is_422_naming_the_likely_mistake(server, geometry, coord_sys, expected):
    r = create(server, geometry=geometry, coord_sys=coord_sys)
    assert r.status_code == 422 and r.json()["code"] == "coordinate_outside_langfang"
    assert expected in r.json()["message"]


@pytest.mark.parametrize("district", ["通州区", "武清区"])
def test_a_zone_outside_the_city_is_refused_naming_the_district(server, store, catalog, district):
    (lon, lat), _ = border_points(store, catalog, district)
    d = 0.001  # about 100 m: the square lies wholly outside (its nearest corner is ~200 m out)
    outside = square(lon=lon - d / 2, lat=lat - d / 2, d=d)
    r = create(server, geometry=outside)
    assert r.status_code == 422 and r.json()["code"] == "outside_langfang" and district in r.json()["message"]
    zone = create(server).json()
    r = call(server, "PUT", f"/{zone['id']}", role="planner", json={"geometry": outside, "name": "移出", "kind": "other"})
    assert r.status_code == 422 and r.json()["code"] == "outside_langfang"
    assert call(server, "GET", f"/{zone['id']}", role="planner").json()["version"] == 1  # nothing saved


def test_a_zone_partly_outside_the_city_is_saved_with_a_caveat(server, store, catalog):
    outside, inside = border_points(store, catalog, "通州区")
    ring = [list(outside), list(inside), [inside[0] + 0.001, inside[1] + 0.001], list(outside)]
    r = create(server, geometry={"type": "Polygon", "coordinates": [ring]})
    assert r.status_code == 201
    assert any("廊坊市界外" in c and "通州区" in c for c in r.json()["caveats"])
    assert create(server).json()["caveats"] == []


def test_the_vertex_limit_is_the_rule_check_max_vertices(tmp_path):
    local_rules = tmp_path / "rules.local.toml"
    local_rules.write_text("[canal]\ncheck_max_vertices = 10\n", encoding="utf-8")
    ctx = _local_ctx(tmp_path, RuleBook.load(override_path=local_rules).domain("canal"))
    ring = [[LON + 0.01 * math.cos(a), LAT + 0.01 * math.sin(a)] for a in np.linspace(0, 2 * math.pi, 11)[:-1]]
    eleven = {"type": "Polygon", "coordinates": [ring + [ring[0]]]}  # 11 positions
    with pytest.raises(GisError) as err:
        control_zones.create(ctx, PLANNER, control_zones.ControlZoneIn(geometry=eleven, name="多边形", kind="other"))
    assert err.value.code == "bad_geometry" and "10" in err.value.message
    ten = {"type": "Polygon", "coordinates": [ring[:9] + [ring[0]]]}
    assert control_zones.create(ctx, PLANNER, control_zones.ControlZoneIn(geometry=ten, name="九边形",
                                                                          kind="other"))["version"] == 1


@pytest.mark.parametrize("geometry, expected", [
    ({"type": "LineString", "coordinates": [[LON, LAT], [LON + 0.01, LAT]]}, "not LineString"),
    ({"type": "Point", "coordinates": [LON, LAT]}, "not Point"),
    ({"type": "Polygon", "coordinates": [[[LON, LAT], [LON + 0.01, LAT], [LON + 0.02, LAT], [LON, LAT]]]},
     "nothing polygonal is left after repair"),  # a flat ring: make_valid gives a line
    ({"type": "Polygon", "coordinates": []}, "empty"),
    ({"type": "Polygon"}, "not a GeoJSON geometry"),
    ({"type": "Polygon", "coordinates": [[[LON, LAT], [LON + 0.01, LAT], [LON + 0.01, LAT + 0.01],
                                          [LON, LAT + 0.01]]]}, "not closed"),
    ({"type": ["Polygon"], "coordinates": []}, "'type' string"),
])
def test_what_is_not_a_polygon_after_repair_is_422(server, geometry, expected):
    r = create(server, geometry=geometry)
    assert r.status_code == 422 and r.json()["code"] == "bad_geometry" and expected in r.json()["message"]


def test_gcj02_input_is_converted_to_cgcs2000(server):
    ring = square()["coordinates"][0]
    glon, glat = crs.wgs84_to_gcj02([p[0] for p in ring], [p[1] for p in ring])
    shifted = {"type": "Polygon", "coordinates": [[[float(a), float(b)] for a, b in zip(glon, glat)]]}
    zone = create(server, geometry=shifted, coord_sys="gcj02").json()
    stored = shapely.get_coordinates(shapely.geometry.shape(zone["geometry"]))
    assert shapely.get_coordinates(shapely.geometry.shape(square())) == pytest.approx(stored, abs=1e-7)
    assert zone["area_m2"] == pytest.approx(create(server).json()["area_m2"], rel=1e-6)


# --- the OGC collection -------------------------------------------------------------------------------------
def test_ogc_collection_shows_the_current_version_of_each_zone_after_every_write(server):
    kept = create(server, name="保留").json()
    edited = create(server, name="将修改").json()
    gone = create(server, name="将删除").json()
    call(server, "PUT", f"/{edited['id']}", role="planner",
         json={"geometry": bow_tie(lon=LON + 0.03), "name": "已修改", "kind": "green_belt"})
    call(server, "DELETE", f"/{gone['id']}", role="admin")
    r = ogc_items(server)
    assert r.status_code == 200
    features = {f["properties"]["zone_id"]: f for f in r.json()["features"]}
    current = {f["id"]: f for f in call(server, "GET", role="planner").json()["features"]}
    assert set(features) == set(current)  # every zone not deleted, nothing else
    assert gone["id"] not in features
    assert features[kept["id"]]["properties"]["version"] == 1 and features[kept["id"]]["properties"]["name"] == "保留"
    changed = features[edited["id"]]["properties"]
    assert (changed["version"], changed["name"], changed["kind"], changed["author"]) == (2, "已修改", "green_belt",
                                                                                         "test-planner")
    assert changed["area_m2"] == pytest.approx(current[edited["id"]]["properties"]["area_m2"])
    assert changed["updated_at"].startswith(current[edited["id"]]["properties"]["updated_at"][:19])
    assert shapely.geometry.shape(features[edited["id"]]["geometry"]).geom_type == "MultiPolygon"


def test_ogc_collection_is_internal(server):
    create(server)
    assert ogc_items(server, role=None).status_code == 404
    assert ogc_items(server, role="rural").status_code == 200


# --- atomicity (no server: the module with a store whose publish or commit fails) ---------------------------
@pytest.fixture()
def local(tmp_path):
    return _local_ctx(tmp_path, RuleBook.load().domain("canal"))


def _local_ctx(tmp_path, rules):
    layers = tmp_path / "layers"
    (layers / "canal").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "layers" / "groups.toml", layers)
    shutil.copy(REPO_ROOT / "layers" / "canal" / f"{control_zones.LAYER}.toml", layers / "canal")
    (layers / "admin").mkdir()  # a zone must lie in the city
    for suffix in (".toml", ".gpkg"):
        shutil.copy(REPO_ROOT / "layers" / "admin" / f"city_boundary{suffix}", layers / "admin")
    settings = Settings.from_env(layers_dir=layers, var_dir=tmp_path / "var")
    ctx = DomainContext(settings, Catalog.load(layers), GeoPackageStore(), SQLiteRecordStore(tmp_path / "r.sqlite"),
                        rules, AccessLog(tmp_path / "log"))
    control_zones.router(ctx)  # ensures the tables
    for layer_id, frame in control_zones.derive(ctx).items():
        ctx.publish(layer_id, frame)
    return ctx


def _body(name):
    return control_zones.ControlZoneIn(geometry=square(), name=name, kind="other")


def _layer_names(ctx):
    return ctx.store.read_frame(ctx.catalog.get(control_zones.LAYER))["name"].tolist()


def _record_names(ctx):
    with ctx.records.transaction() as tx:
        return [r["name"] for r in tx.find(control_zones.ZONES)]


PLANNER = Principal("规划甲", "planner")


def test_a_failed_publish_saves_nothing(local, monkeypatch):
    control_zones.create(local, PLANNER, _body("第一个"))
    publish = local.publish

    def broken(layer_id, frame):
        raise OSError("disk full")

    monkeypatch.setattr(local, "publish", broken)
    with pytest.raises(GisError) as err:
        control_zones.create(local, PLANNER, _body("第二个"))
    assert err.value.status == 503 and err.value.code == "control_zone_not_saved"
    assert _record_names(local) == ["第一个"] and _layer_names(local) == ["第一个"]
    monkeypatch.setattr(local, "publish", publish)
    control_zones.create(local, PLANNER, _body("第三个"))
    assert _record_names(local) == _layer_names(local) == ["第一个", "第三个"]


class _CommitFailsOnce:
    """A record store whose next transaction fails at COMMIT (after its body ran): it rolls back."""

    def __init__(self, inner):
        self.inner, self.armed = inner, False

    def ensure(self, table):
        self.inner.ensure(table)

    @contextmanager
    def transaction(self):
        with self.inner.transaction() as tx:
            yield tx
            if self.armed:
                self.armed = False
                raise sqlite3.OperationalError("disk I/O error")


def test_a_failed_commit_puts_the_published_layer_back(local):
    control_zones.create(local, PLANNER, _body("第一个"))
    local.records = _CommitFailsOnce(local.records)
    local.records.armed = True
    with pytest.raises(GisError) as err:
        control_zones.create(local, PLANNER, _body("未提交"))
    assert err.value.status == 503
    assert _record_names(local) == _layer_names(local) == ["第一个"]


def test_prepare_geometry_keeps_only_the_polygonal_part_of_a_repair():
    spike = {"type": "Polygon", "coordinates": [[[LON, LAT], [LON + 0.01, LAT], [LON + 0.01, LAT + 0.01],
                                                 [LON + 0.02, LAT + 0.02], [LON + 0.01, LAT + 0.01],
                                                 [LON, LAT + 0.01], [LON, LAT]]]}
    geom, area, note = control_zones.prepare_geometry(spike, "wgs84", RULES.value("check_max_vertices"))
    assert geom.is_valid and geom.geom_type == "Polygon" and "去掉了零面积的线或点" in note
    assert geom.equals(shapely.geometry.shape(square()))
    assert area == pytest.approx(gpd.GeoSeries([geom], crs=crs.STORAGE_CRS).to_crs(crs.METRIC_CRS).area[0], abs=0.1)
