"""Control zones drawn by planners (issue #6 item 8): saved, versioned, soft-deleted, published as a layer.

Storage: two RecordStore tables. ``canal_control_zones`` holds one row per zone in its current state (its
``id`` is the zone's stable id); ``canal_control_zone_versions`` is append-only and holds every version ever
saved — creation, each edit and the deletion — with author and time, so an edit or a deletion never loses a
former state (``GET /api/canal/control-zones/{id}/history``).

Published as the derived layer ``canal_control_zones`` (layers/canal/canal_control_zones.toml: access
internal, current versions of the zones not deleted), so the zones are an OGC collection and a map layer.

Atomicity — the layer is republished *inside* the record transaction, after the change and before COMMIT:
- a failed publish raises, the transaction rolls back and the caller gets 503 ``control_zone_not_saved``:
  neither the records nor the layer changed (``Store.write`` replaces the file atomically or not at all);
- the transaction holds the record store's write lock while publishing, so two edits (in any worker
  process) publish in the order they commit: an older state can never overwrite a newer one;
- the remaining window — the layer replaced, then COMMIT itself fails (disk full, I/O error) — is caught:
  the layer is republished from the committed records (best effort, logged) and the caller gets 503; and
  start-up republishes the layer from the records anyway (``derive``), so the two cannot disagree for
  longer than until the next start.
The price: other writers to the record store wait while the layer is written (a few tens of milliseconds
for hundreds of zones).

Who may do what: any signed-in caller may read (the layer is internal); planners and admins create and
edit; only admins delete. The caller comes from the ``principal`` dependency: an X-API-Key header or the map
pages' session cookie. CSRF: that cookie is ``SameSite=Strict`` (gis_service/api/deps.py), so the browser
never sends it with a request started from another site — a forged cross-site POST/PUT/DELETE arrives
anonymous and is refused with 401; keys in headers cannot be forged cross-site at all.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Literal

import geopandas as gpd
import shapely
from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field, field_validator
from shapely.geometry import mapping, shape

from .. import crs
from ..api.deps import ERROR_RESPONSES, principal, require_role
from ..auth import Principal
from ..domains import DomainContext
from ..errors import GisError, not_found
from ..store import Column, Table
from . import analysis
from .service import check_geojson, service_for

log = logging.getLogger("gis_service.canal")

LAYER = "canal_control_zones"
EDITORS = ("planner", "admin")
DELETERS = ("admin",)
# The most vertices a zone may have is the rule canal.check_max_vertices (the same limit as a siting check).

# The kinds of zone a planner may draw: the computed zones' kinds (same codes and names), and the others the
# plan asks to delimit (heritage ranges L2130, the ecological red line L2143). Codes in the API and the layer;
# each kind has its siting verdict in canal.siting_verdicts.control_zones.
KINDS = analysis.CONTROL_KIND_ZH
Kind = Literal[tuple(KINDS)]  # the same list, so that OpenAPI shows the choices

_CONTENT = (
    Column("name", "text", required=True),
    Column("kind", "text", required=True),
    Column("note", "text"),
    Column("geometry", "geometry", required=True),  # EPSG:4490 lon/lat, valid, (Multi)Polygon
    Column("area_m2", "real", required=True),  # computed in EPSG:4548
)
ZONES = Table("canal_control_zones", _CONTENT + (
    Column("version", "integer", required=True),
    Column("author", "text", required=True),  # who saved the current version
    Column("created_by", "text", required=True),
    Column("created_at", "text", required=True),
    Column("updated_at", "text", required=True),
    Column("deleted", "boolean", required=True),
    Column("deleted_by", "text"),
    Column("deleted_at", "text"),
), indexes=(("deleted",),))
VERSIONS = Table("canal_control_zone_versions", _CONTENT + (
    Column("zone_id", "integer", required=True),
    Column("version", "integer", required=True),
    Column("action", "text", required=True),  # create | update | delete
    Column("author", "text", required=True),
    Column("author_role", "text", required=True),
    Column("saved_at", "text", required=True),
    Column("coord_sys", "text"),  # the coordinate system the geometry was sent in
    Column("repaired", "boolean"),
    Column("repair_note_zh", "text"),
), unique=(("zone_id", "version"),))

# GEOS validity reasons (shapely.is_valid_reason) in Chinese, for the repair note.
_REASONS_ZH = {
    "Self-intersection": "边自相交",
    "Ring Self-intersection": "环自相交",
    "Hole lies outside shell": "内环（洞）在外环之外",
    "Holes are nested": "内环相互嵌套",
    "Interior is disconnected": "内部不连通",
    "Nested shells": "外环相互嵌套",
    "Duplicate Rings": "环重复",
    "Too few points": "点数过少",
    "Invalid Coordinate": "坐标无效",
    "Ring is not closed": "环未闭合",
}


class ControlZoneIn(BaseModel):
    geometry: dict = Field(description="GeoJSON 几何：Polygon 或 MultiPolygon（自相交的面会被修复并说明）")
    coord_sys: str = Field("wgs84", description=f"坐标系：{'|'.join(crs.COORD_SYSTEMS)}（高德地图上绘制为 gcj02）")
    name: str = Field(min_length=1, max_length=100, description="管控区名称")
    kind: Kind = Field(description="类型：" + "，".join(f"{k}={v}" for k, v in KINDS.items()))
    note: str | None = Field(None, max_length=2000, description="说明（可选）")
    base_version: int | None = Field(None, description="修改所依据的版本（仅 PUT，可选）：与当前版本不同则 409，不覆盖他人的修改")

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("名称不能为空 / name must not be blank")
        return value.strip()


# --- validation (no I/O) --------------------------------------------------------------------------------
def _bad_geometry(zh: str, en: str) -> GisError:
    return GisError("bad_geometry", f"管控区几何无效：{zh}", f"invalid control-zone geometry: {en}", 422)


def prepare_geometry(geojson: dict, coord_sys: str | None,
                     max_vertices: int) -> tuple[shapely.Geometry, float, str | None]:
    """The user's polygon in EPSG:4490, valid; its area in m² (EPSG:4548); a Chinese repair note or None.

    Refused (422): not GeoJSON (checked on the JSON before shapely builds anything: types, positions, closed
    rings, at most max_vertices positions), empty, not a polygon, any vertex outside Langfang + 20 km (the
    message names the likely mistake: axes swapped, metres sent as degrees …), or nothing polygonal left
    after repair. An invalid polygon (self-intersecting …) is repaired with make_valid; polygonal parts are
    kept and zero-area leftovers (dangling lines, points) dropped, and the note says what was done. Whether it
    lies in the city is the caller's check (_prepared)."""
    try:
        check_geojson(geojson, max_vertices)
    except GisError as err:
        raise _bad_geometry(err.message_zh, err.message_en) from None
    try:
        geom = shape(geojson)
    except Exception as exc:  # shapely/GEOS raise several types for malformed GeoJSON
        raise _bad_geometry(f"不是有效的 GeoJSON 几何（{exc}）", f"not a GeoJSON geometry ({exc})") from None
    if geom.is_empty:
        raise _bad_geometry("几何为空", "the geometry is empty")
    if geom.geom_type not in ("Polygon", "MultiPolygon"):
        raise _bad_geometry(f"管控区须为面（Polygon/MultiPolygon），收到 {geom.geom_type}",
                            f"a control zone must be a Polygon or MultiPolygon, not {geom.geom_type}")
    stored = crs.geometry_to_storage(geom, coord_sys)  # 422 with the likely mistake outside Langfang
    note = None
    if not stored.is_valid:
        reason = shapely.is_valid_reason(stored)
        stored, dropped = _polygonal(shapely.make_valid(stored))
        if stored is None:
            raise _bad_geometry(f"修复后不含面（原因：{_reason_zh(reason)}）",
                                f"nothing polygonal is left after repair ({reason})")
        parts = len(getattr(stored, "geoms", [stored]))
        note = (f"原几何无效（{_reason_zh(reason)}），已用 make_valid 修复为 {parts} 个面"
                + ("，并去掉了零面积的线或点" if dropped else ""))
    area = float(shapely.area(crs.transform_geometry(stored, crs.STORAGE_CRS, crs.METRIC_CRS)))
    if area <= 0:
        raise _bad_geometry("面积为零", "the area is zero")
    if note:
        note += f"；修复后面积 {area:,.0f} 平方米"
    return stored, round(area, 1), note


