"""The environment pages in headless Chromium (every request off 127.0.0.1 refused, no console errors): the
map with its layers and the incident form posting and drawing a result, the key-areas page, the A4 report
(screenshot in test-output/), the sign-in notice for anonymous visitors, and server text shown as text."""

from __future__ import annotations

import httpx
import pytest
import shapely

from gis_service import crs
from gis_service.environment import pages
from tests.conftest import OUTPUT_DIR, LiveServer, live_server
from tests.maps.browser import browser_page, feature_count

HOSTILE = "<img src=x onerror=\"window.pwned=1\">"
AIR = {"location": {"type": "Point", "coordinates": [116.70, 39.52]}, "kind": "air", "release_rate_g_s": 2000,
       "duration_min": 30, "wind_from_deg": 225, "wind_speed_m_s": 2.5, "stability": "D",
       "levels_of_concern_mg_m3": [3, 20, 100]}


def _local(server):
    return lambda url: url.startswith(server.url)


def _signed_in(page, server, role="environment") -> None:
    answer = page.request.post(server.url + "/maps/session", form={"api_key": server.key(role)}, max_redirects=0)
    assert answer.status == 303


def test_the_map_shows_the_layers_and_a_click_form_posts_and_draws_an_incident(server):
    with browser_page(allow=_local(server)) as (page, errors, refused):
        _signed_in(page, server)
        page.goto(server.url + "/maps/environment", wait_until="networkidle")
        layers = page.evaluate("() => Object.keys(window.gisLayers)")
        counts = {k: feature_count(page, k) for k in ("risk_sources", "environment_risk_rings", "sensitive_receptors",
                                                       "water_sources", "water_protection_zones")}
        page.evaluate("() => window.gisEnv.openForm(L.latLng(39.52, 116.70))")
        page.fill(".gis-env-form input[name=wind_speed_m_s]", "3")
        page.click(".gis-env-form button[type=submit]")
        page.wait_for_function("() => window.gisEnv.result")
        result = page.evaluate("() => window.gisEnv.result")
        drawn = page.evaluate("() => window.gisLayers.environment_incident.getLayers().length")
        panel = page.inner_text(".gis-env-result")
        link = page.get_attribute(".gis-env-report-link", "href")
        OUTPUT_DIR.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT_DIR / "environment_map_incident.png"))
        clean = list(errors)
        # a refused input shows the server's message (as text); the browser logs the 422 response itself
        page.evaluate("() => window.gisEnv.post({location: {type: 'Point', coordinates: [116.7, 39.52]}, kind: 'air'})")
        page.wait_for_function("() => document.querySelector('.gis-env-error')")
        error = page.inner_text(".gis-env-error")
    assert clean == [] and refused == [] and all("422" in e for e in errors)
    assert set(pages.LAYERS) <= set(layers) and all(n > 0 for n in counts.values()), counts
    assert result["inputs"]["wind_speed_m_s"] == 3 and result["kind"] == "air"
    assert drawn >= len(result["zones"])
    assert f"初判：{result['grading']['grade']}" in panel
    assert link == f"{pages.REPORT_PAGE}?id={result['id']}"
    assert "release_rate_g_s" in error


def test_the_incident_report_renders_for_print_with_a_screenshot(server):
    body = {**AIR, "note": HOSTILE, "facts": {"deaths": 3}}
    incident = httpx.post(f"{server.url}/api/environment/incidents", json=body,
                          headers={"X-API-Key": server.key("environment")}, timeout=60).json()
    with browser_page(allow=_local(server), viewport=(794, 1123)) as (page, errors, refused):  # A4 at 96 dpi
        _signed_in(page, server, "planner")
        page.goto(f"{server.url}/maps/environment/incident?id={incident['id']}", wait_until="networkidle")
        page.wait_for_function("() => window.gisReport && window.gisReport.done")
        text = page.inner_text("#gis-report")
        drawn = page.evaluate("() => Object.keys(window).filter(k => k.startsWith('map_')).length")
        pwned = page.evaluate("() => window.pwned === 1")
        OUTPUT_DIR.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT_DIR / "environment_incident_report.png"), full_page=True)
        page.emulate_media(media="print")
        pdf = page.pdf(format="A4", print_background=True)
        (OUTPUT_DIR / "environment_incident_report.pdf").write_bytes(pdf)
    assert errors == [] and refused == []
    assert f"突发环境事件评估报告（第 {incident['id']} 号，第 1 版）" in text
    g = incident["grading"]
    assert g["grade"] == "较大" and f"初判级别：{g['grade']}" in text and f"响应级别：{g['level']} 级" in text
    for group in g["response"]["groups"]:
        assert group["name"] in text and group["lead"] in text
    assert "市卫生健康委" in text and "廊坊市生态环境局" in text  # a group lead, a notification
    assert "3人以上10人以下死亡" in text and "现场录入" in text  # triggered criterion with its clause and source
    assert "模型与局限" in text and "高斯烟羽" in text
    assert HOSTILE in text and not pwned  # shown as text, never run
    assert drawn >= 1 and pdf.startswith(b"%PDF")
    assert (OUTPUT_DIR / "environment_incident_report.png").stat().st_size > 10_000


