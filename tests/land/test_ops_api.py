"""Checks, 四至 and import over HTTP: the live server on the demo layers (read-only) and a second server over a
copy of a few plots for imports (the shared layers are never written)."""

import datetime as dt
import io
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest
import requests

from gis_service.config import REPO_ROOT
from gis_service.crs import METRIC_CRS
from gis_service.rules import RuleBook
from gis_service.store import GeoPackageStore
from tests.conftest import live_server

from .test_imports import national_frame, sample_plots

TIMEOUT = 300  # the first 四至 request computes the whole register
LAND_WORDS = RuleBook.load().domain("land").value("boundary_kind_words")


def get(server, path, role=None, **params):
    headers = {"X-API-Key": server.key(role)} if role else {}
    return requests.get(server.url + path, params=params, headers=headers, timeout=TIMEOUT)


def test_area_check_matches_an_independent_count(server, catalog, store):
    plots = store.read_frame(catalog.get("plots"))
    county = plots[plots["county_adcode"] == 131022]
    # second method: integer hundredths of a 亩, "more than 5%" strictly
    c = np.round(county["contract_area_mu"].to_numpy() * 100).astype(int)
    m = np.round(county["measured_area_mu"].to_numpy() * 100).astype(int)
    expected = int(((np.abs(m - c) * 100 > 5 * c) | (c <= 0)).sum())
    r = get(server, "/api/land/checks/area-mismatch", county="固安县", limit=7, offset=3)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == expected and len(body["items"]) == 7 and body["offset"] == 3
    assert body["rule"]["key"] == "land.area_mismatch_pct" and "5%" in body["rule"]["citation"]
    assert all(i["county_adcode"] == 131022 and abs(i["difference_pct"]) > 5 for i in body["items"])
    by_code = get(server, "/api/land/checks/area-mismatch", county="131022", limit=1).json()
    assert by_code["total"] == expected
    village = county["village_code"].iloc[0]
    v = get(server, "/api/land/checks/area-mismatch", village=village, limit=1000).json()
    vc = county[county["village_code"] == village]
    c, m = np.round(vc["contract_area_mu"] * 100).astype(int), np.round(vc["measured_area_mu"] * 100).astype(int)
    assert v["total"] == int(((np.abs(m - c) * 100 > 5 * c) | (c <= 0)).sum())
    csv = get(server, "/api/land/checks/area-mismatch", county="固安县", format="csv")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    table = pd.read_csv(io.BytesIO(csv.content), encoding="utf-8-sig", dtype={"地块编码": str})
    assert len(table) == expected and "差异（%，以合同面积为基数）" in table.columns
    xlsx = get(server, "/api/land/checks/area-mismatch", village=village, format="xlsx")
    assert len(pd.read_excel(io.BytesIO(xlsx.content))) == v["total"]


def test_non_farm_use_and_overlap_checks(server, catalog, store):
    plots = store.read_frame(catalog.get("plots"))
    basic = plots["is_basic_farmland"].fillna(False).astype(bool)
    expected = plots[basic & plots["current_use"].isin(["林木", "坑塘", "建筑"])]
    body = get(server, "/api/land/checks/non-farm-use", limit=1000).json()
    assert body["total"] == len(expected) > 0
    assert {i["dkbm"] for i in body["items"]} <= set(expected["dkbm"])
    assert "L1194" in body["rule"]["citation"] or "1194" in body["rule"]["citation"]
    # demo plots never overlap (2 m ridges): the overlap check agrees with a brute-force pairwise test on a village
    over = get(server, "/api/land/checks/overlaps").json()
    village = plots[plots["village_code"] == plots["village_code"].iloc[0]].to_crs(METRIC_CRS)
    g = village.geometry.values
    pairwise = sum(g[i].intersection(g[j]).area > 1.0 for i in range(len(g)) for j in range(i + 1, len(g)))
    assert over["total"] == 0 and pairwise == 0


def test_bad_parameters_are_json_4xx(server):
    for path, params, status in (("/api/land/checks/area-mismatch", {"county": "北京"}, 400),
                                 ("/api/land/checks/area-mismatch", {"village": "12"}, 400),
                                 ("/api/land/checks/nonsense", {}, 400),
                                 ("/api/land/checks/overlaps", {"limit": 0}, 400),
                                 ("/api/land/boundaries/123", {}, 400),
                                 ("/api/land/boundaries/1310221999999999999", {}, 404)):
        r = get(server, path, **params)
        assert r.status_code == status, (path, r.text)
        assert set(r.json()) >= {"code", "message"}


