"""/api/environment on the live server: grading, risk zones, incident assessment and records (versions,
idempotent retries, nothing half-saved), key areas, roles, and 422s that name the field."""

from __future__ import annotations

import httpx
import pytest
import shapely

from gis_service import crs

AIR = {"location": {"type": "Point", "coordinates": [116.70, 39.52]}, "coord_sys": "wgs84", "kind": "air",
       "release_rate_g_s": 2000, "duration_min": 30, "wind_from_deg": 225, "wind_speed_m_s": 2.5, "stability": "D",
       "levels_of_concern_mg_m3": [3, 20, 100]}


def _h(server, role="environment"):
    return {"X-API-Key": server.key(role)}


def _post(server, body, role="environment"):
    return httpx.post(f"{server.url}/api/environment/incidents", json=body, headers=_h(server, role), timeout=60)


def test_grade_endpoint(server):
    r = httpx.post(f"{server.url}/api/environment/grade", json={"evacuated": 10000}, headers=_h(server, "planner"))
    assert r.status_code == 200
    body = r.json()
    assert body["grade"] == "重大" and body["level"] == "II" and body["report_to_province"] is True
    assert body["triggered"][0]["threshold"] == "≥ 10000 且 < 50000" and "1555" in body["triggered"][0]["clause"]
    assert {g["name"] for g in body["response"]["groups"]} >= {"污染处置组", "社会稳定组"}


@pytest.mark.parametrize("facts, field", [({}, None), ({"deaths": -1}, "deaths"), ({"deaths": 1.5}, "deaths"),
                                          ({"cross_boundary": "moon"}, "cross_boundary")])
def test_grade_bad_input_is_422(server, facts, field):
    r = httpx.post(f"{server.url}/api/environment/grade", json=facts, headers=_h(server))
    assert r.status_code == 422 and set(r.json()) == {"code", "message"}
    if field:
        assert field in r.json()["message"]


def test_grade_needs_a_key(server):
    assert httpx.post(f"{server.url}/api/environment/grade", json={"deaths": 1}).status_code == 401


def test_risk_zones_register_and_one_source(server):
    body = httpx.get(f"{server.url}/api/environment/risk-zones", headers=_h(server, "flood"), timeout=60).json()
    rings = body["rings"]
    assert rings and {r["radius_m"] for r in rings} <= {500.0, 1000.0, 3000.0}
    big = next(r for r in rings if r["hazard_class"] == "重大")
    one = httpx.get(f"{server.url}/api/environment/risk-zones/{big['source_id']}", headers=_h(server)).json()
    assert [r["radius_m"] for r in one["rings"]] == [500.0, 1000.0, 3000.0]
    pops = [r["population"] for r in one["rings"]]
    assert pops == sorted(pops)  # cumulative within each radius
    assert httpx.get(f"{server.url}/api/environment/risk-zones/NOPE", headers=_h(server)).status_code == 404
    ogc = httpx.get(f"{server.url}/ogc/collections/environment_risk_rings/items?limit=1", headers=_h(server)).json()
    assert ogc["numberMatched"] == len(rings)
    assert httpx.get(f"{server.url}/ogc/collections/environment_risk_rings").status_code == 404  # internal


def test_air_incident_is_saved_versioned_and_readable(server):
    r = _post(server, AIR)
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["version"] == 1 and first["saved_by"] == "test-environment"
    kinds = [z["zone"] for z in first["zones"]]
    assert kinds == ["isolation", "plume", "plume", "plume"]
    areas = [z["area_m2"] for z in first["zones"][1:]]
    assert areas == sorted(areas)  # 100, 20, 3 mg/m³: higher level, smaller zone
    # the plume lies downwind (wind from the south-west: towards the north-east)
    x0, y0 = crs.transform_xy(116.70, 39.52, crs.STORAGE_CRS, crs.METRIC_CRS)
    c = crs.transform_geometry(shapely.geometry.shape(first["zones"][-1]["geometry"]), crs.STORAGE_CRS, crs.METRIC_CRS).centroid
    assert c.x > float(x0) and c.y > float(y0)
    incident_id = first["id"]
    # an update: new wind → version 2, the first version kept
    r2 = httpx.put(f"{server.url}/api/environment/incidents/{incident_id}", json={"wind_from_deg": 45, "facts": {"deaths": 3}},
                   headers=_h(server), timeout=60)
    assert r2.status_code == 200, r2.text
    second = r2.json()
    assert second["version"] == 2 and second["inputs"]["wind_from_deg"] == 45 and second["staff_facts"] == {"deaths": 3}
    assert any(t["criterion"] == "deaths" and t["source"] == "staff" for t in second["grading"]["triggered"])
    hist = httpx.get(f"{server.url}/api/environment/incidents/{incident_id}/history", headers=_h(server, "planner")).json()
    assert [v["version"] for v in hist["versions"]] == [1, 2]
    assert hist["versions"][0]["inputs"]["wind_from_deg"] == 225
    assert hist["versions"][0]["saved_by"] is None  # the saver's name: environment and admin only
    got = httpx.get(f"{server.url}/api/environment/incidents/{incident_id}", headers=_h(server)).json()
    assert got["version"] == 2 and got["saved_by"] == "test-environment"
    stale = httpx.put(f"{server.url}/api/environment/incidents/{incident_id}", json={"base_version": 1, "hours": 3},
                      headers=_h(server))
    assert stale.status_code == 409


