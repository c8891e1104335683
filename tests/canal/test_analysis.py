"""The canal analyses without HTTP, on hand-made geometry whose answers are known independently: a straight
channel flowing east (its left bank is north), villages at 999, 1000 and 1001 m, green belts of 90, 100 and
110 m, a polygon straddling a zone edge, a river crossing the city boundary."""

import math

import geopandas as gpd
import numpy as np
import pytest
import shapely

from gis_service.canal import analysis
from gis_service.canal.analysis import PreparedZones, SitingRules, ZoneSpec

METRIC = "EPSG:4548"
X0, Y0 = 500_000.0, 4_350_000.0  # the channel starts here and runs 10 km east


def frame(rows: list[dict], geoms) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(rows, geometry=list(geoms), crs=METRIC)


@pytest.fixture()
def channel():
    return frame([{"name": "北运河"}], [shapely.LineString([(X0, Y0), (X0 + 10_000, Y0)])])


@pytest.fixture()
def city():
    """City and two counties covering the whole channel and 5 km around it."""
    box = shapely.box(X0 - 5_000, Y0 - 5_000, X0 + 15_000, Y0 + 5_000)
    counties = frame([{"name": "西县", "adcode": 1}, {"name": "东县", "adcode": 2}],
                     [shapely.box(X0 - 5_000, Y0 - 5_000, X0 + 5_000, Y0 + 5_000),
                      shapely.box(X0 + 5_000, Y0 - 5_000, X0 + 15_000, Y0 + 5_000)])
    return frame([{"name": "市"}], [box]), counties


def villages(points: dict) -> gpd.GeoDataFrame:
    rows = [{"name": name, "code": f"13102410{i:04d}", "township": "镇", "township_code": "131024100",
             "county": "西县", "position_source": "generated", "position_uncertainty_m": 0.5, "demo": True}
            for i, name in enumerate(points)]
    return frame(rows, [shapely.Point(p) for p in points.values()])


# --- banks ------------------------------------------------------------------------------------------------
def test_left_bank_is_left_of_the_flow_direction():
    east = shapely.LineString([(0, 0), (100, 0)])  # flows east: north is left
    north = shapely.LineString([(0, 0), (0, 100)])  # flows north: west is left, east is right
    pts = [shapely.Point(50, 10), shapely.Point(50, -10)]
    assert list(analysis.bank_names(analysis.side_of(east, pts))) == ["left", "right"]
    assert list(analysis.bank_names(analysis.side_of(north, [shapely.Point(10, 50), shapely.Point(-10, 50)]))) == [
        "right", "left"]
    reversed_ = shapely.LineString([(100, 0), (0, 0)])  # same place, flowing west: the banks swap
    assert list(analysis.bank_names(analysis.side_of(reversed_, pts))) == ["right", "left"]


def test_bank_beyond_the_ends_follows_the_extended_channel():
    line = shapely.LineString([(0, 0), (100, 0), (100, 100)])  # east, then a left turn north
    # beyond the downstream end (north of (100, 100)): west is left
    assert list(analysis.side_of(line, [shapely.Point(90, 150), shapely.Point(110, 150)])) == [1, -1]
    # outer corner (south-east of the bend) lies right of both segments
    assert analysis.side_of(line, [shapely.Point(110, -10)])[0] == -1


# --- villages ---------------------------------------------------------------------------------------------
def test_villages_at_999_and_1000_m_are_listed_and_1001_m_is_not(channel):
    v = villages({"北999": (X0 + 5_000, Y0 + 999), "南1000": (X0 + 5_000, Y0 - 1_000),
                  "南1001": (X0 + 5_000, Y0 - 1_001), "端外": (X0 + 10_000 + 1_500, Y0)})
    base = analysis.baselines(channel, ["北运河"])
    rows = analysis.villages_within(base, v, 1000)  # 1000 m written from L2143, not read from the rule file
    got = dict(zip(rows["name"], zip(rows["bank"], rows["distance_m"])))
    assert got == {"北999": ("left", 999.0), "南1000": ("right", 1000.0)}
    # 0.5 m position uncertainty: the village at the limit could lie beyond it, the one 1 m inside could not
    assert dict(zip(rows["name"], rows["borderline"])) == {"北999": False, "南1000": True}


