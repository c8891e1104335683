"""`gis-service maps export`: self-contained HTML that opens from a file with no server and no internet,
masked for roles not entitled, every clear disclosure in the access log."""

import json
import os
import shutil
import subprocess
import sys

import geopandas as gpd
import pytest
import shapely

from gis_service.catalog import load_definition
from gis_service.config import REPO_ROOT
from gis_service.store import GeoPackageStore
from tests.conftest import OUTPUT_DIR
from tests.maps.browser import browser_page, feature_count, label_texts

PEOPLE_TOML = """id = "people"
title_zh = "承包户联系人"
title_en = "Contractor contacts"
geometry = "Point"
access = "restricted"
roles = ["planner", "rural"]
personal_roles = ["rural"]
label_field = "household"
popup = ["household", "name", "id_number", "phone"]
style = { color = "#7a0177", radius = 6 }
[[fields]]
name = "household"
type = "string"
label = "承包方编码"
[[fields]]
name = "name"
type = "string"
label = "姓名"
personal = "name"
[[fields]]
name = "id_number"
type = "string"
label = "证件号码"
personal = "id_number"
[[fields]]
name = "phone"
type = "string"
label = "联系电话"
personal = "phone"
"""
PEOPLE = [("131002100201010001", "张三丰", "131002195001011234", "13812345678", (116.66, 39.45)),
          ("131002100201010002", "李四", "13100219600202432X", "13987654321", (116.70, 39.47)),
          ("131002100201010003", "王小明", "131002197003035678", "15011112222", (116.74, 39.49))]


def run(args, env):
    return subprocess.run([sys.executable, "-m", "gis_service.cli", *args], env=env, capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300)


@pytest.fixture()
def workspace(tmp_path, catalog):
    """A layers directory with the base map (county outlines and names, townships, rivers) and a small
    restricted layer with personal fields."""
    layers = tmp_path / "layers"
    layers.mkdir()
    shutil.copy(REPO_ROOT / "layers" / "groups.toml", layers)
    for layer_id in ("counties", "townships", "rivers"):
        layer = catalog.get(layer_id)
        (layers / layer.group).mkdir(exist_ok=True)
        shutil.copy(layer.path, layers / layer.group)
        shutil.copy(layer.data_path, layers / layer.group)
    (layers / "land").mkdir()
    (layers / "land" / "people.toml").write_text(PEOPLE_TOML, encoding="utf-8")
    people = load_definition(layers / "land" / "people.toml")
    frame = gpd.GeoDataFrame([dict(household=h, name=n, id_number=i, phone=p) for h, n, i, p, _ in PEOPLE],
                             geometry=[shapely.Point(xy) for *_, xy in PEOPLE], crs="EPSG:4490")
    GeoPackageStore().write(people, frame, origin="imported")
    var = tmp_path / "var"
    env = dict(os.environ, GIS_LAYERS_DIR=str(layers), GIS_VAR_DIR=str(var))
    return env, tmp_path / "maps", var / "personal_data_access.log"


