"""Grand Canal corridor analyses: pure functions on frames in EPSG:4548 (metres); no HTTP, no I/O.

Every threshold comes in as an argument (the caller reads it from gis_service/rules/canal.toml); nothing here
knows a number from the plan. Banks are named with respect to the flow direction, which is the direction of
the channel line: ``left`` lies to the left of a walker going downstream.

Distances are measured from a river's *baseline*: its centreline, or its river management boundary polygon
when one is given (distance 0 inside it) together with the reaches of the channel the boundary does not cover.
The bank of a place is the side of the centreline it lies on (the side of the nearest centreline segment;
beyond the ends, of the line extended along its end segments).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import shapely.ops

from ..crs import METRIC_CRS, require_metric

M2_PER_MU = 10_000 / 15  # 1 亩 = 10000/15 m² (a unit, not a rule)
BANK_ZH = {"left": "左岸", "right": "右岸", "centre": "河道上"}
KIND_ZH = {"village_remediation": "村庄环境综合整治范围", "green_belt": "绿色廊道景观带",
           "core_monitoring": "生态空间核心监控区"}
VERDICT_RANK = {"allowed": 0, "needs_review": 1, "prohibited": 2}
VERDICT_ZH = {"allowed": "允许", "needs_review": "需审查", "prohibited": "禁止"}
# The kinds of control zone a planner may draw (control_zones.py): the computed zones' kinds and the others the
# plan asks to delimit (heritage ranges L2130, the ecological red line L2143). Each has a verdict in
# canal.siting_verdicts.control_zones.
CONTROL_KIND_ZH = {
    **KIND_ZH,
    "heritage_protection": "文物保护范围",
    "construction_control": "建设控制地带",
    "ecological_redline": "生态保护红线",
    "other": "其他管控区",
}
# Which baseline a distance was measured from (canal.measurement_baseline).
BASELINE_ZH = {"centreline": "河道中心线", "river_boundary": "河道管理范围线"}
# Key of the heritage-range table used for a class the table does not list (see canal.heritage_ranges).
OTHER_HERITAGE_CLASS = "其他"
# The centreline is extended beyond its ends by this multiple of (zone width + boundary half-width), so that
# it cuts the round end caps of a zone in two (a geometric construction, not a rule).
EXTENSION_FACTOR = 1.5
# Segments per quarter circle of buffers (0.16 % area error on round caps; a geometric resolution, not a rule).
QUAD_SEGS = 16
# Channel left outside a management boundary shorter than this is overlay noise where a piece ends on the
# boundary's edge (a numerical tolerance, not a rule).
UNCOVERED_MIN_M = 0.01


def area_units(area_m2: float) -> dict:
    """An area in m², km² and 亩, rounded for reports."""
    return {"area_m2": round(area_m2, 1), "area_km2": round(area_m2 / 1e6, 6), "area_mu": round(area_m2 / M2_PER_MU, 2)}


# --- baselines and banks ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Baseline:
    """One river: its channel pieces in flow direction and, when measured from it, its management boundary.

    A river leaves and re-enters the city, so its channel layer may hold several pieces (the reaches outside
    are not in the layer). Distances are measured from the pieces (or the boundary polygon) only; ``line``
    chains the pieces in flow order with straight connectors and serves only to tell the banks apart."""

    river: str
    pieces: tuple[shapely.LineString, ...]  # in flow order, each in flow direction
    line: shapely.LineString  # the pieces chained (for sides only)
    area: shapely.Geometry | None = None  # river management boundary (polygon), or None
    caveats: tuple[str, ...] = ()

    @functools.cached_property
    def channel(self) -> shapely.Geometry:
        """The channel pieces as one geometry."""
        return self.pieces[0] if len(self.pieces) == 1 else shapely.MultiLineString(self.pieces)

    @functools.cached_property
    def uncovered(self) -> shapely.Geometry | None:
        """The channel outside the management boundary (None without a boundary, empty when it covers all).

        Parts shorter than UNCOVERED_MIN_M (where a piece ends on the boundary's clipped edge) are dropped."""
        if self.area is None:
            return None
        parts = [p for p in shapely.get_parts(shapely.difference(self.channel, self.area))
                 if p.geom_type == "LineString" and p.length >= UNCOVERED_MIN_M]
        return shapely.MultiLineString(parts) if parts else shapely.MultiLineString()

    @functools.cached_property
    def geometry(self) -> shapely.Geometry:
        """What distances are measured from: the boundary polygon and the channel it does not cover, or the
        channel. One object per baseline (prepared once)."""
        if self.area is None:
            return self.channel
        if self.uncovered.is_empty:
            return self.area
        return shapely.GeometryCollection([*shapely.get_parts(self.area), *shapely.get_parts(self.uncovered)])

    @property
    def method(self) -> str:
        return "river_boundary" if self.area is not None else "centreline"

    def measured_from(self, geoms) -> np.ndarray:
        """Per geometry: "river_boundary" where its nearest baseline point is on the boundary polygon,
        "centreline" where it is on the channel (no boundary, or a reach the boundary does not cover)."""
        geoms = np.atleast_1d(np.asarray(geoms, dtype=object))
        if self.area is None:
            return np.full(len(geoms), "centreline", dtype=object)
        if self.uncovered.is_empty:
            return np.full(len(geoms), "river_boundary", dtype=object)
        on_area = shapely.distance(self.area, geoms) <= shapely.distance(self.uncovered, geoms)
        return np.where(on_area, "river_boundary", "centreline").astype(object)

    def splitter(self, width_m: float) -> shapely.LineString:
        """The chained line extended far enough to cut every zone up to width_m into its two banks."""
        return _extended(self.line, EXTENSION_FACTOR * (width_m + self.half_width()))

    def half_width(self) -> float:
        """How far the management boundary reaches from the centreline (its farthest vertex); 0 without one."""
        if self.area is None or self.area.is_empty:
            return 0.0
        return float(shapely.distance(shapely.points(shapely.get_coordinates(self.area)), self.line).max())


def baselines(channels: gpd.GeoDataFrame, rivers: list[str],
              boundaries: gpd.GeoDataFrame | None = None) -> list[Baseline]:
    """One Baseline per river in `rivers` that the channel layer holds (field ``name``).

    Channel pieces are merged in their own direction where they touch; ``boundaries`` (field ``river``), when
    given, are the river management boundary polygons distances are measured from."""
    require_metric(channels=channels)
    if boundaries is not None:
        require_metric(boundaries=boundaries)
    out = []
    for river in rivers:
        geoms = channels.geometry[channels["name"] == river].values
        if not len(geoms):
            continue
        pieces, line, caveats = chain_pieces(river, geoms)
        area = None
        if boundaries is not None and len(boundaries):
            polys = boundaries.geometry[boundaries["river"] == river].values
            if len(polys):
                area = shapely.make_valid(shapely.union_all(polys))
        out.append(Baseline(river, pieces, line, area, tuple(caveats)))
    return out


def chain_pieces(river: str, geoms) -> tuple[tuple[shapely.LineString, ...], shapely.LineString, list[str]]:
    """(pieces in flow order, the pieces chained into one line, caveats) for one river's channel lines."""
    parts = [p for g in geoms for p in shapely.get_parts(g) if not p.is_empty]
    merged = shapely.line_merge(shapely.MultiLineString(parts), directed=True)
    parts = [shapely.remove_repeated_points(p) for p in shapely.get_parts(merged)]
    if len(parts) == 1:
        return (parts[0],), parts[0], []
    starts = np.array([p.coords[0] for p in parts])[:, :2]
    ends = np.array([p.coords[-1] for p in parts])[:, :2]
    # Upstream-most piece: its start is farthest from every other piece's end; then the nearest start next.
    gap_to_start = np.hypot(*(starts[:, None, :] - ends[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(gap_to_start, np.inf)
    order = [int(np.argmax(gap_to_start.min(axis=1)))]
    gaps = []
    while len(order) < len(parts):
        rest = [i for i in range(len(parts)) if i not in order]
        dist = np.hypot(*(starts[rest] - ends[order[-1]]).T)
        k = int(np.argmin(dist))
        gaps.append(float(dist[k]))
        order.append(rest[k])
    pieces = tuple(parts[i] for i in order)
    line = shapely.remove_repeated_points(shapely.LineString(np.vstack([np.asarray(p.coords)[:, :2] for p in pieces])))
    return pieces, line, [f"{river}河道线有 {len(parts)} 段（段间最大间隔 {max(gaps):.0f} 米，多为市界外河段）："
                          "距离只从各段量起，分岸时按流向以直线连接各段"]


def _extended(line: shapely.LineString, length: float) -> shapely.LineString:
    c = np.asarray(line.coords)[:, :2]
    head, tail = c[0] - c[1], c[-1] - c[-2]
    head, tail = head / np.hypot(*head), tail / np.hypot(*tail)
    return shapely.LineString(np.vstack([c[0] + head * length, c, c[-1] + tail * length]))


def side_of(line: shapely.LineString, points) -> np.ndarray:
    """+1 where a point lies left of the line (in its direction), -1 right, 0 on it: side of the nearest segment."""
    c = np.asarray(line.coords)[:, :2]
    seg = np.diff(c, axis=0)
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(seg[:, 0], seg[:, 1]))])
    pts = np.atleast_1d(np.asarray(points, dtype=object))
    if not len(pts):
        return np.zeros(0, dtype=int)
    along = shapely.line_locate_point(line, pts)
    i = np.clip(np.searchsorted(cum, along, side="right") - 1, 0, len(seg) - 1)
    xy = shapely.get_coordinates(shapely.point_on_surface(pts))
    cross = seg[i, 0] * (xy[:, 1] - c[i, 1]) - seg[i, 1] * (xy[:, 0] - c[i, 0])
    return np.sign(cross).astype(int)


def bank_names(sides: np.ndarray) -> np.ndarray:
    return np.where(sides > 0, "left", np.where(sides < 0, "right", "centre"))


def split_banks(baseline: Baseline, width_m: float) -> dict[str, shapely.Geometry]:
    """Everything within width_m of the baseline, cut along the (extended) centreline into its two banks."""
    full = shapely.buffer(baseline.geometry, width_m, quad_segs=QUAD_SEGS)
    cutter = baseline.splitter(width_m)
    pieces = np.asarray(shapely.get_parts(shapely.ops.split(full, cutter)))
    sides = side_of(cutter, shapely.point_on_surface(pieces))
    return {"left": shapely.union_all(pieces[sides > 0]), "right": shapely.union_all(pieces[sides < 0])}


# --- zones ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ZoneSpec:
    kind: str  # village_remediation | green_belt | core_monitoring
    width_m: float
    rivers: tuple[str, ...]  # rivers the zone applies to
    rule_id: str  # the rule its width comes from, e.g. "canal.village_remediation_distance_m"


@dataclass
class ZoneSet:
    frame: gpd.GeoDataFrame  # one row per kind, river, bank, county (EPSG:4548)
    clipped: list[dict]  # per kind, river, bank: the area cut off at the city boundary, and where it lies
    caveats: list[str] = field(default_factory=list)


ZONE_COLUMNS = ["kind", "kind_zh", "river", "bank", "bank_zh", "county", "width_m", "area_m2", "area_km2",
                "area_mu", "rule_id"]


def _polygonal(geom) -> shapely.Geometry:
    """The polygons of an overlay result (intersections and make_valid can add stray lines and points)."""
    parts = [p for p in shapely.get_parts(geom) if p.geom_type == "Polygon" and not p.is_empty]
    return shapely.MultiPolygon(parts) if parts else shapely.MultiPolygon()


def zones(baselines_: list[Baseline], specs: list[ZoneSpec], city: gpd.GeoDataFrame, counties: gpd.GeoDataFrame,
          neighbours: gpd.GeoDataFrame | None = None) -> ZoneSet:
    """Every zone per kind, river, bank and county, clipped to the city (``counties``: fields ``name``).

    What lies outside the city is reported per kind, river and bank with its area and, when ``neighbours``
    (fields ``name``, ``province``) is given, the neighbouring counties it falls in."""
    require_metric(city=city, counties=counties)
    if neighbours is not None:
        require_metric(neighbours=neighbours)
    city_shape = shapely.union_all(city.geometry.values)
    shapely.prepare(city_shape)
    county_geoms = counties.geometry.values
    rows, clipped = [], []
    for spec in specs:
        for b in baselines_:
            if b.river not in spec.rivers:
                continue
            for bank, geom in split_banks(b, spec.width_m).items():
                inside = _polygonal(shapely.intersection(geom, city_shape))
                outside = _polygonal(shapely.difference(geom, city_shape))
                if area_units(outside.area)["area_m2"] > 0:  # more than floating-point noise at report precision
                    clipped.append({"kind": spec.kind, "river": b.river, "bank": bank, **area_units(outside.area),
                                    "outside_in": _where_outside(outside, neighbours)})
                for j in counties.sindex.query(inside, predicate="intersects"):
                    part = _polygonal(shapely.intersection(inside, county_geoms[j]))
                    if part.area > 0:
                        rows.append({"kind": spec.kind, "kind_zh": KIND_ZH[spec.kind], "river": b.river,
                                     "bank": bank, "bank_zh": BANK_ZH[bank], "county": counties["name"].iloc[j],
                                     "width_m": float(spec.width_m), **area_units(part.area),
                                     "rule_id": spec.rule_id, "geometry": part})
    frame = gpd.GeoDataFrame(rows, columns=ZONE_COLUMNS + ["geometry"], geometry="geometry", crs=METRIC_CRS)
    caveats = [c for b in baselines_ for c in b.caveats]
    return ZoneSet(frame, clipped, caveats)


def _where_outside(outside, neighbours) -> list[dict]:
    if neighbours is None or outside.is_empty:
        return []
    found = []
    for j in neighbours.sindex.query(outside, predicate="intersects"):
        area = shapely.intersection(outside, neighbours.geometry.values[j]).area
        if area > 0:
            row = neighbours.iloc[j]
            found.append({"name": f"{row.get('province', '')}{row['name']}", **area_units(area)})
    return sorted(found, key=lambda f: -f["area_m2"])


# --- villages -------------------------------------------------------------------------------------------
VILLAGE_FIELDS = ["name", "code", "township", "township_code", "county", "position_source", "position_uncertainty_m",
                  "demo"]


def villages_within(baselines_: list[Baseline], villages: gpd.GeoDataFrame, distance_m: float) -> gpd.GeoDataFrame:
    """Villages within distance_m (included) of each river's baseline: one row per village and river.

    ``distance_m`` of a row is to the nearest point of the baseline (centreline, or the boundary polygon and
    the channel it does not cover), ``baseline`` which of them that point is on; ``bank``
    the side of the centreline; ``borderline`` is true where the village's position uncertainty could put it
    on the other side of the limit."""
    require_metric(villages=villages)
    pts = villages.geometry.values
    have = [c for c in VILLAGE_FIELDS if c in villages.columns]
    parts = []
    for b in baselines_:
        d = shapely.distance(b.geometry, pts)
        hit = np.flatnonzero(d <= distance_m)
        if not len(hit):
            continue
        rows = pd.DataFrame(villages.iloc[hit][have]).reset_index(drop=True)
        rows["river"] = b.river
        rows["bank"] = bank_names(side_of(b.splitter(distance_m), pts[hit]))
        rows["distance_m"] = np.round(d[hit], 1)
        rows["baseline"] = b.measured_from(pts[hit])
        rows["geometry"] = pts[hit]
        parts.append(rows)
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=have + ["river", "bank",
                                                                                       "distance_m", "baseline",
                                                                                       "geometry"])
    for col in VILLAGE_FIELDS:
        if col not in out.columns:
            out[col] = None
    unc = pd.to_numeric(out["position_uncertainty_m"], errors="coerce")
    out["borderline"] = (unc.notna() & ((out["distance_m"] - distance_m).abs() <= unc)).astype(bool)
    out = out.sort_values(["river", "county", "distance_m"], kind="stable").reset_index(drop=True)
    return gpd.GeoDataFrame(out, geometry="geometry", crs=METRIC_CRS)


