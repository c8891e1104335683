"""Coordinate systems: storage in CGCS2000 (EPSG:4490), metres in EPSG:4548, explicit input conversion.

Every coordinate a user sends into an analysis or an edit comes with a ``coord_sys``; it is converted here
and checked against Langfang's extent, so that a swapped pair, a missing Gauss–Krüger zone prefix or an
unconverted GCJ-02 point is refused with a message naming the likely mistake instead of silently landing
hundreds of metres (or kilometres) away.

WGS84 and CGCS2000 differ by a few centimetres here; pyproj's 4326→4490 transform is a ballpark (identity)
transform, which is the accepted practice for data at this scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import shapely
from pyproj import CRS, Transformer

from .errors import GisError, shown

STORAGE_CRS = "EPSG:4490"  # CGCS2000 geographic; GeoJSON and GeoPackage keep lon/lat order
METRIC_CRS = "EPSG:4548"  # CGCS2000 / 3-degree Gauss-Kruger CM 117E (no zone prefix), metres
ZONED_CRS = "EPSG:4527"  # CGCS2000 / 3-degree Gauss-Kruger zone 39 (false easting 39 500 000)

# Langfang prefecture extent (WGS84), from layers/admin/langfang_city_boundary_wgs84.geojson (see PROVENANCE).
LANGFANG_BBOX = (116.1104, 38.4698, 117.2536, 40.0837)
# How far outside that extent an input may fall before it is refused (issue #2: "bounding box plus 20 km").
INPUT_MARGIN_M = 20_000.0


@lru_cache(maxsize=64)
def transformer(src: str, dst: str) -> Transformer:
    """Cached transformer with lon/lat (x/easting first) order on both sides."""
    return Transformer.from_crs(CRS.from_user_input(src), CRS.from_user_input(dst), always_xy=True)


def transform_xy(x, y, src: str, dst: str):
    xs, ys = transformer(src, dst).transform(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return np.asarray(xs), np.asarray(ys)


def transform_geometry(geoms, src: str, dst: str, swap_output: bool = False):
    """Transform shapely geometries (scalar or array); swap_output gives authority axis order (lat/lon, N/E)."""
    trans = transformer(src, dst)

    def _apply(coords: np.ndarray) -> np.ndarray:
        xs, ys = trans.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([ys, xs] if swap_output else [xs, ys])

    return shapely.transform(geoms, _apply)


# --- GCJ-02 ("Mars coordinates") ----------------------------------------------------------------------
# The published forward formula on the Krasovsky ellipsoid; the inverse is iterative (no closed form).
GCJ_A = 6378245.0  # Krasovsky semi-major axis (public: the flood page repeats the formula in JS)
GCJ_EE = 0.00669342162296594323


def _gcj_delta(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = lon - 105.0, lat - 35.0
    dlat = (-100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x))
            + (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
            + (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
            + (160.0 * np.sin(y / 12.0 * np.pi) + 320 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0)
    dlon = (300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x))
            + (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
            + (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
            + (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0)
    radlat = lat / 180.0 * np.pi
    magic = 1 - GCJ_EE * np.sin(radlat) ** 2
    sqrtmagic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((GCJ_A * (1 - GCJ_EE)) / (magic * sqrtmagic) * np.pi)
    dlon = (dlon * 180.0) / (GCJ_A / sqrtmagic * np.cos(radlat) * np.pi)
    return dlon, dlat


def wgs84_to_gcj02(lon, lat):
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    dlon, dlat = _gcj_delta(lon, lat)
    return lon + dlon, lat + dlat


def gcj02_to_wgs84(lon, lat, tolerance_deg: float = 1e-10, max_iter: int = 30):
    """Invert GCJ-02 by fixed-point iteration; converges to far below a millimetre in a handful of steps."""
    glon, glat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    wlon, wlat = glon.copy(), glat.copy()
    for _ in range(max_iter):
        flon, flat = wgs84_to_gcj02(wlon, wlat)
        elon, elat = glon - flon, glat - flat
        wlon, wlat = wlon + elon, wlat + elat
        if np.all(np.abs(elon) < tolerance_deg) and np.all(np.abs(elat) < tolerance_deg):
            break
    return wlon, wlat


# --- coord_sys: how users say which system their numbers are in ----------------------------------------
@dataclass(frozen=True)
class CoordSys:
    name: str
    label_zh: str
    epsg: str | None  # None for GCJ-02, which no EPSG code describes
    geographic: bool


COORD_SYSTEMS: dict[str, CoordSys] = {
    "wgs84": CoordSys("wgs84", "WGS84 经纬度（GPS、OpenStreetMap）", "EPSG:4326", True),
    "cgcs2000": CoordSys("cgcs2000", "CGCS2000 经纬度（天地图、国土调查）", "EPSG:4490", True),
    "gcj02": CoordSys("gcj02", "GCJ-02 火星坐标（高德、腾讯地图）", None, True),
    "epsg:4548": CoordSys("epsg:4548", "CGCS2000 3度带高斯投影 中央经线117°（无带号）", "EPSG:4548", False),
    "epsg:4527": CoordSys("epsg:4527", "CGCS2000 3度带高斯投影 第39带（带号39）", "EPSG:4527", False),
    "epsg:3857": CoordSys("epsg:3857", "Web 墨卡托", "EPSG:3857", False),
}


def parse_coord_sys(value: str | None) -> CoordSys:
    key = (value or "wgs84").strip().lower()
    if key not in COORD_SYSTEMS:
        raise GisError(
            "bad_coord_sys",
            f"不支持的坐标系 {shown(value)}，可选：{', '.join(COORD_SYSTEMS)}",
            f"unsupported coord_sys {shown(value)}; choose one of {', '.join(COORD_SYSTEMS)}",
            422,
        )
    return COORD_SYSTEMS[key]


def _raw_to_storage(x, y, cs: CoordSys):
    """Convert without checking the extent (used by the checker itself to test hypotheses)."""
    if cs.name == "gcj02":
        return gcj02_to_wgs84(x, y)
    return transform_xy(x, y, cs.epsg, STORAGE_CRS)


def inside_langfang(lon, lat) -> np.ndarray:
    """True where lon/lat (CGCS2000) lies within Langfang's extent plus INPUT_MARGIN_M, measured in metres."""
    lon, lat = np.atleast_1d(lon), np.atleast_1d(lat)
    ok = np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) <= 180) & (np.abs(lat) <= 90)
    e, n = transform_xy(np.where(ok, lon, 0.0), np.where(ok, lat, 0.0), STORAGE_CRS, METRIC_CRS)
    (x0, x1), (y0, y1) = _metric_extent()
    m = INPUT_MARGIN_M
    return ok & (e >= x0 - m) & (e <= x1 + m) & (n >= y0 - m) & (n <= y1 + m)


