"""/api/environment: grading, the risk-zone register, incident assessments (saved, versioned) and key risk areas.

Access: posting and updating incidents — roles environment and admin; everything else — any signed-in caller
(the risk and receptor layers are internal). Bodies are read as JSON objects and validated in grading.py and
assess.py so that every 422 names the field and the rule limits (not code) bound the values.
"""

from __future__ import annotations

import orjson
import shapely
from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import Response

from .. import crs
from ..api.deps import ERROR_RESPONSES, principal, require_role
from ..auth import Principal
from ..domains import DomainContext
from ..errors import GisError
from ..maps.factory import display_geometries
from .assess import bad
from .records import WRITERS, IncidentStore
from .service import service_for

INPUT_FIELDS = ("location", "coord_sys", "kind", "release_rate_g_s", "duration_min", "wind_from_deg", "wind_speed_m_s",
                "stability", "daytime", "levels_of_concern_mg_m3", "river", "velocity_m_s", "hours", "radius_m",
                "facts", "client_ref", "note")
INCIDENT_EXAMPLE = {"location": {"type": "Point", "coordinates": [116.70, 39.52]}, "coord_sys": "wgs84", "kind": "air",
                    "release_rate_g_s": 2000, "duration_min": 30, "wind_from_deg": 225, "wind_speed_m_s": 2.5,
                    "stability": "D", "levels_of_concern_mg_m3": [3, 20, 100]}


DISPLAY_ZH = ("map：另给出地图绘制用的坐标 display_geometry、display_reach、display_location（高德底图时偏移为 GCJ-02，"
              "与地图工厂的图层一致）；geometry、lon、lat 仍为 CGCS2000")


def for_map(result: dict, settings) -> dict:
    """The incident with the coordinates the map pages draw (display_*): over a Gaode basemap shifted into
    GCJ-02 exactly as the maps factory shifts every overlay (display_geometries); else as stored."""
    out = dict(result, display_crs="gcj02" if settings.basemap == "gaode" else "wgs84")
    out["zones"] = [dict(z) for z in result.get("zones", [])]
    keys = [(z, k) for z in out["zones"] for k in ("geometry", "reach") if z.get(k) is not None]
    geoms = shapely.from_geojson([orjson.dumps(z[k]) for z, k in keys] +
                                 [orjson.dumps({"type": "Point", "coordinates": [result["lon"], result["lat"]]})])
    shown = display_geometries(geoms, settings)
    for (z, k), g in zip(keys, shown[:-1]):
        z[f"display_{k}"] = orjson.loads(shapely.to_geojson(g))
    out["display_location"] = {"lon": shown[-1].x, "lat": shown[-1].y}
    return out


def _json(body, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json")


def _inputs(body) -> dict:
    if not isinstance(body, dict):
        raise GisError("invalid_incident", "请求体须为 JSON 对象", "the body must be a JSON object", 422)
    unknown = sorted(set(body) - set(INPUT_FIELDS))
    if unknown:
        raise bad(unknown[0], "未知字段", "unknown field")
    ref = body.get("client_ref")
    if ref is not None and (not isinstance(ref, str) or not 1 <= len(ref) <= 100):
        raise bad("client_ref", "须为1–100个字符的文本", "must be a text of 1–100 characters")
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > 2000):
        raise bad("note", "须为不超过2000字的文本", "must be a text of at most 2000 characters")
    return {k: v for k, v in body.items() if v is not None}