# --- green corridor width -------------------------------------------------------------------------------
STATION_COLUMNS = ["river", "bank", "county", "piece", "piece_from_m", "from_m", "to_m", "length_m", "width_m",
                   "inner_m"]


def corridor_widths(baselines_: list[Baseline], corridors: gpd.GeoDataFrame, counties: gpd.GeoDataFrame,
                    spacing_m: float, probe_m: float, band_m: float) -> gpd.GeoDataFrame:
    """The corridor width on each bank, measured perpendicular to the channel every spacing_m.

    Along each channel piece, station i covers i·spacing_m to (i+1)·spacing_m (the last one is shorter) and is
    measured at its middle: a ray from the centreline, perpendicular to the channel there (the direction
    between the station's ends), probe_m long on that bank. Its width is the length of the ray inside that
    river's and bank's corridor polygons (fields ``river``, ``bank``): 0 in a gap. ``from_m``/``to_m`` are
    chainages along the river's pieces in flow order (reaches outside the layer not counted).

    ``inner_m`` is where the required band starts on that bank, measured from the centreline along the ray:
    the edge of the river management boundary where the ray crosses one (the corridor belongs outside the
    management area), otherwise the near edge of the corridor on the ray (in the demo data: half the water
    surface), and at stations with neither (a gap) the median of that river's and bank's other stations (0 if
    it has none). The station's county is the county containing the point band_m/2 beyond inner_m (the middle
    of the required band); None outside the city (the other side of a boundary river)."""
    require_metric(corridors=corridors, counties=counties)
    frames = []
    names = counties["name"].to_numpy()
    for b in baselines_:
        shapes = {}
        for bank in ("left", "right"):
            mine = corridors.geometry[(corridors["river"] == b.river) & (corridors["bank"] == bank)].values
            shapes[bank] = shapely.union_all(shapely.make_valid(mine)) if len(mine) else None
            if shapes[bank] is not None:
                shapely.prepare(shapes[bank])
        chainage = 0.0
        for k, piece in enumerate(b.pieces):
            length = piece.length
            n = max(1, math.ceil(length / spacing_m))
            start = np.arange(n) * spacing_m
            end = np.minimum(start + spacing_m, length)
            at = shapely.get_coordinates(shapely.line_interpolate_point(piece, (start + end) / 2))
            tangent = (shapely.get_coordinates(shapely.line_interpolate_point(piece, end))
                       - shapely.get_coordinates(shapely.line_interpolate_point(piece, start)))
            tangent /= np.hypot(tangent[:, 0], tangent[:, 1])[:, None]
            left_normal = np.column_stack([-tangent[:, 1], tangent[:, 0]])
            for bank, sign in (("left", 1.0), ("right", -1.0)):
                normal = sign * left_normal
                rays = shapely.linestrings(np.stack([at, at + normal * probe_m], axis=1))
                shape = shapes[bank]
                inside = shapely.intersection(rays, shape) if shape is not None else None
                width = shapely.length(inside) if inside is not None else np.zeros(n)
                inner = np.full(n, np.nan)
                if inside is not None:  # the corridor's near edge on the ray
                    has = width > 0
                    inner[has] = shapely.distance(shapely.points(at[has]), inside[has])
                if b.area is not None:  # the management boundary's edge, where the ray starts inside it
                    edge = shapely.length(shapely.intersection(rays, b.area))
                    inner = np.where(edge > 0, edge, inner)
                frames.append(dict(river=b.river, bank=bank, piece=k, piece_from_m=start, from_m=chainage + start,
                                   to_m=chainage + end, length_m=end - start, width_m=np.round(width, 3),
                                   inner_m=inner, at=at, normal=normal, rays=rays))
            chainage += length
    if not frames:
        return gpd.GeoDataFrame(columns=STATION_COLUMNS + ["geometry"], geometry="geometry", crs=METRIC_CRS)
    out = []
    for f in frames:
        known = np.concatenate([g["inner_m"] for g in frames if (g["river"], g["bank"]) == (f["river"], f["bank"])])
        known = known[~np.isnan(known)]
        inner = np.where(np.isnan(f["inner_m"]), float(np.median(known)) if len(known) else 0.0, f["inner_m"])
        probe = shapely.points(f["at"] + f["normal"] * (inner + band_m / 2)[:, None])
        county = np.full(len(inner), None, dtype=object)
        where, which = counties.sindex.query(probe, predicate="within")
        county[where] = names[which]
        out.append(gpd.GeoDataFrame({
            "river": f["river"], "bank": f["bank"], "county": county, "piece": f["piece"],
            "piece_from_m": f["piece_from_m"], "from_m": f["from_m"], "to_m": f["to_m"], "length_m": f["length_m"],
            "width_m": f["width_m"], "inner_m": np.round(inner, 3)}, geometry=f["rays"], crs=METRIC_CRS))
    return pd.concat(out, ignore_index=True)


