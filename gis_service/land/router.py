"""/api/land: plot register queries, village/county/city summaries, edits with history (thin: see service.py)."""

from __future__ import annotations

import threading

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field

from .. import crs
from ..api.deps import ERROR_RESPONSES, principal, require_role
from ..auth import Principal
from ..domains import DomainContext
from ..errors import bad_parameter
from . import ops_router
from .service import service_for

EDITORS = ("rural", "admin")  # who may edit the register and look up contractors (issue #9 §4, §9)
AS_OF = Query(None, max_length=10, description="按日期查询登记簿状态 YYYY-MM-DD（默认今天）")


class SearchIn(BaseModel):
    geometry: dict = Field(description="GeoJSON Polygon / MultiPolygon")
    coord_sys: str = Field("wgs84", max_length=40, description=f"坐标系：{'|'.join(crs.COORD_SYSTEMS)}")


class EditIn(BaseModel):
    changes: dict = Field(description="要修改的字段及新值")
    valid_from: str | None = Field(None, max_length=10, description="生效日期 YYYY-MM-DD（默认今天）")
    reason: str | None = Field(None, max_length=200, description="变更原因")


class TransferIn(BaseModel):
    dkbm: str = Field(max_length=19)
    transferee: str = Field(min_length=1, max_length=100, description="受让方")
    lzfs: str = Field(max_length=10, description="流转方式：出租/转包/入股/互换/代耕代种/其他")
    start_date: str = Field(max_length=10)
    end_date: str = Field(max_length=10)
    lzmj: float | None = Field(None, description="流转面积（亩），默认合同面积")
    use: str | None = Field(None, max_length=50, description="流转后用途")
    standard_form: bool = Field(description="是否使用统一制式合同（否 = 口头或非制式）")
    lzhtbm: str | None = Field(None, max_length=40)
    reason: str | None = Field(None, max_length=200)


class EndIn(BaseModel):
    dkbm: str = Field(max_length=19)
    date: str = Field(max_length=10, description="终止/解除日期 YYYY-MM-DD")
    reason: str | None = Field(None, max_length=200)


class MortgageIn(BaseModel):
    dkbm: str = Field(max_length=19)
    borrower: str = Field(min_length=1, max_length=100, description="抵押人（经营主体）")
    lender: str = Field(min_length=1, max_length=100, description="抵押权人（金融机构）")
    amount_wan: float = Field(description="贷款金额（万元）")
    start_date: str = Field(max_length=10)
    end_date: str = Field(max_length=10)
    lzhtbm: str | None = Field(None, max_length=40)
    dyid: str | None = Field(None, max_length=40)
    reason: str | None = Field(None, max_length=200)