def test_village_distance_is_to_the_management_boundary_when_there_is_one(channel):
    boundary = frame([{"river": "北运河"}], [shapely.box(X0, Y0 - 60, X0 + 10_000, Y0 + 60)])
    v = villages({"北1050": (X0 + 5_000, Y0 + 1_050), "北1070": (X0 + 5_000, Y0 + 1_070)})
    base = analysis.baselines(channel, ["北运河"], boundary)
    rows = analysis.villages_within(base, v, 1000)
    assert rows["name"].tolist() == ["北1050"] and rows["distance_m"].tolist() == [990.0]
    assert rows["baseline"].tolist() == ["river_boundary"]


# --- zones ------------------------------------------------------------------------------------------------
def band_area(length: float, width: float) -> float:
    """One bank of a straight channel: a rectangle plus two quarter discs (the halves of the round caps)."""
    return length * width + math.pi * width ** 2 / 2


def test_zones_per_bank_and_county_have_the_exact_areas(channel, city):
    city_frame, counties = city
    base = analysis.baselines(channel, ["北运河"])
    zs = analysis.zones(base, [ZoneSpec("village_remediation", 1000, ("北运河",), "canal.x")], city_frame, counties)
    f = zs.frame
    assert sorted(zip(f["bank"], f["county"])) == [("left", "东县"), ("left", "西县"), ("right", "东县"), ("right", "西县")]
    left = f[f["bank"] == "left"]
    assert left["area_m2"].sum() == pytest.approx(band_area(10_000, 1000), rel=1e-3)
    west = left[left["county"] == "西县"].iloc[0]  # x from X0 − 1000 (quarter cap) to X0 + 5000
    assert west["area_m2"] == pytest.approx(5_000 * 1000 + math.pi * 1000 ** 2 / 4, rel=1e-3)
    assert west["area_mu"] == pytest.approx(west["area_m2"] * 15 / 10_000, rel=1e-6)
    assert west["area_km2"] == pytest.approx(west["area_m2"] / 1e6, rel=1e-6)
    north_point = shapely.Point(X0 + 2_000, Y0 + 500)
    assert left.geometry[left["county"] == "西县"].iloc[0].contains(north_point)
    assert zs.clipped == []


def test_river_crossing_the_city_boundary_is_clipped_and_the_cut_reported(channel):
    # The city ends at X0 + 4000: 6 km of the channel and the downstream caps lie in a neighbouring district.
    city = frame([{"name": "市"}], [shapely.box(X0 - 5_000, Y0 - 5_000, X0 + 4_000, Y0 + 5_000)])
    counties = frame([{"name": "西县"}], [shapely.box(X0 - 5_000, Y0 - 5_000, X0 + 4_000, Y0 + 5_000)])
    neighbours = frame([{"name": "武清区", "province": "天津市"}], [shapely.box(X0 + 4_000, Y0 - 5_000, X0 + 20_000, Y0 + 5_000)])
    base = analysis.baselines(channel, ["北运河"])
    w = 2000.0
    zs = analysis.zones(base, [ZoneSpec("core_monitoring", w, ("北运河",), "canal.x")], city, counties, neighbours)
    for bank in ("left", "right"):
        inside = zs.frame[zs.frame["bank"] == bank]["area_m2"].sum()
        cut = next(c for c in zs.clipped if c["bank"] == bank)
        assert inside == pytest.approx(4_000 * w + math.pi * w ** 2 / 4, rel=1e-3)
        assert cut["area_m2"] == pytest.approx(6_000 * w + math.pi * w ** 2 / 4, rel=1e-3)
        assert cut["outside_in"][0]["name"] == "天津市武清区"
        assert cut["outside_in"][0]["area_m2"] == pytest.approx(cut["area_m2"], rel=1e-6)
    assert zs.frame.geometry.bounds["maxx"].max() <= X0 + 4_000 + 1e-6


def test_pieces_of_a_river_are_measured_separately_but_banked_together():
    # Two reaches with 2 km outside the layer between them: no village is measured to the missing reach.
    channel = frame([{"name": "北运河"}, {"name": "北运河"}],
                    [shapely.LineString([(X0, Y0), (X0 + 4_000, Y0)]),
                     shapely.LineString([(X0 + 6_000, Y0), (X0 + 10_000, Y0)])])
    base = analysis.baselines(channel, ["北运河"])
    assert len(base[0].pieces) == 2 and base[0].caveats
    rows = analysis.villages_within(base, villages({"缺口北": (X0 + 5_000, Y0 + 500), "下游南": (X0 + 7_000, Y0 - 500)}), 1000)
    assert rows["name"].tolist() == ["下游南"] and rows["bank"].tolist() == ["right"]


