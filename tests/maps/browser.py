"""Headless Chromium (the system's /usr/bin/chromium) through Playwright, with requests fenced in."""

from __future__ import annotations

from contextlib import contextmanager

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]

# The first Leaflet map on the page (folium names it map_<hex>).
MAP_JS = "Object.keys(window).filter(k => k.startsWith('map_') && window[k] instanceof L.Map).map(k => window[k])[0]"


@contextmanager
def browser_page(allow=lambda url: False, viewport=(1200, 800)):
    """A page whose requests are refused unless allow(url); yields (page, console errors, refused URLs)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            errors, refused = [], []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))

            def guard(route):
                if allow(route.request.url):
                    route.continue_()
                else:
                    refused.append(route.request.url)
                    route.abort()

            page.route("**/*", guard)
            yield page, errors, refused
        finally:
            browser.close()


def zoom_to(page, zoom: int, lat: float | None = None, lon: float | None = None) -> None:
    """Set the map's zoom (and centre) without animation and wait until Leaflet has finished."""
    centre = f"[{lat}, {lon}]" if lat is not None else "m.getCenter()"
    page.evaluate(f"""() => new Promise(done => {{
        const m = {MAP_JS};
        m.once('zoomend moveend', () => setTimeout(done, 50));
        m.setView({centre}, {zoom}, {{animate: false}});
    }})""")


def label_texts(page, layer_id: str, in_view: bool = False) -> list[str]:
    """Permanent labels of one overlay on the map (in_view: only those inside the window)."""
    return page.evaluate(f"""() => Array.from(document.querySelectorAll('.gis-label-{layer_id}')).filter(e => {{
        if (!{'true' if in_view else 'false'}) return true;
        const r = e.firstChild.getBoundingClientRect();
        return r.right > 0 && r.bottom > 0 && r.left < window.innerWidth && r.top < window.innerHeight; }})
        .map(e => e.textContent)""")


def feature_count(page, layer_id: str) -> int:
    """Features drawn for one overlay (window.gisLayers[id]: a feature group holding an L.geoJSON)."""
    return page.evaluate(f"""() => {{
        let n = 0;
        window.gisLayers[{layer_id!r}].eachLayer(g => g.eachLayer ? g.eachLayer(l => {{ if (l.feature) n += 1; }})
                                                                  : (g.feature ? n += 1 : 0));
        return n;
    }}""")
