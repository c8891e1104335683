"""Map pages: a Chinese index of every map, and a page for any collection the caller may see."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from .. import ogc, qgis
from ..auth import Principal
from ..maps.factory import EMBED_LIMIT, MapFactory
from ..store import display_title
from . import html_pages
from .deps import (ERROR_RESPONSES, SESSION_COOKIE, Services, clear_session_cookies, principal, services,
                   session_ended, set_session_cookie)

router = APIRouter(prefix="/maps", tags=["地图 Maps"], responses=ERROR_RESPONSES)
SESSION_ENDED = "会话已过期或已注销，请重新登录。"
WRONG_KEY = "API 密钥无效或已吊销，请检查后重新登录。"


def _visible_layer(svc: Services, who: Principal | None, collection_id: str):
    ctx = ogc.Context(svc.catalog, svc.store, svc.access_log, who, "")
    return ctx.layer(collection_id)


HTML = {200: {"content": {"text/html": {}}}}


def _identity(request: Request, who: Principal | None) -> str:
    """Who the caller is, with the sign-in form (anonymous) or the sign-out button (signed in by session)."""
    if who is None:
        return ('<p>当前为匿名访问，仅显示公开图层。</p><form method="post" action="/maps/session">'
                '<label>API 密钥 <input name="api_key" type="password" autocomplete="current-password"></label>'
                ' <button type="submit">登录</button></form>')
    sign_out = ('<form method="post" action="/maps/session/delete"><button type="submit">退出登录</button></form>'
                if SESSION_COOKIE in request.cookies else "")
    return f"<p>当前身份：{escape(who.name)}（{escape(who.role)}）</p>{sign_out}"


def _qgis_link(who: Principal | None) -> str:
    """The download of a QGIS project with every layer the caller may see (README: QGIS 桌面端)."""
    whose = f"角色 {escape(who.role)} 可见的全部图层" if who else "全部公开图层"
    auth = (f"；图层通过 QGIS 认证配置 <code>{qgis.DEFAULT_AUTHCFG}</code> 登录（设置 → 选项 → 认证 → 新建 Basic，"
            "用户名任意，密码为 API 密钥），项目文件中不含密钥") if who else ""
    return (f'<h2>QGIS 桌面端</h2><p><a href="/maps/qgis-project.qgz" download>下载 QGIS 项目（.qgz）</a>：'
            f"{whose}，分组与样式同地图首页，坐标系 EPSG:4548（量算单位为米）{auth}。</p>")


def _index_page(request: Request, svc: Services, who: Principal | None, error: str = "", status: int = 200):
    """The index: groups in the order of layers/groups.toml; a dead session is announced and its cookie cleared."""
    visible = [l for l in svc.catalog.visible_to(who.role if who else None) if not l.is_raster]
    pages = "".join(f'<li><a href="/maps/{escape(d.name)}{"/" + escape(p.name) if p.name else ""}">'
                    f"{escape(p.title_zh)}</a>：{escape(p.description_zh)}</li>" for d in svc.domains for p in d.pages)
    sections = [f'<h2>专题地图与分析</h2><ul>{pages}<li><a href="/maps/rules">现行规则及出处</a>：每个判定依据的阈值、'
                "文件条款与本系统设定</li></ul>"]
    for group in svc.catalog.groups.values():
        items = "".join(f'<li><a href="/maps/layers/{escape(l.id)}">{escape(display_title(svc.store, l))}</a></li>'
                        for l in visible if l.group == group.id)
        if items:
            sections.append(f"<h2>{escape(group.title_zh)}</h2><ul>{items}</ul>")
    ended = who is None and session_ended(request)
    notices = "".join(f'<p role="alert" style="color:#b00">{escape(text)}</p>'
                      for text in (error, SESSION_ENDED if ended else "") if text)
    response = HTMLResponse(html_pages.page("廊坊空间决策支持系统 · 地图",
                                            notices + _identity(request, who) + "".join(sections)
                                            + _qgis_link(who)), status_code=status)
    if ended:
        clear_session_cookies(response, request)
    return response


@router.get("/", responses=HTML, summary="地图首页 Map index")
def index(request: Request, svc: Services = Depends(services), who: Principal | None = Depends(principal)):
    return _index_page(request, svc, who)


@router.get("/qgis-project.qgz", summary="QGIS 项目 QGIS project for the caller's role",
            responses={200: {"content": {"application/zip": {}},
                             "description": "QGIS 3.22+ 项目（.qgz），含调用者可见的全部要素集合，不含密钥"}})
def qgis_project(request: Request, authcfg: str = Query(qgis.DEFAULT_AUTHCFG, description=(
                     "QGIS 认证配置 ID（7 个字母或数字），项目中的图层按此 ID 使用 QGIS 中保存的 API 密钥")),
                 svc: Services = Depends(services), who: Principal | None = Depends(principal)):
    """Every collection the caller may see (anonymous: the public ones, no authentication configuration)."""
    role = who.role if who else None
    base = str(request.base_url).rstrip("/") + "/ogc"
    xml = qgis.project_xml(svc.catalog, svc.store, role, base, qgis.check_authcfg(authcfg) if who else None)
    name = f"langfang-{role or 'public'}"
    return Response(qgis.qgz_bytes(xml, f"{name}.qgs"), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{name}.qgz"'})


@router.post("/session", summary="以 API 密钥登录地图页面 Sign in to map pages",
             responses={303: {"description": "登录成功，返回地图首页；会话 Cookie gis_session"},
                        401: {"description": "密钥无效：重新显示登录页并提示", "content": {"text/html": {}}}})
def sign_in(request: Request, api_key: str = Form("", description="API 密钥"), svc: Services = Depends(services)):
    """Exchange the key for a server-side session (GIS_SESSION_HOURS); the cookie holds only the session token."""
    token = svc.keys.create_session(api_key.strip(), svc.settings.session_hours) if api_key.strip() else None
    if token is None:
        return _index_page(request, svc, None, error=WRONG_KEY, status=401)
    if SESSION_COOKIE in request.cookies:  # signing in again replaces the previous session
        svc.keys.end_session(request.cookies[SESSION_COOKIE])
    response = RedirectResponse("/maps/", status_code=303)
    set_session_cookie(response, request, token, svc.settings.session_hours)
    return response


@router.post("/session/delete", summary="退出登录 Sign out", responses={303: {"description": "已退出，返回地图首页"}})
def sign_out(request: Request, svc: Services = Depends(services)):
    """End the session on the server (every worker sees it at once) and clear the cookie."""
    if SESSION_COOKIE in request.cookies:
        svc.keys.end_session(request.cookies[SESSION_COOKIE])
    response = RedirectResponse("/maps/", status_code=303)
    clear_session_cookies(response, request)
    return response


@router.get("/layers/{collection_id}", responses=HTML, summary="图层地图 Layer map")
def layer_page(request: Request, collection_id: str, svc: Services = Depends(services),
               who: Principal | None = Depends(principal)):
    if who is None and session_ended(request):  # the index says why and offers the sign-in form
        return RedirectResponse("/maps/", status_code=303)
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