def test_a_partial_management_boundary_still_measures_the_reaches_it_does_not_cover(channel):
    # The boundary (±60 m) covers the first 4 km of the 10 km channel; the last 6 km are measured from the line.
    boundary = frame([{"river": "北运河"}], [shapely.box(X0, Y0 - 60, X0 + 4_000, Y0 + 60)])
    base = analysis.baselines(channel, ["北运河"], boundary)
    v = villages({"沿范围线": (X0 + 2_000, Y0 + 500), "下游": (X0 + 7_000, Y0 + 500), "下游远": (X0 + 7_000, Y0 - 1_200)})
    rows = analysis.villages_within(base, v, 1000).set_index("name")
    assert set(rows.index) == {"沿范围线", "下游"}
    assert rows.loc["沿范围线", "distance_m"] == 440.0 and rows.loc["沿范围线", "baseline"] == "river_boundary"
    assert rows.loc["下游", "distance_m"] == 500.0 and rows.loc["下游", "baseline"] == "centreline"
    assert rows.loc["下游", "bank"] == "left"
    # the remediation zone covers the reach beyond the boundary too: 1000 m from the line there, 1060 m beside it
    city = frame([{"name": "市"}], [shapely.box(X0 - 5_000, Y0 - 5_000, X0 + 15_000, Y0 + 5_000)])
    zs = analysis.zones(base, [ZoneSpec("village_remediation", 1000, ("北运河",),
                                        "canal.village_remediation_distance_m")], city, city)
    left = shapely.union_all(zs.frame[zs.frame["bank"] == "left"].geometry.values)
    assert left.contains(shapely.Point(X0 + 7_000, Y0 + 990)) and not left.contains(shapely.Point(X0 + 7_000, Y0 + 1_010))
    assert left.contains(shapely.Point(X0 + 2_000, Y0 + 1_050)) and not left.contains(shapely.Point(X0 + 2_000, Y0 + 1_070))
    # a check names the baseline each distance is measured from
    prepared = PreparedZones.build(zs.frame, base)
    for point, d, baseline in ((shapely.Point(X0 + 7_000, Y0 + 500), 500.0, "centreline"),
                               (shapely.Point(X0 + 2_000, Y0 + 500), 440.0, "river_boundary")):
        hit = analysis.check_siting(point, prepared, NO_HERITAGE, RULES, None).zones[0]
        assert (hit["distance_to_channel_m"], hit["baseline"]) == (d, baseline)


# --- green corridor width ---------------------------------------------------------------------------------
@pytest.fixture()
def belt_world():
    """A 2 km channel; left bank: 90 m of corridor for the first km, 110 m for the second; right bank: exactly
    100 m for the first km and nothing (a gap) for the second. Corridors start 10 m from the centreline."""
    channel = frame([{"name": "大清河"}], [shapely.LineString([(X0, Y0), (X0 + 2_000, Y0)])])
    corridors = frame(
        [{"river": "大清河", "bank": "left"}, {"river": "大清河", "bank": "left"}, {"river": "大清河", "bank": "right"}],
        [shapely.box(X0, Y0 + 10, X0 + 1_000, Y0 + 100), shapely.box(X0 + 1_000, Y0 + 10, X0 + 2_000, Y0 + 120),
         shapely.box(X0, Y0 - 110, X0 + 1_000, Y0 - 10)])
    counties = frame([{"name": "文安县"}], [shapely.box(X0 - 5_000, Y0 - 5_000, X0 + 5_000, Y0 + 5_000)])
    return analysis.baselines(channel, ["大清河"]), corridors, counties


