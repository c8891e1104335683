"""四至 from geometry: the neighbour on each side of every plot, compared with the recorded DKDZ/DKXZ/DKNZ/DKBZ.

What counts as adjoining (rules ``land.boundary_tolerance_m``, ``land.boundary_min_share`` and
``land.boundary_features``): the *probe* of a plot's east side is the part of the plot shifted east by the
tolerance that lies outside the plot itself — a strip as wide as the tolerance along the plot's east edge
(for a rectangle exactly ``[maxx, maxx + tol] × [miny, maxy]``; for any other shape the strip outside the
edges whose outward normal points within 45° of east, so that a turned plot's sides follow its own edges). The neighbour on that side is the feature covering the largest part of the probe's *length*
(the extent of probe ∩ feature along the side over the probe's extent, so a neighbour beyond a 2 m ridge
covers the whole side): another plot (named by its contractor, as NY/T 2539 records 四至), or a feature of
the layers listed in ``land.boundary_features`` (ditches and rivers buffered to their width, built-up land,
water …). A neighbour must cover at least ``boundary_min_share`` of the side; otherwise the side is 其他
(nothing mapped adjoins it: a field road, a ridge or open land that no layer holds). A diagonal neighbour
touches a probe at a corner only (no area) and never counts. Everything is measured in metres (EPSG:4548) and
vectorised: one STRtree query of all probes against each feature set; axis-aligned rectangles (the usual
strip field) are intersected from their bounds, other shapes with one vectorised GEOS intersection.

Recorded 四至 are compared as text: a side matches when the recorded text names the computed neighbour —
its contractor's name or its DKBM for a plot, its feature name or one of the words of its kind (路/道路 …,
``land.boundary_kind_words``) for a mapped feature, one of the 其他 words for an unmapped side. A side where
nothing mapped adjoins — or a plot adjoins less than ``land.boundary_dominant_share`` of it — but the record
names a kind of feature (道路, 沟渠 …) is *unverified*: no layer holds field roads, so the geometry cannot
contradict it. An empty record is *unrecorded*; anything else a *mismatch*
(a neighbour's name where no plot adjoins, another contractor's name, a road where a plot adjoins …).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from ..crs import require_metric

SIDES = (("east", "dkdz", "东", (1.0, 0.0)), ("west", "dkxz", "西", (-1.0, 0.0)),
         ("south", "dknz", "南", (0.0, -1.0)), ("north", "dkbz", "北", (0.0, 1.0)))
PLOT_KIND = "地块"
OTHER_KIND = "其他"


# Mapped features are cut into pieces no larger than this (lines into segments, polygons along a grid) so that
# a probe is tested against a small piece, not a whole river; pieces of one feature are merged again per probe
# (the covered extent runs from the lowest to the highest piece), so results do not depend on it.
TILE_M = 500.0


@dataclass(frozen=True)
class FeatureSet:
    """Mapped features that can bound a plot, as small polygon pieces, each with its feature's label."""

    kind: str  # 沟渠, 河流, 道路, 建设用地 …
    geometries: np.ndarray  # pieces, in EPSG:4548
    labels: np.ndarray  # the piece's feature name (or the kind when it has none)
    owner: np.ndarray  # the feature each piece belongs to