def test_only_environment_and_admin_post(server):
    assert _post(server, AIR, "planner").status_code == 403
    assert httpx.post(f"{server.url}/api/environment/incidents", json=AIR).status_code == 401
    assert _post(server, AIR, "admin").status_code == 201


def test_a_retry_with_the_same_client_ref_is_not_saved_twice(server):
    body = {**AIR, "client_ref": "retry-test-1"}
    a, b = _post(server, body), _post(server, body)
    assert a.status_code == 201 and b.status_code == 200 and b.json()["duplicate"] and a.json()["id"] == b.json()["id"]
    assert _post(server, {**body, "wind_speed_m_s": 5}).status_code == 409


def _count(server):
    return len(httpx.get(f"{server.url}/api/environment/incidents?limit=1000", headers=_h(server)).json()["incidents"])


@pytest.mark.parametrize("change, field", [
    ({"stability": "G"}, "stability"), ({"wind_speed_m_s": 0}, "wind_speed_m_s"),
    ({"wind_speed_m_s": 90}, "wind_speed_m_s"), ({"release_rate_g_s": None}, "release_rate_g_s"),
    ({"release_rate_g_s": -5}, "release_rate_g_s"), ({"levels_of_concern_mg_m3": [1, 2, 3, 4]}, "levels_of_concern_mg_m3"),
    ({"location": {"type": "Point", "coordinates": [39.52, 116.70]}}, "location"),
    ({"location": {"type": "Point", "coordinates": [121.47, 31.23]}}, "location"),
    ({"kind": "fire"}, "kind"), ({"facts": {"deaths": -2}}, "deaths"), ({"wind": 3}, "wind"),
])
def test_bad_input_is_422_naming_the_field_and_nothing_is_saved(server, change, field):
    before = _count(server)
    r = _post(server, {**AIR, **change})
    assert r.status_code == 422, r.text
    assert field in r.json()["message"]
    assert _count(server) == before


def test_an_axis_swap_is_explained(server):
    r = _post(server, {**AIR, "location": {"type": "Point", "coordinates": [39.52, 116.70]}})
    assert "交换" in r.json()["message"] or "swap" in r.json()["message"]


def test_a_plume_into_beijing_is_cross_provincial_and_at_least_重大(server):
    # 香河 near the 通州 border, wind from the east (towards the west, into Beijing), stable night air
    body = {**AIR, "location": {"type": "Point", "coordinates": [116.95, 39.78]}, "wind_from_deg": 90,
            "stability": "F", "wind_speed_m_s": 1.5, "release_rate_g_s": 5000, "levels_of_concern_mg_m3": [5]}
    d = _post(server, body).json()
    assert "北京市" in d["admin"]["provinces"] and d["admin"]["cross_boundary"] == "province"
    assert d["derived_facts"]["cross_boundary"] == "province"
    assert d["grading"]["grade"] in ("重大", "特别重大")
    assert any(n["to"].startswith("北京市") for n in d["notify"])


def test_a_river_spill_traces_downstream_with_arrival_times(server):
    body = {"location": {"type": "Point", "coordinates": [116.30, 38.93]}, "kind": "water", "hours": 12,
            "velocity_m_s": 0.5}
    d = _post(server, body).json()
    z = d["zones"][0]
    assert z["zone"] == "river" and d["model"]["river"] == "赵王新河"
    assert z["length_m"] == pytest.approx(0.5 * 12 * 3600, rel=1e-6)  # not at the end of the data
    reach = shapely.geometry.shape(z["reach"])  # 赵王新河 flows east (to 苏桥 and 大清河): downstream is east
    assert reach.coords[-1][0] > reach.coords[0][0] + 0.2


def test_water_without_hours_and_soil_without_radius_are_422(server):
    loc = {"location": {"type": "Point", "coordinates": [116.30, 38.93]}}
    assert "hours" in _post(server, {**loc, "kind": "water"}).json()["message"]
    assert "radius_m" in _post(server, {**loc, "kind": "soil"}).json()["message"]
    assert _post(server, {**loc, "kind": "soil", "radius_m": 800}).status_code == 201