@dataclass
class Shortfalls:
    sections: gpd.GeoDataFrame  # consecutive stations under the minimum, per river, bank and county
    summary: pd.DataFrame  # per river, bank and county: measured, short and gap lengths, missing area
    stations_outside: int  # stations whose bank lies outside the city (not measured)


def shortfalls(stations: gpd.GeoDataFrame, baselines_: list[Baseline], min_width_m: float) -> Shortfalls:
    """Sections narrower than min_width_m (widths equal to it comply: 以上 includes the number).

    Length missing is the length of the short stations; area missing is Σ (min_width_m − width) × length.
    Widths are compared rounded to the millimetre (the ray intersection's floating-point noise). A section's
    geometry is the required band along it: from the river's edge (the median ``inner_m`` of its stations, see
    corridor_widths) min_width_m outwards on its bank, not from the centreline (the water or the management
    area is no place for the corridor)."""
    inside = stations[stations["county"].notna()].sort_values(["river", "bank", "from_m"]).reset_index(drop=True)
    short = inside["width_m"].to_numpy() < min_width_m
    deficit = np.where(short, min_width_m - inside["width_m"].to_numpy(), 0.0)
    inside = inside.assign(short=short, missing_m2=deficit * inside["length_m"].to_numpy(),
                           gap_m=np.where(inside["width_m"].to_numpy() == 0, inside["length_m"].to_numpy(), 0.0))
    key = inside[["river", "bank", "county", "piece", "short"]].astype(str).agg("|".join, axis=1)
    follows = pd.Series(np.isclose(inside["from_m"], inside["to_m"].shift()), index=inside.index)
    contiguous = follows & key.eq(key.shift())
    inside["run"] = (~contiguous).cumsum()
    lines = {b.river: b for b in baselines_}
    sections = []
    for _, run in inside[inside["short"]].groupby("run", sort=True):
        first = run.iloc[0]
        piece = lines[first["river"]].pieces[int(first["piece"])]
        a, z = float(run["from_m"].iloc[0]), float(run["to_m"].iloc[-1])
        local = float(run["piece_from_m"].iloc[0])
        band = required_band(shapely.ops.substring(piece, local, local + (z - a)), first["bank"],
                             float(run["inner_m"].median()), min_width_m)
        length = float(run["length_m"].sum())
        sections.append({
            "river": first["river"], "bank": first["bank"], "bank_zh": BANK_ZH[first["bank"]],
            "county": first["county"], "from_m": round(a, 1), "to_m": round(z, 1), "length_m": round(length, 1),
            "gap_length_m": round(float(run["gap_m"].sum()), 1), "min_width_m": float(run["width_m"].min()),
            "mean_width_m": round(float((run["width_m"] * run["length_m"]).sum() / length), 2),
            "missing_area_m2": round(float(run["missing_m2"].sum()), 1),
            "missing_area_mu": round(float(run["missing_m2"].sum()) / M2_PER_MU, 2), "stations": len(run),
            "geometry": band})
    section_frame = gpd.GeoDataFrame(sections, columns=[
        "river", "bank", "bank_zh", "county", "from_m", "to_m", "length_m", "gap_length_m", "min_width_m",
        "mean_width_m", "missing_area_m2", "missing_area_mu", "stations", "geometry"], geometry="geometry",
        crs=METRIC_CRS)
    grouped = inside.assign(short_m=np.where(short, inside["length_m"], 0.0)).groupby(
        ["river", "bank", "county"], sort=True)
    summary = grouped.agg(measured_length_m=("length_m", "sum"), shortfall_length_m=("short_m", "sum"),
                          gap_length_m=("gap_m", "sum"), missing_area_m2=("missing_m2", "sum")).reset_index()
    summary["missing_area_mu"] = (summary["missing_area_m2"] / M2_PER_MU).round(2)
    summary["sections"] = [int(((section_frame["river"] == r) & (section_frame["bank"] == k)
                                & (section_frame["county"] == c)).sum())
                           for r, k, c in zip(summary["river"], summary["bank"], summary["county"])]
    summary["bank_zh"] = summary["bank"].map(BANK_ZH)
    for col in ("measured_length_m", "shortfall_length_m", "gap_length_m", "missing_area_m2"):
        summary[col] = summary[col].round(1)
    return Shortfalls(section_frame, summary, int(stations["county"].isna().sum()))


