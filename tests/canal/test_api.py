"""/api/canal over a live server, checked against a second method where one exists: distances and areas
recomputed in another projection (UTM 50N) from what the API and the store return, the OGC collection of the
same zones; and every bad input answered with a 4xx {code, message}, never a 500."""

import csv
import io

import geopandas as gpd
import httpx
import numpy as np
import openpyxl
import pytest
import shapely

from gis_service import crs
from gis_service.rules import RuleBook

RULES = RuleBook.load().domain("canal")
UTM = "EPSG:32650"  # a second metric CRS (UTM zone 50N) to recompute distances and areas independently
CHECK_KEYS = {"verdict", "verdict_zh", "reasons", "zones", "control_zones", "heritage", "negative_list",
              "nearest_zone_edge_m", "geometry"}


def api(server, path, **params):
    return httpx.get(f"{server.url}/api/canal{path}", params=params, timeout=120)


def check(server, body):
    return httpx.post(f"{server.url}/api/canal/check", json=body, timeout=60)


def error(r, status=None):
    assert r.status_code == status if status else 400 <= r.status_code < 500, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"code", "message"} and " / " in body["message"]  # 中文 / English
    return body


@pytest.fixture(scope="module")
def zones(server):
    r = api(server, "/zones")
    assert r.status_code == 200
    return r.json()


@pytest.fixture(scope="module")
def baselines(store, catalog):
    """Channel lines (or management boundaries) per river, read from the store and put into UTM."""
    channels = store.read_frame(catalog.get("canal_channels")).to_crs(UTM)
    out = {r: shapely.union_all(channels.geometry[channels["name"] == r].values) for r in set(channels["name"])}
    boundaries = catalog.get("river_boundaries")
    if boundaries is not None and store.exists(boundaries) and RULES.value("measurement_baseline") == "river_boundary":
        b = store.read_frame(boundaries).to_crs(UTM)
        out.update({r: shapely.union_all(b.geometry[b["river"] == r].values) for r in set(b["river"])})
    return out


# --- zones ------------------------------------------------------------------------------------------------
def test_zones_are_geojson_per_kind_river_bank_county_with_areas_that_match_their_geometry(zones):
    features = zones["features"]
    assert zones["type"] == "FeatureCollection" and features
    kinds = {f["properties"]["kind"] for f in features}
    assert kinds == {"village_remediation", "green_belt", "core_monitoring"}
    assert {f["properties"]["river"] for f in features if f["properties"]["kind"] == "green_belt"} <= set(
        RULES.value("green_corridor_rivers"))
    x0, y0, x1, y1 = crs.LANGFANG_BBOX
    frame = gpd.GeoDataFrame.from_features(features, crs="EPSG:4490")
    bx0, by0, bx1, by1 = frame.total_bounds
    assert x0 <= bx0 and bx1 <= x1 and y0 <= by0 and by1 <= y1  # lon/lat, inside Langfang
    areas = frame.to_crs(UTM).area.to_numpy() / 0.9996 ** 2  # UTM's scale factor at its central meridian (117°E)
    assert np.allclose(areas, frame["area_m2"], rtol=2e-4)
    assert np.allclose(frame["area_mu"], frame["area_m2"] * 15 / 10_000, rtol=1e-4)
    assert {f["properties"]["bank"] for f in features} == {"left", "right"}
    assert all(f["properties"]["rule_id"].startswith("canal.") for f in features)


def test_the_border_river_is_clipped_at_the_city_boundary_and_the_response_says_where(zones):
    clipped = [c for c in zones["clipped_outside_city"] if c["river"] == "北运河"]
    assert clipped and all(c["area_m2"] > 0 for c in clipped)
    assert any(n["name"].startswith(("北京市", "天津市")) for c in clipped for n in c["outside_in"])


def test_zone_filters(server):
    only = api(server, "/zones", river="大清河", kind="green_belt").json()["features"]
    assert only and {(f["properties"]["river"], f["properties"]["kind"]) for f in only} == {("大清河", "green_belt")}
    assert api(server, "/zones", river="赵王新河", kind="green_belt").json()["features"] == []  # not named at L2147


def test_zones_are_also_an_ogc_collection(server, zones):
    r = httpx.get(f"{server.url}/ogc/collections/canal_zones/items", params={"limit": 1000}, timeout=60).json()
    assert r["numberMatched"] == len(zones["features"])
    got = sorted((f["properties"]["kind"], f["properties"]["river"], f["properties"]["bank"], f["properties"]["county"])
                 for f in r["features"])
    want = sorted((f["properties"]["kind"], f["properties"]["river"], f["properties"]["bank"], f["properties"]["county"])
                  for f in zones["features"])
    assert got == want


