"""Incident assessment (issue #7 item 4): threat zones for an air, water or soil release, what lies inside,
the cross-boundary fact, a provisional grade and whom to notify. Pure: frames and rules in, a dict out; the
input is validated here (422 naming the field) so that nothing is saved from a bad request.
"""

from __future__ import annotations

import math

import numpy as np
import orjson
import shapely

from ..crs import METRIC_CRS, STORAGE_CRS, transform_geometry, transform_xy
from ..errors import GisError, shown
from . import plume as plume_mod
from . import river as river_mod
from .exposure import Exposure, bearing_deg
from .grading import Grader

KINDS = ("air", "water", "soil", "unknown")
KIND_ZH = {"air": "大气", "water": "水体（河流）", "soil": "土壤", "unknown": "不明"}
WATER_TIER_ORDER = ("city", "county", "township")


def bad(field: str, zh: str, en: str, code: str = "invalid_source_term") -> GisError:
    return GisError(code, f"字段 {field} 无效：{zh}", f"field '{field}' is invalid: {en}", 422)


def _number(body: dict, field: str, low: float | None, high: float | None, required: bool = True,
            low_inclusive: bool = False) -> float | None:
    value = body.get(field)
    if value is None:
        if required:
            raise bad(field, "缺少此项（该类事件必填的源项）", "missing (a required source term for this kind)",
                      "missing_source_term")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad(field, f"须为有限数，收到 {shown(value)}", f"must be a finite number, got {shown(value)}")
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    if too_low or (high is not None and value > high):
        rng = f"{'[' if low_inclusive else '('}{low:g}, {high:g}]"
        raise bad(field, f"须在 {rng} 内，收到 {value:g}", f"must lie in {rng}, got {value:g}")
    return float(value)