def required_band(line: shapely.LineString, bank: str, inner_m: float, width_m: float) -> shapely.Geometry:
    """The strip beside ``line`` on ``bank`` from inner_m to inner_m + width_m off it (single-sided offsets)."""
    sign = 1.0 if bank == "left" else -1.0
    outer = shapely.buffer(line, sign * (inner_m + width_m), single_sided=True)
    if inner_m <= 0:
        return outer
    parts = _polygonal(shapely.difference(outer, shapely.buffer(line, sign * inner_m, single_sided=True))).geoms
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(list(parts))


# --- farmland conflicts ---------------------------------------------------------------------------------
@dataclass
class Conflicts:
    land_use: pd.DataFrame  # county, category (耕地 / 永久基本农田), area
    plots: pd.DataFrame  # dkbm, village_code, county, is_basic_farmland, plot and conflict area
    villages: pd.DataFrame  # village_code, village, county, plots, conflict area
    counties: pd.DataFrame  # county, cultivated / basic farmland / contracted-plot area in conflict
    corridor_area_m2: float


def farmland_conflicts(corridor: gpd.GeoDataFrame, land_use: gpd.GeoDataFrame, plots: gpd.GeoDataFrame,
                       cultivated_classes: list[str], basic_classes: list[str], county_names: dict,
                       village_names: dict) -> Conflicts:
    """Green corridor ∩ cultivated land, permanent basic farmland and contracted plots.

    ``land_use``: ``class_name``, ``is_basic_farmland``, ``county``; basic farmland is a class in basic_classes
    or a row flagged is_basic_farmland, cultivated land a class in cultivated_classes. ``plots``: ``dkbm``,
    ``village_code``, ``county_adcode``, ``is_basic_farmland`` (pass no personal fields: none are needed). The
    corridor is dissolved first, so overlapping corridor polygons are not counted twice; only plots whose
    R-tree envelope meets a corridor part are intersected."""
    require_metric(corridor=corridor, land_use=land_use, plots=plots)
    parts = np.asarray(shapely.get_parts(_polygonal(shapely.union_all(shapely.make_valid(corridor.geometry.values)))))
    flagged = land_use["is_basic_farmland"].fillna(False).astype(bool).to_numpy()
    basic = land_use["class_name"].isin(basic_classes).to_numpy() | flagged
    cultivated = land_use["class_name"].isin(cultivated_classes).to_numpy() & ~basic
    farmland = land_use[basic | cultivated].assign(category=np.where(basic, "永久基本农田", "耕地")[basic | cultivated])
    lu_area = _overlap(parts, farmland)
    touched = farmland.assign(area_m2=lu_area)[lu_area > 0]
    land = touched.groupby(["county", "category"], as_index=False)["area_m2"].sum()
    land["area_mu"] = (land["area_m2"] / M2_PER_MU).round(2)
    land["area_m2"] = land["area_m2"].round(1)

    plot_area = _overlap(parts, plots)
    hit = plot_area > 0
    plot_rows = pd.DataFrame({
        "dkbm": plots["dkbm"].to_numpy()[hit], "village_code": plots["village_code"].to_numpy()[hit],
        "county": [county_names.get(_int(a)) for a in plots["county_adcode"].to_numpy()[hit]],
        "is_basic_farmland": plots["is_basic_farmland"].fillna(False).astype(bool).to_numpy()[hit],
        "plot_area_m2": np.round(shapely.area(plots.geometry.values[hit]), 1),
        "conflict_m2": plot_area[hit]})
    plot_rows["conflict_mu"] = (plot_rows["conflict_m2"] / M2_PER_MU).round(2)
    plot_rows = plot_rows.sort_values("conflict_m2", ascending=False, kind="stable").reset_index(drop=True)

    villages = plot_rows.groupby(["village_code", "county"], as_index=False, dropna=False).agg(
        plots=("dkbm", "size"), conflict_m2=("conflict_m2", "sum"))
    villages.insert(1, "village", villages["village_code"].map(village_names))
    villages["conflict_mu"] = (villages["conflict_m2"] / M2_PER_MU).round(2)
    villages = villages.sort_values("conflict_m2", ascending=False, kind="stable").reset_index(drop=True)

    per_county = land.pivot_table(index="county", columns="category", values="area_m2", aggfunc="sum", fill_value=0.0)
    counties = pd.DataFrame({
        "cultivated_m2": per_county.get("耕地", pd.Series(dtype=float)),
        "basic_farmland_m2": per_county.get("永久基本农田", pd.Series(dtype=float))})
    counties = counties.join(plot_rows.groupby("county").agg(plots=("dkbm", "size"), plots_m2=("conflict_m2", "sum")),
                             how="outer").fillna(0.0).reset_index(names="county")
    for col in ("cultivated_m2", "basic_farmland_m2", "plots_m2"):
        counties[col.replace("_m2", "_mu")] = (counties[col] / M2_PER_MU).round(2)
        counties[col] = counties[col].round(1)
    counties["plots"] = counties["plots"].astype(int)
    return Conflicts(land, plot_rows, villages, counties, float(sum(p.area for p in parts)))


