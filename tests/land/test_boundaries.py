"""四至 from geometry on a hand-made grid of plots: the expected neighbour of every side is known by construction."""

import geopandas as gpd
import pandas as pd
import pytest
import shapely
import shapely.affinity

from gis_service.crs import METRIC_CRS
from gis_service.land import boundaries as b
from gis_service.rules import RuleBook

X0, Y0 = 472_000.0, 4_376_000.0  # Langfang, EPSG:4548
W, H, GAP = 20.0, 60.0, 2.0  # strip fields 20 m × 60 m with 2 m ridges, as the demo
WORDS = RuleBook.load().domain("land").value("boundary_kind_words")


def grid(cols=3, rows=2, gap=GAP, skew=0.0):
    """Plot (i, j) = column i (west → east), row j (south → north); contractor 户ij. skew lifts the north-east
    corner (a trapezoid: not a rectangle, measured with GEOS instead of from the bounds)."""
    records, geoms = [], []
    for j in range(rows):
        for i in range(cols):
            x, y = X0 + i * (W + gap), Y0 + j * (H + gap)
            records.append({"dkbm": f"13102210100101{j}{i:04d}", "contractor_name": f"户{i}{j}"})
            geoms.append(shapely.Polygon([(x, y), (x + W, y), (x + W, y + H + skew), (x, y + H)]))
    return gpd.GeoDataFrame(records, geometry=geoms, crs=METRIC_CRS)


def features():
    east = X0 + 2 * (W + GAP) + W  # east edge of column 2
    # a vertex every 5 m: each segment covers 5/60 of a side, the ditch as a whole all of it
    course = [(east + 3 + 0.2 * (k % 2), Y0 - 50 + 5 * k) for k in range(51)]
    ditch = gpd.GeoDataFrame({"name": ["八干渠"]}, geometry=[shapely.LineString(course)], crs=METRIC_CRS)
    top = Y0 + 2 * H + GAP  # north edge of row 1
    built = gpd.GeoDataFrame({"class_name": ["建设用地", "耕地"]},
                             geometry=[shapely.box(X0 - 10, top + 1, X0 + W + 1, top + 80),
                                       shapely.box(X0 + W + GAP, top + 1, X0 + 200, top + 80)], crs=METRIC_CRS)
    return [b.feature_set("沟渠", ditch, "name", width_m=4.0),
            b.feature_set("建设用地", built, where={"class_name": "建设用地"})]


def table(result):
    return {(r.dkbm[-5:], r.side): (r.neighbour_kind, r.neighbour_label, None if pd.isna(r.neighbour_dkbm) else r.neighbour_dkbm)
            for r in result.itertuples()}


@pytest.mark.parametrize("skew", [0.0, 0.5])
def test_grid_neighbours_by_construction(skew):
    plots = grid(skew=skew)
    assert b._rectangles(plots.geometry.values).all() == (skew == 0)
    got = table(b.compute(plots, features(), tolerance_m=5.0, min_share=0.2))
    P = lambda i, j: (f"户{i}{j}", f"13102210100101{j}{i:04d}")  # noqa: E731
    for j in range(2):
        for i in range(3):
            key = f"{j}{i:04d}"
            east = ("地块", *P(i + 1, j)) if i < 2 else ("沟渠", "八干渠", None)  # the ditch 1–5 m east of column 2
            west = ("地块", *P(i - 1, j)) if i > 0 else ("其他", "其他", None)
            south = ("地块", *P(i, j - 1)) if j > 0 else ("其他", "其他", None)
            north = ("地块", *P(i, j + 1)) if j < 1 else (("建设用地", "建设用地", None) if i == 0 else ("其他", "其他", None))
            assert got[(key, "east")] == east, key
            assert got[(key, "west")] == west, key
            assert got[(key, "south")] == south, key
            assert got[(key, "north")] == north, key  # 耕地 north of columns 1–2 is not a listed feature


@pytest.mark.parametrize("angle", [-35.0, 15.0, 30.0, 40.0])
def test_turned_grid_sides_follow_the_plots_own_edges(angle):
    """Strip fields laid out along a road at an angle to the grid: a plot's north side is its short end facing
    (roughly) north, so the neighbour there is the next plot of its column, east the next column — by
    construction. Before, a plot turned 30° had its long edge facing east-north-east counted as its north side
    (the east neighbour was reported north and south)."""
    plots = grid(cols=3, rows=3)
    plots["geometry"] = [shapely.affinity.rotate(g, angle, origin=(X0, Y0)) for g in plots.geometry]
    got = table(b.compute(plots, [], tolerance_m=5.0, min_share=0.2))
    P = lambda i, j: f"13102210100101{j}{i:04d}"  # noqa: E731
    for i, j in ((1, 1), (0, 1), (1, 0)):
        key = f"{j}{i:04d}"
        assert got[(key, "north")][2] == P(i, j + 1), (key, angle)
        assert got[(key, "east")][2] == P(i + 1, j), (key, angle)
        assert got[(key, "west")][2] == (P(i - 1, j) if i else None), (key, angle)
        assert got[(key, "south")][2] == (P(i, j - 1) if j else None), (key, angle)


def test_a_plot_inside_a_hole_is_no_side_of_it():
    outer = shapely.box(X0, Y0, X0 + 100, Y0 + 100).difference(shapely.box(X0 + 40, Y0 + 40, X0 + 60, Y0 + 60))
    plots = gpd.GeoDataFrame({"dkbm": ["1310221010010100001", "1310221010010100002"], "contractor_name": ["甲", "乙"]},
                             geometry=[outer, shapely.box(X0 + 41, Y0 + 41, X0 + 59, Y0 + 59)], crs=METRIC_CRS)
    got = table(b.compute(plots, [], tolerance_m=5.0, min_share=0.0001))
    assert {got[("00001", side)][0] for side in ("east", "west", "south", "north")} == {"其他"}


