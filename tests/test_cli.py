"""CLI: import is validated and atomic; exports carry UTF-8 encoding and Chinese headers."""

import os
import shutil
import subprocess
import sys

import geopandas as gpd
import pandas as pd
import pytest

from gis_service.config import REPO_ROOT


def run(args, env):
    return subprocess.run([sys.executable, "-m", "gis_service.cli", *args], env=env, capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300)


@pytest.fixture()
def workspace(tmp_path, catalog):
    layers = tmp_path / "layers"
    (layers / "canal").mkdir(parents=True)
    (layers / "admin").mkdir()
    shutil.copy(REPO_ROOT / "layers" / "groups.toml", layers)
    for layer_id in ("heritage_sites", "counties"):
        layer = catalog.get(layer_id)
        dest = layers / layer.group
        shutil.copy(layer.path, dest)
        shutil.copy(layer.data_path, dest)
    return dict(os.environ, GIS_LAYERS_DIR=str(layers), GIS_VAR_DIR=str(tmp_path / "var")), layers


def test_import_gcj02_file_converts_and_bad_file_keeps_old_data(workspace, tmp_path, store, catalog):
    env, layers = workspace
    sites = store.read_frame(catalog.get("heritage_sites"))
    from gis_service import crs
    glon, glat = crs.wgs84_to_gcj02(sites.geometry.x.values, sites.geometry.y.values)
    # Web-map exports label GCJ-02 numbers as WGS84; --coord-sys gcj02 overrides the label.
    gcj = gpd.GeoDataFrame(sites.drop(columns="geometry"), geometry=gpd.points_from_xy(glon, glat), crs="EPSG:4326")
    gcj.to_file(tmp_path / "gcj.geojson")
    ok = run(["import", "heritage_sites", str(tmp_path / "gcj.geojson"), "--coord-sys", "gcj02"], env)
    assert ok.returncode == 0, ok.stderr
    back = gpd.read_file(layers / "canal" / "heritage_sites.gpkg", layer="heritage_sites")
    assert abs(back.geometry.x.values - sites.geometry.x.values).max() < 1e-7
    swapped = gpd.GeoDataFrame(sites.drop(columns="geometry"),
                               geometry=gpd.points_from_xy(sites.geometry.y, sites.geometry.x), crs="EPSG:4326")
    swapped.to_file(tmp_path / "swapped.geojson")
    bad = run(["import", "heritage_sites", str(tmp_path / "swapped.geojson")], env)
    assert bad.returncode == 2 and "outside Langfang" in bad.stderr
    assert len(gpd.read_file(layers / "canal" / "heritage_sites.gpkg", layer="heritage_sites")) == len(sites)


def test_exports_shapefile_utf8_and_excel_chinese_headers(workspace, tmp_path):
    env, _ = workspace
    shp = run(["export", "counties", "--format", "shp", "--crs", "EPSG:4548", "--output", str(tmp_path / "c.shp")], env)
    assert shp.returncode == 0, shp.stderr
    assert (tmp_path / "c.cpg").read_text().strip().upper() in ("UTF-8", "UTF8")
    frame = gpd.read_file(tmp_path / "c.shp")
    assert "安次区" in set(frame["name"]) and frame.crs.to_epsg() == 4548
    xlsx = run(["export", "counties", "--format", "xlsx", "--output", str(tmp_path / "c.xlsx")], env)
    assert xlsx.returncode == 0, xlsx.stderr
    assert list(pd.read_excel(tmp_path / "c.xlsx").columns) == ["行政区划代码", "名称", "几何（WKT）"]


def test_keys_add_prints_a_key_stored_only_as_hash(workspace, tmp_path):
    env, _ = workspace
    out = run(["keys", "add", "--role", "flood", "--name", "值班员"], env)
    key = out.stdout.strip().splitlines()[-1]
    assert key.startswith("lf_")
    assert key.encode() not in (tmp_path / "var" / "keys.sqlite").read_bytes()
    assert "值班员" in run(["keys", "list"], env).stdout


HEAVY = ("rasterio", "scipy", "geopandas", "pyogrio", "shapely", "pyproj", "pandas")


@pytest.mark.parametrize("argv", [["keys", "list"], ["--help"], ["keys", "--help"]])
def test_light_commands_import_no_gis_libraries(tmp_path, argv):
    code = ("import contextlib, io, sys, gis_service.cli as c\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            f"    c.main({argv!r})\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, GIS_VAR_DIR=str(tmp_path / "var")),
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_import_refreshes_derived_layers_and_works_without_them(workspace, tmp_path, store, catalog):
    """An import republishes the domains' derived layers (here none can be built: the workspace holds no canal
    layers, and the import must still succeed)."""
    env, layers = workspace
    sites = store.read_frame(catalog.get("heritage_sites")).head(3)
    sites.to_file(tmp_path / "three.geojson")
    done = run(["import", "heritage_sites", str(tmp_path / "three.geojson")], env)
    assert done.returncode == 0, done.stderr
    assert "已导入 3 个要素" in done.stdout and "已更新派生图层" not in done.stdout
