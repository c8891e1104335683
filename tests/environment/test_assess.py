"""The assessor on hand-made data (no HTTP): zones per kind, receptors with distance, bearing, concentration or
arrival time, model facts (people, cross-boundary, water source) feeding the provisional grade, staff facts
overriding them, and source terms refused with the field named."""

from __future__ import annotations

import math

import geopandas as gpd
import pytest
import shapely

from gis_service.crs import METRIC_CRS, STORAGE_CRS, transform_geometry
from gis_service.environment.assess import Assessor
from gis_service.environment.exposure import Exposure
from gis_service.environment.grading import Grader
from gis_service.errors import GisError
from gis_service.rules import RuleBook

CRS = "EPSG:4548"
RULES = RuleBook.load().domain("environment")


def _assessor():
    residential = gpd.GeoDataFrame({"name": ["东苑"], "population": [20000]},
                                   geometry=[shapely.box(1000, -200, 1400, 200)], crs=CRS)
    receptors = gpd.GeoDataFrame({"name": ["东小学", "西医院"], "kind": ["学校", "医院"], "capacity": [800, 100],
                                  "capacity_unit": ["学生（人）", "床位（张）"]},
                                 geometry=[shapely.Point(1200, 0), shapely.Point(-1200, 0)], crs=CRS)
    water = gpd.GeoDataFrame({"name": ["河边水源"], "tier": ["县级"]}, geometry=[shapely.Point(6000, 300)], crs=CRS)
    counties = gpd.GeoDataFrame({"name": ["安次区"]}, geometry=[shapely.box(-50_000, -50_000, 50_000, 50_000)], crs=CRS)
    neighbours = gpd.GeoDataFrame({"name": ["武清区"], "city": ["天津市"], "province": ["天津市"]},
                                  geometry=[shapely.box(50_000, -50_000, 90_000, 50_000)], crs=CRS)
    ex = Exposure(residential, receptors, water, counties, neighbours, RULES.value("home_admin"))
    river = [("试验河", shapely.LineString([(0, 100), (60_000, 100)]))]  # flows east, 60 km, into 天津
    return Assessor(ex, river, RULES, Grader(RULES))


WIND_FROM_WEST = {"kind": "air", "release_rate_g_s": 1000, "wind_from_deg": 270, "wind_speed_m_s": 3,
                  "stability": "D", "levels_of_concern_mg_m3": [10]}


def test_air_zones_list_the_receptor_downwind_with_its_concentration():
    a = _assessor()
    r = a.assess(shapely.Point(0, 0), a.source_terms(WIND_FROM_WEST))
    plume = r["zones"][1]
    assert [x["name"] for x in plume["receptors"]] == ["东小学"]  # the hospital lies upwind
    school = plume["receptors"][0]
    assert school["distance_m"] == 1200.0 and school["bearing_deg"] == 90.0
    sy = 0.08 * 1200 / math.sqrt(1 + 0.0001 * 1200)
    sz = 0.06 * 1200 / math.sqrt(1 + 0.0015 * 1200)
    assert school["concentration_mg_m3"] == pytest.approx(1000 / (math.pi * 3 * sy * sz) * 1000, rel=1e-3)
    assert plume["receptor_counts"] == {"schools": 1, "hospitals": 0, "elderly_homes": 0}
    # the residential block 1000–1400 m downwind: people counted by the share of its area inside the plume
    zone_m = transform_geometry(shapely.geometry.shape(plume["geometry"]), STORAGE_CRS, METRIC_CRS)  # answered in lon/lat
    block = shapely.box(1000, -200, 1400, 200)
    expected = 20000 * block.intersection(zone_m).area / block.area
    assert 0 < expected < 20000 and plume["population"] == pytest.approx(expected, rel=1e-3, abs=1)


def test_model_facts_enter_the_provisional_grade_and_staff_facts_override_them():
    a = _assessor()
    terms = a.source_terms({**WIND_FROM_WEST, "levels_of_concern_mg_m3": [0.5]})
    r = a.assess(shapely.Point(0, 0), terms)
    assert r["derived_facts"]["evacuated"] >= 10000 and r["grading"]["grade"] == "重大"
    r2 = a.assess(shapely.Point(0, 0), a.source_terms({**WIND_FROM_WEST, "levels_of_concern_mg_m3": [0.5],
                                                      "facts": {"evacuated": 300}}))
    assert r2["facts_used"]["evacuated"] == 300 and r2["grading"]["grade"] == "一般"
    assert r2["grading"]["triggered"][0]["source"] == "staff"


