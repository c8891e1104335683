"""build-layers creates only what is missing and never overwrites imported data (issue #5's data-loss bug:
importing villages, deleting dem.tif and rebuilding replaced the 5 imported villages with generated ones)."""

import shutil

import geopandas as gpd
import pytest
import shapely

from gis_service.build import build_layers
from gis_service.catalog import Catalog
from gis_service.config import REPO_ROOT
from gis_service.importer import import_layer
from gis_service.store import GeoPackageStore, display_title


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("layers")
    layers = root / "layers"
    shutil.copytree(REPO_ROOT / "layers", layers, ignore=shutil.ignore_patterns("*.gpkg", "*.tif", ".*"))
    catalog, store = Catalog.load(layers), GeoPackageStore()
    written = build_layers(catalog, store, plots=2000, progress=False)
    return catalog, store, written


def test_first_build_writes_every_layer_with_its_origin(built):
    catalog, store, written = built
    assert set(written) == {layer.id for layer in catalog if not layer.derived}  # derived: their domain writes them
    for layer in catalog:
        if not layer.derived:
            assert store.origin(layer) == ("demo" if layer.demo else "source")


def test_rebuild_after_import_keeps_the_imported_layer(built, tmp_path):
    catalog, store, _ = built
    villages = catalog.get("villages")
    survey = store.read_frame(villages).head(5).copy()
    survey["name"] = [f"测绘村{i}" for i in range(5)]
    survey["demo"] = False
    survey.geometry = survey.geometry.translate(0.001, 0.001)
    survey.to_file(tmp_path / "survey.geojson")
    assert import_layer(store, villages, tmp_path / "survey.geojson") == 5
    assert display_title(store, villages) == villages.title_zh  # imported: no （演示）, let alone twice
    catalog.get("dem").data_path.unlink()

    written = build_layers(catalog, store, plots=2000, progress=False)

    assert written == ["dem"]
    kept = store.read_frame(villages)
    assert sorted(kept["name"]) == [f"测绘村{i}" for i in range(5)] and store.origin(villages) == "imported"
    assert shapely.equals(kept.geometry.values, gpd.read_file(tmp_path / "survey.geojson").geometry.values).all()

    regenerated = build_layers(catalog, store, plots=2000, regenerate_demo=True, progress=False)
    assert "villages" not in regenerated and "plots" in regenerated
    assert "counties" not in regenerated  # real layers are never regenerated
    assert len(store.read_frame(villages)) == 5
    assert display_title(store, catalog.get("plots")) == catalog.get("plots").title_zh + "（演示）"


def test_build_layers_cli_asks_before_regenerating(tmp_path):
    import subprocess
    import sys

    env = {"GIS_LAYERS_DIR": str(tmp_path / "nothing"), "PATH": "/usr/bin:/bin"}
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "groups.toml").write_text("", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "gis_service.cli", "build-layers", "--regenerate-demo"],
                          input="n\n", capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120)
    assert done.returncode == 0 and "已取消" in done.stdout


def test_an_import_republishes_the_zones_derived_from_it(built, tmp_path):
    import os
    import subprocess
    import sys

    catalog, store, _ = built
    channels = store.read_frame(catalog.get("canal_channels"))
    assert "赵王新河" in set(channels["name"])
    channels[channels["name"] != "赵王新河"].to_file(tmp_path / "channels.geojson")
    env = dict(os.environ, GIS_LAYERS_DIR=str(catalog.root), GIS_VAR_DIR=str(tmp_path / "var"))
    done = subprocess.run([sys.executable, "-m", "gis_service.cli", "import", "canal_channels",
                           str(tmp_path / "channels.geojson")], env=env, capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    zones = store.read_frame(catalog.get("canal_zones"))
    assert store.origin(catalog.get("canal_zones")) == "derived"
    assert set(zones["river"]) == {"北运河", "大清河"}
