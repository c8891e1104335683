"""Map pages in a real headless Chromium with every request off 127.0.0.1 refused."""

import geopandas as gpd
import shapely

from gis_service.config import Settings
from gis_service.maps.factory import Overlay, display_features
from gis_service.store import FeatureQuery
from tests.conftest import OUTPUT_DIR
from tests.maps.browser import MAP_JS, browser_page, feature_count, label_texts, zoom_to


def _browse(server, paths):
    OUTPUT_DIR.mkdir(exist_ok=True)
    results = {}
    with browser_page(allow=lambda url: url.startswith(server.url)) as (page, errors, offsite):
        for path in paths:
            page.goto(server.url + path, wait_until="networkidle")
            name = path.strip("/").replace("/", "_") or "index"
            page.screenshot(path=str(OUTPUT_DIR / f"{name}.png"))
            results[path] = page.evaluate(f"""() => {{
                const m = {MAP_JS};
                if (!m) return null;
                let n = 0; m.eachLayer(l => {{ if (l.feature) n += 1; }});
                return n;
            }}""") if path != "/maps/" else page.content()
    return results, errors, offsite


def test_index_and_layer_pages_work_offline(server, catalog, store):
    results, errors, offsite = _browse(server, ["/maps/", "/maps/layers/counties", "/maps/layers/heritage_sites"])
    assert errors == [] and offsite == []
    assert "大运河" in results["/maps/"] and "/maps/layers/counties" in results["/maps/"]
    base = sum(store.count(layer) for layer in catalog if layer.basemap)  # counties, townships, rivers, rail …
    assert base > 10 + 123
    assert results["/maps/layers/counties"] == base  # the counties are part of the base map: drawn once
    assert results["/maps/layers/heritage_sites"] == base + 10  # base map + ten heritage sites
    assert (OUTPUT_DIR / "maps_layers_counties.png").stat().st_size > 10_000


def test_offline_base_map_shows_where_you_are(server, catalog, store):
    """Without any online basemap a layer page shows county names, township names (zoomed in), the real
    rivers, railways, HSR lines and stations — and nothing is requested from off the server."""
    counties = set(store.read_frame(catalog.get("counties"))["name"])
    townships = set(store.read_frame(catalog.get("townships"))["name"])
    with browser_page(allow=lambda url: url.startswith(server.url)) as (page, errors, refused):
        page.goto(server.url + "/maps/layers/heritage_sites", wait_until="networkidle")
        assert set(label_texts(page, "counties")) == counties  # all ten, at the city-wide zoom
        assert label_texts(page, "townships") == []  # 123 names would bury the city view
        drawn = {layer_id: feature_count(page, layer_id) for layer_id in
                 ("counties", "townships", "rivers", "railways", "hsr_lines", "hsr_stations", "heritage_sites")}
        zoom_to(page, 11, 39.52, 116.70)  # the central city
        shown = set(label_texts(page, "townships", in_view=True))
        page.screenshot(path=str(OUTPUT_DIR / "maps_base_map_zoom11.png"))
        legend = page.inner_text(".gis-legend")
        control = page.inner_text(".leaflet-control-layers")
    assert errors == [] and refused == []
    assert drawn == {layer_id: store.count(catalog.get(layer_id)) for layer_id in drawn}
    assert 3 <= len(shown) < len(townships) and shown <= townships  # the townships in view, by name
    for layer_id in ("counties", "townships", "rivers", "railways", "hsr_lines", "hsr_stations"):
        title = catalog.get(layer_id).title_zh
        assert title in legend.split("底图", 1)[1] and title in control


def test_popup_values_are_escaped(catalog):
    layer = catalog.get("heritage_sites")
    frame = gpd.GeoDataFrame({f.name: ["x"] for f in layer.fields}, geometry=[shapely.Point(116.7, 39.5)],
                             crs="EPSG:4490")
    frame["name"] = '<img src=x onerror="alert(1)">'
    data = display_features(frame, Overlay.of_layer(layer, layer.title_zh, None), Settings())
    props = data["features"][0]["properties"]
    assert "<img" not in props["__popup"] and "&lt;img" in props["__popup"]
    assert props["__label"] == "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"


def test_gaode_basemap_shifts_overlays_into_gcj02(catalog):
    layer = catalog.get("heritage_sites")
    frame = gpd.GeoDataFrame({f.name: ["x"] for f in layer.fields}, geometry=[shapely.Point(116.7, 39.5)],
                             crs="EPSG:4490")
    overlay = Overlay.of_layer(layer, layer.title_zh, None)
    plain = display_features(frame, overlay, Settings())["features"][0]["geometry"]["coordinates"]
    shifted = display_features(frame, overlay, Settings(basemap="gaode"))["features"][0]["geometry"]["coordinates"]
    assert plain == [116.7, 39.5]
    assert 0.005 < shifted[0] - 116.7 < 0.007 and 0.0005 < shifted[1] - 39.5 < 0.0015


def test_large_layer_loads_features_for_the_view(server, catalog, store):
    """Plots (100 000) are not embedded: zoomed in, the page fetches the features in view, without persons for
    an anonymous caller (issue #9 §8)."""
    from playwright.sync_api import sync_playwright

    first = store.query(catalog.get("plots"), FeatureQuery(limit=1))
    c = first.geometries[0].centroid
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(server.url) else r.abort())
        page.goto(server.url + "/maps/layers/plots", wait_until="networkidle")
        assert page.evaluate("window.gisDynamicLayers.plots.getLayers().length") == 0  # city view: nothing yet
        page.evaluate(f"""() => {{ const m = Object.keys(window).find(k => k.startsWith('map_'));
                                   window[m].setView([{c.y}, {c.x}], 17); }}""")
        page.wait_for_function("window.gisDynamicLayers.plots.getLayers().length > 0", timeout=15000)
        popup = page.evaluate("window.gisDynamicLayers.plots.getLayers()[0].getLayers()[0].feature.properties.__popup")
        page.screenshot(path=str(OUTPUT_DIR / "maps_layers_plots_zoomed.png"))
        browser.close()
    # anonymous: the plot without its contractor — neither the name's row nor a masked value
    assert "地块编码" in popup and "承包方代表姓名" not in popup and "*" not in popup


def test_tianditu_key_never_reaches_the_browser(catalog, store):
    from gis_service.maps.factory import MapFactory

    html = MapFactory(catalog, store, Settings(basemap="tianditu", tianditu_key="SECRET-KEY-123")).layer_map(
        catalog.get("counties"), None).get_root().render()
    assert "SECRET-KEY-123" not in html and "/basemap/tianditu/vec/" in html
    assert "cdn" not in html.lower() and "unpkg" not in html.lower()
