"""Between the routes and the analysis: which layers and rules each analysis takes, input checks, and the
structures built once per data version (zones, their STR-tree, baselines), so that a siting check only
queries prepared geometry. Every threshold comes from ctx.rules (gis_service/rules/canal.toml)."""

from __future__ import annotations

import math
import threading

import geopandas as gpd
import numpy as np
import orjson
import pandas as pd
import shapely
import shapely.geometry

from .. import crs
from ..domains import SYSTEM, DomainContext
from ..errors import GisError, RuleFileError, bad_parameter, shown
from . import analysis
from .analysis import Baseline, PreparedZones, SitingRules, ZoneSpec

CHANNELS, BOUNDARIES, CORRIDORS = "canal_channels", "river_boundaries", "green_corridors"
VILLAGES, HERITAGE, CITY, COUNTIES = "villages", "heritage_sites", "city_boundary", "counties"
NEIGHBOURS = "neighbor_counties"
LAND_USE, PLOTS, ZONES = "land_use", "plots", "canal_zones"
CONTROL_ZONES = "canal_control_zones"  # drawn by planners (control_zones.py), internal: read as SYSTEM
PLOT_FIELDS = ["dkbm", "village_code", "county_adcode", "is_basic_farmland"]  # never a personal field
GEOMETRY_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"}
OTHER_SECTORS = {"other", "其他"}
# Village list columns with their Chinese headers (CSV and Excel).
VILLAGE_HEADERS = {
    "name": "村名", "code": "村级区划代码（12位）", "township": "乡镇（街道）", "county": "县区", "river": "河流",
    "bank_zh": "岸别（面向下游）", "distance_m": "距河道距离（米）", "baseline": "量算基线",
    "position_source": "位置来源", "position_uncertainty_m": "位置不确定度（米）", "borderline": "可能在界线另一侧",
    "lon": "经度（CGCS2000）", "lat": "纬度（CGCS2000）", "remediation_items": "整治内容", "responsible_units": "责任单位",
    "deadline": "完成时限", "demo": "点位为演示数据"}
BASELINE_ZH = analysis.BASELINE_ZH
# Nesting depth of a position in each GeoJSON type's coordinates (0: the coordinates are one position).
POSITION_DEPTH = {"Point": 0, "MultiPoint": 1, "LineString": 1, "MultiLineString": 2, "Polygon": 2, "MultiPolygon": 3}


def _rounded(coords: np.ndarray) -> np.ndarray:
    return np.round(coords, 7)  # 1e-7° ≈ 1 cm, as the store's pre-serialised GeoJSON


def to_lonlat(geoms) -> np.ndarray:
    """EPSG:4548 geometries in lon/lat (CGCS2000), rounded to about 1 cm."""
    return shapely.transform(crs.transform_geometry(geoms, crs.METRIC_CRS, crs.STORAGE_CRS), _rounded)


def feature_collection(frame: gpd.GeoDataFrame, **members) -> dict:
    """A GeoJSON FeatureCollection (lon/lat) from a metric frame; extra members added at the top level."""
    props = orjson.loads(pd.DataFrame(frame.drop(columns=frame.geometry.name)).to_json(orient="records",
                                                                                         force_ascii=False))
    geoms = to_lonlat(frame.geometry.values)
    features = [{"type": "Feature", "properties": p, "geometry": orjson.loads(shapely.to_geojson(g))}
                for p, g in zip(props, geoms)]
    return {"type": "FeatureCollection", "features": features, **members}


