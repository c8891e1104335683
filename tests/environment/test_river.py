"""The river trace on a synthetic river of known length and speed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely

from gis_service.environment import river


def _river():
    # 30 km: 10 km east, then 20 km north (flow follows the line's direction)
    return shapely.LineString([(0, 0), (10_000, 0), (10_000, 20_000)])


def test_the_front_travels_velocity_times_time_along_the_line():
    t = river.trace(_river(), "试验河", shapely.Point(2_000, 300), 0.5, 6.0)  # 0.5 m/s × 6 h = 10.8 km
    assert t.start_m == pytest.approx(2_000) and t.offset_m == pytest.approx(300)
    assert t.end_m == pytest.approx(12_800) and t.reach.length == pytest.approx(10_800)
    assert not t.leaves_line
    end = shapely.Point(t.reach.coords[-1])
    assert end.distance(shapely.Point(10_000, 2_800)) < 1e-6  # 8 km to the bend, then 2.8 km north


def test_arrival_times_along_the_reach():
    t = river.trace(_river(), "试验河", shapely.Point(2_000, 0), 0.5, 6.0)
    chain = np.array([2_000.0, 5_600.0, 12_800.0, 12_801.0, 1_000.0])
    hours = t.arrival_h(chain)
    assert hours[:3] == pytest.approx([0.0, 2.0, 6.0])
    assert math.isnan(hours[3]) and math.isnan(hours[4])  # beyond the front, upstream of the spill


def test_the_front_stops_at_the_end_of_the_data_and_says_so():
    t = river.trace(_river(), "试验河", shapely.Point(25_000 - 15_000, 15_000), 1.0, 10.0)
    assert t.leaves_line and t.end_m == pytest.approx(30_000)
    assert t.exit_point.equals(shapely.Point(10_000, 20_000))


def test_parts_are_chained_downstream_across_small_gaps():
    import geopandas as gpd
    frame = gpd.GeoDataFrame({"name": ["甲河", "甲河", "乙河"]}, geometry=[
        shapely.LineString([(0, 0), (1000, 0)]), shapely.LineString([(2000, 0), (3000, 0)]),
        shapely.LineString([(3000, 0), (3000, 5000)])], crs="EPSG:4548")
    parts = river.river_lines(frame)
    chained = dict((p.coords[0], (n, c)) for (_, p), (n, c) in zip(parts, river.chains(parts, 1500)))
    name, line = chained[(0.0, 0.0)]
    assert name == "甲河→乙河" and line.length == pytest.approx(1000 + 1000 + 1000 + 5000)
    assert river.chains(parts, 500)[[p.coords[0] for _, p in parts].index((0.0, 0.0))][1].length == pytest.approx(1000)
