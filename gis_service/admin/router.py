"""GET /api/admin/where: parse and convert the coordinate, call the analysis, serialise."""

from __future__ import annotations

from dataclasses import asdict

import shapely
from fastapi import APIRouter, Query

from .. import crs
from ..api.deps import ERROR_RESPONSES
from ..domains import DomainContext
from . import analysis

COUNTIES, VILLAGES = "counties", "villages"


def locate(ctx: DomainContext, x: float, y: float, coord_sys: str | None) -> dict:
    """The analysis for one user coordinate (shared by the API and the map page's click handler)."""
    lon, lat = crs.to_storage_xy(x, y, coord_sys)  # 422 with the likely mistake outside Langfang
    east, north = crs.transform_xy(lon, lat, crs.STORAGE_CRS, crs.METRIC_CRS)
    limit = ctx.rules.rule("nearest_village_max_m")
    place = analysis.where(shapely.Point(east[0], north[0]), ctx.frame(COUNTIES), ctx.frame(VILLAGES), limit.value)
    return {"cgcs2000": {"lon": float(lon[0]), "lat": float(lat[0])}, **asdict(place),
            "rules_applied": [limit.as_dict()]}


def router(ctx: DomainContext) -> APIRouter:
    r = APIRouter(responses=ERROR_RESPONSES)

    @r.get("/where", summary="位置查询：所在县区、乡镇与最近村庄 Which county, township and nearest village")
    def where(x: float = Query(description="x：经度或东坐标"), y: float = Query(description="y：纬度或北坐标"),
              coord_sys: str = Query("wgs84", description=f"坐标系：{'|'.join(crs.COORD_SYSTEMS)}")):
        return locate(ctx, x, y, coord_sys)

    return r
