"""Deterministic, seeded generator for the layers no public source has (every feature: demo = true).

Everything is placed inside the real county polygons and built from real anchors where they exist
(township codes, county towns from the CMA station list, the real railways for underpasses, the
documented course of 大清河/赵王新河). Users replace these layers with survey data through
``gis-service import``; nothing here is survey data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from rasterio.features import rasterize
from rasterio.transform import from_origin
from scipy import ndimage
from shapely.ops import nearest_points

from .crs import METRIC_CRS, STORAGE_CRS, transform_xy

SEED = 20210519  # the canal plan's issue date; any fixed number would do
DEFAULT_PLOTS = 100_000

# Anchors (WGS84 lon/lat). County towns: CMA national stations (1/60° precision) except 广阳 (central city).
COUNTY_TOWNS = {
    131002: (116.690, 39.500), 131003: (116.715, 39.540), 131022: (116.2833, 39.4167),
    131023: (116.4833, 39.3000), 131024: (116.9833, 39.7000), 131025: (116.6167, 38.7000),
    131026: (116.4500, 38.8500), 131028: (116.9500, 39.9167), 131081: (116.4000, 39.1667),
    131082: (117.0833, 39.9667),
}
# Documented course (canal plan L2137, L2154): 枣林庄 → 史各庄 → 苏桥 (赵王新河), 苏桥 → 胜芳 (大清河).
# Positions are approximate (town centres from general maps); uncertainty stated per feature.
ZHAOWANG_COURSE = [(116.03, 38.93), (116.19, 38.925), (116.27, 38.93), (116.35, 38.965), (116.42, 38.99)]
DAQING_COURSE = [(116.42, 38.99), (116.50, 38.992), (116.56, 38.998), (116.62, 39.025),
                 (116.70, 39.045), (116.78, 39.06), (116.90, 39.07)]
COURSE_UNCERTAINTY_M = 3000.0
# 廊坊经济技术开发区 (131071) has township codes but no boundary in the public data; it lies in 广阳区.
FUNCTIONAL_ZONES = {131071: ("廊坊经济技术开发区", 131003, (116.790, 39.550))}
CENTRAL_CITY = (116.60, 39.44, 116.84, 39.62)  # lon/lat box used for flood layers and the DEM


@dataclass
class Base:
    counties: gpd.GeoDataFrame  # metric
    townships: pd.DataFrame
    rivers: gpd.GeoDataFrame  # metric
    railways: gpd.GeoDataFrame  # metric, conventional + HSR
    city: object  # metric union of counties


def load_base(layers_dir: Path) -> Base:
    admin = layers_dir / "admin"
    counties = gpd.read_file(admin / "langfang_counties_wgs84.geojson").to_crs(METRIC_CRS)
    townships = pd.read_csv(admin / "langfang_townships.csv", dtype={"code": str})
    rivers = gpd.read_file(layers_dir / "canal" / "rivers_1to4m_langfang_region.geojson").to_crs(METRIC_CRS)
    rail = gpd.read_file(layers_dir / "transport" / "railways_conventional_langfang_region.geojson")
    hsr = gpd.read_file(layers_dir / "transport" / "hsr_lines_langfang_region.geojson")
    railways = pd.concat([
        rail.assign(railway="京沪铁路（普速）")[["railway", "geometry"]],
        hsr.assign(railway=hsr["line_cn"])[["railway", "geometry"]],
    ]).to_crs(METRIC_CRS)
    return Base(counties, townships, rivers, railways, shapely.union_all(counties.geometry.values))


def _metric(lon, lat):
    return transform_xy(lon, lat, STORAGE_CRS, METRIC_CRS)


def _metric_line(points) -> shapely.LineString:
    xs, ys = _metric([p[0] for p in points], [p[1] for p in points])
    return shapely.LineString(np.column_stack([xs, ys]))


def _frame(records: list[dict] | pd.DataFrame, geoms, crs=METRIC_CRS) -> gpd.GeoDataFrame:
    data = pd.DataFrame(records)
    data["demo"] = True
    return gpd.GeoDataFrame(data, geometry=list(geoms) if not isinstance(geoms, np.ndarray) else geoms, crs=crs)


def _county_of(base: Base, geoms) -> tuple[np.ndarray, np.ndarray]:
    """County adcode and name for each geometry's representative point (nearest county if outside)."""
    pts = shapely.point_on_surface(np.asarray(geoms))
    idx = base.counties.sindex.nearest(pts, return_all=False)[1]
    return base.counties["adcode"].values[idx], base.counties["name"].values[idx]


# --- names ----------------------------------------------------------------------------------------------
_SURNAMES = list("王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕苏卢蒋蔡贾丁魏薛叶阎")
_GIVEN = list("伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国志红玉兰海燕文俊立新春生金凤永庆")
_VILLAGE_STEMS = list("东西南北前后大小新王李张刘杨赵马孙高于田韩石白何郭康齐范")
_VILLAGE_SUFFIX = ["庄", "营", "屯", "务", "堡", "坨", "口", "家庄", "各庄", "辛庄", "官庄", "店"]


def _person_names(rng, n) -> np.ndarray:
    s = rng.choice(_SURNAMES, n)
    g1 = rng.choice(_GIVEN, n)
    g2 = np.where(rng.random(n) < 0.6, rng.choice(_GIVEN, n), "")
    return np.char.add(np.char.add(s, g1), g2)


