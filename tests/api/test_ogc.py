"""OGC API – Features over a live server: real HTTP, GDAL's OAPIF client, owslib, roles, errors."""

import json
import re
import shutil
import subprocess

import httpx
import pytest
import shapely

from gis_service import crs

EPSG = "http://www.opengis.net/def/crs/EPSG/0/"
COUNTY_NAMES = {"安次区", "广阳区", "固安县", "永清县", "香河县", "大城县", "文安县", "大厂回族自治县", "霸州市", "三河市"}


def get(server, path, key=None, **params):
    headers = {"X-API-Key": key} if key else {}
    return httpx.get(server.url + path, params=params, headers=headers, timeout=30)


def test_gdal_ogc_client_lists_collections_and_reads_the_ten_counties(server, tmp_path):
    ogrinfo = shutil.which("ogrinfo")
    assert ogrinfo, "gdal-bin must be installed (make test installs it)"
    listing = subprocess.run([ogrinfo, "-ro", "-q", f"OAPIF:{server.url}/ogc"], capture_output=True, text=True,
                             timeout=120)
    assert listing.returncode == 0, listing.stderr
    assert "counties" in listing.stdout and "villages" in listing.stdout
    out = tmp_path / "counties.geojson"
    conv = subprocess.run(["ogr2ogr", "-f", "GeoJSON", str(out), f"OAPIF:{server.url}/ogc/collections/counties",
                           "counties"], capture_output=True, text=True, timeout=120)
    assert conv.returncode == 0, conv.stderr
    data = json.loads(out.read_text())
    assert {f["properties"]["name"] for f in data["features"]} == COUNTY_NAMES
    reference = json.loads((server_root() / "layers/admin/langfang_counties_wgs84.geojson").read_text())
    ref = {f["properties"]["name"]: shapely.geometry.shape(f["geometry"]) for f in reference["features"]}
    for f in data["features"]:
        got = shapely.geometry.shape(f["geometry"])
        assert got.symmetric_difference(ref[f["properties"]["name"]]).area < 1e-9


def server_root():
    from gis_service.config import REPO_ROOT
    return REPO_ROOT


def test_owslib_reads_items_with_bbox_and_limit(server):
    from owslib.ogcapi.features import Features

    api = Features(server.url + "/ogc")
    assert "villages" in [c["id"] for c in api.collections()["collections"]]
    result = api.collection_items("villages", bbox=[116.3, 39.0, 116.6, 39.2], limit=7)
    assert result["numberReturned"] == 7
    for f in result["features"]:
        assert shapely.geometry.shape(f["geometry"]).intersects(shapely.box(116.3, 39.0, 116.6, 39.2))


def test_crs_4548_returns_metres_in_northing_easting_order(server):
    plain = get(server, "/ogc/collections/weather_stations/items").json()
    metric = get(server, "/ogc/collections/weather_stations/items", crs=EPSG + "4548")
    assert metric.headers["content-crs"] == f"<{EPSG}4548>"
    for a, b in zip(plain["features"], metric.json()["features"]):
        lon, lat = a["geometry"]["coordinates"]
        north, east = b["geometry"]["coordinates"]
        e, n = crs.from_storage_xy(lon, lat, "epsg:4548")
        assert east == pytest.approx(e[0], abs=0.01) and north == pytest.approx(n[0], abs=0.01)
        assert 4.2e6 < north < 4.5e6 and 3e5 < east < 6e5


