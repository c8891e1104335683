"""Rainfall scenarios on the DEM: predicted ponding depth at every underpass and waterlogging point.

Model (returned with every scenario as ``method`` and ``assumptions``):

1. **Depressions.** The DEM is filled by morphological reconstruction by erosion (scikit-image; seeds are the
   DEM's edge and nodata cells, 8-connectivity) — the lowest surface without pits from which every cell can
   drain off the DEM. Fill depth = filled − DEM; a depression is an 8-connected set of cells with fill depth
   > 0. All its cells share one filled level, the **spill level**. Nested sub-pits of one depression are not
   separated: the water in a depression stands at one level.
2. **Catchments.** D8 flow directions on the filled DEM (steepest strictly-downhill neighbour, distance-
   weighted); a depression's cells are terminals, as are the DEM's edge and nodata cells (water there leaves
   the DEM). A cell with no strictly lower neighbour drains into an adjacent depression at its own level if
   there is one; otherwise (a flat on the original DEM) it is *unresolved* and its rain is counted as lost
   (their number is reported). Each cell's terminal is found by pointer doubling over the receiver array.
3. **Storage curve.** The volume a depression holds below level h is cell_area × Σ max(0, h − z) over its
   cells, a piecewise-linear function computed once from the cells' sorted elevations.
4. **Overflow routing.** A depression spills at the lowest cell on its rim that does not drain back into it;
   the water follows the D8 path from that cell to the depression (or the DEM edge) it drains to, whose spill
   level is never higher. At equal levels an outlet into a neighbouring depression is preferred over one
   off the DEM (the water stands at that level there too). Depressions at one level whose outlets lead into
   each other form a cycle; it is broken deterministically (the lowest id takes its next outlet out of the
   cycle). Depressions are processed in topological order of this spill graph: each before the one it
   spills into, so no overflow arrives after its destination was processed.
5. **Rain.** Rain excess depth = max(0, rain − drainage capacity × duration) × runoff coefficient, the same
   on every cell; a depression receives excess × its catchment area plus what spills into it, keeps up to its
   capacity at the spill level (the water level then follows from the storage curve) and passes the rest on.
   Water that reaches the DEM's edge is lost. Ponding depth = max(0, level − DEM) in each depression.

Steps 1–3 do not depend on the rain and are computed once per DEM file (cached while the file is unchanged);
a scenario is then step 4–5 plus writing the rasters. On the 2-core development machine the first scenario over
the whole demo DEM (3984 × 4139 = 16.5 M cells) takes about 23 s (the reconstruction's sorts are most of it),
later ones about 1 s (scripts/bench_flood.py, scenario section).

Calibration on the demo DEM (defaults flood.scenario_runoff_coefficient = 0.7, flood.scenario_drainage_capacity_
mm_per_h = 10): the 2018 安比 preset (147.9 mm over 12 h: 19.5 mm excess) closes 13 of the 18 underpasses, the
2021 cloudburst (63.3 mm in 1 h: 37.3 mm excess) 16 of 18. The record of 2018 — only the 解放道 underpass closed
— cannot be reproduced with one rain excess on this DEM: the sags that close first are those with the largest
catchments (光明道, 爱民道, 建设路 under the high-speed line, 0.5–7.6 km²), 解放道's high-speed-line sag closes
from 3 mm of excess, 解放道's conventional-line sag (catchment 0.06 km²) only from about 53 mm. The demo DEM has
no lows at the waterlogging points (demo.py burns sags at underpasses only, and no waterlogging point lies on an
underpass), so they are predicted dry in every scenario. (Figures unchanged by the topological routing order.)
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
from pydantic import BaseModel, Field

from ..errors import GisError, not_found

METHOD = ("fill-and-spill on the DEM: depressions by morphological reconstruction (filled DEM − DEM), "
          "D8 catchments on the filled DEM, storage–level curves per depression, uniform rain excess "
          "max(0, rain − drainage capacity × duration) × runoff coefficient, overflow routed from each "
          "depression's spill point to the depression it drains to, water reaching the DEM edge lost")
ASSUMPTIONS = [
    "雨量在整个 DEM 上均匀分布，持续时间内排水能力恒定 Rain is uniform over the DEM; the drainage network removes "
    "a constant depth per hour for the whole duration (no pipe network, no pumping schedule)",
    "径流系数对所有地表相同 One runoff coefficient for every surface (roofs, roads and green alike)",
    "积水为静止水面：每个洼地内水位相同，洼地内的子洼地不单独计算 Ponded water is at rest: one level per "
    "depression; nested sub-pits of a depression are not filled separately",
    "汇水区按填洼后 DEM 的 D8 流向划分；无严格下坡方向的平地（非洼地）上的雨水按流失计 Catchments from D8 flow "
    "directions on the filled DEM; rain on flats outside depressions that have no downhill neighbour is counted as lost",
    "满溢的水从洼地最低出口沿 D8 路径流向下游洼地；流出 DEM 边界的水不再计入 Overflow leaves a depression at its "
    "lowest outlet and follows the D8 path to the next depression; water leaving the DEM is lost",
    "不计蒸发、下渗随时间变化、流动时间 No evaporation, time-varying infiltration or travel time: the result is "
    "the ponding at the end of the event, as if all excess had arrived",
    "DEM 为演示数据（gis_service/demo.py 生成，下穿立交处烧录下凹），预测结果只说明方法 The DEM is demo data "
    "(generated, sags burned in at the underpasses): predictions illustrate the method, not the city",
]

STALE_TMP_S = 300  # a .tmp file this old belongs to a write that died
SCENARIO_ROLES = ("flood", "admin")  # who may run scenarios and download their rasters

_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


# --- analysis (pure, numpy) -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Depressions:
    """The rain-independent hydrology of one DEM (steps 1–3 of the module docstring)."""

    dem: np.ndarray  # float64 (rows, cols); nodata cells hold NaN
    cell_area: float  # m²
    labels: np.ndarray  # int32: 0 = not in a depression, k = depression k (1..n)
    spill_level: np.ndarray  # (n + 1,) m; [0] unused
    dest: np.ndarray  # (n + 1,) int: depression receiving the overflow; 0 = leaves the DEM
    catchment_cells: np.ndarray  # (n + 1,) cells draining to each depression ([0]: to the edge)
    unresolved_cells: int  # flats outside depressions with no downhill neighbour (rain counted as lost)
    starts: np.ndarray  # (n + 2,) offsets of each depression's cells in sorted_z
    sorted_z: np.ndarray  # depression cells' elevations, by depression then elevation
    prefix: np.ndarray  # Σ of the lower elevations in the same depression, before each sorted cell
    volume_at: np.ndarray  # volume held when the level reaches each sorted cell's elevation (m³)
    capacity: np.ndarray  # (n + 1,) volume at the spill level (m³)

    @property
    def count(self) -> int:
        return len(self.spill_level) - 1

    def level_for(self, d: int, volume: float) -> float:
        """Water level in depression d holding `volume` m³ (≤ its capacity), from its storage curve."""
        a, b = self.starts[d], self.starts[d + 1]
        if volume <= 0:
            return -math.inf
        if volume >= self.capacity[d]:
            return float(self.spill_level[d])
        k = int(np.searchsorted(self.volume_at[a:b], volume, side="right"))  # cells under water: k ≥ 1
        return float((volume / self.cell_area + self.prefix[a + k - 1] + self.sorted_z[a + k - 1]) / k)

    def volume_below(self, d: int, level: float) -> float:
        """Storage curve: the volume depression d holds below `level` (m³)."""
        z = self.sorted_z[self.starts[d]:self.starts[d + 1]]
        return float(self.cell_area * np.clip(level - z, 0, None).sum())


def _steepest(surface: np.ndarray) -> np.ndarray:
    """D8: index into _NEIGHBOURS of each cell's steepest strictly-downhill neighbour, -1 where there is none."""
    rows, cols = surface.shape
    padded = np.pad(surface, 1, constant_values=np.inf)
    best = np.zeros(surface.shape)
    direction = np.full(surface.shape, -1, dtype=np.int8)
    for k, (dr, dc) in enumerate(_NEIGHBOURS):
        drop = (surface - padded[1 + dr:1 + dr + rows, 1 + dc:1 + dc + cols]) / math.hypot(dr, dc)
        better = drop > best
        best[better] = drop[better]
        direction[better] = k
    return direction