def _segments(lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every line split into its straight segments: (segments, index of the line each comes from)."""
    parts, part_of = shapely.get_parts(lines, return_index=True)
    coords, ring = shapely.get_coordinates(parts, return_index=True)
    same = ring[1:] == ring[:-1]
    starts, ends = coords[:-1][same], coords[1:][same]
    segs = shapely.linestrings(np.stack([starts, ends], axis=1))
    return segs, part_of[ring[:-1][same]]


def _tiles(polygons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Polygons cut along a TILE_M grid: (pieces, index of the polygon each comes from)."""
    from shapely import STRtree

    if not len(polygons):
        return polygons, np.zeros(0, dtype=np.int64)
    x0, y0, x1, y1 = shapely.total_bounds(polygons)
    xs = np.arange(np.floor(x0 / TILE_M) * TILE_M, x1 + TILE_M, TILE_M)
    ys = np.arange(np.floor(y0 / TILE_M) * TILE_M, y1 + TILE_M, TILE_M)
    gx, gy = np.meshgrid(xs[:-1], ys[:-1])
    cells = shapely.box(gx.ravel(), gy.ravel(), gx.ravel() + TILE_M, gy.ravel() + TILE_M)
    pi, ci = STRtree(cells).query(polygons, predicate="intersects")
    pieces = shapely.intersection(polygons[pi], cells[ci])
    keep = shapely.area(pieces) > 0
    return pieces[keep], pi[keep]


def feature_set(kind: str, frame: gpd.GeoDataFrame, name_field: str | None = None, width_m: float = 0.0,
                where: dict | None = None) -> FeatureSet:
    """A FeatureSet from a layer frame in metres; lines and points are buffered to half their width."""
    require_metric(frame=frame)
    if where:
        keep = np.ones(len(frame), dtype=bool)
        for column, value in where.items():
            keep &= (frame[column] == value).to_numpy()
        frame = frame.loc[keep]
    geoms = np.asarray(frame.geometry.values, dtype=object)
    names = frame[name_field].astype(object).to_numpy() if name_field and name_field in frame else None
    labels = np.array([n if isinstance(n, str) and n.strip() else kind
                       for n in (names if names is not None else [None] * len(frame))], dtype=object)
    dims = shapely.get_dimensions(geoms)
    pieces, owner = [], []
    lines = np.flatnonzero(dims == 1)
    if len(lines) and width_m > 0:
        segs, of = _segments(geoms[lines])
        pieces.append(shapely.buffer(segs, width_m / 2))
        owner.append(lines[of])
    points = np.flatnonzero(dims == 0)
    if len(points) and width_m > 0:
        pieces.append(shapely.buffer(geoms[points], width_m / 2))
        owner.append(points)
    areas = np.flatnonzero(dims == 2)
    if len(areas):
        tiles, of = _tiles(geoms[areas])
        pieces.append(tiles)
        owner.append(areas[of])
    geometries = np.concatenate(pieces) if pieces else np.empty(0, dtype=object)
    owner_ = np.concatenate(owner) if owner else np.zeros(0, dtype=np.int64)
    return FeatureSet(kind, geometries, labels[owner_], owner_)


def _rectangles(geoms: np.ndarray) -> np.ndarray:
    """True for axis-aligned rectangles (area equals the bounding box's): their probes and overlaps are boxes,
    computed from the bounds alone (the common case: strip fields surveyed along the grid)."""
    b = shapely.bounds(geoms)
    box_area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return (shapely.get_type_id(geoms) == 3) & (np.abs(shapely.area(geoms) - box_area) <= 1e-9 * box_area)


def probes(geoms: np.ndarray, tolerance_m: float, direction: tuple[float, float],
           rect: np.ndarray | None = None) -> np.ndarray:
    """The strip of width tolerance_m along each geometry's side facing `direction` (see the module doc)."""
    rect = _rectangles(geoms) if rect is None else rect
    dx, dy = direction[0] * tolerance_m, direction[1] * tolerance_m
    out = np.empty(len(geoms), dtype=object)
    b = shapely.bounds(geoms[rect])
    x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    if dx > 0:
        x0, x1 = x1, x1 + dx
    elif dx < 0:
        x0, x1 = x0 + dx, x0
    elif dy > 0:
        y0, y1 = y1, y1 + dy
    else:
        y0, y1 = y0 + dy, y0
    out[rect] = shapely.box(x0, y0, x1, y1)
    out[~rect] = _edge_probes(geoms[~rect], tolerance_m, direction)
    return out


def _edge_probes(geoms: np.ndarray, tolerance_m: float, direction: tuple[float, float]) -> np.ndarray:
    """For shapes other than axis-aligned rectangles: the strip of width tolerance_m outside the edges of the
    exterior ring whose outward normal lies within 45° of `direction` (a side is the edges facing it, so a plot
    turned 30° has its short end as its north side, not the long edge facing east-north-east). An edge at
    exactly 45° belongs to both sides. Polygons with no edge facing `direction` get an empty probe."""
    out = np.full(len(geoms), shapely.Polygon(), dtype=object)
    if not len(geoms):
        return out
    rings = shapely.get_exterior_ring(geoms)
    rings = np.where(shapely.is_ccw(rings), rings, shapely.reverse(rings))  # counter-clockwise: outside on the right
    coords, ring = shapely.get_coordinates(rings, return_index=True)
    same = ring[1:] == ring[:-1]
    p0, p1, of = coords[:-1][same], coords[1:][same], ring[:-1][same]
    d = p1 - p0
    length = np.hypot(d[:, 0], d[:, 1])
    facing = (d[:, 1] * direction[0] - d[:, 0] * direction[1]) >= length * (np.sqrt(0.5) - 1e-9)
    keep = facing & (length > 0)
    if not keep.any():
        return out
    segs = shapely.linestrings(np.stack([p0[keep], p1[keep]], axis=1))
    owners, index = np.unique(of[keep], return_inverse=True)
    lines = shapely.multilinestrings(segs, indices=index)
    strips = shapely.buffer(lines, -tolerance_m, single_sided=True, cap_style="flat", join_style="mitre")
    out[owners] = shapely.difference(strips, geoms[owners])
    return out


def _best(probe_geoms: np.ndarray, probe_rect: np.ndarray, axis: int, candidates: np.ndarray, exclude_self: bool,
          min_share: float, owner: np.ndarray | None = None, adjoining: list | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """For each probe: (index of the candidate covering most of its length or -1, that share). Candidates with
    the same ``owner`` are pieces of one feature: their extents are merged (lowest to highest) first.

    The share is the extent of probe ∩ candidate along the side (axis 1: y for east/west sides, 0: x for
    north/south) over the probe's extent: a neighbour beyond a 2 m ridge covers the whole side (share 1)."""
    from shapely import STRtree

    n = len(probe_geoms)
    best, share = np.full(n, -1, dtype=np.int64), np.zeros(n)
    if not len(candidates) or not n:
        return best, share
    cand_rect = _rectangles(candidates)
    # envelopes only when everything is a box (exact from the bounds below); else GEOS' intersects first, so
    # that the costlier intersection runs on true hits only
    pi, ci = STRtree(candidates).query(probe_geoms, predicate=None if cand_rect.all() and probe_rect.all()
                                       else "intersects")
    if exclude_self:
        keep = pi != ci
        pi, ci = pi[keep], ci[keep]
    pb, cb = shapely.bounds(probe_geoms), shapely.bounds(candidates)
    lo, hi = np.empty(len(pi)), np.empty(len(pi))
    positive = np.zeros(len(pi), dtype=bool)
    boxes = probe_rect[pi] & cand_rect[ci]
    a, c = pb[pi[boxes]], cb[ci[boxes]]
    w = np.minimum(a[:, 2], c[:, 2]) - np.maximum(a[:, 0], c[:, 0])
    h = np.minimum(a[:, 3], c[:, 3]) - np.maximum(a[:, 1], c[:, 1])
    positive[boxes] = (w > 0) & (h > 0)
    lo[boxes] = np.maximum(a[:, axis], c[:, axis])
    hi[boxes] = np.minimum(a[:, axis + 2], c[:, axis + 2])
    rest = ~boxes
    if rest.any():
        inter = shapely.intersection(probe_geoms[pi[rest]], candidates[ci[rest]])
        ib = shapely.bounds(inter)
        positive[rest] = shapely.area(inter) > 0
        lo[rest], hi[rest] = ib[:, axis], ib[:, axis + 2]
    span = pb[pi, axis + 2] - pb[pi, axis]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(positive & (span > 0), (hi - lo) / span, 0.0)
    keep = frac > 0
    if owner is not None and keep.any():  # merge the pieces of one feature: its extent along the side
        pi, ci, lo, hi, span = pi[keep], ci[keep], lo[keep], hi[keep], span[keep]
        key = pi * (int(owner.max()) + 1) + owner[ci]
        order = np.argsort(key, kind="stable")
        key, pi, ci, lo, hi, span = key[order], pi[order], ci[order], lo[order], hi[order], span[order]
        start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        lo, hi = np.minimum.reduceat(lo, start), np.maximum.reduceat(hi, start)
        pi, ci, span = pi[start], ci[start], span[start]
        frac = (hi - lo) / span
        keep = frac > 0
    pi, ci, frac = pi[keep], ci[keep], frac[keep]
    if not len(pi):
        return best, share
    order = np.lexsort((-frac, pi))  # per probe, the largest share first
    pi, ci, frac = pi[order], ci[order], frac[order]
    if adjoining is not None:  # every candidate adjoining enough of the side, not only the best
        enough = frac >= min_share
        adjoining.extend([pi[enough], ci[enough]])
    first = np.r_[True, pi[1:] != pi[:-1]]
    pi, ci, frac = pi[first], ci[first], frac[first]
    ok = frac >= min_share
    best[pi[ok]], share[pi[ok]] = ci[ok], frac[ok]
    return best, share


def compute(plots: gpd.GeoDataFrame, features: list[FeatureSet], tolerance_m: float, min_share: float,
            label_field: str = "contractor_name") -> pd.DataFrame:
    """One row per plot and side: dkbm, side, neighbour kind, label, neighbour dkbm (plots), covered share.

    ``plots`` in EPSG:4548 with columns dkbm and ``label_field``; features in the same CRS."""
    require_metric(plots=plots)
    geoms = np.asarray(plots.geometry.values, dtype=object)
    rect = _rectangles(geoms)
    dkbm = plots["dkbm"].astype(object).to_numpy()
    names = plots[label_field].astype(object).to_numpy() if label_field in plots else np.full(len(plots), None)
    rows = []
    for side, _field, side_zh, direction in SIDES:
        probe = probes(geoms, tolerance_m, direction, rect)
        axis = 1 if direction[0] else 0  # the side runs along y (east/west) or x (north/south)
        kind = np.full(len(geoms), OTHER_KIND, dtype=object)
        label = np.full(len(geoms), OTHER_KIND, dtype=object)
        neighbour = np.full(len(geoms), None, dtype=object)
        share = np.zeros(len(geoms))
        candidates = [(PLOT_KIND, geoms, names, True, None)] + [
            (f.kind, f.geometries, f.labels, False, f.owner) for f in features]
        pairs: list = []
        for k, cand, labels, own, owner in candidates:
            best, s = _best(probe, rect, axis, cand, own, min_share, owner, pairs if own else None)
            if own:
                best_plot = best
            better = (best >= 0) & (s > share)
            kind[better], share[better] = k, s[better]
            label[better] = labels[best[better]]
            neighbour[better] = dkbm[best[better]] if own else None
        # contractors of every plot adjoining enough of the side (a side bounded by two plots may name either)
        pi, ci = pairs if pairs else (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        others = np.where(best_plot >= 0, np.asarray(["" if n is None else str(n) for n in names[np.maximum(best_plot, 0)]], dtype=object), "")
        count = np.bincount(pi, minlength=len(geoms))
        multi = np.isin(pi, np.flatnonzero(count > 1))  # only sides bounded by several plots need a join
        if multi.any():
            several = pd.Series(names[ci[multi]], index=pi[multi]).astype(str).groupby(level=0).agg("、".join)
            others[several.index.to_numpy()] = several.to_numpy()
        rows.append(pd.DataFrame({"dkbm": dkbm, "side": side, "side_zh": side_zh, "neighbour_kind": kind,
                                  "neighbour_label": label, "neighbour_dkbm": neighbour,
                                  "covered_share": np.round(share, 3), "adjoining_contractors": others}))
    out = pd.concat(rows, ignore_index=True)
    for column in ("side", "side_zh", "neighbour_kind"):  # a few distinct values over millions of rows
        out[column] = out[column].astype("category")
    return out


_SPACE = re.compile(r"\s+")
_FULL_WIDTH = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)}  # Ａ１ → A1


def normalise(text) -> str:
    """Recorded text as compared: no blanks, full-width letters and digits folded (Ｎ→N), 至/为 prefixes dropped."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    s = _SPACE.sub("", str(text))
    s = s.translate(_FULL_WIDTH)
    return re.sub(r"^(至|到|为|邻)", "", s)


def compare(computed: pd.DataFrame, recorded: pd.DataFrame, kind_words: dict[str, list[str]],
            dominant_share: float = 0.5) -> pd.DataFrame:
    """Add recorded text and status (match | mismatch | unverified | unrecorded) to computed rows.

    ``recorded``: columns dkbm, dkdz, dkxz, dknz, dkbz (missing columns count as unrecorded). A side bounded
    by several plots matches the contractor of any of them. A record naming a road, ditch or 其他 is
    *unverified* (not a mismatch) where nothing mapped adjoins, or where the adjoining plot covers less than
    ``dominant_share`` of the side (the rest of the side may run along that road)."""
    rec = recorded.drop_duplicates("dkbm").set_index("dkbm")
    out = computed.copy()
    raw = pd.Series(None, index=out.index, dtype=object)
    for side, field, _, _ in SIDES:
        if field in rec:
            at = (out["side"] == side).to_numpy()
            raw[at] = rec[field].reindex(out.loc[at, "dkbm"]).to_numpy()
    text = _normalised(raw)
    out["recorded"] = text
    words = {k: {normalise(w) for w in v} for k, v in kind_words.items()}
    any_word = set().union(*words.values()) if words else set()
    kind = out["neighbour_kind"].astype(object).to_numpy(dtype=object)
    label = _normalised(out["neighbour_label"])
    nb = out["neighbour_dkbm"].where(out["neighbour_dkbm"].notna(), "").astype(object).to_numpy()
    empty = text == ""
    ok = ~empty & (label != "") & (text == label)
    ok |= ~empty & (nb != "") & (text == nb)
    text_s = pd.Series(text)
    for k, ws in words.items():  # a kind's words name it (not for plots: a plot is named by its contractor)
        if k != PLOT_KIND:
            ok |= (kind == k) & ~empty & text_s.isin(ws).to_numpy()
    if "adjoining_contractors" in out:
        adj = out["adjoining_contractors"].to_numpy(dtype=object)
        for i in np.flatnonzero(~ok & ~empty & (kind == PLOT_KIND) & (adj != "")):  # any adjoining plot's contractor
            ok[i] = text[i] in {normalise(n) for n in adj[i].split("、")}
    for i in np.flatnonzero((kind != PLOT_KIND) & (label != "") & (label != kind) & ~ok & ~empty):
        ok[i] = label[i] in text[i]  # "八干渠东侧" names the ditch 八干渠
    share = out["covered_share"].to_numpy(dtype=float)
    feature = text_s.isin(any_word).to_numpy()
    unverified = ~ok & ~empty & feature & ((kind == OTHER_KIND) | ((kind == PLOT_KIND) & (share < dominant_share)))
    status = np.select([empty, ok, unverified], ["unrecorded", "match", "unverified"], "mismatch")
    out["status"] = pd.Categorical(status, categories=["mismatch", "unverified", "unrecorded", "match"])
    return out


def _normalised(values: pd.Series) -> np.ndarray:
    """normalise() over a column, computed once per distinct value."""
    values = values.astype(object).where(values.notna(), None)
    uniques = {v: normalise(v) for v in pd.unique(values)}
    return values.map(uniques).to_numpy(dtype=object)
