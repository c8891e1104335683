"""Personal data: masking for roles not entitled, and a log of every unmasked disclosure."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

from .catalog import WITHHELD, LayerDef


def mask_value(kind: str, value):
    """`value` masked as `kind` (a personal kind, or WITHHELD: no value at all, for callers without a key)."""
    if value is None or kind == WITHHELD:
        return None
    text = str(value)
    if kind == "name":
        return text[:1] + "*" * max(len(text) - 1, 1)
    if kind == "id_number":
        # Issue #9 §8: 1310**********1234 — province and city kept, birth date and sequence hidden.
        return text[:4] + "*" * (len(text) - 8) + text[-4:] if len(text) > 10 else "*" * len(text)
    if kind == "phone":
        return text[:3] + "****" + text[-4:] if len(text) >= 7 else "*" * len(text)
    raise ValueError(f"unknown personal data kind {kind!r}")


_STARS = "'" + "*" * 32 + "'"


def mask_sql(kind: str, column: str, dialect: str = "sqlite") -> str:
    """The same masking as mask_value, as an SQL expression (SQLite, or PostgreSQL with dialect="postgres"):
    unentitled queries never read clear values."""
    c = column
    if kind == WITHHELD:
        return "CAST(NULL AS text)"
    pg = dialect == "postgres"
    greatest = "greatest" if pg else "max"

    def last4(col: str) -> str:
        return f"right({col}, 4)" if pg else f"substr({col}, -4)"

    if kind == "name":
        return (f"CASE WHEN {c} IS NULL THEN NULL ELSE substr({c}, 1, 1) || "
                f"substr({_STARS}, 1, {greatest}(length({c}) - 1, 1)) END")
    if kind == "id_number":
        return (f"CASE WHEN {c} IS NULL THEN NULL WHEN length({c}) > 10 THEN substr({c}, 1, 4) || "
                f"substr({_STARS}, 1, length({c}) - 8) || {last4(c)} ELSE substr({_STARS}, 1, length({c})) END")
    if kind == "phone":
        return (f"CASE WHEN {c} IS NULL THEN NULL WHEN length({c}) >= 7 THEN substr({c}, 1, 3) || '****' || "
                f"{last4(c)} ELSE substr({_STARS}, 1, length({c})) END")
    raise ValueError(f"unknown personal data kind {kind!r}")


def mask_properties(layer: LayerDef, rows: list[dict]) -> list[dict]:
    """Mask, in place, the personal fields present in the rows."""
    if not rows:
        return rows
    for f in layer.personal_fields:
        if f.name in rows[0]:
            kind, name = f.personal, f.name
            for row in rows:
                row[name] = mask_value(kind, row[name])
    return rows


class AccessLog:
    """Append-only JSON-lines log of personal data served unmasked (who, what, when, how many)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def record(self, who: str, role: str, collection: str, fields: list[str], count: int, request: str,
               subjects: list[str] | None = None) -> None:
        """Append one disclosure; `collection` names where the values come from: a layer id, or a record-store
        table (e.g. flood_reports); `subjects` which records (plot or household codes), when the caller knows."""
        entry = dict(time=dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"), who=who, role=role,
                     collection=collection, fields=fields, count=count, request=request)
        if subjects is not None:
            entry["subjects"] = list(subjects)
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line)

    def disclose(self, who, layer: LayerDef, fields: list[str], count: int, request: str) -> None:
        """Log that `who` (a Principal or None) received `count` features with these fields, if any of them
        is personal and shown unmasked (roles not entitled only ever see masked values: nothing to log)."""
        shown = [f.name for f in layer.personal_fields if f.name in fields]
        if shown and count and who is not None and layer.sees_personal(who.role):
            self.record(who.name, who.role, layer.id, shown, count, request)

    def entries(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line]