def _overlap(parts: np.ndarray, frame: gpd.GeoDataFrame) -> np.ndarray:
    """Area of each row of frame inside the corridor parts, via the frame's R-tree (candidates only), to the
    0.1 m² reported: a row that merely touches or meets the corridor in a sliver below that has none."""
    area = np.zeros(len(frame))
    if not len(parts) or not len(frame):
        return area
    which, rows = frame.sindex.query(parts, predicate="intersects")
    if len(rows):
        np.add.at(area, rows, shapely.area(shapely.intersection(parts[which], frame.geometry.values[rows])))
    return np.round(area, 1)


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# --- inside the city? -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CityCoverage:
    """How a geometry lies with respect to the city boundary."""

    touches_city: bool  # any part inside or on the boundary
    within_city: bool  # every part inside or on the boundary
    distance_m: float  # to the city (0 when it touches it)
    outside_share: float  # share of the area (polygons), length (lines) or points outside the city
    outside_in: tuple[str, ...]  # neighbouring districts the part outside lies in ("北京市通州区" …), largest first


def city_coverage(geom: shapely.Geometry, city: shapely.Geometry,
                  neighbours: gpd.GeoDataFrame | None = None) -> CityCoverage:
    """Where ``geom`` lies with respect to ``city`` (both EPSG:4548); ``neighbours`` (fields ``name``,
    ``province``) name the districts the part outside falls in."""
    if neighbours is not None:
        require_metric(neighbours=neighbours)
    if city.covers(geom):
        return CityCoverage(True, True, 0.0, 0.0, ())
    outside = shapely.difference(geom, city)
    dim = shapely.get_dimensions(geom)
    measure = shapely.area if dim == 2 else shapely.length if dim == 1 else shapely.get_num_geometries
    total = float(measure(geom))
    share = float(measure(outside)) / total if total > 0 else 1.0
    found = []
    if neighbours is not None and len(neighbours):
        for j in neighbours.sindex.query(outside, predicate="intersects"):
            part = shapely.intersection(outside, neighbours.geometry.values[j])
            row = neighbours.iloc[j]
            found.append((-float(measure(part)), f"{row.get('province', '') or ''}{row['name']}"))
    touches = city.intersects(geom)
    return CityCoverage(touches, False, 0.0 if touches else float(shapely.distance(city, geom)), min(share, 1.0),
                        tuple(name for _, name in sorted(found)))