@pytest.mark.parametrize("params", [{"river": "黄河"}, {"kind": "buffer"}, {"county": "朝阳区"}])
def test_unknown_zone_filters_are_a_400(server, params):
    assert next(iter(params)) in error(api(server, "/zones", **params), 400)["message"]


# --- villages ---------------------------------------------------------------------------------------------
def test_village_list_matches_distances_recomputed_in_another_projection(server, store, catalog, baselines):
    got = api(server, "/villages").json()
    limit = RULES.value("village_remediation_distance_m")
    assert got["within_m"] == limit and got["villages"]
    villages = store.read_frame(catalog.get("villages")).to_crs(UTM)
    by_code = dict(zip(villages["code"], villages.geometry))
    listed = {(v["code"], v["river"]) for v in got["villages"]}
    for v in got["villages"]:
        d = shapely.distance(baselines[v["river"]], by_code[v["code"]]) / 0.9996
        assert v["distance_m"] == pytest.approx(d, abs=1.0) and v["distance_m"] <= limit
        assert v["bank"] in ("left", "right", "centre") and v["deadline"] == RULES.value("village_remediation_deadline")
        assert v["remediation_items"] == RULES.value("village_remediation_items")
    for river, base in baselines.items():  # and no village within the limit is missing (±1 m of projection)
        d = shapely.distance(base, villages.geometry.values) / 0.9996
        for code in villages["code"].to_numpy()[d <= limit - 1]:
            assert (code, river) in listed
    assert got["count"] == len({c for c, _ in listed})
    assert sum(got["by_river"].values()) == len(listed)


def test_village_filters_and_a_wider_distance(server):
    all_ = api(server, "/villages", within_m=2000).json()
    xianghe = api(server, "/villages", within_m=2000, county="香河县").json()
    assert {v["county"] for v in xianghe["villages"]} <= {"香河县"}
    assert len(xianghe["villages"]) == sum(v["county"] == "香河县" for v in all_["villages"])
    assert any("不同于文件规定" in c for c in all_["caveats"])