class CanalService:
    """The canal analyses over the live layers and rules of one DomainContext."""

    def __init__(self, ctx: DomainContext):
        self.ctx = ctx
        self._cache: dict[str, tuple] = {}
        self._lock = threading.RLock()

    # --- layers, rules, caching ------------------------------------------------------------------------
    def has(self, layer_id: str) -> bool:
        layer = self.ctx.catalog.get(layer_id)
        return layer is not None and self.ctx.store.exists(layer)

    def _version(self, layer_ids) -> tuple:
        return tuple(self.ctx.store.version(self.ctx.catalog.get(i)) if self.has(i) else None for i in layer_ids)

    def _cached(self, name: str, layer_ids, build):
        """build() once per version of the layers it reads (ctx.frame is cached the same way)."""
        version = self._version(layer_ids)
        with self._lock:
            hit = self._cache.get(name)
            if hit is not None and hit[0] == version:
                return hit[1]
            value = build()
            self._cache[name] = (version, value)
            return value

    def rule(self, rule_id: str):
        return self.ctx.rules.rule(rule_id)

    def value(self, rule_id: str):
        return self.ctx.rules.value(rule_id)

    def rules_applied(self, *ids: str) -> list[dict]:
        return [self.rule(i).as_dict() for i in ids]

    def demo_caveats(self, *layer_ids: str) -> list[str]:
        out = []
        for layer_id in layer_ids:
            layer = self.ctx.catalog.get(layer_id)
            if layer is not None and self.has(layer_id) and layer.demo and self.ctx.store.origin(layer) != "imported":
                out.append(f"{layer.title_zh}为演示数据，结果仅供示意")
        return out

    # --- baselines and zones ---------------------------------------------------------------------------
    def baselines(self) -> list[Baseline]:
        return self._cached("baselines", (CHANNELS, BOUNDARIES), self._build_baselines)

    def _build_baselines(self) -> list[Baseline]:
        use_boundary = self.value("measurement_baseline") == "river_boundary" and self.has(BOUNDARIES)
        boundaries = self.ctx.frame(BOUNDARIES) if use_boundary else None
        return analysis.baselines(self.ctx.frame(CHANNELS), list(self.value("canal_rivers")), boundaries)

    def zone_set(self) -> analysis.ZoneSet:
        return self._cached("zones", (CHANNELS, BOUNDARIES, CITY, COUNTIES, NEIGHBOURS), self._build_zones)

    def _build_zones(self) -> analysis.ZoneSet:
        neighbours = self.ctx.frame(NEIGHBOURS) if self.has(NEIGHBOURS) else None
        result = analysis.zones(self.baselines(), zone_specs(self.ctx.rules), self.ctx.frame(CITY),
                                self.ctx.frame(COUNTIES), neighbours)
        have = {b.river for b in self.baselines()}
        result.caveats += [f"河道图层中没有{r}，未生成其分区" for r in self.value("canal_rivers") if r not in have]
        return result

    def prepared(self) -> PreparedZones:
        """The zones and the planners' current control zones, ready for checks: rebuilt when a zone input
        changes, and (only the control-zone part) whenever the layer canal_control_zones is republished, i.e.
        after every create, edit or delete in any worker process."""
        zones = self._cached("prepared_zones", (CHANNELS, BOUNDARIES, CITY, COUNTIES, NEIGHBOURS),
                             lambda: PreparedZones.build(self.zone_set().frame, self.baselines()))
        return self._cached("prepared", (CHANNELS, BOUNDARIES, CITY, COUNTIES, NEIGHBOURS, CONTROL_ZONES),
                            lambda: zones.with_control(self._control_frame()))

    def _control_frame(self) -> gpd.GeoDataFrame | None:
        if not self.has(CONTROL_ZONES):
            return None
        frame = self.ctx.frame(CONTROL_ZONES, who=SYSTEM)  # an internal layer: read by the system
        return frame[analysis.CONTROL_FIELDS + [frame.geometry.name]]

    def boundary_half_width(self) -> float:
        """How far the river management boundaries reach from their channels (0 without any): the corridor
        starts beyond them, so the width probe must reach further (check_rules)."""
        if not (self.has(CHANNELS) and self.has(BOUNDARIES)):
            return 0.0
        found = analysis.baselines(self.ctx.frame(CHANNELS), list(self.value("canal_rivers")),
                                   self.ctx.frame(BOUNDARIES))
        return round(max((b.half_width() for b in found), default=0.0), 1)

    # --- inside Langfang -------------------------------------------------------------------------------
    def city(self) -> tuple[shapely.Geometry, gpd.GeoDataFrame | None]:
        """The city (one prepared geometry, EPSG:4548) and the neighbouring districts, when built."""
        def build():
            shape = shapely.union_all(self.ctx.frame(CITY).geometry.values)
            shapely.prepare(shape)
            return shape, (self.ctx.frame(NEIGHBOURS) if self.has(NEIGHBOURS) else None)
        return self._cached("city", (CITY, NEIGHBOURS), build)

    def require_in_city(self, metric: shapely.Geometry) -> list[str]:
        """Caveats for a geometry (EPSG:4548) partly outside Langfang; 422 ``outside_langfang`` for one wholly
        outside (the coordinate check lets through anything within 20 km of the city's extent, for the
        likely-mistake messages; the rules apply in the city only)."""
        city, neighbours = self.city()
        cov = analysis.city_coverage(metric, city, neighbours)
        in_zh = f"（位于{'、'.join(cov.outside_in)}）" if cov.outside_in else ""
        in_en = f" (in {', '.join(cov.outside_in)})" if cov.outside_in else ""
        if not cov.touches_city:
            raise GisError("outside_langfang",
                           f"几何位于廊坊市界外{in_zh}，距廊坊市界 {cov.distance_m:.0f} 米；本系统只审查廊坊市境内的项目和管控区",
                           f"the geometry lies outside Langfang{in_en}, {cov.distance_m:.0f} m from the city "
                           "boundary; only projects and zones in Langfang are checked", 422)
        if not cov.within_city:
            return [f"几何约 {cov.outside_share:.0%} 在廊坊市界外{in_zh}；廊坊的管控规定只适用于市界内的部分，"
                    "市界外部分须按所在地的规定另行审查"]
        return []

    def derived_layers(self) -> dict[str, gpd.GeoDataFrame]:
        """The zones as the OGC collection canal_zones (published at start-up)."""
        return {ZONES: self.zone_set().frame}

    def zones_geojson(self, river: str | None, kind: str | None, county: str | None) -> dict:
        zs = self.zone_set()
        frame = zs.frame
        for name, value, column in (("river", river, "river"), ("kind", kind, "kind"), ("county", county, "county")):
            if value is not None:
                frame = frame[frame[column] == self._one_of(name, value, self._choices(column))]
        clipped = [c for c in zs.clipped
                   if (river is None or c["river"] == river) and (kind is None or c["kind"] == kind)]
        return feature_collection(
            frame, clipped_outside_city=clipped, baseline=self._baseline_notes(),
            rules_applied=self.rules_applied("village_remediation_distance_m", "green_corridor_min_width_m",
                                             "core_monitoring_zone_width_m", "measurement_baseline"),
            caveats=zs.caveats + self.demo_caveats(CHANNELS, BOUNDARIES))

    def _choices(self, column: str) -> list[str]:
        if column == "kind":
            return list(analysis.KIND_ZH)
        if column == "river":
            return list(self.value("canal_rivers"))
        if column == "bank":
            return ["left", "right"]
        return list(self.ctx.frame(COUNTIES)["name"])

    @staticmethod
    def _one_of(name: str, value: str, choices: list[str]) -> str:
        if value not in choices:
            raise bad_parameter(name, f"须为 {'、'.join(choices)} 之一", f"must be one of {', '.join(choices)}")
        return value

    def _baseline_notes(self) -> list[dict]:
        return [{"river": b.river, "baseline": b.method, "baseline_zh": BASELINE_ZH[b.method]}
                for b in self.baselines()]

    # --- villages --------------------------------------------------------------------------------------
    def village_list(self, within_m: float | None, river: str | None, county: str | None) -> dict:
        limit = self.rule("village_remediation_distance_m")
        within = float(limit.value if within_m is None else within_m)
        most = self.value("villages_within_max_m")
        if not 0 < within <= most:
            raise bad_parameter("within_m", f"须大于0且不超过 {most} 米", f"must be > 0 and at most {most} m")
        if river is not None:
            self._one_of("river", river, self._choices("river"))
        baselines = [b for b in self.baselines() if river is None or b.river == river]
        rows = analysis.villages_within(baselines, self.ctx.frame(VILLAGES), within)
        if county is not None:
            rows = rows[rows["county"] == self._one_of("county", county, self._choices("county"))]
        lonlat = shapely.get_coordinates(to_lonlat(rows.geometry.values)) if len(rows) else np.zeros((0, 2))
        rows = pd.DataFrame(rows.drop(columns="geometry")).assign(lon=lonlat[:, 0], lat=lonlat[:, 1])
        rows["bank_zh"] = rows["bank"].map(analysis.BANK_ZH)
        rows["remediation_items"] = [list(self.value("village_remediation_items"))] * len(rows)
        rows["responsible_units"] = [list(self.value("village_remediation_units"))] * len(rows)
        rows["deadline"] = self.value("village_remediation_deadline")
        rows["generated_position"] = rows["position_source"].eq("generated")
        caveats = self.demo_caveats(CHANNELS)
        generated = int(rows.drop_duplicates("code")["generated_position"].sum())
        if generated:
            caveats.append(f"{generated} 个村庄的点位为生成数据（position_source = generated，非实际位置），"
                           "其距离与岸别仅供示意；村名与代码为统计用区划代码")
        if within != limit.value:
            caveats.append(f"查询距离 {within:g} 米不同于文件规定的 {limit.value:g} 米；整治内容、单位和时限按文件规定列出")
        if rows["borderline"].any():
            caveats.append(f"{int(rows['borderline'].sum())} 个村庄的位置不确定度可能使其落在距离界线另一侧（borderline）")
        return {
            "within_m": within, "count": int(rows["code"].nunique()),
            "by_county": _counts(rows, "county"), "by_river": _counts(rows, "river"),
            "villages": orjson.loads(rows.to_json(orient="records", force_ascii=False)),
            "baseline": self._baseline_notes(),
            "rules_applied": self.rules_applied("village_remediation_distance_m", "village_remediation_items",
                                                "village_remediation_units", "village_remediation_deadline",
                                                "canal_rivers", "measurement_baseline"),
            "caveats": caveats}

    @staticmethod
    def village_table(result: dict) -> pd.DataFrame:
        """The village list with Chinese headers, lists joined with 、 (for CSV and Excel)."""
        rows = pd.DataFrame(result["villages"], columns=list(VILLAGE_HEADERS))
        for col in ("remediation_items", "responsible_units"):
            rows[col] = rows[col].map(lambda v: "、".join(v) if isinstance(v, list) else v)
        rows["baseline"] = rows["baseline"].map(BASELINE_ZH)
        for col in ("borderline", "demo"):
            rows[col] = rows[col].map({True: "是", False: "否"})
        return rows.rename(columns=VILLAGE_HEADERS)

    # --- green corridor --------------------------------------------------------------------------------
    def _green_baselines(self) -> list[Baseline]:
        rivers = set(self.value("green_corridor_rivers"))
        return [b for b in self.baselines() if b.river in rivers]

    def stations(self) -> gpd.GeoDataFrame:
        def build():
            self.ctx.layer(CORRIDORS)  # 503 with the layer named when it is not built yet
            return analysis.corridor_widths(
                self._green_baselines(), self.ctx.frame(CORRIDORS), self.ctx.frame(COUNTIES),
                float(self.value("green_belt_station_spacing_m")), float(self.value("green_belt_probe_length_m")),
                float(self.value("green_corridor_min_width_m")))
        return self._cached("stations", (CHANNELS, BOUNDARIES, CORRIDORS, COUNTIES), build)

    def shortfalls(self, river: str | None, bank: str | None, county: str | None) -> dict:
        for name, value, choices in (("river", river, list(self.value("green_corridor_rivers"))),
                                     ("bank", bank, self._choices("bank")), ("county", county, None)):
            if value is not None:
                self._one_of(name, value, choices or self._choices(name))
        stations = self.stations()
        result = analysis.shortfalls(stations, self._green_baselines(), float(self.value("green_corridor_min_width_m")))
        wanted = {"river": river, "bank": bank, "county": county}
        sections, summary = _where(result.sections, wanted), _where(result.summary, wanted)
        totals = {"shortfall_length_m": round(float(summary["shortfall_length_m"].sum()), 1),
                  "missing_area_m2": round(float(summary["missing_area_m2"].sum()), 1)}
        totals["missing_area_mu"] = round(totals["missing_area_m2"] / analysis.M2_PER_MU, 2)
        caveats = self.demo_caveats(CORRIDORS, CHANNELS) + [
            "文件要求在“宜绿化地段”建设；本系统没有宜绿化地段图层，按全部河段均宜绿化计",
            f"{result.stations_outside} 个量测点的绿廊一侧不在廊坊市内（界河对岸），未计入"]
        return {
            "method": {"spacing_m": self.value("green_belt_station_spacing_m"),
                       "probe_length_m": self.value("green_belt_probe_length_m"),
                       "description_zh": "沿河道每隔固定间距作垂直于河道的射线，量测该岸绿廊多边形在射线上的长度；"
                                         "无绿廊处宽度为0；每个量测点代表一个间距的河段；县区按所需绿廊带中点所在县区"},
            "min_width_m": self.value("green_corridor_min_width_m"),
            "totals": totals,
            "summary": orjson.loads(summary.to_json(orient="records", force_ascii=False)),
            "sections": feature_collection(sections),
            "deadline": self.value("green_corridor_deadline"),
            "responsible_units": self.value("green_corridor_units"),
            "rules_applied": self.rules_applied("green_corridor_min_width_m", "green_corridor_rivers",
                                                "green_belt_station_spacing_m", "green_belt_probe_length_m",
                                                "green_corridor_units", "green_corridor_deadline"),
            "caveats": caveats}

    # --- farmland conflicts ----------------------------------------------------------------------------
    def conflicts(self, source: str, county: str | None, limit: int | None) -> dict:
        if county is not None:
            self._one_of("county", county, self._choices("county"))
        result, corridor_layer = self._cached(f"conflicts:{source}", (CHANNELS, BOUNDARIES, CITY, COUNTIES, CORRIDORS,
                                                                       LAND_USE, PLOTS, VILLAGES),
                                              lambda: self._build_conflicts(source))
        pick = (lambda f: f[f["county"] == county]) if county else (lambda f: f)
        plots = pick(result.plots)
        return {
            "corridor_source": source, "corridor_layer": corridor_layer,
            "corridor_area": analysis.area_units(result.corridor_area_m2),
            "by_county": _records(pick(result.counties)), "land_use": _records(pick(result.land_use)),
            "by_village": _records(pick(result.villages)), "plots_total": len(plots),
            "plots": _records(plots if limit is None else plots.head(limit)),
            "rules_applied": self.rules_applied("no_afforestation_on_cultivated_land", "no_trees_on_basic_farmland"),
            "caveats": self.demo_caveats(corridor_layer, LAND_USE, PLOTS) + [
                "冲突面积为绿廊与耕地、永久基本农田、承包地块的叠加面积；是否“违规占用”须按用地审批核实"]}

    def _build_conflicts(self, source: str):
        if source == "corridors":
            self.ctx.layer(CORRIDORS)
            corridor, layer = self.ctx.frame(CORRIDORS), CORRIDORS
        else:
            zones = self.zone_set().frame
            corridor, layer = zones[zones["kind"] == "green_belt"], ZONES
        plots = self.ctx.frame(PLOTS)[PLOT_FIELDS + ["geometry"]]
        villages = self.ctx.frame(VILLAGES)
        counties = self.ctx.frame(COUNTIES)
        result = analysis.farmland_conflicts(
            corridor, self.ctx.frame(LAND_USE), plots, list(self.value("no_afforestation_on_cultivated_land")),
            list(self.value("no_trees_on_basic_farmland")), dict(zip(counties["adcode"].astype(int), counties["name"])),
            dict(zip(villages["code"], villages["name"])))
        return result, layer

    # --- siting check ----------------------------------------------------------------------------------
    def sector(self, value: str | None) -> dict | None:
        """The negative-list entry for a sector id or Chinese title; {"sector": "other"} for one not listed."""
        if value is None or value.strip() == "":
            return None
        entries = self.value("negative_list")
        found = next((e for e in entries if value.strip() in (e["sector"], e["title_zh"])), None)
        if found is not None:
            return found
        if value.strip() in OTHER_SECTORS:
            return {"sector": "other"}
        choices = [e["sector"] for e in entries] + ["other"]
        raise GisError("unknown_sector", f"未知的行业 {shown(value)}，可选：{'、'.join(choices)}（不在负面清单上的填 other）",
                       f"unknown sector {shown(value)}; choose one of {', '.join(choices)} (other: not on the list)", 422)

    def project_geometry(self, geojson: dict, coord_sys: str | None) -> tuple[shapely.Geometry, shapely.Geometry]:
        """(lon/lat, metres) of a proposed project; 422 with what is wrong for anything unusable.

        The parsed JSON is walked first (check_geojson: types, positions, ring closure, vertex count against
        canal.check_max_vertices), so shapely never builds an oversized or malformed geometry; a line must not
        cross itself (is_simple), a polygon must be valid."""
        check_geojson(geojson, int(self.value("check_max_vertices")))
        try:
            geom = shapely.geometry.shape(geojson)
        except Exception as exc:  # shapely raises several kinds for malformed coordinates
            raise _bad_geometry("malformed_geometry", f"GeoJSON 坐标格式错误：{exc}",
                                f"malformed GeoJSON coordinates: {exc}") from None
        if geom.is_empty:
            raise _bad_geometry("empty_geometry", "几何为空", "the geometry is empty")
        crossing = _self_crossing(geom)
        if crossing is not None:
            x, y = crossing
            raise _bad_geometry("invalid_geometry", f"线自相交（Self-intersection），位置约 ({x:g}, {y:g})",
                                f"invalid geometry: the line crosses itself (Self-intersection) near ({x:g}, {y:g})")
        lonlat = crs.geometry_to_storage(geom, coord_sys)  # 422 with the likely mistake outside Langfang + 20 km
        metric = crs.transform_geometry(lonlat, crs.STORAGE_CRS, crs.METRIC_CRS)
        if not shapely.is_valid(metric):
            why = shapely.is_valid_reason(metric)
            raise _bad_geometry("invalid_geometry", f"几何无效（自相交等）：{why}",
                                f"invalid geometry (self-intersection …): {why}")
        return lonlat, metric

    def check(self, geojson: dict, coord_sys: str | None, sector: str | None) -> dict:
        entry = self.sector(sector)
        lonlat, metric = self.project_geometry(geojson, coord_sys)
        outside = self.require_in_city(metric)  # 422 outside_langfang when wholly outside the city
        verdict = analysis.check_siting(metric, self.prepared(), self.ctx.frame(HERITAGE), siting_rules(self.ctx.rules),
                                        entry)
        return {"verdict": verdict.verdict, "verdict_zh": verdict.verdict_zh, "reasons": verdict.reasons,
                "zones": verdict.zones, "control_zones": verdict.control_zones, "heritage": verdict.heritage,
                "negative_list": verdict.negative_list, "nearest_zone_edge_m": verdict.nearest_zone_edge_m,
                "geometry": orjson.loads(shapely.to_geojson(shapely.transform(lonlat, _rounded))),
                "sector": entry["sector"] if entry else None,
                "caveats": outside + verdict.caveats + self.demo_caveats(CHANNELS, HERITAGE)}

    def negative_list(self) -> dict:
        return {"sectors": self.value("negative_list"), "rules_applied": self.rules_applied("negative_list")}


