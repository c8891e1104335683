"""The planner map /maps/canal in headless Chromium: the layers it promises, flow arrows, a shape drawn on the map
gets the verdict /api/canal/check gives for the same geometry, server text shown as text, a planner saves a
drawn polygon as a control zone; and the offline export without the draw tool."""

from __future__ import annotations

import json

import geopandas as gpd
import httpx
import pytest
import shapely

from gis_service.canal import control_zones, pages
from gis_service.config import Settings
from gis_service.domains import DomainContext
from gis_service.maps.factory import MapFactory
from gis_service.privacy import AccessLog
from gis_service.rules import RuleBook
from gis_service.store import SQLiteRecordStore
from tests.maps.browser import MAP_JS, browser_page, feature_count

DRAW = """async ([kind, latlngs]) => {
    const map = %s;
    const layer = kind === 'polygon' ? L.polygon(latlngs) : kind === 'polyline' ? L.polyline(latlngs) : L.marker(latlngs);
    map.fire('draw:created', {layer: layer, layerType: kind});
    for (let i = 0; i < 100 && !layer.gisVerdict; i++) await new Promise(r => setTimeout(r, 100));
    const box = layer.getPopup().getContent(), zh = box.querySelector('.gis-verdict-zh');
    window.lastDrawn = layer;
    return {verdict_zh: zh ? zh.textContent : null, text: box.textContent,
            tip: layer.getTooltip().getContent().textContent, geometry: layer.toGeoJSON().geometry};
}""" % MAP_JS


def _local(server):
    return lambda url: url.startswith(server.url)


def _channel_point(store, catalog, river="北运河", offset_m=300.0):
    """A point offset_m to the side of the middle of a river's channel (lat, lon)."""
    channels = store.read_frame(catalog.get("canal_channels")).to_crs("EPSG:4548")
    line = max(channels[channels["name"] == river].geometry, key=lambda g: g.length)
    mid = line.interpolate(0.5, normalized=True)
    ahead = line.interpolate(line.project(mid) + 10)
    dx, dy = ahead.x - mid.x, ahead.y - mid.y
    norm = (dx * dx + dy * dy) ** 0.5
    point = gpd.GeoSeries([shapely.Point(mid.x - dy / norm * offset_m, mid.y + dx / norm * offset_m)],
                          crs="EPSG:4548").to_crs("EPSG:4326").iloc[0]
    return point.y, point.x


def _shapes(store, catalog):
    """A polygon around a heritage site, a line crossing 北运河, a marker far from every canal."""
    site = store.read_frame(catalog.get("heritage_sites")).iloc[0].geometry
    d = 0.0005
    polygon = [[site.y - d, site.x - d], [site.y - d, site.x + d], [site.y + d, site.x + d], [site.y + d, site.x - d]]
    lat, lon = _channel_point(store, catalog)
    line = [[lat - 0.01, lon - 0.01], [lat + 0.01, lon + 0.01]]
    return [("polygon", polygon), ("polyline", line), ("marker", [39.44, 116.30])]  # 固安县, far from the canals


def test_canal_map_shows_its_layers_and_flow_arrows_in_chromium(server, store, catalog):
    arrows = len(pages.flow_arrows(store.read_frame(catalog.get("canal_channels")).to_crs("EPSG:4548")))
    inside = {v["code"] for v in httpx.get(f"{server.url}/api/canal/villages", timeout=60).json()["villages"]}
    with browser_page(allow=_local(server)) as (page, errors, refused):
        page.goto(server.url + "/maps/canal", wait_until="networkidle")
        layers = page.evaluate("() => Object.keys(window.gisLayers)")
        drawn_arrows = page.evaluate("() => document.querySelectorAll('.gis-flow-arrow').length")
        counts = {k: feature_count(page, k) for k in ("canal_villages_inside", "canal_villages_outside")}
        legend = page.inner_text(".gis-legend")
        toolbar = page.evaluate("() => ['polygon', 'polyline', 'marker'].map(t => "
                                "document.querySelectorAll('.leaflet-draw-draw-' + t).length)")
        save_hint = page.evaluate(DRAW, ["polygon", [[39.5, 116.7], [39.5, 116.71], [39.51, 116.71]]])["text"]
        button = page.evaluate("() => window.lastDrawn.getPopup().getContent().querySelector('.gis-save-button').disabled")
        page.evaluate(f"() => {{ {MAP_JS}.removeLayer(window.gisLayers['canal_channels']); }}")
        arrows_after_toggle = page.evaluate("() => document.querySelectorAll('.gis-flow-arrow').length")
    assert errors == [] and refused == []
    assert {"canal_channels", "canal_zone_village_remediation", "canal_zone_green_belt", "canal_zone_core_monitoring",
            "canal_heritage_protection", "canal_heritage_construction_control", "heritage_sites",
            "canal_villages_inside", "canal_villages_outside"} <= set(layers)
    assert control_zones.LAYER not in layers  # internal: not for an anonymous visitor
    assert drawn_arrows == arrows > 0 and arrows_after_toggle == 0
    assert counts["canal_villages_inside"] == len(inside)
    assert sum(counts.values()) == store.count(catalog.get("villages"))
    assert "水流方向" in legend and "1000 米内（须整治）" in legend and "文物保护范围" in legend
    assert toolbar == [1, 1, 1]
    assert button is True and "需以规划人员" in save_hint