def test_the_report_of_an_unknown_incident_says_so(server):
    with browser_page(allow=_local(server)) as (page, errors, refused):
        _signed_in(page, server)
        page.goto(f"{server.url}/maps/environment/incident?id=999999", wait_until="networkidle")
        page.wait_for_function("() => window.gisReport && window.gisReport.done")
        text = page.inner_text("#gis-report")
    assert "无法读取事件 999999" in text
    assert all("404" in e for e in errors)  # the browser logs the refused fetch itself; nothing else


def test_the_key_areas_page_has_map_legend_method_and_date(server):
    with browser_page(allow=_local(server)) as (page, errors, refused):
        _signed_in(page, server, "flood")
        page.goto(server.url + "/maps/environment/key-areas", wait_until="networkidle")
        cells = feature_count(page, "environment_key_areas")
        legend = page.inner_text(".gis-legend")
        method = page.inner_text(".gis-env-method")
    assert errors == [] and refused == []
    assert cells > 0 and "高" in legend and "中" in legend and "低" in legend
    assert "风险指数" in method and "数据日期：20" in method


def test_an_anonymous_visitor_is_asked_to_sign_in(server):
    with browser_page(allow=_local(server)) as (page, errors, refused):
        page.goto(server.url + "/maps/environment", wait_until="networkidle")
        notice = page.inner_text(".gis-env-signin")
    assert errors == [] and "请登录后查看" in notice


@pytest.fixture(scope="module")
def gaode_server(tmp_path_factory):
    """A live server whose map pages use the Gaode (GCJ-02) basemap."""
    var_dir = tmp_path_factory.mktemp("var-gaode")
    with pytest.MonkeyPatch.context() as env:  # the server process takes its environment when it starts
        env.setenv("GIS_BASEMAP", "gaode")
        running = live_server(var_dir)
        _, url = running.__enter__()
    yield LiveServer(url, var_dir)
    running.__exit__(None, None, None)


MARKER = """() => { const g = %s; const m = g.getLayers().find(l => l instanceof L.CircleMarker);
                    const c = g.getLayers().find(l => l.getBounds).getBounds().getCenter();
                    return [m.getLatLng().lat, m.getLatLng().lng, c.lat, c.lng]; }"""


def test_over_a_gaode_basemap_the_zones_are_drawn_where_the_user_clicked(gaode_server):
    """The map is in GCJ-02 over Gaode: the incident posted from a click must be drawn at that click (marker and
    isolation circle), on the map page and in the report, not ≈ 500 m off at the CGCS2000 coordinates."""
    server = gaode_server
    lat, lon = 39.5220, 116.7060  # a click on the Gaode map: GCJ-02
    with browser_page(allow=_local(server)) as (page, errors, refused):
        _signed_in(page, server)
        page.goto(server.url + "/maps/environment", wait_until="load")
        page.wait_for_function("() => window.gisEnv")
        page.evaluate(f"() => window.gisEnv.openForm(L.latLng({lat}, {lon}))")
        page.click(".gis-env-form button[type=submit]")
        page.wait_for_function("() => window.gisEnv.result")
        result = page.evaluate("() => window.gisEnv.result")
        on_map = page.evaluate(MARKER % "window.gisLayers.environment_incident")
        page.goto(f"{server.url}/maps/environment/incident?id={result['id']}", wait_until="load")
        page.wait_for_function("() => window.gisReport && window.gisReport.done")
        in_report = page.evaluate(MARKER % "window.gisReport.zones")
    # the Gaode tiles are off 127.0.0.1: refused here, and the browser logs each refused tile
    assert all("autonavi.com" in url for url in refused) and all("net::ERR_FAILED" in e for e in errors)
    assert result["inputs"]["coord_sys"] == "gcj02"
    stored = crs.gcj02_to_wgs84([lon], [lat])  # what the server stores (CGCS2000 ≈ WGS84)
    assert (result["lon"], result["lat"]) == pytest.approx((stored[0][0], stored[1][0]), abs=1e-7)
    assert abs(result["lon"] - lon) > 0.004  # the stored point really is ≈ 500 m from the click
    for drawn in (on_map, in_report):
        assert drawn[:2] == pytest.approx([lat, lon], abs=1e-7)  # the marker: at the click
        assert drawn[2:] == pytest.approx([lat, lon], abs=2e-5)  # the isolation circle: centred on it (≈ 2 m)
    # the API's geometry stays CGCS2000; only display_* is shifted
    circle = shapely.geometry.shape(result["zones"][0]["geometry"])
    assert circle.centroid.distance(shapely.Point(result["lon"], result["lat"])) < 2e-5