def zone_specs(rules) -> list[ZoneSpec]:
    """The three zone kinds with their widths and rivers, from the canal rules (a DomainRules)."""
    rivers = tuple(rules.value("canal_rivers"))
    return [ZoneSpec("village_remediation", float(rules.value("village_remediation_distance_m")), rivers,
                     rules.rule("village_remediation_distance_m").key),
            ZoneSpec("green_belt", float(rules.value("green_corridor_min_width_m")),
                     tuple(rules.value("green_corridor_rivers")), rules.rule("green_corridor_min_width_m").key),
            ZoneSpec("core_monitoring", float(rules.value("core_monitoring_zone_width_m")), rivers,
                     rules.rule("core_monitoring_zone_width_m").key)]


def siting_rules(rules) -> SitingRules:
    """What a siting verdict needs from the canal rules (a DomainRules): values and citations."""
    ids = ("village_remediation_distance_m", "green_corridor_min_width_m", "core_monitoring_zone_width_m",
           "heritage_ranges", "negative_list", "siting_verdicts")
    return SitingRules(rules.value("siting_verdicts"), rules.value("heritage_ranges"), rules.value("negative_list"),
                       {i: (rules.rule(i).key, rules.rule(i).citation()) for i in ids})


def check_rules(rules, river_half_width_m: float = 0.0) -> None:
    """The structured rules hold together (else start-up stops naming the file and key): every heritage class
    has 0 ≤ protection_m ≤ construction_control_m and the table a fallback class, every verdict and action is
    a known verdict (siting_verdicts.control_zones: one per control-zone kind), every negative-list entry names
    its sector, title and source; and across rules: the width probe reaches beyond the minimum corridor width
    plus ``river_half_width_m`` (how far the management boundaries reach from the centreline, from the data),
    and the remediation distance is one the village list accepts (≤ villages_within_max_m). A broken
    cross-rule condition names the rule a local override changed (var/rules.local.toml), else the first."""
    def fail(rule_id: str, zh: str, en: str):
        rule = rules.rule(rule_id)
        key = f"{rule.domain}.{rule_id}" if rule.overridden else f"{rule_id}.value"
        raise RuleFileError(rule.path, key, zh, en)

    def blame(*rule_ids: str) -> str:
        return next((i for i in rule_ids if rules.rule(i).overridden), rule_ids[0])

    if rules.value("measurement_baseline") not in BASELINE_ZH:
        fail("measurement_baseline", f"须为 {'、'.join(BASELINE_ZH)} 之一", f"must be one of {', '.join(BASELINE_ZH)}")
    ranges = rules.value("heritage_ranges")
    if analysis.OTHER_HERITAGE_CLASS not in ranges:
        fail("heritage_ranges", f"须有“{analysis.OTHER_HERITAGE_CLASS}”一类（未列级别时使用）",
             f"needs the fallback class '{analysis.OTHER_HERITAGE_CLASS}'")
    for name, r in ranges.items():
        if not (isinstance(r, dict) and 0 <= r.get("protection_m", -1) <= r.get("construction_control_m", -1)):
            fail("heritage_ranges", f"{name}：须 0 ≤ protection_m ≤ construction_control_m",
                 f"{name}: needs 0 <= protection_m <= construction_control_m")
    verdicts = rules.value("siting_verdicts")
    needed = {"heritage_protection", "heritage_construction_control", "village_remediation", "green_belt",
              "core_monitoring_sector_unknown", "core_monitoring_sector_not_listed", "outside_every_zone",
              "control_zones"}
    known = set(analysis.VERDICT_RANK)
    control = verdicts.get("control_zones") if isinstance(verdicts, dict) else None
    if (not isinstance(verdicts, dict) or set(verdicts) != needed
            or not all(isinstance(v, str) and v in known for k, v in verdicts.items() if k != "control_zones")):
        fail("siting_verdicts", f"须恰好有 {sorted(needed)}，取值为 {list(analysis.VERDICT_RANK)}",
             f"needs exactly {sorted(needed)}, each one of {list(analysis.VERDICT_RANK)}")
    kinds = set(analysis.CONTROL_KIND_ZH)
    if not (isinstance(control, dict) and set(control) == kinds
            and all(isinstance(v, str) and v in known for v in control.values())):
        fail("siting_verdicts", f"control_zones 须对每类管控区 {sorted(kinds)} 给出 {list(analysis.VERDICT_RANK)} 之一",
             f"control_zones needs one of {list(analysis.VERDICT_RANK)} for each kind {sorted(kinds)}")
    for entry in rules.value("negative_list"):
        if not (isinstance(entry, dict) and {"sector", "title_zh", "source"} <= set(entry)
                and entry.get("action") in analysis.VERDICT_RANK):
            fail("negative_list", "每项须有 sector、title_zh、source 与 action（prohibited|needs_review）",
                 "each entry needs sector, title_zh, source and an action (prohibited|needs_review)")
    probe, width = rules.value("green_belt_probe_length_m"), rules.value("green_corridor_min_width_m")
    if not probe > width + river_half_width_m:
        fail(blame("green_belt_probe_length_m", "green_corridor_min_width_m"),
             f"绿廊量测射线长度 green_belt_probe_length_m（{probe:g} 米）须大于最小宽度 green_corridor_min_width_m"
             f"（{width:g} 米）与河道管理范围半宽（{river_half_width_m:g} 米，river_boundaries 图层）之和，"
             "否则达标的绿廊也会被量成不足",
             f"green_belt_probe_length_m ({probe:g} m) must exceed green_corridor_min_width_m ({width:g} m) plus "
             f"the management boundary's half-width ({river_half_width_m:g} m, layer river_boundaries), else "
             "compliant corridors are measured short")
    distance, most = rules.value("village_remediation_distance_m"), rules.value("villages_within_max_m")
    if not distance <= most:
        fail(blame("village_remediation_distance_m", "villages_within_max_m"),
             f"村庄整治距离 village_remediation_distance_m（{distance:g} 米）须不超过村庄清单可查询的最大距离 "
             f"villages_within_max_m（{most:g} 米），否则默认清单无法查询",
             f"village_remediation_distance_m ({distance:g} m) must not exceed villages_within_max_m ({most:g} m), "
             "else the default village list is refused")


