"""四至 from geometry: the neighbour on each side of every plot, compared with the recorded DKDZ/DKXZ/DKNZ/DKBZ.

What counts as adjoining (rules ``land.boundary_tolerance_m``, ``land.boundary_min_share`` and
``land.boundary_features``): the *probe* of a plot's east side is the part of the plot shifted east by the
tolerance that lies outside the plot itself — a strip as wide as the tolerance along the plot's east edge
(for a rectangle exactly ``[maxx, maxx + tol] × [miny, maxy]``; for any other shape the part of its outline
facing east). The neighbour on that side is the feature covering the largest part of the probe: another plot
(named by its contractor, as NY/T 2539 records 四至), or a feature of the layers listed in
``land.boundary_features`` (ditches and rivers buffered to their width, built-up land, water …). A neighbour
must cover at least ``boundary_min_share`` of the probe; otherwise the side is 其他 (nothing mapped adjoins it:
a field road, a ridge or open land that no layer holds). A diagonal neighbour touches a probe at a corner only
(no area) and never counts. Everything is measured in metres (EPSG:4548) and vectorised: one STRtree query of
all probes against each feature set, one vectorised intersection per candidate pair.

Recorded 四至 are compared as text: a side matches when the recorded text names the computed neighbour —
its contractor's name or its DKBM for a plot, its feature name or one of the words of its kind (路/道路 …,
``land.boundary_kind_words``) for a mapped feature, one of the 其他 words for an unmapped side. An empty record
is reported as unrecorded, anything else as a mismatch.
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


@dataclass(frozen=True)
class FeatureSet:
    """Mapped features that can bound a plot: polygons (or lines/points already buffered), each with a label."""

    kind: str  # 沟渠, 河流, 道路, 建设用地 …
    geometries: np.ndarray  # in EPSG:4548
    labels: np.ndarray  # the feature's name (or the kind when it has none)


def feature_set(kind: str, frame: gpd.GeoDataFrame, name_field: str | None = None, width_m: float = 0.0,
                where: dict | None = None) -> FeatureSet:
    """A FeatureSet from a layer frame in metres; lines and points are buffered to half their width."""
    require_metric(frame=frame)
    if where:
        keep = np.ones(len(frame), dtype=bool)
        for column, value in where.items():
            keep &= (frame[column] == value).to_numpy()
        frame = frame.loc[keep]
    geoms = frame.geometry.values
    dims = shapely.get_dimensions(np.asarray(geoms))
    if width_m > 0 and (dims < 2).any():
        geoms = np.where(dims < 2, shapely.buffer(np.asarray(geoms), width_m / 2, cap_style="flat"), geoms)
    names = frame[name_field].astype(object).to_numpy() if name_field and name_field in frame else None
    labels = np.array([n if isinstance(n, str) and n.strip() else kind
                       for n in (names if names is not None else [None] * len(frame))], dtype=object)
    return FeatureSet(kind, np.asarray(geoms, dtype=object), labels)


def probes(geoms: np.ndarray, tolerance_m: float, direction: tuple[float, float]) -> np.ndarray:
    """The strip of width tolerance_m along each geometry's side facing `direction` (see the module doc)."""
    dx, dy = direction[0] * tolerance_m, direction[1] * tolerance_m
    shifted = shapely.transform(geoms, lambda c: c + np.array([dx, dy]))
    return shapely.difference(shifted, geoms)


def _best(probe_geoms: np.ndarray, probe_area: np.ndarray, candidates: np.ndarray, exclude_self: bool,
          min_share: float) -> tuple[np.ndarray, np.ndarray]:
    """For each probe: (index of the candidate covering most of it or -1, covered share)."""
    from shapely import STRtree

    n = len(probe_geoms)
    best, share = np.full(n, -1, dtype=np.int64), np.zeros(n)
    if not len(candidates) or not n:
        return best, share
    pi, ci = STRtree(candidates).query(probe_geoms, predicate="intersects")
    if exclude_self:
        keep = pi != ci
        pi, ci = pi[keep], ci[keep]
    if not len(pi):
        return best, share
    covered = shapely.area(shapely.intersection(probe_geoms[pi], candidates[ci]))
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(probe_area[pi] > 0, covered / probe_area[pi], 0.0)
    order = np.lexsort((-frac, pi))  # per probe, the largest share first
    pi, ci, frac = pi[order], ci[order], frac[order]
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
    dkbm = plots["dkbm"].astype(object).to_numpy()
    names = plots[label_field].astype(object).to_numpy() if label_field in plots else np.full(len(plots), None)
    rows = []
    for side, _field, side_zh, direction in SIDES:
        probe = probes(geoms, tolerance_m, direction)
        area = shapely.area(probe)
        kind = np.full(len(geoms), OTHER_KIND, dtype=object)
        label = np.full(len(geoms), OTHER_KIND, dtype=object)
        neighbour = np.full(len(geoms), None, dtype=object)
        share = np.zeros(len(geoms))
        candidates = [(PLOT_KIND, geoms, names, True)] + [(f.kind, f.geometries, f.labels, False) for f in features]
        for k, cand, labels, own in candidates:
            best, s = _best(probe, area, cand, own, min_share)
            better = (best >= 0) & (s > share)
            kind[better], share[better] = k, s[better]
            label[better] = labels[best[better]]
            neighbour[better] = dkbm[best[better]] if own else None
        rows.append(pd.DataFrame({"dkbm": dkbm, "side": side, "side_zh": side_zh, "neighbour_kind": kind,
                                  "neighbour_label": label, "neighbour_dkbm": neighbour,
                                  "covered_share": np.round(share, 3)}))
    return pd.concat(rows, ignore_index=True)


_SPACE = re.compile(r"\s+")


def normalise(text) -> str:
    """Recorded text as compared: no blanks, full-width letters and digits folded (Ｎ→N), 至/为 prefixes dropped."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    s = _SPACE.sub("", str(text))
    s = s.translate({c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)})
    return re.sub(r"^(至|到|为|邻)", "", s)


def compare(computed: pd.DataFrame, recorded: pd.DataFrame, kind_words: dict[str, list[str]]) -> pd.DataFrame:
    """Add recorded text and status (match | mismatch | unrecorded) to computed rows.

    ``recorded``: columns dkbm, dkdz, dkxz, dknz, dkbz (missing columns count as unrecorded)."""
    fields = {side: field for side, field, _, _ in SIDES}
    rec = recorded.set_index("dkbm")
    out = computed.copy()
    texts = np.full(len(out), "", dtype=object)
    for side, field in fields.items():
        if field not in rec:
            continue
        at = (out["side"] == side).to_numpy()
        values = rec[field].reindex(out.loc[at, "dkbm"]).to_numpy()
        texts[at] = [normalise(v) for v in values]
    out["recorded"] = texts
    words = {k: {normalise(w) for w in v} for k, v in kind_words.items()}
    status = []
    for text, kind, label, nb in zip(texts, out["neighbour_kind"], out["neighbour_label"], out["neighbour_dkbm"]):
        if not text:
            status.append("unrecorded")
            continue
        names = {normalise(label), normalise(nb)} - {""}
        if kind == PLOT_KIND:
            ok = text in names
        else:
            ok = text in names or text in words.get(kind, ()) or any(n and n in text for n in names if n != kind)
        status.append("match" if ok else "mismatch")
    out["status"] = status
    return out