def _polygonal(geom) -> tuple[shapely.Geometry | None, bool]:
    """The polygonal part of a make_valid result (None if there is none), and whether anything was dropped."""
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom, False
    parts = [g for g in getattr(geom, "geoms", [geom]) if g.geom_type in ("Polygon", "MultiPolygon")]
    if not parts:
        return None, True
    polys = [p for g in parts for p in getattr(g, "geoms", [g])]
    return (polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)), True


def _reason_zh(reason: str) -> str:
    kind, _, where = reason.partition("[")
    zh = _REASONS_ZH.get(kind.strip(), kind.strip())
    return f"{zh}，位置 {where.rstrip(']')}" if where else zh


# --- records and the layer ------------------------------------------------------------------------------
def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def current_frame(tx) -> gpd.GeoDataFrame:
    """The layer's rows: the current version of every zone not deleted (EPSG:4490)."""
    rows = tx.find(ZONES, {"deleted": False})
    return gpd.GeoDataFrame({
        "zone_id": [r["id"] for r in rows], "name": [r["name"] for r in rows], "kind": [r["kind"] for r in rows],
        "kind_zh": [KINDS.get(r["kind"], r["kind"]) for r in rows], "version": [r["version"] for r in rows],
        "author": [r["author"] for r in rows], "updated_at": [r["updated_at"] for r in rows],
        "area_m2": [r["area_m2"] for r in rows]},
        geometry=[r["geometry"] for r in rows], crs=crs.STORAGE_CRS)