class Assessor:
    """Assessments over one data version: the exposure indexes, the river lines, the rules."""

    def __init__(self, exposure: Exposure, rivers: list[tuple[str, shapely.LineString]], rules, grader: Grader):
        self.exposure, self.rules, self.grader = exposure, rules, grader
        self.parts = rivers
        self.chains = river_mod.chains(rivers, rules.value("river_join_gap_m"))
        self.river_tree = shapely.STRtree([line for _, line in rivers]) if rivers else None

    # --- validation ----------------------------------------------------------------------------------------
    def source_terms(self, body: dict) -> dict:
        """The validated source terms of body (kind, the terms for the kind, staff facts)."""
        kind = body.get("kind")
        if kind not in KINDS:
            raise bad("kind", f"须为 {'|'.join(KINDS)} 之一，收到 {shown(kind)}", f"must be one of {'|'.join(KINDS)}, got {shown(kind)}")
        limits = self.rules.value("release_limits")
        terms: dict = {"kind": kind}
        if kind == "air":
            terms["release_rate_g_s"] = _number(body, "release_rate_g_s", 0, limits["release_rate_g_s"])
            terms["duration_min"] = _number(body, "duration_min", 0, limits["duration_min"], required=False)
            wind = self.rules.value("wind_speed_range_m_s")
            terms["wind_speed_m_s"] = _number(body, "wind_speed_m_s", wind["min"], wind["max"], low_inclusive=True)
            terms["wind_from_deg"] = _number(body, "wind_from_deg", 0, 360, low_inclusive=True)
            levels = body.get("levels_of_concern_mg_m3")
            if not isinstance(levels, list) or not 1 <= len(levels) <= limits["levels"]:
                raise bad("levels_of_concern_mg_m3", f"须为1–{limits['levels']}个浓度（毫克/立方米）的列表，收到 {shown(levels)}",
                          f"must be a list of 1–{limits['levels']} concentrations (mg/m³), got {shown(levels)}",
                          "missing_source_term" if levels is None else "invalid_source_term")
            for i, v in enumerate(levels):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or \
                        not 0 < v <= limits["level_of_concern_mg_m3"]:
                    raise bad(f"levels_of_concern_mg_m3[{i}]", f"须为 (0, {limits['level_of_concern_mg_m3']:g}] 内的数，收到 {shown(v)}",
                              f"must be a number in (0, {limits['level_of_concern_mg_m3']:g}], got {shown(v)}")
            if len(set(levels)) != len(levels):
                raise bad("levels_of_concern_mg_m3", "浓度不能重复", "levels must differ")
            terms["levels_of_concern_mg_m3"] = sorted(float(v) for v in levels)
            daytime = body.get("daytime")
            if daytime is not None and not isinstance(daytime, bool):
                raise bad("daytime", f"须为 true 或 false，收到 {shown(daytime)}", f"must be true or false, got {shown(daytime)}")
            stability = body.get("stability")
            if stability is not None and not isinstance(stability, str):
                raise bad("stability", f"须为 A–F 之一，收到 {shown(stability)}", f"must be one of A–F, got {shown(stability)}")
            terms["stability"], terms["stability_basis"] = plume_mod.stability_class(
                stability, terms["wind_speed_m_s"], daytime, self.rules.value("stability_from_wind"))
            terms["daytime"] = daytime
        elif kind == "water":
            river = body.get("river")
            if river is not None and (not isinstance(river, str) or river not in {n for n, _ in self.parts}):
                names = "、".join(sorted({n for n, _ in self.parts}))
                raise bad("river", f"未知河流 {shown(river)}（可选：{names}）", f"unknown river {shown(river)} (known: {names})")
            terms["river"] = river
            terms["velocity_m_s"] = _number(body, "velocity_m_s", 0, limits["velocity_m_s"], required=False)
            terms["hours"] = _number(body, "hours", 0, limits["hours"])
        else:
            terms["radius_m"] = _number(body, "radius_m", 0, limits["radius_m"])
        facts = body.get("facts")
        terms["facts"] = self.grader.parse(facts) if facts not in (None, {}) else {}
        return terms

    # --- zones -----------------------------------------------------------------------------------------------
    def zones(self, origin: shapely.Point, terms: dict) -> tuple[list[dict], dict]:
        """[(zone dict with geometry in metres)], model notes."""
        kind = terms["kind"]
        if kind == "air":
            return self._air(origin, terms)
        if kind == "water":
            return self._water(origin, terms)
        r = terms["radius_m"]
        return [{"zone": "radius", "name_zh": f"影响半径 {r:g} 米", "geometry": origin.buffer(r, quad_segs=32),
                 "radius_m": r}], {"method": f"以事发点为圆心、半径 {r:g} 米的圆（{KIND_ZH[kind]}）", "caveats": [
                     "半径由现场人员给定，未模拟地下水或地表径流迁移"]}

    def _air(self, origin, terms):
        sig = self.rules.value("pg_sigma_rural")[terms["stability"]]
        p = plume_mod.Plume(terms["release_rate_g_s"], terms["wind_speed_m_s"], terms["wind_from_deg"],
                            tuple(sig["y"]), tuple(sig["z"]), float(self.rules.value("release_height_m")),
                            terms["stability"], true_north_grid_deg(origin))
        x_max, n = self.rules.value("plume_max_distance_m"), int(self.rules.value("plume_samples"))
        iso = self.rules.value("isolation_radius_m")
        zones = [{"zone": "isolation", "name_zh": f"初始隔离区（半径 {iso:g} 米）",
                  "geometry": origin.buffer(iso, quad_segs=32), "radius_m": iso}]
        for level in sorted(terms["levels_of_concern_mg_m3"], reverse=True):  # highest level (smallest) first
            fp = p.footprint((origin.x, origin.y), level, x_max, n)
            zones.append({"zone": "plume", "name_zh": f"浓度 ≥ {level:g} 毫克/立方米", "level_mg_m3": level,
                          "geometry": fp.geometry, "length_m": round(fp.length_m, 1),
                          "max_width_m": round(fp.max_width_m, 1), "truncated": fp.truncated})
        model = {"method": "高斯烟羽（地面连续点源，Pasquill–Gifford 扩散参数，Briggs 开阔乡村公式）",
                 "stability": terms["stability"], "stability_basis": terms["stability_basis"],
                 "downwind_deg": p.downwind_deg, "sigma_clause": self.rules.rule("pg_sigma_rural").citation(),
                 "caveats": list(plume_mod.CAVEATS_ZH), "_plume": p}
        if terms.get("duration_min"):
            travel = max((z.get("length_m", 0) for z in zones), default=0) / p.wind_speed_m_s / 60
            if travel > terms["duration_min"]:
                model["caveats"].insert(0, f"释放持续 {terms['duration_min']:g} 分钟，短于烟羽前锋到达最远边界所需的约 "
                                           f"{travel:.0f} 分钟：稳态范围偏保守")
        return zones, model

    def _water(self, origin, terms):
        if not self.chains:
            raise GisError("no_rivers", "河流图层无数据，无法追踪", "the river layer has no data", 503)
        names = [n for n, _ in self.parts]
        if terms["river"]:
            candidates = [i for i, n in enumerate(names) if n == terms["river"]]
            i = min(candidates, key=lambda k: self.parts[k][1].distance(origin))
        else:
            i = int(self.river_tree.nearest(origin))
            snap = self.rules.value("river_snap_max_m")
            if self.parts[i][1].distance(origin) > snap:
                raise bad("river", f"事发点 {snap:g} 米内没有河流，请指明河流", f"no river within {snap:g} m: name the river",
                          "missing_source_term")
        river = names[i]
        velocities = self.rules.value("river_velocity_m_s")
        v = terms["velocity_m_s"] or velocities.get(river, velocities["default"])
        chain_name, line = self.chains[i]
        t = river_mod.trace(line, chain_name, origin, v, terms["hours"])
        buffer_m = self.rules.value("river_zone_buffer_m")
        zone = {"zone": "river", "name_zh": f"{chain_name} 下游 {terms['hours']:g} 小时影响带（两岸各 {buffer_m:g} 米）",
                "geometry": shapely.union(t.reach.buffer(buffer_m), t.entry.buffer(buffer_m)),
                "length_m": round(t.length_m, 1), "reach": t.reach, "_trace": t, "_line": line}
        model = {"method": "沿河道中心线按平均流速推流", "river": river, "river_chain": chain_name,
                 "velocity_m_s": v, "velocity_basis": "现场给定" if terms["velocity_m_s"] else
                 f"默认流速（{self.rules.rule('river_velocity_m_s').citation()}）",
                 "entry_offset_m": round(t.offset_m, 1), "reach_length_m": round(t.length_m, 1),
                 "leaves_data": t.leaves_line, "caveats": list(river_mod.CAVEATS_ZH)}
        if t.leaves_line:
            model["caveats"].insert(0, f"{terms['hours']:g} 小时内污染前锋到达河道数据末端（约 "
                                       f"{(line.length - t.start_m) / v / 3600:.1f} 小时）：流出本市，须通报下游")
        return [zone], model

    # --- the whole assessment -------------------------------------------------------------------------------
    def assess(self, origin: shapely.Point, terms: dict) -> dict:
        zones, model = self.zones(origin, terms)
        plume, tr = model.pop("_plume", None), None
        cap = int(self.rules.value("max_listed_receptors"))
        ex = self.exposure
        out_zones, union = [], []
        kinds = self.rules.value("receptor_kinds")
        for z in zones:
            geom = z.pop("geometry")
            tr = z.pop("_trace", tr)
            line = z.pop("_line", None)
            reach = z.pop("reach", None)
            union.append(geom)
            inside = ex.inside(geom)
            rec = self._receptor_rows(origin, inside.receptors, ex.rec_xy, ex.rec_cols, plume, tr, line, cap)
            wat = self._receptor_rows(origin, inside.water_sources, ex.water_xy, ex.water_cols, plume, tr, line, None)
            counts = {label: int((ex.rec_kind[inside.receptors] == kind).sum()) for kind, label in kinds.items()}
            out_zones.append({**z, "area_m2": round(float(geom.area), 1), "population": round(inside.population),
                              "residential_areas": inside.residential[:cap], "receptor_count": int(len(inside.receptors)),
                              "receptor_counts": counts, "receptors": rec, "receptors_truncated": len(inside.receptors) > cap,
                              "water_sources": wat, "eco_redline": inside.eco_redline,
                              "geometry": _geojson(geom), **({"reach": _geojson(reach)} if reach is not None else {})})
        whole = shapely.union_all(union)
        admin = ex.admin(whole, origin)
        evacuation_people, _ = ex.people(whole)
        derived = self._derived_facts(terms["kind"], out_zones, admin, evacuation_people)
        facts = {**derived["facts"], **terms["facts"]}  # staff facts override the model's
        grading = self.grader.grade(facts)
        for t in grading.triggered:
            t["source"] = "staff" if t["criterion"] in terms["facts"] else ("model" if t["criterion"] in derived["facts"] else None)
        return {"kind": terms["kind"], "kind_zh": KIND_ZH[terms["kind"]], "zones": out_zones,
                "population_total": round(evacuation_people), "admin": admin, "model": model,
                "derived_facts": derived["facts"], "derived_reasons": derived["reasons"], "staff_facts": terms["facts"],
                "facts_used": facts, "grading": grading.as_dict(), "notify": self.notify(admin)}

    def _receptor_rows(self, origin, idx, xy, columns, plume, tr, line, cap) -> list[dict]:
        if not len(idx):
            return []
        pts = xy[idx]
        dist = np.hypot(*(pts - (origin.x, origin.y)).T)
        order = np.argsort(dist)
        if cap is not None:
            order = order[:cap]
        sel, pts, dist = idx[order], pts[order], dist[order]
        bearing = (bearing_deg((origin.x, origin.y), pts) - true_north_grid_deg(origin)) % 360.0  # from true north
        conc = plume.concentration((origin.x, origin.y), pts) if plume is not None else None
        arrival = None
        if tr is not None:
            chain = shapely.line_locate_point(line, shapely.points(pts))
            arrival = tr.arrival_h(chain)
        picked = {c: values[sel] for c, values in columns.items()}
        rows = []
        for k in range(len(sel)):
            row = {c: values[k] for c, values in picked.items()}
            row.update(distance_m=round(float(dist[k]), 1), bearing_deg=round(float(bearing[k]), 1))
            if conc is not None:
                row["concentration_mg_m3"] = float(f"{conc[k]:.4g}")
            if arrival is not None:
                row["arrival_h"] = None if np.isnan(arrival[k]) else round(float(arrival[k]), 2)
            rows.append(row)
        return rows

    def _derived_facts(self, kind: str, zones: list[dict], admin: dict, people: float) -> dict:
        facts, reasons = {}, []
        if people >= 1:
            facts["evacuated"] = int(round(people))
            reasons.append(f"影响区内居民约 {round(people)} 人（居民区按面积比例加权），按需疏散转移计入“疏散、转移人员”初判"
                           f"（{self.rules.rule('evacuation_zone').citation()}）")
        if admin["cross_boundary"]:
            facts["cross_boundary"] = admin["cross_boundary"]
            where = "、".join(admin["other_provinces"] or admin["other_cities"] or admin["counties"])
            reasons.append(f"影响区涉及 {where}：跨{ {'province': '省级', 'city': '设区的市级', 'county': '县级'}[admin['cross_boundary']]}行政区域")
        if kind in ("water", "soil", "unknown"):
            tiers = self.rules.value("water_source_tiers")
            threatened = [tiers.get(w.get("tier")) for z in zones for w in z["water_sources"]]
            threatened = [t for t in threatened if t]
            if threatened:
                worst = min(threatened, key=WATER_TIER_ORDER.index)
                facts["water_source_interrupted"] = worst
                reasons.append(f"影响区内有{ {'city': '市级', 'county': '县级', 'township': '乡镇级'}[worst]}集中式饮用水水源地，"
                               "假定其取水须中断（待核实）")
        return {"facts": facts, "reasons": reasons}

    def notify(self, admin: dict) -> list[dict]:
        rules = self.rules
        out = [{"to": who, "why": "事发地", "clause": rules.rule("notify_always").citation()}
               for who in rules.value("notify_always")]
        if admin["origin_county"]:
            out[0]["to"] = f"{admin['origin_county']}生态环境部门（事发地）"
        if len(admin["home_counties"]) > 1:
            for c in admin["home_counties"]:
                if c != admin["origin_county"]:
                    out.append({"to": f"{c}生态环境部门", "why": "跨县级行政区域",
                                "clause": rules.rule("notify_cross_county").citation()})
        if admin["other_cities"]:
            out += [{"to": f"{c}生态环境局", "why": "跨市级行政区域（通报相关市）",
                     "clause": rules.rule("notify_cross_city").citation()} for c in admin["other_cities"]]
            out += [{"to": who, "why": "跨市级行政区域（报告）", "clause": rules.rule("notify_cross_city").citation()}
                    for who in rules.value("notify_cross_city")[1:]]
        if admin["other_provinces"]:
            out += [{"to": who, "why": "跨省级行政区域（" + "、".join(admin["other_provinces"]) + "）",
                     "clause": rules.rule("notify_cross_province").citation()}
                    for who in rules.value("notify_cross_province")]
        return out


def true_north_grid_deg(origin: shapely.Point) -> float:
    """The grid bearing (EPSG:4548) of true north at origin: the meridian convergence, from the projection itself."""
    lon, lat = transform_xy(origin.x, origin.y, METRIC_CRS, STORAGE_CRS)
    x, y = transform_xy(lon, lat + 0.01, STORAGE_CRS, METRIC_CRS)
    return math.degrees(math.atan2(float(np.ravel(x)[0]) - origin.x, float(np.ravel(y)[0]) - origin.y))


def _geojson(geom) -> dict:
    g = transform_geometry(geom, METRIC_CRS, STORAGE_CRS)
    return orjson.loads(shapely.to_geojson(shapely.set_precision(g, 1e-7)))
