"""/api/flood: depth reports, point status, closures, history (thin: validation and state in reports.py)."""

from __future__ import annotations

import datetime as dt

import orjson
from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, Field

from .. import crs
from ..api.deps import ERROR_RESPONSES, principal, require_role
from ..auth import Principal
from ..domains import DomainContext
from . import reports, scenarios
from .reports import REPORTERS, public_report, service_for, utc_text


class ReportIn(BaseModel):
    report_id: str = Field(min_length=1, max_length=100, description="上报编号（客户端生成，重试时不变，保证不重复记录）")
    point_id: str | None = Field(None, max_length=40, description="监测点编号，如 UP-003；或改给坐标 x、y")
    x: float | None = Field(None, description="经度或东坐标（不给 point_id 时）")
    y: float | None = Field(None, description="纬度或北坐标（不给 point_id 时）")
    coord_sys: str | None = Field(None, max_length=40, description=f"坐标系：{'|'.join(crs.COORD_SYSTEMS)}（默认 wgs84）")
    depth_cm: float = Field(strict=True, description="积水深度（厘米），0–不可信上限")
    observed_at: str = Field(max_length=64, description="观测时间，ISO 8601 带时区，如 2021-07-18T15:30:00+08:00")
    reporter: str | None = Field(None, max_length=100, description="上报人（仅防汛、管理员角色可见）")


def _json(body: dict, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def router(ctx: DomainContext) -> APIRouter:
    r = APIRouter(responses=ERROR_RESPONSES)
    service = service_for(ctx)
    service.check_override_points()  # start-up: an override naming an unknown point stops it

    @r.get("/rules", summary="防汛规则 Flood rules in force")
    def rules():
        return {"rules": [rule.as_dict() for rule in ctx.rules]}

    @r.post("/reports", status_code=201, summary="上报积水深度（防汛、管理员）Report a ponding depth (flood, admin)")
    def post_report(body: ReportIn, request: Request, who: Principal | None = Depends(principal)):
        who = require_role(who, REPORTERS, "上报积水", "post depth reports")
        stored, duplicate = service.submit(who, body.model_dump())
        if duplicate:  # the stored report (perhaps posted by someone else) with its reporter's name
            service.log_reporters(who, [stored], str(request.url))
        return _json({**public_report(stored, True), "duplicate": duplicate}, 200 if duplicate else 201)

    @r.get("/status", summary="各监测点当前状态 Status of every monitored point")
    def status(who: Principal | None = Depends(principal)):
        require_role(who, None, "查看防汛状态", "read flood status")
        rows = service.status_rows()
        return _json({"generated_at": utc_text(dt.datetime.now(dt.timezone.utc)), "count": len(rows),
                      "points": rows, "rules_applied": service.rules_applied()})

    @r.get("/closures", summary="当前断交的监测点 Points closed now")
    def closures(who: Principal | None = Depends(principal)):
        require_role(who, None, "查看防汛状态", "read flood status")
        rows = [p for p in service.status_rows() if p["status"] == "closed"]
        return _json({"generated_at": utc_text(dt.datetime.now(dt.timezone.utc)), "count": len(rows),
                      "closures": rows, "rules_applied": service.rules_applied()})

    @r.get("/points/{point_id}/history", summary="一个监测点的全部上报及其后状态 A point's reports in time order")
    def history(request: Request, point_id: str = Path(max_length=40, description="监测点编号"),
                who: Principal | None = Depends(principal)):
        who = require_role(who, None, "查看上报记录", "read reports")
        return _json(service.history(point_id, who, str(request.url)))

    @r.get("/responsibilities", summary="河渠、闸坝、泵站的责任单位与各区职责 Who answers for channels, gates, stations")
    def responsibilities(who: Principal | None = Depends(principal)):
        require_role(who, None, "查看防汛责任", "read flood responsibilities")
        return _json(reports.responsibilities(ctx))

    r.include_router(scenarios.router(ctx))  # POST /scenarios, depth.tif, depth.png (scenarios.py)
    return r