def _id_numbers(rng, county_adcodes: np.ndarray) -> np.ndarray:
    """18-digit resident ID numbers with a valid GB 11643 check digit (fictitious people)."""
    n = len(county_adcodes)
    births = pd.to_datetime("1940-01-01") + pd.to_timedelta(rng.integers(0, 365 * 50, n), unit="D")
    body = [f"{a}{b:%Y%m%d}{s:03d}" for a, b, s in zip(county_adcodes, births, rng.integers(0, 1000, n))]
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    checks = "10X98765432"
    return np.array([b + checks[sum(int(c) * w for c, w in zip(b, weights)) % 11] for b in body])


def _phones(rng, n) -> np.ndarray:
    prefixes = rng.choice(["130", "131", "132", "135", "136", "138", "139", "150", "151", "155", "186", "187"], n)
    return np.array([f"{p}{x:08d}" for p, x in zip(prefixes, rng.integers(0, 10**8, n))])


# --- layers ---------------------------------------------------------------------------------------------
def canal_channels(base: Base) -> gpd.GeoDataFrame:
    bei = base.rivers[base.rivers["name"] == "北运河"]
    bei_line = shapely.line_merge(shapely.union_all(bei.geometry.values)).intersection(base.city)
    records, geoms = [], []
    for part in getattr(bei_line, "geoms", [bei_line]):
        records.append(dict(name="北运河", reach="香河段（1:400万国家河流线）", flow_direction="自北向南（北京通州→天津武清）",
                            uncertainty_m=1000.0, demo=False))
        geoms.append(part)
    for name, course, reach in (("赵王新河", ZHAOWANG_COURSE, "枣林庄—史各庄—苏桥"), ("大清河", DAQING_COURSE, "苏桥—胜芳—东淀")):
        line = _metric_line(course).intersection(base.city)
        for part in getattr(line, "geoms", [line]):
            records.append(dict(name=name, reach=reach, flow_direction="自西向东（入天津）",
                                uncertainty_m=COURSE_UNCERTAINTY_M, demo=True))
            geoms.append(part)
    frame = gpd.GeoDataFrame(pd.DataFrame(records), geometry=geoms, crs=METRIC_CRS)
    return frame


def _channels_union(channels: gpd.GeoDataFrame):
    return shapely.union_all(channels.geometry.values)


def _township_centres(base: Base, rng) -> pd.DataFrame:
    """One centre per township, spread inside its county (townships have no public polygons)."""
    rows = []
    for adcode, group in base.townships.groupby("county_adcode"):
        zone = FUNCTIONAL_ZONES.get(adcode)
        host = zone[1] if zone else adcode
        county = base.counties.loc[base.counties["adcode"] == host].geometry.iloc[0]
        inner = county.buffer(-1500)
        town = shapely.Point(_metric(*(zone[2] if zone else COUNTY_TOWNS[adcode])))
        pts = _random_points_in(inner, len(group) * 3, rng)
        # Farthest-point sampling from the county town: townships spread out, the first sits at the town.
        chosen = [town]
        while len(chosen) < len(group):
            d = np.min([shapely.distance(pts, c) for c in chosen], axis=0)
            chosen.append(pts[int(np.argmax(d))])
        urban = group["code"].str[6:9].astype(int) < 100  # 街道 (street offices) get the town itself
        order = np.argsort(~urban.values, kind="stable")
        for (_, t), p in zip(group.iloc[order].iterrows(), chosen):
            rows.append(dict(code=t["code"], name=t["name"], county_adcode=int(adcode), host_adcode=int(host), x=p.x, y=p.y,
                             urban=bool(int(t["code"][6:9]) < 100)))
    return pd.DataFrame(rows)


def _random_points_in(polygon, n, rng) -> np.ndarray:
    x0, y0, x1, y1 = polygon.bounds
    out = []
    shapely.prepare(polygon)
    while sum(len(o) for o in out) < n:
        xs, ys = rng.uniform(x0, x1, n * 2), rng.uniform(y0, y1, n * 2)
        keep = shapely.contains_xy(polygon, xs, ys)
        out.append(shapely.points(xs[keep], ys[keep]))
    return np.concatenate(out)[:n]