@lru_cache(maxsize=1)
def _metric_extent():
    x0, y0, x1, y1 = LANGFANG_BBOX
    lons = np.array([x0, x1, x0, x1, (x0 + x1) / 2, (x0 + x1) / 2])
    lats = np.array([y0, y0, y1, y1, y0, y1])
    e, n = transform_xy(lons, lats, STORAGE_CRS, METRIC_CRS)
    return (e.min(), e.max()), (n.min(), n.max())


def _diagnose(x: float, y: float, cs: CoordSys) -> tuple[str, str]:
    """Name the most likely mistake for a coordinate that is not in Langfang."""

    def lands(xx, yy, other: CoordSys) -> bool:
        with np.errstate(all="ignore"):
            lon, lat = _raw_to_storage(np.array([xx]), np.array([yy]), other)
        return bool(inside_langfang(lon, lat)[0])

    if lands(y, x, cs):
        return ("坐标轴顺序颠倒：请先填经度/东坐标（x），再填纬度/北坐标（y）",
                "axes swapped: send longitude/easting as x and latitude/northing as y")
    if cs.geographic:
        for other in (COORD_SYSTEMS["epsg:4527"], COORD_SYSTEMS["epsg:4548"], COORD_SYSTEMS["epsg:3857"]):
            if lands(x, y, other) or lands(y, x, other):
                return (f"这是投影坐标（米），不是经纬度：请使用 coord_sys={other.name}",
                        f"projected metres sent as degrees: use coord_sys={other.name}")
    else:
        if lands(x, y, COORD_SYSTEMS["wgs84"]) or lands(y, x, COORD_SYSTEMS["wgs84"]):
            return ("这是经纬度，不是投影坐标：请使用 coord_sys=wgs84 或 cgcs2000",
                    "degrees sent as projected metres: use coord_sys=wgs84 or cgcs2000")
        if cs.name == "epsg:4548" and (lands(x, y, COORD_SYSTEMS["epsg:4527"]) or lands(y, x, COORD_SYSTEMS["epsg:4527"])):
            return ("东坐标带有带号 39：请去掉带号，或使用 coord_sys=epsg:4527",
                    "easting carries the zone prefix 39: strip it or use coord_sys=epsg:4527")
        if cs.name == "epsg:4527" and (lands(x, y, COORD_SYSTEMS["epsg:4548"]) or lands(y, x, COORD_SYSTEMS["epsg:4548"])):
            return ("东坐标缺少带号 39：请加上带号（39xxxxxx），或使用 coord_sys=epsg:4548",
                    "easting lacks the Gauss-Kruger zone prefix 39: add it (39xxxxxx) or use coord_sys=epsg:4548")
    return ("坐标不在廊坊市范围内，请检查坐标系和数值", "coordinate is outside Langfang; check the coordinate system and values")