def router(ctx: DomainContext) -> APIRouter:
    r = APIRouter(responses=ERROR_RESPONSES)
    service = service_for(ctx)
    store = IncidentStore(ctx.records, ctx.access_log)

    def answer(incident: dict, display: str | None, who: Principal, request: Request) -> dict:
        store.log_authors(who, incident["id"], [incident["saved_by"]], str(request.url))
        return for_map(incident, ctx.settings) if display == "map" else incident

    def assess(inputs: dict):
        coord_sys = inputs.get("coord_sys")
        if coord_sys is not None and not isinstance(coord_sys, str):
            raise bad("coord_sys", f"须为 {'|'.join(crs.COORD_SYSTEMS)} 之一", f"must be one of {'|'.join(crs.COORD_SYSTEMS)}")
        if "location" not in inputs:
            raise bad("location", "缺少事发位置（GeoJSON 点）", "missing (a GeoJSON Point)", "missing_location")
        origin, lonlat = service.locate(inputs["location"], coord_sys)
        assessor = service.assessor()
        terms = assessor.source_terms(inputs)
        result = assessor.assess(origin, terms)
        result["location"] = {"lon": lonlat[0], "lat": lonlat[1], "coord_sys_given": coord_sys or "wgs84"}
        return result, lonlat

    @r.get("/rules", summary="环境应急规则 Environmental emergency rules in force")
    def rules():
        return {"rules": [rule.as_dict() for rule in ctx.rules]}

    @r.post("/grade", summary="按附件1分级 Grade an incident from the facts known (Appendix 1)")
    def grade(facts: dict = Body(..., examples=[{"deaths": 3, "evacuated": 12000, "cross_boundary": "city"}]),
              who: Principal | None = Depends(principal)):
        require_role(who, None, "事件分级", "grade incidents")
        return _json(service.grader.grade(service.grader.parse(facts)).as_dict())

    @r.get("/risk-zones", summary="风险源周边环与其中的敏感目标、人口 Risk-source rings and what lies inside")
    def risk_zones(who: Principal | None = Depends(principal)):
        require_role(who, None, "查看风险区", "read risk zones")
        rows = service.register_summary()
        return _json({"count": len(rows), "rings": rows, "ogc_collection": "/ogc/collections/environment_risk_rings",
                      "rule": ctx.rules.rule("ring_radii_m").as_dict()})

    @r.get("/risk-zones/{source_id}", summary="一个风险源的各环 One risk source's rings")
    def risk_zone(source_id: str = Path(max_length=40, description="风险源编号，如 RS12、PL3"),
                  who: Principal | None = Depends(principal)):
        require_role(who, None, "查看风险区", "read risk zones")
        return _json(service.source(source_id))

    @r.post("/incidents", status_code=201, summary="评估并保存突发环境事件（环境、管理员）Assess and save an incident")
    def post_incident(request: Request, body: dict = Body(..., examples=[INCIDENT_EXAMPLE]),
                      who: Principal | None = Depends(principal),
                      display: str | None = Query(None, pattern="^map$", description=DISPLAY_ZH)):
        who = require_role(who, WRITERS, "登记突发环境事件", "post incidents")
        inputs = _inputs(body)
        result, lonlat = assess(inputs)  # everything computed (or refused) before anything is written
        saved, duplicate = store.create(who, inputs, result, lonlat)
        return _json(answer({**saved, "duplicate": duplicate}, display, who, request), 200 if duplicate else 201)

    @r.put("/incidents/{incident_id}", summary="更新事件（新风向、新人数），生成新版本 Update an incident: a new version")
    def put_incident(request: Request, incident_id: int = Path(ge=1, le=2**62), body: dict = Body(...),
                     who: Principal | None = Depends(principal),
                     display: str | None = Query(None, pattern="^map$", description=DISPLAY_ZH)):
        who = require_role(who, WRITERS, "更新突发环境事件", "update incidents")
        base = body.pop("base_version", None) if isinstance(body, dict) else None
        if base is not None and (isinstance(base, bool) or not isinstance(base, int)):
            raise bad("base_version", "须为整数版本号", "must be a whole version number")
        previous = store.previous_inputs(incident_id)
        change = _inputs(body)
        if "client_ref" in change:
            raise bad("client_ref", "更新时不能修改", "cannot be changed by an update")
        inputs = {**previous, **change}
        if "location" in change and "coord_sys" not in change:  # a new point is read in its own (default) system,
            inputs.pop("coord_sys", None)  # never in the one the previous point was given in (e.g. GCJ-02)
        if isinstance(previous.get("facts"), dict) and isinstance(change.get("facts"), dict):
            inputs["facts"] = {**previous["facts"], **change["facts"]}
        result, lonlat = assess(inputs)
        current = store.get(incident_id, who)["version"] if base is None else base
        return _json(answer(store.update(who, incident_id, current, inputs, result, lonlat), display, who, request))

    @r.get("/incidents", summary="事件列表（最新在前）Incidents, newest first")
    def incidents(limit: int = Query(100, ge=1, le=1000), who: Principal | None = Depends(principal)):
        who = require_role(who, None, "查看事件", "read incidents")
        rows = store.list(who, limit)
        return _json({"count": len(rows), "incidents": rows})

    @r.get("/incidents/{incident_id}", summary="事件当前版本 An incident (current version)")
    def incident(request: Request, incident_id: int = Path(ge=1, le=2**62), who: Principal | None = Depends(principal),
                 display: str | None = Query(None, pattern="^map$", description=DISPLAY_ZH)):
        who = require_role(who, None, "查看事件", "read incidents")
        return _json(answer(store.get(incident_id, who), display, who, request))

    @r.get("/incidents/{incident_id}/history", summary="事件的全部版本 Every version of an incident")
    def history(request: Request, incident_id: int = Path(ge=1, le=2**62), who: Principal | None = Depends(principal)):
        who = require_role(who, None, "查看事件", "read incidents")
        versions = store.history(incident_id, who)
        store.log_authors(who, incident_id, [v["saved_by"] for v in versions["versions"]], str(request.url))
        return _json(versions)

    @r.get("/key-areas", summary="突发环境风险重点区域（附件4）Key environmental risk areas (Appendix 4)")
    def key_areas(who: Principal | None = Depends(principal)):
        require_role(who, None, "查看重点区域", "read key risk areas")
        frame = service.key_areas().to_crs(crs.STORAGE_CRS)
        rule = ctx.rules.rule("key_area_method")
        counts = frame["risk_class"].value_counts().to_dict()
        data = orjson.loads(frame.to_json(drop_id=True))
        data.update(method=rule.as_dict(), data_date=service.data_date(),
                    counts={k: int(counts.get(k, 0)) for k in ("高", "中", "低")},
                    ogc_collection="/ogc/collections/environment_key_areas")
        return _json(data)

    return r