def _log(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def test_export_masks_for_unentitled_roles_and_logs_clear_disclosure(workspace):
    env, out, log = workspace
    masked = run(["maps", "export", "people", "--output", str(out), "--role", "planner"], env)
    assert masked.returncode == 0, masked.stderr
    page = (out / "people-planner.html").read_text(encoding="utf-8")
    for _, name, id_number, phone, _ in PEOPLE:
        assert name not in page and id_number not in page and phone not in page
    assert "张**" in page and "1310**********1234" in page and "138****5678" in page  # issue #9 §8 format
    assert "个人信息已脱敏" in page
    assert _log(log) == []  # nothing personal left the store in clear

    clear = run(["maps", "export", "people", "--output", str(out), "--role", "rural"], env)
    assert clear.returncode == 0, clear.stderr
    page = (out / "people-rural.html").read_text(encoding="utf-8")
    for _, name, id_number, phone, _ in PEOPLE:
        assert name in page and id_number in page and phone in page
    [entry] = _log(log)
    assert entry["role"] == "rural" and entry["collection"] == "people" and entry["count"] == 3
    assert set(entry["fields"]) == {"name", "id_number", "phone"} and "people-rural.html" in entry["request"]

    anonymous = run(["maps", "export", "people", "--output", str(out)], env)  # restricted: not for anonymous
    assert anonymous.returncode == 2 and "map_not_found" in anonymous.stderr
    assert not (out / "people.html").exists()


def test_exported_map_opens_from_file_with_every_request_refused(workspace):
    env, out, _ = workspace
    done = run(["maps", "export", "people", "--output", str(out), "--role", "rural"], env)
    assert done.returncode == 0, done.stderr
    url = (out / "people-rural.html").as_uri()
    requested = []
    with browser_page(allow=lambda u: u == url) as (page, errors, refused):  # the file itself, nothing else
        page.on("request", lambda r: requested.append(r.url))
        page.goto(url, wait_until="load")
        counts = {key: feature_count(page, key) for key in ("people", "counties", "townships", "rivers")}
        counties = label_texts(page, "counties")
        popup = page.evaluate("""() => { let text = null;
            window.gisLayers.people.eachLayer(g => g.eachLayer && g.eachLayer(l => {
                if (l.feature && !text) { l.openPopup(); text = document.querySelector('.gis-popup').innerText; } }));
            return text; }""")
        OUTPUT_DIR.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT_DIR / "maps_export_people_rural.png"))
    assert errors == []
    assert [u for u in requested if u != url and not u.startswith("data:")] == [] and refused == []
    assert counts.pop("rivers") > 0 and counts == {"people": 3, "counties": 10, "townships": 123}
    assert len(counties) == 10 and "安次区" in counties
    assert "张三丰" in popup and "联系电话" in popup


def test_layers_over_the_cap_are_cut_with_a_note(workspace):
    env, out, _ = workspace
    done = run(["maps", "export", "people", "--output", str(out), "--role", "planner", "--max-features", "2"], env)
    assert done.returncode == 0, done.stderr
    url = (out / "people-planner.html").as_uri()
    with browser_page(allow=lambda u: u == url) as (page, errors, _):
        page.goto(url, wait_until="load")
        people = feature_count(page, "people")
        notes = page.evaluate("() => Array.from(document.querySelectorAll('.gis-note')).map(e => e.textContent)")
    assert errors == [] and people == 2
    assert any("仅含前 2 个要素（共 3 个，已截断）" in note for note in notes)


def test_all_exports_every_map_the_role_may_see(workspace):
    env, out, _ = workspace
    done = run(["maps", "export", "--all", "--output", str(out)], env)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.glob("*.html")) == ["counties.html", "rivers.html", "townships.html"]
    both = run(["maps", "export", "people", "--all", "--output", str(out)], env)
    assert both.returncode == 2


def test_a_map_that_would_load_anything_is_not_exported(catalog, store, tmp_path):
    import folium

    from gis_service.config import Settings
    from gis_service.errors import GisError
    from gis_service.maps.export import export_maps, standalone_html
    from gis_service.privacy import AccessLog

    def with_tiles(factory, name, role):  # a domain page that forgot it is going offline
        m = factory.layer_map(factory.catalog.get(name), role)
        folium.TileLayer("OpenStreetMap").add_to(m)
        return m

    with pytest.raises(GisError, match="online layers"):
        export_maps(["heritage_sites"], tmp_path, None, catalog=catalog, store=store, settings=Settings(),
                    access_log=AccessLog(tmp_path / "log"), builder=with_tiles)
    assert list(tmp_path.glob("*.html")) == []
    static = REPO_ROOT / "frontend" / "node_modules"
    for tag in ('<script src="https://unpkg.com/leaflet.js"></script>', '<img src="http://example.com/x.png">',
                '<link rel="stylesheet" href="/static/leaflet/package.json"/>'):
        with pytest.raises(GisError, match="export_external_resource|cannot be inlined|would load"):
            standalone_html(f"<html><head>{tag}</head><body></body></html>", static)
