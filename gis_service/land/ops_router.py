"""/api/land checks, 四至 and import (issue #9 §5–§7); included by the domain's router (router.py).

- ``GET /checks/area-mismatch``, ``/checks/non-farm-use``, ``/checks/overlaps``: paged (limit, offset), filtered
  by county (adcode or name) and village (village_code), ``format=csv|xlsx`` downloads every matching row.
- ``GET /boundaries``: the 四至 computed from geometry against the recorded DKDZ/DKXZ/DKNZ/DKBZ, one row per
  plot and side (default: mismatches only); ``GET /boundaries/{dkbm}`` the four sides of one plot. Names
  (recorded text and adjoining contractors) in full for rural/admin (logged), masked for other roles, omitted
  for anonymous callers.
- ``POST /import`` (rural, admin): the file as the raw request body (zip, GeoPackage or GeoJSON, recognised
  by its first bytes), ``dry_run=true`` for the report alone; without it the data are written only when the
  report has no errors (else 422 with the report). ``POST /import/rollback`` restores the previous version;
  ``GET /import/versions`` lists the saved ones.

Results are computed for the whole register once per data version (plots and feature layers) and cached.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from ..api.deps import ERROR_RESPONSES, STREAMED_BODY, principal, require_role
from ..auth import Principal
from ..crs import METRIC_CRS
from ..domains import SYSTEM, DomainContext, refresh_derived
from ..errors import GisError, bad_parameter, not_found, shown
from ..export import csv_bytes, xlsx_bytes
from ..privacy import mask_value
from . import boundaries, checks, imports

IMPORTERS = ("rural", "admin")
CSV_TYPE = "text/csv; charset=utf-8"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
FILE_RESPONSES = {200: {"content": {"application/json": {}, CSV_TYPE: {}, XLSX_TYPE: {}}}}
PERSONAL_COLUMNS = ("recorded", "neighbour_label", "adjoining_contractors")  # names in 四至 rows (masked per role)
HEADERS_ZH = {
    "dkbm": "地块编码", "dkmc": "地块名称", "village_code": "村级区划代码", "county_adcode": "县区代码",
    "contract_area_mu": "合同面积（亩）", "measured_area_mu": "实测面积（亩）", "difference_mu": "差值（亩）",
    "difference_pct": "差异（%，以合同面积为基数）", "reason": "原因", "current_use": "现状用途",
    "transfer_status": "流转状态", "other_dkbm": "重叠地块编码", "overlap_m2": "重叠面积（平方米）",
    "overlap_mu": "重叠面积（亩）", "side": "方向代码", "side_zh": "方向", "neighbour_kind": "相邻类型",
    "neighbour_label": "按图形判定的四至", "neighbour_dkbm": "相邻地块编码", "covered_share": "覆盖比例",
    "recorded": "登记四至", "status": "核对结果", "adjoining_contractors": "该边相邻的全部承包方"}
CHECKS = {
    "area-mismatch": ("实测面积与合同面积差异", "area_mismatch_pct"),
    "non-farm-use": ("永久基本农田非农化非粮化", "non_farm_uses"),
    "overlaps": ("地块重叠", "overlap_min_m2"),
}


def _download(body: bytes, media_type: str, filename: str) -> Response:
    return Response(body, media_type=media_type,
                    headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}"})


class OpsService:
    """Checks and 四至 over the whole register, cached per data version."""

    def __init__(self, ctx: DomainContext):
        self.ctx = ctx
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}  # one per result: a 四至 computation holds up no check
        self._cache: dict = {}

    def plots_layer(self):
        return self.ctx.layer(imports.PLOTS, SYSTEM)

    def _features(self) -> tuple[list, tuple]:
        sets, versions = [], []
        for spec in self.ctx.rules.value("boundary_features"):
            layer = self.ctx.catalog.get(spec["layer"])
            if layer is None or not self.ctx.store.exists(layer):
                continue
            frame = self.ctx.frame(spec["layer"], METRIC_CRS, SYSTEM)
            where = {spec["class_field"]: spec["class_value"]} if spec.get("class_field") else None
            sets.append(boundaries.feature_set(spec["kind"], frame, spec.get("name_field") or None,
                                               float(spec.get("width_m", 0.0)), where))
            versions.append(self.ctx.store.version(layer))
        return sets, tuple(versions)

    def _cached(self, name: str, key: tuple, make):
        with self._lock:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:  # computed once per data version even when requests arrive together
            hit = self._cache.get(name)
            if hit is not None and hit[0] == key:
                return hit[1]
            value = make()
            self._cache[name] = (key, value)
            return value

    def _rules_key(self, *ids: str) -> tuple:
        return tuple(repr(self.ctx.rules.value(i)) for i in ids)

    def result(self, check: str) -> pd.DataFrame:
        layer = self.plots_layer()
        version = self.ctx.store.version(layer)
        rules = self.ctx.rules
        if check == "area-mismatch":
            return self._cached(check, (version, *self._rules_key("area_mismatch_pct")), lambda: checks.area_mismatch(
                self.ctx.frame(layer.id, who=SYSTEM), rules.value("area_mismatch_pct")))
        if check == "non-farm-use":
            return self._cached(check, (version, *self._rules_key("non_farm_uses")), lambda: checks.non_farm_use(
                self.ctx.frame(layer.id, who=SYSTEM), rules.value("non_farm_uses")))
        if check == "overlaps":
            return self._cached(check, (version, *self._rules_key("overlap_min_m2")), lambda: checks.overlaps(
                self.ctx.frame(layer.id, METRIC_CRS, SYSTEM), rules.value("overlap_min_m2"),
                rules.value("mu_per_square_metre")))
        if check == "boundaries":
            features, feature_versions = self._features()
            ids = ("boundary_tolerance_m", "boundary_min_share", "boundary_features", "boundary_kind_words",
                   "boundary_dominant_share")
            return self._cached(check, (version, feature_versions, *self._rules_key(*ids)),
                                lambda: self._boundaries(layer, features))
        raise not_found(f"检查 {shown(check)}", f"check {shown(check)}")

    def _boundaries(self, layer, features) -> pd.DataFrame:
        plots = self.ctx.frame(layer.id, METRIC_CRS, SYSTEM)
        rules = self.ctx.rules
        computed = boundaries.compute(plots, features, float(rules.value("boundary_tolerance_m")),
                                      float(rules.value("boundary_min_share")))
        recorded = pd.DataFrame(plots[[c for c in ("dkbm", "dkdz", "dkxz", "dknz", "dkbz") if c in plots]])
        out = boundaries.compare(computed, recorded, rules.value("boundary_kind_words"),
                                 float(rules.value("boundary_dominant_share")))
        columns = [c for c in ("village_code", "county_adcode") if c in plots]
        extra = pd.DataFrame(plots[["dkbm", *columns]]).drop_duplicates("dkbm").set_index("dkbm")
        for c in columns:
            out[c] = extra[c].reindex(out["dkbm"]).to_numpy()
        return out

    def county_code(self, county: str | None) -> int | None:
        """The county's adcode from its code or name; an unknown one is a 400 (before any result is computed)."""
        if county is None or county == "":
            return None
        text = county.strip()
        try:
            frame = self.ctx.frame("counties", who=SYSTEM)
        except GisError:
            frame = None
        if frame is None:  # no counties layer to check against: a well-formed code is taken as it is
            if text.isdigit() and len(text) == 6:
                return int(text)
        else:
            known = pd.to_numeric(frame["adcode"], errors="coerce")
            hit = known[(frame["name"] == text) | (known.astype("Int64").astype(str) == text)]
            if len(hit):
                return int(hit.iloc[0])
        raise bad_parameter("county", f"未知县区 {shown(county)}（填 6 位代码或县区名称）",
                            f"unknown county {shown(county)} (a 6-digit adcode or the county's name)")

    def filtered(self, check: str, county: str | None, village: str | None) -> pd.DataFrame:
        code = self.county_code(county)  # parameters first: a bad one costs no whole-register computation
        if village and not (village.isdigit() and len(village) == 12):
            raise bad_parameter("village", "村级区划代码为 12 位数字", "a village code has 12 digits")
        table = self.result(check)
        mask = np.ones(len(table), dtype=bool)
        if code is not None and "county_adcode" in table:
            mask &= (pd.to_numeric(table["county_adcode"], errors="coerce") == code).to_numpy()
        if village:
            mask &= (table["village_code"].astype(str) == village).to_numpy() if "village_code" in table else False
        return table.loc[mask]

    def rows(self, table: pd.DataFrame, who: Principal | None, request: str) -> list[dict]:
        """JSON rows; personal columns of 四至 rows per role (full for rural/admin, logged)."""
        records = table.astype(object).where(table.notna(), None).to_dict("records")
        if not any(c in table for c in PERSONAL_COLUMNS):
            return records
        layer = self.plots_layer()
        entitled = who is not None and layer.sees_personal(who.role)
        words = {w for ws in self.ctx.rules.value("boundary_kind_words").values() for w in ws}
        for row in records:
            for c in PERSONAL_COLUMNS:
                if c == "recorded":  # a road, ditch … names no person
                    personal = boundaries.normalise(row.get(c)) not in words
                else:
                    personal = c == "adjoining_contractors" or row.get("neighbour_kind") == boundaries.PLOT_KIND
                if row.get(c) and personal and not entitled:
                    row[c] = None if who is None else "、".join(mask_value("name", n) for n in row[c].split("、"))
        if entitled and records and self.ctx.access_log is not None:
            self.ctx.access_log.disclose(who, layer, ["contractor_name", "dkdz", "dkxz", "dknz", "dkbz"],
                                         len(records), request)
        return records

    def citation(self, rule_id: str) -> dict:
        rule = self.ctx.rules.rule(rule_id)
        return {"key": rule.key, "value": rule.value, "unit": rule.unit, "citation": rule.citation()}


