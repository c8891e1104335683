"""Coordinate conversion for field staff pasting coordinates from phones and survey instruments."""

from __future__ import annotations

from fastapi import APIRouter, Query

from .. import crs
from .deps import ERROR_RESPONSES

router = APIRouter(prefix="/api/crs", tags=["坐标转换 CRS"], responses=ERROR_RESPONSES)
SYSTEMS = "|".join(crs.COORD_SYSTEMS)


@router.get("/convert", summary="坐标转换 Convert a coordinate")
def convert(x: float = Query(description="x：经度或东坐标"), y: float = Query(description="y：纬度或北坐标"),
            from_: str = Query("wgs84", alias="from", description=f"来源坐标系：{SYSTEMS}"),
            to: str = Query("cgcs2000", description=f"目标坐标系：{SYSTEMS}")):
    source, target = crs.parse_coord_sys(from_), crs.parse_coord_sys(to)
    lon, lat = crs.to_storage_xy(x, y, source)
    tx, ty = crs.from_storage_xy(lon, lat, target)
    return {"x": float(tx[0]), "y": float(ty[0]), "from": source.name, "to": target.name,
            "cgcs2000": {"lon": float(lon[0]), "lat": float(lat[0])},
            "note": f"{source.label_zh} → {target.label_zh}"}


@router.get("/systems", summary="支持的坐标系 Supported coordinate systems")
def systems():
    return [{"coord_sys": c.name, "label": c.label_zh, "epsg": c.epsg} for c in crs.COORD_SYSTEMS.values()]