def to_storage_xy(x, y, coord_sys: str | CoordSys | None = None):
    """Convert user coordinates to CGCS2000 lon/lat; refuse (422) anything outside Langfang + 20 km."""
    cs = coord_sys if isinstance(coord_sys, CoordSys) else parse_coord_sys(coord_sys)
    xa, ya = np.atleast_1d(np.asarray(x, dtype=float)), np.atleast_1d(np.asarray(y, dtype=float))
    with np.errstate(all="ignore"):
        lon, lat = _raw_to_storage(xa, ya, cs)
    inside = inside_langfang(lon, lat)
    if not inside.all():
        i = int(np.flatnonzero(~inside)[0])
        zh, en = _diagnose(float(xa[i]), float(ya[i]), cs)
        raise GisError(
            "coordinate_outside_langfang",
            f"坐标 ({xa[i]:g}, {ya[i]:g}) [{cs.name}] 不在廊坊市范围（含20公里缓冲）内。可能原因：{zh}",
            f"coordinate ({xa[i]:g}, {ya[i]:g}) [{cs.name}] is outside Langfang (+20 km). Likely cause: {en}",
            422,
        )
    return lon, lat


def from_storage_xy(lon, lat, coord_sys: str | CoordSys | None = None):
    """Express CGCS2000 lon/lat in the user's coordinate system (x/easting first)."""
    cs = coord_sys if isinstance(coord_sys, CoordSys) else parse_coord_sys(coord_sys)
    lon, lat = np.atleast_1d(np.asarray(lon, dtype=float)), np.atleast_1d(np.asarray(lat, dtype=float))
    if cs.name == "gcj02":
        return wgs84_to_gcj02(lon, lat)
    return transform_xy(lon, lat, STORAGE_CRS, cs.epsg)


def geometry_to_storage(geom, coord_sys: str | CoordSys | None = None):
    """Convert a user geometry (shapely) to CGCS2000, checking every vertex is in Langfang."""
    cs = coord_sys if isinstance(coord_sys, CoordSys) else parse_coord_sys(coord_sys)
    coords = shapely.get_coordinates(geom)
    lon, lat = to_storage_xy(coords[:, 0], coords[:, 1], cs)
    return shapely.set_coordinates(shapely.force_2d(geom), np.column_stack([lon, lat]))


# --- OGC API – Features Part 2: CRS identified by URI, coordinates in the CRS's own axis order ---------
CRS84_URI = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"


@dataclass(frozen=True)
class OgcCrs:
    uri: str
    pyproj_id: str
    swap_axes: bool  # True when the authority axis order is lat/lon or northing/easting


def _ogc_crs(uri: str, pyproj_id: str) -> OgcCrs:
    first_axis = CRS.from_user_input(pyproj_id).axis_info[0].direction.lower()
    return OgcCrs(uri, pyproj_id, first_axis in ("north", "south"))


@lru_cache(maxsize=1)
def ogc_crs_table() -> dict[str, OgcCrs]:
    entries = [_ogc_crs(CRS84_URI, "OGC:CRS84")]
    for code in (4490, 4548, 4527):
        entries.append(_ogc_crs(f"http://www.opengis.net/def/crs/EPSG/0/{code}", f"EPSG:{code}"))
    return {e.uri: e for e in entries}


def parse_ogc_crs(uri: str | None, param: str = "crs") -> OgcCrs:
    table = ogc_crs_table()
    if uri is None or uri == "":
        return table[CRS84_URI]
    value = uri.strip()
    if value.startswith("[") and value.endswith("]"):  # safe CURIE form [EPSG:4490]
        value = value[1:-1]
    if value.upper().startswith("EPSG:"):
        value = f"http://www.opengis.net/def/crs/EPSG/0/{value.split(':', 1)[1]}"
    if value.upper() in ("OGC:CRS84", "CRS84"):
        value = CRS84_URI
    if value.startswith("https://"):
        value = "http://" + value[len("https://"):]
    if value not in table:
        raise GisError(
            "unsupported_crs",
            f"参数 {param} 不支持坐标系 {uri}，可选：{', '.join(table)}",
            f"{param}: unsupported CRS {uri}; supported: {', '.join(table)}",
            400,
        )
    return table[value]


def require_metric(**frames) -> None:
    """Analysis functions measure in metres: refuse frames that are not in EPSG:4548 (a programming error)."""
    for name, frame in frames.items():
        if frame.crs is None or frame.crs.to_epsg() != 4548:
            raise ValueError(f"{name} must be in {METRIC_CRS} (metres), not {frame.crs}")