def test_belt_of_90_m_is_short_by_10_m_over_its_km_and_110_m_complies(belt_world):
    base, corridors, counties = belt_world
    stations = analysis.corridor_widths(base, corridors, counties, spacing_m=50, probe_m=500, band_m=100)
    left = stations[stations["bank"] == "left"]
    assert sorted(set(left["width_m"])) == [90.0, 110.0] and len(left) == 40
    result = analysis.shortfalls(stations, base, 100)  # 100 m written from L2147
    short = result.sections[result.sections["bank"] == "left"]
    assert len(short) == 1
    s = short.iloc[0]
    assert (s["from_m"], s["to_m"], s["length_m"], s["min_width_m"]) == (0.0, 1000.0, 1000.0, 90.0)
    assert s["missing_area_m2"] == pytest.approx(10 * 1000)
    assert s["gap_length_m"] == 0 and s["county"] == "文安县"


def test_belt_of_exactly_100_m_complies_and_a_gap_counts_as_width_0(belt_world):
    base, corridors, counties = belt_world
    stations = analysis.corridor_widths(base, corridors, counties, spacing_m=50, probe_m=500, band_m=100)
    result = analysis.shortfalls(stations, base, 100)
    right = result.sections[result.sections["bank"] == "right"]
    assert right[["from_m", "to_m", "gap_length_m", "min_width_m"]].values.tolist() == [[1000.0, 2000.0, 1000.0, 0.0]]
    assert right["missing_area_m2"].iloc[0] == pytest.approx(100 * 1000)
    summary = result.summary.set_index("bank")
    assert summary.loc["right", "shortfall_length_m"] == 1000 and summary.loc["right", "measured_length_m"] == 2000
    assert summary.loc["left", "missing_area_mu"] == pytest.approx(10 * 1000 * 15 / 10_000, abs=0.01)


def test_shortfall_band_starts_at_the_corridor_edge_not_at_the_centreline(belt_world):
    # No management boundary: the corridors begin 10 m from the centreline (the water's edge), so the required
    # 100 m band is 10–110 m off it; the right-bank gap takes the bank's other stations' edge (10 m).
    base, corridors, counties = belt_world
    stations = analysis.corridor_widths(base, corridors, counties, spacing_m=50, probe_m=500, band_m=100)
    sections = analysis.shortfalls(stations, base, 100).sections.set_index("bank")
    left, right = sections.geometry["left"], sections.geometry["right"]
    assert left.symmetric_difference(shapely.box(X0, Y0 + 10, X0 + 1_000, Y0 + 110)).area < 1
    assert right.symmetric_difference(shapely.box(X0 + 1_000, Y0 - 110, X0 + 2_000, Y0 - 10)).area < 1


def test_shortfall_band_starts_at_the_management_boundary(belt_world):
    # A boundary 150 m either side: a 90 m corridor 150–240 m off the centreline is short; the band the plan
    # requires is 150–250 m, outside the management area, not 0–100 m (in the water).
    _, _, counties = belt_world
    channel = frame([{"name": "北运河"}], [shapely.LineString([(X0, Y0), (X0 + 1_000, Y0)])])
    boundary = frame([{"river": "北运河"}], [shapely.box(X0, Y0 - 150, X0 + 1_000, Y0 + 150)])
    corridors = frame([{"river": "北运河", "bank": "left"}], [shapely.box(X0, Y0 + 150, X0 + 1_000, Y0 + 240)])
    base = analysis.baselines(channel, ["北运河"], boundary)
    stations = analysis.corridor_widths(base, corridors, counties, spacing_m=50, probe_m=500, band_m=100)
    assert set(stations["inner_m"]) == {150.0}
    result = analysis.shortfalls(stations, base, 100)
    left = result.sections[result.sections["bank"] == "left"].iloc[0]
    assert left["min_width_m"] == 90.0 and left["missing_area_m2"] == pytest.approx(10 * 1000)
    assert left.geometry.symmetric_difference(shapely.box(X0, Y0 + 150, X0 + 1_000, Y0 + 250)).area < 1
    assert left.geometry.intersection(boundary.geometry.iloc[0]).area < 1


def test_station_on_the_far_side_of_a_boundary_river_is_not_measured(belt_world):
    base, corridors, _ = belt_world
    south_only = frame([{"name": "文安县"}], [shapely.box(X0 - 5_000, Y0 - 5_000, X0 + 5_000, Y0)])
    stations = analysis.corridor_widths(base, corridors, south_only, spacing_m=50, probe_m=500, band_m=100)
    result = analysis.shortfalls(stations, base, 100)
    assert set(result.sections["bank"]) == {"right"} and result.stations_outside == 40