def _checked_service(ctx: DomainContext) -> CanalService:
    service = CanalService(ctx)
    check_rules(ctx.rules, service.boundary_half_width())
    return service


def service_for(ctx: DomainContext) -> CanalService:
    """The one CanalService of a context, shared by the routes, the map pages and derive (one set of caches)."""
    return ctx.shared(_checked_service)


def _bad_geometry(code: str, zh: str, en: str) -> GisError:
    return GisError(code, zh, en, 422)


def check_geojson(geojson, max_vertices: int) -> None:
    """A GeoJSON geometry's structure, checked on the parsed JSON before shapely builds anything (422 else).

    ``type`` a string naming a Point, LineString, Polygon or Multi* type (``unsupported_geometry``); every
    position a list of 2 or 3 finite numbers at the depth the type requires — a Point is one position, not
    ``[[x, y]]`` (``malformed_geometry``); a LineString has at least 2 positions, a polygon ring at least 4 with
    the last equal to the first (RFC 7946 §3.1.6; ``malformed_geometry``); empty coordinates are
    ``empty_geometry``. Positions are counted as they are walked and the walk stops at max_vertices + 1
    (``too_many_vertices``), so a body of millions of coordinates costs no more than max_vertices steps."""
    kind = geojson.get("type") if isinstance(geojson, dict) else None
    if not isinstance(kind, str) or kind not in POSITION_DEPTH:
        shown = kind if isinstance(kind, str) else type(kind).__name__
        raise _bad_geometry("unsupported_geometry",
                            f"几何类型须为点、线、面或其多部件形式（GeoJSON geometry 的 type 字符串），收到 {shown[:40]!r}",
                            f"geometry must be a GeoJSON Point, LineString, Polygon or Multi* geometry (a 'type' "
                            f"string), not {shown[:40]!r}")
    if "coordinates" not in geojson:
        raise _bad_geometry("malformed_geometry", "不是有效的 GeoJSON 几何：缺少 coordinates",
                            "malformed GeoJSON: not a GeoJSON geometry ('coordinates' is missing)")
    coords = geojson["coordinates"]
    if isinstance(coords, list) and not coords:
        raise _bad_geometry("empty_geometry", "几何为空", "the geometry is empty")
    count = 0

    def malformed(zh: str, en: str):
        return _bad_geometry("malformed_geometry", f"GeoJSON 坐标格式错误（{kind}）：{zh}",
                             f"malformed GeoJSON coordinates ({kind}): {en}")

    def position(p):
        nonlocal count
        if not (isinstance(p, list) and 2 <= len(p) <= 3 and all(_finite_number(v) for v in p)):
            raise malformed(f"坐标点须为 2 或 3 个有限数值的数组 [x, y]，收到 {_shown(p)}",
                            f"a position must be an array of 2 or 3 finite numbers [x, y], not {_shown(p)}")
        count += 1
        if count > max_vertices:
            raise _bad_geometry("too_many_vertices", f"几何顶点超过 {max_vertices} 个",
                                f"the geometry has more than {max_vertices} vertices")

    def walk(node, depth: int, what: str):
        """node holds positions `depth` levels down; `what` says what node is (for the shape checks)."""
        if depth == 0:
            return position(node)
        if not isinstance(node, list):
            raise malformed(f"此处须为数组，收到 {_shown(node)}", f"expected an array here, not {_shown(node)}")
        if what == "line" and len(node) < 2:
            raise malformed("线至少须有 2 个点", "a LineString needs at least 2 positions")
        if what == "ring":
            if len(node) < 4:
                raise malformed("面的环至少须有 4 个点（首尾相同）", "a polygon ring needs at least 4 positions (closed)")
        if what in ("parts", "polygon", "lines") and not node:
            raise malformed("多部件中有空的部件", "an empty part in a multi-part geometry")
        inner = {"polygon": "ring", "lines": "line", "polygons": "polygon"}.get(what)
        for child in node:
            walk(child, depth - 1, inner or "positions")
        if what == "ring" and node[0] != node[-1]:
            raise malformed(f"面的环未闭合：首点 {_shown(node[0])} 与末点 {_shown(node[-1])} 不同",
                            f"a polygon ring is not closed: first position {_shown(node[0])} differs from the "
                            f"last {_shown(node[-1])}")

    top = {"Point": "point", "MultiPoint": "positions", "LineString": "line", "MultiLineString": "lines",
           "Polygon": "polygon", "MultiPolygon": "polygons"}[kind]
    walk(coords, POSITION_DEPTH[kind], top)


