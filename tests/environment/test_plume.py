"""The Gaussian plume against the analytic formula written here from the literature (Briggs 1973 open-country
σ curves as tabulated in Hanna, Briggs & Hosker 1982, table 4.5), and its expected monotonic behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely

from gis_service.environment import plume
from gis_service.rules import RuleBook

RULES = RuleBook.load().domain("environment")
SIGMA = RULES.value("pg_sigma_rural")

# Briggs rural, written out by hand (not read from the rule file): σy, σz as functions of x (m).
BRIGGS = {
    "A": (lambda x: 0.22 * x / math.sqrt(1 + 0.0001 * x), lambda x: 0.20 * x),
    "B": (lambda x: 0.16 * x / math.sqrt(1 + 0.0001 * x), lambda x: 0.12 * x),
    "C": (lambda x: 0.11 * x / math.sqrt(1 + 0.0001 * x), lambda x: 0.08 * x / math.sqrt(1 + 0.0002 * x)),
    "D": (lambda x: 0.08 * x / math.sqrt(1 + 0.0001 * x), lambda x: 0.06 * x / math.sqrt(1 + 0.0015 * x)),
    "E": (lambda x: 0.06 * x / math.sqrt(1 + 0.0001 * x), lambda x: 0.03 * x / (1 + 0.0003 * x)),
    "F": (lambda x: 0.04 * x / math.sqrt(1 + 0.0001 * x), lambda x: 0.016 * x / (1 + 0.0003 * x)),
}


def analytic_mg_m3(q_g_s, u, stab, x, y):
    """Ground-level concentration of a ground-level continuous point source with ground reflection."""
    sy, sz = BRIGGS[stab][0](x), BRIGGS[stab][1](x)
    return q_g_s / (math.pi * u * sy * sz) * math.exp(-y * y / (2 * sy * sy)) * 1000.0


def make(stab="D", q=1000.0, u=3.0, wind_from=270.0):
    return plume.Plume(q, u, wind_from, tuple(SIGMA[stab]["y"]), tuple(SIGMA[stab]["z"]), 0.0, stab)


@pytest.mark.parametrize("stab", list("ABCDEF"))
@pytest.mark.parametrize("x, y", [(100.0, 0.0), (500.0, 20.0), (2000.0, -150.0), (8000.0, 400.0)])
def test_concentration_matches_the_analytic_formula(stab, x, y):
    p = make(stab, wind_from=270.0)  # wind from the west: downwind is east (+x), crosswind right is south (−y)
    got = p.concentration((0.0, 0.0), np.array([[x, -y]]))[0]
    assert got == pytest.approx(analytic_mg_m3(1000.0, 3.0, stab, x, y), rel=1e-9)


@pytest.mark.parametrize("stab", list("BDF"))
def test_the_footprint_outline_is_the_level_of_concern_isoline(stab):
    p, level = make(stab), 10.0
    fp = p.footprint((0.0, 0.0), level, 50_000.0, 120)
    assert not fp.truncated
    # centre-line end: the analytic centre-line concentration at the reach equals the level
    assert analytic_mg_m3(1000.0, 3.0, stab, fp.length_m, 0.0) == pytest.approx(level, rel=1e-6)
    # points on the outline (|y| = half width at sampled x) are at the level; just inside above, outside below
    xs = np.geomspace(fp.length_m / 50, fp.length_m * 0.95, 7)
    for x in xs:
        sy = BRIGGS[stab][0](x)
        c0 = analytic_mg_m3(1000.0, 3.0, stab, x, 0.0)
        half = sy * math.sqrt(2 * math.log(c0 / level))
        assert analytic_mg_m3(1000.0, 3.0, stab, x, half) == pytest.approx(level, rel=1e-9)
        assert fp.geometry.contains(shapely.Point(x, 0.97 * half))  # wind from west: the plume lies along +x
        assert not fp.geometry.contains(shapely.Point(x, 1.03 * half + 0.5))


def test_more_stable_air_gives_a_longer_footprint():
    lengths = [make(s).footprint((0, 0), 10.0, 200_000.0, 120).length_m for s in "ABCDEF"]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]


def test_a_higher_level_of_concern_gives_a_smaller_zone():
    p = make("D")
    zones = [p.footprint((0, 0), level, 50_000.0, 120).geometry for level in (1.0, 10.0, 100.0)]
    assert zones[0].area > zones[1].area > zones[2].area
    assert zones[0].buffer(1.0).contains(zones[1]) and zones[1].buffer(1.0).contains(zones[2])


@pytest.mark.parametrize("wind_from, towards", [(0.0, (0, -1)), (90.0, (-1, 0)), (180.0, (0, 1)), (270.0, (1, 0)),
                                                (45.0, (-1, -1))])
def test_the_zone_lies_downwind_and_rotates_with_the_wind(wind_from, towards):
    fp = make("D", wind_from=wind_from).footprint((1000.0, 2000.0), 10.0, 50_000.0, 120)
    c = fp.geometry.centroid
    d = np.array([c.x - 1000.0, c.y - 2000.0])
    t = np.array(towards, dtype=float) / np.linalg.norm(towards)
    assert float(d @ t) / np.linalg.norm(d) > 0.999  # the centroid lies on the downwind axis
    # same shape whatever the direction
    base = make("D", wind_from=270.0).footprint((0, 0), 10.0, 50_000.0, 120).geometry
    assert fp.geometry.area == pytest.approx(base.area, rel=1e-9)


def test_a_stronger_release_reaches_further_and_a_faster_wind_dilutes():
    weak, strong = make("D", q=100.0), make("D", q=10_000.0)
    assert strong.footprint((0, 0), 10.0, 50_000.0, 120).length_m > weak.footprint((0, 0), 10.0, 50_000.0, 120).length_m
    assert make("D", u=6.0).footprint((0, 0), 10.0, 50_000.0, 120).length_m < make("D", u=2.0).footprint(
        (0, 0), 10.0, 50_000.0, 120).length_m


def test_a_level_exceeded_beyond_the_cap_is_truncated():
    fp = make("F", q=100_000.0).footprint((0, 0), 0.01, 5000.0, 120)
    assert fp.truncated and fp.length_m == 5000.0


def test_stability_from_wind_speed_and_day_or_night():
    table = RULES.value("stability_from_wind")
    assert plume.stability_class(None, 1.0, False, table)[0] == "F"
    assert plume.stability_class(None, 4.0, True, table)[0] == "C"
    assert plume.stability_class(None, 7.0, True, table)[0] == "D"
    assert plume.stability_class("A", 7.0, None, table)[0] == "A"
    with pytest.raises(Exception) as info:
        plume.stability_class("G", 3.0, None, table)
    assert "stability" in str(info.value)
