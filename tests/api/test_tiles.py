"""OGC API – Tiles over a live server on hand-made layers: metadata, access, masking, positions, cells.

Tiles are decoded with mapbox-vector-tile (an independent decoder) and with GDAL's MVT driver; positions are
checked against the source vertices projected by pyproj (EPSG:4490 → EPSG:3857) and placed in the tile by
the WebMercatorQuad definition written out here, not by the service's code."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import urllib.error
import urllib.request
from contextlib import ExitStack, contextmanager

import geopandas as gpd
import httpx
import mapbox_vector_tile
import numpy as np
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import LineString, MultiPolygon, Point, Polygon

from gis_service.auth import KeyStore
from gis_service.catalog import Catalog
from gis_service.privacy import mask_value
from gis_service.store import GeoPackageStore

from ..conftest import live_server

HALF = 20037508.342789244  # WebMercatorQuad: half the world's width in metres (2D TMS annex D.1)
TO_MERC = Transformer.from_crs("EPSG:4490", "EPSG:3857", always_xy=True)
TMS = "WebMercatorQuad"
ORIGIN_LON, ORIGIN_LAT = 116.70, 39.50  # farmland west of 廊坊 (inside the city)
STATUSES = ["未流转", "出租（转包）", "入股"]
MARKUP = '<img src=x onerror="window.injected=1">'  # a plot code that must stay text


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    x, y = TO_MERC.transform(lon, lat)
    size = 2 * HALF / 2**z
    return int((x + HALF) // size), int((HALF - y) // size)


def to_tile_units(lon, lat, z: int, col: int, row: int) -> np.ndarray:
    x, y = TO_MERC.transform(np.asarray(lon), np.asarray(lat))
    size = 2 * HALF / 2**z
    return np.column_stack([(x - (-HALF + col * size)) / size * 4096, ((HALF - row * size) - y) / size * 4096])


def ring_area(coords) -> float:
    """Surveyor's formula in tile coordinates (y down): positive for an MVT exterior ring."""
    c = np.asarray(coords, float)
    return float(np.sum(c[:-1, 0] * c[1:, 1] - c[1:, 0] * c[:-1, 1]) / 2)


# --- the hand-made layers -------------------------------------------------------------------------------
PARCELS_TOML = """
id = "parcels"
title_zh = "测试地块"
title_en = "Test parcels"
geometry = "MultiPolygon"
access = "public"
personal_roles = ["rural", "admin"]
label_field = "code"
popup = ["code", "owner", "status", "area_mu"]
style = { color = "#8c6d31", category_field = "status", categories = { "未流转" = "#fee391", "入股" = "#31a354" } }
[tiles]
min_zoom = 4
detail_zoom = 12
cell_pixels = 8
[[fields]]
name = "code"
type = "string"
label = "编码"
[[fields]]
name = "owner"
type = "string"
label = "承包方"
personal = "name"
[[fields]]
name = "owner_phone"
type = "string"
label = "电话"
personal = "phone"
[[fields]]
name = "status"
type = "string"
label = "流转状态"
[[fields]]
name = "area_mu"
type = "real"
label = "面积（亩）"
[[fields]]
name = "farmland"
type = "boolean"
label = "基本农田"
"""

ROADS_TOML = """
id = "roads"
title_zh = "测试道路"
title_en = "Test roads"
geometry = "LineString"
access = "internal"
label_field = "name"
[[fields]]
name = "name"
type = "string"
label = "名称"
"""

WELLS_TOML = """
id = "wells"
title_zh = "测试水井"
title_en = "Test wells"
geometry = "Point"
access = "restricted"
roles = ["flood"]
label_field = "name"
[tiles]
fields = ["name", "depth_m"]
[[fields]]
name = "name"
type = "string"
label = "名称"
[[fields]]
name = "depth_m"
type = "integer"
label = "井深"
"""

DENSE_TOML = """
id = "dense"
title_zh = "测试密集点"
title_en = "Test dense points"
geometry = "Point"
access = "public"
label_field = "name"
[tiles]
max_features = 10
[[fields]]
name = "name"
type = "string"
label = "名称"
"""
DENSE = [(116.75 + i * 0.0005, 39.52 + j * 0.0005) for i in range(6) for j in range(5)]  # 30 points, ≈ 43 m apart