def _finite_number(v) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer too large for a float
        return False


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


def _self_crossing(geom: shapely.Geometry) -> tuple[float, float] | None:
    """Where a LineString (or a part of a MultiLineString) crosses or touches itself other than at its ends
    meeting (a closed line is simple); None for a simple line or any other type. Coordinates as given."""
    if geom.geom_type not in ("LineString", "MultiLineString"):
        return None
    for line in shapely.get_parts(geom):
        if shapely.is_simple(line):
            continue
        c = shapely.get_coordinates(line)
        segments = shapely.linestrings(np.stack([c[:-1], c[1:]], axis=1))
        tree = shapely.STRtree(segments)
        a, b = tree.query(segments, predicate="intersects")
        keep = b > a + 1  # not itself, not its neighbour (which shares a vertex)
        first_last = (a == 0) & (b == len(segments) - 1) & np.all(c[0] == c[-1])
        for i, j in zip(a[keep & ~first_last], b[keep & ~first_last]):
            point = shapely.get_coordinates(shapely.intersection(segments[i], segments[j]))[0]
            return float(point[0]), float(point[1])
        return tuple(float(v) for v in c[0])  # repeated or collinear overlaps: report the start
    return None


def _where(frame: pd.DataFrame, equals: dict) -> pd.DataFrame:
    """Rows whose columns equal the given values (None: any)."""
    mask = np.ones(len(frame), dtype=bool)
    for column, value in equals.items():
        if value is not None:
            mask &= (frame[column] == value).to_numpy()
    return frame[mask]


def _counts(rows: pd.DataFrame, column: str) -> dict:
    """Distinct villages per value of column."""
    if not len(rows):
        return {}
    return {str(k): int(v) for k, v in rows.groupby(column)["code"].nunique().items()}


def _records(frame: pd.DataFrame) -> list[dict]:
    return orjson.loads(frame.to_json(orient="records", force_ascii=False))