def _terminals(direction: np.ndarray) -> np.ndarray:
    """For every cell (flat index) the cell its D8 path ends at (a cell with direction −1), by pointer doubling:
    log2(longest path) rounds over the cells still moving."""
    rows, cols = direction.shape
    offsets = np.array([dr * cols + dc for dr, dc in _NEIGHBOURS] + [0], dtype=np.int64)
    receiver = np.arange(rows * cols, dtype=np.int64) + offsets[direction.ravel()]  # -1 → offsets[-1] = 0
    moving = np.flatnonzero(direction.ravel() >= 0)
    while moving.size:
        receiver[moving] = receiver[receiver[moving]]
        moving = moving[receiver[moving] != receiver[receiver[moving]]]
    return receiver


def fill_depressions(dem: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The filled DEM: morphological reconstruction by erosion from the edge and nodata cells (8-connected).

    Nodata cells are outlets (set 1 m below the lowest valid cell). The cost is skimage's two sorts of all the
    cells; restricting it to windows around the cells whose descent ends in a pit was tried and is exact, but on
    the demo DEM those windows cover half the grid (the underpass sags drain large areas), so it saved nothing."""
    from skimage.morphology import reconstruction

    z = np.where(valid, dem, np.nanmin(np.where(valid, dem, np.nan)) - 1.0)
    seed = np.full_like(z, z.max())
    edge = ~valid
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
    seed[edge] = z[edge]
    return reconstruction(seed, z, method="erosion")


def analyse(dem: np.ndarray, cell_size: float, nodata: float | None = None) -> Depressions:
    """Depressions, catchments, spill destinations and storage curves of `dem` (metres, square cells)."""
    dem = np.asarray(dem, dtype=np.float64)
    valid = np.isfinite(dem) if nodata is None else np.isfinite(dem) & (dem != nodata)
    dem = np.where(valid, dem, np.nan)
    rows, cols = dem.shape
    filled = fill_depressions(dem, valid)
    from scipy import ndimage

    in_dep = (filled > dem) & valid
    labels, n = ndimage.label(in_dep, structure=np.ones((3, 3), dtype=bool))
    labels = labels.astype(np.int32)
    edge = ~valid
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True

    # D8 on the filled surface: steepest strictly-downhill neighbour; terminals point at themselves.
    direction = _steepest(filled)
    terminal_label = labels.ravel().copy()  # depression cells drain to themselves; edge cells: 0 (lost)
    flat = (direction < 0) & ~in_dep & ~edge
    if flat.any():  # no downhill neighbour: into an adjacent depression at the same level, else unresolved
        lpad = np.pad(labels, 1)
        fpad = np.pad(filled, 1, constant_values=np.nan)
        for k, (dr, dc) in enumerate(_NEIGHBOURS):
            nb_lab = lpad[1 + dr:1 + dr + rows, 1 + dc:1 + dc + cols]
            hit = flat & (direction < 0) & (nb_lab > 0) & (fpad[1 + dr:1 + dr + rows, 1 + dc:1 + dc + cols] == filled)
            direction[hit] = k
        del lpad, fpad
    unresolved = (direction < 0) & ~in_dep & ~edge
    terminal_label[unresolved.ravel()] = -1
    direction[in_dep | edge] = -1

    receiver = _terminals(direction)
    del direction
    catchment = terminal_label[receiver].reshape(dem.shape)
    del receiver
    catchment_cells = np.bincount(np.where(catchment > 0, catchment, 0).ravel(), minlength=n + 1)
    catchment_cells[0] = int((catchment == 0).sum())

    spill = np.full(n + 1, np.nan)
    idx = np.flatnonzero(labels.ravel())
    spill[labels.ravel()[idx]] = filled.ravel()[idx]  # one level per depression (the flat of the filled DEM)
    dest = _spill_destinations(labels, filled, catchment, n)

    # Storage curves: each depression's cells sorted by elevation; volume when the level reaches each of them.
    lab = labels.ravel()[idx]
    z = dem.ravel()[idx]
    order = np.lexsort((z, lab))
    lab, z = lab[order], z[order]
    starts = np.searchsorted(lab, np.arange(1, n + 2)).astype(np.int64)
    starts = np.concatenate([[0], starts])  # starts[d] .. starts[d + 1] for depression d (d = 1..n)
    cum = np.concatenate([[0.0], np.cumsum(z)])
    first = starts[lab]  # start of each cell's group
    prefix = cum[np.arange(len(z))] - cum[first]  # Σ z of the lower cells in the same depression
    k_below = np.arange(len(z)) - first  # cells strictly before this one in the group
    cell_area = float(cell_size) ** 2
    volume_at = cell_area * (k_below * z - prefix)
    capacity = np.zeros(n + 1)
    if n:
        counts = np.diff(starts)[1:]
        sums = cum[starts[2:]] - cum[starts[1:-1]]
        capacity[1:] = cell_area * (counts * spill[1:] - sums)
    return Depressions(dem=dem, cell_area=cell_area, labels=labels, spill_level=spill, dest=dest,
                       catchment_cells=catchment_cells, unresolved_cells=int(unresolved.sum()), starts=starts,
                       sorted_z=z, prefix=prefix, volume_at=volume_at, capacity=capacity)


def _spill_destinations(labels: np.ndarray, filled: np.ndarray, catchment: np.ndarray, n: int) -> np.ndarray:
    """For each depression, where its overflow goes: the catchment of its lowest rim cell that does not drain
    back into it (0 = off the DEM)."""
    rows, cols = labels.shape
    lpad = np.pad(labels, 1, constant_values=-1)
    fpad = np.pad(filled, 1, constant_values=np.inf)
    cpad = np.pad(catchment, 1, constant_values=0)
    deps, levels, targets = [], [], []
    for dr, dc in _NEIGHBOURS:
        nb_lab = lpad[1 + dr:1 + dr + rows, 1 + dc:1 + dc + cols]
        rim = (labels > 0) & (nb_lab == 0)
        nb_catch = cpad[1 + dr:1 + dr + rows, 1 + dc:1 + dc + cols][rim]
        own = labels[rim]
        keep = nb_catch != own
        deps.append(own[keep])
        levels.append(fpad[1 + dr:1 + dr + rows, 1 + dc:1 + dc + cols][rim][keep])
        targets.append(nb_catch[keep])
    dest = np.zeros(n + 1, dtype=np.int64)
    if n:
        deps, levels, targets = np.concatenate(deps), np.concatenate(levels), np.concatenate(targets)
        targets = np.maximum(targets, 0)  # unresolved (-1) counts as lost
        # Lowest rim first; at equal levels a neighbouring depression before the DEM edge (the water there
        # stands at the same level, so it fills that depression before leaving), then the lower id.
        order = np.lexsort((targets, targets == 0, levels, deps))
        deps, targets = deps[order], targets[order]
        firsts = np.flatnonzero(np.r_[True, deps[1:] != deps[:-1]])
        dest[deps[firsts]] = targets[firsts]
        ends = np.r_[firsts[1:], len(deps)]
        _break_cycles(dest, {int(deps[a]): targets[a:b] for a, b in zip(firsts, ends)})
    return dest


def _break_cycles(dest: np.ndarray, candidates: dict) -> None:
    """Make the spill graph acyclic, in place. A cycle can only join depressions at one spill level whose
    lowest outlets lead into each other; the member with the lowest id then spills through its next outlet
    (in the same order) that leads out of the cycle, or off the DEM if there is none."""
    n = len(dest) - 1
    for _ in range(n + 1):
        cycle = _find_cycle(dest)
        if cycle is None:
            return
        m = min(cycle)
        members = set(cycle)
        dest[m] = next((int(t) for t in candidates.get(m, ()) if int(t) not in members and int(t) != m), 0)
    dest[1:] = 0  # unreachable: every round removes a cycle without creating one through m's old successors


def _find_cycle(dest: np.ndarray) -> list[int] | None:
    state = np.zeros(len(dest), dtype=np.int8)  # 0 new, 1 on the current path, 2 done
    state[0] = 2
    for start in range(1, len(dest)):
        if state[start]:
            continue
        path, d = [], start
        while state[d] == 0:
            state[d] = 1
            path.append(d)
            d = int(dest[d])
        if state[d] == 1:
            return path[path.index(d):]
        if path:
            state[path] = 2
    return None


def spill_order(dest: np.ndarray) -> np.ndarray:
    """Depressions in an order where each comes before the one it spills into (dest acyclic): by decreasing
    number of steps to the DEM edge, then by id."""
    n = len(dest) - 1
    steps = np.full(n + 1, -1, dtype=np.int64)
    steps[0] = 0
    for start in range(1, n + 1):
        path, d = [], start
        while steps[d] < 0:
            path.append(d)
            d = int(dest[d])
        k = steps[d]
        for p in reversed(path):
            k += 1
            steps[p] = k
    return np.lexsort((np.arange(1, n + 1), -steps[1:])) + 1


@dataclass(frozen=True)
class Ponding:
    depth: np.ndarray  # m, 0 where dry, NaN outside the DEM
    level: np.ndarray  # (n + 1,) water level per depression, -inf where dry
    excess_mm: float
    rain_volume_m3: float  # excess on the whole DEM
    stored_m3: float
    lost_m3: float  # left the DEM or fell on unresolved flats


def rain_excess_mm(rain_mm: float, duration_h: float, runoff_coefficient: float,
                   drainage_capacity_mm_per_h: float) -> float:
    """Runoff depth that reaches the surface depressions: max(0, rain − capacity × duration) × coefficient."""
    return max(0.0, rain_mm - drainage_capacity_mm_per_h * duration_h) * runoff_coefficient


def fill_and_spill(dep: Depressions, excess_mm: float) -> Ponding:
    """Route a uniform rain excess through the depressions (each before the one it spills into) and return
    the depths. Water balance: rain excess on the DEM = held in depressions + lost (rain on cells draining
    off the DEM or on unresolved flats, and overflow leaving the DEM)."""
    excess = excess_mm / 1000.0
    inflow = dep.catchment_cells.astype(np.float64) * dep.cell_area * excess
    inflow[0] = 0.0
    valid = np.isfinite(dep.dem)
    total = float(valid.sum() * dep.cell_area * excess)
    lost = total - float(inflow.sum())  # rain that never reaches a depression
    level = np.full(dep.count + 1, -np.inf)
    stored = 0.0
    for d in spill_order(dep.dest):
        water = float(inflow[d])
        if water <= 0:
            continue
        held = min(water, float(dep.capacity[d]))
        level[d] = dep.level_for(int(d), held)
        stored += held
        over = water - held
        if over > 0:
            if dep.dest[d] > 0:
                inflow[dep.dest[d]] += over
            else:
                lost += over
    depth = np.where(dep.labels > 0, np.maximum(level[dep.labels] - dep.dem, 0.0), 0.0)
    depth = np.where(valid, depth, np.nan).astype(np.float32)
    return Ponding(depth=depth, level=level, excess_mm=excess_mm, rain_volume_m3=total, stored_m3=stored,
                   lost_m3=lost)


def depth_at(depth: np.ndarray, rows: np.ndarray, cols: np.ndarray, radius_cells: int = 1) -> list[float | None]:
    """Deepest ponding within radius_cells of each (row, col) — a point's position is uncertain by a few
    metres; None outside the raster."""
    out = []
    h, w = depth.shape
    for r, c in zip(rows, cols):
        if not (0 <= r < h and 0 <= c < w):
            out.append(None)
            continue
        window = depth[max(r - radius_cells, 0):r + radius_cells + 1, max(c - radius_cells, 0):c + radius_cells + 1]
        value = np.nanmax(window) if np.isfinite(window).any() else np.nan
        out.append(None if not np.isfinite(value) else float(value))
    return out


# --- inputs -------------------------------------------------------------------------------------------------
class ScenarioRequest(BaseModel):
    preset: str | None = Field(None, description="预设降雨情景：规则 flood.scenario_presets 的键或中文名，如 ampil_2018")
    rain_mm: float | None = Field(None, description="降雨量（毫米）；给定预设时覆盖预设值")
    duration_min: float | None = Field(None, description="降雨历时（分钟）")
    runoff_coefficient: float | None = Field(None, description="径流系数 0–1，默认取规则 flood.scenario_runoff_coefficient")
    drainage_capacity_mm_per_h: float | None = Field(
        None, description="管网排水能力（毫米/小时），默认取规则 flood.scenario_drainage_capacity_mm_per_h")


def _bad(name: str, zh: str, en: str) -> GisError:
    return GisError("bad_parameter", f"参数 {name} 无效：{zh}", f"invalid parameter '{name}': {en}", 422)


def resolve_inputs(req: ScenarioRequest, rules) -> dict:
    """The scenario's inputs: preset values, then the request's own values, then the rule defaults; checked."""
    presets = rules.value("scenario_presets")
    values: dict = {}
    preset_id = None
    if req.preset is not None:
        preset_id = next((k for k, p in presets.items() if req.preset in (k, p.get("name_zh"))), None)
        if preset_id is None:
            raise GisError("unknown_preset", f"没有预设情景 {req.preset[:40]!r}（可选：{'、'.join(presets)}）",
                           f"no preset {req.preset[:40]!r} (choose one of {', '.join(presets)})", 422)
        values = {k: presets[preset_id][k] for k in ("rain_mm", "duration_min")}
    for key in ("rain_mm", "duration_min", "runoff_coefficient", "drainage_capacity_mm_per_h"):
        if getattr(req, key) is not None:
            values[key] = getattr(req, key)
    values.setdefault("runoff_coefficient", rules.value("scenario_runoff_coefficient"))
    values.setdefault("drainage_capacity_mm_per_h", rules.value("scenario_drainage_capacity_mm_per_h"))
    for key in ("rain_mm", "duration_min"):
        if key not in values:
            raise _bad(key, "未给定预设时必填", "required unless a preset is given")
    for key, value in values.items():
        if not math.isfinite(value):
            raise _bad(key, "须为有限数", "must be a finite number")
    if values["rain_mm"] < 0 or values["rain_mm"] > 2000:
        raise _bad("rain_mm", "须在 0–2000 毫米之间", "must lie between 0 and 2000 mm")
    if not 0 < values["duration_min"] <= 7 * 24 * 60:
        raise _bad("duration_min", "须大于 0 且不超过 7 天", "must be greater than 0 and at most 7 days")
    if not 0 <= values["runoff_coefficient"] <= 1:
        raise _bad("runoff_coefficient", "须在 0–1 之间", "must lie between 0 and 1")
    if values["drainage_capacity_mm_per_h"] < 0:
        raise _bad("drainage_capacity_mm_per_h", "不能为负", "must not be negative")
    return {"preset": preset_id, "preset_name_zh": presets[preset_id]["name_zh"] if preset_id else None, **values}


# --- service: the DEM, the points, the files ----------------------------------------------------------------
_ID = re.compile(r"^[0-9a-f]{32}$")


class ScenarioService:
    """Runs scenarios on the catalog's DEM and keeps the latest rasters under var/flood_scenarios/."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.dir = Path(ctx.settings.var_dir) / "flood_scenarios"
        self._lock = threading.Lock()
        self._running = threading.Lock()  # at most one scenario computing in this process (CPU and memory)
        self._model: tuple | None = None  # (DEM file stamp, Depressions, transform, crs)

    def model(self, who=None):
        import rasterio

        layer = self.ctx.layer("dem", who)
        stamp = (str(layer.data_path), layer.data_path.stat().st_mtime_ns)
        with self._lock:  # one analysis at a time; later scenarios reuse it
            if self._model is None or self._model[0] != stamp:
                with rasterio.open(layer.data_path) as src:
                    dem = src.read(1, masked=True).filled(np.nan).astype(np.float64)
                    self._model = (stamp, analyse(dem, abs(src.transform.a)), src.transform, src.crs)
            return self._model[1:]

    def run(self, req: ScenarioRequest, who) -> dict:
        inputs = resolve_inputs(req, self.ctx.rules)
        if not self._running.acquire(blocking=False):
            raise GisError("scenario_busy", "本进程正在计算另一个降雨情景，请稍后重试",
                           "another rainfall scenario is being computed by this worker; retry shortly", 429)
        try:
            return self._run(inputs, who)
        finally:
            self._running.release()

    def _run(self, inputs: dict, who) -> dict:
        started = time.perf_counter()
        dep, transform, crs = self.model(who)
        analysed = time.perf_counter()
        excess = rain_excess_mm(inputs["rain_mm"], inputs["duration_min"] / 60, inputs["runoff_coefficient"],
                                inputs["drainage_capacity_mm_per_h"])
        pond = fill_and_spill(dep, excess)
        points = self._points(pond.depth, transform)
        scenario_id = uuid.uuid4().hex
        bounds = self._write(scenario_id, pond.depth, transform, crs)
        return {
            "scenario_id": scenario_id, "inputs": inputs, "rain_excess_mm": round(excess, 2),
            "points": points, "closures": [p for p in points if p["closes"]],
            "closure_rule": self.ctx.rules.rule("closure_depth_cm").as_dict(),
            "water_balance_m3": {"rain_excess": round(pond.rain_volume_m3), "ponded": round(pond.stored_m3),
                                 "lost": round(pond.lost_m3)},
            "depressions": dep.count, "unresolved_flat_cells": dep.unresolved_cells,
            "timing_s": {"analysis": round(analysed - started, 2), "total": round(time.perf_counter() - started, 2)},
            "method": METHOD, "assumptions": ASSUMPTIONS,
            "raster_url": f"/api/flood/scenarios/{scenario_id}/depth.tif",
            "image_url": f"/api/flood/scenarios/{scenario_id}/depth.png", "bounds": bounds,
            "bounds_crs": "EPSG:4326 [min_lon, min_lat, max_lon, max_lat]",
        }

    def _points(self, depth, transform) -> list[dict]:
        """Every monitored point (reports.py: stable point_id, kind) with its predicted depth and whether it
        closes under its own closure depth (flood.closure_depth_cm or a per-point override)."""
        from .reports import service_for

        reports = service_for(self.ctx)
        metric = reports.points().metric  # EPSG:4548
        cols, rows = ~transform * (metric.geometry.x.to_numpy(), metric.geometry.y.to_numpy())
        depths = depth_at(depth, np.floor(rows).astype(int), np.floor(cols).astype(int))
        out = []
        for p, d in zip(metric.itertuples(), depths):
            cm = None if d is None else round(d * 100, 1)
            limit = reports.thresholds(p.point_id).closure_cm
            out.append({"point_id": p.point_id, "kind": p.kind, "name": p.name, "district": p.district,
                        "predicted_depth_cm": cm, "closure_depth_cm": limit,
                        "closes": cm is not None and cm > limit})  # strictly greater (L4283)
        return out

    def _write(self, scenario_id: str, depth: np.ndarray, transform, crs) -> list[float]:
        import rasterio
        from rasterio.warp import Resampling, calculate_default_transform, reproject

        self.dir.mkdir(parents=True, exist_ok=True)
        h, w = depth.shape
        tif = self.dir / f".{scenario_id}.tif.tmp"
        with rasterio.open(tif, "w", driver="GTiff", width=w, height=h, count=1, dtype="float32", crs=crs,
                           transform=transform, nodata=-9999.0, compress="deflate", tiled=True) as dst:
            dst.write(np.where(np.isfinite(depth), depth, -9999.0).astype(np.float32), 1)
            dst.update_tags(units="metre", quantity="predicted ponding depth")
        # The PNG in lon/lat for a Leaflet image overlay: at most 2048 px a side, deepest cell per pixel.
        left, top = transform * (0, 0)
        right, bottom = transform * (w, h)
        dst_t, dw, dh = calculate_default_transform(crs, "EPSG:4326", w, h, left, bottom, right, top)
        scale = max(dw, dh) / 2048
        if scale > 1:
            dw, dh = int(math.ceil(dw / scale)), int(math.ceil(dh / scale))
            dst_t = dst_t * dst_t.scale(scale, scale)
        small = np.zeros((dh, dw), dtype=np.float32)
        reproject(np.nan_to_num(depth, nan=0.0), small, src_transform=transform, src_crs=crs, dst_transform=dst_t,
                  dst_crs="EPSG:4326", resampling=Resampling.max, src_nodata=None, dst_nodata=0)
        png = self.dir / f".{scenario_id}.png.tmp"
        with warnings.catch_warnings():  # a plain image: its corners are the response's bounds
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(png, "w", driver="PNG", width=dw, height=dh, count=4, dtype="uint8") as dst:
                dst.write(_blue_ramp(small))
        tif.replace(self.dir / f"{scenario_id}.tif")
        png.replace(self.dir / f"{scenario_id}.png")
        self._clean()
        west, north = dst_t * (0, 0)
        east, south = dst_t * (dw, dh)
        return [round(west, 7), round(south, 7), round(east, 7), round(north, 7)]

    def _keep(self) -> int:
        return int(self.ctx.rules.value("scenario_keep"))

    def _clean(self, now: float | None = None) -> None:
        """Keep the files of the newest scenario_keep scenarios; remove temporary files older than
        STALE_TMP_S (left by a worker that died while writing). Other workers clean the same directory at
        the same time, so any file may vanish between listing and stat or unlink: that is not an error."""
        now = time.time() if now is None else now
        stamped = []
        for tif in self.dir.glob("*.tif"):
            try:
                stamped.append((tif.stat().st_mtime, tif.name, tif))
            except FileNotFoundError:
                continue
        stamped.sort()
        for _, _, stale in stamped[:max(len(stamped) - self._keep(), 0)]:
            for path in (stale, stale.with_suffix(".png")):
                path.unlink(missing_ok=True)
        for tmp in self.dir.glob(".*.tmp"):
            try:
                if now - tmp.stat().st_mtime > STALE_TMP_S:
                    tmp.unlink()
            except FileNotFoundError:
                continue

    def open(self, scenario_id: str, suffix: str):
        """The scenario's file opened for reading (the open file survives another worker's cleanup); 404 if
        it is not (or no longer) there."""
        try:
            if not _ID.match(scenario_id):
                raise FileNotFoundError(scenario_id)
            return open(self.dir / f"{scenario_id}{suffix}", "rb")
        except FileNotFoundError:
            raise not_found(f"情景 {scenario_id[:40]}（只保留最近的情景）",
                            f"scenario '{scenario_id[:40]}' (only the latest are kept)") from None


def _blue_ramp(depth: np.ndarray) -> np.ndarray:
    """RGBA: transparent where dry (< 1 cm), light to dark blue up to 1.5 m."""
    t = np.clip(depth / 1.5, 0, 1)[None]
    light, dark = np.array([198, 219, 239])[:, None, None], np.array([8, 48, 107])[:, None, None]
    rgb = (light + (dark - light) * t).astype(np.uint8)
    alpha = np.where(depth >= 0.01, 210, 0).astype(np.uint8)[None]
    return np.concatenate([rgb, alpha])


# --- routes -------------------------------------------------------------------------------------------------
def router(ctx):
    from fastapi import APIRouter, Depends
    from fastapi.responses import StreamingResponse

    from ..api.deps import ERROR_RESPONSES, principal, require_role

    r = APIRouter(responses=ERROR_RESPONSES)
    service = ScenarioService(ctx)

    def signed_in(who=Depends(principal)):
        return require_role(who, SCENARIO_ROLES, "运行降雨情景", "run rainfall scenarios")

    @r.post("/scenarios", summary="降雨情景：预测下穿桥和积水点积水深度 Rainfall scenario on the DEM")
    def run(body: ScenarioRequest, who=Depends(signed_in)):  # sync: the thread pool, not the event loop
        return service.run(body, who)

    def send(fh, media_type: str, filename: str | None = None):
        def chunks():
            with fh:
                while chunk := fh.read(1 << 16):
                    yield chunk

        headers = {"Content-Length": str(os.fstat(fh.fileno()).st_size)}
        if filename:
            headers["Content-Disposition"] = f"attachment; filename*=utf-8''{quote(filename)}"
        return StreamingResponse(chunks(), media_type=media_type, headers=headers)

    @r.get("/scenarios/{scenario_id}/depth.tif", summary="情景积水深度 GeoTIFF（米，EPSG:4548）")
    def depth_tif(scenario_id: str, who=Depends(signed_in)):
        return send(service.open(scenario_id, ".tif"), "image/tiff", f"积水深度_{scenario_id}.tif")

    @r.get("/scenarios/{scenario_id}/depth.png", summary="情景积水深度图（经纬度，透明为无积水）")
    def depth_png(scenario_id: str, who=Depends(signed_in)):
        return send(service.open(scenario_id, ".png"), "image/png")

    return r
