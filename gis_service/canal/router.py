"""/api/canal: zones, village remediation list, green-corridor shortfalls and farmland conflicts, siting check.

Routes parse and validate, call the CanalService (service.py: layers, rules, caches) and serialise."""

from __future__ import annotations

from typing import Literal
from urllib.parse import quote

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from .. import crs
from ..api.deps import ERROR_RESPONSES
from ..domains import DomainContext
from ..export import csv_bytes, xlsx_bytes
from . import control_zones
from .service import service_for

CSV_TYPE = "text/csv; charset=utf-8"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
FILE_RESPONSES = {200: {"content": {"application/json": {}, CSV_TYPE: {}, XLSX_TYPE: {}}}}


class CheckRequest(BaseModel):
    geometry: dict = Field(description="拟建项目几何（GeoJSON 点、线、面或多部件） proposed project, GeoJSON geometry")
    coord_sys: str = Field("wgs84", description=f"坐标系：{'|'.join(crs.COORD_SYSTEMS)}")
    sector: str | None = Field(None, description="项目行业：负面清单的 sector 或中文名称；不在清单上的填 other；不填则核心监控区内需审查")


def _download(body: bytes, media_type: str, filename: str) -> Response:
    return Response(body, media_type=media_type,
                    headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}"})


def router(ctx: DomainContext) -> APIRouter:
    r = APIRouter(responses=ERROR_RESPONSES)
    canal = service_for(ctx)
    r.include_router(control_zones.router(ctx))  # /control-zones (control_zones.py)

    @r.get("/zones", summary="运河管控分区（GeoJSON，经纬度）Canal zones per river, bank and county")
    def zones(river: str | None = Query(None, description="河流：北运河|大清河|赵王新河"),
              kind: Literal["village_remediation", "green_belt", "core_monitoring"] | None = Query(
                  None, description="分区：村庄环境综合整治范围|绿色廊道景观带|生态空间核心监控区"),
              county: str | None = Query(None, description="县区名称，如 香河县")):
        return canal.zones_geojson(river, kind, county)

    @r.get("/villages", responses=FILE_RESPONSES, summary="河道两侧村庄环境整治清单 Village remediation list")
    def villages(within_m: float | None = Query(None, description="距河道距离（米），默认取规则 canal.village_remediation_distance_m"),
                 river: str | None = Query(None, description="河流"), county: str | None = Query(None, description="县区"),
                 format: Literal["json", "csv", "xlsx"] = Query("json", description="json|csv|xlsx")):
        result = canal.village_list(within_m, river, county)
        if format == "json":
            return result
        table = canal.village_table(result)
        if format == "csv":
            return _download(csv_bytes(table), CSV_TYPE, "运河沿线村庄整治清单.csv")
        return _download(xlsx_bytes(table, "村庄整治清单"), XLSX_TYPE, "运河沿线村庄整治清单.xlsx")

    @r.get("/green-belt/shortfalls", summary="绿色廊道宽度不足河段 Green-corridor sections under the minimum width")
    def shortfalls(river: str | None = Query(None, description="河流：北运河|大清河"),
                   bank: Literal["left", "right"] | None = Query(None, description="岸别（面向下游）：左岸|右岸"),
                   county: str | None = Query(None, description="县区")):
        return canal.shortfalls(river, bank, county)

    @r.get("/green-belt/conflicts", summary="绿色廊道占用耕地、永久基本农田与承包地 Farmland conflicts")
    def conflicts(source: Literal["corridors", "required_band"] = Query(
                      "corridors", description="corridors：绿色廊道图层；required_band：按最小宽度的规划绿廊带"),
                  county: str | None = Query(None, description="县区"),
                  limit: int | None = Query(None, ge=0, description="最多列出的地块数（按冲突面积降序），默认全部")):
        return canal.conflicts(source, county, limit)

    @r.post("/check", summary="项目选址审查 Siting verdict for a proposed project")
    def check(body: CheckRequest):
        return canal.check(body.geometry, body.coord_sys, body.sector)

    @r.get("/negative-list", summary="核心监控区负面清单 Negative list of sectors")
    def negative_list():
        return canal.negative_list()

    return r
