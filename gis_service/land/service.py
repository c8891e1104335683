"""The land register service: plot cards, queries, roll-ups against the 2021 targets, edits with history.

Reads: the ``plots`` layer through the Store, the register (register.py: the file, or the database's through a local copy)
the record store (history.py). For speed with two million plots a per-data-version index
(``var/land/index-<version>.sqlite``: dkbm → fid and the attributes the lists and summaries need) is built
once per plots/register version and reused across restarts; village figures are computed once per
(version, day) and only the villages with edits are recomputed live.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import shapely

from .. import crs
from ..auth import Principal
from ..errors import GisError, bad_parameter, not_found
from ..privacy import mask_value
from ..store import FeatureQuery, GeoPackageStore
from ..store.scan import scan_chunks
from . import codes
from .history import History, parse_day, today
from .register import MMAP_BYTES, open_register

log = logging.getLogger("gis_service")
PLOTS = "plots"
VILLAGES = "villages"
INDEX_COLUMNS = ["dkbm", "fbfbm", "cbfbm", "cbhtbm", "village_code", "county_adcode", "contract_area_mu",
                 "measured_area_mu", "transfer_status", "mortgage_status", "current_use", "contract_end"]
VERSION_CHECK_S = 1.0  # how stale a data version may be read (an import or rebuild shows within a second)
INDEX_SCHEMA = 2  # bump when the index's tables change: an index of an older layout is rebuilt
BOUNDARY_WORDS = ("道路", "沟渠", "其他", "")  # 四至 values that name no person
PLOT_EDITABLE = {"dkmc": str, "syqxz": str, "dklb": str, "tdlylx": str, "dldj": str, "tdyt": str,
                 "current_use": str, "contract_area_mu": float, "dkdz": str, "dkxz": str, "dknz": str,
                 "dkbz": str, "zjrxm": str}
PLOT_PERSONAL = ("dkdz", "dkxz", "dknz", "dkbz", "zjrxm")
# The other party of a transfer or mortgage may be a natural person (a 种粮大户, a household borrowing on its
# own plot): treated as a name, like the contractor's, whoever it is.
PARTY_FIELDS = {"transfer": "transferee", "mortgage": "borrower"}
CONTRACT_EDITABLE = {"cbqxq": str, "cbqxz": str, "htzmj": float, "cbfs": str}
TRANSFER_FORMS = ("出租", "转包", "入股", "互换", "代耕代种", "其他")
ENDED = ("已解除", "已终止")
_VILLAGE = re.compile(r"^\d{12}$")


def _json_float(x) -> float:
    return float(round(float(x), 2))


class LandService:
    def __init__(self, ctx):
        self.ctx = ctx
        self.rules = ctx.rules
        self.register = open_register(ctx.settings)
        self.history = History(ctx.records)
        self._lock = threading.Lock()
        self._villages: dict = {}  # (version, day) -> DataFrame of per-village figures
        self._version: tuple[float, str] | None = None
        self._edited_table: tuple[tuple, pd.DataFrame] | None = None  # villages_as_of with edits applied
        self._local = threading.local()  # one index connection per thread (made here: two first requests raced)

    # --- data versions and the index --------------------------------------------------------------
    def plots_layer(self, who: Principal | None = None):
        return self.ctx.layer(PLOTS, who)

    def data_version(self) -> str:
        """Changes when the plots layer or the register file is replaced (checked at most every
        VERSION_CHECK_S seconds: a request makes several reads, not several file checks)."""
        now = time.monotonic()
        cached = self._version
        if cached is not None and now - cached[0] < VERSION_CHECK_S:
            return cached[1]
        self.register.require()
        layer = self.plots_layer()
        raw = f"{self.ctx.store.version(layer)}|{self.register.version()}"
        version = hashlib.sha1(raw.encode()).hexdigest()[:16]
        self._version = (now, version)
        return version

    def index(self) -> sqlite3.Connection:
        """A read connection to the index of the current data version (built if missing; per thread)."""
        path = self._index_path(self.data_version())
        with self._lock:
            if not path.exists():
                # A build is long (minutes at two million plots) and removes the other versions' indexes: first
                # look the version up again — this one may be out of date (up to VERSION_CHECK_S old) while
                # another worker sharing var/land already built the new data's index.
                self._version = None
                path = self._index_path(self.data_version())
                if not path.exists():
                    self._build_index(path)
        local = self._local
        cached = getattr(local, "conn", None)
        if cached is None or cached[0] != path:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
            local.conn = cached = (path, conn)
        return cached[1]

    def _index_path(self, version: str) -> Path:
        return self.ctx.settings.var_dir / "land" / f"index-{version}-s{INDEX_SCHEMA}.sqlite"

    def _build_index(self, path: Path) -> None:
        layer = self.plots_layer()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        if tmp.exists():
            tmp.unlink()
        conn = sqlite3.connect(tmp)
        try:
            conn.execute("PRAGMA journal_mode = OFF")
            _copy_attributes(self.ctx.store, layer, conn)
            for col in ("dkbm", "village_code", "cbfbm"):
                conn.execute(f'CREATE INDEX "idx_{col}" ON plots_idx ("{col}")')
            conn.execute("CREATE TABLE village_expiry AS SELECT village_code, substr(contract_end, 1, 4) AS year, "
                         "count(DISTINCT cbhtbm) AS contracts, count(*) AS plots, min(contract_end) AS first_end, "
                         "max(contract_end) AS last_end FROM plots_idx GROUP BY village_code, year")
            conn.execute("CREATE INDEX idx_expiry_year ON village_expiry (year)")
            conn.execute("CREATE TABLE village_plots AS " + PLOT_FIGURES.format(table="plots_idx"))
            conn.commit()
        finally:
            conn.close()
        os.replace(tmp, path)
        # Earlier data versions, once this one is in place: another worker sharing var/land may be reading
        # (or have just built) the current one.
        for old in path.parent.glob("index-*.sqlite"):
            if old != path:
                old.unlink(missing_ok=True)
        log.info("land index built: %s", path.name)

    def warm(self) -> None:
        """Build the index and today's village figures (start-up, in the background)."""
        try:
            self.village_table(today())
        except GisError as exc:
            log.warning("land index not built: %s", exc.message_en)

    # --- rules ----------------------------------------------------------------------------------------
    def value(self, rule_id: str):
        return self.rules.value(rule_id)

    def rules_applied(self, *ids: str) -> list[dict]:
        return [{"rule": self.rules.rule(i).key, "value": self.value(i), "citation": self.rules.rule(i).citation()}
                for i in ids]

    def extended_end(self, end: str | None) -> str | None:
        if not end:
            return None
        d = dt.date.fromisoformat(end)
        years = int(self.value("extension_years"))
        if d.year + years > dt.MAXYEAR:  # no such date (an edit refuses it; an imported register may hold it)
            return None
        try:
            return d.replace(year=d.year + years).isoformat()
        except ValueError:  # 29 February into a common year: the 28th
            return d.replace(year=d.year + years, day=28).isoformat()

    # --- who sees what --------------------------------------------------------------------------------
    def entitled(self, who: Principal | None) -> bool:
        layer = self.ctx.catalog.get(PLOTS)  # the definition says who sees personal fields (no file access)
        return who is not None and layer is not None and layer.sees_personal(who.role)

    def person(self, kind: str, value, who: Principal | None):
        if value is None or who is None:
            return None
        return value if self.entitled(who) else mask_value(kind, value)

    def party(self, entity: str, row: dict, who: Principal | None) -> dict:
        """A transfer or mortgage row with its natural-person party shown per the caller."""
        field = PARTY_FIELDS.get(entity)
        if field is None or field not in row:
            return row
        return dict(row, **{field: self.person("name", row[field], who)})

    def side(self, value, who):
        """A recorded 四至 side: a road/ditch/other as is, a neighbour's name as a person."""
        return value if value in BOUNDARY_WORDS else self.person("name", value, who)

    def log_full(self, who: Principal | None, collection: str, fields: list[str], subjects: list[str],
                 request: str) -> None:
        if subjects and fields and self.entitled(who):
            self.ctx.access_log.record(who.name, who.role, collection, fields, len(subjects), request,
                                       subjects=subjects)

    # --- plots ----------------------------------------------------------------------------------------
    def fid_of(self, dkbm: str) -> int | None:
        row = self.index().execute("SELECT fid FROM plots_idx WHERE dkbm = ?", (dkbm,)).fetchone()
        return row[0] if row else None

    def _feature(self, fid: int) -> tuple[dict, dict]:
        page = self.ctx.store.get(self.plots_layer(), fid)  # clear values: masked below per caller
        if not page.fids:
            raise not_found("地块", "plot")
        return page.properties[0], orjson.loads(page.geometry_json[0])

    def plot(self, dkbm: str, who: Principal | None, as_of: str | None = None, request: str = "") -> dict:
        code = codes.validate_dkbm(dkbm)
        fid = self.fid_of(code)
        day = parse_day(as_of, "as_of") if as_of else today()
        if fid is None:
            raise not_found(f"地块 {code}", f"plot {code}")
        props, geometry = self._feature(fid)
        card = self.card(props, who, day)
        card["geometry"] = geometry
        self.log_card(who, [card], request)
        return card

    def card(self, props: dict, who: Principal | None, day: str) -> dict:
        """The plot card as of `day`: plot attributes, contract with its extension, contractor, transfers,
        mortgages; personal values per the caller (omitted without a key, masked without rural/admin)."""
        dkbm = props["dkbm"]
        versions = self.history.for_plot(dkbm)
        plot_versions = [v for v in versions if v["entity"] == "plot"]
        v = History.as_of(plot_versions, day)
        base_from = props.get("contract_start")
        data = dict(props)
        if v is not None:  # versions are contiguous from the first edit on: before it, the base holds
            data.update(v["data"])
        contract = self.contract(props["cbhtbm"], day)
        household = self.household(props["cbfbm"])
        transfers = self.transfers_of(dkbm, day, versions)
        mortgages = self.mortgages_of(dkbm, day, versions)
        employer = self.register.rows("SELECT fbfbm, name FROM employers WHERE fbfbm = ?", (props["fbfbm"],))
        persons = who is not None
        card = {
            "dkbm": dkbm, "dkmc": data.get("dkmc"), "fbfbm": props["fbfbm"],
            "employer": employer[0] if employer else {"fbfbm": props["fbfbm"], "name": None},
            "village_code": props["village_code"], "county_adcode": props["county_adcode"],
            "syqxz": data.get("syqxz"), "dklb": data.get("dklb"), "tdlylx": data.get("tdlylx"),
            "dldj": data.get("dldj"), "tdyt": data.get("tdyt"), "sfjbnt": bool(props.get("is_basic_farmland")),
            "current_use": data.get("current_use"),
            "measured_area_mu": props.get("measured_area_mu"), "contract_area_mu": data.get("contract_area_mu"),
            "boundaries": ({k: self.side(data.get(f), who) for k, f in
                            (("east", "dkdz"), ("west", "dkxz"), ("south", "dknz"), ("north", "dkbz"))}
                           if persons else None),
            "zjrxm": self.person("name", data.get("zjrxm"), who),
            "contract": contract,
            "contractor": ({"cbfbm": props["cbfbm"],
                            "name": self.person("name", household.get("name"), who),
                            "id_number": self.person("id_number", household.get("id_number"), who),
                            "phone": self.person("phone", household.get("phone"), who),
                            "members": household.get("members")} if persons and household else None),
            "transfer_status": transfers[0]["lzfs"] if transfers else "未流转",
            "mortgage_status": "抵押中" if any(self._active(m, day) for m in mortgages) else
            ("已解除" if mortgages else "未抵押"),
            "transfers": [self.party("transfer", t, who) for t in transfers],
            "mortgages": [self.party("mortgage", m, who) for m in mortgages],
            "as_of": day, "version": {"valid_from": v["valid_from"] if v else base_from,
                                      "valid_to": v["valid_to"] if v else (plot_versions[0]["valid_from"]
                                                                           if plot_versions else None)},
            "personal_data": "full" if self.entitled(who) else ("masked" if persons else "omitted"),
        }
        return card

    def log_card(self, who, cards: list[dict], request: str) -> None:
        if self.entitled(who):
            self.log_full(who, PLOTS, ["contractor_name", "contractor_id_number", "contractor_phone", "zjrxm",
                                       "dkdz", "dkxz", "dknz", "dkbz", *PARTY_FIELDS.values()],
                          [c["dkbm"] for c in cards], request)

    def household(self, cbfbm: str) -> dict:
        rows = self.register.rows("SELECT * FROM households WHERE cbfbm = ?", (cbfbm,))
        return rows[0] if rows else {}

    def contract(self, cbhtbm: str, day: str) -> dict | None:
        rows = self.register.rows("SELECT cbhtbm, fbfbm, cbfbm, cbfs, cbqxq, cbqxz, htzmj FROM contracts "
                                  "WHERE cbhtbm = ?", (cbhtbm,))
        versions = self.history.versions("contract", cbhtbm)
        v = History.as_of(versions, day)
        row = dict(v["data"]) if v else (rows[0] if rows else None)
        if row is None:
            return None
        row["extended_end"] = self.extended_end(row.get("cbqxz"))
        row["extension_rule"] = self.rules_applied("extension_years")[0]
        return row

    def _apply(self, base_rows: list[dict], versions: list[dict], entity: str, key_of, day: str) -> list[dict]:
        """Records of one kind as of `day`: base rows, replaced by their versions where edits exist."""
        mine = {}
        for v in versions:
            if v["entity"] == entity:
                mine.setdefault(v["key"], []).append(v)
        out = []
        for row in base_rows:
            vs = mine.pop(key_of(row), None)
            if vs is None:
                out.append(row)
                continue
            v = History.as_of(vs, day)
            if v is not None:
                out.append(dict(v["data"]))
            elif day < vs[0]["valid_from"]:
                out.append(row)
        for vs in mine.values():  # records created through the API
            v = History.as_of(vs, day)
            if v is not None:
                out.append(dict(v["data"]))
        return out

    @staticmethod
    def _active(row: dict, day: str) -> bool:
        """In force on `day`: started, not past its end; a record ended (已解除/已终止) ended on its end date,
        so before that date it was in force — the register read as of a past day shows it so."""
        start, end = row.get("start_date", ""), row.get("end_date") or "9999"
        return start <= day < end if row.get("status") in ENDED else start <= day <= end

    def transfers_of(self, dkbm: str, day: str, versions: list[dict]) -> list[dict]:
        base = self.register.rows("SELECT lzhtbm, cbhtbm, cbfbm, dkbm, transferee, lzfs, lzqx_years, start_date, "
                                  "end_date, lzmj, use, standard_form, village_code FROM transfers WHERE dkbm = ?",
                                  (dkbm,))
        for r in base:
            r["standard_form"] = bool(r["standard_form"])
        rows = self._apply(base, versions, "transfer", lambda r: f"{r['lzhtbm']}|{r['dkbm']}", day)
        return [r for r in rows if self._active(r, day)]

    def mortgages_of(self, dkbm: str, day: str, versions: list[dict]) -> list[dict]:
        base = self.register.rows("SELECT dyid, dkbm, lzhtbm, borrower, lender, amount_wan, term_years, start_date, "
                                  "end_date, status, village_code FROM mortgages WHERE dkbm = ?", (dkbm,))
        rows = self._apply(base, versions, "mortgage", lambda r: f"{r['dyid']}|{r['dkbm']}", day)
        for r in rows:  # the status as of `day`: a mortgage released later was in force then
            if r.get("status") in ENDED and self._active(r, day):
                r["status"] = "抵押中"
        return [r for r in rows if r.get("start_date", "") <= day]

    # --- map click, lists, search ---------------------------------------------------------------------
    def at(self, at: str, coord_sys: str | None, who, day: str | None, request: str) -> dict:
        try:
            x, y = (float(v) for v in at.split(","))
        except ValueError:
            raise bad_parameter("at", "须为 x,y（经度,纬度 或 东,北）", "must be x,y (lon,lat or easting,northing)") from None
        lon, lat = crs.to_storage_xy(x, y, coord_sys)
        lon, lat = float(lon[0]), float(lat[0])
        tol = float(self.value("click_tolerance_m")) / 111_000.0
        layer = self.plots_layer()
        page = self.ctx.store.query(layer, FeatureQuery(bbox=(lon - tol, lat - tol, lon + tol, lat + tol),
                                                        columns=["dkbm"], limit=50))
        point = shapely.Point(lon, lat)
        best = None
        if page.fids:
            geoms = page.geometries
            d = shapely.distance(geoms, point)
            i = int(np.argmin(d))
            if d[i] <= tol:
                best = page.properties[i]["dkbm"]
        if best is None:
            return {"count": 0, "plots": [], "at": {"lon": lon, "lat": lat}}
        card = self.plot(best, who, day, request)
        return {"count": 1, "plots": [card], "at": {"lon": lon, "lat": lat}}

    def _list_rows(self, where: str, params: tuple, who, limit: int, offset: int) -> tuple[list[dict], int]:
        idx = self.index()
        total = idx.execute(f"SELECT count(*) FROM plots_idx WHERE {where}", params).fetchone()[0]
        rows = [dict(r) for r in idx.execute(
            f"SELECT dkbm, cbfbm, cbhtbm, village_code, contract_area_mu, measured_area_mu, transfer_status, "
            f"mortgage_status, current_use, contract_end FROM plots_idx WHERE {where} ORDER BY dkbm LIMIT ? OFFSET ?",
            params + (limit, offset)).fetchall()]
        names = {}
        if who is not None and rows:
            cb = sorted({r["cbfbm"] for r in rows})
            q = ",".join("?" * len(cb))
            names = {r["cbfbm"]: r["name"] for r in self.register.rows(
                f"SELECT cbfbm, name FROM households WHERE cbfbm IN ({q})", tuple(cb))}
        for r in rows:
            r["extended_end"] = self.extended_end(r["contract_end"])
            r["contractor_name"] = self.person("name", names.get(r["cbfbm"]), who) if who is not None else None
        return rows, total

    def _page(self, limit: int | None, offset: int) -> tuple[int, int]:
        cap = int(self.value("list_max_plots"))
        limit = cap if limit is None else limit
        if not 1 <= limit <= cap or offset < 0:
            raise bad_parameter("limit", f"须在 1–{cap} 之间，offset ≥ 0", f"must be 1–{cap}, offset ≥ 0")
        return limit, offset

    def by_village(self, village: str, who, limit: int | None, offset: int, request: str) -> dict:
        if not _VILLAGE.match(village or ""):
            raise bad_parameter("village", "须为 12 位村级区划代码", "must be a 12-digit village code")
        limit, offset = self._page(limit, offset)
        rows, total = self._list_rows("village_code = ?", (village,), who, limit, offset)
        if total == 0:
            raise not_found(f"村 {village} 的地块", f"plots of village {village}")
        if self.entitled(who):
            self.log_full(who, PLOTS, ["contractor_name"], [r["dkbm"] for r in rows], request)
        return {"village_code": village, "number_matched": total, "count": len(rows), "plots": rows}

    def by_contractor(self, contractor: str, who, limit: int | None, offset: int, request: str) -> dict:
        text = (contractor or "").strip()
        if not text or len(text) > 40:
            raise bad_parameter("contractor", "须为承包方编码（18 位）或姓名", "must be a CBFBM (18 digits) or a name")
        if text.isdigit():
            cbfbms = [codes.validate_cbfbm(text)]
        else:
            cbfbms = [r["cbfbm"] for r in self.register.rows(
                "SELECT cbfbm FROM households WHERE name = ? ORDER BY cbfbm LIMIT 200", (text,))]
        limit, offset = self._page(limit, offset)
        if not cbfbms:
            raise not_found(f"承包方 {text}", f"contractor {text}")
        q = ",".join("?" * len(cbfbms))
        rows, total = self._list_rows(f"cbfbm IN ({q})", tuple(cbfbms), who, limit, offset)
        households = []
        for cb in cbfbms:
            h = self.household(cb)
            if h:
                households.append({"cbfbm": cb, "name": self.person("name", h["name"], who),
                                   "id_number": self.person("id_number", h["id_number"], who),
                                   "phone": self.person("phone", h["phone"], who), "members": h["members"],
                                   "village_code": h["village_code"]})
        self.log_full(who, "land_households", ["name", "id_number", "phone"], [h["cbfbm"] for h in households],
                      request)
        return {"contractor": text, "households": households, "number_matched": total, "count": len(rows),
                "plots": rows}

    def search(self, geojson: dict, coord_sys: str | None, who, request: str) -> dict:
        geom = _polygon(geojson)
        lonlat = crs.geometry_to_storage(geom, coord_sys)
        metric = crs.transform_geometry(lonlat, crs.STORAGE_CRS, crs.METRIC_CRS)
        if not shapely.is_valid(metric):
            raise GisError("invalid_geometry", f"多边形无效：{shapely.is_valid_reason(metric)}",
                           f"invalid polygon: {shapely.is_valid_reason(metric)}", 422)
        cap = int(self.value("search_max_plots"))
        layer = self.plots_layer()
        page = self.ctx.store.query(layer, FeatureQuery(intersects=lonlat, columns=["dkbm", "measured_area_mu"],
                                                        limit=cap + 1))
        if page.number_matched > cap:
            raise GisError("too_many_plots", f"多边形内地块 {page.number_matched} 块，超过上限 {cap}，请缩小范围",
                           f"{page.number_matched} plots intersect the polygon, more than {cap}; draw a smaller one",
                           422)
        mu = float(self.value("mu_per_square_metre"))
        plots = []
        if page.fids:
            geoms = crs.transform_geometry(page.geometries, crs.STORAGE_CRS, crs.METRIC_CRS)
            inter = shapely.area(shapely.intersection(geoms, metric))
            for p, a in zip(page.properties, inter):
                if a <= 0:
                    continue
                plots.append({"dkbm": p["dkbm"], "measured_area_mu": p["measured_area_mu"],
                              "intersect_area_m2": round(float(a), 1), "intersect_area_mu": round(float(a) * mu, 3)})
        plots.sort(key=lambda p: p["dkbm"])
        total = sum(p["intersect_area_m2"] for p in plots)
        return {"count": len(plots), "crs_for_area": crs.METRIC_CRS, "polygon_area_m2": round(float(metric.area), 1),
                "intersect_area_m2": round(total, 1), "intersect_area_mu": round(total * mu, 3), "plots": plots,
                "rules_applied": self.rules_applied("mu_per_square_metre", "search_max_plots")}

    # --- summaries ------------------------------------------------------------------------------------
    def village_table(self, day: str) -> pd.DataFrame:
        """Per-village figures from the base data as of `day`, computed once per data version and day: the
        plot figures are a table of the index, the transfer figures one grouped query on the register."""
        key = (self.data_version(), day)
        with self._lock:
            cached = self._villages.get(key)
        if cached is not None:
            return cached
        plots = pd.read_sql_query("SELECT * FROM village_plots", self.index())
        with self.register.conn() as c:
            transfers = pd.read_sql_query(TRANSFER_FIGURES.format(table="transfers"), c, params={"day": day})
        table = _combine(plots, transfers)
        with self._lock:
            self._villages = {key: table}
        return table

    def _village_live(self, code: str, day: str, versions: list[dict]) -> pd.DataFrame:
        """One village's figures with its edits applied: the same queries over its rows in memory."""
        plots = [dict(r) for r in self.index().execute(
            "SELECT dkbm, village_code, county_adcode, cbfbm, contract_area_mu, measured_area_mu FROM plots_idx "
            "WHERE village_code = ?", (code,)).fetchall()]
        edited = {v["key"]: v for v in versions if v["entity"] == "plot" and History.as_of([v], day)}
        for row in plots:
            if row["dkbm"] in edited and "contract_area_mu" in edited[row["dkbm"]]["data"]:
                row["contract_area_mu"] = float(edited[row["dkbm"]]["data"]["contract_area_mu"])
        base = self.register.rows("SELECT lzhtbm, dkbm, lzmj, standard_form, start_date, end_date, village_code "
                                  "FROM transfers WHERE village_code = ?", (code,))
        transfers = [r for r in self._apply(base, versions, "transfer", lambda r: f"{r['lzhtbm']}|{r['dkbm']}", day)
                     if self._active(r, day)]
        mem = sqlite3.connect(":memory:")
        mem.execute("CREATE TABLE plots_idx (dkbm, village_code, county_adcode, cbfbm, contract_area_mu, measured_area_mu)")
        mem.executemany("INSERT INTO plots_idx VALUES (:dkbm, :village_code, :county_adcode, :cbfbm, :contract_area_mu, "
                        ":measured_area_mu)", plots)
        mem.execute("CREATE TABLE transfers (village_code, lzhtbm, lzmj, standard_form, start_date, end_date)")
        mem.executemany("INSERT INTO transfers VALUES (:village_code, :lzhtbm, :lzmj, :standard_form, :start_date, "
                        ":end_date)", [{**r, "standard_form": int(bool(r["standard_form"]))} for r in transfers])
        table = _combine(pd.read_sql_query(PLOT_FIGURES.format(table="plots_idx"), mem),
                         pd.read_sql_query(TRANSFER_FIGURES.format(table="transfers"), mem, params={"day": day}))
        mem.close()
        return table

    def villages_as_of(self, day: str) -> pd.DataFrame:
        """Every village's figures as of `day`: the base table with the edited villages recomputed, kept
        until the data version, the day or the latest edit changes."""
        table = self.village_table(day)
        latest = self.history.latest_id()
        if not latest:
            return table
        key = (self.data_version(), day, latest)
        with self._lock:
            cached = self._edited_table
        if cached is not None and cached[0] == key:
            return cached[1]
        edited = self.history.edited_villages()
        parts = [table.drop(index=[v for v in edited if v in table.index])]
        for code in sorted(edited):
            parts.append(self._village_live(code, day, self.history.for_village(code)))
        result = pd.concat(parts)
        with self._lock:
            self._edited_table = (key, result)
        return result

    def mortgage_rows(self, day: str, village: str | None = None) -> list[dict]:
        with self.register.conn() as c:
            base = [dict(r) for r in c.execute("SELECT * FROM mortgages").fetchall()]
        with self.ctx.records.reading() as tx:
            from .history import VERSIONS
            versions = tx.find(VERSIONS, {"entity": "mortgage"})
        rows = self._apply(base, versions, "mortgage", lambda r: f"{r['dyid']}|{r['dkbm']}", day)
        return [r for r in rows if village is None or r["village_code"] == village]

    def mortgage_figures(self, rows: list[dict], day: str, county: int | None = None) -> dict:
        if county is not None:
            rows = [r for r in rows if r["dkbm"][:6] == str(county)]
        active = [r for r in rows if self._active(r, day)]
        year = int(self.value("target_year"))
        y0, y1 = f"{year}-01-01", f"{year}-12-31"
        in_year = [r for r in rows if r["start_date"] <= y1 and r["end_date"] >= y0]

        def amount(rs):
            return round(sum({r["dyid"]: float(r["amount_wan"]) for r in rs}.values()), 1)

        return {"mortgaged_plots": len({r["dkbm"] for r in active}), "mortgages": len({r["dyid"] for r in active}),
                "mortgage_amount_wan": amount(active), "borrowers": len({r["borrower"] for r in active}),
                "target_year": year, "target_year_credit_wan": amount(in_year),
                "target_year_borrowers": len({r["borrower"] for r in in_year})}

    def _figures(self, table: pd.DataFrame) -> dict:
        s = table.sum(numeric_only=True)
        target = float(self.value("standard_transfer_target_pct"))
        contract, measured = float(s.get("contract_area_mu", 0)), float(s.get("measured_area_mu", 0))
        transferred, standard = float(s.get("transferred_area_mu", 0)), float(s.get("standard_area_mu", 0))
        n_tr, n_std = int(s.get("transfer_contracts", 0)), int(s.get("standard_contracts", 0))
        rate = round(100 * standard / transferred, 1) if transferred else None
        return {"plots": int(s.get("plots", 0)), "households": int(s.get("households", 0)),
                "contract_area_mu": _json_float(contract), "measured_area_mu": _json_float(measured),
                "measured_minus_contract_mu": _json_float(measured - contract),
                "transferred_area_mu": _json_float(transferred),
                "transferred_share_pct": round(100 * transferred / contract, 1) if contract else None,
                "transfer_contracts": n_tr, "standard_area_mu": _json_float(standard),
                "oral_area_mu": _json_float(transferred - standard),
                "standard_rate_pct": rate,
                "standard_rate_by_contracts_pct": round(100 * n_std / n_tr, 1) if n_tr else None,
                "standard_target_pct": target,
                "standard_target_met": None if rate is None else rate >= target}

    def _targets(self, m: dict) -> dict:
        credit, borrowers = float(self.value("mortgage_credit_target_wan")), int(self.value("mortgage_borrowers_target"))
        return {"mortgage_credit_target_wan": credit, "mortgage_credit_met": m["target_year_credit_wan"] >= credit,
                "borrowers_target": borrowers, "borrowers_met": m["target_year_borrowers"] >= borrowers}

    def village_summary(self, code: str, as_of: str | None) -> dict:
        if not _VILLAGE.match(code or ""):
            raise bad_parameter("code", "须为 12 位村级区划代码", "must be a 12-digit village code")
        day = parse_day(as_of, "as_of") if as_of else today()
        table = self.villages_as_of(day)
        if code not in table.index:
            raise not_found(f"村 {code}", f"village {code}")
        m = self.mortgage_figures(self.mortgage_rows(day, code), day)
        info = self.village_info(code)
        return {"village_code": code, **info, "as_of": day, **self._figures(table.loc[[code]]), **m,
                "rules_applied": self.rules_applied("standard_transfer_target_pct", "standard_transfer_measure")}

    def rollup(self, county: int | None, as_of: str | None) -> dict:
        day = parse_day(as_of, "as_of") if as_of else today()
        table = self.villages_as_of(day)
        if county is not None:
            table = table[table["county_adcode"] == county]
            if table.empty:
                raise not_found(f"县 {county} 的地块", f"plots of county {county}")
        m = self.mortgage_figures(self.mortgage_rows(day), day, county)
        by_county = []
        if county is None:
            for adcode, part in table.groupby("county_adcode"):
                f = self._figures(part)
                by_county.append({"county_adcode": int(adcode), "plots": f["plots"],
                                  "transferred_share_pct": f["transferred_share_pct"],
                                  "standard_rate_pct": f["standard_rate_pct"],
                                  "standard_target_met": f["standard_target_met"]})
        out = {"scope": "county" if county is not None else "city", "county_adcode": county, "as_of": day,
               "villages": int(len(table)), **self._figures(table), **m, **self._targets(m),
               "rules_applied": self.rules_applied("standard_transfer_target_pct", "standard_transfer_measure",
                                                   "mortgage_credit_target_wan", "mortgage_borrowers_target",
                                                   "target_year")}
        if by_county:
            out["counties"] = by_county
        return out

    def village_info(self, code: str) -> dict:
        frame = self.ctx.frame(VILLAGES)
        row = frame.loc[frame["code"] == code]
        if row.empty:
            return {"name": None, "township": None, "county": None}
        r = row.iloc[0]
        return {"name": r["name"], "township": r.get("township"), "county": r.get("county")}

    def expiring(self, year: int) -> dict:
        rows = [dict(r) for r in self.index().execute(
            "SELECT village_code, contracts, plots, first_end, last_end FROM village_expiry WHERE year = ? "
            "ORDER BY village_code", (str(year),)).fetchall()]
        frame = self.ctx.frame(VILLAGES)
        names = frame.set_index("code")[["name", "township", "county"]].to_dict("index")
        for r in rows:
            r.update(names.get(r["village_code"], {"name": None, "township": None, "county": None}))
            r["extended_first_end"] = self.extended_end(r["first_end"])
            r["extended_last_end"] = self.extended_end(r["last_end"])
        return {"year": year, "count": len(rows), "contracts": sum(r["contracts"] for r in rows), "villages": rows,
                "rules_applied": self.rules_applied("extension_years")}

    # --- edits ----------------------------------------------------------------------------------------
    def _plot_base(self, dkbm: str) -> dict:
        fid = self.fid_of(codes.validate_dkbm(dkbm))
        if fid is None:
            raise not_found(f"地块 {dkbm}", f"plot {dkbm}")
        return self._feature(fid)[0]

    def edit_plot(self, dkbm: str, changes: dict, valid_from: str | None, reason: str | None, who) -> dict:
        props = self._plot_base(dkbm)
        clean = _clean(changes, PLOT_EDITABLE, "plot")
        for field, table in (("syqxz", SYQXZ_CODES), ("dklb", DKLB_CODES), ("tdlylx", TDLYLX_CODES),
                             ("tdyt", TDYT_CODES), ("current_use", CURRENT_USE_CODES)):
            if field in clean and clean[field] not in table:
                raise bad_parameter(field, f"须为 {'、'.join(table)} 之一", f"must be one of {', '.join(table)}")
        base = {k: props.get(k) for k in PLOT_EDITABLE}
        day = parse_day(valid_from, "valid_from") if valid_from else today()
        return self.history.append("plot", props["dkbm"], props["dkbm"], props["village_code"], base, clean, day,
                                   who, reason)

    def edit_contract(self, cbhtbm: str, changes: dict, valid_from: str | None, reason: str | None, who) -> dict:
        rows = self.register.rows("SELECT * FROM contracts WHERE cbhtbm = ?", (cbhtbm,))
        if not rows:
            raise not_found(f"承包合同 {cbhtbm}", f"contract {cbhtbm}")
        clean = _clean(changes, CONTRACT_EDITABLE, "contract")
        for f in ("cbqxq", "cbqxz"):
            if f in clean:
                clean[f] = parse_day(clean[f], f)
        base = {k: rows[0][k] for k in ("cbhtbm", "fbfbm", "cbfbm", "cbfs", "cbqxq", "cbqxz", "htzmj")}
        after = {**base, **clean}
        if after["cbqxz"] < after["cbqxq"]:
            raise bad_parameter("cbqxz", "承包期止早于承包期起", "the contract ends before it starts")
        if after["cbqxz"] and self.extended_end(after["cbqxz"]) is None:
            raise bad_parameter("cbqxz", "承包期止过晚，延包后日期无法表示", "the end is too late to be extended")
        day = parse_day(valid_from, "valid_from") if valid_from else today()
        return self.history.append("contract", cbhtbm, None, cbhtbm[:12], base, clean, day, who, reason)

    def _dates(self, body: dict, what_zh: str) -> tuple[str, str, float]:
        start, end = parse_day(body["start_date"], "start_date"), parse_day(body["end_date"], "end_date")
        if end < start:
            raise bad_parameter("end_date", f"{what_zh}止期早于起期", "the end date is before the start date")
        years = round((dt.date.fromisoformat(end) - dt.date.fromisoformat(start)).days / 365.25, 1)
        return start, end, years

    def _create(self, entity: str, table: str, id_col: str, ident: str, props: dict, data: dict, who,
                reason: str | None) -> dict:
        """A record created through the API: its first version, valid from its start date."""
        key = f"{ident}|{props['dkbm']}"
        duplicate = GisError("duplicate_record", f"{ident} 已登记地块 {props['dkbm']}",
                             f"{ident} already has plot {props['dkbm']}", 409)
        if self.register.rows(f"SELECT 1 FROM {table} WHERE {id_col} = ? AND dkbm = ?", (ident, props["dkbm"])):
            raise duplicate
        return self.history.append(entity, key, props["dkbm"], props["village_code"], {}, data, data["start_date"],
                                   who, reason, if_new=duplicate)

    def _close(self, entity: str, table: str, id_col: str, ident: str, dkbm: str, date: str, status: str,
               reason: str | None, who) -> dict:
        """A transfer ended or a mortgage released on `date`: a new version with that status and end date."""
        dkbm = codes.validate_dkbm(dkbm)
        key = f"{ident}|{dkbm}"
        base = self.register.rows(f"SELECT * FROM {table} WHERE {id_col} = ? AND dkbm = ?", (ident, dkbm))
        if not base and not self.history.versions(entity, key):
            raise not_found(f"{ident} 的地块 {dkbm}", f"{ident} of plot {dkbm}")
        day = parse_day(date, "date")
        row = dict(base[0]) if base else {}
        if "standard_form" in row:
            row["standard_form"] = bool(row["standard_form"])
        return self.history.append(entity, key, dkbm, dkbm[:12], row, {"status": status, "end_date": day}, day,
                                   who, reason)

    def add_transfer(self, body: dict, who) -> dict:
        props = self._plot_base(body["dkbm"])
        if body["lzfs"] not in TRANSFER_FORMS:
            raise bad_parameter("lzfs", f"须为 {'、'.join(TRANSFER_FORMS)} 之一", f"must be one of {', '.join(TRANSFER_FORMS)}")
        start, end, years = self._dates(body, "流转")
        lzmj = float(body.get("lzmj") or props["contract_area_mu"])
        if not 0 < lzmj <= float(props["measured_area_mu"]) * 1.5:
            raise bad_parameter("lzmj", "流转面积须大于 0 且不超过地块面积", "must be above 0 and within the plot's area")
        lzhtbm = body.get("lzhtbm") or f"{props['cbhtbm'][:-1]}L{start[:4]}{start[5:7]}{start[8:]}"
        data = {"lzhtbm": lzhtbm, "cbhtbm": props["cbhtbm"], "cbfbm": props["cbfbm"], "dkbm": props["dkbm"],
                "transferee": body["transferee"], "lzfs": body["lzfs"], "lzqx_years": years,
                "start_date": start, "end_date": end, "lzmj": lzmj, "use": body.get("use") or "种植粮食作物",
                "standard_form": bool(body["standard_form"]), "village_code": props["village_code"]}
        return self._create("transfer", "transfers", "lzhtbm", lzhtbm, props, data, who, body.get("reason"))

    def end_transfer(self, lzhtbm: str, dkbm: str, end_date: str, reason: str | None, who) -> dict:
        return self._close("transfer", "transfers", "lzhtbm", lzhtbm, dkbm, end_date, "已终止", reason, who)

    def add_mortgage(self, body: dict, who) -> dict:
        props = self._plot_base(body["dkbm"])
        start, end, years = self._dates(body, "抵押")
        amount = float(body["amount_wan"])
        if not 0 < amount < 1e6:
            raise bad_parameter("amount_wan", "金额须为正数（万元）", "must be a positive amount (万元)")
        dyid = body.get("dyid") or f"DY{start[:4]}{props['dkbm'][-9:]}"
        data = {"dyid": dyid, "dkbm": props["dkbm"], "lzhtbm": body.get("lzhtbm"), "borrower": body["borrower"],
                "lender": body["lender"], "amount_wan": amount, "term_years": years, "start_date": start,
                "end_date": end, "status": "抵押中", "village_code": props["village_code"]}
        return self._create("mortgage", "mortgages", "dyid", dyid, props, data, who, body.get("reason"))

    def release_mortgage(self, dyid: str, dkbm: str, date: str, reason: str | None, who) -> dict:
        return self._close("mortgage", "mortgages", "dyid", dyid, dkbm, date, "已解除", reason, who)

    def plot_history(self, dkbm: str, who, request: str) -> dict:
        props = self._plot_base(dkbm)
        versions = self.history.for_plot(props["dkbm"]) + self.history.versions("contract", props["cbhtbm"])
        out = []
        for v in sorted(versions, key=lambda v: (v["valid_from"], v["id"])):
            data, changes = dict(v["data"]), dict(v["changes"])
            if v["entity"] in PARTY_FIELDS:
                field = PARTY_FIELDS[v["entity"]]
                data = self.party(v["entity"], data, who)
                if field in changes:
                    changes[field] = [self.person("name", x, who) for x in changes[field]]
            if v["entity"] == "plot":
                for f in PLOT_PERSONAL:
                    if f in data:
                        data[f] = self.side(data[f], who) if f != "zjrxm" else self.person("name", data[f], who)
                    if f in changes:
                        changes[f] = [self.side(x, who) if f != "zjrxm" else self.person("name", x, who)
                                      for x in changes[f]]
            out.append({"entity": v["entity"], "key": v["key"], "valid_from": v["valid_from"],
                        "valid_to": v["valid_to"], "data": data, "changes": changes, "reason": v["reason"],
                        "author_role": v["author_role"], "recorded_at": v["recorded_at"],
                        "author": v["author"] if who is not None else None})
        base = {"entity": "base", "valid_from": props.get("contract_start"),
                "valid_to": min((v["valid_from"] for v in versions), default=None),
                "source": self.register.source}
        shown = sorted({f for v in out if v["entity"] == "plot" for f in PLOT_PERSONAL
                        if v["data"].get(f) not in BOUNDARY_WORDS + (None,) or
                        any(x not in BOUNDARY_WORDS + (None,) for x in v["changes"].get(f, ()))})
        self.log_full(who, PLOTS, shown, [props["dkbm"]], request)  # names in clear: logged like the card
        return {"dkbm": props["dkbm"], "base": base, "count": len(out), "versions": out}


