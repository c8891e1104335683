"""Versioned changes to the land register (§9): every edit of a plot, contract, transfer or mortgage is a new
version with valid_from / valid_to, kept in the record store (var/records.sqlite), never in the layers files.

The base version of a record is what the plots layer and the register file hold; it is valid from its own
start date (plot and contract: the contract start; transfer and mortgage: their start date) until the
first edit's valid_from. Each edit stores the whole record as it is from its valid_from on, and closes the
version before it (valid_to = the new valid_from; a second edit on the same day leaves the first an empty
interval). Reading "as of" a date picks the version whose interval holds it; an edit may not be dated before
the latest version's valid_from (history is appended, never rewritten: ids only grow, which caches rely on).
"""

from __future__ import annotations

import datetime as dt

from ..errors import GisError
from ..store import Column, Table

ENTITIES = ("plot", "contract", "transfer", "mortgage")

VERSIONS = Table("land_versions", (
    Column("entity", "text", required=True),  # one of ENTITIES
    Column("key", "text", required=True),  # dkbm, cbhtbm, lzhtbm|dkbm, dyid|dkbm
    Column("dkbm", "text"),  # the plot the record belongs to (contracts: none)
    Column("village_code", "text", required=True),
    Column("valid_from", "text", required=True),  # YYYY-MM-DD
    Column("valid_to", "text"),  # YYYY-MM-DD, exclusive; NULL = current
    Column("data", "json", required=True),  # the whole record from valid_from on
    Column("changes", "json", required=True),  # what this version changed ({field: [old, new]})
    Column("reason", "text"),
    Column("author", "text", required=True),
    Column("author_role", "text", required=True),
    Column("recorded_at", "text", required=True),
), indexes=(("entity", "key"), ("dkbm",), ("village_code",)))


def today() -> str:
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


def parse_day(value, name: str) -> str:
    try:
        return dt.date.fromisoformat(str(value)).isoformat() if len(str(value)) == 10 else _fail(name, value)
    except ValueError:
        return _fail(name, value)


def _fail(name, value):
    raise GisError("bad_parameter", f"参数 {name} 须为日期 YYYY-MM-DD：{str(value)[:20]!r}",
                   f"parameter '{name}' must be a date YYYY-MM-DD: {str(value)[:20]!r}", 400)


class History:
    """The version table: append a version, read a record as of a date, list a record's versions."""

    def __init__(self, records):
        self.records = records
        records.ensure(VERSIONS)

    def versions(self, entity: str, key: str) -> list[dict]:
        with self.records.reading() as tx:
            return tx.find(VERSIONS, {"entity": entity, "key": key}, order_by=(("valid_from", True), ("id", True)))

    def for_plot(self, dkbm: str) -> list[dict]:
        with self.records.reading() as tx:
            return tx.find(VERSIONS, {"dkbm": dkbm}, order_by=(("valid_from", True), ("id", True)))

    def for_village(self, village_code: str) -> list[dict]:
        with self.records.reading() as tx:
            return tx.find(VERSIONS, {"village_code": village_code}, order_by=(("valid_from", True), ("id", True)))

    def latest_id(self) -> int:
        with self.records.reading() as tx:
            rows = tx.find(VERSIONS, order_by=(("id", False),), limit=1)
        return rows[0]["id"] if rows else 0

    def edited_villages(self) -> set[str]:
        with self.records.reading() as tx:
            return {r["village_code"] for r in tx.find(VERSIONS)}

    @staticmethod
    def as_of(versions: list[dict], day: str) -> dict | None:
        """The version valid on `day` (None: the base version, or nothing, holds then)."""
        found = None
        for v in versions:
            if v["valid_from"] <= day and (v["valid_to"] is None or day < v["valid_to"]):
                found = v
        return found

    @staticmethod
    def first_from(versions: list[dict]) -> str | None:
        return versions[0]["valid_from"] if versions else None

    def append(self, entity: str, key: str, dkbm: str | None, village_code: str, base: dict | None, changes: dict,
               valid_from: str, who, reason: str | None, if_new: GisError | None = None) -> dict:
        """A new version of the record: base (the record as it is now) with `changes`, valid from valid_from.
        if_new: the record is being created, and this error is raised if it has a version already (checked in
        the write transaction: two instances creating the same record at once make one, the other gets it)."""
        with self.records.transaction() as tx:
            prior = tx.find(VERSIONS, {"entity": entity, "key": key}, order_by=(("valid_from", True), ("id", True)))
            if prior and if_new is not None:
                raise if_new
            current = prior[-1] if prior else None
            if current is not None and valid_from < current["valid_from"]:
                raise GisError("history_conflict", f"生效日期 {valid_from} 早于该记录最新版本的生效日期 {current['valid_from']}",
                               f"valid_from {valid_from} is before the latest version's ({current['valid_from']})", 409)
            before = dict(current["data"]) if current is not None else dict(base or {})
            after = {**before, **changes}
            diff = {k: [before.get(k), v] for k, v in changes.items() if before.get(k) != v}
            if current is not None:
                # A second edit on the same day supersedes the first: that version keeps its row with
                # valid_to = valid_from (an empty interval no date falls in), so the record of it stays.
                tx.update(VERSIONS, current["id"], {"valid_to": valid_from})
            row_id = tx.insert(VERSIONS, dict(
                entity=entity, key=key, dkbm=dkbm, village_code=village_code, valid_from=valid_from,
                valid_to=None, data=after, changes=diff, reason=reason, author=who.name, author_role=who.role,
                recorded_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")))
            return tx.get(VERSIONS, row_id)

