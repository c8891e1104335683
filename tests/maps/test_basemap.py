"""The offline base map comes from layer definitions (basemap = true), and the township seats it labels are
the ones the demo villages were generated around."""

import numpy as np
import pytest

from gis_service.catalog import load_definition
from gis_service.crs import METRIC_CRS
from gis_service.errors import DefinitionError
from gis_service.maps.factory import MapFactory
from gis_service.config import Settings

TOWNSHIP_CSV_ROWS = 123


def test_base_map_is_every_layer_marked_basemap_in_its_order(catalog, store):
    base = MapFactory(catalog, store, Settings()).base_layers()
    assert [layer.id for layer in base] == ["counties", "rivers", "railways", "hsr_lines", "townships", "hsr_stations"]
    assert all(layer.access == "public" for layer in base)
    assert catalog.get("counties").label_min_zoom == 0 and catalog.get("townships").label_min_zoom > 9


@pytest.mark.parametrize("extra, key", [
    ('basemap = "yes"\n', "basemap"),
    ('basemap = true\nbasemap_order = 1.5\n', "basemap_order"),
    ('label_min_zoom = 25\n', "label_min_zoom"),
])
def test_wrong_basemap_keys_name_file_and_key(tmp_path, catalog, extra, key):
    text = catalog.get("counties").path.read_text(encoding="utf-8")
    text = "\n".join(line for line in text.splitlines() if not line.startswith(("basemap", "label_min_zoom")))
    (tmp_path / "admin").mkdir()
    path = tmp_path / "admin" / "counties.toml"
    path.write_text(extra + text, encoding="utf-8")
    with pytest.raises(DefinitionError) as err:
        load_definition(path)
    assert err.value.key == key


def test_only_public_layers_can_be_base_map(tmp_path, catalog):
    text = catalog.get("risk_sources").path.read_text(encoding="utf-8")
    (tmp_path / "risk_zones").mkdir()
    path = tmp_path / "risk_zones" / "risk_sources.toml"
    path.write_text("basemap = true\n" + text, encoding="utf-8")
    with pytest.raises(DefinitionError) as err:
        load_definition(path)
    assert err.value.key == "basemap"


def test_townships_are_the_seats_the_villages_were_placed_around(catalog, store):
    townships = store.read_frame(catalog.get("townships")).to_crs(METRIC_CRS).set_index("code")
    assert len(townships) == TOWNSHIP_CSV_ROWS and townships["demo"].all()
    villages = store.read_frame(catalog.get("villages")).to_crs(METRIC_CRS)
    # Generated positions only (Amap points are where Amap puts them), by their township's code in the 2023 table.
    placed = villages[villages["position_source"] == "generated"].dropna(subset=["township_code_2023"])
    groups = placed.assign(x=placed.geometry.x, y=placed.geometry.y).groupby("township_code_2023")
    centre = groups[["x", "y"]].median()
    seats = townships.geometry.reindex(centre.index)
    off = np.hypot(centre["x"] - seats.x, centre["y"] - seats.y)
    # Villages scatter with σ = position_uncertainty_m (≤ 5 km) around their seat, kept inside the county: a
    # township's median lies within 5 km of its seat (the county edge pulls it inwards), or, for a township of
    # few villages, within the sampling noise of a median of n (4.5 × 1.25·σ/√n); unrelated points would be as
    # far as the next township (≈5 km) for every township.
    noise = 4.5 * 1.2533 * groups["position_uncertainty_m"].max() / np.sqrt(groups.size())
    assert np.median(off) < 2500 and (off < np.maximum(5000, noise)).all()
    same = villages[villages["township_code"].isin(townships.index)]  # same code in 2016 and 2023
    names = dict(zip(same["township_code"], same["township"]))
    assert all(townships.loc[code, "name"] == name for code, name in names.items())