def villages(base: Base, channels: gpd.GeoDataFrame, rng, per_township: int = 26) -> gpd.GeoDataFrame:
    centres = _township_centres(base, rng)
    county_geom = dict(zip(base.counties["adcode"], base.counties.geometry))
    county_name = dict(zip(base.counties["adcode"], base.counties["name"]))
    county_name.update({code: zone[0] for code, zone in FUNCTIONAL_ZONES.items()})
    canal = _channels_union(channels)
    records, geoms = [], []
    for t in centres.itertuples():
        county = county_geom[t.host_adcode]
        n = per_township // 3 if t.urban else per_township
        spread = 1500 if t.urban else 5000
        xs = t.x + rng.normal(0, spread, n * 3)
        ys = t.y + rng.normal(0, spread, n * 3)
        keep = shapely.contains_xy(county, xs, ys)
        pts = shapely.points(xs[keep], ys[keep])[:n]
        for p in pts:
            records.append(dict(township_code=t.code, township=t.name, county_adcode=t.county_adcode,
                                county=county_name[t.county_adcode], urban=t.urban))
            geoms.append(p)
    # Villages along the canal rivers: the canal plan's 1000 m rule needs realistic density there.
    along = canal.intersection(base.city)
    length = along.length
    for d in np.linspace(0, length, 90):
        p = along.interpolate(d)
        offset = rng.uniform(300, 2900) * rng.choice([-1, 1])
        angle = rng.uniform(0, 2 * math.pi)
        q = shapely.Point(p.x + offset * math.cos(angle), p.y + offset * math.sin(angle))
        adcode = next((a for a, g in county_geom.items() if g.contains(q)), None)
        if adcode is None:
            continue
        cands = centres[(centres["host_adcode"] == adcode) & ~centres["urban"]]
        if cands.empty:
            continue
        nearest = cands.iloc[int(np.argmin(np.hypot(cands["x"] - q.x, cands["y"] - q.y)))]
        records.append(dict(township_code=nearest["code"], township=nearest["name"],
                            county_adcode=int(nearest["county_adcode"]), county=county_name[nearest["county_adcode"]],
                            urban=False))
        geoms.append(q)
    frame = gpd.GeoDataFrame(pd.DataFrame(records), geometry=geoms, crs=METRIC_CRS)
    frame["seq"] = frame.groupby("township_code").cumcount()
    # 统计用区划代码: 001–199 for 居委会 (urban communities), 200–399 for 村委会 (villages).
    frame["code"] = frame["township_code"] + (frame["seq"] + np.where(frame["urban"], 1, 201)).map("{:03d}".format)
    stems = rng.choice(_VILLAGE_STEMS, (len(frame), 2))
    suffix = rng.choice(_VILLAGE_SUFFIX, len(frame))
    base_names = np.char.add(np.char.add(stems[:, 0], stems[:, 1]), suffix)
    frame["name"] = np.where(frame["urban"], np.char.add(base_names, "社区"), np.char.add(base_names, "村"))
    frame["name"] = frame["name"] + np.where(frame.duplicated(["township_code", "name"]), frame["seq"].astype(str), "")
    return frame.drop(columns=["seq", "urban"]).assign(demo=True)


def townships(base: Base, rng) -> gpd.GeoDataFrame:
    """Approximate township (street office) seats: the generated centres villages are spread around.

    No public township boundaries or seats exist here, so these are the centres ``villages`` used: pass a
    generator freshly seeded with SEED (``villages`` is the first to draw from it) to get the same points.
    Codes and names are the real 统计用区划代码; positions are generated (farthest-point spread inside the
    county, the first 街道 at the county town). A centre outside its county's outline (the 开发区 anchor lies
    about 0.5 km outside the public outline of 广阳区) is moved to the nearest point 200 m inside it."""
    centres = _township_centres(base, rng)
    county_geom = dict(zip(base.counties["adcode"], base.counties.geometry))
    county_name = dict(zip(base.counties["adcode"], base.counties["name"]))
    county_name.update({code: zone[0] for code, zone in FUNCTIONAL_ZONES.items()})
    records, geoms = [], []
    for t in centres.itertuples():
        seat, county = shapely.Point(t.x, t.y), county_geom[t.host_adcode]
        if not county.contains(seat):
            seat = nearest_points(county.buffer(-200), seat)[0]
        records.append(dict(code=t.code, name=t.name, county=county_name[t.county_adcode],
                            county_adcode=int(t.county_adcode)))
        geoms.append(seat)
    return _frame(records, geoms)


HERITAGE = [
    # name, category, anchor (lon, lat) or (channel, position 0..1, bank), note, uncertainty, clause
    ("金门闸遗址", "水利遗址", ("北运河", 0.45, "east"), "香河县淑阳镇红庙村，北运河东岸（近似）", 1500, "L2128, L2130, L2133"),
    ("文安古城墙", "古城墙", (116.452, 38.868), "文安县城（文安镇）", 800, "L2130, L2152"),
    ("信安龙泉禅寺", "寺庙", (116.605, 39.030), "霸州市信安镇（推定）", 1500, "L2130"),
    ("胜芳张家大院", "传统民居", (116.694, 39.058), "霸州市胜芳镇古镇区", 500, "L2130"),
    ("胜芳王家大院", "传统民居", (116.697, 39.056), "霸州市胜芳镇古镇区", 500, "L2130"),
    ("胜芳杨家大院", "传统民居", (116.691, 39.055), "霸州市胜芳镇古镇区", 500, "L2130"),
    ("西码头陈家祠堂", "祠堂", (116.680, 39.052), "胜芳镇西码头（推定，文件未写县别）", 3000, "L2130"),
    ("太保庄御碑殿", "碑亭", (116.560, 39.010), "大清河沿岸（推定，文件未写县别）", 5000, "L2130"),
    ("汉代北辛庄遗址", "古遗址", ("赵王新河", 0.55, "north"), "赵王新河北岸（文件 L2130）", 2000, "L2130"),
    ("左各庄", "古遗址", ("大清河", 0.2, "south"), "大清河南岸，文安县左各庄镇（文件 L2130）", 2000, "L2130"),
]