def test_key_areas(server):
    d = httpx.get(f"{server.url}/api/environment/key-areas", headers=_h(server), timeout=60).json()
    assert d["type"] == "FeatureCollection" and d["features"]
    assert {f["properties"]["risk_class"] for f in d["features"]} <= {"高", "中", "低"}
    assert d["method"]["id"] == "key_area_method" and d["data_date"]
    high, medium = d["method"]["value"]["high"], d["method"]["value"]["medium"]
    for f in d["features"]:
        p = f["properties"]
        expected = "高" if p["risk_index"] >= high else "中" if p["risk_index"] >= medium else "低"
        assert p["risk_class"] == expected


def test_a_bad_update_saves_no_version_and_unknown_ids_are_404(server):
    incident = _post(server, AIR).json()
    url = f"{server.url}/api/environment/incidents/{incident['id']}"
    bad = httpx.put(url, json={"wind_speed_m_s": -3}, headers=_h(server))
    assert bad.status_code == 422 and "wind_speed_m_s" in bad.json()["message"]
    assert httpx.put(url, json={"hours": 5}, headers=_h(server, "flood")).status_code == 403
    hist = httpx.get(url + "/history", headers=_h(server)).json()
    assert [v["version"] for v in hist["versions"]] == [1]
    assert httpx.get(f"{server.url}/api/environment/incidents/987654", headers=_h(server)).status_code == 404
    assert httpx.put(f"{server.url}/api/environment/incidents/987654", json={"hours": 1}, headers=_h(server)).status_code == 404
    assert httpx.get(url).status_code == 401


def test_a_point_in_a_neighbouring_county_beyond_the_langfang_box_is_accepted(server, catalog, store):
    neighbours = store.read_frame(catalog.get("neighbor_counties")).to_crs(crs.METRIC_CRS)
    (x0, x1), (y0, y1) = crs._metric_extent()
    box = shapely.box(x0 - crs.INPUT_MARGIN_M, y0 - crs.INPUT_MARGIN_M, x1 + crs.INPUT_MARGIN_M, y1 + crs.INPUT_MARGIN_M)
    jizhou = neighbours[neighbours["name"] == "蓟州区"].geometry.iloc[0].difference(box.buffer(2000))
    p = crs.transform_geometry(jizhou.representative_point(), crs.METRIC_CRS, crs.STORAGE_CRS)
    with pytest.raises(Exception):
        crs.to_storage_xy(p.x, p.y, "cgcs2000")  # the platform's box alone refuses it
    d = _post(server, {"location": {"type": "Point", "coordinates": [p.x, p.y]}, "coord_sys": "cgcs2000",
                       "kind": "soil", "radius_m": 500}).json()
    assert d["admin"]["origin_county"] == "蓟州区" and d["admin"]["cross_boundary"] is None  # a 500 m radius wholly inside 蓟州
    far = _post(server, {**AIR, "location": {"type": "Point", "coordinates": [118.5, 39.6]}})
    assert far.status_code == 422 and "周边县区" in far.json()["message"]


@pytest.mark.parametrize("path, text, field", [
    ("grade", '{"deaths": 100000000000000000000000000000}', "deaths"),
    ("grade", '{"direct_loss_cny": 100000000000000000000000000000}', "direct_loss_cny"),
    ("incidents", '{"location": {"type": "Point", "coordinates": [1%s, 39.5]}, "kind": "soil", "radius_m": 5}' % ("0" * 400),
     "location"),
    ("incidents", '{"location": {"type": "Point", "coordinates": [NaN, 39.5]}, "kind": "soil", "radius_m": 5}', "location"),
    ("incidents", ('{"location": {"type": "Point", "coordinates": [116.7, 39.52]}, "kind": "soil", "radius_m": 5, '
                   '"facts": {"evacuated": 100000000000000000000000000000}}'), "evacuated"),
])
def test_huge_or_non_finite_numbers_are_422_never_500(server, path, text, field):
    """Numbers beyond 64 bits (or floats) were 500s: the answer could not be serialised / converted."""
    r = httpx.post(f"{server.url}/api/environment/{path}", content=text, timeout=60,
                   headers={**_h(server), "Content-Type": "application/json"})
    assert r.status_code == 422 and set(r.json()) == {"code", "message"}, r.text
    assert field in r.json()["message"]


def test_an_unknown_coordinate_system_is_422_without_the_neighbour_county_remark(server):
    r = _post(server, {**AIR, "coord_sys": "foo"})
    assert r.status_code == 422 and r.json()["code"] == "bad_coord_sys"
    assert "field 'coord_sys'" in r.json()["message"] and "周边县区" not in r.json()["message"]


