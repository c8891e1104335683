"""Where a point lies: pure functions on frames in EPSG:4548 (metres); no HTTP, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import shapely

from ..crs import require_metric


@dataclass
class Place:
    county: dict | None  # {name, adcode}; None outside every county
    township: dict | None  # {name, code, method}
    nearest_village: dict | None  # {name, code, township, county, distance_m}; None beyond the limit
    caveats: list[str] = field(default_factory=list)


def where(point: shapely.Point, counties: gpd.GeoDataFrame, villages: gpd.GeoDataFrame,
          village_max_m: float) -> Place:
    """County containing the point, its township, and the nearest village within village_max_m.

    There are no public township boundaries: the township is that of the nearest village in the same
    county, and the result says so. Villages flagged ``demo`` make the answer illustrative only."""
    require_metric(counties=counties, villages=villages)
    inside = counties[counties.geometry.contains(point)]
    county = None
    if len(inside):
        row = inside.iloc[0]
        county = {"name": row["name"], "adcode": int(row["adcode"])}
    caveats = []
    distances = shapely.distance(villages.geometry.values, point)
    nearest_village = None
    if len(villages) and distances.min() <= village_max_m:
        i = int(np.argmin(distances))
        nearest_village = _village(villages.iloc[i], distances[i])
    township = None
    if county is not None:
        same = np.flatnonzero((villages["county_adcode"].to_numpy() == county["adcode"])
                              & (distances <= village_max_m))
        if len(same):
            v = villages.iloc[same[np.argmin(distances[same])]]
            township = {"name": v["township"], "code": v["township_code"], "method": "nearest_village"}
            caveats.append("乡镇按同县最近村庄推断（无公开乡镇界线）")
    if county is None:
        caveats.append("该点不在廊坊市任何县（市、区）内")
    if nearest_village is None:
        caveats.append(f"{village_max_m:g} 米内没有村庄")
    if "demo" in villages.columns and len(villages) and bool(villages["demo"].any()):
        caveats.append("村庄图层含演示数据，村名与位置仅供示意")
    return Place(county, township, nearest_village, caveats)


def _village(row, distance: float) -> dict:
    return {"name": row["name"], "code": row["code"], "township": row["township"], "county": row["county"],
            "distance_m": round(float(distance), 1)}
