"""Register checks (issue #9 §6): area mismatches, non-farm use of permanent basic farmland, overlapping plots.

Pure functions over frames (areas in 亩, geometry in EPSG:4548 where measured); the thresholds come from the
rules (``land.area_mismatch_pct``, ``land.non_farm_uses``, ``land.overlap_min_m2``) and are passed in.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from ..crs import require_metric

# Areas are stored to 0.01 亩: a relative difference within this of the limit is *at* the limit (5.00% is not
# "over 5%" even when the float quotient comes out as 0.050000000000000044).
_AT_LIMIT = 1e-9
REGISTER_COLUMNS = ["dkbm", "dkmc", "village_code", "county_adcode"]


def _base(plots: pd.DataFrame, mask) -> pd.DataFrame:
    columns = [c for c in REGISTER_COLUMNS if c in plots]
    return pd.DataFrame(plots.loc[mask, columns]).reset_index(drop=True)


def area_mismatch(plots: pd.DataFrame, tolerance_pct: float) -> pd.DataFrame:
    """Plots whose measured area (SCMJ) differs from the contract area (HTMJ) by more than tolerance_pct of the
    contract area (strictly); plots without a positive contract area are listed with reason contract_area_missing,
    those without a measured area with measured_area_missing."""
    contract = pd.to_numeric(plots["contract_area_mu"], errors="coerce").to_numpy(dtype=float)
    measured = pd.to_numeric(plots["measured_area_mu"], errors="coerce").to_numpy(dtype=float)
    missing = ~(contract > 0) | np.isnan(measured)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(measured - contract) / contract
    over = ~missing & (rel > tolerance_pct / 100 + _AT_LIMIT)
    mask = over | missing
    out = _base(plots, mask)
    out["contract_area_mu"] = contract[mask]
    out["measured_area_mu"] = measured[mask]
    out["difference_mu"] = np.round(measured[mask] - contract[mask], 2)
    out["difference_pct"] = np.where(missing[mask], np.nan, np.round(100 * rel[mask], 2))
    out["reason"] = np.where(~(contract[mask] > 0), "contract_area_missing",
                             np.where(np.isnan(measured[mask]), "measured_area_missing", "over_tolerance"))
    return out


def non_farm_use(plots: pd.DataFrame, forbidden_uses: list[str]) -> pd.DataFrame:
    """Plots on permanent basic farmland whose current use (现状用途) is one of the forbidden uses (L1194)."""
    basic = plots["is_basic_farmland"].fillna(False).astype(bool).to_numpy()
    use = plots["current_use"].astype(object).to_numpy() if "current_use" in plots else np.full(len(plots), None)
    mask = basic & np.isin(use, list(forbidden_uses))
    out = _base(plots, mask)
    out["current_use"] = use[mask]
    for column in ("measured_area_mu", "transfer_status"):
        if column in plots:
            out[column] = plots.loc[mask, column].to_numpy()
    return out


def overlaps(plots: gpd.GeoDataFrame, min_area_m2: float, mu_per_m2: float) -> pd.DataFrame:
    """Pairs of plots whose intersection is larger than min_area_m2 (strictly), each pair once (a before b)."""
    from shapely import STRtree

    require_metric(plots=plots)
    geoms = np.asarray(plots.geometry.values, dtype=object)
    a, b = STRtree(geoms).query(geoms, predicate="intersects")
    keep = a < b
    a, b = a[keep], b[keep]
    area = shapely.area(shapely.intersection(geoms[a], geoms[b])) if len(a) else np.zeros(0)
    big = area > min_area_m2
    a, b, area = a[big], b[big], area[big]
    dkbm = plots["dkbm"].astype(object).to_numpy()
    out = pd.DataFrame({"dkbm": dkbm[a], "other_dkbm": dkbm[b]})
    for column in ("village_code", "county_adcode"):
        if column in plots:
            out[column] = plots[column].to_numpy()[a]
    out["overlap_m2"] = np.round(area, 2)
    out["overlap_mu"] = np.round(area * mu_per_m2, 4)
    return out.sort_values(["dkbm", "other_dkbm"], kind="stable").reset_index(drop=True)