def test_display_map_adds_drawing_coordinates_and_leaves_the_stored_ones(server):
    """Without a Gaode basemap (the test server's) the drawing coordinates are the stored ones; a bad value is 400."""
    incident = _post(server, AIR).json()
    url = f"{server.url}/api/environment/incidents/{incident['id']}"
    d = httpx.get(url, params={"display": "map"}, headers=_h(server)).json()
    assert d["display_crs"] == "wgs84" and d["lon"] == incident["lon"]
    assert d["display_location"] == pytest.approx({"lon": incident["lon"], "lat": incident["lat"]}, abs=1e-12)
    for z in d["zones"]:
        assert shapely.geometry.shape(z["display_geometry"]).equals_exact(shapely.geometry.shape(z["geometry"]), 1e-12)
    bad = httpx.get(url, params={"display": "gcj02"}, headers=_h(server))
    assert bad.status_code == 400 and set(bad.json()) == {"code", "message"}
    assert "display_geometry" not in httpx.get(url, headers=_h(server)).json()["zones"][0]


def test_the_savers_name_is_shown_to_environment_and_admin_only_and_each_disclosure_is_logged(server):
    incident = _post(server, AIR).json()
    url = f"{server.url}/api/environment/incidents/{incident['id']}"

    def logged() -> list[dict]:
        return [e for e in server.access_entries() if e["collection"] == "environment_incident_versions"
                and e.get("subjects") == [str(incident["id"])]]

    after_post = len(logged())
    assert after_post == 1 and logged()[0]["who"] == "test-environment" and logged()[0]["fields"] == ["saved_by"]
    assert httpx.get(url, headers=_h(server, "planner")).json()["saved_by"] is None
    assert httpx.get(url + "/history", headers=_h(server, "flood")).json()["versions"][0]["saved_by"] is None
    assert len(logged()) == after_post  # masked: nothing disclosed, nothing logged
    assert httpx.get(url, headers=_h(server, "admin")).json()["saved_by"] == "test-environment"
    assert httpx.get(url + "/history", headers=_h(server, "admin")).json()["versions"][0]["saved_by"] == "test-environment"
    entries = logged()
    assert len(entries) == after_post + 2 and {e["role"] for e in entries[-2:]} == {"admin"}
    assert entries[-1]["request"].endswith(f"/incidents/{incident['id']}/history") and entries[-1]["count"] == 1


def test_an_update_moving_the_location_reads_it_in_its_own_coordinate_system(server):
    """Posted from a Gaode page (GCJ-02), moved by an update giving WGS84 lon/lat without coord_sys: the new point
    must not be read as GCJ-02 (≈ 500 m off)."""
    first = _post(server, {**AIR, "coord_sys": "gcj02"}).json()
    assert abs(first["lon"] - 116.70) > 0.004  # really converted from GCJ-02
    moved = httpx.put(f"{server.url}/api/environment/incidents/{first['id']}", headers=_h(server), timeout=60,
                      json={"location": {"type": "Point", "coordinates": [116.71, 39.53]}}).json()
    assert (moved["lon"], moved["lat"]) == pytest.approx((116.71, 39.53), abs=1e-9)
    assert moved["inputs"].get("coord_sys", "wgs84") == "wgs84"
    kept = httpx.put(f"{server.url}/api/environment/incidents/{first['id']}", headers=_h(server), timeout=60,
                     json={"wind_from_deg": 90}).json()
    assert (kept["lon"], kept["lat"]) == (moved["lon"], moved["lat"]) and kept["version"] == 3



def test_a_spill_on_the_beiyun_river_travels_south_and_reaches_the_water_sources_in_order(server):
    """北运河 flows from 通州 (north) to 武清 (south): the front goes south, and the two sources by the river are
    reached in the order of their distance, never sooner than the straight distance at the velocity allows."""
    v, band = 0.5, 1000.0  # the rule river_zone_buffer_m: the sources lie within 1 km of the line
    d = _post(server, {"location": {"type": "Point", "coordinates": [116.913, 39.771]}, "kind": "water",
                       "hours": 72, "velocity_m_s": v}).json()
    z = d["zones"][0]
    reach = shapely.geometry.shape(z["reach"])
    assert d["model"]["river"] == "北运河" and reach.coords[-1][1] < reach.coords[0][1] - 0.1  # > 11 km south
    reached = sorted((w for w in z["water_sources"] if w["arrival_h"] is not None), key=lambda w: w["arrival_h"])
    assert len(reached) == 2
    for w in reached:  # along the river ≥ straight line − the spill's and the source's distance from the line
        assert w["arrival_h"] * v * 3600 >= w["distance_m"] - d["model"]["entry_offset_m"] - band
    assert reached[0]["distance_m"] < reached[1]["distance_m"]