# --- farmland conflicts -----------------------------------------------------------------------------------
def test_corridor_over_farmland_and_plots_is_counted_once_per_plot():
    corridor = frame([{}, {}], [shapely.box(0, 0, 100, 1000), shapely.box(50, 0, 100, 1000)])  # overlapping
    land_use = frame([{"class_name": "耕地", "is_basic_farmland": False, "county": "甲县"},
                      {"class_name": "永久基本农田", "is_basic_farmland": True, "county": "甲县"},
                      {"class_name": "建设用地", "is_basic_farmland": False, "county": "甲县"}],
                     [shapely.box(0, 0, 1000, 300), shapely.box(0, 300, 1000, 600), shapely.box(0, 600, 1000, 1000)])
    plots = frame([{"dkbm": "P1", "village_code": "V1", "county_adcode": 1, "is_basic_farmland": False},
                   {"dkbm": "P2", "village_code": "V1", "county_adcode": 1, "is_basic_farmland": True},
                   {"dkbm": "P3", "village_code": "V2", "county_adcode": 1, "is_basic_farmland": False}],
                  [shapely.box(80, 0, 180, 100), shapely.box(0, 400, 40, 500), shapely.box(500, 0, 600, 100)])
    got = analysis.farmland_conflicts(corridor, land_use, plots, ["耕地"], ["永久基本农田"], {1: "甲县"},
                                      {"V1": "一村", "V2": "二村"})
    land = got.land_use.set_index("category")["area_m2"]
    assert land["耕地"] == 100 * 300 and land["永久基本农田"] == 100 * 300
    assert got.plots[["dkbm", "conflict_m2"]].values.tolist() == [["P2", 4000.0], ["P1", 2000.0]]
    assert got.villages[["village", "plots", "conflict_m2"]].values.tolist() == [["一村", 2, 6000.0]]
    assert got.corridor_area_m2 == 100 * 1000
    assert not {"contractor_name", "contractor_id_number"} & set(got.plots.columns)


def test_a_plot_meeting_the_corridor_in_a_sliver_below_the_reported_precision_is_not_listed():
    corridor = frame([{}], [shapely.box(0, 0, 100, 1000)])
    land_use = frame([{"class_name": "耕地", "is_basic_farmland": False, "county": "甲县"}], [shapely.box(0, 0, 1000, 1000)])
    plots = frame([{"dkbm": "SLIVER", "village_code": "V1", "county_adcode": 1, "is_basic_farmland": False},
                   {"dkbm": "REAL", "village_code": "V1", "county_adcode": 1, "is_basic_farmland": False}],
                  [shapely.box(99.9996, 0, 199.9996, 100),  # 0.0004 m × 100 m = 0.04 m² inside: rounds to 0.0
                   shapely.box(99.9, 200, 199.9, 300)])  # 0.1 m × 100 m = 10 m² inside
    got = analysis.farmland_conflicts(corridor, land_use, plots, ["耕地"], ["永久基本农田"], {1: "甲县"}, {"V1": "一村"})
    assert got.plots[["dkbm", "conflict_m2"]].values.tolist() == [["REAL", 10.0]]


# --- siting verdict ---------------------------------------------------------------------------------------
RULES = SitingRules(
    verdicts={"heritage_protection": "prohibited", "heritage_construction_control": "needs_review",
              "village_remediation": "needs_review", "green_belt": "needs_review",
              "core_monitoring_sector_unknown": "needs_review", "core_monitoring_sector_not_listed": "allowed",
              "outside_every_zone": "allowed",
              "control_zones": {"heritage_protection": "prohibited", "construction_control": "needs_review",
                                "ecological_redline": "prohibited", "village_remediation": "needs_review",
                                "green_belt": "needs_review", "core_monitoring": "needs_review",
                                "other": "needs_review"}},
    heritage_ranges={"省级文物保护单位": {"protection_m": 50, "construction_control_m": 200},
                     "其他": {"protection_m": 30, "construction_control_m": 100}},
    negative_list=[{"sector": "industrial_mining", "title_zh": "工矿", "action": "prohibited", "source": "纲要"}],
    citations={i: (f"canal.{i}", f"条款 {i}") for i in (
        "village_remediation_distance_m", "green_corridor_min_width_m", "core_monitoring_zone_width_m",
        "heritage_ranges", "negative_list", "siting_verdicts")})