def test_boundaries_masked_per_role_and_full_views_logged(server, catalog, store):
    plots = store.read_frame(catalog.get("plots"))
    names = set(plots["contractor_name"])
    anon = get(server, "/api/land/boundaries", limit=200, status="all").json()
    assert anon["total"] == 4 * len(plots) and set(anon["status_counts"]) <= {"match", "mismatch", "unverified", "unrecorded"}
    words = {w for ws in LAND_WORDS.values() for w in ws}
    assert all(i["recorded"] is None or i["recorded"] in words for i in anon["items"])  # 道路, 沟渠 … name no person
    assert any(i["recorded"] in words for i in anon["items"]) and not any(i["recorded"] in names for i in anon["items"])
    assert all(i["neighbour_label"] is None for i in anon["items"] if i["neighbour_kind"] == "地块")
    planner = get(server, "/api/land/boundaries", "planner", limit=200, status="all").json()
    shown = [i["neighbour_label"] for i in planner["items"] if i["neighbour_kind"] == "地块"]
    assert shown and not set(shown) & names and all("*" in s for s in shown)
    others = [n for i in planner["items"] if i["adjoining_contractors"] for n in i["adjoining_contractors"].split("、")]
    assert others and not set(others) & names and all("*" in n for n in others)
    assert all(i["adjoining_contractors"] is None for i in anon["items"] if i["neighbour_kind"] == "地块")
    rural = get(server, "/api/land/boundaries", "rural", limit=200, status="all").json()
    full = [i["neighbour_label"] for i in rural["items"] if i["neighbour_kind"] == "地块"]
    assert full and set(full) <= names
    assert any(e.get("role") == "rural" and "/api/land/boundaries" in e.get("request", "")
               for e in server.access_entries())
    # one plot: the four sides, the recorded text is the layer's, the computed neighbour a real plot east of it
    dkbm = plots["dkbm"].iloc[0]
    one = get(server, f"/api/land/boundaries/{dkbm}", "rural").json()
    assert [s["side"] for s in one["sides"]] == ["east", "west", "south", "north"]
    row = plots.set_index("dkbm").loc[dkbm]
    assert [s["recorded"] for s in one["sides"]] == [row["dkdz"], row["dkxz"], row["dknz"], row["dkbz"]]
    east = one["sides"][0]
    if east["neighbour_dkbm"]:
        metric = plots.set_index("dkbm").to_crs(METRIC_CRS).geometry
        assert metric[east["neighbour_dkbm"]].centroid.x > metric[dkbm].centroid.x
    mism = get(server, "/api/land/boundaries", "rural", limit=50).json()
    assert mism["total"] == anon["status_counts"]["mismatch"]
    assert all(i["status"] == "mismatch" for i in mism["items"])


def test_paged_endpoints_refuse_bad_paging_and_export_every_format(server, catalog, store):
    """Huge or negative offsets and limits, unknown formats and counties: JSON 4xx or a correct answer, never a
    500 (schemathesis found GET /boundaries?offset=939331646328291729604608&format=csv answering 500: two export
    columns both headed 方向)."""
    huge = "939331646328291729604608"
    for path in ("/api/land/boundaries", "/api/land/checks/area-mismatch", "/api/land/checks/overlaps"):
        far = get(server, path, offset=huge, limit=5)
        assert far.status_code == 200 and far.json()["items"] == [], (path, far.text)
        for params in ({"offset": -1}, {"limit": -1}, {"limit": huge}, {"format": "shp"}, {"county": "999999"},
                       {"county": "北京市"}, {"village": "13102210"}):
            r = get(server, path, **params)
            assert r.status_code in (400, 422) and set(r.json()) >= {"code", "message"}, (path, params, r.text)
    mism = get(server, "/api/land/boundaries", "planner", limit=1).json()
    for fmt in ("csv", "xlsx"):
        r = get(server, "/api/land/boundaries", "planner", offset=huge, format=fmt)
        assert r.status_code == 200, r.text
        table = (pd.read_csv(io.BytesIO(r.content), encoding="utf-8-sig", dtype=str) if fmt == "csv"
                 else pd.read_excel(io.BytesIO(r.content), dtype=str))
        assert len(table) == mism["status_counts"]["mismatch"] and table.columns.is_unique
        assert set(table["方向代码"]) <= {"east", "west", "south", "north"} and set(table["核对结果"]) == {"mismatch"}
    names = set(store.read_frame(catalog.get("plots"))["contractor_name"])
    assert not names & set(table["按图形判定的四至"].dropna())  # masked for planner in the export too
    empty = get(server, "/api/land/checks/overlaps", format="csv")  # no overlaps in the demo: headers only
    assert empty.status_code == 200 and "重叠地块编码" in empty.content.decode("utf-8-sig")
    county = get(server, "/api/land/checks/area-mismatch", county="131022", limit=1).json()
    assert county["total"] == get(server, "/api/land/checks/area-mismatch", county="固安县", limit=1).json()["total"]