def derive(ctx: DomainContext) -> dict[str, gpd.GeoDataFrame]:
    """For the domain's derive at start-up: the layer from the records (heals any earlier disagreement)."""
    ctx.records.ensure(ZONES)
    ctx.records.ensure(VERSIONS)
    with ctx.records.transaction() as tx:
        return {LAYER: current_frame(tx)}


def _write(ctx: DomainContext, change):
    """Run change(tx) and republish the layer in one transaction (see the module docstring)."""
    stage = "change"
    try:
        with ctx.records.transaction() as tx:
            result = change(tx)
            stage = "publish"
            ctx.publish(LAYER, current_frame(tx))
            stage = "commit"
    except Exception as exc:
        if stage == "change":  # not found, conflict, forbidden …: nothing was written
            raise
        log.error("control zones: %s failed, change not saved: %r", stage, exc)
        if stage == "commit":  # the layer shows a change the records did not keep: put the layer back
            try:
                ctx.publish(LAYER, derive(ctx)[LAYER])
            except Exception as again:  # start-up republishes it in any case
                log.error("control zones: republishing after a failed commit failed too: %r", again)
        raise GisError("control_zone_not_saved", "管控区未保存：发布图层失败，记录与图层均保持原状，请重试",
                       "the control zone was not saved: publishing the layer failed; records and layer are "
                       "unchanged, please retry", 503) from exc
    return result


def _version_row(zone_id: int, version: int, action: str, content: dict, who: Principal, at: str,
                 coord_sys: str | None, note_zh: str | None) -> dict:
    return {**content, "zone_id": zone_id, "version": version, "action": action, "author": who.name,
            "author_role": who.role, "saved_at": at, "coord_sys": coord_sys, "repaired": note_zh is not None,
            "repair_note_zh": note_zh}


def _prepared(ctx: DomainContext, body: ControlZoneIn) -> tuple[shapely.Geometry, float, str | None, list[str]]:
    """prepare_geometry with the rule's vertex limit, then the city check: 422 outside_langfang for a zone
    wholly outside the city (naming the neighbouring district), a caveat for one partly outside."""
    geometry, area, note = prepare_geometry(body.geometry, body.coord_sys,
                                            int(ctx.rules.value("check_max_vertices")))
    caveats = service_for(ctx).require_in_city(crs.transform_geometry(geometry, crs.STORAGE_CRS, crs.METRIC_CRS))
    return geometry, area, note, caveats


