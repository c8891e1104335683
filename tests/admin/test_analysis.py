"""The admin example domain's analysis, without HTTP: hand-made geometry with known answers."""

import geopandas as gpd
import pytest
import shapely

from gis_service.admin.analysis import where

METRIC = "EPSG:4548"


@pytest.fixture()
def world():
    # Two 10 km square counties side by side (x 500–510 km and 510–520 km), villages at known places.
    counties = gpd.GeoDataFrame({"name": ["甲县", "乙县"], "adcode": [131001, 131002]},
                                geometry=[shapely.box(500_000, 4_300_000, 510_000, 4_310_000),
                                          shapely.box(510_000, 4_300_000, 520_000, 4_310_000)], crs=METRIC)
    villages = gpd.GeoDataFrame({
        "name": ["东村", "西村", "远村"], "code": ["131002001201", "131001001201", "131001002201"],
        "township": ["乙镇", "甲镇", "丙镇"], "township_code": ["131002001", "131001001", "131001002"],
        "county": ["乙县", "甲县", "甲县"], "county_adcode": [131002, 131001, 131001], "demo": [False] * 3},
        geometry=[shapely.Point(510_300, 4_305_000), shapely.Point(509_000, 4_305_000),
                  shapely.Point(501_000, 4_301_000)], crs=METRIC)
    return counties, villages


def test_point_names_its_county_nearest_village_and_township_of_same_county(world):
    counties, villages = world
    place = where(shapely.Point(509_900, 4_305_000), counties, villages, 5000)
    assert place.county == {"name": "甲县", "adcode": 131001}
    # 东村 (400 m, across the county line) is nearer than 西村 (900 m) ...
    assert place.nearest_village["name"] == "东村" and place.nearest_village["distance_m"] == pytest.approx(400)
    # ... but the township comes from the nearest village of the point's own county.
    assert place.township["name"] == "甲镇" and place.township["method"] == "nearest_village"


def test_village_beyond_the_limit_is_not_reported(world):
    counties, villages = world
    point = shapely.Point(505_000, 4_309_000)
    nearest = min(shapely.distance(villages.geometry.values, point))
    assert where(point, counties, villages, nearest + 1).nearest_village is not None
    place = where(point, counties, villages, nearest - 1)
    assert place.nearest_village is None and place.township is None
    assert any("米内没有村庄" in c for c in place.caveats)


def test_point_outside_every_county(world):
    counties, villages = world
    place = where(shapely.Point(530_000, 4_305_000), counties, villages, 5000)
    assert place.county is None and place.township is None
    assert any("不在廊坊市" in c for c in place.caveats)


def test_frames_in_degrees_are_refused(world):
    counties, villages = world
    with pytest.raises(ValueError, match="EPSG:4548"):
        where(shapely.Point(116.7, 39.5), counties.to_crs("EPSG:4490"), villages, 5000)
