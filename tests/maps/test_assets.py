"""/static serves the front-end files the pages use (gis_service/maps/assets.py) and nothing else."""

import json
import urllib.error
import urllib.request

import pytest

from gis_service.config import REPO_ROOT
from gis_service.maps import assets

STATIC = REPO_ROOT / "frontend" / "node_modules"


def _get(url, headers=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.mark.parametrize("path, media_type", [
    ("leaflet/dist/leaflet.js", "text/javascript; charset=utf-8"),
    ("leaflet/dist/leaflet.css", "text/css; charset=utf-8"),
    ("leaflet/dist/images/layers-2x.png", "image/png"),  # found in leaflet.css, not listed by hand
    ("leaflet.markercluster/dist/MarkerCluster.Default.css", "text/css; charset=utf-8"),
])
def test_assets_the_pages_use_are_served_with_type_and_caching(server, path, media_type):
    status, headers, body = _get(f"{server.url}/static/{path}")
    assert status == 200 and headers["content-type"] == media_type
    assert body == (STATIC / path).read_bytes()
    assert "max-age" in headers["cache-control"] and headers["etag"]
    again, _, empty = _get(f"{server.url}/static/{path}", {"If-None-Match": headers["etag"]})
    assert again == 304 and empty == b""


@pytest.mark.parametrize("path", [
    "leaflet/package.json", "leaflet/dist/leaflet-src.js", "leaflet/dist/leaflet.js.map", ".package-lock.json",
    "leaflet.markercluster/dist/leaflet.markercluster-src.js", "leaflet/", "leaflet/dist/../package.json",
])
def test_the_rest_of_node_modules_is_not_served(server, path):
    assert (STATIC / path).exists() or path.endswith("/") or ".." in path
    status, headers, body = _get(f"{server.url}/static/{path}")
    assert status == 404 and headers["content-type"] == "application/json"
    assert set(json.loads(body)) == {"code", "message"}


def test_every_file_a_listed_stylesheet_needs_is_served():
    served = assets.served_paths(STATIC)
    for css in assets.css_paths():
        for ref in assets.css_references(css, (STATIC / css).read_text(encoding="utf-8")):
            assert ref in served and (STATIC / ref).is_file(), (css, ref)
    assert {"leaflet/dist/images/layers.png", "leaflet/dist/images/marker-icon.png"} <= served
    assert all((STATIC / path).is_file() for path in served)
    assert not any(path.endswith((".json", ".map", "-src.js")) for path in served)


def test_inlined_stylesheet_carries_its_images():
    css = assets.inline_css(STATIC, "leaflet/dist/leaflet.css")
    assert "url(images/" not in css and css.count("data:image/png;base64,") == 3
    assert "url(#default#VML)" in css  # not a file: left alone
