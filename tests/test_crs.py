"""Coordinates: known points in every supported system, GCJ-02 inversion, refusal messages."""

import json
import math

import numpy as np
import pytest
from pyproj import Geod

from gis_service import crs
from gis_service.config import REPO_ROOT
from gis_service.errors import GisError

LANGFANG_STATION = (116.7, 39.5)  # CMA station 54515 廊坊


def test_gcj02_inverse_matches_the_published_wgs84_boundaries_within_1m():
    """Independent reference: the counties file converted upstream (PROVENANCE: residual < 1 m, 6 decimals)."""
    gcj = json.loads((REPO_ROOT / "layers/admin/langfang_counties_gcj02.geojson").read_text())
    wgs = json.loads((REPO_ROOT / "layers/admin/langfang_counties_wgs84.geojson").read_text())
    g = np.array(gcj["features"][3]["geometry"]["coordinates"][0][0])
    w = np.array(wgs["features"][3]["geometry"]["coordinates"][0][0])
    lon, lat = crs.gcj02_to_wgs84(g[:, 0], g[:, 1])
    _, _, dist = Geod(ellps="WGS84").inv(lon, lat, w[:, 0], w[:, 1])
    assert dist.max() < 1.0


def test_gcj02_offset_in_langfang_is_about_530m_and_round_trip_is_sub_metre():
    glon, glat = crs.wgs84_to_gcj02(*LANGFANG_STATION)
    _, _, offset = Geod(ellps="WGS84").inv(LANGFANG_STATION[0], LANGFANG_STATION[1], glon, glat)
    assert 480 < offset < 600  # field notes: 527–579 m across the city
    lon, lat = crs.gcj02_to_wgs84(glon, glat)
    _, _, back = Geod(ellps="WGS84").inv(LANGFANG_STATION[0], LANGFANG_STATION[1], lon, lat)
    assert back < 0.01


def test_gauss_kruger_zone_prefix_is_exactly_39_000_000_and_cm_117_has_false_easting():
    e48, n48 = crs.from_storage_xy(*LANGFANG_STATION, "epsg:4548")
    e27, n27 = crs.from_storage_xy(*LANGFANG_STATION, "epsg:4527")
    assert e27[0] - e48[0] == pytest.approx(39_000_000, abs=1e-6)
    assert n27[0] == pytest.approx(n48[0], abs=1e-6)
    e, _ = crs.from_storage_xy(117.0, 39.5, "epsg:4548")
    assert e[0] == pytest.approx(500_000, abs=1e-6)
    # Along the central meridian, northing differences are meridian arc lengths (geodesic as second method).
    _, n1 = crs.from_storage_xy(117.0, 39.0, "epsg:4548")
    _, n2 = crs.from_storage_xy(117.0, 39.5, "epsg:4548")
    _, _, arc = Geod(ellps="GRS80").inv(117.0, 39.0, 117.0, 39.5)
    assert n2[0] - n1[0] == pytest.approx(arc, abs=0.01)


def test_web_mercator_by_hand():
    x, y = crs.from_storage_xy(*LANGFANG_STATION, "epsg:3857")
    r = 6378137.0
    assert x[0] == pytest.approx(r * math.radians(116.7), abs=0.01)
    assert y[0] == pytest.approx(r * math.log(math.tan(math.pi / 4 + math.radians(39.5) / 2)), abs=0.01)


@pytest.mark.parametrize("system", ["wgs84", "cgcs2000", "gcj02", "epsg:4548", "epsg:4527", "epsg:3857"])
def test_every_system_round_trips_the_station(system):
    x, y = crs.from_storage_xy(*LANGFANG_STATION, system)
    lon, lat = crs.to_storage_xy(x, y, system)
    assert lon[0] == pytest.approx(116.7, abs=1e-8) and lat[0] == pytest.approx(39.5, abs=1e-8)


@pytest.mark.parametrize("x, y, system, phrase", [
    (39.5, 116.7, "wgs84", "axes swapped"),
    (4373000.0, 474000.0, "epsg:4548", "axes swapped"),
    (474000.0, 4373000.0, "wgs84", "projected metres sent as degrees"),
    (39474000.0, 4373000.0, "epsg:4548", "zone prefix 39"),
    (474000.0, 4373000.0, "epsg:4527", "lacks the Gauss-Kruger zone prefix"),
    (116.7, 39.5, "epsg:4548", "degrees sent as projected"),
    (121.47, 31.23, "wgs84", "outside Langfang"),
])
def test_out_of_area_input_is_refused_with_the_likely_mistake(x, y, system, phrase):
    with pytest.raises(GisError) as err:
        crs.to_storage_xy(x, y, system)
    assert err.value.status == 422
    assert phrase in err.value.message_en
    assert "廊坊" in err.value.message_zh


def test_margin_is_20km_measured_in_metres():
    west = crs.LANGFANG_BBOX[0]
    lat = 39.0
    km = 1 / (111.32 * math.cos(math.radians(lat)))  # degrees of longitude per km, by hand
    crs.to_storage_xy(west - 15 * km, lat)  # 15 km out: accepted
    with pytest.raises(GisError):
        crs.to_storage_xy(west - 30 * km, lat)


def test_ogc_crs_axis_order_follows_the_authority():
    table = crs.ogc_crs_table()
    assert not table[crs.CRS84_URI].swap_axes
    for code in (4490, 4548, 4527):
        assert table[f"http://www.opengis.net/def/crs/EPSG/0/{code}"].swap_axes
    with pytest.raises(GisError):
        crs.parse_ogc_crs("http://www.opengis.net/def/crs/EPSG/0/4326")


def test_an_unknown_coord_sys_is_not_echoed_in_full():
    with pytest.raises(GisError) as err:
        crs.parse_coord_sys("x" * 100_000)
    assert err.value.status == 422 and len(err.value.message) < 400
