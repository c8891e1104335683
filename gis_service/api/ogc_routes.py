"""OGC API – Features routes under /ogc: each route adapts one function of gis_service.ogc."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response

from .. import ogc
from ..auth import Principal
from . import html_pages
from .deps import API_KEY_PARAMETER, ERROR_RESPONSES, Services, caller, principal, services, wants_html

router = APIRouter(prefix="/ogc", tags=["OGC API – Features"], responses=ERROR_RESPONSES)

JSON_OR_HTML = {200: {"content": {"application/json": {}, "text/html": {}}}}
FORMAT = Query(None, description="输出格式 json 或 html", pattern="^(json|html)$")
COLLECTION_ID = Path(description="要素集合标识")


def _context(request: Request, svc: Services, who: Principal | None) -> ogc.Context:
    base = str(request.base_url).rstrip("/") + "/ogc"
    return ogc.Context(svc.catalog, svc.store, svc.access_log, who, base)


def _params(request: Request) -> dict[str, str]:
    return dict(request.query_params)


def _json_or_html(request: Request, f: str | None, doc: dict, render) -> Response:
    if wants_html(request, f):
        return HTMLResponse(render(doc))
    return JSONResponse(doc)


@router.get("", responses=JSON_OR_HTML, summary="服务首页 Landing page")
@router.get("/", responses=JSON_OR_HTML, summary="服务首页 Landing page ({root}/)", include_in_schema=False)
def landing(request: Request, f: str | None = FORMAT, svc: Services = Depends(services),
            who: Principal | None = Depends(principal)):
    return _json_or_html(request, f, ogc.landing(_context(request, svc, who)), html_pages.landing)


@router.get("/provenance", responses={200: {"content": {"text/markdown": {}}}},
            summary="数据来源与许可 Data sources and licences")
def provenance(request: Request, svc: Services = Depends(services)):
    return Response(ogc.provenance(_context(request, svc, None)), media_type="text/markdown; charset=utf-8")


@router.get("/conformance", responses=JSON_OR_HTML, summary="符合性声明 Conformance")
def conformance(request: Request, f: str | None = FORMAT):
    return _json_or_html(request, f, ogc.conformance(), html_pages.conformance)


@router.get("/collections", responses=JSON_OR_HTML, summary="要素集合列表 Collections")
def collections(request: Request, f: str | None = FORMAT, svc: Services = Depends(services),
                who: Principal | None = Depends(principal)):
    return _json_or_html(request, f, ogc.collections(_context(request, svc, who)), html_pages.collections)


@router.get("/collections/{collection_id}", responses=JSON_OR_HTML, summary="要素集合 Collection")
def collection(request: Request, collection_id: str = COLLECTION_ID, f: str | None = FORMAT,
               svc: Services = Depends(services), who: Principal | None = Depends(principal)):
    return _json_or_html(request, f, ogc.collection(_context(request, svc, who), collection_id), html_pages.collection)


@router.get("/collections/{collection_id}/queryables",
            responses={200: {"content": {"application/schema+json": {}, "text/html": {}}}}, summary="可查询字段 Queryables")
def queryables(request: Request, collection_id: str = COLLECTION_ID, f: str | None = FORMAT,
               svc: Services = Depends(services), who: Principal | None = Depends(principal)):
    doc = ogc.queryables(_context(request, svc, who), collection_id)
    if wants_html(request, f):
        return HTMLResponse(html_pages.queryables(doc))
    return JSONResponse(doc, media_type="application/schema+json")


def _param(name: str, description: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


# Documented here, parsed once by gis_service.ogc (with the property=value filters FastAPI cannot declare):
# declaring them as function arguments would make FastAPI validate every request twice.
ITEMS_PARAMETERS = [
    _param("f", "输出格式 json 或 html", {"type": "string", "enum": ["json", "html"]}),
    _param("bbox", "范围 minx,miny,maxx,maxy（按 bbox-crs 的坐标轴顺序）"),
    _param("bbox-crs", "bbox 的坐标系 URI，默认 CRS84"),
    _param("limit", f"每页要素数，默认 {ogc.DEFAULT_LIMIT}，最大 {ogc.MAX_LIMIT}", {"type": "integer", "minimum": 1}),
    _param("offset", "起始位置", {"type": "integer", "minimum": 0}),
    _param("datetime", "时间点或区间（仅限有时间字段的集合）"),
    _param("properties", "只返回这些字段（逗号分隔）"),
    _param("sortby", "排序字段，如 +name,-adcode"),
    _param("crs", "输出坐标系 URI（CRS84、EPSG:4490、4548、4527）"),
    _param("filter", "CQL2 过滤条件（按 filter-lang：CQL2 文本或 CQL2-JSON）"),
    _param("filter-lang", "过滤语言 cql2-text（默认）或 cql2-json", {"type": "string", "enum": ["cql2-text", "cql2-json"]}),
    _param("filter-crs", "过滤条件中几何的坐标系 URI"),
    API_KEY_PARAMETER,
]


@router.get("/collections/{collection_id}/items", summary="要素查询 Features",
            responses={200: {"content": {ogc.GEOJSON: {}, "text/html": {}}}},
            openapi_extra={"parameters": ITEMS_PARAMETERS})
async def items(request: Request, collection_id: str = COLLECTION_ID):
    """The core reads every parameter (including property=value filters) from the query string.

    The hot path: no FastAPI dependencies (resolving them costs more than the work they do here). All of it
    (the caller's key or session, the query, an HTML page) runs in one trip to the thread pool, so neither a
    heavy filter nor a key-file read stalls the event loop and other requests."""
    return await run_in_threadpool(_items, request, collection_id)


def _items(request: Request, collection_id: str) -> Response:
    ctx = _context(request, request.app.state.services, caller(request))
    body, headers, summary = ogc.items(ctx, collection_id, _params(request), str(request.url))
    html = wants_html(request, request.query_params.get("f"))
    headers["Link"] = ogc.link_header(summary["links"], html)
    if html:
        return HTMLResponse(html_pages.items(summary), headers=headers)
    return Response(body, media_type=ogc.GEOJSON, headers=headers)


@router.get("/collections/{collection_id}/items/{feature_id}", summary="单个要素 Feature",
            responses={200: {"content": {ogc.GEOJSON: {}, "text/html": {}}}})
async def feature(request: Request, collection_id: str = COLLECTION_ID,
                  feature_id: str = Path(description="要素标识"), f: str | None = FORMAT,
                  crs: str | None = Query(None, description="输出坐标系 URI"),
                  svc: Services = Depends(services), who: Principal | None = Depends(principal)):
    return await run_in_threadpool(_feature, request, _context(request, svc, who), collection_id, feature_id, f)


def _feature(request: Request, ctx: ogc.Context, collection_id: str, feature_id: str, f: str | None) -> Response:
    body, headers, links = ogc.item(ctx, collection_id, feature_id, _params(request), str(request.url))
    html = wants_html(request, f)
    headers["Link"] = ogc.link_header(links, html)
    if html:
        return HTMLResponse(html_pages.feature(body), headers=headers)
    return Response(body, media_type=ogc.GEOJSON, headers=headers)