def test_a_drawn_shape_shows_the_verdict_the_api_gives(server, store, catalog):
    seen = set()
    with browser_page(allow=_local(server)) as (page, errors, refused):
        page.goto(server.url + "/maps/canal", wait_until="networkidle")
        for kind, latlngs in _shapes(store, catalog):
            shown = page.evaluate(DRAW, [kind, latlngs])
            direct = httpx.post(f"{server.url}/api/canal/check", json={"geometry": shown["geometry"], "coord_sys": "wgs84"},
                                timeout=30).json()
            assert shown["verdict_zh"] == shown["tip"] == direct["verdict_zh"], kind
            for reason in direct["reasons"]:
                assert reason["text_zh"] in shown["text"] and reason["clause"] in shown["text"]
            seen.add(direct["verdict"])
    assert errors == [] and refused == []
    assert len(seen) >= 2  # the shapes were chosen to get different verdicts


def _core_zone_only_point(server):
    """(lat, lon) of a point in the core monitoring zone but in no narrower zone."""
    def union(kind):
        fc = httpx.get(f"{server.url}/api/canal/zones", params={"kind": kind}, timeout=60).json()
        return shapely.union_all([shapely.geometry.shape(f["geometry"]) for f in fc["features"]])

    point = union("core_monitoring").difference(union("village_remediation").union(union("green_belt")))
    point = point.representative_point()
    return point.y, point.x


def test_the_sector_chosen_on_the_page_is_sent_with_the_check(server):
    lat, lon = _core_zone_only_point(server)
    with browser_page(allow=_local(server)) as (page, errors, refused):
        page.goto(server.url + "/maps/canal", wait_until="networkidle")
        page.select_option(".gis-sector-select", "industrial_mining")
        shown = page.evaluate(DRAW, ["marker", [lat, lon]])
    direct = httpx.post(f"{server.url}/api/canal/check", timeout=30, json={
        "geometry": shown["geometry"], "coord_sys": "wgs84", "sector": "industrial_mining"}).json()
    assert errors == [] and refused == []
    assert shown["verdict_zh"] == direct["verdict_zh"] == "禁止"
    assert direct["negative_list"] and direct["negative_list"][0]["title_zh"] in shown["text"]


def test_a_shape_the_check_refuses_shows_the_reason(server):
    bow_tie = [[39.50, 116.70], [39.51, 116.71], [39.50, 116.71], [39.51, 116.70]]  # crosses itself
    with browser_page(allow=_local(server)) as (page, errors, refused):
        page.goto(server.url + "/maps/canal", wait_until="networkidle")
        shown = page.evaluate(DRAW, ["polygon", bow_tie])
    direct = httpx.post(f"{server.url}/api/canal/check", json={"geometry": shown["geometry"]}, timeout=30)
    assert direct.status_code == 422 and refused == []
    assert shown["verdict_zh"] is None and shown["tip"] == "无法判定" and direct.json()["message"] in shown["text"]


def test_over_a_gaode_basemap_the_page_sends_gcj02(catalog, store, tmp_path):
    settings = Settings.from_env(var_dir=tmp_path, basemap="gaode")
    ctx = DomainContext(settings, catalog, store, SQLiteRecordStore(tmp_path / "r.sqlite"),
                        RuleBook.load().domain("canal"), AccessLog(tmp_path / "log"))
    html = pages.canal_map(ctx, MapFactory(catalog, store, settings), None).get_root().render()
    assert 'var COORD_SYS = "gcj02"' in html


def test_server_text_is_shown_as_text_never_as_html(server):
    hostile = "<img src=x onerror=\"window.pwned=1\">"
    answer = {"verdict": "needs_review", "verdict_zh": "需审查" + hostile, "nearest_zone_edge_m": None,
              "reasons": [{"rule_id": "canal.x" + hostile, "clause": "条款" + hostile, "verdict": "needs_review",
                           "text_zh": "理由" + hostile}],
              "zones": [{"kind": "core_monitoring", "kind_zh": hostile, "river": hostile, "bank": "left",
                         "county": hostile, "distance_to_channel_m": 1}],
              "heritage": [{"name": hostile, "range": "protection", "distance_m": 1}],
              "negative_list": [{"title_zh": hostile, "action": "prohibited"}], "caveats": [hostile], "geometry": None}
    with browser_page(allow=_local(server)) as (page, errors, refused):
        page.route("**/api/canal/check", lambda route: route.fulfill(status=200, content_type="application/json",
                                                                      body=json.dumps(answer)))
        page.goto(server.url + "/maps/canal", wait_until="networkidle")
        shown = page.evaluate(DRAW, ["polygon", [[39.5, 116.7], [39.5, 116.71], [39.51, 116.71]]])
        images = page.evaluate("() => document.querySelectorAll('.leaflet-popup img, .leaflet-tooltip img').length")
        pwned = page.evaluate("() => window.pwned === 1")
    assert images == 0 and not pwned and errors == []
    assert shown["verdict_zh"] == answer["verdict_zh"] and shown["text"].count(hostile) >= 8


