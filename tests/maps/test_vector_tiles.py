"""MapFactory.add_vector_tiles in headless Chromium: Leaflet.VectorGrid from /static fetches the collection's
tiles from the live server, draws them on canvas, and popups show the (masked) values as text."""

from __future__ import annotations

import re

import pytest

from gis_service.config import Settings
from gis_service.maps import assets
from gis_service.maps.factory import MapFactory
from gis_service.privacy import mask_value
from gis_service.store import GeoPackageStore

from ..api.test_tiles import MARKUP, tiles_server  # noqa: F401 (the fixture: a live server on hand-made layers)
from .browser import MAP_JS, browser_page, zoom_to

PAGE = "/__vector_tiles_test"  # served by the test itself on the server's origin (so cookies and /static work)


def test_vectorgrid_is_an_allow_listed_asset():
    assert "leaflet.vectorgrid/dist/Leaflet.VectorGrid.bundled.min.js" in assets.js_paths()


def page_html(server, role: str | None) -> str:
    settings = Settings(layers_dir=server.catalog.root, var_dir=server.var)
    factory = MapFactory(server.catalog, GeoPackageStore(), settings)
    m = factory.new_map("矢量瓦片 vector tiles", location=(39.5025, 116.712), zoom=15)
    factory.add_vector_tiles(m, server.catalog.get("parcels"), role,
                             outline=("status", {"入股": "#de2d26"}))
    return factory.render(m)


def painted(key: str) -> str:
    """JS: non-transparent pixels on the layer's canvases (VectorGrid draws each tile on its own canvas)."""
    return f"""(() => {{
        let n = 0;
        window.gisLayers[{key!r}].getContainer().querySelectorAll('canvas').forEach(c => {{
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            for (let i = 3; i < d.length; i += 4) {{ if (d[i]) n += 1; }}
        }});
        return n;
    }})()"""


def click_at(page, lat: float, lon: float) -> str:
    point = page.evaluate(f"() => {{ const p = {MAP_JS}.latLngToContainerPoint([{lat}, {lon}]); return [p.x, p.y]; }}")
    box = page.locator(".folium-map").bounding_box()
    page.mouse.click(box["x"] + point[0], box["y"] + point[1])
    page.wait_for_selector(".leaflet-popup-content .gis-popup", timeout=10_000)
    text = page.inner_text(".leaflet-popup-content")
    page.evaluate(f"() => {MAP_JS}.closePopup()")
    # Leaflet fades a closed popup out before removing it: the next click must not read the old one
    page.wait_for_selector(".leaflet-popup", state="detached", timeout=10_000)
    return text


def wait_for_tiles(page, key: str, pixels: int = 1) -> None:
    page.wait_for_function(f"() => window.gisVectorTiles[{key!r}].tiles > 0 && {painted(key)} >= {pixels}",
                           timeout=30_000)


