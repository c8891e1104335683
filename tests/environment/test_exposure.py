"""Who lies inside a zone: area-weighted population on hand geometry (not centroid capture), receptors, and the
counties, cities and provinces a zone touches."""

from __future__ import annotations

import geopandas as gpd
import pytest
import shapely

from gis_service.environment.exposure import Exposure, bearing_deg

CRS = "EPSG:4548"
HOME = {"city": "廊坊市", "province": "河北省"}


def _exposure():
    residential = gpd.GeoDataFrame({"name": ["甲小区", "乙小区", "丙小区"], "population": [1000, 400, 300]}, geometry=[
        shapely.box(0, 0, 100, 100),  # half inside the zone below
        shapely.box(200, 0, 300, 100),  # a quarter of its area inside the zone below
        shapely.box(1000, 1000, 1100, 1100)], crs=CRS)  # outside
    receptors = gpd.GeoDataFrame({"name": ["一小", "医院"], "kind": ["学校", "医院"], "capacity": [500, 80],
                                  "capacity_unit": ["学生（人）", "床位（张）"]},
                                 geometry=[shapely.Point(10, 10), shapely.Point(5000, 5000)], crs=CRS)
    water = gpd.GeoDataFrame({"name": ["水源"], "tier": ["县级"]}, geometry=[shapely.Point(60, 60)], crs=CRS)
    counties = gpd.GeoDataFrame({"name": ["安次区", "广阳区"]}, geometry=[
        shapely.box(-10_000, -10_000, 10_000, 10_000), shapely.box(10_000, -10_000, 30_000, 10_000)], crs=CRS)
    neighbours = gpd.GeoDataFrame({"name": ["大兴区", "武清区"], "city": ["北京市", "天津市"], "province": ["北京市", "天津市"]},
                                  geometry=[shapely.box(-10_000, 10_000, 10_000, 30_000),
                                            shapely.box(30_000, -10_000, 50_000, 10_000)], crs=CRS)
    return Exposure(residential, receptors, water, counties, neighbours, HOME)


def test_population_is_area_weighted_not_centroid_captured():
    ex = _exposure()
    zone = shapely.box(50, -50, 225, 150)  # 甲: x 50–100 = 50 % → 500; 乙: x 200–225 = 25 % → 100
    people, rows = ex.people(zone)
    assert people == pytest.approx(600.0)
    assert [(r["name"], r["people"]) for r in rows] == [("甲小区", 500.0), ("乙小区", 100.0)]
    centroid_capture = 1000  # only 甲's centroid (50, 50) lies inside: centroid capture would say 1000
    assert people != centroid_capture


def test_receptors_and_water_sources_inside():
    ex = _exposure()
    inside = ex.inside(shapely.box(0, 0, 100, 100))
    assert list(ex.receptors["name"].iloc[inside.receptors]) == ["一小"]
    assert list(ex.water["tier"].iloc[inside.water_sources]) == ["县级"]


@pytest.mark.parametrize("zone, fact, provinces", [
    (shapely.box(0, 0, 100, 100), None, ["河北省"]),
    (shapely.box(5_000, 0, 15_000, 100), "county", ["河北省"]),
    (shapely.box(0, 5_000, 100, 15_000), "province", ["河北省", "北京市"]),
    (shapely.box(25_000, 0, 35_000, 100), "province", ["河北省", "天津市"]),
    (shapely.box(35_000, 0, 45_000, 100), None, ["天津市"]),  # wholly inside 武清: one county, one province
])
def test_cross_boundary_fact_from_the_neighbour_layer(zone, fact, provinces):
    admin = _exposure().admin(zone, shapely.Point(zone.bounds[0] + 1, zone.bounds[1] + 1))
    assert admin["cross_boundary"] == fact and admin["provinces"] == provinces


def test_bearings_clockwise_from_north():
    assert list(bearing_deg((0, 0), [[0, 10], [10, 0], [0, -10], [-10, 0]])) == [0.0, 90.0, 180.0, 270.0]