def test_bbox_in_4527_with_zone_prefix_selects_the_same_villages_as_crs84(server):
    box = (116.45, 39.05, 116.62, 39.18)
    crs84 = get(server, "/ogc/collections/villages/items", bbox=",".join(map(str, box)), limit=1000).json()
    # The enclosing box in EPSG:4527 (northing, easting order; easting with the zone prefix 39).
    xs, ys = crs.from_storage_xy([box[0], box[2], box[0], box[2]], [box[1], box[1], box[3], box[3]], "epsg:4527")
    gk = f"{ys.min()},{xs.min()},{ys.max()},{xs.max()}"
    proj = get(server, "/ogc/collections/villages/items", bbox=gk, **{"bbox-crs": EPSG + "4527"}, limit=1000).json()
    lonlat_ids = {f["id"] for f in crs84["features"]}
    gk_ids = {f["id"] for f in proj["features"]}
    # Independent expectation: villages inside the projected box, computed with shapely in EPSG:4527.
    vill = get(server, "/ogc/collections/villages/items", limit=10000).json()["features"]
    px, py = crs.from_storage_xy([f["geometry"]["coordinates"][0] for f in vill],
                                 [f["geometry"]["coordinates"][1] for f in vill], "epsg:4527")
    inside = {f["id"] for f, x, y in zip(vill, px, py) if xs.min() <= x <= xs.max() and ys.min() <= y <= ys.max()}
    assert gk_ids == inside
    assert len(lonlat_ids) > 10 and len(lonlat_ids ^ gk_ids) <= 0.1 * len(lonlat_ids)


def test_paging_links_walk_the_whole_collection(server):
    url = server.url + "/ogc/collections/heritage_sites/items?limit=4"
    ids = []
    while url:
        doc = httpx.get(url).json()
        ids += [f["id"] for f in doc["features"]]
        url = next((l["href"] for l in doc["links"] if l["rel"] == "next"), None)
    assert sorted(ids) == list(range(1, 11))


def test_cql2_filter_and_property_equality(server):
    poly = "POLYGON((116.8 39.6,117.3 39.6,117.3 40.1,116.8 40.1,116.8 39.6))"
    doc = get(server, "/ogc/collections/counties/items", filter=f"S_INTERSECTS(geom,{poly}) AND NOT name = '三河市'").json()
    names = {f["properties"]["name"] for f in doc["features"]}
    assert "三河市" not in names and {"香河县", "大厂回族自治县"} <= names
    eq = get(server, "/ogc/collections/counties/items", name="文安县").json()
    assert [f["properties"]["adcode"] for f in eq["features"]] == [131026]


def test_cql2_json_filter_selects_like_pandas_and_a_hostile_filter_is_a_400(server, catalog, store):
    frame = store.read_frame(catalog.get("villages"))
    box = (116.3, 39.0, 116.6, 39.2)
    want = sorted(frame.index[(frame.county == "霸州市") & frame.intersects(shapely.box(*box))].tolist())
    tree = {"op": "and", "args": [{"op": "=", "args": [{"property": "county"}, "霸州市"]},
                                  {"op": "s_intersects", "args": [{"property": "geom"}, {"bbox": list(box)}]}]}
    r = get(server, "/ogc/collections/villages/items", filter=json.dumps(tree), limit=10000,
            **{"filter-lang": "cql2-json"})
    assert r.status_code == 200 and sorted(f["id"] for f in r.json()["features"]) == want and want
    for text, lang in [("(" * 300 + "county = '霸州市'" + ")" * 300, "cql2-text"),
                       (" OR ".join(f"county_adcode = {i}" for i in range(1100)), "cql2-text"),
                       ('{"op":"not","args":[' * 400 + json.dumps(tree) + "]}" * 400, "cql2-json")]:
        bad = get(server, "/ogc/collections/villages/items", filter=text, **{"filter-lang": lang})
        body = bad.json()
        assert bad.status_code == 400 and set(body) == {"code", "message"} and body["code"] == "bad_filter"
        assert "filter 参数无效" in body["message"] and " / invalid filter" in body["message"]