# --- siting verdict -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SitingRules:
    """What a verdict needs from the rule file: values and, per rule id, its key and citation."""

    verdicts: dict  # situation -> allowed | needs_review | prohibited, control_zones -> {kind: …} (canal.siting_verdicts)
    heritage_ranges: dict  # heritage class -> {protection_m, construction_control_m}
    negative_list: list  # [{sector, title_zh, action, source}]
    citations: dict  # rule id -> (key "canal.<id>", citation)


CONTROL_FIELDS = ["zone_id", "name", "kind", "version", "author", "updated_at"]


@dataclass
class PreparedZones:
    """Zones ready for many checks: an STR-tree over them, their union, and the baselines by river; and the
    control zones drawn by planners (``control``: fields CONTROL_FIELDS, EPSG:4548) with their own STR-tree."""

    frame: gpd.GeoDataFrame
    tree: shapely.STRtree
    union: shapely.Geometry
    baselines: dict
    control: gpd.GeoDataFrame | None = None
    control_tree: shapely.STRtree | None = None
    control_union: shapely.Geometry | None = None

    @classmethod
    def build(cls, frame: gpd.GeoDataFrame, baselines_: list[Baseline]) -> "PreparedZones":
        require_metric(zones=frame)
        geoms = frame.geometry.values
        shapely.prepare(geoms)
        union = shapely.union_all(geoms)
        shapely.prepare(union)
        for b in baselines_:
            shapely.prepare(b.geometry)
        return cls(frame, shapely.STRtree(geoms), union, {b.river: b for b in baselines_})

    def with_control(self, control: gpd.GeoDataFrame | None) -> "PreparedZones":
        """The same zones plus the planners' control zones (None or empty: none)."""
        if control is None or not len(control):
            return dataclasses.replace(self, control=None, control_tree=None, control_union=None)
        require_metric(control_zones=control)
        geoms = control.geometry.values
        shapely.prepare(geoms)
        union = shapely.union_all(geoms)
        shapely.prepare(union)
        return dataclasses.replace(self, control=control.reset_index(drop=True), control_tree=shapely.STRtree(geoms),
                                   control_union=union)


