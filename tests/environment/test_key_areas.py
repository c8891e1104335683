"""Key risk areas on hand geometry: hazard from the rings covering a cell, exposure from people (area-weighted),
receptors, water sources and the red line, risk = H × (1 + E), classes at the rule's thresholds (以上 included)."""

from __future__ import annotations

import geopandas as gpd
import pytest
import shapely

from gis_service.environment.key_areas import key_areas

CRS = "EPSG:4548"
METHOD = {"cell_m": 1000.0, "class_weights": {"重大": 3.0, "一般": 1.0}, "type_weights": {"化工": 2.0, "default": 1.0},
          "people_per_point": 1000.0, "receptor_weights": {"学校": 2.0}, "water_weights": {"市级": 5.0},
          "eco_redline_weight": 2.0, "high": 8.0, "medium": 4.0}
RADII = {"重大": [500, 1500], "一般": [500]}


def _empty(columns):
    return gpd.GeoDataFrame({c: [] for c in columns}, geometry=[], crs=CRS)


def test_index_and_classes_on_a_3_by_1_km_strip():
    area = shapely.box(0, 0, 3000, 1000)
    sources = gpd.GeoDataFrame({"hazard_class": ["重大", "一般"], "type": ["化工", "其他"]},
                               geometry=[shapely.Point(500, 500), shapely.Point(2500, 500)], crs=CRS)
    # 重大 化工 at the centre of cell 0: reaches cell centres within 1500 m → cells 0 and 1 (1000 m), not 2 (2000 m)
    # 一般 at the centre of cell 2: reaches only cell 2's centre
    residential = gpd.GeoDataFrame({"name": ["甲"], "population": [2000]},
                                   geometry=[shapely.box(900, 0, 1100, 1000)], crs=CRS)  # half in cell 0, half in 1
    receptors = gpd.GeoDataFrame({"kind": ["学校"]}, geometry=[shapely.Point(1500, 500)], crs=CRS)
    water = gpd.GeoDataFrame({"tier": ["市级"]}, geometry=[shapely.Point(2500, 200)], crs=CRS)
    eco = gpd.GeoDataFrame({"name": ["红线"]}, geometry=[shapely.box(2000, 0, 2500, 1000)], crs=CRS)  # half of cell 2
    f = key_areas(area, sources, residential, receptors, water, eco, METHOD, RADII).set_index("cell")
    # cell 0: H = 3×2 = 6, E = 1000/1000 = 1 → R = 12 (高); cell 1: H = 6, E = 1 + 2 = 3 → 24 (高)
    # cell 2: H = 1, E = 5 + 2×0.5 = 6 → R = 7 (中)
    assert f.loc["0_0", "risk_index"] == pytest.approx(12.0) and f.loc["0_0", "risk_class"] == "高"
    assert f.loc["1_0", "risk_index"] == pytest.approx(24.0) and f.loc["1_0", "population"] == 1000
    assert f.loc["2_0", "risk_index"] == pytest.approx(7.0) and f.loc["2_0", "risk_class"] == "中"


@pytest.mark.parametrize("weight, cls", [(4.0, "中"), (3.999, "低"), (8.0, "高"), (7.999, "中")])
def test_class_thresholds_include_the_number(weight, cls):
    area = shapely.box(0, 0, 1000, 1000)
    sources = gpd.GeoDataFrame({"hazard_class": ["一般"], "type": ["t"]}, geometry=[shapely.Point(500, 500)], crs=CRS)
    method = {**METHOD, "type_weights": {"default": weight}}
    f = key_areas(area, sources, _empty(["name", "population"]), _empty(["kind"]), _empty(["tier"]), None, method, RADII)
    assert f["risk_index"].iloc[0] == pytest.approx(weight) and f["risk_class"].iloc[0] == cls


def test_cells_without_hazard_are_not_listed():
    area = shapely.box(0, 0, 5000, 1000)
    sources = gpd.GeoDataFrame({"hazard_class": ["一般"], "type": ["t"]}, geometry=[shapely.Point(500, 500)], crs=CRS)
    f = key_areas(area, sources, _empty(["name", "population"]), _empty(["kind"]), _empty(["tier"]), None, METHOD, RADII)
    assert list(f["cell"]) == ["0_0"]
