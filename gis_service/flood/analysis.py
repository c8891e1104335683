"""Pure functions of the flood domain: a point's status from its depth readings (the 30 cm closure rule with
hysteresis), snapping a reported location to a monitored point, the nearest pumping station. No HTTP, no I/O;
every threshold comes in as an argument (read from gis_service/rules/flood.toml by the caller).

Status of a point, reading by reading in observed_at order (``classify``):
- ``closed`` when the depth is *more than* the closure depth (“超过30厘米”, L4283: 30.0 stays open, 30.1 closes);
- once closed it stays closed until the depth is at or below ``reopen_cm`` (closure depth − hysteresis, e.g.
  25 cm): a ruler read at 29 cm, then 31, then 29 does not open and close the road three times;
- otherwise ``watch`` from ``watch_cm`` on (included), else ``normal``.
A point with no reading is ``unknown``. ``since`` is when the current status began: the observed_at of the
first reading of the current run of the same status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import geopandas as gpd
import numpy as np
import shapely

from .. import crs

STATUSES = ("normal", "watch", "closed", "unknown")
STATUS_ZH = {"normal": "正常", "watch": "关注", "closed": "禁止通行（已断交）", "unknown": "无读数"}


@dataclass(frozen=True)
class Thresholds:
    """One point's thresholds in cm: closed above closure_cm; reopens at or below reopen_cm; watch from watch_cm."""

    closure_cm: float
    reopen_cm: float
    watch_cm: float

    def __post_init__(self):
        if not self.watch_cm <= self.closure_cm or not self.reopen_cm <= self.closure_cm:
            raise ValueError(f"inconsistent thresholds {self}: need watch ≤ closure and reopen ≤ closure")


@dataclass(frozen=True)
class Step:
    """The status after one reading, and when that status began."""

    status: str
    since: str


def next_status(previous: str | None, depth_cm: float, t: Thresholds) -> str:
    """The status after a reading of depth_cm, given the status before it (None or 'unknown': no reading yet)."""
    if depth_cm > t.closure_cm:
        return "closed"
    if previous == "closed" and depth_cm > t.reopen_cm:
        return "closed"  # the hysteresis band: closed until the water falls to reopen_cm
    return "watch" if depth_cm >= t.watch_cm else "normal"


def classify(readings: Iterable[tuple[str, float]], t: Thresholds) -> list[Step]:
    """Status after each reading; readings are (observed_at, depth_cm) already in observed_at order."""
    steps: list[Step] = []
    previous, since = None, None
    for observed_at, depth in readings:
        status = next_status(previous, depth, t)
        if status != previous:
            since = observed_at
        steps.append(Step(status, since))
        previous = status
    return steps


@dataclass(frozen=True)
class Snap:
    index: int  # row of the monitored points frame, or -1 when nothing lies within the radius
    distance_m: float  # to the nearest point (also when it is beyond the radius)


def snap(location: shapely.Point, points: gpd.GeoDataFrame, radius_m: float) -> Snap:
    """The nearest monitored point to location within radius_m (both in EPSG:4548, metres).

    Ties (an underpass and the waterlogging point at the same place) go to the first row: callers order the
    frame underpasses first, so a report at an underpass lands on the underpass."""
    crs.require_metric(points=points)
    if points.empty:
        return Snap(-1, float("inf"))
    distances = shapely.distance(points.geometry.values, location)
    index = int(np.argmin(distances))  # the first of equal minima
    distance = float(distances[index])
    return Snap(index if distance <= radius_m else -1, distance)


@dataclass(frozen=True)
class Nearest:
    index: int
    distance_m: float


def nearest_each(points: gpd.GeoDataFrame, targets: gpd.GeoDataFrame) -> list[Nearest | None]:
    """For every point, the nearest target row and its distance (EPSG:4548); None when there is no target."""
    crs.require_metric(points=points, targets=targets)
    if targets.empty or points.empty:
        return [None] * len(points)
    (src, dst), dist = targets.sindex.nearest(points.geometry.values, return_all=False, return_distance=True)
    out: list[Nearest | None] = [None] * len(points)
    for s, d, m in zip(src, dst, dist):
        out[int(s)] = Nearest(int(d), float(m))
    return out