@dataclass
class Verdict:
    verdict: str
    verdict_zh: str
    reasons: list[dict]
    zones: list[dict]
    heritage: list[dict]
    negative_list: list[dict]
    nearest_zone_edge_m: float | None
    caveats: list[str]
    control_zones: list[dict] = field(default_factory=list)


def _heritage_class(value, table: dict) -> str:
    return value if isinstance(value, str) and value in table else OTHER_HERITAGE_CLASS


WIDTH_RULES = ("village_remediation_distance_m", "green_corridor_min_width_m", "core_monitoring_zone_width_m")


def check_siting(geom: shapely.Geometry, zones_: PreparedZones, heritage: gpd.GeoDataFrame, rules: SitingRules,
                 sector: dict | None) -> Verdict:
    """The verdict for a proposed project (geometry in EPSG:4548): every zone, control zone and heritage range it
    touches, the negative-list entry of its sector, and the strictest verdict with all reasons.

    ``sector`` is an entry of the negative list, ``{"sector": "other"}`` for a sector not on it, or None when
    the caller did not say (then a project in the core monitoring zone needs review). ``heritage``: fields
    ``name`` and, where known, ``heritage_class`` and ``location_uncertainty_m``.

    Each reason names the rule its threshold or zone comes from (``rule_id``, ``clause``) and the rule that
    sets its verdict level (``verdict_rule_id`` = canal.siting_verdicts, ``verdict_situation`` its key there,
    ``verdict_clause``); for a negative-list sector the level is the entry's action (situation
    ``negative_list``). A control zone's verdict is canal.siting_verdicts.control_zones[kind]; a drawn core
    monitoring zone also applies the negative list as the computed one does."""
    require_metric(heritage=heritage)
    v = rules.verdicts
    reasons: dict[tuple, dict] = {}
    verdict_key, verdict_citation = rules.citations["siting_verdicts"]

    def reason(rule_id: str, verdict: str, situation: str, text: str, clause: str | None = None):
        key, citation = rules.citations[rule_id]
        reasons.setdefault((key, text), {"rule_id": key, "clause": clause or citation, "verdict": verdict,
                                         "text_zh": text, "verdict_rule_id": verdict_key,
                                         "verdict_situation": situation, "verdict_clause": verdict_citation})

    def negative_list_reason(place: str):
        reason("negative_list", sector["action"], "negative_list",
               f"行业“{sector['title_zh']}”列入大运河核心监控区负面清单，项目位于{place}内",
               clause=f"{rules.citations['negative_list'][1]}；本项来源：{sector['source']}")

    zone_hits, distances = [], {}
    for i in sorted(zones_.tree.query(geom, predicate="intersects")):
        z = zones_.frame.iloc[i]
        b = zones_.baselines[z["river"]]
        if z["river"] not in distances:
            distances[z["river"]] = (round(float(shapely.distance(b.geometry, geom)), 1),
                                     str(b.measured_from([geom])[0]))
        d, baseline = distances[z["river"]]
        zone_hits.append({"kind": z["kind"], "kind_zh": z["kind_zh"], "river": z["river"], "bank": z["bank"],
                          "bank_zh": z["bank_zh"], "county": z["county"], "width_m": z["width_m"],
                          "distance_to_channel_m": d, "baseline": baseline, "baseline_zh": BASELINE_ZH[baseline]})
        rule_id = z["rule_id"].split(".", 1)[1]
        where = f"{z['river']}{z['bank_zh']}"
        from_ = f"距{BASELINE_ZH[baseline]} {d:g} 米"
        if z["kind"] == "village_remediation":
            reason(rule_id, v["village_remediation"], "village_remediation",
                   f"位于{where}河道两侧 {z['width_m']:g} 米村庄环境综合整治范围内（{from_}）")
        elif z["kind"] == "green_belt":
            reason(rule_id, v["green_belt"], "green_belt", f"占用{where}宽 {z['width_m']:g} 米的绿色廊道景观带（{from_}）")
        elif sector is None:
            reason(rule_id, v["core_monitoring_sector_unknown"], "core_monitoring_sector_unknown",
                   f"位于{where}生态空间核心监控区（{z['width_m']:g} 米）内，未说明项目行业，须对照负面清单审查")
        elif sector.get("action") is None:
            reason(rule_id, v["core_monitoring_sector_not_listed"], "core_monitoring_sector_not_listed",
                   f"位于{where}生态空间核心监控区（{z['width_m']:g} 米）内，项目行业不在负面清单上")
        else:
            negative_list_reason(f"{where}核心监控区")

    control_hits = []
    if zones_.control_tree is not None:
        for i in sorted(zones_.control_tree.query(geom, predicate="intersects")):
            c = zones_.control.iloc[i]
            kind = c["kind"] if c["kind"] in CONTROL_KIND_ZH else "other"
            verdict = v["control_zones"][kind]
            hit = {"zone_id": int(c["zone_id"]), "name": c["name"], "kind": kind, "kind_zh": CONTROL_KIND_ZH[kind],
                   "version": int(c["version"]), "author": c["author"], "updated_at": c["updated_at"],
                   "verdict": verdict}
            control_hits.append(hit)
            reason("siting_verdicts", verdict, f"control_zones.{kind}",
                   f"位于规划管控区“{hit['name']}”（{hit['kind_zh']}，编号 {hit['zone_id']}，第 {hit['version']} 版，"
                   f"{hit['author']} 保存于 {hit['updated_at']}）内，该类管控区判{VERDICT_ZH[verdict]}")
            if kind == "core_monitoring" and sector is not None and sector.get("action"):
                negative_list_reason(f"规划管控区“{hit['name']}”（{hit['kind_zh']}）")
    listed = []
    in_core = any(z["kind"] == "core_monitoring" for z in zone_hits) or any(
        c["kind"] == "core_monitoring" for c in control_hits)
    if sector is not None and sector.get("action") and in_core:
        listed.append({"sector": sector["sector"], "title_zh": sector["title_zh"], "action": sector["action"],
                       "clause": sector["source"]})

    heritage_hits, caveats = [], []
    if len(heritage):
        dist = shapely.distance(heritage.geometry.values, geom)
        for j in np.argsort(dist, kind="stable"):
            row = heritage.iloc[j]
            cls = row.get("heritage_class")
            ranges = rules.heritage_ranges[_heritage_class(cls, rules.heritage_ranges)]
            d = float(dist[j])
            if d <= ranges["protection_m"]:
                where, situation = "protection", "heritage_protection"
                text = f"位于{row['name']}保护范围（{ranges['protection_m']:g} 米）内，距遗产点 {d:.0f} 米"
            elif d <= ranges["construction_control_m"]:
                where, situation = "construction_control", "heritage_construction_control"
                text = f"位于{row['name']}建设控制地带（{ranges['construction_control_m']:g} 米）内，距遗产点 {d:.0f} 米"
            else:
                continue
            uncertainty = _float(row.get("location_uncertainty_m"))
            heritage_hits.append({"name": row["name"], "heritage_class": cls if isinstance(cls, str) else None,
                                  "range": where, "distance_m": round(d, 1), "location_uncertainty_m": uncertainty})
            reason("heritage_ranges", v[situation], situation, text)
            if uncertainty is not None and uncertainty > ranges["protection_m"]:
                caveats.append(f"{row['name']}的定位不确定度约 {uncertainty:g} 米，大于其保护范围半径，结论仅供初筛")

    nearest = None
    if not zone_hits and not control_hits:
        edges = []
        if not zones_.union.is_empty:
            edges.append((float(shapely.distance(zones_.union, geom)), "运河管控分区"))
        if zones_.control_union is not None:
            edges.append((float(shapely.distance(zones_.control_union, geom)), "规划管控区"))
        if edges:
            d, which = min(edges)
            nearest = round(d, 1)
            text = f"不在任何运河管控分区内（含规划管控区），距最近分区边界 {nearest:g} 米（{which}）"
        else:
            text = "不在任何运河管控分区内（含规划管控区）"
        widths = "、".join(rules.citations[r][0] for r in WIDTH_RULES)
        reason("siting_verdicts", v["outside_every_zone"], "outside_every_zone", text,
               clause=f"{verdict_citation}；各分区宽度见 {widths}")
    found = list(reasons.values())
    verdict = max((r["verdict"] for r in found), key=VERDICT_RANK.__getitem__, default="allowed")
    found.sort(key=lambda r: -VERDICT_RANK[r["verdict"]])
    return Verdict(verdict, VERDICT_ZH[verdict], found, zone_hits, heritage_hits, listed, nearest, caveats,
                   control_hits)


def _float(value) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f
