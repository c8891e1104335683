"""Mount the discovered domains (routers under /api/<domain>, map pages under /maps/<domain>) and the
rules in force (/api/rules, /maps/rules)."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from ..auth import Principal
from ..domains import Domain, DomainContext, MapPage
from ..maps.factory import MapFactory
from ..store import rules_override_location
from . import html_pages
from .deps import ERROR_RESPONSES, Services, principal, services, session_ended

HTML = {200: {"content": {"text/html": {}}}}
BASIS_ZH = {"stated": "文件规定", "setting": "本系统设定"}


def mount_domains(app: FastAPI, contexts: dict[str, DomainContext], domains: list[Domain]) -> None:
    for domain in domains:
        ctx = contexts[domain.name]
        app.include_router(domain.router(ctx), prefix=f"/api/{domain.name}", tags=[domain.title_zh])
        pages = APIRouter(prefix="/maps", tags=["地图 Maps"], responses=ERROR_RESPONSES)
        for page in domain.pages:
            path = f"/{domain.name}" + (f"/{page.name}" if page.name else "")
            pages.add_api_route(path, _page_route(ctx, page), methods=["GET"], responses=HTML,
                                summary=page.title_zh)
        app.include_router(pages)


def _page_route(ctx: DomainContext, page: MapPage):
    def render(request: Request, who: Principal | None = Depends(principal)):
        if who is None and session_ended(request):  # the index says why and offers the sign-in form
            return RedirectResponse("/maps/", status_code=303)
        m = page.build(ctx, MapFactory(ctx.catalog, ctx.store, ctx.settings), who)
        for layer, count in m.gis_disclosures:  # personal data embedded in the page, as for layer pages
            ctx.access_log.disclose(who, layer, [f.name for f in layer.fields], count, str(request.url))
        return HTMLResponse(m.get_root().render())

    return render


rules_router = APIRouter(tags=["规则 Rules"], responses=ERROR_RESPONSES)


@rules_router.get("/api/rules", summary="现行规则及其出处 Rules in force with their sources")
def rules_in_force(svc: Services = Depends(services)):
    return {"override_location": rules_override_location(svc.settings), "rules": [r.as_dict() for r in svc.rules]}


@rules_router.get("/maps/rules", responses=HTML, summary="规则一览（中文）Rules page")
def rules_page(svc: Services = Depends(services)):
    rows = []
    for r in svc.rules:
        value = f"{r.value} {r.unit or ''}".strip()
        status = BASIS_ZH[r.basis] + ("；<b>已被本地配置修改</b>" if r.overridden else "")
        rows.append(f"<tr><td>{escape(r.domain)}</td><td>{escape(r.title_zh)}<br><small>{escape(r.key)}</small></td>"
                    f"<td>{escape(value)}</td><td>{status}</td><td>{escape(r.citation())}</td></tr>")
    body = ("<p>每条规则的取值、依据的文件条款（原文行号）或本系统设定的理由。本地修改见 "
            f"<code>{escape(rules_override_location(svc.settings))}</code>。</p>"
            "<table><tr><th>领域</th><th>规则</th><th>取值</th><th>性质</th><th>出处</th></tr>"
            + "".join(rows) + "</table>")
    return HTMLResponse(html_pages.page("现行规则及出处", body))
