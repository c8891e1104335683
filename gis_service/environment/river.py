"""A spill traced downstream along a river line, in EPSG:4548 metres.

The river line is oriented in the direction of flow (canal_channels: "线的方向即流向"). A spill at a point enters
the river at its projection on the line; after t seconds the front has travelled v·t metres along the line
(plug flow at the mean velocity: no dispersion, no dilution, no travel through lakes or gates modelled).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely.ops import substring

CAVEATS_ZH = (
    "按平均流速推流：污染团前锋沿河道中心线以给定流速前进，未考虑纵向弥散、稀释、降解与闸坝调度",
    "河道线位置不确定度1–3公里（演示河道）；到达时间随流速线性变化，请以水文实测流速更新",
    "河道数据止于廊坊市界：到达末端即视为流出本市，下游地区须通报",
)


@dataclass
class Trace:
    river: str
    entry: shapely.Point  # where the spill enters the river
    offset_m: float  # distance from the spill to the river line
    start_m: float  # chainage of the entry along the line
    end_m: float  # chainage reached
    velocity_m_s: float
    hours: float
    reach: shapely.LineString
    leaves_line: bool  # the front reaches the downstream end of the line within the time
    exit_point: shapely.Point | None

    @property
    def length_m(self) -> float:
        return self.end_m - self.start_m

    def arrival_h(self, chainage: np.ndarray) -> np.ndarray:
        """Hours until the front reaches each chainage (NaN where it does not within the time)."""
        chainage = np.asarray(chainage, dtype=float)
        t = (chainage - self.start_m) / self.velocity_m_s / 3600.0
        return np.where((chainage >= self.start_m) & (chainage <= self.end_m), t, np.nan)


def trace(line: shapely.LineString, river: str, spill: shapely.Point, velocity_m_s: float, hours: float) -> Trace:
    """The reach of `line` (oriented downstream) the front covers in `hours` at `velocity_m_s` from `spill`."""
    start = float(line.project(spill))
    end = min(float(line.length), start + velocity_m_s * hours * 3600.0)
    leaves = start + velocity_m_s * hours * 3600.0 >= line.length
    reach = substring(line, start, end)
    if reach.geom_type == "Point":  # the spill enters at the very end of the line
        reach = shapely.LineString([reach, reach])
    entry = line.interpolate(start)
    return Trace(river, entry, float(spill.distance(line)), start, end, velocity_m_s, hours, reach, leaves,
                 shapely.Point(line.coords[-1]) if leaves else None)


def river_lines(frame, name_field: str = "name") -> list[tuple[str, shapely.LineString]]:
    """One flow-oriented line per connected river part (parts of a river merged where they touch)."""
    out = []
    for name, group in frame.groupby(name_field, sort=True):
        merged = shapely.line_merge(shapely.union_all(group.geometry.values), directed=True)
        parts = list(merged.geoms) if merged.geom_type == "MultiLineString" else [merged]
        out += [(str(name), part) for part in parts if not part.is_empty]
    return out


def chains(parts: list[tuple[str, shapely.LineString]], gap_m: float) -> list[tuple[str, shapely.LineString]]:
    """For each part, the line followed downstream: the part, then the part whose start lies within gap_m of its
    end (a river leaving the city and coming back, a river flowing into another), and so on; named
    "赵王新河→大清河" where it changes river."""
    starts = np.array([p.coords[0] for _, p in parts]).reshape(-1, 2)
    nxt = []
    for i, (_, part) in enumerate(parts):
        d = np.hypot(*(starts - np.asarray(part.coords[-1])).T)
        d[i] = np.inf
        j = int(np.argmin(d)) if len(d) else -1
        nxt.append(j if j >= 0 and d[j] <= gap_m else None)
    out = []
    for i, (name, part) in enumerate(parts):
        coords, names, seen, j = list(part.coords), [name], {i}, nxt[i]
        while j is not None and j not in seen:
            seen.add(j)
            coords += list(parts[j][1].coords)
            if parts[j][0] != names[-1]:
                names.append(parts[j][0])
            j = nxt[j]
        out.append(("→".join(names), shapely.LineString(coords)))
    return out