@pytest.fixture(scope="module")
def import_server(tmp_path_factory, catalog, store):
    """A server over its own layers: plots of one 发包方 copied from the demo, the counties, the register."""
    root = tmp_path_factory.mktemp("import")
    layers, var = root / "layers", root / "var"
    (layers / "land").mkdir(parents=True)
    (layers / "admin").mkdir()
    var.mkdir()
    shutil.copy(REPO_ROOT / "layers" / "groups.toml", layers)
    for layer_id in ("plots", "counties"):
        shutil.copy(catalog.get(layer_id).path, layers / catalog.get(layer_id).group)
    shutil.copy(catalog.get("counties").data_path, layers / "admin")
    for extra in (REPO_ROOT / "layers" / "land").glob("*.sqlite"):  # the register file, if the domain keeps one
        shutil.copy(extra, layers / "land")
    from gis_service.catalog import Catalog

    own = Catalog.load(layers)
    GeoPackageStore().write(own.get("plots"), sample_plots(catalog, store), origin="demo")
    (var / "rules.local.toml").write_text("[land]\nimport_max_upload_mb = 8\n", encoding="utf-8")
    mp = pytest.MonkeyPatch()
    mp.setenv("GIS_LAYERS_DIR", str(layers))
    try:
        with live_server(var) as (_, url):
            from tests.conftest import LiveServer

            yield LiveServer(url, var), own
    finally:
        mp.undo()


def post(server, path, body=b"", role="rural", **params):
    headers = {"X-API-Key": server.key(role)} if role else {}
    return requests.post(server.url + path, data=body, params=params, headers=headers, timeout=TIMEOUT)


