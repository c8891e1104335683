"""OGC API – Tiles routes under /ogc: each route adapts one function of gis_service.tiles."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from .. import tiles
from ..auth import Principal
from .deps import API_KEY_PARAMETER, ERROR_RESPONSES, Services, caller, principal, services
from .ogc_routes import COLLECTION_ID, _context

router = APIRouter(prefix="/ogc", tags=["OGC API – Tiles"], responses=ERROR_RESPONSES)

TMS_ID = Path(description="瓦片矩阵集标识（WebMercatorQuad）")
TILE_CACHE = "private, max-age=60"  # a tile depends on the caller's role; a minute keeps panning cheap


@router.get("/tileMatrixSets", summary="瓦片矩阵集列表 Tile matrix sets")
def tile_matrix_sets(request: Request, svc: Services = Depends(services)):
    return JSONResponse(tiles.tile_matrix_sets(_context(request, svc, None)))


@router.get("/tileMatrixSets/{tms_id}", summary="瓦片矩阵集 Tile matrix set")
def tile_matrix_set(request: Request, tms_id: str = TMS_ID, svc: Services = Depends(services)):
    return JSONResponse(tiles.tile_matrix_set_doc(_context(request, svc, None), tms_id))


@router.get("/collections/{collection_id}/tiles", summary="矢量瓦片集列表 Vector tilesets")
def tilesets(request: Request, collection_id: str = COLLECTION_ID, svc: Services = Depends(services),
             who: Principal | None = Depends(principal)):
    return JSONResponse(tiles.tilesets(_context(request, svc, who), collection_id))


@router.get("/collections/{collection_id}/tiles/{tms_id}", summary="矢量瓦片集 Vector tileset")
def tileset(request: Request, collection_id: str = COLLECTION_ID, tms_id: str = TMS_ID,
            svc: Services = Depends(services), who: Principal | None = Depends(principal)):
    return JSONResponse(tiles.tileset(_context(request, svc, who), collection_id, tms_id))


@router.api_route("/collections/{collection_id}/tiles/{tms_id}/{z}/{y}/{x}", methods=["GET", "HEAD"],
                  summary="矢量瓦片 Vector tile (MVT)",
                  responses={200: {"content": {tiles.MVT: {}}}, 204: {"description": "空瓦片 Empty tile"}},
                  openapi_extra={"parameters": [API_KEY_PARAMETER]})
async def tile(request: Request, collection_id: str = COLLECTION_ID, tms_id: str = TMS_ID,
               z: str = Path(description="瓦片层级 tileMatrix"), y: str = Path(description="行号 tileRow"),
               x: str = Path(description="列号 tileCol"),
               coord_sys: str | None = Query(None, description="几何坐标系：cgcs2000/wgs84（默认）或 gcj02（高德底图上的页面）"
                                                                " geometry datum: cgcs2000/wgs84 (default) or gcj02 (pages over the Gaode base map)")):
    """The hot path: the caller, the store read and the encoding in one trip to the thread pool. HEAD too:
    GDAL's /vsicurl/ (and so QGIS) asks for the size first."""
    return await run_in_threadpool(_tile, request, collection_id, tms_id, z, y, x, coord_sys)


def _tile(request: Request, collection_id: str, tms_id: str, z: str, y: str, x: str, coord_sys: str | None) -> Response:
    ctx = _context(request, request.app.state.services, caller(request))
    data = tiles.tile(ctx, collection_id, tms_id, z, y, x, str(request.url), coord_sys)
    headers = {"Cache-Control": TILE_CACHE, "Vary": "X-API-Key, Authorization, Cookie"}
    if not data:
        return Response(status_code=204, headers=headers)
    return Response(data, media_type=tiles.MVT, headers=headers)