def test_roles_restricted_layers_and_personal_fields(server):
    anon = {c["id"] for c in get(server, "/ogc/collections").json()["collections"]}
    assert "contractor_households" not in anon and "risk_sources" not in anon and "plots" in anon
    assert get(server, "/ogc/collections/contractor_households/items").status_code == 404
    planner = server.key("planner")
    seen = {c["id"] for c in get(server, "/ogc/collections", planner).json()["collections"]}
    assert "risk_sources" in seen and "contractor_households" not in seen
    assert get(server, "/ogc/collections/contractor_households", planner).status_code == 404
    masked = get(server, "/ogc/collections/plots/items", planner, limit=5).json()["features"]
    rural = get(server, "/ogc/collections/plots/items", server.key("rural"), limit=5).json()["features"]
    for m, r in zip(masked, rural):
        name, ident, phone = (r["properties"][k] for k in ("contractor_name", "contractor_id_number", "contractor_phone"))
        assert m["properties"]["contractor_name"] == name[0] + "*" * (len(name) - 1)
        assert m["properties"]["contractor_id_number"] == ident[:4] + "**********" + ident[-4:]
        assert m["properties"]["contractor_phone"] == phone[:3] + "****" + phone[-4:]
    # without a key: no person at all — every personal property null (issue #9 §8), the item too
    personal = ("contractor_name", "contractor_id_number", "contractor_phone", "zjrxm", "dkdz", "dkxz", "dknz", "dkbz")
    nobody = get(server, "/ogc/collections/plots/items", limit=5).json()["features"]
    assert [f["id"] for f in nobody] == [f["id"] for f in rural]
    assert all(f["properties"][k] is None for f in nobody for k in personal)
    assert all(r["properties"]["contractor_name"] for r in rural)
    item = get(server, f"/ogc/collections/plots/items/{nobody[0]['id']}").json()
    assert all(item["properties"][k] is None for k in personal)
    picked = get(server, "/ogc/collections/plots/items", properties="dkbm,contractor_name", limit=3).json()
    assert all(f["properties"]["contractor_name"] is None for f in picked["features"])
    assert get(server, "/ogc/collections/plots/items", planner, contractor_name="张伟").status_code == 403
    assert get(server, "/ogc/collections/plots/items", planner, filter="contractor_name LIKE '张%'").status_code == 403
    assert get(server, "/ogc/collections/plots/items", planner, sortby="-contractor_phone").status_code == 403
    chosen = get(server, "/ogc/collections/plots/items", planner, properties="dkbm,contractor_phone", limit=3).json()
    assert all(f["properties"]["contractor_phone"][3:7] == "****" for f in chosen["features"])
    log = server.access_log_text()
    assert "test-rural" in log and "test-planner" not in log
    households = get(server, "/ogc/collections/contractor_households/items", server.key("rural"), limit=1)
    assert households.status_code == 200 and households.json()["features"]


def test_keys_are_stored_hashed(server):
    key = server.key("admin")
    raw = server.key_storage()
    assert key.encode() not in raw


@pytest.mark.parametrize("path, params, status", [
    ("/ogc/collections/nosuch/items", {}, 404),
    ("/ogc/collections/counties/items", {"limit": "abc"}, 400),
    ("/ogc/collections/counties/items", {"bbox": "1,2,3"}, 400),
    ("/ogc/collections/counties/items", {"crs": "EPSG:9999"}, 400),
    ("/ogc/collections/counties/items", {"filter": "name = = 1"}, 400),
    ("/ogc/collections/counties/items", {"nosuch": "1"}, 400),
    ("/ogc/collections/counties/items/999999", {}, 404),
    ("/ogc/collections/counties/items", {"offset": str(10**20)}, 400),
    ("/api/crs/convert", {"x": "505000", "y": "4372000", "from": "epsg:4527"}, 422),
])
def test_bad_input_gets_a_json_error_in_chinese_and_english(server, path, params, status):
    r = get(server, path, **params)
    assert r.status_code == status
    body = r.json()
    assert set(body) == {"code", "message"} and " / " in body["message"]


def test_invalid_key_is_401(server):
    r = get(server, "/ogc/collections", "lf_not-a-key")
    assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"


def test_crs_convert_endpoint_gcj02_to_wgs84(server):
    glon, glat = crs.wgs84_to_gcj02(116.7, 39.5)
    r = get(server, "/api/crs/convert", x=float(glon), y=float(glat), **{"from": "gcj02", "to": "wgs84"}).json()
    assert abs(r["x"] - 116.7) * 86_000 < 1 and abs(r["y"] - 39.5) * 111_000 < 1
    bad = get(server, "/api/crs/convert", x=39.5, y=116.7)
    assert bad.status_code == 422 and "axes swapped" in bad.json()["message"]