def test_import_over_http(import_server, tmp_path):
    server, own = import_server
    layer = own.get("plots")
    plots = GeoPackageStore().read_frame(layer)
    frame = national_frame(plots, "EPSG:4527")
    frame["CBFMC"] = "赵六"
    frame["DKMC"] = "导入地块"
    frame.to_file(tmp_path / "new.gpkg")
    dkbm = plots["dkbm"].iloc[0]
    card = lambda: requests.get(f"{server.url}/api/land/plots/{dkbm}", timeout=TIMEOUT)  # noqa: E731  the register's card
    assert card().status_code == 200 and card().json()["dkmc"] == plots["dkmc"].iloc[0]
    data = (tmp_path / "new.gpkg").read_bytes()
    assert post(server, "/api/land/import", data, role=None).status_code == 401
    assert post(server, "/api/land/import", data, role="planner").status_code == 403
    # oversize (the local limit is 8 MB): 413 JSON, also when the client sends no Content-Length
    big = post(server, "/api/land/import", b"{" + b" " * (9 * 2**20))
    assert big.status_code == 413 and big.json()["code"] == "upload_too_large"
    chunked = requests.post(server.url + "/api/land/import", data=iter([b"{" + b" " * 5 * 2**20, b" " * 4 * 2**20]),
                            headers={"X-API-Key": server.key("rural")}, timeout=TIMEOUT)
    assert chunked.status_code == 413 and chunked.json()["code"] == "upload_too_large", chunked.text
    # under the import's own limit but over the application's 5 MB request cap: the import's rule decides
    frame.to_file(tmp_path / "new.geojson", driver="GeoJSON")
    padded = (tmp_path / "new.geojson").read_bytes() + b" " * (6 * 2**20)
    six = post(server, "/api/land/import", padded, dry_run="true")
    assert six.status_code == 200 and six.json()["report"]["ok"], six.text[:300]
    assert post(server, "/api/rules", b"{" + b" " * (6 * 2**20)).status_code == 413  # the cap holds elsewhere
    # path traversal in a zip
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../../evil.shp", b"x")
    trav = post(server, "/api/land/import", buf.getvalue())
    assert trav.status_code == 422 and trav.json()["code"] == "unsafe_archive_path"
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("dk.dbf", b"\0" * (50 * 2**20))  # 50 MB of zeros in a ~50 KB upload
    refused = post(server, "/api/land/import", bomb.getvalue())
    assert refused.status_code == 422 and refused.json()["code"] == "zip_bomb"
    assert post(server, "/api/land/import", b"hello").status_code == 415
    multipart = requests.post(server.url + "/api/land/import", files={"file": ("dk.gpkg", data[:1000])},
                              headers={"X-API-Key": server.key("rural")}, timeout=TIMEOUT)
    assert multipart.status_code == 415 and multipart.json()["code"] == "unsupported_media_type"
    before = get(server, "/api/land/checks/area-mismatch", limit=1).json()["total"]
    # dry run: the report, nothing written
    dry = post(server, "/api/land/import", data, dry_run="true", filename="新地块.gpkg")
    assert dry.status_code == 200, dry.text
    report = dry.json()["report"]
    assert report["ok"] and report["source"] == "新地块.gpkg" and report["crs"] == "EPSG:4527"
    assert GeoPackageStore().origin(layer) == "demo"
    # a faulty file: 422 with the report, nothing written
    bad = frame.copy()
    bad.loc[1, "DKBM"] = bad.loc[0, "DKBM"]
    bad.to_file(tmp_path / "bad.gpkg")
    refused = post(server, "/api/land/import", (tmp_path / "bad.gpkg").read_bytes())
    assert refused.status_code == 422 and refused.json()["code"] == "import_refused"
    assert [e["code"] for e in refused.json()["report"]["errors"]] == ["duplicate_dkbm"]
    # the import: written, the checks see the new data version (contract = measured now: no area mismatch)
    done = post(server, "/api/land/import", data)
    assert done.status_code == 200, done.text
    assert done.json()["written"] == len(plots) and GeoPackageStore().origin(layer) == "imported"
    assert before > 0 and get(server, "/api/land/checks/area-mismatch", limit=1).json()["total"] == 0
    assert card().json()["dkmc"] == "导入地块"  # the register's caches follow the new data version
    # the import is a change in the land history (§9): a version from today; the register as of yesterday is
    # what it was before the import (the previous name), as of today the imported one
    today = dt.datetime.now(dt.timezone.utc).date()
    yesterday = (today - dt.timedelta(days=1)).isoformat()
    hist = requests.get(f"{server.url}/api/land/plots/{dkbm}/history", timeout=TIMEOUT,
                        headers={"X-API-Key": server.key("rural")}).json()
    imported = [v for v in hist["versions"] if v["entity"] == "plot" and v["valid_from"] == today.isoformat()]
    assert imported and imported[-1]["changes"]["dkmc"] == [plots["dkmc"].iloc[0], "导入地块"]
    assert imported[-1]["author_role"] == "rural" and "import" in imported[-1]["reason"]
    old_card = requests.get(f"{server.url}/api/land/plots/{dkbm}", params={"as_of": yesterday}, timeout=TIMEOUT)
    assert old_card.json()["dkmc"] == plots["dkmc"].iloc[0] and done.json()["history_changed"] == len(plots)
    versions = requests.get(server.url + "/api/land/import/versions", headers={"X-API-Key": server.key("admin")},
                            timeout=TIMEOUT).json()["versions"]
    assert [v["origin"] for v in versions] == ["demo"]
    assert post(server, "/api/land/import/rollback", role="planner").status_code == 403
    back = post(server, "/api/land/import/rollback", role="admin")
    assert back.status_code == 200, back.text
    assert GeoPackageStore().origin(layer) == "demo"
    assert get(server, "/api/land/checks/area-mismatch", limit=1).json()["total"] == before
    assert card().json()["dkmc"] == plots["dkmc"].iloc[0]
    assert back.json()["history_changed"] == len(plots)  # the rollback is a change in the history too
    hist = requests.get(f"{server.url}/api/land/plots/{dkbm}/history", timeout=TIMEOUT,
                        headers={"X-API-Key": server.key("rural")}).json()
    assert hist["versions"][-1]["changes"]["dkmc"] == ["导入地块", plots["dkmc"].iloc[0]]
    assert post(server, "/api/land/import/rollback").status_code == 409