def service_for(ctx: DomainContext) -> OpsService:
    return ctx.shared(OpsService)


def _page(rows_of, table: pd.DataFrame, limit: int, offset: int, who, request: Request, **meta) -> dict:
    page = table.iloc[offset:offset + limit]
    return {**meta, "total": len(table), "limit": limit, "offset": offset,
            "items": rows_of(page, who, str(request.url.path) + ("?" + request.url.query if request.url.query else ""))}


def _export(table: pd.DataFrame, fmt: str, title: str) -> Response:
    table = table.rename(columns=HEADERS_ZH)
    if fmt == "csv":
        return _download(csv_bytes(table), CSV_TYPE, f"{title}.csv")
    return _download(xlsx_bytes(table, title), XLSX_TYPE, f"{title}.xlsx")


def routes(ctx: DomainContext) -> APIRouter:
    r = APIRouter(responses=ERROR_RESPONSES)
    ops = service_for(ctx)
    page_max = int(ctx.rules.value("check_page_max"))

    @r.get("/checks/{check}", responses=FILE_RESPONSES,
           summary="登记簿检查：面积差异、基本农田非农化非粮化、地块重叠 Register checks")
    def check(request: Request,
              check: Literal["area-mismatch", "non-farm-use", "overlaps"],
              county: str | None = Query(None, max_length=20, description="县区：6 位代码或名称"),
              village: str | None = Query(None, max_length=12, description="村级区划代码（12 位）"),
              limit: int = Query(100, ge=1, le=page_max), offset: int = Query(0, ge=0),
              format: Literal["json", "csv", "xlsx"] = Query("json", description="json|csv|xlsx（导出全部）"),
              who: Principal | None = Depends(principal)):
        title, rule_id = CHECKS[check]
        table = ops.filtered(check, county, village)
        if format != "json":
            return _export(table, format, title)
        return _page(ops.rows, table, limit, offset, who, request, check=check, title_zh=title,
                     rule=ops.citation(rule_id))

    @r.get("/boundaries", responses=FILE_RESPONSES, summary="四至核对：按图形判定的四至与登记四至 四至 from geometry")
    def sizhi(request: Request,
              status: Literal["mismatch", "unverified", "unrecorded", "match", "all"] = Query(
                  "mismatch", description="核对结果：不符|无法核实|未登记|相符|全部"),
              county: str | None = Query(None, max_length=20), village: str | None = Query(None, max_length=12),
              limit: int = Query(100, ge=1, le=page_max), offset: int = Query(0, ge=0),
              format: Literal["json", "csv", "xlsx"] = Query("json"),
              who: Principal | None = Depends(principal)):
        table = ops.filtered("boundaries", county, village)
        counts = table["status"].value_counts().to_dict()
        if status != "all":
            table = table.loc[table["status"] == status]
        if format != "json":
            return _export(pd.DataFrame(ops.rows(table, who, str(request.url)), columns=table.columns), format, "四至核对")
        return _page(ops.rows, table, limit, offset, who, request, status_counts=counts,
                     rule=ops.citation("boundary_tolerance_m"))

    @r.get("/boundaries/{dkbm}", summary="一个地块的四至（图形判定与登记） 四至 of one plot")
    def sizhi_one(request: Request, dkbm: str, who: Principal | None = Depends(principal)):
        if not (dkbm.isdigit() and len(dkbm) == 19):
            raise bad_parameter("dkbm", "地块编码为 19 位数字", "a DKBM has 19 digits")
        table = ops.result("boundaries")
        rows = table.loc[table["dkbm"] == dkbm]
        if not len(rows):
            raise not_found(f"地块 {dkbm}", f"plot {dkbm}")
        return {"dkbm": dkbm, "sides": ops.rows(rows, who, str(request.url.path))}

    def refresher(request: Request):
        services = request.app.state.services
        return lambda: refresh_derived(services.domains, services.domain_contexts)

    @r.post("/import", summary="导入地块数据（Shapefile 压缩包、GeoPackage、GeoJSON；请求体为文件本身） Import plots",
            openapi_extra={STREAMED_BODY: True, "requestBody": {"required": True, "content": {
                "application/zip": {"schema": {"type": "string", "format": "binary"}},
                "application/geopackage+sqlite3": {"schema": {"type": "string", "format": "binary"}},
                "application/geo+json": {"schema": {"type": "string", "format": "binary"}}}}})
    async def import_plots(request: Request,
                           dry_run: bool = Query(False, description="只校验并返回报告，不写入"),
                           coord_sys: str | None = Query(None, max_length=20,
                                                         description="文件无坐标系时指定：cgcs2000|epsg:4527|epsg:4548"),
                           filename: str | None = Query(None, max_length=200, description="原文件名（用于报告）"),
                           replace_all: bool = Query(False, description="文件不含某些县区时仍整层替换（删除这些县区的地块）"),
                           who: Principal | None = Depends(principal)):
        require_role(who, IMPORTERS, "导入地块数据", "import plot data")
        if request.headers.get("content-type", "").startswith("multipart/"):
            raise GisError("unsupported_media_type", "请把文件本身作为请求体发送（不用 multipart 表单）",
                           "send the file itself as the request body (not a multipart form)", 415)
        limit = imports.Limits.from_rules(ctx.rules).max_upload_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise imports.too_large(int(declared), limit)
        work = imports.workdir_for(ctx.settings.var_dir)
        try:
            path = await _receive(request, work, limit)
            result = await run_in_threadpool(imports.run_import, ctx, path, dry_run=dry_run, coord_sys=coord_sys,
                                             source_name=filename or path.name, refresh=refresher(request),
                                             replace_all=replace_all, who=who)
        finally:
            await run_in_threadpool(_remove, work)
        return {**result, "by": who.name}

    @r.post("/import/rollback", summary="回退到导入前的版本 Restore the version before the last import")
    def rollback(request: Request, who: Principal | None = Depends(principal)):
        require_role(who, IMPORTERS, "回退地块数据", "roll back plot data")
        return imports.run_rollback(ctx, refresh=refresher(request), who=who)

    @r.get("/import/versions", summary="可回退的历史版本 Saved versions")
    def versions(who: Principal | None = Depends(principal)):
        require_role(who, IMPORTERS, "查看导入历史", "list import versions")
        layer = ctx.catalog.get(imports.PLOTS)
        return {"versions": imports.versions_for(ctx, layer, 0).list()}

    return r


async def _receive(request: Request, work: Path, limit: int) -> Path:
    """Stream the body to a file, refusing it (413) as soon as it passes the limit; name it by its first bytes."""
    raw = work / "upload.bin"
    size = 0
    with open(raw, "wb") as fh:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise imports.too_large(size, limit)
            fh.write(chunk)
    if not size:
        raise GisError("empty_upload", "请求体为空：请把文件作为请求体发送", "empty body: send the file as the body", 400)
    with open(raw, "rb") as fh:
        head = fh.read(16)
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()  # GeoJSON, possibly after a byte-order mark
    suffix = ".zip" if head.startswith(b"PK\x03\x04") else ".gpkg" if head.startswith(b"SQLite format 3") else (
        ".geojson" if text[:1] == b"{" else None)
    if suffix is None:
        raise GisError("unsupported_format", "无法识别的文件：请上传 Shapefile 压缩包（.zip）、GeoPackage 或 GeoJSON",
                       "unrecognised file: upload a zipped Shapefile, a GeoPackage or GeoJSON", 415)
    return raw.rename(work / f"upload{suffix}")


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