def latest(steps: Sequence[Step]) -> Step | None:
    return steps[-1] if steps else None


# --- responsibilities (L4233–L4267) ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Duty:
    """Who answers for one channel, gate or pumping station under the plan, and why."""

    kind: str  # channel | gate | pumping_station
    name: str
    channel: str | None
    district: str | None
    unit: str  # who operates or maintains it
    supervisor: str | None
    rule_ids: tuple[str, ...]
    caveat: str | None = None


def _district_at(geoms, districts: gpd.GeoDataFrame) -> list[tuple[str | None, str | None]]:
    """The district containing each geometry, or the nearest one with a caveat when it lies outside them all."""
    if districts.empty:
        return [(None, "无城区分区图层")] * len(geoms)
    (_, idx), dist = districts.sindex.nearest(np.asarray(geoms), return_all=False, return_distance=True)
    names = districts["name"].values[idx]
    return [(str(n), None if d == 0 else f"位于城区各区范围之外（距{n} {d:,.0f} 米），按最近的区")
            for n, d in zip(names, dist)]


def responsibilities(channels: gpd.GeoDataFrame, gates: gpd.GeoDataFrame, stations: gpd.GeoDataFrame,
                     districts: gpd.GeoDataFrame, *, channel_units: dict[str, str], district_gate_channels: list[str],
                     gate_supervisor: str, city_owner: str, governments: dict[str, str]) -> list[Duty]:
    """Channels, gates and pumping stations with their responsible units (all frames in EPSG:4548).

    - a channel of the ring-city system (channel_units, L4235) and its gates: that unit (市住建局);
    - a gate on a main drainage channel (district_gate_channels, L4267): the district where the gate lies,
      supervised by gate_supervisor (市水利局);
    - a pumping station whose owner is city_owner (市住建局, L4233): city_owner; any other (L4251): the
      district where it lies (its government, from governments)."""
    crs.require_metric(channels=channels, gates=gates, stations=stations, districts=districts)
    out: list[Duty] = []
    for row in channels.itertuples():
        if row.name in channel_units:
            out.append(Duty("channel", row.name, row.name, None, channel_units[row.name], None, ("channel_units",)))
        elif row.name in district_gate_channels:
            out.append(Duty("channel", row.name, row.name, None, "沿线各区（闸坝启闭）", gate_supervisor,
                            ("district_gate_channels", "gate_supervisor")))
    for row, (district, outside) in zip(gates.itertuples(), _district_at(gates.geometry.values, districts)):
        if row.channel in channel_units:
            out.append(Duty("gate", row.name, row.channel, district, channel_units[row.channel], None, ("channel_units",)))
        elif row.channel in district_gate_channels:
            unit = governments.get(district)
            caveat = "；".join(c for c in (outside, None if unit else f"{district} 不在方案点名的区之列，暂按所在区处理") if c) or None
            out.append(Duty("gate", row.name, row.channel, district, unit or district, gate_supervisor,
                            ("district_gate_channels", "gate_supervisor", "district_governments"), caveat))
    for row, (district, outside) in zip(stations.itertuples(), _district_at(stations.geometry.values, districts)):
        owner = str(row.owner or "")
        if owner.startswith(city_owner):
            out.append(Duty("pumping_station", row.name, None, district, city_owner, None, ("pumping_station_owner_city",)))
        else:
            unit = governments.get(district, district)
            out.append(Duty("pumping_station", row.name, None, district, unit, None,
                            ("pumping_station_owner_other", "district_governments"),
                            "；".join(c for c in (f"产权单位（图层）：{owner}" if owner else None, outside) if c) or None))
    return out
