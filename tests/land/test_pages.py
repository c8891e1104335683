"""The land map /maps/land in headless Chromium (every request off the server refused, no console errors):
plots drawn from the server's vector tiles, a click showing the plot card masked per role, the search box by
plot code, the village summary layer, and server text shown as text."""

from __future__ import annotations

import httpx
import shapely

from tests.maps.browser import MAP_JS, browser_page, feature_count, zoom_to

HOSTILE = "<img src=x onerror=\"window.pwned=1\">"
# the plots are the platform's vector-tile layer (MapFactory.add_vector_tiles), which counts its tiles
WAIT_TILES = """async () => {
    const s = window.gisVectorTiles.plots;
    for (let i = 0; i < 200 && s.tiles < 1; i++) await new Promise(r => setTimeout(r, 50));
    return [s.tiles, s.errors];
}"""
WAIT_CARD = """async (before) => {
    for (let i = 0; i < 200 && (window.gisLand.card === before && window.gisLand.error === null); i++)
        await new Promise(r => setTimeout(r, 50));
    return document.getElementById('gis-land-card').textContent;
}"""


def _local(server):
    return lambda url: url.startswith(server.url)


def _sign_in(page, server, role):
    answer = page.request.post(server.url + "/maps/session", form={"api_key": server.key(role)}, max_redirects=0)
    assert answer.status == 303


def _click(page, lon, lat):
    page.evaluate("() => { window.gisLand.card = null; window.gisLand.error = null; }")
    page.evaluate(f"() => {{ {MAP_JS}.fire('click', {{latlng: L.latLng({lat}, {lon})}}); }}")
    return page.evaluate(WAIT_CARD, None)


def test_tiles_from_the_server_and_the_card_without_key(server, transferred_plot):
    p = shapely.point_on_surface(transferred_plot["geometry"])
    tile_urls = []
    with browser_page(allow=_local(server)) as (page, errors, refused):
        page.on("request", lambda r: tile_urls.append(r.url) if "/tiles/WebMercatorQuad/" in r.url else None)
        page.goto(server.url + "/maps/land")
        page.wait_for_function("window.gisLand !== undefined")
        zoom_to(page, 15, p.y, p.x)
        loaded, failed = page.evaluate(WAIT_TILES)
        assert loaded >= 1 and failed == 0
        assert any("/ogc/collections/plots/tiles/WebMercatorQuad/15/" in u for u in tile_urls)
        # drawn by the platform's layer only: one VectorGrid on the page, styled by transfer status
        html = page.content()
        assert html.count("L.vectorGrid.protobuf(") == 1 and '"category_field": "transfer_status"' in html
        text = _click(page, p.x, p.y)
        assert transferred_plot["dkbm"] in text and "登录后按权限显示" in text
        assert "流转" in text and str(transferred_plot["measured_area_mu"]) in text
        assert feature_count(page, "land_villages") > 100
        assert not errors and not refused, (errors, refused)


def test_card_per_role_and_search_box(server, transferred_plot, household_of):
    h = household_of(transferred_plot["cbfbm"])
    p = shapely.point_on_surface(transferred_plot["geometry"])
    for role, shown, hidden in (("rural", h["name"], None), ("planner", h["name"][0] + "*", h["id_number"])):
        with browser_page(allow=_local(server)) as (page, errors, refused):
            _sign_in(page, server, role)
            page.goto(server.url + "/maps/land")
            page.wait_for_function("window.gisLand !== undefined")
            text = _click(page, p.x, p.y)
            assert shown in text
            if hidden:
                assert hidden not in text and h["phone"] not in text
            else:
                assert h["id_number"] in text and h["phone"] in text
            page.fill("#gis-land-search", transferred_plot["dkbm"])
            page.evaluate("() => { window.gisLand.card = null; }")
            page.click("#gis-land-search-button")
            text = page.evaluate(WAIT_CARD, None)
            assert transferred_plot["dkbm"] in text
            inside = page.evaluate(f"() => {MAP_JS}.getBounds().contains(L.latLng({p.y}, {p.x}))")
            assert inside
            page.fill("#gis-land-search", "123")
            page.evaluate("() => { window.gisLand.card = null; window.gisLand.error = null; }")
            page.click("#gis-land-search-button")
            page.wait_for_function("window.gisLand.error !== null")
            assert "查询失败" in page.evaluate("() => window.gisLand.error")
            unexpected = [e for e in errors if "status of 422" not in e]  # the refused code is logged by Chromium
            assert not unexpected and not refused, (errors, refused)


def test_server_text_is_shown_as_text(server, transferred_plot):
    import sqlite3

    from .conftest import PLOTS, plot_row
    conn = sqlite3.connect(f"file:{PLOTS}?mode=ro", uri=True)
    dkbm = conn.execute("SELECT dkbm FROM plots WHERE village_code = ? AND dkbm != ? ORDER BY fid DESC LIMIT 1",
                        (transferred_plot["village_code"], transferred_plot["dkbm"])).fetchone()[0]
    r = httpx.patch(f"{server.url}/api/land/plots/{dkbm}", json={"changes": {"dkmc": HOSTILE}},
                    headers={"X-API-Key": server.key("admin")}, timeout=30)
    assert r.status_code == 200
    p = shapely.point_on_surface(plot_row("dkbm = ?", (dkbm,))["geometry"])
    with browser_page(allow=_local(server)) as (page, errors, refused):
        page.goto(server.url + "/maps/land")
        page.wait_for_function("window.gisLand !== undefined")
        text = _click(page, p.x, p.y)
        assert HOSTILE in text
        assert page.evaluate("() => window.pwned === undefined")
        assert not page.query_selector("#gis-land-card img")
