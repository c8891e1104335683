"""The command map /maps/flood in headless Chromium (every request off 127.0.0.1 refused, no console errors):
the layers it promises for a signed-in flood user, a report posted during the test turning its underpass red
after the status refresh without a reload, the sign-in notice for an anonymous visitor, server text shown as
text, the scenario overlay with its predicted closures, and the offline export without live controls."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from gis_service import crs
from gis_service.auth import Principal
from gis_service.config import Settings
from gis_service.domains import DomainContext
from gis_service.flood import pages
from gis_service.maps.export import standalone_html
from gis_service.maps.factory import MapFactory
from gis_service.privacy import AccessLog
from gis_service.rules import RuleBook
from gis_service.store import SQLiteRecordStore
from tests.maps.browser import browser_page, feature_count

FAST_REFRESH = "window.gisFloodRefreshMs = 300;"  # the page's 30 s interval, shortened for the test
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")
PRESET = "ampil_2018"  # flood.scenario_presets: 2018-07-24 台风安比
HOSTILE = "<img src=x onerror=\"window.pwned=1\">"


def _local(server):
    return lambda url: url.startswith(server.url)


def _signed_in(page, server) -> None:
    answer = page.request.post(server.url + "/maps/session", form={"api_key": server.key("flood")}, max_redirects=0)
    assert answer.status == 303


def _point(server, point_id):
    status = httpx.get(f"{server.url}/api/flood/status", headers={"X-API-Key": server.key("flood")}, timeout=30).json()
    return next(p for p in status["points"] if p["point_id"] == point_id)


MARKERS = """() => Object.fromEntries(Object.entries(window.gisFlood.markers).map(([id, m]) => [id, {
    colour: m.options.fillColor, status: m.gisStatus,
    label: m.getTooltip() && m.getTooltip().options.permanent ? m.getTooltip().getContent().textContent : null}]))"""
CLOSURES = """() => Array.from(document.querySelectorAll('.gis-flood-closure')).map(li => ({
    id: li.dataset.pointId, text: li.textContent}))"""
WAIT_REFRESH = """async (n) => {
    const start = window.gisFlood.refreshes;
    for (let i = 0; i < 200 && window.gisFlood.refreshes < start + n; i++) await new Promise(r => setTimeout(r, 50));
    return window.gisFlood.refreshes - start;
}"""


def test_a_signed_in_flood_user_sees_the_command_map(server):
    status = httpx.get(f"{server.url}/api/flood/status", headers={"X-API-Key": server.key("flood")}, timeout=30).json()
    with browser_page(allow=_local(server)) as (page, errors, refused):
        _signed_in(page, server)
        page.goto(server.url + "/maps/flood", wait_until="networkidle")
        page.wait_for_function("() => window.gisFlood && window.gisFlood.status")
        layers = page.evaluate("() => Object.keys(window.gisLayers)")
        counts = {k: feature_count(page, k) for k in pages.CONTEXT_LAYERS}
        markers = page.evaluate(MARKERS)
        closures = page.evaluate(CLOSURES)
        legend = page.inner_text(".gis-legend")
        units = page.evaluate("""() => ['drainage_channels', 'drainage_gates', 'pumping_stations'].map(k => {
            let html = ''; window.gisLayers[k].eachLayer(g => g.eachLayer(l => { html = html || l.getPopup().getContent(); }));
            return html; })""")
        title = page.inner_text(".gis-title")
        presets = page.evaluate("() => Array.from(document.querySelectorAll('.gis-flood-preset option'))"
                                ".map(o => o.value)")
    assert errors == [] and refused == []
    assert set(pages.CONTEXT_LAYERS) | {"flood_points"} <= set(layers)
    assert all(n > 0 for n in counts.values()), counts
    assert set(markers) == {p["point_id"] for p in status["points"]}
    for p in status["points"]:
        assert markers[p["point_id"]]["colour"] == pages.STATUS_COLORS[p["status"]]
        assert markers[p["point_id"]]["label"] == ("禁止通行" if p["status"] == "closed" else None)
    assert {c["id"] for c in closures} == {p["point_id"] for p in status["points"] if p["status"] == "closed"}
    assert "责任单位" in units[0] and "责任单位" in units[1] and "管理单位" in units[2]
    assert f"每 {RuleBook.load().domain('flood').value('status_refresh_s'):g} 秒刷新" in title and "监测点（黑圈）状态：断交（禁止通行）" in legend
    assert presets == list(RuleBook.load().domain("flood").value(pages.PRESETS_RULE))


def test_a_report_above_the_threshold_turns_its_underpass_red_after_the_refresh_without_a_reload(server):
    key = server.key("flood")
    status = httpx.get(f"{server.url}/api/flood/status", headers={"X-API-Key": key}, timeout=30).json()
    observed = (datetime.now(timezone.utc) - timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    target = next(p for p in status["points"] if p["kind"] == "underpass" and p["status"] != "closed"
                  and (p["observed_at"] is None or p["observed_at"] < observed))  # ours becomes the latest
    with browser_page(allow=_local(server)) as (page, errors, refused):
        _signed_in(page, server)
        page.add_init_script(FAST_REFRESH)
        page.goto(server.url + "/maps/flood", wait_until="load")  # a 300 ms refresh never lets the network idle
        page.wait_for_function("() => window.gisFlood && window.gisFlood.status")
        page.evaluate("() => { window.sameDocument = true; }")  # gone if the page reloads
        before = page.evaluate(MARKERS)[target["point_id"]]
        posted = httpx.post(f"{server.url}/api/flood/reports", headers={"X-API-Key": key}, timeout=30, json={
            "point_id": target["point_id"], "depth_cm": target["threshold_cm"] + 5, "observed_at": observed,
            "reporter": "页面测试", "report_id": f"page-test-{target['point_id']}"})
        assert posted.status_code in (200, 201), posted.text
        assert page.evaluate(WAIT_REFRESH, 2) >= 2
        after = page.evaluate(MARKERS)[target["point_id"]]
        closures = page.evaluate(CLOSURES)
        same = page.evaluate("() => window.sameDocument === true")
    assert errors == [] and refused == []
    assert before["colour"] != pages.STATUS_COLORS["closed"]
    assert same and after == {"colour": pages.STATUS_COLORS["closed"], "status": "closed", "label": "禁止通行"}
    now = _point(server, target["point_id"])
    shown = next(c for c in closures if c["id"] == target["point_id"])
    assert now["status"] == "closed" and now["name"] in shown["text"] and now["district"] in shown["text"]
    assert now["responsible_unit"] in shown["text"]


def test_an_anonymous_visitor_is_asked_to_sign_in(server):
    with browser_page(allow=_local(server)) as (page, errors, refused):
        answer = page.goto(server.url + "/maps/flood", wait_until="networkidle")
        notice = page.inner_text(".gis-flood-signin")
        layers = page.evaluate("() => Object.keys(window.gisLayers)")
        live = page.evaluate("() => window.gisFlood === undefined")
    assert answer.status == 200 and errors == [] and refused == []
    assert "请登录后查看" in notice and live
    assert not set(pages.CONTEXT_LAYERS + pages.POINT_LAYERS) & set(layers)


def _canned_status(point_id="up-1"):
    return {"generated_at": "2026-07-24T10:00:00Z", "rules_applied": [], "points": [
        {"point_id": point_id, "kind": "underpass", "name": "解放道下穿" + HOSTILE, "district": "广阳区" + HOSTILE,
         "lon": 116.70, "lat": 39.52, "depth_cm": 42.0, "status": "closed", "status_zh": "断交" + HOSTILE,
         "since": "2026-07-24T09:50:00Z", "observed_at": "2026-07-24T09:50:00Z", "threshold_cm": 30,
         "responsible_unit": "广阳区" + HOSTILE,
         "nearest_pumping_station": {"name": "民心桥泵站" + HOSTILE, "owner": HOSTILE, "distance_m": 420.4},
         "closure_task": {"unit": "市公安局（交警）" + HOSTILE, "text_zh": "封闭道路" + HOSTILE, "rule_id": "flood.x",
                          "clause": HOSTILE}},
        {"point_id": "wl-1", "kind": "waterlogging", "name": "新华路" + HOSTILE, "district": "安次区", "lon": 116.69,
         "lat": 39.51, "depth_cm": None, "status": "unknown", "status_zh": "无报告", "since": None, "observed_at": None,
         "threshold_cm": 30, "responsible_unit": "安次区", "nearest_pumping_station": None, "closure_task": None}]}


def _canned_scenario():
    return {"scenario_id": "s1", "method": "填洼" + HOSTILE, "assumptions": [HOSTILE], "raster_url": "/x.tif",
            "image_url": "/static/none.png", "bounds": [116.65, 39.48, 116.75, 39.56], "closures": [],
            "points": [{"point_id": "up-1", "name": "解放道下穿" + HOSTILE, "kind": "underpass",
                        "predicted_depth_cm": 55.0, "closes": True},
                       {"point_id": "wl-1", "name": "新华路", "kind": "waterlogging", "predicted_depth_cm": 3.0,
                        "closes": False}]}


def test_server_text_is_shown_as_text_never_as_html(server):
    """The page against canned answers (a UI test of text insertion, not of the flood API)."""
    with browser_page(allow=_local(server)) as (page, errors, refused):
        _signed_in(page, server)
        page.route("**/api/flood/status", lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(_canned_status())))
        page.route("**/api/flood/scenarios", lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(_canned_scenario())))
        page.route("**/static/none.png", lambda route: route.fulfill(status=200, content_type="image/png", body=PNG))
        page.goto(server.url + "/maps/flood", wait_until="networkidle")
        page.wait_for_function("() => window.gisFlood && window.gisFlood.status")
        page.evaluate("() => { const m = window.gisFlood.markers['up-1']; m.openPopup(); }")
        page.click(".gis-flood-run")
        page.wait_for_function("() => window.gisFlood.scenario")
        popup = page.inner_text(".leaflet-popup-content")
        panel = page.text_content(".gis-flood-panel")  # with the folded method
        overlay = page.evaluate("() => window.gisFlood.scenarioOverlay.getBounds().toBBoxString()")
        rings = page.evaluate("() => window.gisFlood.scenarioRings.getLayers().length")
        images = page.evaluate("() => document.querySelectorAll('.leaflet-popup img, .gis-flood-panel img').length")
        pwned = page.evaluate("() => window.pwned === 1")
    assert errors == [] and refused == [] and images == 0 and not pwned
    assert popup.count(HOSTILE) >= 7 and "420 米" in popup
    assert panel.count(HOSTILE) >= 5 and "预测积水 55 厘米" in panel and "新华路" not in panel.split("预测断交")[1]
    assert overlay == "116.65,39.48,116.75,39.56" and rings == 1  # one predicted closure


def test_a_failed_refresh_says_so_and_keeps_the_last_status(server):
    calls = []

    def answer(route):
        calls.append(1)
        if len(calls) == 1:
            route.fulfill(status=200, content_type="application/json", body=json.dumps(_canned_status()))
        else:
            route.fulfill(status=401, content_type="application/json",
                          body=json.dumps({"code": "invalid_api_key", "message": "API 密钥无效或已吊销"}))

    with browser_page(allow=_local(server)) as (page, errors, refused):
        _signed_in(page, server)
        page.add_init_script(FAST_REFRESH)
        page.route("**/api/flood/status", answer)
        page.goto(server.url + "/maps/flood", wait_until="load")  # a 300 ms refresh never lets the network idle
        page.wait_for_function("() => window.gisFlood && window.gisFlood.refreshes >= 2")
        stamp = page.inner_text(".gis-flood-stamp")
        markers = page.evaluate(MARKERS)
    assert refused == [] and [e for e in errors if "401" not in e] == []  # the browser logs the 401 itself
    assert "状态刷新失败" in stamp and "重新登录" in stamp and "上次的状态" in stamp
    assert markers["up-1"]["colour"] == pages.STATUS_COLORS["closed"]


def test_running_a_scenario_preset_adds_the_depth_image_and_its_predicted_closures(server):
    key = server.key("flood")
    probe = httpx.post(f"{server.url}/api/flood/scenarios", headers={"X-API-Key": key}, timeout=120,
                       json={"preset": PRESET})
    assert probe.status_code == 200, probe.text
    expected = probe.json()
    with browser_page(allow=_local(server)) as (page, errors, refused):
        _signed_in(page, server)
        page.goto(server.url + "/maps/flood", wait_until="networkidle")
        page.select_option(".gis-flood-preset", PRESET)
        page.click(".gis-flood-run")
        page.wait_for_function("() => window.gisFlood.scenario", timeout=120_000)
        page.wait_for_function("() => { const img = window.gisFlood.scenarioOverlay.getElement();"
                               " return img.complete && img.naturalWidth > 0; }", timeout=30_000)  # the PNG
        shown = page.evaluate("""() => ({
            url: window.gisFlood.scenarioOverlay._url, answered: window.gisFlood.scenario.image_url,
            bounds: window.gisFlood.scenarioOverlay.getBounds().toBBoxString(),
            loaded: window.gisFlood.scenarioOverlay.getElement().complete &&
                    window.gisFlood.scenarioOverlay.getElement().naturalWidth > 0,
            rings: window.gisFlood.scenarioRings.getLayers().length,
            closures: Array.from(document.querySelectorAll('.gis-flood-scenario-closure'))
                           .map(li => li.dataset.pointId)})""")
        panel = page.text_content(".gis-flood-panel")  # with the folded method
    assert errors == [] and refused == []
    assert shown["url"] == shown["answered"] and shown["loaded"]  # each run has its own scenario_id
    assert re.fullmatch(r"/api/flood/scenarios/\w+/depth\.png", shown["url"])
    assert [float(v) for v in shown["bounds"].split(",")] == pytest.approx(expected["bounds"])
    assert shown["closures"] == [p["point_id"] for p in expected["points"] if p["closes"]]
    assert shown["rings"] == len(shown["closures"])
    assert "2018-07-24 台风安比" in panel and expected["method"] in panel
    assert all(p["name"] in panel for p in expected["points"] if p["closes"])


def test_the_exported_map_has_no_live_controls_and_says_so(server, catalog, store, tmp_path):
    """server: the live server has built the flood layers the page reads."""
    settings = Settings.from_env(var_dir=tmp_path)
    ctx = DomainContext(settings, catalog, store, SQLiteRecordStore(tmp_path / "r.sqlite"),
                        RuleBook.load().domain("flood"), AccessLog(tmp_path / "log"))
    factory = MapFactory(catalog, store, settings, standalone=True)
    m = pages.flood_map(ctx, factory, Principal("cli", "flood"))
    html = m.get_root().render()
    path = tmp_path / "flood.html"
    path.write_text(standalone_html(factory.render(m), settings.static_dir), encoding="utf-8")
    with browser_page(allow=lambda u: u == path.as_uri()) as (page, errors, refused):  # the file, nothing else
        page.goto(path.as_uri(), wait_until="load")
        counts = {k: feature_count(page, k) for k in pages.CONTEXT_LAYERS + pages.POINT_LAYERS}
    assert errors == [] and refused == [] and all(n > 0 for n in counts.values()), counts
    assert "离线文件：无实时状态刷新与降雨情景" in html
    assert pages.STATUS_URL not in html and pages.SCENARIO_URL not in html and "gisFloodRefreshMs" not in html
    for layer_id in pages.CONTEXT_LAYERS + pages.POINT_LAYERS:
        assert f'window.gisLayers["{layer_id}"]' in html
    assert "（无实时状态）" in html and pages.STATUS_COLORS["unknown"] in html
    anonymous = pages.flood_map(ctx, factory, None).get_root().render()
    assert "请登录后查看" in anonymous and "--role" in anonymous and "drainage_channels" not in anonymous


def test_over_a_gaode_basemap_the_points_are_shifted_as_the_server_shifts_them(server, catalog, store, tmp_path):
    """The page's wgs84→GCJ-02 shift (status points and scenario bounds) against gis_service.crs."""
    settings = Settings.from_env(var_dir=tmp_path, basemap="gaode")
    ctx = DomainContext(settings, catalog, store, SQLiteRecordStore(tmp_path / "r.sqlite"),
                        RuleBook.load().domain("flood"), AccessLog(tmp_path / "log"))
    html = pages.flood_map(ctx, MapFactory(catalog, store, settings), Principal("t", "flood")).get_root().render()
    url = server.url + "/maps/flood-gaode-test"
    with browser_page(allow=_local(server)) as (page, errors, refused):
        page.route(url, lambda route: route.fulfill(status=200, content_type="text/html", body=html))
        page.route("**/api/flood/status", lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(_canned_status())))
        page.goto(url, wait_until="load")
        page.wait_for_function("() => window.gisFlood && window.gisFlood.status")
        shifted = page.evaluate("() => [window.gisFloodToMap(116.70, 39.52), window.gisFloodToMap(116.60, 39.40)]")
    lon, lat = crs.wgs84_to_gcj02([116.70, 116.60], [39.52, 39.40])
    assert [p[0] for p in shifted] == pytest.approx(list(lat), abs=1e-9)
    assert [p[1] for p in shifted] == pytest.approx(list(lon), abs=1e-9)
    assert abs(shifted[0][1] - 116.70) > 0.003  # really shifted (≈ 500 m here)


