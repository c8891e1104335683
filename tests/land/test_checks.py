"""Register checks: the 5% area rule at its boundary, non-farm use of basic farmland, overlapping plots."""

import geopandas as gpd
import pandas as pd
import shapely

from gis_service.crs import METRIC_CRS
from gis_service.land import checks
from gis_service.rules import RuleBook

LAND = RuleBook.load().domain("land")


def test_area_rule_is_a_strict_five_percent_of_the_contract_area():
    assert LAND.value("area_mismatch_pct") == 5
    plots = pd.DataFrame({
        "dkbm": [f"1310221010010100{i:03d}" for i in range(8)],
        "contract_area_mu": [100.0, 100.0, 100.0, 100.0, 1.0, 1.0, 2.4, 0.0],
        "measured_area_mu": [105.0, 105.01, 95.0, 94.99, 1.05, 1.06, 2.52, 1.2],
    })
    out = checks.area_mismatch(plots, LAND.value("area_mismatch_pct"))
    flagged = dict(zip(out["dkbm"].str[-3:], out["reason"]))
    # exactly 5% (105 vs 100, 95 vs 100, 1.05 vs 1.00, 2.52 vs 2.40) is not "over 5%"; 5.01% and 6% are
    assert flagged == {"001": "over_tolerance", "003": "over_tolerance", "005": "over_tolerance",
                       "007": "contract_area_missing"}
    missing = checks.area_mismatch(pd.DataFrame({"dkbm": ["a", "b", "c"], "contract_area_mu": [2.0, None, -1.0],
                                                 "measured_area_mu": [None, 2.0, 2.0]}), 5)
    assert missing["reason"].tolist() == ["measured_area_missing", "contract_area_missing", "contract_area_missing"]
    row = out.set_index("dkbm").loc["1310221010010100003"]
    assert row["difference_mu"] == -5.01 and row["difference_pct"] == 5.01


def test_non_farm_use_only_on_basic_farmland():
    uses = LAND.value("non_farm_uses")
    assert set(uses) == {"林木", "坑塘", "建筑"}
    plots = pd.DataFrame({"dkbm": list("abcdef"), "is_basic_farmland": [True, True, True, True, False, None],
                          "current_use": ["林木", "坑塘", "建筑", "耕地", "林木", "建筑"]})
    out = checks.non_farm_use(plots, uses)
    assert list(out["dkbm"]) == ["a", "b", "c"] and list(out["current_use"]) == ["林木", "坑塘", "建筑"]


def test_overlaps_above_the_tolerance_with_their_area():
    x, y = 472_000.0, 4_376_000.0
    geoms = [shapely.box(x, y, x + 20, y + 60),
             shapely.box(x + 18, y + 55, x + 38, y + 115),  # overlaps the first 2 m × 5 m = 10 m²
             shapely.box(x + 38, y, x + 58, y + 60),  # touches the second along an edge: no area
             shapely.box(x + 57.9, y, x + 77.9, y + 5),  # overlaps the third 0.1 m × 5 m = 0.5 m² (below 1 m²)
             shapely.box(x + 100, y, x + 110, y + 10), shapely.box(x + 102, y + 2, x + 108, y + 8)]  # one inside another: 36 m²
    plots = gpd.GeoDataFrame({"dkbm": list("abcdef")}, geometry=geoms, crs=METRIC_CRS)
    out = checks.overlaps(plots, LAND.value("overlap_min_m2"), LAND.value("mu_per_square_metre"))
    assert list(zip(out["dkbm"], out["other_dkbm"], out["overlap_m2"])) == [("a", "b", 10.0), ("e", "f", 36.0)]
    assert out["overlap_mu"].tolist() == [0.015, 0.054]
    assert len(checks.overlaps(plots, 0.4, 0.0015)) == 3  # the 0.5 m² sliver above a smaller tolerance