def test_a_river_spill_reaching_the_neighbour_is_cross_provincial_and_threatens_the_water_source():
    a = _assessor()
    r = a.assess(shapely.Point(2000, 0), a.source_terms({"kind": "water", "hours": 48, "velocity_m_s": 0.5}))
    zone = r["zones"][0]
    assert zone["length_m"] == pytest.approx(58_000)  # to the end of the 60 km line
    assert r["model"]["leaves_data"] and r["admin"]["cross_boundary"] == "province"
    w = zone["water_sources"][0]
    assert w["arrival_h"] == pytest.approx((6000 - 2000) / 0.5 / 3600, abs=0.01)
    assert r["derived_facts"]["water_source_interrupted"] == "county"
    assert r["grading"]["grade"] == "重大"
    assert any(n["to"] == "天津市生态环境局" for n in r["notify"])


def test_the_default_velocity_is_the_rivers_setting():
    a = _assessor()
    r = a.assess(shapely.Point(2000, 0), a.source_terms({"kind": "water", "hours": 1}))
    assert r["model"]["velocity_m_s"] == RULES.value("river_velocity_m_s")["default"]
    assert r["zones"][0]["length_m"] == pytest.approx(3600 * RULES.value("river_velocity_m_s")["default"])


@pytest.mark.parametrize("body, field", [
    ({"kind": "air"}, "release_rate_g_s"),
    ({**WIND_FROM_WEST, "wind_speed_m_s": 0}, "wind_speed_m_s"),
    ({**WIND_FROM_WEST, "stability": None}, "stability"),
    ({**WIND_FROM_WEST, "levels_of_concern_mg_m3": []}, "levels_of_concern_mg_m3"),
    ({**WIND_FROM_WEST, "levels_of_concern_mg_m3": [1, -1]}, "levels_of_concern_mg_m3[1]"),
    ({"kind": "water", "hours": 1, "river": "黄河"}, "river"),
    ({"kind": "soil"}, "radius_m"), ({"kind": "soil", "radius_m": 1e9}, "radius_m"),
])
def test_bad_source_terms_name_the_field(body, field):
    with pytest.raises(GisError) as info:
        _assessor().source_terms(body)
    assert info.value.status == 422 and f"'{field}'" in info.value.message_en


def test_stability_derived_from_day_or_night():
    a = _assessor()
    terms = a.source_terms({**WIND_FROM_WEST, "stability": None, "daytime": False, "wind_speed_m_s": 1.5})
    assert terms["stability"] == "F" and "夜间" in terms["stability_basis"]


def test_the_wind_and_the_bearings_are_read_from_true_north_not_the_grid_north_of_epsg_4548():
    """At 116.1°E the EPSG:4548 grid (central meridian 117°E) is turned by the meridian convergence
    (0.9° × sin 39.3° ≈ 0.57°): a wind from true south must carry the plume to true north, and a school due
    true north of the spill has bearing 0°, not −0.57° (at 20 km the grid axis is ≈ 200 m off)."""
    from gis_service.crs import transform_xy

    lon0, lat0 = 116.1, 39.3
    x0, y0 = (float(v[0]) for v in transform_xy([lon0], [lat0], STORAGE_CRS, METRIC_CRS))
    xn, yn = (float(v[0]) for v in transform_xy([lon0], [lat0 + 0.09], STORAGE_CRS, METRIC_CRS))  # 10 km true north
    receptors = gpd.GeoDataFrame({"name": ["北小学"], "kind": ["学校"]}, geometry=[shapely.Point(xn, yn)], crs=CRS)
    empty = gpd.GeoDataFrame({"name": [], "population": [], "tier": [], "city": [], "province": []}, geometry=[], crs=CRS)
    ex = Exposure(empty, receptors, empty, empty, empty, RULES.value("home_admin"))
    a = Assessor(ex, [], RULES, Grader(RULES))
    r = a.assess(shapely.Point(x0, y0), a.source_terms({**WIND_FROM_WEST, "wind_from_deg": 180, "stability": "F",
                                                           "release_rate_g_s": 5000, "levels_of_concern_mg_m3": [1]}))
    plume = r["zones"][1]
    c = shapely.geometry.shape(plume["geometry"]).centroid  # on the plume's axis
    east, north = (c.x - lon0) * 111_320 * math.cos(math.radians(lat0)), (c.y - lat0) * 110_950
    assert north > 5_000 and abs(math.degrees(math.atan2(east, north))) < 0.1  # the grid axis: −0.57°
    school = plume["receptors"][0]
    assert school["name"] == "北小学" and min(school["bearing_deg"], 360 - school["bearing_deg"]) < 0.05
