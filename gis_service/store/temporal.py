"""Dates and instants as the store keeps them, and how a query value is turned into stored text.

Storage convention (every layer, every store):

- a ``date`` field holds ``'YYYY-MM-DD'``; a date means the instant 00:00:00 UTC of that day (as CQL2 says
  when a DATE is compared with a TIMESTAMP);
- a ``datetime`` field holds ``'YYYY-MM-DDTHH:MM:SS'`` in UTC, without a zone designator.

Query values (CQL2 ``DATE``/``TIMESTAMP`` literals, the OGC ``datetime`` parameter) are converted to UTC
(``+08:00`` is subtracted, never dropped; a value without an offset is read as UTC) and then written in
the stored form of the field they are compared with, so that comparing texts is comparing instants:

- on a ``datetime`` field a date becomes ``'YYYY-MM-DDT00:00:00'`` and an instant its UTC text (with the
  microseconds if it has any: ``'…T12:00:00.5'`` sorts after ``'…T12:00:00'`` and before ``'…T12:00:01'``);
- on a ``date`` field an instant at 00:00:00 UTC becomes its date; any other instant keeps its full UTC
  text ``'YYYY-MM-DDTHH:MM:SS'``, which sorts after that day's date and before the next day's, and equals
  no date — exactly how the instant compares with the days' 00:00:00 UTC.
"""

from __future__ import annotations

import datetime as dt
import re

from ..errors import bad_parameter

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
UTC = dt.timezone.utc


def parse_date(text: str) -> dt.date:
    """'YYYY-MM-DD' (a real calendar day). ValueError otherwise."""
    if not isinstance(text, str) or not _DATE.fullmatch(text):
        raise ValueError(f"not a date: {text!r}")
    return dt.date.fromisoformat(text)


def parse_instant(text: str) -> dt.datetime:
    """An ISO 8601 date-time as an aware UTC datetime; no offset means UTC. ValueError otherwise."""
    if not isinstance(text, str) or not _DATE.match(text):
        raise ValueError(f"not a date-time: {text!r}")
    try:
        parsed = dt.datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except OverflowError:  # an offset pushing year 1 or 9999 out of range
        raise ValueError(f"out of range: {text!r}") from None


def parse_value(text: str) -> dt.date | dt.datetime:
    """A date ('YYYY-MM-DD') or an instant (anything longer), as the text says."""
    return parse_date(text) if isinstance(text, str) and len(text) == 10 else parse_instant(text)


def stored_text(value: dt.date | dt.datetime, field_type: str) -> str:
    """The text to compare with a field of ``field_type`` ('date' or 'datetime'); see the module docstring."""
    if isinstance(value, dt.datetime):
        utc = value.astimezone(UTC).replace(tzinfo=None)
        text = utc.isoformat(timespec="microseconds" if utc.microsecond else "seconds")
        if field_type == "date" and utc.time() == dt.time(0):
            return utc.date().isoformat()
        return text
    return value.isoformat() if field_type == "date" else f"{value.isoformat()}T00:00:00"


def parse_datetime_interval(value: str, field_type: str) -> tuple[str | None, str | None]:
    """OGC ``datetime``: an instant or an interval 'a/b' with '..' (or nothing) for an open end, as stored
    texts for a field of ``field_type`` (the store compares ``=`` for an instant, ``>=``/``<=`` for bounds)."""

    def norm(part: str) -> str | None:
        if part in ("..", ""):
            return None
        try:
            return stored_text(parse_value(part), field_type)
        except ValueError:
            raise bad_parameter("datetime", f"无法解析时间 {part!r}", f"cannot parse time {part!r}") from None

    if "/" in value:
        start, end = value.split("/", 1)
        return norm(start), norm(end)
    instant = norm(value)
    if instant is None:
        raise bad_parameter("datetime", "须为时间点或区间", "must be an instant or an interval")
    return instant, instant


def interval_clauses(column: str, interval: tuple[str | None, str | None], placeholder: str) -> tuple[list[str], list]:
    """SQL conditions (and their parameters) for a field's stored text within a parsed ``datetime`` interval:
    ``=`` for an instant, ``>=``/``<=`` for the ends given (the same in every store; placeholder per dialect)."""
    start, end = interval
    if start is not None and start == end:
        return [f'"{column}" = {placeholder}'], [start]
    clauses, params = [], []
    if start is not None:
        clauses.append(f'"{column}" >= {placeholder}')
        params.append(start)
    if end is not None:
        clauses.append(f'"{column}" <= {placeholder}')
        params.append(end)
    return clauses, params