def _content(body: ControlZoneIn, geometry, area: float) -> dict:
    return {"name": body.name, "kind": body.kind, "note": body.note, "geometry": geometry, "area_m2": area}


def create(ctx: DomainContext, who: Principal, body: ControlZoneIn) -> dict:
    geometry, area, note, caveats = _prepared(ctx, body)
    content, at = _content(body, geometry, area), _now()

    def change(tx):
        zone_id = tx.insert(ZONES, {**content, "version": 1, "author": who.name, "created_by": who.name,
                                    "created_at": at, "updated_at": at, "deleted": False})
        tx.insert(VERSIONS, _version_row(zone_id, 1, "create", content, who, at, body.coord_sys, note))
        return tx.get(ZONES, zone_id)

    return {**_zone_json(_write(ctx, change), note), "caveats": caveats}


def update(ctx: DomainContext, who: Principal, zone_id: int, body: ControlZoneIn) -> dict:
    geometry, area, note, caveats = _prepared(ctx, body)
    content, at = _content(body, geometry, area), _now()

    def change(tx):
        zone = _live(tx, zone_id)
        if body.base_version is not None and body.base_version != zone["version"]:
            raise GisError("version_conflict",
                           f"管控区 {zone_id} 已被修改为第 {zone['version']} 版（你依据的是第 {body.base_version} 版），请刷新后再改",
                           f"control zone {zone_id} is at version {zone['version']}, not {body.base_version}; "
                           "reload and edit again", 409)
        version = zone["version"] + 1
        tx.update(ZONES, zone_id, {**content, "version": version, "author": who.name, "updated_at": at})
        tx.insert(VERSIONS, _version_row(zone_id, version, "update", content, who, at, body.coord_sys, note))
        return tx.get(ZONES, zone_id)

    return {**_zone_json(_write(ctx, change), note), "caveats": caveats}


def delete(ctx: DomainContext, who: Principal, zone_id: int) -> dict:
    at = _now()

    def change(tx):
        zone = _live(tx, zone_id)
        version = zone["version"] + 1
        content = {c.name: zone[c.name] for c in _CONTENT}
        tx.update(ZONES, zone_id, {"version": version, "deleted": True, "deleted_by": who.name, "deleted_at": at})
        tx.insert(VERSIONS, _version_row(zone_id, version, "delete", content, who, at, None, None))
        return tx.get(ZONES, zone_id)

    return _zone_json(_write(ctx, change))


def _live(tx, zone_id: int) -> dict:
    zone = tx.get(ZONES, zone_id)
    if zone is None:
        raise not_found(f"管控区 {zone_id}", f"control zone {zone_id}")
    if zone["deleted"]:
        raise GisError("control_zone_deleted", f"管控区 {zone_id} 已于 {zone['deleted_at']} 被 {zone['deleted_by']} 删除",
                       f"control zone {zone_id} was deleted at {zone['deleted_at']}", 409)
    return zone


def get(ctx: DomainContext, zone_id: int) -> dict:
    with ctx.records.transaction() as tx:
        zone = tx.get(ZONES, zone_id)
    if zone is None:
        raise not_found(f"管控区 {zone_id}", f"control zone {zone_id}")
    return _zone_json(zone)


def history(ctx: DomainContext, zone_id: int) -> dict:
    with ctx.records.transaction() as tx:
        zone = tx.get(ZONES, zone_id)
        versions = tx.find(VERSIONS, {"zone_id": zone_id}, order_by=(("version", True),))
    if zone is None:
        raise not_found(f"管控区 {zone_id}", f"control zone {zone_id}")
    return {"id": zone_id, "deleted": zone["deleted"], "current_version": zone["version"],
            "versions": [{"version": v["version"], "action": v["action"], "author": v["author"],
                          "author_role": v["author_role"], "saved_at": v["saved_at"], "name": v["name"],
                          "kind": v["kind"], "kind_zh": KINDS.get(v["kind"], v["kind"]), "note": v["note"],
                          "area_m2": v["area_m2"], "coord_sys": v["coord_sys"], "repaired": bool(v["repaired"]),
                          "repair_note_zh": v["repair_note_zh"], "geometry": mapping(v["geometry"])}
                         for v in versions]}