def _json(body, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def router(ctx: DomainContext) -> APIRouter:
    land = service_for(ctx)
    # The index and today's village figures are built when the server starts serving (after the derived
    # layers), in the background: start-up is not held up by two million plots.
    r = APIRouter(responses=ERROR_RESPONSES, on_startup=[lambda: threading.Thread(
        target=land.warm, name="land-warm", daemon=True).start()])
    r.include_router(ops_router.routes(ctx))  # checks, 四至, import (LAND-OPS: ops_router.py)

    @r.get("/rules", summary="承包地规则 Land rules in force")
    def rules():
        return {"rules": [rule.as_dict() for rule in ctx.rules]}

    @r.get("/plots", summary="地块查询：地图点击 at、按村 village、按承包方 contractor（农业农村、管理员）")
    def plots(request: Request,
              at: str | None = Query(None, max_length=80, description="点击位置 x,y"),
              coord_sys: str | None = Query(None, max_length=40, description="at 的坐标系（默认 wgs84）"),
              village: str | None = Query(None, max_length=12, description="12 位村级区划代码"),
              contractor: str | None = Query(None, max_length=40, description="承包方编码或姓名（农业农村、管理员）"),
              limit: int | None = Query(None, ge=1, le=100000), offset: int = Query(0, ge=0, le=10_000_000),
              as_of: str | None = AS_OF, who: Principal | None = Depends(principal)):
        given = [n for n, v in (("at", at), ("village", village), ("contractor", contractor)) if v is not None]
        if len(given) != 1:
            raise bad_parameter("at|village|contractor", "须且只能给出其中一个", "give exactly one of them")
        url = str(request.url)
        if at is not None:
            return _json(land.at(at, coord_sys, who, as_of, url))
        if village is not None:
            return _json(land.by_village(village, who, limit, offset, url))
        who = require_role(who, EDITORS, "按承包方查询地块", "look plots up by contractor")
        return _json(land.by_contractor(contractor, who, limit, offset, url))

    @r.post("/plots/search", summary="多边形内的地块及相交面积（EPSG:4548 平方米/亩）")
    def search(body: SearchIn, request: Request, who: Principal | None = Depends(principal)):
        return _json(land.search(body.geometry, body.coord_sys, who, str(request.url)))

    @r.get("/plots/{dkbm}", summary="按地块编码查询地块卡片（个人信息按角色脱敏）")
    def plot(request: Request, dkbm: str = Path(max_length=40), as_of: str | None = AS_OF,
             who: Principal | None = Depends(principal)):
        return _json(land.plot(dkbm, who, as_of, str(request.url)))

    @r.get("/plots/{dkbm}/history", summary="地块、合同、流转、抵押的历次变更")
    def history(request: Request, dkbm: str = Path(max_length=40), who: Principal | None = Depends(principal)):
        return _json(land.plot_history(dkbm, who, str(request.url)))

    @r.patch("/plots/{dkbm}", summary="修改地块属性（新版本，农业农村、管理员）")
    def edit_plot(body: EditIn, dkbm: str = Path(max_length=40), who: Principal | None = Depends(principal)):
        who = require_role(who, EDITORS, "修改地块", "edit plots")
        return _json(land.edit_plot(dkbm, body.changes, body.valid_from, body.reason, who))

    @r.patch("/contracts/{cbhtbm}", summary="修改承包合同（新版本，农业农村、管理员）")
    def edit_contract(body: EditIn, cbhtbm: str = Path(max_length=40), who: Principal | None = Depends(principal)):
        who = require_role(who, EDITORS, "修改承包合同", "edit contracts")
        return _json(land.edit_contract(cbhtbm, body.changes, body.valid_from, body.reason, who))

    @r.post("/transfers", status_code=201, summary="登记流转合同（农业农村、管理员）")
    def add_transfer(body: TransferIn, who: Principal | None = Depends(principal)):
        who = require_role(who, EDITORS, "登记流转", "register transfers")
        return _json(land.add_transfer(body.model_dump(), who), 201)

    @r.post("/transfers/{lzhtbm}/end", summary="终止流转合同（农业农村、管理员）")
    def end_transfer(body: EndIn, lzhtbm: str = Path(max_length=40), who: Principal | None = Depends(principal)):
        who = require_role(who, EDITORS, "终止流转", "end transfers")
        return _json(land.end_transfer(lzhtbm, body.dkbm, body.date, body.reason, who))

    @r.post("/mortgages", status_code=201, summary="登记经营权抵押（农业农村、管理员）")
    def add_mortgage(body: MortgageIn, who: Principal | None = Depends(principal)):
        who = require_role(who, EDITORS, "登记抵押", "register mortgages")
        return _json(land.add_mortgage(body.model_dump(), who), 201)

    @r.post("/mortgages/{dyid}/release", summary="解除抵押（农业农村、管理员）")
    def release(body: EndIn, dyid: str = Path(max_length=40), who: Principal | None = Depends(principal)):
        who = require_role(who, EDITORS, "解除抵押", "release mortgages")
        return _json(land.release_mortgage(dyid, body.dkbm, body.date, body.reason, who))

    @r.get("/villages/expiring", summary="第二轮承包在某年到期的村（延包30年）")
    def expiring(year: int = Query(ge=1990, le=2100, description="到期年份，如 2021")):
        return _json(land.expiring(year))

    @r.get("/villages/{code}/summary", summary="村级汇总：地块、农户、面积、流转、规范率、抵押")
    def village_summary(code: str = Path(max_length=12), as_of: str | None = AS_OF):
        return _json(land.village_summary(code, as_of))

    @r.get("/counties/{adcode}/summary", summary="县级汇总及对照2021年目标")
    def county_summary(adcode: int = Path(ge=100000, le=999999), as_of: str | None = AS_OF):
        return _json(land.rollup(adcode, as_of))

    @r.get("/summary", summary="全市汇总及对照2021年目标（抵押授信1200万元、授信主体30个以上、规范率90%）")
    def city_summary(as_of: str | None = AS_OF):
        return _json(land.rollup(None, as_of))

    return r