def test_a_signed_in_planner_saves_a_drawn_polygon_as_a_control_zone(server):
    key = server.keys.add("planner", "页面规划员")
    polygon = [[39.55, 116.75], [39.55, 116.77], [39.57, 116.77], [39.57, 116.75]]
    with browser_page(allow=_local(server)) as (page, errors, refused):
        signed_in = page.request.post(server.url + "/maps/session", form={"api_key": key}, max_redirects=0)
        page.goto(server.url + "/maps/canal", wait_until="networkidle")
        page.evaluate(DRAW, ["polygon", polygon])
        saved = page.evaluate("""async () => {
            const layer = window.lastDrawn, box = layer.getPopup().getContent();
            box.querySelector('.gis-save-name').value = '页面绘制的保护范围';
            box.querySelector('.gis-save-kind').value = 'heritage_protection';
            box.querySelector('.gis-save-button').click();
            for (let i = 0; i < 100 && !layer.gisSaved; i++) await new Promise(r => setTimeout(r, 100));
            return {saved: layer.gisSaved, status: box.querySelector('.gis-save-status').textContent,
                    geometry: layer.toGeoJSON().geometry};
        }""")
        edited = page.evaluate("""async () => {
            const layer = window.lastDrawn, map = %s;
            layer.gisVerdict = null;
            layer.setLatLngs([[39.55, 116.75], [39.55, 116.78], [39.57, 116.78], [39.57, 116.75]]);
            map.fire('draw:edited', {layers: L.layerGroup([layer])});
            for (let i = 0; i < 100 && !layer.gisVerdict; i++) await new Promise(r => setTimeout(r, 100));
            const box = layer.getPopup().getContent();
            box.querySelector('.gis-save-button').click();
            for (let i = 0; i < 100 && layer.gisSaved.version < 2; i++) await new Promise(r => setTimeout(r, 100));
            return Object.assign({geometry: layer.toGeoJSON().geometry}, layer.gisSaved);
        }""" % MAP_JS)
        layers = page.evaluate("() => Object.keys(window.gisLayers)")
    assert signed_in.status == 303 and errors == [] and refused == []
    assert edited["id"] == saved["saved"]["id"] and edited["version"] == 2  # an edit of the shape: a new version
    assert control_zones.LAYER in layers  # a signed-in planner sees the drawn zones
    assert saved["saved"] and "已保存" in saved["status"]
    zone = httpx.get(f"{server.url}/api/canal/control-zones/{saved['saved']['id']}", timeout=30,
                     headers={"X-API-Key": server.key("planner")}).json()
    assert (zone["name"], zone["kind"], zone["author"], zone["version"]) == (
        "页面绘制的保护范围", "heritage_protection", "页面规划员", 2)
    assert shapely.geometry.shape(zone["geometry"]).equals_exact(shapely.geometry.shape(edited["geometry"]), 1e-7)
    history = httpx.get(f"{server.url}/api/canal/control-zones/{zone['id']}/history", timeout=30,
                        headers={"X-API-Key": server.key("planner")}).json()["versions"]
    assert [(v["action"], v["author"]) for v in history] == [("create", "页面规划员"), ("update", "页面规划员")]
    assert shapely.geometry.shape(history[0]["geometry"]).equals_exact(shapely.geometry.shape(saved["geometry"]), 1e-7)
    items = httpx.get(f"{server.url}/ogc/collections/{control_zones.LAYER}/items", params={"limit": 1000}, timeout=30,
                      headers={"X-API-Key": server.key("planner")}).json()
    assert zone["id"] in [f["properties"]["zone_id"] for f in items["features"]]


def test_the_exported_map_has_no_draw_tool_and_says_so(server, catalog, store, tmp_path):
    """server: the live server has published the derived layers the page reads."""
    settings = Settings.from_env(var_dir=tmp_path)
    ctx = DomainContext(settings, catalog, store, SQLiteRecordStore(tmp_path / "r.sqlite"),
                        RuleBook.load().domain("canal"), AccessLog(tmp_path / "log"))
    factory = MapFactory(catalog, store, settings, standalone=True)
    html = pages.canal_map(ctx, factory, None).get_root().render()
    assert "离线文件：无绘制与选址判定工具" in html
    assert "L.Control.Draw" not in html and "/api/canal/check" not in html and "gis-flow-arrow" in html


def test_flow_arrows_point_downstream_along_a_straight_channel():
    channel = gpd.GeoDataFrame({"name": ["测试河"]}, geometry=[shapely.LineString([(500_000, 4_370_000),
                                                                                     (500_000, 4_360_000)])],
                               crs="EPSG:4548")  # 10 km flowing due south
    arrows = pages.flow_arrows(channel, spacing_m=4000)
    assert len(arrows) == 2
    assert (arrows[:, 1, 1] < arrows[:, 0, 1]).all() and (arrows[:, 0, 0] == 500_000).all()
    assert arrows[:, 0, 1].tolist() == pytest.approx([4_367_500, 4_362_500])