def parcels_frame() -> gpd.GeoDataFrame:
    """A 30 × 12 grid of 0.0008° × 0.0004° strips (≈ 69 m × 44 m), a holed field, a two-part field, a
    sliver of 0.00001° (≈ 1 m: under a pixel at zoom 12, over one at 18) and a field whose code is markup."""
    rows = []
    for i in range(30):
        for j in range(12):
            x0, y0 = ORIGIN_LON + i * 0.0008, ORIGIN_LAT + j * 0.0004
            rows.append({"code": f"P{i:02d}{j:02d}", "owner": f"张{'三四五'[j % 3]}{'丰'* (i % 2)}",
                         "owner_phone": f"1380000{i:02d}{j:02d}", "status": STATUSES[(i // 4 + j) % 3],
                         "area_mu": round(1 + i * 0.1, 2), "farmland": (i + j) % 2 == 0,
                         "geometry": MultiPolygon([Polygon([(x0, y0), (x0 + 0.0008, y0), (x0 + 0.0008, y0 + 0.0004),
                                                            (x0, y0 + 0.0004)])])})
    holed = Polygon([(116.73, 39.50), (116.732, 39.50), (116.732, 39.502), (116.73, 39.502)],
                    [[(116.7305, 39.5005), (116.7305, 39.5015), (116.7315, 39.5015), (116.7315, 39.5005)]])
    two = MultiPolygon([Polygon([(116.734, 39.50), (116.735, 39.50), (116.735, 39.501)]),
                        Polygon([(116.736, 39.50), (116.737, 39.50), (116.737, 39.501), (116.736, 39.501)])])
    sliver = MultiPolygon([Polygon([(116.738, 39.5), (116.73801, 39.5), (116.73801, 39.50001), (116.738, 39.50001)])])
    markup = MultiPolygon([shapely.box(116.742, 39.500, 116.743, 39.5005)])  # a code a page must show as text
    for code, geom in (("HOLED", MultiPolygon([holed])), ("TWO", two), ("SLIVER", sliver), (MARKUP, markup)):
        rows.append({"code": code, "owner": "李四", "owner_phone": "13912345678", "status": "入股", "area_mu": 3.0,
                     "farmland": False, "geometry": geom})
    return gpd.GeoDataFrame(rows, crs="EPSG:4490")


@pytest.fixture(scope="module")
def tiles_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("tile_layers")
    (root / "groups.toml").write_text('[test]\ntitle_zh = "测试"\ntitle_en = "Test"\norder = 1\n', encoding="utf-8")
    (root / "test").mkdir()
    for name, text in (("parcels", PARCELS_TOML), ("roads", ROADS_TOML), ("wells", WELLS_TOML), ("dense", DENSE_TOML)):
        (root / "test" / f"{name}.toml").write_text(textwrap.dedent(text), encoding="utf-8")
    catalog, store = Catalog.load(root), GeoPackageStore()
    frame = parcels_frame()
    store.write(catalog.get("parcels"), frame, "source")
    road = LineString([(116.60, 39.49), (116.80, 39.51)])  # crosses many zoom-14 tiles
    store.write(catalog.get("roads"), gpd.GeoDataFrame({"name": ["测试路"]}, geometry=[road], crs="EPSG:4490"), "source")
    store.write(catalog.get("wells"), gpd.GeoDataFrame({"name": ["井1", "井2"], "depth_m": [120, 80]},
                                                       geometry=[Point(116.701, 39.501), Point(116.705, 39.503)],
                                                       crs="EPSG:4490"), "source")
    store.write(catalog.get("dense"), gpd.GeoDataFrame({"name": [f"点{i}" for i in range(len(DENSE))]},
                                                       geometry=[Point(p) for p in DENSE], crs="EPSG:4490"), "source")
    var = tmp_path_factory.mktemp("tile_var")
    with ExitStack() as stack:
        with _env(GIS_LAYERS_DIR=str(root)):  # only while the server starts: the session's `server` uses layers/
            _, url = stack.enter_context(live_server(var))
        keys = KeyStore(var / "keys.sqlite")
        server = type("S", (), {})()
        server.url, server.var, server.frame, server.catalog = url, var, frame, catalog
        server.keys = {role: keys.add(role, f"t-{role}") for role in ("planner", "rural", "flood", "admin")}
        yield server


@contextmanager
def _env(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def get(server, path: str, role: str | None = None):
    headers = {"X-API-Key": server.keys[role]} if role else {}
    req = urllib.request.Request(server.url + path, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def tile_path(layer: str, z: int, col: int, row: int) -> str:
    return f"/ogc/collections/{layer}/tiles/{TMS}/{z}/{row}/{col}"


def decode(data: bytes) -> dict:
    return mapbox_vector_tile.decode(data, default_options={"y_coord_down": True})


# --- metadata -------------------------------------------------------------------------------------------
def test_conformance_landing_and_collection_link(tiles_server):
    conf = json.loads(get(tiles_server, "/ogc/conformance")[2])["conformsTo"]
    for cls in ("ogcapi-tiles-1/1.0/conf/core", "ogcapi-tiles-1/1.0/conf/tileset", "ogcapi-tiles-1/1.0/conf/mvt",
                "ogcapi-tiles-1/1.0/conf/geodata-tilesets", "tms/2.0/conf/tilematrixset"):
        assert f"http://www.opengis.net/spec/{cls}" in conf
    landing = json.loads(get(tiles_server, "/ogc?f=json")[2])
    assert any(link["href"].endswith("/ogc/tileMatrixSets") for link in landing["links"])
    doc = json.loads(get(tiles_server, "/ogc/collections/parcels")[2])
    tiles = [link for link in doc["links"] if link["rel"] == "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"]
    assert [t["href"] for t in tiles] == [f"{tiles_server.url}/ogc/collections/parcels/tiles"]


def test_webmercatorquad_matrices():
    """Values from the 2D TMS standard's WebMercatorQuad table: level 0 is one 256-pixel tile with a cell of
    156 543.03 m (scale 1:559 082 264.03); each level halves the cell."""
    from gis_service import tiles

    doc = tiles.tile_matrix_set()
    assert doc["uri"] == "http://www.opengis.net/def/tilematrixset/OGC/1.0/WebMercatorQuad"
    assert doc["crs"] == "http://www.opengis.net/def/crs/EPSG/0/3857"
    m = {t["id"]: t for t in doc["tileMatrices"]}
    assert len(m) == 25
    assert m["0"]["cellSize"] == pytest.approx(156543.033928041, rel=1e-12)
    assert m["0"]["scaleDenominator"] == pytest.approx(559082264.028717, rel=1e-12)
    assert m["14"]["cellSize"] == pytest.approx(9.55462853565189, rel=1e-12)
    assert (m["14"]["matrixWidth"], m["14"]["matrixHeight"]) == (2**14, 2**14)
    assert m["3"]["pointOfOrigin"] == [-HALF, HALF] and m["3"]["cornerOfOrigin"] == "topLeft"


def test_tile_matrix_sets_endpoints(tiles_server):
    listing = json.loads(get(tiles_server, "/ogc/tileMatrixSets")[2])
    assert [t["id"] for t in listing["tileMatrixSets"]] == [TMS]
    status, _, body = get(tiles_server, f"/ogc/tileMatrixSets/{TMS}")
    assert status == 200 and json.loads(body)["id"] == TMS
    status, _, body = get(tiles_server, "/ogc/tileMatrixSets/WorldCRS84Quad")
    assert status == 404 and set(json.loads(body)) == {"code", "message"}


def test_tileset_metadata(tiles_server):
    status, _, body = get(tiles_server, f"/ogc/collections/parcels/tiles/{TMS}")
    assert status == 200
    doc = json.loads(body)
    assert doc["dataType"] == "vector" and doc["tileMatrixSetURI"].endswith("/WebMercatorQuad")
    template = [link for link in doc["links"] if link["rel"] == "item"]
    assert template[0]["href"].endswith("/ogc/collections/parcels/tiles/WebMercatorQuad/{tileMatrix}/{tileRow}/{tileCol}")
    assert template[0]["type"] == "application/vnd.mapbox-vector-tile" and template[0]["templated"] is True
    layers = {layer["id"]: layer for layer in doc["layers"]}
    # default fields: label, style category, popup fields, each once
    assert list(layers["parcels"]["propertiesSchema"]["properties"]) == ["code", "status", "owner", "area_mu"]
    assert (layers["parcels"]["minTileMatrix"], layers["parcels"]["maxTileMatrix"]) == ("12", "20")
    assert set(layers["parcels_cells"]["propertiesSchema"]["properties"]) == {"count", "status", "status_share"}
    assert (layers["parcels_cells"]["minTileMatrix"], layers["parcels_cells"]["maxTileMatrix"]) == ("4", "11")
    # the limits at zoom 14 hold the tiles of the grid's corners
    limits = {t["tileMatrix"]: t for t in doc["tileMatrixSetLimits"]}
    col0, row1 = tile_of(ORIGIN_LON, ORIGIN_LAT + 0.0048, 14)
    col1, row0 = tile_of(116.73801, ORIGIN_LAT, 14)
    lim = limits["14"]
    assert lim["minTileCol"] <= col0 and lim["maxTileCol"] >= col1 and lim["minTileRow"] <= row1
    assert lim["maxTileRow"] >= row0
    listing = json.loads(get(tiles_server, "/ogc/collections/parcels/tiles")[2])
    assert listing["tilesets"][0]["tileMatrixSetURI"] == doc["tileMatrixSetURI"]


# --- access and errors -----------------------------------------------------------------------------------
def test_access_rules_match_items(tiles_server):
    col, row = tile_of(116.701, 39.501, 14)
    for layer, role, expected in (("wells", None, 404), ("wells", "planner", 404), ("wells", "flood", 200),
                                  ("wells", "admin", 200), ("roads", None, 404), ("roads", "planner", 200)):
        for path in (f"/ogc/collections/{layer}/tiles", f"/ogc/collections/{layer}/tiles/{TMS}",
                     tile_path(layer, 14, col, row)):
            status, _, body = get(tiles_server, path, role)
            assert status == expected, (path, role, status)
            if status == 404:  # invisible looks like missing
                assert json.loads(body)["code"] == "not_found"
    status, _, body = get(tiles_server, tile_path("wells", 14, col, row), "flood")
    features = decode(body)["wells"]["features"]
    assert sorted(f["properties"]["name"] for f in features) == ["井1", "井2"]
    assert {f["properties"]["depth_m"] for f in features} == {120, 80}


@pytest.mark.parametrize("z,y,x,status,code", [
    ("abc", "1", "1", 400, "bad_parameter"), ("14", "-1", "3", 400, "bad_parameter"), ("14", "1.5", "3", 400, "bad_parameter"),
    ("3", "8", "0", 404, "tile_out_of_range"), ("3", "0", "8", 404, "tile_out_of_range"),
    ("21", "0", "0", 404, "tile_out_of_range"), ("3", "0", "0", 404, "tile_out_of_range"),  # below min_zoom 4
    ("99999999999", "0", "0", 400, "bad_parameter"),
])
def test_bad_tile_coordinates_are_json_errors(tiles_server, z, y, x, status, code):
    got, headers, body = get(tiles_server, f"/ogc/collections/parcels/tiles/{TMS}/{z}/{y}/{x}")
    assert got == status and headers["content-type"].startswith("application/json")
    doc = json.loads(body)
    assert set(doc) == {"code", "message"} and doc["code"] == code


def test_empty_tile_is_204(tiles_server):
    col, row = tile_of(100.0, 20.0, 14)
    status, _, body = get(tiles_server, tile_path("parcels", 14, col, row))
    assert status == 204 and body == b""


def test_tiles_hold_at_most_max_features(tiles_server):
    """A layer without cells (no detail_zoom) must not make whole-layer tiles zoomed out: a tile needing more
    than the [tiles] table's max_features (10 here) is a 422 JSON error; zoomed in, the same points are served."""
    status, headers, body = get(tiles_server, tile_path("dense", 10, *tile_of(*DENSE[0], 10)))
    assert status == 422 and headers["content-type"].startswith("application/json")
    assert json.loads(body)["code"] == "tile_too_dense"
    served = 0
    for z in (17, 18):
        for col, row in {tile_of(lon, lat, z) for lon, lat in DENSE}:
            units = to_tile_units([p[0] for p in DENSE], [p[1] for p in DENSE], z, col, row)
            inside = int(((units >= -64) & (units <= 4096 + 64)).all(axis=1).sum())  # with the 64-unit buffer
            status, _, body = get(tiles_server, tile_path("dense", z, col, row))
            if inside <= 10:
                assert status == 200 and len(decode(body)["dense"]["features"]) == inside
                served += 1
            else:
                assert status == 422
    assert served >= 4


# --- geometry ---------------------------------------------------------------------------------------------
def test_feature_positions_match_pyproj(tiles_server):
    z = 14
    col, row = tile_of(ORIGIN_LON + 0.004, ORIGIN_LAT + 0.002, z)
    status, headers, body = get(tiles_server, tile_path("parcels", z, col, row))
    assert status == 200 and headers["content-type"] == "application/vnd.mapbox-vector-tile"
    layer = decode(body)["parcels"]
    assert layer["extent"] == 4096
    frame = tiles_server.frame
    by_code = {f["properties"]["code"]: f for f in layer["features"]}
    size = 2 * HALF / 2**z
    x0, y1 = -HALF + col * size, HALF - row * size
    box = shapely.box(*_lonlat(x0 - size * 64 / 4096, y1 - size - size * 64 / 4096),
                      *_lonlat(x0 + size + size * 64 / 4096, y1 + size * 64 / 4096))
    expected = set(frame.loc[frame.intersects(box), "code"]) - {"SLIVER"}  # under a pixel
    assert set(by_code) == expected and len(expected) > 50
    checked = 0
    for _, src in frame[frame.within(shapely.box(*_lonlat(x0, y1 - size), *_lonlat(x0 + size, y1)))].iterrows():
        ring = np.asarray(src.geometry.geoms[0].exterior.coords)[:-1]
        want = to_tile_units(ring[:, 0], ring[:, 1], z, col, row)
        got = np.asarray(by_code[src["code"]]["geometry"]["coordinates"][0][:-1], float)
        assert len(got) == len(want)
        # same vertices (rounded to whole units), whatever ring start and direction the encoder chose
        assert all(np.min(np.abs(got - w).max(axis=1)) <= 0.6 for w in want)
        assert ring_area(by_code[src["code"]]["geometry"]["coordinates"][0]) > 0  # exterior: clockwise, y down
        checked += 1
    assert checked > 20


def _lonlat(x, y):
    back = Transformer.from_crs("EPSG:3857", "EPSG:4490", always_xy=True)
    return back.transform(x, y)


def test_holes_and_parts_survive(tiles_server):
    z = 16
    col, row = tile_of(116.731, 39.501, z)
    feats = {f["properties"]["code"]: f for f in decode(get(tiles_server, tile_path("parcels", z, col, row))[2])
             ["parcels"]["features"]}
    holed = feats["HOLED"]["geometry"]
    assert holed["type"] == "Polygon" and len(holed["coordinates"]) == 2
    outer, inner = holed["coordinates"]
    assert ring_area(outer) > 0 > ring_area(inner)
    hole = to_tile_units([116.7305, 116.7315], [39.5015, 39.5005], z, col, row)
    assert np.min(np.asarray(inner), axis=0) == pytest.approx(hole.min(axis=0), abs=0.6)
    assert tile_of(116.734, 39.5, 14) == tile_of(116.737, 39.501, 14)  # both parts in one tile at zoom 14
    col2, row2 = tile_of(116.7355, 39.5005, 14)
    feats2 = {f["properties"]["code"]: f for f in decode(get(tiles_server, tile_path("parcels", 14, col2, row2))[2])
              ["parcels"]["features"]}
    assert feats2["TWO"]["geometry"]["type"] == "MultiPolygon" and len(feats2["TWO"]["geometry"]["coordinates"]) == 2


def test_sub_pixel_features_dropped_until_they_are_a_pixel(tiles_server):
    """The sliver is 0.00001° (≈ 0.86 m × 1.1 m): under a pixel at zoom 12 (≈ 30 m), over one at 18 (≈ 0.5 m)."""
    for z, present in ((12, False), (18, True)):
        col, row = tile_of(116.738005, 39.500005, z)
        _, _, body = get(tiles_server, tile_path("parcels", z, col, row))
        codes = {f["properties"]["code"] for f in decode(body).get("parcels", {"features": []})["features"]}
        assert ("SLIVER" in codes) is present, z


def test_lines_clipped_to_the_buffered_tile(tiles_server):
    z = 14
    col, row = tile_of(116.70, 39.5, z)
    _, _, body = get(tiles_server, tile_path("roads", z, col, row), "planner")
    line = decode(body)["roads"]["features"][0]["geometry"]
    coords = np.asarray(line["coordinates"], float)
    assert coords.min() >= -64 and coords.max() <= 4096 + 64
    # on the straight line, projected independently
    a, b = to_tile_units([116.60, 116.80], [39.49, 39.51], z, col, row)
    for p in coords:
        cross = (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])
        assert abs(cross) / np.hypot(*(b - a)) < 2  # Mercator bends the lon/lat line by less than a unit here


def test_gcj02_tiles_are_shifted_like_the_gaode_pages(tiles_server):
    """coord_sys=gcj02 (what a page over the Gaode base map asks for): the geometry is shifted to GCJ-02 before it
    is placed in the tile, as crs.wgs84_to_gcj02 shifts the page's other layers; cells bin the shifted centres."""
    from gis_service.crs import wgs84_to_gcj02

    frame = tiles_server.frame.set_index("code")
    ring = np.asarray(frame.loc["P1005", "geometry"].geoms[0].exterior.coords)[:-1]
    glon, glat = wgs84_to_gcj02(ring[:, 0], ring[:, 1])
    z = 16
    col, row = tile_of(float(glon.mean()), float(glat.mean()), z)
    status, _, body = get(tiles_server, tile_path("parcels", z, col, row) + "?coord_sys=gcj02")
    assert status == 200
    feats = {f["properties"]["code"]: f for f in decode(body)["parcels"]["features"]}
    got = np.asarray(feats["P1005"]["geometry"]["coordinates"][0][:-1], float)
    want = to_tile_units(glon, glat, z, col, row)
    assert len(got) == len(want) and all(np.min(np.abs(got - w).max(axis=1)) <= 0.6 for w in want)
    unshifted = to_tile_units(ring[:, 0], ring[:, 1], z, col, row)
    assert np.abs(unshifted - want).max() > 1000  # GCJ-02 moves Langfang by hundreds of metres (≈ 0.1 m a unit)
    # cells: every parcel centre, shifted, binned in the GCJ-02 frame
    b = tiles_server.frame.bounds
    clon, clat = wgs84_to_gcj02(((b.minx + b.maxx) / 2).values, ((b.miny + b.maxy) / 2).values)
    z = 11
    col, row = tile_of(float(clon.mean()), float(clat.mean()), z)
    units = to_tile_units(clon, clat, z, col, row)
    inside = int(((units >= 0) & (units < 4096)).all(axis=1).sum())
    cells = decode(get(tiles_server, tile_path("parcels", z, col, row) + "?coord_sys=gcj02")[2])["parcels_cells"]
    assert sum(f["properties"]["count"] for f in cells["features"]) == inside > 50
    status, _, body = get(tiles_server, tile_path("parcels", z, col, row) + "?coord_sys=epsg:4548")
    assert status == 400 and json.loads(body)["code"] == "bad_parameter"


# --- properties and masking ---------------------------------------------------------------------------------
def test_personal_fields_masked_unless_entitled_and_disclosures_logged(tiles_server):
    z = 14
    col, row = tile_of(ORIGIN_LON + 0.004, ORIGIN_LAT + 0.002, z)
    path = tile_path("parcels", z, col, row)
    clear = dict(zip(tiles_server.frame["code"], tiles_server.frame["owner"]))
    log = tiles_server.var / "personal_data_access.log"
    before = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    anonymous = decode(get(tiles_server, path, None)[2])["parcels"]["features"]
    assert anonymous and all("owner" not in f["properties"] and "code" in f["properties"] for f in anonymous)  # §8
    for role in ("planner", "flood"):
        feats = decode(get(tiles_server, path, role)[2])["parcels"]["features"]
        for f in feats:
            assert f["properties"]["owner"] == mask_value("name", clear[f["properties"]["code"]])
            assert "owner_phone" not in f["properties"]  # not a tile field
    after_masked = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    assert after_masked == before  # masked values are no disclosure
    for role in ("rural", "admin"):
        feats = decode(get(tiles_server, path, role)[2])["parcels"]["features"]
        assert all(f["properties"]["owner"] == clear[f["properties"]["code"]] for f in feats)
    entries = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()[len(before):]]
    assert [(e["role"], e["collection"], e["fields"], e["count"]) for e in entries] == [
        ("rural", "parcels", ["owner"], len(feats)), ("admin", "parcels", ["owner"], len(feats))]
    assert all(e["request"].endswith(path) for e in entries)


def test_property_types(tiles_server):
    z = 14
    col, row = tile_of(ORIGIN_LON + 0.004, ORIGIN_LAT + 0.002, z)
    feats = decode(get(tiles_server, tile_path("parcels", z, col, row))[2])["parcels"]["features"]
    frame = tiles_server.frame.set_index("code")
    for f in feats:
        p = f["properties"]
        assert p["area_mu"] == pytest.approx(frame.loc[p["code"], "area_mu"])
        assert p["status"] == frame.loc[p["code"], "status"]


# --- aggregate cells ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("z", [10, 11])
def test_cells_below_detail_zoom_count_and_dominant_status(tiles_server, z):
    """Expected cells computed here: each parcel's envelope centre projected by pyproj, binned into 8-pixel
    cells (32 × 32 per tile), counted, and the most frequent status taken (ties: the lowest value)."""
    frame = tiles_server.frame
    b = frame.bounds
    cx, cy = TO_MERC.transform(((b.minx + b.maxx) / 2).values, ((b.miny + b.maxy) / 2).values)
    col, row = tile_of(ORIGIN_LON + 0.01, ORIGIN_LAT + 0.002, z)
    size = 2 * HALF / 2**z
    x0, top = -HALF + col * size, HALF - row * size
    inside = (cx >= x0) & (cx < x0 + size) & (cy <= top) & (cy > top - size)
    cell_m = size / 32
    cells: dict[tuple[int, int], list[str]] = {}
    for x, y, status in zip(cx[inside], cy[inside], frame["status"][inside]):
        cells.setdefault((int((top - y) // cell_m), int((x - x0) // cell_m)), []).append(status)
    status, _, body = get(tiles_server, tile_path("parcels", z, col, row))
    layer = decode(body)["parcels_cells"]
    assert "parcels" not in decode(body)
    got = {}
    for f in layer["features"]:
        ring = np.asarray(f["geometry"]["coordinates"][0], float)
        assert ring_area(ring) == pytest.approx(128 * 128)  # an 8-pixel square
        r, c = int(ring[:, 1].min() // 128), int(ring[:, 0].min() // 128)
        got[(r, c)] = f["properties"]
        assert set(f["properties"]) == {"count", "status", "status_share"}  # no personal field in cells
    assert set(got) == set(cells)
    for key, statuses in cells.items():
        counts = {s: statuses.count(s) for s in statuses}
        best = min(counts, key=lambda s: (-counts[s], s))
        assert got[key]["count"] == len(statuses)
        assert got[key]["status"] == best
        assert got[key]["status_share"] == pytest.approx(counts[best] / len(statuses), abs=1e-3)


# --- GDAL reads the tiles (so does QGIS, which uses it) -----------------------------------------------------
def test_gdal_mvt_driver_reads_a_tile(tiles_server, tmp_path):
    z = 14
    col, row = tile_of(ORIGIN_LON + 0.004, ORIGIN_LAT + 0.002, z)
    data = get(tiles_server, tile_path("parcels", z, col, row))[2]
    path = tmp_path / "tile.pbf"
    path.write_bytes(data)
    out = subprocess.run(["ogr2ogr", "-f", "GeoJSON", "/vsistdout/", str(path), "parcels", "-oo", f"Z={z}",
                          "-oo", f"X={col}", "-oo", f"Y={row}"], capture_output=True, text=True, check=True).stdout
    doc = json.loads(out)
    frame = tiles_server.frame.set_index("code")
    unit = 2 * HALF / 2**z / 4096
    assert len(doc["features"]) == len(decode(data)["parcels"]["features"])
    checked = 0
    for f in doc["features"]:
        src = frame.loc[f["properties"]["code"], "geometry"]
        if not src.within(shapely.box(*_lonlat(-HALF + col * 2 * HALF / 2**z, HALF - (row + 1) * 2 * HALF / 2**z),
                                      *_lonlat(-HALF + (col + 1) * 2 * HALF / 2**z, HALF - row * 2 * HALF / 2**z))):
            continue
        ring = np.asarray(src.geoms[0].exterior.coords)
        mx, my = TO_MERC.transform(ring[:, 0], ring[:, 1])
        got = np.asarray(f["geometry"]["coordinates"][0], float)
        for w in zip(mx, my):
            assert np.min(np.abs(got - w).max(axis=1)) <= unit  # GDAL's EPSG:3857 metres, within a tile unit
        assert f["properties"]["status"] == frame.loc[f["properties"]["code"], "status"]
        checked += 1
    assert checked > 20


def test_gdal_reads_tiles_over_http(tiles_server):
    """GDAL 3.6 over HTTP (/vsicurl/: a HEAD for the size, then a GET): its MVT driver opens a tile URL that
    ends like a .pbf file (a query string does; unknown parameters are ignored) — the same features, in place.
    (GDAL 3.6's OGC API driver itself opens no vector tiles from any server: its tiles path reaches only the
    raster branch; vector tiles there need GDAL >= 3.7.)"""
    z = 14
    col, row = tile_of(ORIGIN_LON + 0.004, ORIGIN_LAT + 0.002, z)
    url = f"{tiles_server.url}{tile_path('parcels', z, col, row)}?f=.pbf"
    out = subprocess.run(["ogr2ogr", "-f", "GeoJSON", "/vsistdout/", f"/vsicurl/{url}", "parcels", "-oo", f"Z={z}",
                          "-oo", f"X={col}", "-oo", f"Y={row}"], capture_output=True, text=True, check=True).stdout
    got = {f["properties"]["code"]: f for f in json.loads(out)["features"]}
    want = {f["properties"]["code"] for f in decode(get(tiles_server, tile_path("parcels", z, col, row))[2])
            ["parcels"]["features"]}
    assert set(got) == want and len(want) > 50
    ring = np.asarray(tiles_server.frame.set_index("code").loc["P1005", "geometry"].geoms[0].exterior.coords)
    mx, my = TO_MERC.transform(ring[:, 0], ring[:, 1])
    corners = np.asarray(got["P1005"]["geometry"]["coordinates"][0], float)
    unit = 2 * HALF / 2**z / 4096
    assert all(np.min(np.abs(corners - w).max(axis=1)) <= unit for w in zip(mx, my))


def test_gdal_reads_the_tile_matrix_set_over_http(tiles_server, tmp_path):
    """GDAL's tile-matrix-set parser — the one its OGC API driver hands /ogc/tileMatrixSets/WebMercatorQuad to —
    fetches our document over HTTP: gdal_translate -of COG -co TILING_SCHEME=<url> lays a raster on that grid
    (EPSG:3857, a pixel of one WebMercatorQuad cell, the origin on a tile corner). GDAL 3.6 reads only the
    TMS 1.0 JSON members; with the 2.0 ones alone it fails ("Cannot parse CRS")."""
    src, out = tmp_path / "src.tif", tmp_path / "cog.tif"
    subprocess.run(["gdal_create", "-q", "-of", "GTiff", "-outsize", "64", "64", "-bands", "1", "-a_srs", "EPSG:4490",
                    "-a_ullr", "116.6", "39.6", "116.7", "39.5", str(src)], check=True)
    subprocess.run(["gdal_translate", "-q", "-of", "COG", "-co",
                    f"TILING_SCHEME={tiles_server.url}/ogc/tileMatrixSets/{TMS}", str(src), str(out)], check=True)
    info = json.loads(subprocess.run(["gdalinfo", "-json", str(out)], capture_output=True, text=True,
                                     check=True).stdout)
    assert 'ID["EPSG",3857]' in info["coordinateSystem"]["wkt"]
    x0, res, _, y0, _, neg = info["geoTransform"]
    z = round(np.log2(2 * HALF / 256 / res))
    assert res == pytest.approx(2 * HALF / 256 / 2**z, rel=1e-9) and neg == -res
    tile = 256 * res
    assert (x0 + HALF) / tile == pytest.approx(round((x0 + HALF) / tile), abs=1e-6)
    assert (HALF - y0) / tile == pytest.approx(round((HALF - y0) / tile), abs=1e-6)


# --- the [tiles] table is checked at start-up ---------------------------------------------------------------
@pytest.mark.parametrize("table,key", [
    ("[tiles]\nzoom = 3\n", "tiles.zoom"),
    ("[tiles]\ndetail_zoom = 4\n", "tiles.detail_zoom"),  # not above min_zoom 4
    ("[tiles]\ndetail_zoom = 21\n", "tiles.detail_zoom"),  # above max_zoom 20
    ("[tiles]\nmax_zoom = 25\n", "tiles.max_zoom"),  # WebMercatorQuad ends at 24
    ("[tiles]\ndetail_zoom = 12\naggregate_fields = [\"owner\"]\n", "tiles.aggregate_fields"),  # personal
    ("[tiles]\naggregate_fields = [\"status\"]\n", "tiles.aggregate_fields"),  # needs detail_zoom
    ("[tiles]\nfields = [\"code\", \"nope\"]\n", "tiles.fields"),
    ("[tiles]\ndetail_zoom = 12\ncell_pixels = 3\n", "tiles.cell_pixels"),
    ("[tiles]\nmax_features = 0\n", "tiles.max_features"),
])
def test_bad_tiles_tables_stop_start_up(tmp_path, table, key):
    from gis_service.catalog import load_definition
    from gis_service.errors import DefinitionError

    head, rest = textwrap.dedent(PARCELS_TOML).split("[tiles]\n")
    fields = rest[rest.index("[[fields]]"):]
    path = tmp_path / "parcels.toml"
    path.write_text(head + table.replace("[tiles]\n", "[tiles]\nmin_zoom = 4\n") + fields, encoding="utf-8")
    with pytest.raises(DefinitionError) as info:
        load_definition(path)
    assert info.value.key == key


def test_tiles_table_defaults_to_the_style_category_when_aggregating(tmp_path):
    from gis_service.catalog import load_definition

    head, rest = textwrap.dedent(PARCELS_TOML).split("[tiles]\n")
    fields = rest[rest.index("[[fields]]"):]
    path = tmp_path / "parcels.toml"
    for table, aggregate in (("detail_zoom = 12\n", ("status",)), ('fields = ["code"]\n', ())):
        path.write_text(head + "[tiles]\n" + table + fields, encoding="utf-8")
        assert load_definition(path).tiles.aggregate_fields == aggregate


# --- the repository's plots, on every store (GeoPackage and PostGIS) ------------------------------------------
def test_plots_tiles_agree_with_items(server, catalog, store):
    """A zoom-14 tile holds exactly the plots an items query over the tile's buffered box returns, with the
    same values (masked for a planner, left out without a key); a zoom-10 tile's cells count every plot whose envelope centre lies in the tile."""
    first = httpx.get(f"{server.url}/ogc/collections/plots/items", params={"limit": 1}).json()["features"][0]
    lon, lat = shapely.geometry.shape(first["geometry"]).centroid.coords[0]
    z = 14
    col, row = tile_of(lon, lat, z)
    size = 2 * HALF / 2**z
    pad = size * 64 / 4096
    x0, y1 = -HALF + col * size, HALF - row * size
    (lon0, lat0), (lon1, lat1) = _lonlat(x0 - pad, y1 - size - pad), _lonlat(x0 + size + pad, y1 + pad)
    planner = {"X-API-Key": server.key("planner")}
    items = httpx.get(f"{server.url}/ogc/collections/plots/items", headers=planner,
                      params={"bbox": f"{lon0},{lat0},{lon1},{lat1}", "limit": 10000,
                              "properties": "dkbm,contractor_name,transfer_status"}).json()
    want = {f["properties"]["dkbm"]: f["properties"] for f in items["features"]}
    body = httpx.get(f"{server.url}{tile_path('plots', z, col, row)}", headers=planner).content
    got = {f["properties"]["dkbm"]: f["properties"] for f in decode(body)["plots"]["features"]}
    assert set(got) == set(want) and want
    anonymous = decode(httpx.get(f"{server.url}{tile_path('plots', z, col, row)}").content)["plots"]["features"]
    assert {f["properties"]["dkbm"] for f in anonymous} == set(want)
    assert not any("contractor_name" in f["properties"] for f in anonymous)  # without a key: no person (§8)
    for code, props in got.items():
        assert props["contractor_name"] is not None  # masked, not left out
        assert props["contractor_name"] == want[code]["contractor_name"]
        assert props["transfer_status"] == want[code]["transfer_status"]
    frame = store.read_frame(catalog.get("plots"))
    b = frame.bounds
    cx, cy = TO_MERC.transform(((b.minx + b.maxx) / 2).values, ((b.miny + b.maxy) / 2).values)
    col10, row10 = tile_of(lon, lat, 10)
    size10 = 2 * HALF / 2**10
    left, top = -HALF + col10 * size10, HALF - row10 * size10
    inside = int(((cx >= left) & (cx < left + size10) & (cy <= top) & (cy > top - size10)).sum())
    cells = decode(httpx.get(f"{server.url}{tile_path('plots', 10, col10, row10)}").content)["plots_cells"]
    assert sum(f["properties"]["count"] for f in cells["features"]) == inside > 0