def heritage_sites(base: Base, channels: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    records, geoms = [], []
    for name, category, anchor, note, uncertainty, clause in HERITAGE:
        if isinstance(anchor[0], str):
            river, frac, bank = anchor
            line = shapely.line_merge(shapely.union_all(channels.loc[channels["name"] == river].geometry.values))
            line = max(getattr(line, "geoms", [line]), key=lambda g: g.length)
            p = line.interpolate(frac, normalized=True)
            q = line.interpolate(min(frac + 0.01, 1.0), normalized=True)
            dx, dy = q.x - p.x, q.y - p.y
            norm = math.hypot(dx, dy) or 1.0
            left = (-dy / norm, dx / norm)  # left of the flow direction
            side = {"north": 1 if left[1] > 0 else -1, "south": -1 if left[1] > 0 else 1,
                    "east": 1 if left[0] > 0 else -1}[bank]
            geom = shapely.Point(p.x + side * 150 * left[0], p.y + side * 150 * left[1])
        else:
            geom = shapely.Point(_metric(*anchor))
        records.append(dict(name=name, category=category, location_note=note,
                            location_uncertainty_m=float(uncertainty), clause=f"廊政办字〔2021〕37号 {clause}"))
        geoms.append(geom)
    frame = _frame(records, geoms)
    frame["county"] = _county_of(base, frame.geometry.values)[1]
    return frame


def built_up_areas(base: Base, centres_frame: gpd.GeoDataFrame, rng):
    """County towns (radius 2.5–4 km, central city 6 km) and township seats (700 m)."""
    shapes = []
    for adcode, (lon, lat) in COUNTY_TOWNS.items():
        r = 6000 if adcode in (131002, 131003) else rng.uniform(2500, 4000)
        shapes.append(shapely.Point(_metric(lon, lat)).buffer(r, quad_segs=16))
    villages_xy = centres_frame.geometry.values
    shapes.append(shapely.union_all(shapely.buffer(villages_xy, 180, quad_segs=4)))
    return shapely.union_all(shapes).intersection(base.city)


def land_use(base: Base, built, water, rng, cell: float = 4000.0) -> gpd.GeoDataFrame:
    x0, y0, x1, y1 = base.city.bounds
    xs = np.arange(x0, x1, cell)
    ys = np.arange(y0, y1, cell)
    gx, gy = np.meshgrid(xs, ys)
    cells = shapely.box(gx.ravel(), gy.ravel(), gx.ravel() + cell, gy.ravel() + cell)
    farm = shapely.intersection(cells, base.city.difference(shapely.union(built, water)))
    farm = farm[~shapely.is_empty(farm)]
    basic = rng.random(len(farm)) < 0.65
    records = [dict(class_name="永久基本农田" if b else "耕地", is_basic_farmland=bool(b)) for b in basic]
    geoms = list(farm)
    for g, cls in ((built, "建设用地"), (water, "水域")):
        for part in getattr(g, "geoms", [g]):
            if part.area > 1000:
                records.append(dict(class_name=cls, is_basic_farmland=False))
                geoms.append(part)
    frame = _frame(records, geoms)
    frame = frame.explode(index_parts=False).reset_index(drop=True)
    frame = frame[frame.geometry.geom_type == "Polygon"]
    frame = frame[frame.area > 100].reset_index(drop=True)
    frame["geometry"] = shapely.make_valid(frame.geometry.values)
    frame = frame[frame.geometry.geom_type == "Polygon"].reset_index(drop=True)
    frame["county"] = _county_of(base, frame.geometry.values)[1]
    frame["area_ha"] = (frame.area / 10_000).round(2)
    return frame


def plots(base: Base, village_frame: gpd.GeoDataFrame, farmland, basic_farmland, n: int, rng,
          cell_w: float = 20.0, cell_h: float = 60.0) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Plots on a 20 m × 60 m field grid, nearest farmland cells to each village first.

    Returns (plots, contractor households). A distance transform gives every cell its nearest village,
    so plots never overlap and each belongs to one 发包方 (village collective, group by quadrant)."""
    x0, y0, x1, y1 = base.city.bounds
    width, height = int((x1 - x0) / cell_w) + 1, int((y1 - y0) / cell_h) + 1
    transform = from_origin(x0, y1, cell_w, cell_h)
    farm_mask = rasterize([(g, 1) for g in getattr(farmland, "geoms", [farmland])], (height, width),
                          transform=transform, fill=0, dtype="uint8", all_touched=False).astype(bool)
    farm_mask = ndimage.binary_erosion(farm_mask)  # whole cells inside farmland, not just their centres
    rural = village_frame[~village_frame["name"].str.endswith("社区")].reset_index(drop=True)
    vx, vy = rural.geometry.x.values, rural.geometry.y.values
    cols = ((vx - x0) / cell_w).astype(int)
    rows = ((y1 - vy) / cell_h).astype(int)
    seeds = np.ones((height, width), dtype=bool)
    seeds[rows, cols] = False
    dist, (ir, ic) = ndimage.distance_transform_edt(seeds, sampling=(cell_h, cell_w), return_indices=True)
    owner_grid = np.full((height, width), -1, dtype=np.int32)
    owner_grid[rows, cols] = np.arange(len(rural))
    owner = owner_grid[ir, ic]
    cand = np.flatnonzero(farm_mask.ravel())
    if len(cand) < n:
        raise ValueError(f"only {len(cand)} farmland cells for {n} plots")
    chosen = cand[np.argpartition(dist.ravel()[cand], n - 1)[:n]]
    chosen.sort()
    r, c = np.divmod(chosen, width)
    own = owner.ravel()[chosen]
    left = x0 + c * cell_w
    top = y1 - r * cell_h
    inset = 1.0  # field ridges between plots
    jitter = rng.uniform(0, 4, len(chosen))
    geoms = shapely.box(left + inset, top - cell_h + inset + jitter, left + cell_w - inset, top - inset)
    # Group (组) by quadrant around the village, household by order within the group.
    qx = (left + cell_w / 2) >= vx[own]
    qy = (top - cell_h / 2) >= vy[own]
    group = 1 + qx.astype(int) + 2 * qy.astype(int)
    village_code = rural["code"].values[own]
    fbfbm = np.char.add(village_code.astype(str), np.char.zfill(group.astype(str), 2))
    frame = pd.DataFrame({"fbfbm": fbfbm, "village_code": village_code,
                          "county_adcode": rural["county_adcode"].values[own],
                          "village": rural["name"].values[own]})
    frame["seq"] = frame.groupby("fbfbm").cumcount()
    frame["household"] = frame["seq"] // rng.integers(3, 7)
    frame["dkbm"] = frame["fbfbm"] + (frame["seq"] + 1).map("{:05d}".format)
    frame["cbfbm"] = frame["fbfbm"] + (frame["household"] + 1).map("{:04d}".format)
    frame["cbhtbm"] = frame["cbfbm"] + "J"
    frame["dkmc"] = frame["village"].str.replace("村", "", regex=False) + np.char.add(
        rng.choice(["东地", "西地", "南洼", "北洼", "大块", "长条地", "坟前", "渠边"], len(frame)), "")
    households = frame.drop_duplicates("cbfbm")[["cbfbm", "fbfbm", "village", "village_code", "county_adcode"]]
    households = households.reset_index(drop=True)
    households["name"] = _person_names(rng, len(households))
    households["id_number"] = _id_numbers(rng, households["county_adcode"].values)
    households["phone"] = _phones(rng, len(households))
    households["members"] = rng.integers(1, 7, len(households))
    households["plot_count"] = households["cbfbm"].map(frame["cbfbm"].value_counts()).astype(int)
    starts = pd.to_datetime("1998-10-01") + pd.to_timedelta(rng.integers(0, 450, len(households)), unit="D")
    households["contract_start"] = starts.strftime("%Y-%m-%d")
    households["contract_end"] = (starts + pd.DateOffset(years=30) - pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    frame = frame.merge(households[["cbfbm", "name", "id_number", "phone", "contract_start", "contract_end"]],
                        on="cbfbm", how="left")
    metric_area = shapely.area(geoms)
    frame["measured_area_mu"] = np.round(metric_area / (10000 / 15), 2)
    frame["contract_area_mu"] = np.round(frame["measured_area_mu"] * rng.uniform(0.82, 1.0, len(frame)), 2)
    frame["transfer_status"] = rng.choice(["未流转", "出租（转包）", "入股", "其他方式"], len(frame), p=[0.68, 0.25, 0.04, 0.03])
    basic_mask = rasterize([(g, 1) for g in getattr(basic_farmland, "geoms", [basic_farmland])], (height, width),
                           transform=transform, fill=0, dtype="uint8").astype(bool)
    frame["is_basic_farmland"] = basic_mask.ravel()[chosen]
    frame = frame.rename(columns={"name": "contractor_name", "id_number": "contractor_id_number",
                                  "phone": "contractor_phone"})
    plots_frame = gpd.GeoDataFrame(frame.drop(columns=["seq", "household", "village"]), geometry=geoms, crs=METRIC_CRS)
    plots_frame["demo"] = True
    # Household point: near its village (jittered 50–250 m) — the register's address, not a plot.
    hv = rural.set_index("code").loc[households["village_code"]]
    ang = rng.uniform(0, 2 * math.pi, len(households))
    rad = rng.uniform(50, 250, len(households))
    hx, hy = hv.geometry.x.values + rad * np.cos(ang), hv.geometry.y.values + rad * np.sin(ang)
    outside = ~shapely.contains_xy(base.city, hx, hy)  # villages at the border: stay at the village point
    hx[outside], hy[outside] = hv.geometry.x.values[outside], hv.geometry.y.values[outside]
    hpts = shapely.points(hx, hy)
    households_frame = gpd.GeoDataFrame(households, geometry=hpts, crs=METRIC_CRS).assign(demo=True)
    return plots_frame, households_frame


# --- environmental risk and receptors -----------------------------------------------------------------
RISK_TYPES = [  # type, main substance, share
    ("化工集聚区", "多种危险化学品", 0.08), ("危险化学品企业", "液氯、氨、甲醇", 0.32), ("危险废物经营单位", "废矿物油、废酸", 0.2),
    ("重金属排放企业", "铬、铅、镉", 0.15), ("加油站及油库", "汽油、柴油", 0.2), ("储气站", "液化天然气", 0.05),
]


def risk_sources(base: Base, built, rng, n: int = 140) -> gpd.GeoDataFrame:
    kinds = rng.choice(len(RISK_TYPES), n, p=[t[2] for t in RISK_TYPES])
    # Mostly at the edge of towns (industrial parks), some in the countryside.
    ring = built.buffer(1500).difference(built.buffer(200)).intersection(base.city)
    pts = np.concatenate([_random_points_in(ring, int(n * 0.8), rng), _random_points_in(base.city, n - int(n * 0.8), rng)])
    hazard = rng.choice(["重大", "较大", "一般"], n, p=[0.15, 0.35, 0.5])
    records = [dict(name=f"{RISK_TYPES[k][0]}（示例{i + 1:03d}）", source_type=RISK_TYPES[k][0],
                    hazard_class=str(h), main_substance=RISK_TYPES[k][1]) for i, (k, h) in enumerate(zip(kinds, hazard))]
    frame = _frame(records, pts)
    frame["county"] = _county_of(base, frame.geometry.values)[1]
    return frame


def pipelines(base: Base) -> gpd.GeoDataFrame:
    routes = [("天然气长输管道（示例一）", "天然气", "重大", [(116.15, 39.47), (116.45, 39.42), (116.75, 39.40), (117.05, 39.38)]),
              ("成品油管道（示例二）", "成品油", "较大", [(116.30, 38.75), (116.45, 38.95), (116.55, 39.15), (116.68, 39.45)]),
              ("天然气支线（示例三）", "天然气", "一般", [(116.85, 39.83), (117.0, 39.88), (117.15, 39.95)])]
    geoms = [_metric_line(r[3]).intersection(base.city) for r in routes]
    frame = _frame([dict(name=r[0], medium=r[1], hazard_class=r[2]) for r in routes], geoms)
    return frame.explode(index_parts=False).reset_index(drop=True)


def residential_areas(base: Base, built, rng, n: int = 260) -> gpd.GeoDataFrame:
    towns = [shapely.Point(_metric(*ll)) for ll in COUNTY_TOWNS.values()]
    geoms, records = [], []
    for i in range(n):
        t = towns[i % len(towns)]
        r = rng.uniform(200, 3500)
        a = rng.uniform(0, 2 * math.pi)
        cx, cy = t.x + r * math.cos(a), t.y + r * math.sin(a)
        w, h = rng.uniform(150, 450, 2)
        g = shapely.box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2).intersection(base.city)
        if g.is_empty or g.geom_type != "Polygon" or any(g.intersects(o) for o in geoms[-40:]):
            continue
        geoms.append(g)
        records.append(dict(name=f"{rng.choice(_VILLAGE_STEMS)}{rng.choice(['苑', '园', '家园', '小区', '花园'])}（示例{len(geoms):03d}）",
                            population=int(g.area / 10_000 * rng.uniform(150, 400))))
    frame = _frame(records, geoms)
    frame["county"] = _county_of(base, frame.geometry.values)[1]
    return frame


def sensitive_receptors(base: Base, built, rng) -> gpd.GeoDataFrame:
    specs = [("学校", "学生（人）", 220, (300, 3000), ["小学", "中学", "职业学校"]),
             ("医院", "床位（张）", 60, (50, 1200), ["人民医院", "中医院", "卫生院"]),
             ("养老院", "床位（张）", 45, (30, 400), ["养老院", "敬老院"])]
    records, geoms = [], []
    for kind, unit, n, (lo, hi), suffixes in specs:
        pts = _random_points_in(built, n, rng)
        for i, p in enumerate(pts):
            records.append(dict(name=f"{rng.choice(_VILLAGE_STEMS)}{rng.choice(_VILLAGE_STEMS)}{rng.choice(suffixes)}（示例{i + 1:03d}）",
                                kind=kind, capacity=int(rng.integers(lo, hi)), capacity_unit=unit))
            geoms.append(p)
    frame = _frame(records, geoms)
    frame["county"] = _county_of(base, frame.geometry.values)[1]
    return frame


WATER_ZONE_RADII_M = {"一级保护区": 100.0, "二级保护区": 1000.0}  # demo radii, not approved boundaries


def water_sources(base: Base, built, rng) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    records, geoms = [], []
    for adcode, (lon, lat) in COUNTY_TOWNS.items():
        town = shapely.Point(_metric(lon, lat))
        tier = "市级" if adcode == 131002 else "县级"
        for _ in range(2 if tier == "市级" else 1):
            a = rng.uniform(0, 2 * math.pi)
            d = rng.uniform(4500, 7000)
            p = shapely.Point(town.x + d * math.cos(a), town.y + d * math.sin(a))
            if base.city.contains(p):
                records.append(dict(name=f"{tier}地下水水源地（示例{len(geoms) + 1:02d}）", tier=tier, source_kind="地下水井群"))
                geoms.append(p)
    rural = _random_points_in(base.city.difference(built), 25, rng)
    for p in rural:
        records.append(dict(name=f"乡镇集中式水源地（示例{len(geoms) + 1:02d}）", tier="乡镇级", source_kind="地下水井"))
        geoms.append(p)
    sources = _frame(records, geoms)
    sources["county"] = _county_of(base, sources.geometry.values)[1]
    zone_records, zone_geoms = [], []
    for s in sources.itertuples():
        inner = s.geometry.buffer(WATER_ZONE_RADII_M["一级保护区"], quad_segs=16)
        outer = s.geometry.buffer(WATER_ZONE_RADII_M["二级保护区"], quad_segs=16).difference(inner)
        for zone, g in (("一级保护区", inner), ("二级保护区", outer)):
            zone_records.append(dict(source_name=s.name, zone=zone, tier=s.tier))
            zone_geoms.append(g.intersection(base.city))
    return sources, _frame(zone_records, zone_geoms)


def eco_redline(base: Base, channels: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    dongdian = shapely.Point(_metric(116.76, 39.03)).buffer(4500, quad_segs=16)  # 东淀 wetland near 胜芳 (L2147)
    corridor = _channels_union(channels[channels["name"] != "北运河"]).buffer(400)
    records = [dict(name="东淀湿地生态保护红线（示例）", category="湿地"),
               dict(name="大清河—赵王新河河道生态保护红线（示例）", category="河湖岸线")]
    return _frame(records, [dongdian.intersection(base.city), corridor.intersection(base.city)])


# --- central-city flood layers --------------------------------------------------------------------------
# East–west roads of the central city (latitudes approximate); names from the flood facts and traffic notices.
CITY_ROADS = [("光明道", 39.5385, "新闻报道（2019、2023）"), ("解放道", 39.5235, "新闻报道（2018-07-24）"),
              ("永兴路", 39.5130, "交通管制通告"), ("银河路", 39.5480, "交通管制通告"),
              ("新开路", 39.5560, "交通管制通告"), ("爱民道", 39.5305, "新闻报道（2021-07-18）"),
              ("广阳道", 39.5175, "新闻报道（2021-07-18）"), ("建设路", 39.5030, "新闻报道（2021-07-18）"),
              ("迎春路", 39.4960, "新闻报道（2021-07-18）"), ("金源道（虚构）", 39.5620, "虚构")]


def urban_districts(base: Base) -> gpd.GeoDataFrame:
    x0, y0, x1, y1 = CENTRAL_CITY
    xs, ys = _metric([x0, x1, x1, x0], [y0, y0, y1, y1])
    city_box = shapely.Polygon(np.column_stack([xs, ys]))
    dev_xs, dev_ys = _metric([116.74, 116.84, 116.84, 116.74], [39.505, 39.505, 39.59, 39.59])
    dev = shapely.Polygon(np.column_stack([dev_xs, dev_ys]))
    air_xs, air_ys = _metric([116.60, 116.66, 116.66, 116.60], [39.56, 39.56, 39.62, 39.62])
    air = shapely.Polygon(np.column_stack([air_xs, air_ys]))
    county = dict(zip(base.counties["name"], base.counties.geometry))
    special = shapely.union(dev, air)
    parts = [("广阳区", county["广阳区"].intersection(city_box).difference(special)),
             ("安次区", county["安次区"].intersection(city_box).difference(special)),
             ("廊坊开发区", dev.intersection(base.city)), ("临空经济区", air.intersection(base.city))]
    frame = _frame([dict(name=n) for n, _ in parts], [g for _, g in parts])
    return frame.explode(index_parts=False).reset_index(drop=True).dissolve("name", as_index=False)


def _city_rail(base: Base):
    xs, ys = _metric([CENTRAL_CITY[0], CENTRAL_CITY[2], CENTRAL_CITY[2], CENTRAL_CITY[0]],
                     [CENTRAL_CITY[1], CENTRAL_CITY[1], CENTRAL_CITY[3], CENTRAL_CITY[3]])
    box = shapely.Polygon(np.column_stack([xs, ys]))
    rail = base.railways[base.railways.intersects(box)].copy()
    rail["geometry"] = rail.intersection(box)
    return rail[~rail.is_empty], box


def underpasses(base: Base, districts: gpd.GeoDataFrame, rng) -> gpd.GeoDataFrame:
    rail, box = _city_rail(base)
    records, geoms = [], []
    x0, x1 = box.bounds[0], box.bounds[2]
    for road, lat, source in CITY_ROADS:
        y = float(_metric(CENTRAL_CITY[0], lat)[1])
        line = shapely.LineString([(x0, y), (x1, y)])
        for r in rail.itertuples():
            hit = line.intersection(r.geometry)
            for p in getattr(hit, "geoms", [hit]) if not hit.is_empty else []:
                if p.geom_type != "Point" or any(p.distance(g) < 300 for g in geoms):
                    continue
                real = road == "解放道"
                records.append(dict(name=f"{road}下穿铁路桥", road=road, railway=r.railway,
                                    sag_depth_m=round(float(rng.uniform(4.0, 6.0)), 1),
                                    name_source=source if real else f"{source}；下穿位置为推定"))
                geoms.append(p)
    frame = _frame(records, geoms)
    frame["district"] = _district_of(districts, frame.geometry.values)
    return frame


def _district_of(districts: gpd.GeoDataFrame, geoms) -> np.ndarray:
    idx = districts.sindex.nearest(np.asarray(geoms), return_all=False)[1]
    return districts["name"].values[idx]


WATERLOGGING = [("银河大桥北下坡", (116.712, 39.5495), "2021-07-18 严重积水（新闻报道）"),
                ("爱民道积水点", (116.695, 39.5305), "2021-07-18 积水致车辆熄火（新闻报道）"),
                ("建设路积水点", (116.705, 39.5030), "2021-07-18 严重积水（新闻报道）"),
                ("广阳道积水点", (116.690, 39.5175), "2021-07-18 严重积水（新闻报道）"),
                ("永兴路积水点", (116.720, 39.5130), "2021-07-18 严重积水（新闻报道）"),
                ("迎春路积水点", (116.700, 39.4960), "2021-07-18 严重积水（新闻报道）"),
                ("和平路积水点（虚构）", (116.680, 39.5400), "虚构"),
                ("新华路积水点（虚构）", (116.725, 39.5250), "虚构")]


def waterlogging_points(districts, unders: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    records, geoms = [], []
    for name, ll, hist in WATERLOGGING:
        records.append(dict(name=name, history=hist, name_source="新闻报道" if "虚构" not in name else "虚构"))
        geoms.append(shapely.Point(_metric(*ll)))
    for u in unders.itertuples():
        records.append(dict(name=u.name, history="下穿立交低洼处" + ("；2018-07-24 安比台风积水封闭" if u.road == "解放道" else ""),
                            name_source=u.name_source))
        geoms.append(u.geometry)
    frame = _frame(records, geoms)
    frame["district"] = _district_of(districts, frame.geometry.values)
    return frame


def drainage_channels(base: Base) -> gpd.GeoDataFrame:
    # Names are real (城区防汛工作方案); courses are schematic, flowing generally to the south-east.
    specs = [("龙河", [(116.62, 39.62), (116.66, 39.57), (116.70, 39.52), (116.74, 39.47), (116.78, 39.44)], "市水利局（示例）"),
             ("大皮营引渠", [(116.64, 39.58), (116.68, 39.555), (116.70, 39.545)], "广阳区水务局（示例）"),
             ("八干渠", [(116.72, 39.58), (116.735, 39.53), (116.75, 39.48)], "廊坊开发区建设局（示例）"),
             ("六干渠", [(116.66, 39.50), (116.70, 39.48), (116.74, 39.46)], "安次区水务局（示例）"),
             ("九干渠", [(116.76, 39.58), (116.78, 39.53), (116.80, 39.48)], "廊坊开发区建设局（示例）"),
             ("五干渠", [(116.63, 39.53), (116.67, 39.51), (116.71, 39.49)], "安次区水务局（示例）")]
    frame = _frame([dict(name=n, responsible_unit=u) for n, _, u in specs], [_metric_line(c) for _, c, _ in specs])
    return frame


def drainage_gates(channels: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    records, geoms = [], []
    for c in channels.itertuples():
        for k, frac in enumerate((0.35, 0.85), start=1):
            records.append(dict(name=f"{c.name}{k}号闸（示例）", channel=c.name, responsible_unit=c.responsible_unit))
            geoms.append(c.geometry.interpolate(frac, normalized=True))
    return _frame(records, geoms)


def pumping_stations(channels: gpd.GeoDataFrame, rng) -> gpd.GeoDataFrame:
    records = [dict(name="民心桥泵站", owner="市住建局（排水管理处）", capacity_m3s=6.0,
                    name_source="新闻报道（2018-07-24 中心城区最大降雨147.9毫米测于此）")]
    geoms = [shapely.Point(_metric(116.700, 39.5330))]
    for c in channels.itertuples():
        records.append(dict(name=f"{c.name}泵站（虚构）", owner=c.responsible_unit,
                            capacity_m3s=round(float(rng.uniform(1.5, 8.0)), 1), name_source="虚构"))
        geoms.append(c.geometry.interpolate(0.6, normalized=True))
    return _frame(records, geoms)


def dem(base: Base, unders: gpd.GeoDataFrame, path: Path, rng, cell: float = 5.0) -> None:
    """Central-city DEM in EPSG:4548: NW→SE slope (about 22 → 12 m, cf. CMA 廊坊 station 13.7 m), smooth
    relief of ±1.5 m, river/channel lows, and each underpass burned in as a sag of sag_depth_m."""
    xs, ys = _metric([CENTRAL_CITY[0], CENTRAL_CITY[2]], [CENTRAL_CITY[1], CENTRAL_CITY[3]])
    x0, x1 = float(np.floor(xs.min())), float(np.ceil(xs.max()))
    y0, y1 = float(np.floor(ys.min())), float(np.ceil(ys.max()))
    width, height = int((x1 - x0) / cell), int((y1 - y0) / cell)
    gx = (np.arange(width) + 0.5) / width
    gy = (np.arange(height) + 0.5) / height  # 0 at the top (north)
    fx, fy = np.meshgrid(gx, gy)
    z = 22.0 - 6.0 * fx - 4.0 * fy
    coarse = rng.normal(0, 1, (24, 24))
    relief = ndimage.zoom(ndimage.gaussian_filter(coarse, 2), (height / 24, width / 24), order=3)[:height, :width]
    z = z + 1.5 * relief / max(np.abs(relief).max(), 1e-6)
    transform = from_origin(x0, y1, cell, cell)
    cols = np.arange(width) * cell + x0 + cell / 2
    rows = y1 - (np.arange(height) + 0.5) * cell
    for u in unders.itertuples():
        c0, c1 = np.searchsorted(cols, [u.geometry.x - 200, u.geometry.x + 200])
        r0, r1 = np.searchsorted(-rows, [-(u.geometry.y + 40), -(u.geometry.y - 40)])
        if c1 <= c0 or r1 <= r0:
            continue
        dx = np.abs(cols[c0:c1] - u.geometry.x)
        profile = u.sag_depth_m * np.clip(1 - np.maximum(dx - 60, 0) / 140, 0, 1)  # 120 m flat bottom, ramps
        z[r0:r1, c0:c1] -= profile[None, :]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.tif")
    with rasterio.open(tmp, "w", driver="GTiff", width=width, height=height, count=1, dtype="float32",
                       crs=METRIC_CRS, transform=transform, nodata=-9999.0, compress="deflate", tiled=True,
                       blockxsize=256, blockysize=256) as dst:
        dst.write(z.astype("float32"), 1)
        dst.update_tags(demo="true", units="metre", source="scripts/build_demo_layers.py (seeded)")
    tmp.replace(path)