@pytest.mark.parametrize("role", [None, "planner", "rural"])
def test_tiles_fetched_drawn_and_popups_are_text(tiles_server, role):  # noqa: F811
    html = page_html(tiles_server, role)
    tile_requests = []
    with browser_page(allow=lambda url: url.startswith(tiles_server.url)) as (page, errors, refused):
        page.route(tiles_server.url + PAGE, lambda route: route.fulfill(body=html, content_type="text/html"))
        page.on("response", lambda r: tile_requests.append((r.url, r.status))
                if "/tiles/WebMercatorQuad/" in r.url else None)
        if role:  # sign in as a user would: the session cookie then travels with every tile request
            page.goto(tiles_server.url + "/maps/")
            page.fill("input[name=api_key]", tiles_server.keys[role])
            page.click("form[action='/maps/session'] button")
            page.wait_for_load_state()
        page.goto(tiles_server.url + PAGE)
        # the 30 × 12 strips cover about 600 × 150 pixels at zoom 15
        wait_for_tiles(page, "parcels", pixels=50_000)
        z15 = [u for u, s in tile_requests if re.search(r"/WebMercatorQuad/15/\d+/\d+$", u) and s == 200]
        assert z15, tile_requests
        # a click on strip P1005 (i = 10, j = 5) shows its card; the owner masked unless the role is entitled
        text = click_at(page, 39.50 + 5 * 0.0004 + 0.0002, 116.70 + 10 * 0.0008 + 0.0004)
        owner = tiles_server.frame.set_index("code").loc["P1005", "owner"]
        assert "P1005" in text and "流转状态" in text
        if role is None:  # without a key no person at all (issue #9 §8): not even the row
            assert "承包方" not in text and owner not in text and mask_value("name", owner) not in text
        else:
            shown = owner if role == "rural" else mask_value("name", owner)
            assert re.search(rf"承包方\s+{re.escape(shown)}", text), text
        if role != "rural":
            assert owner not in text
        # markup in a value stays text
        zoom_to(page, 17, 39.50025, 116.7425)
        wait_for_tiles(page, "parcels")
        text = click_at(page, 39.50025, 116.7425)
        assert MARKUP in text
        assert page.evaluate("() => window.injected === undefined")
        # zoomed out below the detail zoom: cells with their count
        before = len(tile_requests)
        zoom_to(page, 11, 39.5025, 116.712)
        page.wait_for_function("() => window.gisVectorTiles['parcels'].tiles > 0 && "
                               "document.querySelectorAll('.leaflet-tile-loaded').length > 0", timeout=20_000)
        page.wait_for_timeout(500)
        cells = [u for u, s in tile_requests[before:] if "/WebMercatorQuad/11/" in u and s == 200]
        assert cells
        text = click_at(page, 39.5025, 116.712)
        assert "要素数" in text and "流转状态（最多）" in text
        assert not errors, errors
        assert not refused, refused


def test_tiles_over_the_gaode_base_map_come_in_gcj02(tiles_server):  # noqa: F811
    """Every layer of a page over the Gaode base map is drawn in GCJ-02; the vector tiles are asked for so too."""
    for basemap, suffix in (("gaode", "?coord_sys=gcj02"), ("none", "")):
        settings = Settings(layers_dir=tiles_server.catalog.root, var_dir=tiles_server.var, basemap=basemap)
        factory = MapFactory(tiles_server.catalog, GeoPackageStore(), settings)
        m = factory.new_map("底图")
        factory.add_vector_tiles(m, tiles_server.catalog.get("parcels"), None)
        urls = re.findall(r'"url": "(/ogc/collections/parcels/tiles/[^"]*)"', factory.render(m))
        assert urls == [f"/ogc/collections/parcels/tiles/WebMercatorQuad/{{z}}/{{y}}/{{x}}{suffix}"]


def test_standalone_export_embeds_instead(tiles_server):  # noqa: F811
    settings = Settings(layers_dir=tiles_server.catalog.root, var_dir=tiles_server.var)
    factory = MapFactory(tiles_server.catalog, GeoPackageStore(), settings, standalone=True)
    m = factory.new_map("导出")
    factory.add_vector_tiles(m, tiles_server.catalog.get("parcels"), None)
    html = factory.render(m)
    assert "L.vectorGrid.protobuf(" not in html  # nothing to fetch tiles from
    assert "P1005" in html  # embedded features


def test_invisible_layer_is_404_and_unknown_field_refused(tiles_server):  # noqa: F811
    from gis_service.errors import GisError

    settings = Settings(layers_dir=tiles_server.catalog.root, var_dir=tiles_server.var)
    factory = MapFactory(tiles_server.catalog, GeoPackageStore(), settings)
    m = factory.new_map("x")
    with pytest.raises(GisError) as info:
        factory.add_vector_tiles(m, tiles_server.catalog.get("wells"), "planner")
    assert info.value.status == 404
    with pytest.raises(ValueError):
        factory.add_vector_tiles(m, tiles_server.catalog.get("parcels"), None, outline=("nope", {}))
    factory.add_vector_tiles(m, tiles_server.catalog.get("wells"), "flood", style={"color": "#08519c", "radius": 6})
    assert "L.vectorGrid.protobuf(" in factory.render(m)