def test_a_hung_status_request_is_aborted_and_refreshing_goes_on(server):
    calls, hung = [], []

    def answer(route):
        calls.append(1)
        if len(calls) == 1:
            hung.append(route)  # never answered: the server hangs
        else:
            route.fulfill(status=200, content_type="application/json", body=json.dumps(_canned_status()))

    with browser_page(allow=_local(server)) as (page, errors, refused):
        _signed_in(page, server)
        page.add_init_script(FAST_REFRESH + "window.gisFloodStatusTimeoutMs = 500;")
        page.route("**/api/flood/status", answer)
        page.goto(server.url + "/maps/flood", wait_until="load")
        page.wait_for_function("() => window.gisFlood && window.gisFlood.status && window.gisFlood.refreshes >= 2",
                               timeout=30_000)
        markers = page.evaluate(MARKERS)
    assert refused == [] and errors == []
    assert len(hung) == 1 and len(calls) >= 2  # the hung first request did not stop the later ones
    assert markers["up-1"]["colour"] == pages.STATUS_COLORS["closed"]


def test_the_status_timeout_is_20_seconds_in_the_page(server):
    with browser_page(allow=_local(server)) as (page, errors, refused):
        _signed_in(page, server)
        page.goto(server.url + "/maps/flood", wait_until="load")
        html = page.content()
    assert pages.STATUS_TIMEOUT_MS == 20_000 and "AbortController" in html and "|| 20000" in html
