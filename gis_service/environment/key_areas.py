"""Key environmental risk areas (the plan's Appendix 4, 「廊坊市突发环境风险重点区域评估结果示意图」, L1957: title
only) computed from the data on a square grid in EPSG:4548. Method (rule ``key_area_method``):

- hazard H of a cell = Σ over the risk sources whose outermost ring (rule ``ring_radii_m``) contains the cell
  centre of class weight × type weight;
- exposure E of a cell = people in the cell / people_per_point (area-weighted from the residential polygons)
  + Σ weights of the sensitive receptors in the cell + Σ weights of the water sources in it (by tier)
  + eco_redline_weight × the share of the cell inside the ecological red line;
- risk R = H × (1 + E); 高 when R ≥ high, 中 when medium ≤ R < high, 低 when 0 < R < medium (以上 includes the
  number); cells with R = 0 are not listed.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely

from ..crs import METRIC_CRS, require_metric

CLASSES = ("高", "中", "低")
COLUMNS = ("cell", "risk_class", "risk_index", "hazard", "exposure", "population", "eco_share")


def grid(area, cell: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells (boxes) of a grid aligned on multiples of cell that intersect area; (cells, col, row)."""
    if area is None or area.is_empty:
        return np.array([], dtype=object), np.array([], dtype=int), np.array([], dtype=int)
    x0, y0, x1, y1 = area.bounds
    c0, r0 = int(np.floor(x0 / cell)), int(np.floor(y0 / cell))
    cols, rows = np.meshgrid(np.arange(c0, int(np.ceil(x1 / cell))), np.arange(r0, int(np.ceil(y1 / cell))))
    cols, rows = cols.ravel(), rows.ravel()
    boxes = shapely.box(cols * cell, rows * cell, (cols + 1) * cell, (rows + 1) * cell)
    shapely.prepare(area)
    keep = shapely.intersects(area, boxes)
    return boxes[keep], cols[keep], rows[keep]


def key_areas(area, sources: gpd.GeoDataFrame, residential: gpd.GeoDataFrame, receptors: gpd.GeoDataFrame,
              water: gpd.GeoDataFrame, eco_redline: gpd.GeoDataFrame, method: dict, radii: dict) -> gpd.GeoDataFrame:
    """Risk index per grid cell. sources: geometry + hazard_class + type (source_type or medium)."""
    require_metric(sources=sources, residential=residential, receptors=receptors, water=water)
    cell = float(method["cell_m"])
    boxes, cols, rows = grid(area, cell)
    if not len(boxes):
        return gpd.GeoDataFrame({c: [] for c in COLUMNS}, geometry=[], crs=METRIC_CRS)
    centres = shapely.centroid(boxes)
    # hazard
    hazard = np.zeros(len(boxes))
    reach = [max(radii.get(str(h), [0])) for h in sources["hazard_class"]]
    weight = [method["class_weights"].get(str(h), 0.0) *
              method["type_weights"].get(str(t), method["type_weights"]["default"])
              for h, t in zip(sources["hazard_class"], sources["type"])]
    tree = shapely.STRtree(centres)
    for geom, r, w in zip(sources.geometry.values, reach, weight):
        if r > 0 and w > 0:
            hazard[tree.query(geom, predicate="dwithin", distance=r)] += w
    # exposure
    index = {(c, r): i for i, (c, r) in enumerate(zip(cols, rows))}

    def cell_of(points) -> np.ndarray:
        xy = shapely.get_coordinates(points).reshape(-1, 2)
        keys = zip(np.floor(xy[:, 0] / cell).astype(int), np.floor(xy[:, 1] / cell).astype(int))
        return np.array([index.get(k, -1) for k in keys], dtype=int)

    people = np.zeros(len(boxes))
    res = residential.geometry.values
    if len(res):
        box_tree = shapely.STRtree(boxes)
        pairs = box_tree.query(res, predicate="intersects")  # (residential index, cell index)
        share = shapely.area(shapely.intersection(res[pairs[0]], boxes[pairs[1]])) / shapely.area(res[pairs[0]])
        np.add.at(people, pairs[1], residential["population"].to_numpy(dtype=float)[pairs[0]] * share)
    exposure = people / float(method["people_per_point"])
    for frame, field, weights in ((receptors, "kind", method["receptor_weights"]), (water, "tier", method["water_weights"])):
        if len(frame):
            where = cell_of(frame.geometry.values)
            w = np.array([weights.get(str(k), 0.0) for k in frame[field]])
            ok = where >= 0
            np.add.at(exposure, where[ok], w[ok])
    eco_share = np.zeros(len(boxes))
    if eco_redline is not None and len(eco_redline):
        eco = shapely.union_all(eco_redline.geometry.values)
        shapely.prepare(eco)
        hit = np.flatnonzero(shapely.intersects(eco, boxes))
        eco_share[hit] = shapely.area(shapely.intersection(boxes[hit], eco)) / (cell * cell)
        exposure += float(method["eco_redline_weight"]) * eco_share
    risk = np.round(hazard * (1.0 + exposure), 3)  # classed as published: no 3.9996 shown as 4.0 yet 低
    level = np.where(risk >= method["high"], "高", np.where(risk >= method["medium"], "中", "低"))
    keep = risk > 0
    frame = gpd.GeoDataFrame({
        "cell": [f"{c}_{r}" for c, r in zip(cols[keep], rows[keep])],
        "risk_class": level[keep], "risk_index": risk[keep], "hazard": np.round(hazard[keep], 3),
        "exposure": np.round(exposure[keep], 3), "population": np.round(people[keep]).astype(int),
        "eco_share": np.round(eco_share[keep], 3)}, geometry=_clip(boxes[keep], area), crs=METRIC_CRS)
    return frame.reset_index(drop=True)


def _clip(boxes: np.ndarray, area) -> np.ndarray:
    """Cells cut to the area; only the cells on its boundary are intersected (the boundary has many vertices)."""
    out = boxes.copy()
    edge = ~shapely.contains_properly(area, boxes)  # area is prepared by grid()
    out[edge] = _polygonal(shapely.intersection(boxes[edge], area))
    return out


def _polygonal(geoms: np.ndarray) -> np.ndarray:
    """Only the areas of each geometry (a cell cut by the boundary may also yield a line or point)."""
    out = geoms.copy()
    for i in np.flatnonzero(shapely.get_type_id(geoms) == 7):  # GeometryCollection
        parts = [p for p in shapely.get_parts(geoms[i]) if p.geom_type in ("Polygon", "MultiPolygon")]
        out[i] = shapely.union_all(parts) if parts else shapely.Polygon()
    return out