SYQXZ_CODES = ("30", "31", "32", "33", "34")
DKLB_CODES = ("10", "21", "22", "23", "99")
TDLYLX_CODES = ("011", "012", "013")
TDYT_CODES = ("1", "2", "3", "4", "5")
CURRENT_USE_CODES = ("耕地", "林木", "坑塘", "建筑", "其他")


def _clean(changes: dict, allowed: dict, what: str) -> dict:
    if not isinstance(changes, dict) or not changes:
        raise bad_parameter("changes", "须为非空对象", "must be a non-empty object")
    out = {}
    for k, v in changes.items():
        if k not in allowed:
            raise bad_parameter("changes", f"字段 {str(k)[:30]} 不可修改（可改：{'、'.join(allowed)}）",
                                f"field {str(k)[:30]!r} of a {what} cannot be changed (allowed: {', '.join(allowed)})")
        kind = allowed[k]
        if kind is float:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < float(v) < 1e6:
                raise bad_parameter(k, "须为正数", "must be a positive number")
            out[k] = round(float(v), 2)
        else:
            if not isinstance(v, str) or len(v) > 100:
                raise bad_parameter(k, "须为不超过 100 字的文本", "must be text of at most 100 characters")
            out[k] = v.strip()
    return out


def _polygon(geojson) -> shapely.Geometry:
    if not isinstance(geojson, dict) or geojson.get("type") not in ("Polygon", "MultiPolygon"):
        raise GisError("bad_geometry", "须为 GeoJSON Polygon 或 MultiPolygon", "must be a GeoJSON Polygon or MultiPolygon",
                       422)
    coords = geojson.get("coordinates")
    n = len(orjson.dumps(coords))
    if n > 2_000_000:
        raise GisError("bad_geometry", "多边形过大", "the polygon is too large", 422)
    try:
        geom = shapely.geometry.shape(geojson)
    except Exception as exc:  # shapely raises several kinds for malformed coordinates
        raise GisError("bad_geometry", f"GeoJSON 坐标格式错误：{str(exc)[:80]}",
                       f"malformed GeoJSON coordinates: {str(exc)[:80]}", 422) from None
    if geom.is_empty or not np.isfinite(shapely.get_coordinates(geom)).all():
        raise GisError("bad_geometry", "多边形为空或含非法数值", "the polygon is empty or has non-finite coordinates", 422)
    return geom