SPECS = [ZoneSpec("village_remediation", 1000, ("北运河",), "canal.village_remediation_distance_m"),
         ZoneSpec("green_belt", 100, ("北运河",), "canal.green_corridor_min_width_m"),
         ZoneSpec("core_monitoring", 2000, ("北运河",), "canal.core_monitoring_zone_width_m")]


@pytest.fixture()
def prepared(channel, city):
    base = analysis.baselines(channel, ["北运河"])
    return PreparedZones.build(analysis.zones(base, SPECS, *city).frame, base)


def heritage(*sites) -> gpd.GeoDataFrame:
    return frame([{"name": n, "heritage_class": c, "location_uncertainty_m": 10.0} for n, c, _ in sites],
                 [shapely.Point(p) for _, _, p in sites])


NO_HERITAGE = heritage()


def test_polygon_straddling_the_1000_m_edge_is_in_both_zones_and_needs_review(prepared):
    poly = shapely.box(X0 + 2_000, Y0 + 950, X0 + 2_100, Y0 + 1_050)
    v = analysis.check_siting(poly, prepared, NO_HERITAGE, RULES, None)
    assert {z["kind"] for z in v.zones} == {"village_remediation", "core_monitoring"}
    assert all(z["bank"] == "left" and z["county"] == "西县" and z["distance_to_channel_m"] == 950 for z in v.zones)
    assert v.verdict == "needs_review" and v.verdict_zh == "需审查"
    assert {r["rule_id"] for r in v.reasons} == {"canal.village_remediation_distance_m",
                                                 "canal.core_monitoring_zone_width_m"}
    assert all(r["clause"] for r in v.reasons) and v.nearest_zone_edge_m is None


def test_strictest_verdict_wins_and_every_reason_is_kept(prepared):
    site = (X0 + 3_000, Y0 + 1_000)
    poly = shapely.box(site[0] - 40, site[1] - 100, site[0] + 40, site[1])  # touches the site's 50 m range
    v = analysis.check_siting(poly, prepared, heritage(("古城墙", "省级文物保护单位", site)), RULES, None)
    assert v.verdict == "prohibited" and v.verdict_zh == "禁止"
    assert v.reasons[0]["verdict"] == "prohibited" and v.reasons[0]["rule_id"] == "canal.heritage_ranges"
    assert {r["verdict"] for r in v.reasons} == {"prohibited", "needs_review"}
    assert v.heritage == [{"name": "古城墙", "heritage_class": "省级文物保护单位", "range": "protection",
                           "distance_m": 0.0, "location_uncertainty_m": 10.0}]


def test_negative_list_sector_in_the_core_zone_is_prohibited_and_outside_it_is_not(prepared):
    in_core = shapely.Point(X0 + 4_000, Y0 - 1_500)
    sector = RULES.negative_list[0]
    v = analysis.check_siting(in_core, prepared, NO_HERITAGE, RULES, sector)
    assert v.verdict == "prohibited" and v.negative_list[0]["sector"] == "industrial_mining"
    assert [z["bank"] for z in v.zones] == ["right"]
    other = analysis.check_siting(in_core, prepared, NO_HERITAGE, RULES, {"sector": "other"})
    assert other.verdict == "allowed" and other.negative_list == []
    far = analysis.check_siting(shapely.Point(X0 + 4_000, Y0 - 2_500), prepared, NO_HERITAGE, RULES, sector)
    assert far.verdict == "allowed" and far.zones == [] and far.nearest_zone_edge_m == pytest.approx(500, abs=0.01)
    assert far.reasons[0]["text_zh"].startswith("不在任何运河管控分区内")


def test_heritage_class_not_in_the_table_uses_the_fallback_ranges(prepared):
    site = (X0 + 3_000, Y0 + 3_000)  # outside every zone
    point = shapely.Point(site[0] + 80, site[1])  # 80 m: construction control of 其他 (30 / 100)
    v = analysis.check_siting(point, prepared, heritage(("某遗址", "未知级别", site)), RULES, None)
    assert v.verdict == "needs_review" and v.heritage[0]["range"] == "construction_control"


def control(*zones) -> gpd.GeoDataFrame:
    """Control zones drawn by planners: (zone_id, name, kind, version, author, polygon)."""
    return frame([{"zone_id": i, "name": n, "kind": k, "version": v, "author": a, "updated_at": "2026-01-02T03:04:05Z"}
                  for i, n, k, v, a, _ in zones], [z[-1] for z in zones])


