"""Map pages: a Chinese index of every map, and a page for any collection the caller may see."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from .. import ogc
from ..auth import Principal
from ..errors import GisError
from ..maps.factory import EMBED_LIMIT, MapFactory
from . import html_pages
from .deps import API_KEY_COOKIE, ERROR_RESPONSES, Services, principal, services

router = APIRouter(prefix="/maps", tags=["地图 Maps"], responses=ERROR_RESPONSES)
GROUP_TITLES = {"admin": "行政区划", "canal": "大运河", "risk_zones": "突发环境事件", "flood": "城区防汛",
                "land": "农村承包地", "transport": "交通"}


def _visible_layer(svc: Services, who: Principal | None, collection_id: str):
    ctx = ogc.Context(svc.catalog, svc.store, svc.access_log, who, "")
    return ctx.layer(collection_id)


HTML = {200: {"content": {"text/html": {}}}}


@router.get("/", responses=HTML, summary="地图首页 Map index")
def index(svc: Services = Depends(services), who: Principal | None = Depends(principal)):
    role = who.role if who else None
    sections = []
    for group, title in GROUP_TITLES.items():
        layers = [l for l in svc.catalog.visible_to(role) if l.group == group and not l.is_raster]
        if layers:
            items = "".join(f'<li><a href="/maps/layers/{escape(l.id)}">{escape(l.title_zh)}</a>'
                            f'{"（演示数据）" if l.demo and "演示" not in l.title_zh else ""}</li>' for l in layers)
            sections.append(f"<h2>{escape(title)}</h2><ul>{items}</ul>")
    who_html = (f"<p>当前身份：{escape(who.name)}（{escape(who.role)}）</p>" if who else
                "<p>当前为匿名访问，仅显示公开图层。</p>")
    login = ('<form method="post" action="/maps/session"><label>API 密钥 <input name="api_key" type="password"></label>'
             ' <button type="submit">登录</button></form>')
    return HTMLResponse(html_pages.page("廊坊空间决策支持系统 · 地图", who_html + login + "".join(sections)))


@router.post("/session", responses={303: {"description": "登录成功，返回地图首页"}}, summary="以 API 密钥登录地图页面 Sign in to map pages")
def session(api_key: str = Form(description="API 密钥"), svc: Services = Depends(services)):
    if svc.keys.lookup(api_key) is None:
        raise GisError("invalid_api_key", "API 密钥无效或已吊销", "the API key is invalid or revoked", 401)
    response = RedirectResponse("/maps/", status_code=303)
    response.set_cookie(API_KEY_COOKIE, api_key, httponly=True, samesite="strict")
    return response


@router.get("/layers/{collection_id}", responses=HTML, summary="图层地图 Layer map")
def layer_page(request: Request, collection_id: str, svc: Services = Depends(services),
               who: Principal | None = Depends(principal)):
    layer = _visible_layer(svc, who, collection_id)
    factory = MapFactory(svc.catalog, svc.store, svc.settings)
    role = who.role if who else None
    if svc.store.count(layer) <= EMBED_LIMIT:  # embedded in the page; larger layers are logged per view
        svc.access_log.disclose(who, layer, [f.name for f in layer.fields], svc.store.count(layer), str(request.url))
    return HTMLResponse(factory.layer_map(layer, role).get_root().render())


@router.get("/api/{collection_id}/features", summary="地图当前视野的要素 Features for the map view")
def view_features(request: Request, collection_id: str,
                  bbox: str = Query(description="经纬度范围 minlon,minlat,maxlon,maxlat"),
                  svc: Services = Depends(services), who: Principal | None = Depends(principal)):
    layer = _visible_layer(svc, who, collection_id)
    box = ogc.parse_bbox(bbox, None)  # lon/lat: always a plain box
    role = who.role if who else None
    data = MapFactory(svc.catalog, svc.store, svc.settings).features_for_view(layer, box, role)
    svc.access_log.disclose(who, layer, [f.name for f in layer.fields], len(data["features"]), str(request.url))
    return JSONResponse(data)