@pytest.mark.embedded_only  # the fuzzer tests the HTTP surface; the stores' parity is tests/pg's
def test_schemathesis_finds_no_server_errors_or_schema_violations(server, tmp_path):
    """Reads with a planner's key: the fuzzer sends a credential of the documented security schemes (or an empty
    X-API-Key) on nearly every request, each a 401 without one. Writes without one, so it changes no layer."""
    exe = shutil.which("schemathesis", path=str(server_root() / ".venv/bin")) or shutil.which("schemathesis")
    reads = ["--include-method", "GET", "--include-method", "HEAD", "-H", f"X-API-Key: {server.key('planner')}"]
    for only in (reads, ["--exclude-method", "GET", "--exclude-method", "HEAD"]):
        result = subprocess.run(
            [exe, "run", f"{server.url}/ogc/openapi", "--max-examples", "25", "--checks", "all",
             "--exclude-checks", "positive_data_acceptance,negative_data_rejection,ignored_auth,unsupported_method,missing_required_header",
             "--request-timeout", "300", "--max-response-time", "300", "--seed", "1", "--no-color", *only],
            capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        refused = re.search(r"401 Unauthorized \(\d+ operations?\):\n((?:[ \t]+- .*\n)+)", result.stdout)
        assert only is not reads or not refused or "/ogc/" not in refused.group(1), refused.group(1)


def test_datetime_interval_on_the_plots_contract_start(server, catalog, store):
    frame = store.read_frame(catalog.get("plots"))
    start = frame["contract_start"]
    box = (116.3, 39.0, 116.6, 39.2)
    in_box = frame.intersects(shapely.box(*box))
    # Interval ends taken from the data (whatever dates the demo draws), each interval closed at both ends.
    dates = sorted(start.dropna().unique())
    a, b = dates[len(dates) // 3], dates[2 * len(dates) // 3]
    for interval, expected in [(f"{a}/{b}", (start >= a) & (start <= b)),
                               (f"../{a}", start <= a), (f"{b}/..", start >= b)]:
        doc = get(server, "/ogc/collections/plots/items", datetime=interval, bbox=",".join(map(str, box)),
                  limit=10000, properties="contract_start").json()
        assert doc["numberMatched"] == int((expected & in_box).sum()) > 0
    assert get(server, "/ogc/collections/counties/items", datetime="2021-01-01").status_code == 400
    extent = get(server, "/ogc/collections/plots").json()["extent"]["temporal"]["interval"][0]
    assert extent == [start.min(), start.max()]


def test_map_sign_in_sets_a_cookie_that_unlocks_entitled_layers(server):
    anon = httpx.get(server.url + "/maps/").text
    assert "contractor_households" not in anon and "当前为匿名访问" in anon
    bad = httpx.post(server.url + "/maps/session", data={"api_key": "lf_wrong"})
    assert bad.status_code == 401
    ok = httpx.post(server.url + "/maps/session", data={"api_key": server.key("rural")}, follow_redirects=False)
    assert ok.status_code == 303 and "httponly" in ok.headers["set-cookie"].lower()
    signed_in = httpx.get(server.url + "/maps/", cookies=ok.cookies).text
    assert "test-rural" in signed_in and "/maps/layers/contractor_households" in signed_in


def test_epsg4490_output_is_lat_lon_and_properties_subset(server):
    plain = get(server, "/ogc/collections/weather_stations/items", properties="name").json()["features"]
    latlon = get(server, "/ogc/collections/weather_stations/items", properties="name", crs=EPSG + "4490")
    assert latlon.headers["content-crs"] == f"<{EPSG}4490>"
    for a, b in zip(plain, latlon.json()["features"]):
        assert b["geometry"]["coordinates"] == pytest.approx(a["geometry"]["coordinates"][::-1], abs=1e-7)
        assert list(b["properties"]) == ["name"]


def test_filter_crs_4548_polygon_selects_like_the_crs84_polygon(server):
    ring = [(116.6, 39.45), (116.8, 39.45), (116.8, 39.6), (116.6, 39.6), (116.6, 39.45)]
    wkt84 = "POLYGON((" + ",".join(f"{x} {y}" for x, y in ring) + "))"
    e, n = crs.from_storage_xy([p[0] for p in ring], [p[1] for p in ring], "epsg:4548")
    wkt_gk = "POLYGON((" + ",".join(f"{nn} {ee}" for ee, nn in zip(e, n)) + "))"  # northing first (EPSG order)
    a = get(server, "/ogc/collections/villages/items", filter=f"S_INTERSECTS(geom,{wkt84})", limit=5000).json()
    b = get(server, "/ogc/collections/villages/items", filter=f"S_INTERSECTS(geom,{wkt_gk})", limit=5000,
            **{"filter-crs": EPSG + "4548"}).json()
    ids_a, ids_b = {f["id"] for f in a["features"]}, {f["id"] for f in b["features"]}
    assert len(ids_a) > 20 and len(ids_a ^ ids_b) <= 2  # straight edges in 4548 bow slightly in lon/lat


def test_html_views_escape_and_link(server):
    page = httpx.get(server.url + "/ogc/collections/heritage_sites/items?f=html&limit=3").text
    assert "金门闸遗址" in page or "文安古城墙" in page
    assert 'offset=3&amp;f=html">' in page  # the whole link is escaped
    assert httpx.get(server.url + "/ogc?f=html").headers["content-type"].startswith("text/html")


def test_map_view_features_withhold_for_anonymous_mask_for_planner_and_log_for_rural(server, catalog, store):
    from gis_service.store import FeatureQuery

    c = store.query(catalog.get("plots"), FeatureQuery(limit=1)).geometries[0].centroid
    box = f"{c.x - 0.002},{c.y - 0.002},{c.x + 0.002},{c.y + 0.002}"
    anon = httpx.get(server.url + "/maps/api/plots/features", params={"bbox": box}).json()
    # without a key no person at all (issue #9 §8): neither the name's row nor a masked value
    assert anon["features"] and all("承包方代表姓名" not in f["properties"]["__popup"]
                                    and "*" not in f["properties"]["__popup"] for f in anon["features"])
    planner = httpx.get(server.url + "/maps/api/plots/features", params={"bbox": box},
                        headers={"X-API-Key": server.key("planner")}).json()
    assert planner["features"] and all("承包方代表姓名" in f["properties"]["__popup"] and "*" in f["properties"]["__popup"]
                                       for f in planner["features"])
    rural = httpx.get(server.url + "/maps/api/plots/features", params={"bbox": box},
                      headers={"X-API-Key": server.key("rural")}).json()
    assert len(rural["features"]) == len(anon["features"])
    entries = server.access_entries()
    assert any(e["who"] == "test-rural" and "/maps/api/plots" in e["request"] for e in entries)
    assert not any("/maps/api/plots" in e["request"] and e["who"] != "test-rural" for e in entries)


def test_a_zero_width_projected_bbox_is_a_point_not_a_500(server):
    # A point box in EPSG:4548 (northing, easting) at a county town, and one far outside Langfang.
    e, n = crs.from_storage_xy(116.69, 39.50, "epsg:4548")
    inside = get(server, "/ogc/collections/counties/items", bbox=f"{n[0]},{e[0]},{n[0]},{e[0]}",
                 **{"bbox-crs": EPSG + "4548"})
    source = json.loads((server_root() / "layers/admin/langfang_counties_wgs84.geojson").read_text(encoding="utf-8"))
    want = [f["properties"]["name"] for f in source["features"]
            if shapely.geometry.shape(f["geometry"]).contains(shapely.Point(116.69, 39.50))]
    assert inside.status_code == 200 and [f["properties"]["name"] for f in inside.json()["features"]] == want
    nowhere = get(server, "/ogc/collections/counties/items", bbox="1,1,1,1", **{"bbox-crs": EPSG + "4548"})
    assert nowhere.status_code == 200 and nowhere.json()["numberMatched"] == 0