def listing(ctx: DomainContext) -> dict:
    """The current zones as a GeoJSON FeatureCollection (lon/lat, EPSG:4490)."""
    with ctx.records.transaction() as tx:
        zones = tx.find(ZONES, {"deleted": False})
    return {"type": "FeatureCollection",
            "features": [{"type": "Feature", "id": z["id"], "geometry": mapping(z["geometry"]),
                          "properties": {k: v for k, v in _zone_json(z).items() if k != "geometry"}} for z in zones]}


def _zone_json(zone: dict, repair_note_zh: str | None = None) -> dict:
    return {"id": zone["id"], "name": zone["name"], "kind": zone["kind"],
            "kind_zh": KINDS.get(zone["kind"], zone["kind"]),
            "note": zone["note"], "version": zone["version"], "author": zone["author"],
            "created_by": zone["created_by"], "created_at": zone["created_at"], "updated_at": zone["updated_at"],
            "deleted": zone["deleted"], "deleted_by": zone["deleted_by"], "deleted_at": zone["deleted_at"],
            "area_m2": zone["area_m2"], "repaired": repair_note_zh is not None, "repair_note_zh": repair_note_zh,
            "geometry": mapping(zone["geometry"]), "crs": "EPSG:4490 (lon, lat)"}


# --- routes -----------------------------------------------------------------------------------------------
def router(ctx: DomainContext) -> APIRouter:
    """Routes under /control-zones; the canal router includes them (so: /api/canal/control-zones)."""
    ctx.records.ensure(ZONES)
    ctx.records.ensure(VERSIONS)
    r = APIRouter(prefix="/control-zones", responses=ERROR_RESPONSES)
    zone_id_path = Path(ge=1, le=2**63 - 1, description="管控区编号")  # SQLite integers are 64-bit

    @r.post("", status_code=201, summary="新建规划管控区（规划、管理员）Create a control zone (planner, admin)")
    def create_zone(body: ControlZoneIn, who: Principal | None = Depends(principal)):
        return create(ctx, require_role(who, EDITORS, "新建管控区", "create control zones"), body)

    @r.get("", summary="当前管控区（GeoJSON）Current control zones")
    def list_zones(who: Principal | None = Depends(principal)):
        require_role(who, None, "查看管控区", "read control zones")
        return listing(ctx)

    @r.get("/{zone_id}", summary="一个管控区的当前版本 A control zone's current version")
    def get_zone(zone_id: int = zone_id_path, who: Principal | None = Depends(principal)):
        require_role(who, None, "查看管控区", "read control zones")
        return get(ctx, zone_id)

    @r.put("/{zone_id}", summary="修改管控区：保存新版本，旧版本保留 Edit: a new version, the old one kept")
    def update_zone(body: ControlZoneIn, zone_id: int = zone_id_path, who: Principal | None = Depends(principal)):
        return update(ctx, require_role(who, EDITORS, "修改管控区", "edit control zones"), zone_id, body)

    @r.delete("/{zone_id}", summary="删除管控区（仅管理员；历史保留）Delete (admin only; history kept)")
    def delete_zone(zone_id: int = zone_id_path, who: Principal | None = Depends(principal)):
        return delete(ctx, require_role(who, DELETERS, "删除管控区", "delete control zones"), zone_id)

    @r.get("/{zone_id}/history", summary="管控区的全部版本 Every version of a control zone")
    def zone_history(zone_id: int = zone_id_path, who: Principal | None = Depends(principal)):
        require_role(who, None, "查看管控区", "read control zones")
        return history(ctx, zone_id)

    return r