# Per-village figures, one implementation for the whole register and for one edited village (in memory).
PLOT_FIGURES = ("SELECT village_code, max(county_adcode) AS county_adcode, count(*) AS plots, "
                "count(DISTINCT cbfbm) AS households, sum(contract_area_mu) AS contract_area_mu, "
                "sum(measured_area_mu) AS measured_area_mu FROM {table} GROUP BY village_code")
TRANSFER_FIGURES = ("SELECT village_code, sum(lzmj) AS transferred_area_mu, "
                    "sum(CASE WHEN standard_form THEN lzmj ELSE 0 END) AS standard_area_mu, "
                    "count(DISTINCT lzhtbm) AS transfer_contracts, "
                    "count(DISTINCT CASE WHEN standard_form THEN lzhtbm END) AS standard_contracts "
                    "FROM {table} WHERE start_date <= :day AND end_date >= :day GROUP BY village_code")


def _combine(plots: pd.DataFrame, transfers: pd.DataFrame) -> pd.DataFrame:
    """Plot and transfer figures side by side, indexed by village code (villages without transfers: 0)."""
    table = plots.set_index("village_code")
    t = transfers.set_index("village_code").reindex(table.index)
    for col in ("transferred_area_mu", "standard_area_mu"):
        table[col] = t[col].fillna(0.0).astype(float)
    for col in ("transfer_contracts", "standard_contracts"):
        table[col] = t[col].fillna(0).astype(int)
    return table


def _copy_attributes(store, layer, conn: sqlite3.Connection) -> None:
    """plots_idx(fid, INDEX_COLUMNS…) in `conn` from the plots layer: for the GeoPackage store one SQL copy
    (the file attached read-only; seconds for two million rows), for any other store the generic bulk scan."""
    columns = ", ".join(f'"{c}"' for c in INDEX_COLUMNS)
    if isinstance(store, GeoPackageStore):
        conn.execute("ATTACH DATABASE ? AS src", (f"file:{layer.data_path}?mode=ro",))
        conn.execute(f'CREATE TABLE plots_idx AS SELECT fid, {columns} FROM src."{layer.id}"')
        conn.commit()
        conn.execute("DETACH DATABASE src")
        return
    conn.execute(f"CREATE TABLE plots_idx (fid, {columns})")
    marks = ", ".join("?" * (len(INDEX_COLUMNS) + 1))
    for chunk in scan_chunks(store, layer, columns=INDEX_COLUMNS, geometry=False):
        rows = zip(chunk.fids.tolist(), *(chunk.values[c] for c in INDEX_COLUMNS))
        conn.executemany(f"INSERT INTO plots_idx VALUES ({marks})", rows)


def service_for(ctx) -> LandService:
    return ctx.shared(LandService)
