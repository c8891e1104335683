"""Gaussian plume footprints for an air release, in EPSG:4548 metres.

Model: a continuous ground-level point source (release height from the rule ``release_height_m``, 0 by
default) with total reflection at the ground; ground-level concentration

    C(x, y) = Q / (π·u·σy(x)·σz(x)) · exp(−y² / 2σy²) · exp(−H² / 2σz²)          [g/m³]

with Q in g/s, u in m/s, x downwind and y crosswind in metres. σy, σz are the Pasquill–Gifford curves in the
Briggs (1973) open-country form σ = a·x·(1 + b·x)^c (rule ``pg_sigma_rural``; coefficients as tabulated in Hanna,
Briggs & Hosker 1982, Handbook on Atmospheric Diffusion, table 4.5, and Turner 1994, Workbook of Atmospheric
Dispersion Estimates). For a ground source the centre-line concentration falls monotonically with x, so the
footprint of a level of concern L is { (x, y): |y| ≤ σy·sqrt(2·ln(C(x,0)/L)) } for 0 < x ≤ x_L where
C(x_L, 0) = L (found by bisection).

Orientation: ``wind_from_deg`` is where the wind comes FROM (meteorological convention, degrees clockwise from
north); the plume travels towards wind_from + 180°. Wind directions are read from true north; EPSG:4548 grid
north differs from it by the meridian convergence (≈ 0.6° at 116°E, 0.3° at 116.5°E: ≈ 300–600 m sideways at
50 km), so the axis is turned by ``grid_rotation_deg`` = the grid bearing of true north at the source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import shapely

from ..errors import GisError

STABILITY_CLASSES = ("A", "B", "C", "D", "E", "F")
CAVEATS_ZH = (
    "稳态高斯烟羽：假定风向风速不变、持续释放足够长；短时释放时实际影响范围小于图示（偏保守）",
    "地面源、平坦开阔地形（Briggs 乡村扩散参数）；建筑物、河谷与逆温层未考虑",
    "扩散参数适用约100米至10公里，更远处仅作提示；浓度为约10分钟平均值",
    "未考虑化学反应、沉降与重气效应（液氯、液化天然气泄漏初期为重气，需专业模式复核）",
)


def sigma(x, coeffs) -> np.ndarray:
    """σ = a·x·(1 + b·x)^c for x > 0 (metres)."""
    a, b, c = coeffs
    x = np.asarray(x, dtype=float)
    return a * x * (1.0 + b * x) ** c


@dataclass(frozen=True)
class Plume:
    """A continuous release: rate (g/s), wind speed (m/s), stability class and its σ coefficients."""

    release_rate_g_s: float
    wind_speed_m_s: float
    wind_from_deg: float
    sigma_y: tuple[float, float, float]
    sigma_z: tuple[float, float, float]
    release_height_m: float = 0.0
    stability: str = "D"
    grid_rotation_deg: float = 0.0  # the grid bearing of true north at the source (meridian convergence)

    @property
    def downwind_deg(self) -> float:
        return (self.wind_from_deg + 180.0) % 360.0

    def unit_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(downwind, crosswind-right) unit vectors in grid (east, north)."""
        t = math.radians(self.downwind_deg + self.grid_rotation_deg)
        return np.array([math.sin(t), math.cos(t)]), np.array([math.cos(t), -math.sin(t)])

    def centreline(self, x) -> np.ndarray:
        """Ground-level centre-line concentration (g/m³) at downwind distances x > 0."""
        x = np.asarray(x, dtype=float)
        sy, sz = sigma(x, self.sigma_y), sigma(x, self.sigma_z)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            c = self.release_rate_g_s / (math.pi * self.wind_speed_m_s * sy * sz) * \
                np.exp(-self.release_height_m ** 2 / (2 * sz ** 2))
        return np.where(x > 0, c, 0.0)

    def concentration_local(self, x, y) -> np.ndarray:
        """Ground-level concentration (g/m³) at plume coordinates (x downwind, y crosswind; 0 upwind)."""
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        xs = np.where(x > 0, x, 1.0)
        sy = sigma(xs, self.sigma_y)
        c = self.centreline(xs) * np.exp(-(y ** 2) / (2 * sy ** 2))
        return np.where(x > 0, c, 0.0)

    def local(self, source_xy, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Plume coordinates (downwind x, crosswind y) of points xy (n×2, metres)."""
        d, n = self.unit_vectors()
        rel = np.asarray(xy, dtype=float).reshape(-1, 2) - np.asarray(source_xy, dtype=float)
        return rel @ d, rel @ n

    def concentration(self, source_xy, xy) -> np.ndarray:
        """Ground-level concentration (mg/m³) at points xy (n×2, EPSG:4548)."""
        x, y = self.local(source_xy, xy)
        return self.concentration_local(x, y) * 1000.0

    def reach_m(self, level_g_m3: float, x_max: float) -> tuple[float, bool]:
        """The downwind distance where the centre line falls to level (capped at x_max: truncated=True)."""
        if self.centreline(x_max) >= level_g_m3:
            return x_max, True
        lo, hi = 1e-3, x_max
        if self.centreline(lo) < level_g_m3:
            return 0.0, False
        for _ in range(80):  # bisection in log space: relative precision far below a metre
            mid = math.sqrt(lo * hi)
            if self.centreline(mid) >= level_g_m3:
                lo = mid
            else:
                hi = mid
        return lo, False

    def footprint(self, source_xy, level_mg_m3: float, x_max: float, samples: int) -> "Footprint":
        """The ground area where the concentration is at least level_mg_m3, as a polygon in EPSG:4548."""
        level = level_mg_m3 / 1000.0
        reach, truncated = self.reach_m(level, x_max)
        if reach <= 0:
            return Footprint(level_mg_m3, shapely.Polygon(), 0.0, 0.0, truncated)
        # log-spaced from the source (the width grows fast there) and log-spaced back from the tip (where the
        # outline closes steeply), so that the straight edges between samples stay close to the isoline
        near = np.geomspace(min(1.0, reach / 10), reach, samples // 2)
        tip = reach - np.geomspace(reach * 1e-5, reach * 0.5, samples - samples // 2)
        xs = np.unique(np.concatenate([near, tip, [reach]]))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.log(self.centreline(xs) / level)
        half = sigma(xs, self.sigma_y) * np.sqrt(2 * np.clip(ratio, 0.0, None))
        if not truncated:
            half[-1] = 0.0
        local = np.concatenate([[[0.0, 0.0]], np.column_stack([xs, half]), np.column_stack([xs[::-1], -half[::-1]])])
        d, n = self.unit_vectors()
        world = np.asarray(source_xy, dtype=float) + local[:, :1] * d + local[:, 1:] * n
        polygon = shapely.make_valid(shapely.Polygon(world))
        return Footprint(level_mg_m3, polygon, float(reach), float(half.max()) * 2, truncated)


@dataclass
class Footprint:
    level_mg_m3: float
    geometry: shapely.Geometry
    length_m: float
    max_width_m: float
    truncated: bool  # the level is still exceeded at the furthest distance computed
    notes: list[str] = field(default_factory=list)


def stability_class(given: str | None, wind_speed: float, daytime: bool | None, table: dict) -> tuple[str, str]:
    """The stability class given, or derived from wind speed and day/night (rule stability_from_wind)."""
    if given is not None:
        if given not in STABILITY_CLASSES:
            raise GisError("invalid_source_term", f"字段 stability 须为 A–F 之一，收到 {given!r}",
                           f"field 'stability' must be one of A–F, got {given!r}", 422)
        return given, "given"
    if daytime is None:
        raise GisError("invalid_source_term", "字段 stability 缺失：请给稳定度 A–F，或给 daytime（白天 true/夜间 false）以便推定",
                       "field 'stability' missing: give a class A–F, or daytime (true/false) to derive it", 422)
    rows = table["day" if daytime else "night"]
    row = next(r for r in rows if wind_speed < r["below"])
    return row["class"], f"由风速 {wind_speed:g} 米/秒与{'白天' if daytime else '夜间'}推定（Pasquill 表）"