def test_a_control_zone_drawn_by_a_planner_gives_the_verdict_of_its_kind(prepared):
    far = shapely.box(X0 + 4_000, Y0 + 3_000, X0 + 4_500, Y0 + 3_500)  # outside every computed zone
    zones = prepared.with_control(control(
        (7, "城墙保护范围", "heritage_protection", 3, "规划甲", far),
        (8, "红线", "ecological_redline", 1, "规划乙", far.buffer(-100)),
        (9, "控制地带", "construction_control", 2, "规划丙", shapely.box(X0 + 6_000, Y0 + 3_000, X0 + 6_500, Y0 + 3_500)),
        (10, "核心区", "core_monitoring", 1, "规划丁", shapely.box(X0 + 8_000, Y0 + 3_000, X0 + 8_500, Y0 + 3_500))))
    inside = analysis.check_siting(shapely.Point(X0 + 4_250, Y0 + 3_250), zones, NO_HERITAGE, RULES, None)
    assert inside.verdict == "prohibited" and inside.zones == [] and inside.nearest_zone_edge_m is None
    assert [(c["zone_id"], c["verdict"]) for c in inside.control_zones] == [(7, "prohibited"), (8, "prohibited")]
    first = next(r for r in inside.reasons if "城墙保护范围" in r["text_zh"])
    assert first["rule_id"] == "canal.siting_verdicts" and first["verdict_situation"] == "control_zones.heritage_protection"
    assert "规划甲" in first["text_zh"] and "第 3 版" in first["text_zh"] and "编号 7" in first["text_zh"]
    review = analysis.check_siting(shapely.Point(X0 + 6_250, Y0 + 3_250), zones, NO_HERITAGE, RULES, None)
    assert review.verdict == "needs_review" and review.control_zones[0]["name"] == "控制地带"
    # a drawn core monitoring zone applies the negative list as the computed one does
    mining = analysis.check_siting(shapely.Point(X0 + 8_250, Y0 + 3_250), zones, NO_HERITAGE, RULES,
                                   RULES.negative_list[0])
    assert mining.verdict == "prohibited" and mining.negative_list[0]["sector"] == "industrial_mining"
    # outside everything: the nearest edge may be a control zone's (here 3000 − 2000 = 1000 m to the core zone,
    # 250 m to the construction-control square)
    beside = analysis.check_siting(shapely.Point(X0 + 6_250, Y0 + 3_750), zones, NO_HERITAGE, RULES, None)
    assert beside.verdict == "allowed" and beside.nearest_zone_edge_m == pytest.approx(250)
    assert prepared.with_control(None).control_tree is None


def test_every_reason_cites_the_verdict_rule_and_outside_cites_it_not_a_width(prepared):
    site = (X0 + 3_000, Y0 + 1_000)
    poly = shapely.box(site[0] - 40, site[1] - 100, site[0] + 40, site[1])
    v = analysis.check_siting(poly, prepared, heritage(("古城墙", "省级文物保护单位", site)), RULES,
                              RULES.negative_list[0])
    assert {r["verdict_situation"] for r in v.reasons} == {"heritage_protection", "village_remediation", "negative_list"}
    assert all(r["verdict_rule_id"] == "canal.siting_verdicts" and r["verdict_clause"] == "条款 siting_verdicts"
               for r in v.reasons)
    far = analysis.check_siting(shapely.Point(X0 + 4_000, Y0 - 2_500), prepared, NO_HERITAGE, RULES, None)
    (only,) = far.reasons
    assert only["rule_id"] == "canal.siting_verdicts" and only["verdict_situation"] == "outside_every_zone"
    assert only["clause"].startswith("条款 siting_verdicts") and "canal.core_monitoring_zone_width_m" in only["clause"]


def test_analysis_refuses_frames_in_degrees(channel):
    with pytest.raises(ValueError, match="EPSG:4548"):
        analysis.baselines(channel.to_crs("EPSG:4490"), ["北运河"])


def test_area_units():
    assert analysis.area_units(10_000 / 15) == {"area_m2": 666.7, "area_km2": 0.000667, "area_mu": 1.0}
    assert np.isclose(analysis.M2_PER_MU * 15, 10_000)
