"""The environment domain's service over one DomainContext: the layers in metres, the exposure indexes, the
risk-zone register and the key areas, each rebuilt only when an input layer's data version changes
(DomainContext.frame returns the same cached frame until the layer is replaced)."""

from __future__ import annotations

import datetime as dt
import math
import threading

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from ..crs import METRIC_CRS, STORAGE_CRS, gcj02_to_wgs84, parse_coord_sys, to_storage_xy, transform_xy
from ..domains import SYSTEM, DomainContext
from ..errors import GisError, not_found
from .assess import Assessor
from .exposure import Exposure
from .grading import Grader
from .key_areas import key_areas
from .river import river_lines

SOURCE_LAYERS = {"risk_sources": ("RS", "source_type"), "pipelines": ("PL", "medium")}
INPUTS = ("residential_areas", "sensitive_receptors", "water_sources", "counties", "neighbor_counties",
          "eco_redline", "canal_channels", "risk_sources", "pipelines", "city_boundary")
RINGS_LAYER, KEY_AREAS_LAYER = "environment_risk_rings", "environment_key_areas"


class EnvironmentService:
    def __init__(self, ctx: DomainContext):
        self.ctx = ctx
        self.grader = Grader(ctx.rules)
        self._lock = threading.Lock()
        self._key = None
        self._built: dict = {}

    def frames(self) -> dict[str, gpd.GeoDataFrame]:
        return {layer: self.ctx.frame(layer, who=SYSTEM) for layer in INPUTS}

    def _state(self) -> dict:
        frames = self.frames()
        key = tuple(id(f) for f in frames.values())
        with self._lock:
            if key != self._key:
                self._built = self._build(frames)
                self._key = key
            return self._built

    def _build(self, f: dict) -> dict:
        rules = self.ctx.rules
        exposure = Exposure(f["residential_areas"], f["sensitive_receptors"], f["water_sources"], f["counties"],
                            f["neighbor_counties"], rules.value("home_admin"), f["eco_redline"])
        assessor = Assessor(exposure, river_lines(f["canal_channels"]), rules, self.grader)
        sources = []
        for layer, (prefix, type_field) in SOURCE_LAYERS.items():
            frame = f[layer]
            sources.append(gpd.GeoDataFrame({
                "source_id": [f"{prefix}{i}" for i in frame.index], "layer": layer, "name": frame["name"].astype(str),
                "hazard_class": frame["hazard_class"].astype(str), "type": frame[type_field].astype(str),
                "county": frame["county"].astype(str) if "county" in frame else None},
                geometry=frame.geometry.values, crs=METRIC_CRS))
        sources = pd.concat(sources, ignore_index=True)
        sources = gpd.GeoDataFrame(sources, geometry="geometry", crs=METRIC_CRS)
        return {"exposure": exposure, "assessor": assessor, "sources": sources, "frames": f, "register": None,
                "key_areas": None}

    # --- incidents -------------------------------------------------------------------------------------------
    def assessor(self) -> Assessor:
        return self._state()["assessor"]

    def locate(self, location, coord_sys) -> tuple[shapely.Point, tuple[float, float]]:
        """A GeoJSON point in coord_sys → (point in EPSG:4548, (lon, lat)); 422 outside Langfang + 20 km."""
        if not isinstance(location, dict) or location.get("type") != "Point":
            raise GisError("invalid_location", "字段 location 须为 GeoJSON 点 {\"type\": \"Point\", \"coordinates\": [x, y]}",
                           "field 'location' must be a GeoJSON Point", 422)
        coords = location.get("coordinates")
        if not isinstance(coords, list) or len(coords) != 2 or not all(
                isinstance(c, (int, float)) and not isinstance(c, bool) and _finite(c) for c in coords):
            raise GisError("invalid_location", "字段 location.coordinates 须为两个有限数 [x, y]",
                           "field 'location.coordinates' must be two finite numbers [x, y]", 422)
        try:
            lon, lat = to_storage_xy(coords[0], coords[1], coord_sys)
        except GisError as exc:
            if exc.status != 422:
                raise
            name = "coord_sys" if exc.code == "bad_coord_sys" else "location"
            exc.message_zh, exc.message_en = f"字段 {name}：{exc.message_zh}", f"field '{name}': {exc.message_en}"
            if exc.code != "coordinate_outside_langfang":
                raise
            # The plan also covers incidents outside the city that may affect it (L1247): a point in a
            # neighbouring county is accepted even beyond the platform's Langfang + 20 km box.
            point = self._in_neighbour(coords, coord_sys)
            if point is None:
                exc.message_zh += "（也不在周边县区内）"
                exc.message_en += " (nor in a neighbouring county)"
                raise
            return point
        x, y = transform_xy(lon, lat, STORAGE_CRS, METRIC_CRS)
        return shapely.Point(float(x[0]), float(y[0])), (float(lon[0]), float(lat[0]))

    def _in_neighbour(self, coords, coord_sys):
        cs = parse_coord_sys(coord_sys)
        with np.errstate(all="ignore"):
            lon, lat = (gcj02_to_wgs84(np.array([coords[0]], dtype=float), np.array([coords[1]], dtype=float))
                        if cs.epsg is None else transform_xy(coords[0], coords[1], cs.epsg, STORAGE_CRS))
        lon, lat = float(np.ravel(lon)[0]), float(np.ravel(lat)[0])
        if not (np.isfinite(lon) and np.isfinite(lat)):
            return None
        x, y = transform_xy(lon, lat, STORAGE_CRS, METRIC_CRS)
        point = shapely.Point(float(x), float(y))
        neighbours = self._state()["frames"]["neighbor_counties"]
        return (point, (lon, lat)) if neighbours.geometry.intersects(point).any() else None

    # --- the risk-zone register ------------------------------------------------------------------------------
    def register(self) -> dict:
        """Rings of every risk source with what lies inside each (cumulative: everything within the radius)."""
        state = self._state()
        with self._lock:
            if state["register"] is None:
                state["register"] = self._register(state)
            return state["register"]

    def _register(self, state) -> dict:
        radii = self.ctx.rules.value("ring_radii_m")
        kinds = self.ctx.rules.value("receptor_kinds")
        ex: Exposure = state["exposure"]
        rec_kind = ex.rec_kind
        rows, geoms = [], []
        for s in state["sources"].itertuples():
            inner = shapely.Polygon()
            for r in sorted(radii.get(s.hazard_class, [])):
                disk = s.geometry.buffer(r, quad_segs=16)
                inside = ex.inside(disk)
                names = ex.water_cols["name"][inside.water_sources]
                tiers = ex.water_cols["tier"][inside.water_sources]
                row = {"source_id": s.source_id, "source_layer": s.layer, "source_name": s.name,
                       "hazard_class": s.hazard_class, "source_type": s.type, "radius_m": float(r),
                       "population": int(round(inside.population)),
                       **{label: int((rec_kind[inside.receptors] == kind).sum()) for kind, label in kinds.items()},
                       "water_sources": int(len(names)),
                       "water_tiers": "、".join(f"{n}（{t}）" for n, t in zip(names, tiers)),
                       "receptor_names": list(ex.rec_cols["name"][inside.receptors]),
                       "water": [{"name": n, "tier": t} for n, t in zip(names, tiers)]}
                rows.append(row)
                geoms.append(disk.difference(inner))
                inner = disk
        frame = gpd.GeoDataFrame(rows, geometry=geoms, crs=METRIC_CRS) if rows else gpd.GeoDataFrame(
            {"source_id": []}, geometry=[], crs=METRIC_CRS)
        return {"frame": frame, "sources": state["sources"]}

    def rings_layer(self) -> gpd.GeoDataFrame:
        return self.register()["frame"].drop(columns=["receptor_names", "water", "source_layer"], errors="ignore")

    def source(self, source_id: str) -> dict:
        reg = self.register()
        hit = reg["sources"][reg["sources"]["source_id"] == source_id]
        if not len(hit):
            raise not_found(f"风险源 {source_id}", f"risk source '{source_id}'")
        s = hit.iloc[0]
        rings = reg["frame"][reg["frame"]["source_id"] == source_id]
        return {"source_id": source_id, "layer": s["layer"], "name": s["name"], "hazard_class": s["hazard_class"],
                "type": s["type"], "county": s["county"],
                "rings": [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items() if k != "geometry"}
                          for r in rings.drop(columns="geometry").to_dict("records")]}

    def register_summary(self) -> list[dict]:
        frame = self.register()["frame"]
        cols = [c for c in frame.columns if c not in ("geometry", "receptor_names", "water")]
        return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in frame[cols].to_dict("records")]

    # --- key areas -------------------------------------------------------------------------------------------
    def key_areas(self) -> gpd.GeoDataFrame:
        state = self._state()
        with self._lock:
            if state["key_areas"] is None:
                f = state["frames"]
                city = shapely.union_all(f["city_boundary"].geometry.values)
                state["key_areas"] = key_areas(city, state["sources"], f["residential_areas"], f["sensitive_receptors"],
                                               f["water_sources"], f["eco_redline"],
                                               self.ctx.rules.value("key_area_method"),
                                               self.ctx.rules.value("ring_radii_m"))
            return state["key_areas"]

    def data_date(self) -> str:
        """The newest write time among the input layers (the key areas' data date)."""
        stamps = []
        for layer_id in INPUTS:
            layer = self.ctx.catalog.get(layer_id)
            if layer is not None and layer.data_path.exists():
                stamps.append(layer.data_path.stat().st_mtime)
        return dt.datetime.fromtimestamp(max(stamps), dt.timezone.utc).strftime("%Y-%m-%d") if stamps else ""


def _finite(value) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return False


def service_for(ctx: DomainContext) -> EnvironmentService:
    return ctx.shared(EnvironmentService)