def test_diagonal_and_distant_neighbours_do_not_count():
    # Shared edges (no ridge): the diagonal plot touches the probe at a corner only.
    got = table(b.compute(grid(gap=0.0), [], tolerance_m=5.0, min_share=0.2))
    assert got[("00000", "north")][2] == "13102210100101" + "10000"
    assert got[("00000", "east")][2] == "13102210100101" + "00001"
    # Ridges wider than the tolerance: nobody adjoins anybody.
    far = b.compute(grid(gap=8.0), [], tolerance_m=5.0, min_share=0.2)
    assert set(far["neighbour_kind"]) == {"其他"}


def test_neighbour_covering_too_little_of_the_side_is_other():
    plots = grid(cols=1, rows=1)
    # A plot 2 m east that overlaps the 60 m side over 6 m only (10% of the probe).
    other = grid(cols=2, rows=1).iloc[[1]].copy()
    other["geometry"] = [shapely.box(X0 + W + GAP, Y0 + H - 6, X0 + 2 * W + GAP, Y0 + H + 54)]
    both = pd.concat([plots, other], ignore_index=True)
    res = table(b.compute(gpd.GeoDataFrame(both, crs=METRIC_CRS), [], tolerance_m=5.0, min_share=0.2))
    assert res[("00000", "east")][0] == "其他"
    # the share is along the side (6 m of 60 m), not of the probe's area (the 2 m ridge does not count against it)
    half = both.copy()
    half.loc[1, "geometry"] = shapely.box(X0 + W + GAP, Y0 + 30, X0 + 2 * W + GAP, Y0 + 90)
    computed = b.compute(gpd.GeoDataFrame(half, crs=METRIC_CRS), [], tolerance_m=5.0, min_share=0.2)
    east = computed[(computed["dkbm"] == both.loc[0, "dkbm"]) & (computed["side"] == "east")]
    assert east["covered_share"].tolist() == [0.5]
    # a road recorded along a side that a plot covers for less than the dominant share: unverified
    recorded = pd.DataFrame({"dkbm": [both.loc[0, "dkbm"]], "dkdz": ["道路"]})
    status = b.compare(east, recorded, WORDS, dominant_share=0.6)["status"].tolist()
    assert status == ["unverified"] and b.compare(east, recorded, WORDS, dominant_share=0.5)["status"].tolist() == ["mismatch"]
    # a side bounded by two plots (each half of it): either contractor is a correct record
    two = pd.concat([half, half.iloc[[1]].assign(dkbm="1310221010010100" + "999", contractor_name="户99")], ignore_index=True)
    two.loc[2, "geometry"] = shapely.box(X0 + W + GAP, Y0 - 30, X0 + 2 * W + GAP, Y0 + 30)
    computed = b.compute(gpd.GeoDataFrame(two, crs=METRIC_CRS), [], tolerance_m=5.0, min_share=0.2)
    east = computed[(computed["dkbm"] == both.loc[0, "dkbm"]) & (computed["side"] == "east")]
    assert set(east["adjoining_contractors"].iloc[0].split("、")) == {"户99", two.loc[1, "contractor_name"]}
    for name, expected in (("户99", "match"), (two.loc[1, "contractor_name"], "match"), ("户55", "mismatch")):
        recorded = pd.DataFrame({"dkbm": [both.loc[0, "dkbm"]], "dkdz": [name]})
        assert b.compare(east, recorded, WORDS)["status"].tolist() == [expected], name
    res = table(b.compute(gpd.GeoDataFrame(both, crs=METRIC_CRS), [], tolerance_m=5.0, min_share=0.05))
    assert res[("00000", "east")][0] == "地块"


def test_recorded_sizhi_compared():
    plots = grid()
    computed = b.compute(plots, features(), tolerance_m=5.0, min_share=0.2)
    recorded = pd.DataFrame({"dkbm": plots["dkbm"], "dkdz": None, "dkxz": None, "dknz": None, "dkbz": None})
    recorded = recorded.set_index(recorded["dkbm"].str[-5:])
    recorded.loc["00000", ["dkdz", "dkxz", "dknz", "dkbz"]] = ["户10", " 路 ", "空地", "户01"]
    recorded.loc["00001", ["dkdz", "dkxz"]] = ["户99", "13102210100101" + "00000"]  # wrong name; DKBM of the neighbour
    recorded.loc["00002", ["dkdz", "dkxz"]] = ["水沟", "路"]  # a road where a plot adjoins
    recorded.loc["10000", "dkbz"] = "村庄"
    recorded.loc["10002", "dkbz"] = "户77"  # a neighbour's name where nothing adjoins
    out = b.compare(computed, recorded.reset_index(drop=True), WORDS)
    status = {(r.dkbm[-5:], r.side): r.status for r in out.itertuples()}
    assert status[("00000", "east")] == "match"
    assert status[("00000", "west")] == "unverified"  # recorded a road, nothing mapped adjoins (no road layer)
    assert status[("00000", "south")] == "match"  # 空地 is one of the 其他 words
    assert status[("00000", "north")] == "match"
    assert status[("00001", "east")] == "mismatch"
    assert status[("00001", "west")] == "match"
    assert status[("00002", "east")] == "match"  # 水沟 names a ditch
    assert status[("00002", "west")] == "mismatch"
    assert status[("10000", "north")] == "match"
    assert status[("10001", "north")] == "unrecorded"
    assert status[("10002", "north")] == "mismatch"
    assert (out["status"] == "unrecorded").sum() == 24 - 10  # 10 sides recorded above
