"""QGIS 3.22 (Debian's python3-qgis, headless) opening the projects `gis-service qgis-project` and /maps/ write:
every layer valid through the OGC API – Features provider with a Basic authentication configuration (key as the
password), counts equal to numberMatched, styles, Chinese labels, EPSG:4548 in metres, metadata, masking, the
plots read by view extent only, no key anywhere but QGIS's own encrypted authentication database."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import shapely

from gis_service import crs as crs_mod
from gis_service import qgis
from gis_service.catalog import Catalog
from gis_service.config import REPO_ROOT
from gis_service.store import GeoPackageStore, display_title

from .conftest import QGIS_PYTHON, SHOTS, run_qgis

CJK = re.compile(r"[\u4e00-\u9fff]")
PLOTS_BOX = (116.60, 39.50, 116.65, 39.53)  # lon/lat, a few km² of Anci / Guangyang farmland


def numbers_matched(server, key: str | None, ids) -> dict[str, int]:
    headers = {"X-API-Key": key} if key else {}
    return {cid: httpx.get(f"{server.url}/ogc/collections/{cid}/items", params={"limit": 1}, headers=headers,
                           timeout=60).json()["numberMatched"] for cid in ids}


def visible_ids(server, key: str | None) -> set[str]:
    headers = {"X-API-Key": key} if key else {}
    doc = httpx.get(f"{server.url}/ogc/collections", headers=headers, timeout=60).json()
    return {c["id"] for c in doc["collections"]}


def project_text(path: Path) -> str:
    with zipfile.ZipFile(path) as zf:
        [name] = [n for n in zf.namelist() if n.endswith(".qgs")]
        return zf.read(name).decode("utf-8")


@pytest.fixture(scope="module")
def planner(logged_server, tmp_path_factory):
    """The planner's project written by the CLI, opened in QGIS with a Basic configuration holding the key."""
    work = tmp_path_factory.mktemp("qgis-planner")
    key = logged_server.key("planner")
    project = work / "planner.qgz"
    done = subprocess.run([sys.executable, "-m", "gis_service.cli", "qgis-project", "--role", "planner",
                           "--authcfg", "lfgis01", "--url", logged_server.url, "--output", str(project)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    ids = visible_ids(logged_server, key)
    matched = numbers_matched(logged_server, key, ids)
    whole = [cid for cid, n in matched.items() if n <= qgis.LARGE_FEATURES]
    SHOTS.mkdir(parents=True, exist_ok=True)
    x0, y0, x1, y1 = _langfang_extent()
    first = len(logged_server.requests())
    report = run_qgis({"project": str(project), "authcfg": {"id": "lfgis01", "username": "qgis", "password": key},
                       "read": whole, "rect": {"plots": list(PLOTS_BOX)},
                       "render": {"path": str(SHOTS / "planner-map.png"), "width": 1200, "height": 1500,
                                  "extent": [x0, y0, x1, y1]}}, work)
    shots = run_qgis({"authcfg": {"id": "lfgis01", "username": "qgis", "password": key},
                      "auth_dialog": str(SHOTS / "qgis-auth-basic.png")}, work / "shots")
    report.update(auth_dialog=shots["auth_dialog"], auth_list=shots["auth_list"])
    return dict(report=report, key=key, project=project, ids=ids, matched=matched, whole=whole,
                requests=logged_server.requests()[first:])


def _langfang_extent():
    catalog, store = Catalog.load(REPO_ROOT / "layers"), GeoPackageStore()
    lon0, lat0, lon1, lat1 = store.extent(catalog.get("counties"))
    xs, ys = crs_mod.transform_xy([lon0, lon0, lon1, lon1], [lat0, lat1, lat0, lat1], "EPSG:4490", "EPSG:4548")
    return min(xs) - 3000, min(ys) - 3000, max(xs) + 3000, max(ys) + 3000


def test_planner_project_opens_in_epsg_4548_with_every_visible_layer_valid(planner):
    r = planner["report"]
    assert r["read"] and r["authcfg_stored"] == "lfgis01"
    assert (r["crs"], r["ellipsoid"], r["distance_units"], r["area_units"]) == (
        "EPSG:4548", "EPSG:1024", "meters", "square meters")
    oapif = {t: l for t, l in r["layers"].items() if l["provider"] == "OAPIF"}
    assert set(oapif) == planner["ids"]  # every collection the planner may see, the restricted one not
    assert "contractor_households" not in oapif and "risk_sources" in oapif
    bad = {t: l["source"] for t, l in oapif.items() if not l["valid"]}
    assert not bad, (bad, r["log"][-20:])
    assert all(l["crs"] in ("EPSG:4326", "OGC:CRS84") for l in oapif.values())


def test_groups_titles_and_order_are_the_maps_index(planner, logged_server):
    catalog, store = Catalog.load(REPO_ROOT / "layers"), GeoPackageStore()
    index = httpx.get(logged_server.url + "/maps/", headers={"X-API-Key": planner["key"]}, timeout=60).text
    want = []
    for group in catalog.groups.values():
        titles = [display_title(store, l) for l in catalog.visible_to("planner")
                  if l.group == group.id and not l.is_raster and store.exists(l)]
        if titles:
            want.append({"name": group.title_zh, "titles": titles})
    got = [{"name": g["name"], "titles": [t for t in g["layers"] if not t.endswith("（概览 矢量瓦片）")]}
           for g in planner["report"]["groups"]]
    assert got == want
    for group in got:  # the same headings and link texts the web index shows
        assert f"<h2>{group['name']}</h2>" in index
        assert all(f">{t}</a>" in index for t in group["titles"])
    assert any(t.endswith("（演示）") for g in got for t in g["titles"])


def test_every_layer_read_whole_has_numbermatched_features(planner):
    layers = planner["report"]["layers"]
    assert len(planner["whole"]) >= 25
    for cid in planner["whole"]:
        assert layers[cid]["read_count"] == planner["matched"][cid], cid
        assert layers[cid]["feature_count"] == planner["matched"][cid], cid


def test_styles_categories_and_chinese_labels_come_from_the_layer_definitions(planner):
    catalog = Catalog.load(REPO_ROOT / "layers")
    layers = planner["report"]["layers"]
    for cid, info in layers.items():
        layer = catalog.get(cid)
        if info["provider"] != "OAPIF" or not info.get("renderer"):
            continue
        style = layer.style
        if style.get("category_field") and style.get("categories"):
            assert info["renderer"] == "categorizedSymbol", cid
            got = {v: (label, colour) for v, label, colour in info["categories"]}
            for value, colour in style["categories"].items():
                assert got[value] == (style.get("category_labels", {}).get(value, value), colour.lower()), cid
        else:
            assert info["renderer"] == "singleSymbol", cid
        # permanent labels where the web maps have them (label_min_zoom), from the same zoom (as a scale)
        assert info["labels"] == (layer.label_field is not None and layer.label_min_zoom is not None), cid
        if layer.label_field:
            assert info["label_field"] == layer.label_field and info["label_font"] == qgis.LABEL_FONT
        if info["labels"] and layer.label_min_zoom:
            assert info["label_min_scale"] == pytest.approx(559_082_264.028717 / 2 ** layer.label_min_zoom), cid
        assert all(info["aliases"][f.name] == f.label for f in layer.fields if f.name in info["aliases"])
    villages = layers["villages"]["categories"]
    assert ["generated", "生成位置（演示）", "#fdae6b"] in villages


def test_map_renders_to_png_with_chinese_labels(planner):
    render = planner["report"]["render"]
    assert render["saved"] and not render["errors"], render["errors"]
    png = SHOTS / "planner-map.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 100_000
    labels = render["labels"]
    assert sum(bool(CJK.search(t)) for t in labels) >= 10, labels
    counties = {"安次区", "广阳区", "固安县", "永清县", "香河县", "大城县", "文安县", "大厂回族自治县", "霸州市", "三河市"}
    names = set(labels)
    assert names & (counties | _township_names()), labels  # labels of Langfang's own layers, not only neighbours
    lon0, lat0, lon1, lat1 = render["extent_lonlat"]  # the view is Langfang, reprojected from EPSG:4548
    assert 116.0 < lon0 < 116.5 and 117.1 < lon1 < 117.6 and 38.3 < lat0 < 38.6 and 40.0 < lat1 < 40.3
    assert render["scale"] > qgis.LARGE_MAX_SCALE  # so the plots (large) are not drawn from OAPIF here


def _township_names() -> set:
    catalog, store = Catalog.load(REPO_ROOT / "layers"), GeoPackageStore()
    from gis_service.store import FeatureQuery
    q = FeatureQuery()
    q.limit = 10_000
    page = store.query(catalog.get("townships"), q)
    import json
    return {json.loads(p)["name"] for p in page.properties_json}


def test_plots_are_read_by_view_extent_never_whole(planner, logged_server):
    info = planner["report"]["layers"]["plots"]
    source = info["source"]
    assert "restrictToRequestBBOX='1'" in source and f"pageSize='{qgis.PAGE_SIZE}'" in source
    assert info["scale_based"] and info["min_scale"] == qgis.LARGE_MAX_SCALE
    want = httpx.get(f"{logged_server.url}/ogc/collections/plots/items", headers={"X-API-Key": planner["key"]},
                     params={"bbox": ",".join(map(str, PLOTS_BOX)), "limit": 1}, timeout=60).json()["numberMatched"]
    assert 50 < info["rect_count"] == want
    plot_requests = [p for p, _ in planner["requests"] if p.startswith("/ogc/collections/plots/items")]
    assert plot_requests
    fetched = 0
    for path in plot_requests:
        params = parse_qs(urlsplit(path).query)
        limit = int(params.get("limit", ["10"])[0])
        if "bbox" in params:
            box = shapely.box(*map(float, params["bbox"][0].split(",")[:4]))
            assert box.area <= shapely.box(*PLOTS_BOX).buffer(0.01).area, path  # the view, not Langfang
        else:
            assert limit <= 10, path  # QGIS's first look at the fields, one small page
        fetched += limit
    assert fetched < 10 * want  # nothing like the 100 000 plots


def test_overview_vector_tiles_for_the_large_layer(planner, logged_server):
    layers = planner["report"]["layers"]
    tiles = layers["plots_tiles"]
    assert tiles["provider"] == "vectortile" and tiles["valid"], tiles
    assert "/ogc/collections/plots/tiles/WebMercatorQuad/%7Bz%7D/%7By%7D/%7Bx%7D" in tiles["source"]
    assert tiles["scale_based"] and tiles["max_scale"] == qgis.LARGE_MAX_SCALE  # shown where OAPIF plots are not
    assert [cid for cid, l in layers.items() if l["provider"] == "vectortile"] == ["plots_tiles"]
    z, x, y = 12, 3423, 1553  # a tile over Langfang's plots answers as the project's URL template says
    url = tiles["source"].split("url=")[1].split("&")[0].replace("%7Bz%7D", str(z)).replace(
        "%7By%7D", str(y)).replace("%7Bx%7D", str(x))
    assert httpx.get(url, timeout=60).status_code in (200, 204)


def test_metadata_qgis_shows(planner, catalog):
    md = planner["report"]["layers"]["villages"]["metadata"]
    layer = catalog.get("villages")
    assert md["title"] == "行政村（村级区划）（演示）"
    assert layer.description_zh in md["abstract"] and layer.provenance in md["abstract"]
    assert "演示数据" in md["abstract"]
    keywords = [k for values in md["keywords"].values() for k in values]
    assert {"大运河", "Grand Canal", "公开 public", "演示数据 demo"} <= set(keywords)
    assert md["licenses"] and "PROVENANCE.md" in md["licenses"][0] and "CC BY 4.0" in md["licenses"][0]
    links = {name: url for name, url, *_ in md["links"]}
    assert links["license"].endswith("/ogc/provenance") and links["self"].endswith("/collections/villages")
    assert httpx.get(links["license"], timeout=30).text.startswith("#")
    internal = planner["report"]["layers"]["risk_sources"]["metadata"]
    assert "内部 internal" in [k for values in internal["keywords"].values() for k in values]


def test_personal_fields_read_through_qgis_are_masked_for_the_planner(planner, logged_server):
    sample = planner["report"]["layers"]["plots"]["rect_sample"]
    personal = ("contractor_name", "contractor_id_number", "contractor_phone")
    assert sample and all("*" in s[f] for s in sample for f in personal)
    rural = httpx.get(f"{logged_server.url}/ogc/collections/plots/items", headers={"X-API-Key": logged_server.key(
        "rural")}, params={"bbox": ",".join(map(str, PLOTS_BOX)), "limit": 10_000}, timeout=60).json()["features"]
    clear = {f["properties"]["dkbm"]: f["properties"] for f in rural}
    for s in sample:  # the same plots in clear for an entitled role: same first character, never equal
        for f in personal:
            assert s[f] != clear[s["dkbm"]][f] and s[f][0] == clear[s["dkbm"]][f][0], (f, s[f])


def test_rural_project_from_the_maps_page_reads_the_restricted_layer_in_clear(logged_server, tmp_path):
    key = logged_server.key("rural")
    index = httpx.get(logged_server.url + "/maps/", headers={"X-API-Key": key}, timeout=60).text
    assert 'href="/maps/qgis-project.qgz"' in index and "rural" in index
    download = httpx.get(logged_server.url + "/maps/qgis-project.qgz", params={"authcfg": "rural01"},
                         headers={"Authorization": "Bearer " + key}, timeout=120)
    assert download.status_code == 200 and "langfang-rural.qgz" in download.headers["content-disposition"]
    project = tmp_path / "rural.qgz"
    project.write_bytes(download.content)
    text = project_text(project)
    assert key not in text and "authcfg=rural01" in text
    matched = numbers_matched(logged_server, key, ["contractor_households"])
    report = run_qgis({"project": str(project), "authcfg": {"id": "rural01", "username": "任意", "password": key},
                       "read": ["contractor_households"], "rect": {"plots": list(PLOTS_BOX)}}, tmp_path / "q")
    households = report["layers"]["contractor_households"]
    assert households["valid"] and households["read_count"] == matched["contractor_households"] > 0
    assert all("*" not in s["name"] for s in households["sample"])
    assert all("*" not in s["contractor_name"] for s in report["layers"]["plots"]["rect_sample"])
    oapif = {t for t, l in report["layers"].items() if l["provider"] == "OAPIF"}
    assert oapif == visible_ids(logged_server, key) and all(report["layers"][t]["valid"] for t in oapif)
    log = (logged_server.var_dir / "personal_data_access.log").read_text(encoding="utf-8")
    assert "contractor_households" in log and "test-rural" in log  # clear access through QGIS is logged


def test_public_project_holds_only_public_layers_and_needs_no_authentication(logged_server, tmp_path):
    download = httpx.get(logged_server.url + "/maps/qgis-project.qgz", timeout=120)
    assert download.status_code == 200
    project = tmp_path / "public.qgz"
    project.write_bytes(download.content)
    assert "authcfg" not in project_text(project)
    report = run_qgis({"project": str(project), "read": ["counties"]}, tmp_path / "q")
    oapif = {t: l for t, l in report["layers"].items() if l["provider"] == "OAPIF"}
    catalog = Catalog.load(REPO_ROOT / "layers")
    assert set(oapif) == visible_ids(logged_server, None)
    assert all(catalog.get(t).access == "public" for t in oapif) and all(l["valid"] for l in oapif.values())
    assert report["layers"]["counties"]["read_count"] == 10


def test_a_bad_authcfg_id_is_a_400(logged_server):
    response = httpx.get(logged_server.url + "/maps/qgis-project.qgz", params={"authcfg": "x'><"},
                         headers={"X-API-Key": logged_server.key("planner")}, timeout=60)
    assert response.status_code == 400 and response.json()["code"] == "bad_parameter"


def test_no_key_in_the_project_the_urls_or_the_server_log(planner, logged_server):
    keys = [logged_server.key(role) for role in ("planner", "rural")]
    text = project_text(planner["project"]) + (logged_server.var_dir / "server.log").read_text(encoding="utf-8")
    for key in keys:
        basic = base64.b64encode(f"qgis:{key}".encode()).decode()
        assert key not in text and basic not in text
        assert not any(key in path for path, _ in logged_server.requests())
        for log in logged_server.var_dir.rglob("*.log"):
            assert key not in log.read_text(encoding="utf-8", errors="replace"), log
    assert "authcfg=lfgis01" in text
    assert len(logged_server.requests()) > 50  # the access log was on: the check above saw every request line


def test_screenshots_for_the_readme(planner):
    """The README shows these: the rendered project and QGIS's Basic authentication configuration dialog."""
    report = planner["report"]
    assert report["auth_dialog"] and report["auth_list"]
    for name in ("planner-map.png", "qgis-auth-basic.png", "qgis-auth-basic-list.png"):
        shot = SHOTS / name
        assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 5_000, name


def test_a_wrong_key_in_the_authentication_configuration_opens_nothing(logged_server, tmp_path):
    """A wrong key is a 401 on every request, so no layer opens: never a silent public view."""
    key = logged_server.key("planner")
    download = httpx.get(logged_server.url + "/maps/qgis-project.qgz", headers={"X-API-Key": key}, timeout=120)
    project = tmp_path / "planner.qgz"
    project.write_bytes(download.content)
    first = len(logged_server.requests())
    report = run_qgis({"project": str(project), "authcfg": {"id": qgis.DEFAULT_AUTHCFG, "username": "qgis",
                                                            "password": key + "x"}}, tmp_path / "q")
    oapif = {t: l for t, l in report["layers"].items() if l["provider"] == "OAPIF"}
    assert oapif and not any(l["valid"] for l in oapif.values())
    statuses = {status for path, status in logged_server.requests()[first:] if path.startswith("/ogc")}
    assert statuses == {401}


def test_datasources_read_back_by_qgis_whatever_the_service_url_holds(catalog):
    """QGIS's own QgsDataSourceUri parses each OAPIF datasource back to the values written, for a service URL
    with a quote, a backslash and a space in its path (behind a proxy, or --url as the administrator types it)."""
    base = "https://gis.example/o'brien\\gis dept/ogc"
    layers = [catalog.get(cid) for cid in ("villages", "plots", "contractor_households")]
    job = [{"uri": qgis.datasource(base, layer, "lfgis01", large, 500), "id": layer.id, "large": large}
           for layer in layers for large in (False, True)]
    script = ("import json, sys\nfrom qgis.core import QgsDataSourceUri\n"
              "out = []\nfor item in json.load(sys.stdin):\n    u = QgsDataSourceUri(item['uri'])\n"
              "    out.append([u.param(k) for k in ('url', 'typename', 'pageSize', 'restrictToRequestBBOX')]"
              " + [u.authConfigId()])\nprint(json.dumps(out))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    done = subprocess.run([QGIS_PYTHON, "-c", script], input=json.dumps(job), capture_output=True, text=True,
                          env=dict(env, QT_QPA_PLATFORM="offscreen"), timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got == [[base, item["id"], "500", "1" if item["large"] else "0", "lfgis01"] for item in job]
