"""Who and what lies inside a zone: receptors with distance and bearing, people (area-weighted from the
residential polygons), drinking-water sources and their tiers, ecological red lines, and the counties, cities
and provinces the zone touches. Everything in EPSG:4548 metres; the indexes (STRtree, coordinate arrays) are
built once per data version by the caller and reused for every zone.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely

from ..crs import require_metric


@dataclass
class Inside:
    """What a zone contains."""

    population: float  # area-weighted
    residential: list[dict]  # [{name, population, share, people}]
    receptors: np.ndarray  # indices into Exposure.receptors
    water_sources: np.ndarray  # indices into Exposure.water
    eco_redline: list[str]


class Exposure:
    """Indexes over the receptor layers (frames in EPSG:4548)."""

    def __init__(self, residential: gpd.GeoDataFrame, receptors: gpd.GeoDataFrame, water: gpd.GeoDataFrame,
                 counties: gpd.GeoDataFrame, neighbours: gpd.GeoDataFrame, home: dict,
                 eco_redline: gpd.GeoDataFrame | None = None):
        require_metric(residential=residential, receptors=receptors, water=water, counties=counties,
                       neighbours=neighbours)
        self.residential = residential.reset_index(drop=True)
        self.res_names = self.residential["name"].to_numpy(dtype=object)
        self.res_geoms = np.asarray(self.residential.geometry.values)
        self.res_area = shapely.area(self.res_geoms)
        self.res_pop = self.residential["population"].to_numpy(dtype=float)
        self.res_tree = shapely.STRtree(self.res_geoms)
        self.receptors = receptors.reset_index(drop=True)
        self.rec_xy = shapely.get_coordinates(self.receptors.geometry.values).reshape(-1, 2)
        self.rec_tree = shapely.STRtree(self.receptors.geometry.values)
        self.rec_cols = _columns(self.receptors)
        self.rec_kind = self.receptors["kind"].to_numpy(dtype=object).astype(str)
        self.water = water.reset_index(drop=True)
        self.water_cols = _columns(self.water)
        self.water_xy = shapely.get_coordinates(self.water.geometry.values).reshape(-1, 2)
        self.water_tree = shapely.STRtree(self.water.geometry.values)
        self.counties = counties.reset_index(drop=True)
        self.neighbours = neighbours.reset_index(drop=True)
        shapely.prepare(self.counties.geometry.values)
        shapely.prepare(self.neighbours.geometry.values)
        self.home = home
        self.eco = (eco_redline if eco_redline is not None else gpd.GeoDataFrame(
            {"name": []}, geometry=[], crs=counties.crs)).reset_index(drop=True)

    # --- contents --------------------------------------------------------------------------------------
    def people(self, zone) -> tuple[float, list[dict]]:
        """Population inside: Σ population × (area of the residential polygon inside / its area)."""
        if zone.is_empty:
            return 0.0, []
        idx = self.res_tree.query(zone, predicate="intersects")
        if not len(idx):
            return 0.0, []
        share = shapely.area(shapely.intersection(self.res_geoms[idx], zone)) / self.res_area[idx]
        people = self.res_pop[idx] * share
        order = np.argsort(-people)
        names = self.res_names[idx]
        rows = [{"name": str(names[i]), "population": int(self.res_pop[idx][i]), "share": round(float(share[i]), 4),
                 "people": round(float(people[i]), 1)} for i in order if people[i] > 0]
        return float(people.sum()), rows

    def inside(self, zone) -> Inside:
        if zone.is_empty:
            empty = np.array([], dtype=int)
            return Inside(0.0, [], empty, empty, [])
        shapely.prepare(zone)
        population, rows = self.people(zone)
        rec = np.sort(self.rec_tree.query(zone, predicate="intersects"))
        water = np.sort(self.water_tree.query(zone, predicate="intersects"))
        eco = [str(n) for n, g in zip(self.eco["name"], self.eco.geometry.values) if g is not None and g.intersects(zone)]
        return Inside(population, rows, rec, water, eco)

    def admin(self, zone, origin: shapely.Point) -> dict:
        """Counties, cities and provinces the zone (and the origin) touches, and the cross-boundary fact."""
        where = shapely.union(zone, origin) if not zone.is_empty else origin
        home_counties = [str(n) for n, g in zip(self.counties["name"], self.counties.geometry.values)
                         if g.intersects(where)]
        others = self.neighbours[self.neighbours.geometry.intersects(where)]
        counties = home_counties + [str(n) for n in others["name"]]
        cities = ([self.home["city"]] if home_counties else []) + sorted(set(others["city"].astype(str)))
        provinces = ([self.home["province"]] if home_counties else []) + sorted(set(others["province"].astype(str)))
        cities = list(dict.fromkeys(cities))
        provinces = list(dict.fromkeys(provinces))
        # Crossing means the zone (with its origin) spans more than one unit: an incident wholly inside a
        # neighbouring county is not cross-provincial merely because that county is not in Hebei.
        if len(provinces) > 1:
            fact = "province"
        elif len(cities) > 1:
            fact = "city"
        elif len(counties) > 1:
            fact = "county"
        else:
            fact = None
        origin_county = next((str(n) for n, g in zip(self.counties["name"], self.counties.geometry.values)
                              if g.intersects(origin)), None)
        if origin_county is None:
            hit = self.neighbours[self.neighbours.geometry.intersects(origin)]
            origin_county = str(hit["name"].iloc[0]) if len(hit) else None
        return {"counties": counties, "cities": cities, "provinces": provinces, "cross_boundary": fact,
                "origin_county": origin_county,
                "other_cities": [c for c in cities if c != self.home["city"]],
                "other_provinces": [p for p in provinces if p != self.home["province"]],
                "home_counties": home_counties}


ROW_FIELDS = ("name", "kind", "tier", "capacity", "capacity_unit", "county", "source_kind")


def _columns(frame) -> dict[str, np.ndarray]:
    """The fields listed per receptor, as plain Python values (read once, not per zone)."""
    return {c: np.array([v.item() if hasattr(v, "item") else v for v in frame[c]], dtype=object)
            for c in ROW_FIELDS if c in frame}


def bearing_deg(origin_xy, xy: np.ndarray) -> np.ndarray:
    """Bearings (degrees clockwise from grid north) from origin to points."""
    d = np.asarray(xy, dtype=float).reshape(-1, 2) - np.asarray(origin_xy, dtype=float)
    return np.degrees(np.arctan2(d[:, 0], d[:, 1])) % 360.0