def test_village_list_as_csv_and_xlsx_with_chinese_headers(server):
    json_rows = api(server, "/villages").json()["villages"]
    r = api(server, "/villages", format="csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.content.startswith(b"\xef\xbb\xbf") and "attachment" in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[0][:4] == ["村名", "村级区划代码（12位）", "乡镇（街道）", "县区"] and "整治内容" in rows[0]
    assert len(rows) - 1 == len(json_rows)
    x = api(server, "/villages", format="xlsx")
    assert x.status_code == 200 and x.headers["content-type"].startswith("application/vnd.openxml")
    sheet = openpyxl.load_workbook(io.BytesIO(x.content)).active
    header = [c.value for c in sheet[1]]
    assert header == rows[0] and sheet.max_row - 1 == len(json_rows)


@pytest.mark.parametrize("params", [{"within_m": -5}, {"within_m": 0}, {"within_m": 1e9}, {"within_m": "abc"},
                                    {"format": "pdf"}, {"river": "黄河"}, {"county": "x"}])
def test_bad_village_queries_are_a_400(server, params):
    error(api(server, "/villages", **params), 400)


# --- green corridor ---------------------------------------------------------------------------------------
def test_shortfalls_add_up_and_every_section_is_under_the_minimum(server, catalog, store):
    r = api(server, "/green-belt/shortfalls")
    layer = catalog.get("green_corridors")
    if layer is None or not store.exists(layer):
        assert error(r, 503)["code"] == "layer_not_available"
        return
    got = r.json()
    w = RULES.value("green_corridor_min_width_m")
    sections = got["sections"]["features"]
    assert got["min_width_m"] == w
    for s in sections:
        p = s["properties"]
        assert p["min_width_m"] < w and p["length_m"] > 0 and p["river"] in RULES.value("green_corridor_rivers")
        assert p["missing_area_m2"] == pytest.approx((w - p["mean_width_m"]) * p["length_m"], rel=1e-3, abs=1)
    assert got["totals"]["shortfall_length_m"] == pytest.approx(sum(s["properties"]["length_m"] for s in sections), abs=1)
    assert got["totals"]["missing_area_m2"] == pytest.approx(sum(s["properties"]["missing_area_m2"] for s in sections), abs=1)
    left = api(server, "/green-belt/shortfalls", bank="left").json()["sections"]["features"]
    assert {s["properties"]["bank"] for s in left} <= {"left"}


@pytest.mark.parametrize("params", [{"river": "赵王新河"}, {"bank": "north"}])
def test_bad_shortfall_filters_are_a_400(server, params):
    error(api(server, "/green-belt/shortfalls", **params), 400)


# --- farmland conflicts -----------------------------------------------------------------------------------
def test_conflicts_with_the_required_band_list_plot_codes_and_areas_only(server, store, catalog):
    got = api(server, "/green-belt/conflicts", source="required_band").json()
    assert got["corridor_source"] == "required_band" and got["corridor_layer"] == "canal_zones"
    assert {r["rule_id"] for r in [{"rule_id": x["key"]} for x in got["rules_applied"]]} == {
        "canal.no_afforestation_on_cultivated_land", "canal.no_trees_on_basic_farmland"}
    plots = got["plots"]
    assert plots and got["plots_total"] == len(plots)
    assert set(plots[0]) == {"dkbm", "village_code", "county", "is_basic_farmland", "plot_area_m2", "conflict_m2",
                             "conflict_mu"}
    assert all(0 < p["conflict_m2"] <= p["plot_area_m2"] + 0.1 for p in plots)
    # personal fields never appear in the answer: the listed plots' ID numbers and phones are not in it
    frame = store.read_frame(catalog.get("plots")).set_index("dkbm")
    listed = frame.loc[[p["dkbm"] for p in plots]]
    text = api(server, "/green-belt/conflicts", source="required_band").text
    assert not any(str(v) in text for v in [*listed["contractor_id_number"].dropna(), *listed["contractor_phone"].dropna()])
    assert "contractor" not in text
    per_county = {c["county"]: c["plots_m2"] for c in got["by_county"]}
    for county, total in per_county.items():
        assert total == pytest.approx(sum(p["conflict_m2"] for p in plots if p["county"] == county), abs=1)
    one = api(server, "/green-belt/conflicts", source="required_band", limit=1).json()
    assert len(one["plots"]) == 1 and one["plots_total"] == len(plots)


def test_conflicts_with_the_corridor_layer(server, catalog, store):
    r = api(server, "/green-belt/conflicts")
    layer = catalog.get("green_corridors")
    if layer is None or not store.exists(layer):
        assert error(r, 503)["code"] == "layer_not_available"
    else:
        assert r.status_code == 200 and r.json()["corridor_layer"] == "green_corridors"


@pytest.mark.parametrize("params", [{"source": "river"}, {"limit": -1}, {"county": "x"}])
def test_bad_conflict_queries_are_a_400(server, params):
    error(api(server, "/green-belt/conflicts", **params), 400)


# --- siting check -----------------------------------------------------------------------------------------
def _beside(store, catalog, river, offset_m):
    """(lon, lat) of a point offset_m to the left of the middle of the river's longest channel piece."""
    channels = store.read_frame(catalog.get("canal_channels")).to_crs(crs.METRIC_CRS)
    line = max(channels.geometry[channels["name"] == river], key=lambda g: g.length)
    at = line.interpolate(0.5, normalized=True)
    ahead = line.interpolate(line.project(at) + 1)
    n = np.array([-(ahead.y - at.y), ahead.x - at.x])
    n /= np.hypot(*n)
    lon, lat = crs.transform_xy(at.x + n[0] * offset_m, at.y + n[1] * offset_m, crs.METRIC_CRS, crs.STORAGE_CRS)
    return float(lon), float(lat)


def test_project_near_the_channel_needs_review_and_names_its_rules(server, store, catalog):
    lon, lat = _beside(store, catalog, "大清河", 600)
    got = check(server, {"geometry": {"type": "Point", "coordinates": [lon, lat]}}).json()
    assert CHECK_KEYS <= set(got)
    assert got["verdict"] == "needs_review" and got["verdict_zh"] == "需审查"
    kinds = {(z["kind"], z["river"], z["bank"]) for z in got["zones"]}
    assert ("village_remediation", "大清河", "left") in kinds and ("core_monitoring", "大清河", "left") in kinds
    assert all(r["rule_id"].startswith("canal.") and r["clause"] and r["text_zh"] for r in got["reasons"])
    assert got["nearest_zone_edge_m"] is None and got["geometry"]["coordinates"] == [round(lon, 7), round(lat, 7)]


def test_negative_list_sector_beside_the_channel_is_prohibited(server, store, catalog):
    lon, lat = _beside(store, catalog, "大清河", 600)
    got = check(server, {"geometry": {"type": "Point", "coordinates": [lon, lat]}, "sector": "industrial_mining"}).json()
    assert got["verdict"] == "prohibited" and got["negative_list"][0]["sector"] == "industrial_mining"
    assert got["negative_list"][0]["clause"] and any(r["rule_id"] == "canal.negative_list" for r in got["reasons"])


def test_far_project_is_allowed_and_told_the_distance_to_the_nearest_zone(server, zones):
    lon, lat = 116.70, 39.52  # central Langfang, far from the canal
    got = check(server, {"geometry": {"type": "Point", "coordinates": [lon, lat]}}).json()
    assert got["verdict"] == "allowed" and got["zones"] == [] and got["control_zones"] == []
    drawn = httpx.get(f"{server.url}/api/canal/control-zones", headers={"X-API-Key": server.key("planner")},
                      timeout=30).json()["features"]  # control zones drawn by planners count as zones too
    union = shapely.union_all(gpd.GeoDataFrame.from_features(zones["features"] + drawn, crs="EPSG:4490")
                              .to_crs(UTM).geometry.values)
    point = gpd.GeoSeries([shapely.Point(lon, lat)], crs="EPSG:4490").to_crs(UTM).iloc[0]
    assert got["nearest_zone_edge_m"] == pytest.approx(shapely.distance(union, point) / 0.9996, rel=1e-3)


def test_gcj02_and_projected_input_give_the_same_answer(server, store, catalog):
    lon, lat = _beside(store, catalog, "北运河", 300)
    plain = check(server, {"geometry": {"type": "Point", "coordinates": [lon, lat]}}).json()
    glon, glat = crs.wgs84_to_gcj02(lon, lat)
    shifted = check(server, {"geometry": {"type": "Point", "coordinates": [float(glon), float(glat)]},
                             "coord_sys": "gcj02"}).json()
    e, n = crs.transform_xy(lon, lat, crs.STORAGE_CRS, "EPSG:4527")
    zoned = check(server, {"geometry": {"type": "Point", "coordinates": [float(e), float(n)]},
                           "coord_sys": "epsg:4527"}).json()
    for other in (shifted, zoned):
        assert other["verdict"] == plain["verdict"] and other["zones"] == plain["zones"]


def test_polygon_and_line_inputs(server, store, catalog):
    lon, lat = _beside(store, catalog, "北运河", 300)
    d = 0.002
    poly = {"type": "Polygon", "coordinates": [[[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]]}
    line = {"type": "MultiLineString", "coordinates": [[[lon, lat], [lon + d, lat + d]]]}
    for geometry in (poly, line):
        r = check(server, {"geometry": geometry, "sector": "其他"})
        assert r.status_code == 200 and r.json()["zones"] and r.json()["geometry"]["type"] == geometry["type"]


@pytest.mark.parametrize("body, code, text", [
    ({"geometry": {"type": "Polygon", "coordinates": []}}, "empty_geometry", "empty"),
    ({"geometry": {"type": "Polygon", "coordinates": [[[116.7, 39.5], [116.71, 39.51], [116.71, 39.5], [116.7, 39.51],
                                                       [116.7, 39.5]]]}}, "invalid_geometry", "Self-intersection"),
    ({"geometry": {"type": "Point", "coordinates": [121.47, 31.23]}}, "coordinate_outside_langfang", "outside Langfang"),
    ({"geometry": {"type": "Point", "coordinates": [116.7, 39.5]}, "coord_sys": "epsg:4548"},
     "coordinate_outside_langfang", "degrees sent as projected metres"),
    ({"geometry": {"type": "Point", "coordinates": [39.5, 116.7]}}, "coordinate_outside_langfang", "axes swapped"),
    ({"geometry": {"type": "GeometryCollection", "geometries": []}}, "unsupported_geometry", "GeoJSON"),
    ({"geometry": {"type": "Point", "coordinates": ["a", "b"]}}, "malformed_geometry", "malformed"),
    ({"geometry": {"type": "Point", "coordinates": [116.7, 39.5]}, "coord_sys": "mars"}, "bad_coord_sys", "unsupported"),
    ({"geometry": {"type": "Point", "coordinates": [116.7, 39.5]}, "sector": "chemicals"}, "unknown_sector", "unknown sector"),
    ({"coord_sys": "wgs84"}, "bad_parameter", "geometry"),
    # the type must be a string (a list or an object as type was a 500)
    ({"geometry": {"type": ["Point"], "coordinates": [116.7, 39.5]}}, "unsupported_geometry", "'type' string"),
    ({"geometry": {"type": {"a": 1}, "coordinates": [116.7, 39.5]}}, "unsupported_geometry", "'type' string"),
    # positions: numbers, at the depth of the type; rings closed; lines simple
    ({"geometry": {"type": "Point", "coordinates": ["116.7", "39.5"]}}, "malformed_geometry", "finite numbers"),
    ({"geometry": {"type": "Point", "coordinates": [[116.7, 39.5]]}}, "malformed_geometry", "a position must be"),
    ({"geometry": {"type": "Polygon", "coordinates": [[[116.7, 39.5], [116.71, 39.5], [116.71, 39.51],
                                                       [116.7, 39.51]]]}}, "malformed_geometry", "not closed"),
    ({"geometry": {"type": "LineString", "coordinates": [[116.7, 39.5], [116.71, 39.51], [116.71, 39.5],
                                                          [116.7, 39.51]]}}, "invalid_geometry", "crosses itself"),
    ({"geometry": {"type": "MultiLineString", "coordinates": [[[116.7, 39.5], [116.71, 39.5]],
                                                               [[116.7, 39.51], [116.71, 39.52], [116.71, 39.51],
                                                                [116.7, 39.52]]]}},
     "invalid_geometry", "crosses itself"),
    ({"geometry": {"type": "MultiPoint", "coordinates": [[116.7, 39.5]] * (RULES.value("check_max_vertices") + 1)}},
     "too_many_vertices", str(RULES.value("check_max_vertices"))),
])
def test_bad_geometry_is_a_422_saying_what_is_wrong(server, body, code, text):
    got = error(check(server, body), 422)
    assert got["code"] == code and text in got["message"]


@pytest.mark.parametrize("coordinates", [b"[NaN, 39.5]", b"[116.7, Infinity]", b"[" + b"9" * 400 + b", 39.5]"])
def test_coordinates_that_are_not_finite_numbers_are_malformed(server, coordinates):
    body = b'{"geometry": {"type": "Point", "coordinates": ' + coordinates + b"}}"
    got = error(httpx.post(f"{server.url}/api/canal/check", content=body, timeout=30,
                           headers={"content-type": "application/json"}), 422)
    assert got["code"] == "malformed_geometry"


def border_points(store, catalog, district: str, offset_m: float = 200.0):
    """(outside, inside) lon/lat of two points offset_m either side of the city boundary, where the outside one
    lies in the neighbouring district: along the normal of the first boundary segment (> 300 m) for which both
    points are offset_m from the boundary (no other part of it nearer)."""
    city = shapely.union_all(store.read_frame(catalog.get("city_boundary")).to_crs(crs.METRIC_CRS).geometry.values)
    neighbours = store.read_frame(catalog.get("neighbor_counties")).to_crs(crs.METRIC_CRS)
    target = neighbours.geometry[neighbours["name"] == district].iloc[0]
    for polygon in shapely.get_parts(city):
        ring = shapely.get_coordinates(polygon.exterior)
        for a, b in zip(ring[:-1], ring[1:]):
            length = np.hypot(*(b - a))
            if length < 300:
                continue
            mid, normal = (a + b) / 2, np.array([b[1] - a[1], a[0] - b[0]]) / length
            if polygon.contains(shapely.Point(*(mid + normal))):
                normal = -normal  # outward
            out, inn = shapely.Point(*(mid + normal * offset_m)), shapely.Point(*(mid - normal * offset_m))
            if (target.contains(out) and city.contains(inn) and not city.contains(out)
                    and abs(city.boundary.distance(out) - offset_m) < 1 and abs(city.boundary.distance(inn) - offset_m) < 1):
                return tuple(tuple(float(v) for v in crs.transform_xy(p.x, p.y, crs.METRIC_CRS, crs.STORAGE_CRS))
                             for p in (out, inn))
    raise AssertionError(f"no boundary segment towards {district}")


@pytest.mark.parametrize("district", ["通州区", "武清区", "大兴区"])
def test_a_point_just_outside_the_city_is_refused_naming_the_district(server, store, catalog, district):
    outside, inside = border_points(store, catalog, district)
    got = error(check(server, {"geometry": {"type": "Point", "coordinates": list(outside)},
                               "sector": "industrial_mining"}), 422)
    assert got["code"] == "outside_langfang" and district in got["message"] and "廊坊市界外" in got["message"]
    assert "200 m" in got["message"] or "199 m" in got["message"] or "201 m" in got["message"]
    r = check(server, {"geometry": {"type": "Point", "coordinates": list(inside)}})
    assert r.status_code == 200 and not any("市界外" in c for c in r.json()["caveats"])


def test_a_line_partly_outside_the_city_is_checked_with_a_caveat(server, store, catalog):
    outside, inside = border_points(store, catalog, "通州区")
    r = check(server, {"geometry": {"type": "LineString", "coordinates": [list(inside), list(outside)]}})
    assert r.status_code == 200
    (caveat,) = [c for c in r.json()["caveats"] if "市界外" in c]
    assert "50%" in caveat and "通州区" in caveat  # 200 m of the 400 m line lie outside


def test_a_control_zone_drawn_by_a_planner_changes_the_verdict_until_it_is_deleted(server):
    lon, lat, d = 116.45, 39.35, 0.004  # 永清县, far from the canals
    point = {"type": "Point", "coordinates": [lon + d / 2, lat + d / 2]}
    before = check(server, {"geometry": point}).json()
    assert before["verdict"] == "allowed" and before["zones"] == [] and before["control_zones"] == []
    square = {"type": "Polygon", "coordinates": [[[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d],
                                                  [lon, lat]]]}
    planner, admin = {"X-API-Key": server.key("planner")}, {"X-API-Key": server.key("admin")}
    body = {"geometry": square, "name": "某遗址保护范围（草案）", "kind": "heritage_protection"}
    zone = httpx.post(f"{server.url}/api/canal/control-zones", json=body, headers=planner, timeout=30).json()
    got = check(server, {"geometry": point}).json()
    assert got["verdict"] == RULES.value("siting_verdicts")["control_zones"]["heritage_protection"] == "prohibited"
    assert [(c["zone_id"], c["version"], c["author"]) for c in got["control_zones"]] == [(zone["id"], 1, "test-planner")]
    (why,) = [r for r in got["reasons"] if r["verdict_situation"] == "control_zones.heritage_protection"]
    assert "某遗址保护范围（草案）" in why["text_zh"] and "test-planner" in why["text_zh"] and why["rule_id"] == "canal.siting_verdicts"
    edited = httpx.put(f"{server.url}/api/canal/control-zones/{zone['id']}", headers=planner, timeout=30,
                       json={**body, "kind": "construction_control"})
    assert edited.status_code == 200
    got = check(server, {"geometry": point}).json()
    assert got["verdict"] == "needs_review" and got["control_zones"][0]["version"] == 2
    assert httpx.delete(f"{server.url}/api/canal/control-zones/{zone['id']}", headers=admin, timeout=30).status_code == 200
    after = check(server, {"geometry": point}).json()
    assert after["verdict"] == "allowed" and after["control_zones"] == []


def test_zone_entries_say_which_baseline_their_distance_is_from(server, store, catalog, baselines):
    lon, lat = _beside(store, catalog, "北运河", 600)
    got = check(server, {"geometry": {"type": "Point", "coordinates": [lon, lat]}}).json()
    boundary = RULES.value("measurement_baseline") == "river_boundary" and store.exists(catalog.get("river_boundaries"))
    point = gpd.GeoSeries([shapely.Point(lon, lat)], crs="EPSG:4490").to_crs(UTM).iloc[0]
    for z in got["zones"]:
        assert z["baseline"] == ("river_boundary" if boundary else "centreline")
        assert z["distance_to_channel_m"] == pytest.approx(shapely.distance(baselines[z["river"]], point) / 0.9996, abs=1)


def test_body_that_is_not_json_is_a_4xx(server):
    error(httpx.post(f"{server.url}/api/canal/check", content=b"{not json", timeout=30,
                     headers={"content-type": "application/json"}))


def test_negative_list_endpoint_lists_sectors_with_sources(server):
    got = api(server, "/negative-list").json()
    assert [s["sector"] for s in got["sectors"]] == [e["sector"] for e in RULES.value("negative_list")]
    assert all(s["source"] and s["basis"] == "setting" for s in got["sectors"])
