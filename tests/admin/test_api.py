"""GET /api/admin/where over a live server, checked against a second method (geodesic distances on the
stored lon/lat, county by point-in-polygon on the committed source file), and the map page in Chromium."""

import json

import httpx
import numpy as np
import pytest
import shapely
from pyproj import Geod

from gis_service import crs
from gis_service.config import REPO_ROOT
from tests.maps.browser import browser_page, feature_count

POINTS = [(116.70, 39.52), (116.35, 38.95), (117.05, 39.95), (116.62, 38.70)]


@pytest.mark.parametrize("lon, lat", POINTS)
def test_where_matches_geodesic_nearest_village_and_county_polygon(server, store, catalog, lon, lat):
    got = httpx.get(f"{server.url}/api/admin/where", params={"x": lon, "y": lat}).json()
    source = json.loads((REPO_ROOT / "layers/admin/langfang_counties_wgs84.geojson").read_text(encoding="utf-8"))
    county = next(f["properties"]["name"] for f in source["features"]
                  if shapely.geometry.shape(f["geometry"]).contains(shapely.Point(lon, lat)))
    assert got["county"]["name"] == county
    villages = store.read_frame(catalog.get("villages"))
    _, _, dist = Geod(ellps="GRS80").inv(np.full(len(villages), lon), np.full(len(villages), lat),
                                         villages.geometry.x.values, villages.geometry.y.values)
    i = int(np.argmin(dist))
    limit = got["rules_applied"][0]
    assert limit["key"] == "admin.nearest_village_max_m" and limit["unit"] == "m"
    if dist[i] <= limit["value"]:
        assert got["nearest_village"]["code"] == villages["code"].iloc[i]
        assert got["nearest_village"]["distance_m"] == pytest.approx(dist[i], abs=0.5)
        same = (villages["county"] == county).to_numpy() & (dist <= limit["value"])
        j = np.flatnonzero(same)[np.argmin(dist[same])]
        assert got["township"]["name"] == villages["township"].iloc[j]
    else:
        assert got["nearest_village"] is None


def test_gcj02_input_is_converted_before_the_lookup(server):
    lon, lat = POINTS[0]
    glon, glat = crs.wgs84_to_gcj02(lon, lat)
    plain = httpx.get(f"{server.url}/api/admin/where", params={"x": lon, "y": lat}).json()
    shifted = httpx.get(f"{server.url}/api/admin/where", params={"x": float(glon), "y": float(glat),
                                                                   "coord_sys": "gcj02"}).json()
    assert shifted["cgcs2000"]["lon"] == pytest.approx(lon, abs=1e-7)
    assert shifted["nearest_village"] == plain["nearest_village"]


@pytest.mark.parametrize("params, expected", [
    ({"x": 39.52, "y": 116.70}, "axes swapped"),
    ({"x": 504_000, "y": 4_375_000, "coord_sys": "epsg:4527"}, "lacks the Gauss-Kruger zone prefix"),
    ({"x": 116.7, "y": 39.5, "coord_sys": "mars"}, "unsupported coord_sys"),
    ({"x": "abc", "y": 39.5}, "invalid request"),
])
def test_bad_coordinates_get_a_4xx_with_the_likely_mistake(server, params, expected):
    r = httpx.get(f"{server.url}/api/admin/where", params=params)
    assert 400 <= r.status_code < 500
    body = r.json()
    assert set(body) == {"code", "message"} and expected in body["message"]


def test_admin_map_page_answers_a_click_in_chromium(server):
    lon, lat = POINTS[0]
    expected = httpx.get(f"{server.url}/api/admin/where", params={"x": lon, "y": lat}).json()
    script = f"""async () => {{
        const name = Object.keys(window).find(k => k.startsWith('map_') && window[k] instanceof L.Map);
        window[name].fire('click', {{latlng: L.latLng({lat}, {lon})}});
        for (let i = 0; i < 50 && !document.querySelector('.gis-where'); i++) await new Promise(r => setTimeout(r, 100));
        return document.querySelector('.gis-where').innerText;
    }}"""
    with browser_page(allow=lambda u: u.startswith(server.url)) as (page, errors, refused):
        page.goto(server.url + "/maps/admin", wait_until="networkidle")
        text = page.evaluate(script)
    assert errors == [] and refused == []
    assert expected["county"]["name"] in text and expected["nearest_village"]["name"] in text


def test_index_lists_the_domain_page_and_the_rules(server):
    page = httpx.get(f"{server.url}/maps/").text
    assert 'href="/maps/admin"' in page and 'href="/maps/rules"' in page


def test_admin_page_exports_to_a_file_that_opens_offline(tmp_path, catalog, store):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "gis_service.cli", "maps", "export", "admin", "--output",
                           str(tmp_path)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
                          env={"GIS_VAR_DIR": str(tmp_path / "var"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    url = (tmp_path / "admin.html").as_uri()
    with browser_page(allow=lambda u: u == url) as (page, errors, refused):
        page.goto(url, wait_until="load")
        villages = feature_count(page, "villages")
        title = page.title()
    assert errors == [] and refused == []
    assert villages == store.count(catalog.get("villages")) and "离线文件不支持点击查询" in title
