"""Incident records (issue #7 item 5): every assessment is saved with its inputs, results, time and user; an
update (new wind, new counts) makes a new version, and no version is ever overwritten.

Two RecordStore tables: ``environment_incidents`` (one row per incident in its current state; its ``id`` is the
incident id) and ``environment_incident_versions`` (append-only: every version's inputs and results). The
assessment is computed completely before the transaction opens, and both rows are written in one
transaction: a bad input (422) or a failure saves nothing. A client may send ``client_ref`` (unique): a retry
with the same reference and the same inputs answers the stored incident (200, ``duplicate: true``); other
inputs under it are a 409.

Who: the roles environment and admin post and update; every signed-in caller may read (the risk layers are
internal). The name of the staff member who saved a version is shown to environment and admin only, and each
answer showing it in clear is logged in the personal-data access log (gis_service/privacy.py).
"""

from __future__ import annotations

import datetime as dt

import shapely

from ..auth import Principal
from ..errors import GisError, not_found
from ..store import Column, Table

WRITERS = ("environment", "admin")
SEES_AUTHOR = ("environment", "admin")

INCIDENTS = Table("environment_incidents", (
    Column("client_ref", "text"),
    Column("version", "integer", required=True),
    Column("kind", "text", required=True),
    Column("grade", "text", required=True),
    Column("level", "text", required=True),
    Column("location", "geometry", required=True),  # EPSG:4490
    Column("created_by", "text", required=True),
    Column("created_at", "text", required=True),
    Column("updated_at", "text", required=True),
), unique=(("client_ref",),))
VERSIONS = Table("environment_incident_versions", (
    Column("incident_id", "integer", required=True),
    Column("version", "integer", required=True),
    Column("inputs", "json", required=True),
    Column("result", "json", required=True),
    Column("saved_by", "text", required=True),
    Column("saved_role", "text", required=True),
    Column("saved_at", "text", required=True),
), unique=(("incident_id", "version"),))


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class IncidentStore:
    def __init__(self, records, access_log=None):
        self.records = records
        self.access_log = access_log
        records.ensure(INCIDENTS)
        records.ensure(VERSIONS)

    def create(self, who: Principal, inputs: dict, result: dict, lonlat) -> tuple[dict, bool]:
        ref = inputs.get("client_ref")
        with self.records.transaction() as tx:
            if ref is not None:
                found = tx.find(INCIDENTS, {"client_ref": ref}, limit=1)
                if found:
                    current = tx.find(VERSIONS, {"incident_id": found[0]["id"], "version": 1}, limit=1)[0]
                    if current["inputs"] != inputs:
                        raise GisError("client_ref_conflict", f"编号 {ref} 已用于另一事件", f"client_ref {ref!r} is used by another incident", 409)
                    return self._view(tx, found[0]["id"], who), True
            stamp = now()
            incident_id = tx.insert(INCIDENTS, {
                "client_ref": ref, "version": 1, "kind": inputs["kind"], "grade": result["grading"]["grade"],
                "level": result["grading"]["level"], "location": shapely.Point(*lonlat), "created_by": who.name,
                "created_at": stamp, "updated_at": stamp})
            tx.insert(VERSIONS, {"incident_id": incident_id, "version": 1, "inputs": inputs, "result": result,
                                 "saved_by": who.name, "saved_role": who.role, "saved_at": stamp})
            return self._view(tx, incident_id, who), False

    def previous_inputs(self, incident_id: int) -> dict:
        with self.records.reading() as tx:
            current = tx.get(INCIDENTS, incident_id)
            if current is None:
                raise not_found(f"事件 {incident_id}", f"incident {incident_id}")
            return tx.find(VERSIONS, {"incident_id": incident_id, "version": current["version"]}, limit=1)[0]["inputs"]

    def update(self, who: Principal, incident_id: int, base_version: int, inputs: dict, result: dict, lonlat) -> dict:
        with self.records.transaction() as tx:
            current = tx.get(INCIDENTS, incident_id)
            if current is None:
                raise not_found(f"事件 {incident_id}", f"incident {incident_id}")
            if current["version"] != base_version:  # someone saved in between: do not overwrite their version
                raise GisError("version_conflict", f"事件已被他人更新为第 {current['version']} 版，请刷新后重试",
                               f"the incident is now at version {current['version']}: reload and retry", 409)
            version, stamp = current["version"] + 1, now()
            tx.update(INCIDENTS, incident_id, {"version": version, "kind": inputs["kind"],
                                               "grade": result["grading"]["grade"], "level": result["grading"]["level"],
                                               "location": shapely.Point(*lonlat), "updated_at": stamp})
            tx.insert(VERSIONS, {"incident_id": incident_id, "version": version, "inputs": inputs, "result": result,
                                 "saved_by": who.name, "saved_role": who.role, "saved_at": stamp})
            return self._view(tx, incident_id, who)

    def get(self, incident_id: int, who: Principal) -> dict:
        with self.records.reading() as tx:
            if tx.get(INCIDENTS, incident_id) is None:
                raise not_found(f"事件 {incident_id}", f"incident {incident_id}")
            return self._view(tx, incident_id, who)

    def history(self, incident_id: int, who: Principal) -> dict:
        with self.records.reading() as tx:
            if tx.get(INCIDENTS, incident_id) is None:
                raise not_found(f"事件 {incident_id}", f"incident {incident_id}")
            versions = tx.find(VERSIONS, {"incident_id": incident_id}, order_by=(("version", True),))
        return {"id": incident_id, "versions": [{
            "version": v["version"], "saved_at": v["saved_at"], "saved_by": _author(v, who), "inputs": v["inputs"],
            "grade": v["result"]["grading"]["grade"], "level": v["result"]["grading"]["level"],
            "population_total": v["result"].get("population_total"),
            "cross_boundary": v["result"]["admin"]["cross_boundary"]} for v in versions]}

    def list(self, who: Principal, limit: int = 100) -> list[dict]:
        with self.records.reading() as tx:
            rows = tx.find(INCIDENTS, order_by=(("id", False),), limit=limit)
        return [{"id": r["id"], "version": r["version"], "kind": r["kind"], "grade": r["grade"], "level": r["level"],
                 "lon": r["location"].x, "lat": r["location"].y, "created_at": r["created_at"],
                 "updated_at": r["updated_at"]} for r in rows]

    def _view(self, tx, incident_id: int, who: Principal) -> dict:
        current = tx.get(INCIDENTS, incident_id)
        v = tx.find(VERSIONS, {"incident_id": incident_id, "version": current["version"]}, limit=1)[0]
        return {"id": incident_id, "version": current["version"], "client_ref": current["client_ref"],
                "created_at": current["created_at"], "updated_at": current["updated_at"],
                "saved_by": _author(v, who), "lon": current["location"].x, "lat": current["location"].y,
                "inputs": v["inputs"], **v["result"]}


    def log_authors(self, who: Principal, incident_id: int, names: list, request: str) -> None:
        """Log, in the personal-data access log, that `who` was shown the saver names of an incident in clear."""
        count = sum(1 for name in names if name)
        if count and self.access_log is not None and who.role in SEES_AUTHOR:
            self.access_log.record(who.name, who.role, VERSIONS.name, ["saved_by"], count, request,
                                   subjects=[str(incident_id)])


def _author(version: dict, who: Principal) -> str | None:
    return version["saved_by"] if who.role in SEES_AUTHOR else None
