"""The FastAPI application: routers, static assets, one error model, OpenAPI 3.0 document."""

from __future__ import annotations

import logging
import urllib.request
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..catalog import Catalog
from ..config import Settings
from ..errors import GisError, not_found
from ..domains import contexts, discover
from ..maps import assets
from ..backends import open_access_log, open_key_store
from ..store import open_record_store, open_rules, open_store
from . import crs_routes, domain_routes, maps_routes, ogc_routes
from . import tiles_routes
from .. import tiles
from .deps import SECURITY, SECURITY_SCHEMES, STREAMED_BODY, Services

log = logging.getLogger("gis_service")
TIANDITU_LAYERS = {"vec", "cva", "img", "cia"}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    catalog = Catalog.load(settings.layers_dir)  # a wrong definition stops start-up here
    app = FastAPI(title="廊坊空间决策支持系统 API", version=__version__, openapi_url="/ogc/openapi",
                  docs_url="/ogc/docs", redoc_url=None,
                  description="廊坊市空间决策支持服务：OGC API – Features、坐标转换与地图。")
    rules = open_rules(settings)  # a wrong rule file stops start-up here
    domains = discover()
    store, records = open_store(settings), open_record_store(settings)
    access_log = open_access_log(settings)
    domain_contexts = contexts(domains, settings=settings, catalog=catalog, store=store, records=records,
                               rules=rules, access_log=access_log)
    svc = Services(settings, catalog, store, open_key_store(settings), access_log, rules, records,
                   domains, domain_contexts)
    app.state.services = svc
    app.include_router(ogc_routes.router)
    app.include_router(tiles_routes.router)
    tiles.warm_up(catalog, store)  # aggregate vector tiles' cell data, in the background
    app.include_router(crs_routes.router)
    app.include_router(domain_routes.rules_router)
    app.include_router(maps_routes.router)
    domain_routes.mount_domains(app, domain_contexts, domains)

    @app.get("/static/{path:path}", include_in_schema=False)
    def static(path: str, request: Request):
        """Only the front-end files the pages use (gis_service/maps/assets.py), never the rest of node_modules."""
        file = assets.lookup(settings.static_dir, path)
        if file is None:
            raise not_found(f"静态资源 {path}", f"static asset '{path}'")
        headers = {"Cache-Control": assets.CACHE_CONTROL}
        response = FileResponse(file, media_type=assets.media_type(file), stat_result=file.stat(), headers=headers)
        if response.headers["etag"] in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers={**headers, "ETag": response.headers["etag"]})
        return response

    _install_error_handlers(app)
    # Routes that stream their body to disk and enforce their own limit (a domain's file import, whose size
    # limit is a rule) mark themselves with the OpenAPI extension x-streamed-body; the 5 MB cap skips them.
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES, streamed=_streamed_paths(app))
    app.openapi = lambda: _openapi_30(app)

    @app.get("/", include_in_schema=False)
    def root():
        return RedirectResponse("/maps/")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():  # browsers ask for it; an empty answer keeps their consoles free of 404 errors
        return Response(status_code=204)

    @app.get("/basemap/tianditu/{layer}/{z}/{x}/{y}", include_in_schema=False)
    def tianditu(layer: str, z: int, x: int, y: int):
        """Tile proxy: the Tianditu key stays on the server (browser and server keys are separate)."""
        if settings.basemap != "tianditu" or not settings.tianditu_key or layer not in TIANDITU_LAYERS:
            raise GisError("basemap_disabled", "天地图底图未启用", "the Tianditu basemap is not enabled", 404)
        url = (f"https://t{(x + y) % 8}.tianditu.gov.cn/DataServer?T={layer}_w&x={x}&y={y}&l={z}"
               f"&tk={settings.tianditu_key}")
        try:
            with urllib.request.urlopen(url, timeout=10) as upstream:
                return Response(upstream.read(), media_type=upstream.headers.get("Content-Type", "image/png"))
        except OSError:
            raise GisError("basemap_unreachable", "天地图服务不可达", "the Tianditu service is unreachable", 502) from None

    return app


MAX_BODY_BYTES = 5 * 2**20  # a drawn or pasted geometry is kilobytes; file imports stream (STREAMED_BODY)


def _streamed_paths(app: FastAPI) -> frozenset[str]:
    """Full paths of the routes marked STREAMED_BODY (FastAPI keeps included routers nested: walk them)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before nested included routers: app.routes is flat
        found = ((r, getattr(r, "path", None)) for r in app.routes)
    else:
        found = ((c.original_route, c.path) for c in iter_route_contexts(app.routes))
    return frozenset(path for route, path in found
                     if path and (getattr(route, "openapi_extra", None) or {}).get(STREAMED_BODY))


class BodyLimit:
    """Refuse request bodies over max_bytes with a 413 before anything parses them (FastAPI reads a JSON body
    on the event loop: a 30 MB geometry would stall every other request while it is parsed)."""

    def __init__(self, app, max_bytes: int, streamed: frozenset[str] = frozenset()):
        self.app, self.max_bytes, self.streamed = app, max_bytes, streamed
        self.detail = f"request body larger than {max_bytes // 2**20} MB"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.streamed:
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            response = JSONResponse({"code": "http_error", "message": f"{_HTTP_ZH[413]} / {self.detail}"}, 413)
            return await response(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # a chunked body has no length to check up front
                raise StarletteHTTPException(413, self.detail)  # FastAPI passes it on to http_error
            return message

        await self.app(scope, counted, send)


_HTTP_ZH = {404: "未找到", 405: "不支持的请求方法", 413: "请求体过大"}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GisError)
    async def gis_error(request: Request, exc: GisError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        where = [".".join(str(p) for p in e.get("loc", ())) for e in errors]
        status = 400 if all(e.get("loc", ("",))[0] in ("query", "path", "header") for e in errors) else 422
        detail = "; ".join(f"{w}: {e.get('msg', '')}" for w, e in zip(where, errors))
        return JSONResponse({"code": "bad_parameter", "message": f"请求参数无效：{detail} / invalid request: {detail}"},
                            status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        zh = _HTTP_ZH.get(exc.status_code, "请求错误")
        return JSONResponse({"code": "http_error", "message": f"{zh} / {exc.detail}"}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        request_id = uuid.uuid4().hex[:12]
        log.exception("unexpected error %s on %s", request_id, request.url)
        return JSONResponse({"code": "internal_error",
                             "message": f"服务器内部错误（编号 {request_id}） / internal error (id {request_id})"},
                            status_code=500)


def _openapi_30(app: FastAPI) -> dict:
    """FastAPI writes OpenAPI 3.1; OGC's oas30 class (and many clients) want 3.0: rewrite nullable unions."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    doc["openapi"] = "3.0.3"
    doc.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    doc["security"] = SECURITY
    app.openapi_schema = _to_30(doc)
    return app.openapi_schema


def _to_30(node):
    if isinstance(node, dict):
        node = {k: _to_30(v) for k, v in node.items()}
        for key in ("anyOf", "oneOf"):
            options = node.get(key)
            if isinstance(options, list) and any(o == {"type": "null"} for o in options):
                rest = [o for o in options if o != {"type": "null"}]
                node.pop(key)
                if len(rest) == 1:
                    node.update(rest[0])
                else:
                    node[key] = rest
                node["nullable"] = True
        if "const" in node:
            node["enum"] = [node.pop("const")]
        if "examples" in node and isinstance(node["examples"], list) and "schema" not in node:
            node.pop("examples")
        return node
    if isinstance(node, list):
        return [_to_30(v) for v in node]
    return node
