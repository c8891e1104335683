"""Deterministic, seeded generator for the layers no public source has (every feature: demo = true).

Everything is placed inside the real county polygons and built from real anchors where they exist
(township codes, county towns from the CMA station list, the real railways for underpasses, the
documented course of 大清河/赵王新河). Users replace these layers with survey data through
``gis-service import``; nothing here is survey data.
"""

from __future__ import annotations

import math
import re
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
from shapely.ops import nearest_points, substring

from .crs import METRIC_CRS, STORAGE_CRS, gcj02_to_wgs84, transform_xy

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


# The real village-level list (NBS 统计用区划代码 2016 via Vonng/adcode, CC BY 4.0; layers/PROVENANCE.md): the
# twelve upstream CSVs concatenated unchanged under a header taken from the upstream sql/adcode.ddl.
VILLAGE_LIST = Path("canal") / "langfang_adcode_nbs2016_gcj02.csv"


@dataclass
class Base:
    counties: gpd.GeoDataFrame  # metric
    townships: pd.DataFrame  # NBS 2023 township table
    rivers: gpd.GeoDataFrame  # metric
    railways: gpd.GeoDataFrame  # metric, conventional + HSR
    city: object  # metric union of counties
    adcode_2016: pd.DataFrame  # the NBS 2016 list: city, county, town and village rows (GCJ-02 points)


def read_adcode_list(path: Path) -> pd.DataFrame:
    """The upstream list as text columns (codes keep their digits), coordinates as floats (NaN: no point)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for col in ("longitude", "latitude"):
        frame[col] = pd.to_numeric(frame[col].replace("", None))
    return frame


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
    return Base(counties, townships, rivers, railways, shapely.union_all(counties.geometry.values),
                read_adcode_list(layers_dir / VILLAGE_LIST))


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


def _person_names(rng, n) -> np.ndarray:
    s = rng.choice(_SURNAMES, n)
    g1 = rng.choice(_GIVEN, n)
    g2 = np.where(rng.random(n) < 0.6, rng.choice(_GIVEN, n), "")
    return np.char.add(np.char.add(s, g1), g2)


def _id_numbers(rng, county_adcodes: np.ndarray) -> np.ndarray:
    """18-digit resident ID numbers with a valid GB 11643 check digit (fictitious people)."""
    n = len(county_adcodes)
    births = pd.to_datetime("1940-01-01") + pd.to_timedelta(rng.integers(0, 365 * 50, n), unit="D")
    seq = np.char.zfill(rng.integers(0, 1000, n).astype(str), 3)
    body = np.char.add(np.char.add(np.asarray(county_adcodes).astype(str), np.asarray(births.strftime("%Y%m%d"), dtype=str)),
                       seq)
    digits = np.frombuffer(body.astype("S17").tobytes(), dtype=np.uint8).reshape(n, 17) - ord("0")
    weights = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])
    checks = np.array(list("10X98765432"))
    return np.char.add(body, checks[(digits.astype(np.int64) @ weights) % 11])


def _phones(rng, n) -> np.ndarray:
    prefixes = rng.choice(["130", "131", "132", "135", "136", "138", "139", "150", "151", "155", "186", "187"], n)
    return np.array([f"{p}{x:08d}" for p, x in zip(prefixes, rng.integers(0, 10**8, n))])


# --- layers ---------------------------------------------------------------------------------------------
# Flow direction of each canal channel: every line is stored pointing downstream, so that its left and right
# banks are well defined. 北运河 enters from Beijing (通州) in the north-west and leaves towards Tianjin (武清) in
# the south-east; 赵王新河 and 大清河 flow west → east (枣林庄 → 苏桥 → 胜芳 → 东淀, canal plan L2137).
FLOW_TOWARDS = {"北运河": (1.0, -1.0), "赵王新河": (1.0, 0.0), "大清河": (1.0, 0.0)}  # downstream unit-ish vector (x, y)


def _downstream(line: shapely.LineString, towards: tuple[float, float]) -> shapely.LineString:
    """The line pointing towards (x, y): reversed when its end lies upstream of its start."""
    (x0, y0), (x1, y1) = line.coords[0], line.coords[-1]
    return line.reverse() if (x1 - x0) * towards[0] + (y1 - y0) * towards[1] < 0 else line


def _parts_in_flow_order(whole: shapely.LineString, clipped) -> list[shapely.LineString]:
    """Parts of a clipped line, each pointing the way whole points, ordered from upstream to downstream.

    Orientation is decided by where each part's ends lie along the whole (oriented) river, not by the
    part's own compass direction: a short reach may bend against the general direction."""
    parts = []
    for part in getattr(clipped, "geoms", [clipped]):
        if part.geom_type != "LineString" or part.length == 0:
            continue
        a, b = whole.project(shapely.Point(part.coords[0])), whole.project(shapely.Point(part.coords[-1]))
        parts.append((min(a, b), part.reverse() if a > b else part))
    return [p for _, p in sorted(parts, key=lambda t: t[0])]


def canal_channels(base: Base) -> gpd.GeoDataFrame:
    """The canal plan's three channels inside Langfang, one feature per part, each line in flow direction."""
    bei = base.rivers[base.rivers["name"] == "北运河"]
    bei_whole = _downstream(shapely.line_merge(shapely.union_all(bei.geometry.values)), FLOW_TOWARDS["北运河"])
    records, geoms = [], []
    for part in _parts_in_flow_order(bei_whole, bei_whole.intersection(base.city)):
        records.append(dict(name="北运河", reach="香河段（1:400万国家河流线）", flow_direction="自北向南（北京通州→天津武清）",
                            uncertainty_m=1000.0, demo=False))
        geoms.append(part)
    for name, course, reach in (("赵王新河", ZHAOWANG_COURSE, "枣林庄—史各庄—苏桥"), ("大清河", DAQING_COURSE, "苏桥—胜芳—东淀")):
        whole = _downstream(_metric_line(course), FLOW_TOWARDS[name])
        for part in _parts_in_flow_order(whole, whole.intersection(base.city)):
            records.append(dict(name=name, reach=reach, flow_direction="自西向东（入天津）",
                                uncertainty_m=COURSE_UNCERTAINTY_M, demo=True))
            geoms.append(part)
    return gpd.GeoDataFrame(pd.DataFrame(records), geometry=geoms, crs=METRIC_CRS)


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


# --- villages: the real NBS 2016 village-level list -----------------------------------------------------
# position_uncertainty_m, a documented estimate. Amap points: the GCJ-02 inverse is exact to < 1 m; the point
# is Amap's marker for the village (committee or centre), placed to some tens of metres. Generated positions:
# the spread (standard deviation) of the normal scatter around the township centre — and that centre is
# itself generated, so a generated village says where its township roughly is, not where the village is.
AMAP_POINT_UNCERTAINTY_M = 50.0
VILLAGE_SPREAD_M = {"urban": 1500.0, "rural": 5000.0}
RURAL_COMMITTEES = ("村委会", "农场")  # village committees and state farms own farmland; 居委会/社区 are urban
_TOWNSHIP_SUFFIX = re.compile(r"(街道办事处|街道|镇|乡)$")


def village_list(base: Base) -> pd.DataFrame:
    """The village-level rows of the 2016 list with their township (2016 name) and county.

    The list's three virtual committees (``dummy = t``: statistical placeholders of industrial parks,
    e.g. 开发区虚拟居委会) have no territory and are left out."""
    a = base.adcode_2016
    towns = a.loc[a["level"] == "town"].set_index("code")["name"]
    rows = a.loc[(a["level"] == "village") & (a["dummy"] != "t")]
    return pd.DataFrame({
        "code": rows["code"].values, "name": rows["name"].values, "township_code": rows["code"].str[:9].values,
        "township_2016": rows["parent"].map(towns).values, "county_adcode": rows["adcode"].astype(int).values,
        "ur_code": rows["ur_code"].values, "lon_gcj02": rows["longitude"].values, "lat_gcj02": rows["latitude"].values,
    })


def township_successors(base: Base) -> pd.DataFrame:
    """Every 2016 township against the 2023 table: the same code, else the 2023 township of the same county
    whose name differs only in its 乡/镇/街道 suffix (乡 turned 镇 get new codes), else none.

    Columns: code, name (2016), county_adcode, code_2023, name_2023, match ('code', 'name_stem' or '')."""
    a = base.adcode_2016
    towns = a.loc[a["level"] == "town"]
    t23 = base.townships.assign(stem=base.townships["name"].str.replace(_TOWNSHIP_SUFFIX, "", regex=True))
    by_code = t23.set_index("code")
    rows = []
    for t in towns.itertuples():
        code, county = t.code[:9], int(t.adcode)
        if code in by_code.index:
            rows.append((code, t.name, county, code, by_code.loc[code, "name"], "code"))
            continue
        stem = _TOWNSHIP_SUFFIX.sub("", t.name)
        same = t23[(t23["county_adcode"] == county) & (t23["stem"] == stem) & ~t23["code"].isin(towns["code"].str[:9])]
        if len(same) == 1:
            rows.append((code, t.name, county, same["code"].iloc[0], same["name"].iloc[0], "name_stem"))
        else:
            rows.append((code, t.name, county, None, None, ""))
    return pd.DataFrame(rows, columns=["code", "name", "county_adcode", "code_2023", "name_2023", "match"])


def villages(base: Base, rng) -> gpd.GeoDataFrame:
    """The real villages (names and 12-digit codes of the NBS 2016 list), at their Amap point where the list
    has one (GCJ-02, converted here) and otherwise generated near their township's centre.

    A generated position is a normal scatter (VILLAGE_SPREAD_M) around the generated centre of the village's
    township (``_township_centres``; a 2016 township missing from the 2023 table uses its successor by name,
    else the county town), kept inside the county. ``_township_centres`` must be the generator's first draw:
    ``townships`` replays it to place the seats."""
    centres = _township_centres(base, rng).set_index("code")
    county_geom = dict(zip(base.counties["adcode"], base.counties.geometry))
    county_name = dict(zip(base.counties["adcode"], base.counties["name"]))
    county_name.update({code: zone[0] for code, zone in FUNCTIONAL_ZONES.items()})
    host = {code: zone[1] for code, zone in FUNCTIONAL_ZONES.items()}
    succ = township_successors(base).set_index("code")
    frame = village_list(base)
    frame["township_code_2023"] = frame["township_code"].map(succ["code_2023"])
    name_2023 = frame["township_code"].map(succ.loc[succ["match"] == "code", "name_2023"])
    frame["township"] = name_2023.fillna(frame["township_2016"])  # a code the 2023 table lacks keeps its 2016 name
    frame["county"] = frame["county_adcode"].map(county_name)

    x, y = np.full(len(frame), np.nan), np.full(len(frame), np.nan)
    real = frame["lon_gcj02"].notna().values
    # Amap's points are GCJ-02: invert explicitly to WGS84 (= CGCS2000 here) before projecting.
    lon, lat = gcj02_to_wgs84(frame.loc[real, "lon_gcj02"].values, frame.loc[real, "lat_gcj02"].values)
    x[real], y[real] = _metric(lon, lat)

    rural = frame["name"].str.endswith(RURAL_COMMITTEES).values
    urban_township = frame["township_code"].str[6:9].astype(int).values < 100  # 街道 (street offices)
    spread = np.where(rural & ~urban_township, VILLAGE_SPREAD_M["rural"], VILLAGE_SPREAD_M["urban"])
    has_centre = frame["township_code_2023"].isin(centres.index).values
    centre_code = np.where(has_centre, frame["township_code_2023"].fillna(""), "")
    todo = pd.DataFrame({"centre": centre_code, "county": frame["county_adcode"].values, "spread": spread})[~real]
    for (code, county, sigma), group in todo.groupby(["centre", "county", "spread"], sort=True):
        if code:
            cx, cy = centres.loc[code, "x"], centres.loc[code, "y"]
        else:  # no 2023 successor: around the county town
            cx, cy = _metric(*COUNTY_TOWNS[host.get(county, county)])
        polygon = county_geom[host.get(county, county)]
        xs, ys = [], []
        while len(xs) < len(group):
            px, py = cx + rng.normal(0, sigma, len(group) * 3), cy + rng.normal(0, sigma, len(group) * 3)
            keep = shapely.contains_xy(polygon, px, py)
            xs += list(px[keep])
            ys += list(py[keep])
        x[group.index], y[group.index] = xs[:len(group)], ys[:len(group)]

    frame["position_source"] = np.where(real, "amap_gcj02_converted", "generated")
    frame["position_uncertainty_m"] = np.where(real, AMAP_POINT_UNCERTAINTY_M, spread)
    frame["demo"] = ~real  # names and codes are real throughout; the position is what may be generated
    columns = ["code", "name", "township", "township_code", "township_code_2023", "county", "county_adcode",
               "ur_code", "position_source", "position_uncertainty_m", "demo"]
    return gpd.GeoDataFrame(frame[columns], geometry=shapely.points(x, y), crs=METRIC_CRS)


def village_township_check(base: Base) -> str:
    """Markdown report: the 2016 village list's townships against the 2023 township table (nothing hidden)."""
    succ = township_successors(base)
    vill = village_list(base)
    per_township = vill.groupby("township_code").size()
    dropped = base.adcode_2016.loc[(base.adcode_2016["level"] == "village") & (base.adcode_2016["dummy"] == "t")]
    county = dict(zip(base.counties["adcode"], base.counties["name"]))
    county.update({code: zone[0] for code, zone in FUNCTIONAL_ZONES.items()})
    t23 = base.townships
    new_2023 = t23[~t23["code"].isin(succ["code_2023"].dropna())]
    same = succ[succ["match"] == "code"]
    renamed = same[same["name"] != same["name_2023"]]
    by_stem = succ[succ["match"] == "name_stem"]
    unmatched = succ[succ["match"] == ""]
    n = lambda code: int(per_township.get(code, 0))  # noqa: E731
    lines = [
        "# 村级名录乡镇核对 Village list townships vs the 2023 township table",
        "",
        "Generated by `gis_service.demo.village_township_check` (`python scripts/village_township_check.py`);",
        "a test keeps this file equal to the function's output. Inputs: `layers/canal/langfang_adcode_nbs2016_gcj02.csv`",
        "(NBS 统计用区划代码 2016 via Vonng/adcode) and `layers/admin/langfang_townships.csv` (NBS 2023 via modood).",
        "",
        "## Summary",
        "",
        f"- 2016 list: {len(succ)} townships, {len(vill) + len(dropped)} village-level rows; {len(dropped)} virtual "
        f"committees (`dummy = t`) left out, so the villages layer has {len(vill)} villages.",
        f"- 2023 table: {len(t23)} townships.",
        f"- Same code in both: {len(same)} townships ({sum(n(c) for c in same['code'])} villages); "
        f"{len(renamed)} of them renamed.",
        f"- 2016 code missing from 2023, successor found by name (乡→镇 and the like, new code): {len(by_stem)} "
        f"townships ({sum(n(c) for c in by_stem['code'])} villages).",
        f"- 2016 code missing from 2023, no successor by name: {len(unmatched)} townships "
        f"({sum(n(c) for c in unmatched['code'])} villages).",
        f"- 2023 code with no 2016 township: {len(new_2023)} townships (no villages in the 2016 list).",
        f"- County prefix: {int((vill['code'].str[:6].astype(int) != vill['county_adcode']).sum())} village codes whose "
        f"first 6 digits differ from their county adcode; {int(vill['code'].str.startswith('131071').sum())} codes "
        "start with 131071 (廊坊经济技术开发区 appears only in the 2023 table, with two 街道 and no villages).",
        "",
        "Villages keep their 2016 code (`code`, `township_code` = its first 9 digits). `township` is the 2023 name",
        "where the 2023 table has the same code, otherwise the 2016 name; `township_code_2023` is the same code or",
        "the successor found by name (empty when none). Villages without an Amap point are placed around the",
        "generated centre of `township_code_2023`, or around the county town when it is empty.",
        "",
        "## Same code, renamed",
        "",
        "| code | 2016 name | 2023 name | villages |",
        "|---|---|---|---|",
        *[f"| {r.code} | {r.name} | {r.name_2023} | {n(r.code)} |" for r in renamed.itertuples()],
        "",
        "## 2016 code missing from the 2023 table, successor by name",
        "",
        "| 2016 code | 2016 name | county | 2023 code | 2023 name | villages |",
        "|---|---|---|---|---|---|",
        *[f"| {r.code} | {r.name} | {county[r.county_adcode]} | {r.code_2023} | {r.name_2023} | {n(r.code)} |"
          for r in by_stem.itertuples()],
        "",
        "## 2016 code missing from the 2023 table, no successor by name",
        "",
        "| 2016 code | 2016 name | county | villages |",
        "|---|---|---|---|",
        *[f"| {r.code} | {r.name} | {county[r.county_adcode]} | {n(r.code)} |" for r in unmatched.itertuples()],
        "",
        "## 2023 townships with no 2016 township (new codes)",
        "",
        "| 2023 code | 2023 name | county |",
        "|---|---|---|",
        *[f"| {r.code} | {r.name} | {county[r.county_adcode]} |" for r in new_2023.itertuples()],
        "",
        "## Virtual committees left out",
        "",
        "| code | name | township (2016) |",
        "|---|---|---|",
        *[f"| {r.code} | {r.name} | {r.town} |" for r in dropped.itertuples()],
        "",
    ]
    return "\n".join(lines)


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
    # name, category, anchor (lon, lat) or (channel, position 0..1, bank), note, uncertainty, clause, heritage class
    ("金门闸遗址", "水利遗址", ("北运河", 0.45, "east"),
     "香河县红庙村，北运河东岸（近似）；2016年统计用区划代码中红庙村属钳屯镇（131024108201）", 1500, "L2128, L2130, L2133",
     "未定级不可移动文物"),
    ("文安古城墙", "古城墙", (116.452, 38.868), "文安县城（文安镇）", 800, "L2130, L2152", "省级文物保护单位"),
    ("信安龙泉禅寺", "寺庙", (116.605, 39.030), "霸州市信安镇（推定）", 1500, "L2130", "市县级文物保护单位"),
    ("胜芳张家大院", "传统民居", (116.694, 39.058), "霸州市胜芳镇古镇区", 500, "L2130", "省级文物保护单位"),
    ("胜芳王家大院", "传统民居", (116.697, 39.056), "霸州市胜芳镇古镇区", 500, "L2130", "市县级文物保护单位"),
    ("胜芳杨家大院", "传统民居", (116.691, 39.055), "霸州市胜芳镇古镇区", 500, "L2130", "市县级文物保护单位"),
    ("西码头陈家祠堂", "祠堂", (116.680, 39.052),
     "胜芳镇西码头（推定，文件未写县别；2016年统计用区划代码另有文安县大柳河镇西码头村 131026103223）", 3000, "L2130",
     "未定级不可移动文物"),
    ("太保庄御碑殿", "碑亭", (116.560, 39.010),
     "大清河沿岸（推定，文件未写县别；2016年统计用区划代码有文安县新镇镇、霸州市霸州镇两个太保庄村）", 5000, "L2130",
     "市县级文物保护单位"),
    ("汉代北辛庄遗址", "古遗址", ("赵王新河", 0.55, "north"), "赵王新河北岸（文件 L2130）", 2000, "L2130", "未定级不可移动文物"),
    ("左各庄", "古遗址", ("大清河", 0.2, "south"), "大清河南岸，文安县左各庄镇（文件 L2130）", 2000, "L2130", "未定级不可移动文物"),
]
# The canal plan names the sites but not their protection class; the classes above are assumptions for the demo
# (sites the plan sends to archaeological survey, L2128/L2130, as 未定级), to be replaced from the published lists.
HERITAGE_CLASS_BASIS = "推定（演示）：文件未写保护级别，未与文物部门公布的名录核对"


def heritage_sites(base: Base, channels: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    records, geoms = [], []
    for name, category, anchor, note, uncertainty, clause, heritage_class in HERITAGE:
        if isinstance(anchor[0], str):
            river, frac, bank = anchor
            # The longest reach of the river in Langfang; channel lines point downstream (canal_channels).
            line = max(channels.loc[channels["name"] == river].geometry.values, key=lambda g: g.length)
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
        records.append(dict(name=name, category=category, heritage_class=heritage_class,
                            heritage_class_basis=HERITAGE_CLASS_BASIS, location_note=note,
                            location_uncertainty_m=float(uncertainty), clause=f"廊政办字〔2021〕37号 {clause}"))
        geoms.append(geom)
    frame = _frame(records, geoms)
    frame["county"] = _county_of(base, frame.geometry.values)[1]
    return frame


# --- green corridors and the river management boundary (demo) -----------------------------------------
# Canal plan L2147: a green corridor at least 100 m wide on each bank of 北运河 and 大清河 (赵王新河 is not named).
# The demo corridor is a band beside the channel on each bank: its inner edge follows the centreline at the edge
# of the river's management boundary where it has one (RIVER_BOUNDARY_HALF_WIDTH_M: 北运河, so the corridor lies
# outside the management area, as the required band of the zones does), else at half the water surface
# (WATER_HALF_WIDTH_M, a demo figure); its outer edge planned_width_m further out, both measured
# perpendicular to the centreline in EPSG:4548. Most sections are 105–160 m; some are deliberately 60–95 m over
# 1.5–3.5 km, and some 1–3 km stretches have no corridor, so that the width check has something to find.
GREEN_CORRIDOR_RIVERS = ("北运河", "大清河")
WATER_HALF_WIDTH_M = {"北运河": 30.0, "大清河": 50.0}
CORRIDOR_WIDTH_M = {"normal": (105.0, 160.0), "narrow": (60.0, 95.0)}
CORRIDOR_SECTION_M = {"normal": (800.0, 2500.0), "narrow": (1500.0, 3500.0), "gap": (1000.0, 3000.0)}
CORRIDOR_ODDS = {"normal": 0.76, "narrow": 0.15, "gap": 0.09}
# 河道管理范围 (demo): the channel ± this half-width; a real boundary comes from the water authority's survey.
RIVER_BOUNDARY_HALF_WIDTH_M = {"北运河": 150.0}
CORRIDOR_GRID_M = 0.01
MIN_PIECE_M2 = 100.0  # splitting by county and clipping to the city leave slivers; smaller pieces are dropped


def _corridor_sections(length: float, rng) -> list[list]:
    """[start, end, kind, planned width] along one bank of one reach; a shortfall is always followed by a
    normal section, the last section absorbs a remainder under 300 m, and a gap is never shorter than 1 km."""
    kinds, odds = list(CORRIDOR_ODDS), list(CORRIDOR_ODDS.values())
    out, s = [], 0.0
    while s < length - 1e-6:
        kind = str(rng.choice(kinds, p=odds)) if not out or out[-1][2] == "normal" else "normal"
        end = min(s + rng.uniform(*CORRIDOR_SECTION_M[kind]), length)
        end = length if length - end < 300 else end
        if kind == "gap" and end - s < CORRIDOR_SECTION_M["gap"][0]:  # cut short by the reach's end
            kind, end = "normal", length
        width = float(round(rng.uniform(*CORRIDOR_WIDTH_M[kind]))) if kind != "gap" else None
        out.append([s, end, kind, width])
        s = end
    return out


def _ensure_shortfalls(sections: list[list], rng) -> None:
    """Make sure one bank has at least one narrow section and one gap: the longest normal sections become them."""
    for kind in ("narrow", "gap"):
        if any(sec[2] == kind for sec in sections):
            continue
        normal = [sec for sec in sections if sec[2] == "normal"]
        if not normal:
            return
        sec = max(normal, key=lambda t: t[1] - t[0])
        sec[2] = kind
        sec[3] = float(round(rng.uniform(*CORRIDOR_WIDTH_M["narrow"]))) if kind == "narrow" else None


def corridor_inner_offset(river: str) -> float:
    """Where a river's demo corridor starts, metres from the centreline: the management boundary's half-width
    where the river has one (the corridor lies outside the management area), else half the water surface."""
    return RIVER_BOUNDARY_HALF_WIDTH_M.get(river, WATER_HALF_WIDTH_M[river])


def green_corridors(base: Base, channels: gpd.GeoDataFrame, rng) -> gpd.GeoDataFrame:
    """Green-corridor polygons on both banks of 北运河 and 大清河 inside Langfang (demo), built in EPSG:4548.

    bank is left/right looking downstream (channel lines point in the flow direction). Each section is the
    area between single-sided offsets of the centreline at inner_offset_m and inner_offset_m + planned_width_m;
    polygons are split by county and clipped to the city, so a clipped polygon is narrower than planned.
    chainage_* are metres along the river's reaches in Langfang from its upstream end."""
    if channels.crs is None or channels.crs.to_epsg() != 4548:
        raise ValueError("channels must be in EPSG:4548")
    records, geoms = [], []
    for river in GREEN_CORRIDOR_RIVERS:
        reaches = list(channels.loc[channels["name"] == river].geometry.values)  # upstream → downstream
        inner = corridor_inner_offset(river)
        for bank, side in (("left", 1.0), ("right", -1.0)):
            plan = [_corridor_sections(line.length, rng) for line in reaches]
            _ensure_shortfalls([sec for sections in plan for sec in sections], rng)
            offset = 0.0
            for line, sections in zip(reaches, plan):
                placed = shapely.Polygon()
                for s0, s1, kind, width in sections:
                    if kind == "gap":
                        continue
                    sub = substring(line, s0, s1)
                    band = shapely.difference(sub.buffer(side * (inner + width), single_sided=True),
                                              sub.buffer(side * inner, single_sided=True))
                    band = band.difference(placed)  # inside a bend, consecutive sections would overlap
                    placed = placed.union(band)
                    for adcode, name, county in zip(base.counties["adcode"], base.counties["name"],
                                                    base.counties.geometry):
                        # Snapped to a 1 cm grid: overlay leaves vertices 1e-11 m apart, which turn into
                        # self-intersections once the polygon is stored in degrees.
                        piece = shapely.set_precision(band.intersection(county), CORRIDOR_GRID_M)
                        for part in getattr(piece, "geoms", [piece]):
                            if part.geom_type != "Polygon" or part.area < MIN_PIECE_M2:
                                continue
                            records.append(dict(river=river, bank=bank, county=name, county_adcode=int(adcode),
                                                planned_width_m=width, inner_offset_m=inner,
                                                chainage_start_m=round(offset + s0, 1),
                                                chainage_end_m=round(offset + s1, 1)))
                            geoms.append(part)
                offset += line.length
    return _frame(records, geoms)


def river_boundaries(base: Base, channels: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """河道管理范围 (demo): the channel ± RIVER_BOUNDARY_HALF_WIDTH_M, flat at the reach ends, clipped to
    Langfang; one feature per river (北运河 only)."""
    records, geoms = [], []
    for river, half in RIVER_BOUNDARY_HALF_WIDTH_M.items():
        lines = channels.loc[channels["name"] == river].geometry.values
        polygon = shapely.union_all(shapely.buffer(lines, half, cap_style="flat")).intersection(base.city)
        records.append(dict(river=river, half_width_m=half))
        geoms.append(polygon)
    return _frame(records, geoms)


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


# Land register codes (NY/T 2539 / GB/T 21010 code lists, see field-notes §4.3); the demo draws from them.
SYQXZ = {"30": "集体土地所有权", "31": "村民小组", "32": "村级集体经济组织", "33": "乡级集体经济组织"}
DKLB = {"10": "承包地块", "21": "自留地", "22": "机动地", "23": "开荒地", "99": "其他集体土地"}
TDLYLX = {"011": "水田", "012": "水浇地", "013": "旱地"}
TDYT = {"1": "种植业", "2": "林业", "3": "畜牧业", "4": "渔业", "5": "非农业用途"}
CURRENT_USES = ("耕地", "林木", "坑塘", "建筑", "其他")
BOUNDARY_OTHER = ("道路", "沟渠", "其他")  # what a 四至 side names when no plot adjoins it
NON_FARM_SHARE = 0.04  # share of basic-farmland plots the demo puts under trees, ponds or buildings
EXPIRING_VILLAGE_SHARE = 0.15  # villages whose second-round contracts end 2021–2027 instead of 2028
SIDE_MISMATCH_SHARE = 0.02  # plots whose recorded 四至 has one side wrong, for the 四至 check


def _strip_runs(selected_cm: np.ndarray, height: int, owner_cm: np.ndarray, rng, max_cells: int = 4,
                p_break: float = 0.3) -> np.ndarray:
    """Group selected grid cells (flat column-major indices, sorted) into strip fields of 1..max_cells cells
    along a column: a new plot starts at a column/owner change, a gap, at random, or after max_cells cells.
    Returns the plot number of each cell."""
    n = len(selected_cm)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    col, row = np.divmod(selected_cm, height)
    start = np.ones(n, dtype=bool)
    start[1:] = (col[1:] != col[:-1]) | (row[1:] != row[:-1] + 1) | (owner_cm[1:] != owner_cm[:-1])
    start |= rng.random(n) < p_break
    pid = np.cumsum(start) - 1
    first = np.flatnonzero(start)
    pos = np.arange(n) - first[pid]
    start |= (pos % max_cells == 0)
    return np.cumsum(start) - 1


def _nearest_village_in_county(counties: gpd.GeoDataFrame, rural: pd.DataFrame, rows, cols, shape, transform,
                               sampling) -> tuple[np.ndarray, np.ndarray]:
    """Per grid cell, the distance to and index of the nearest village of the county the cell lies in (-1 for
    cells a county boundary touches or outside every county): a plot's FBFBM, from its village's code, then
    begins with the adcode of the county its geometry lies in, as the register's own validation demands."""
    touched = rasterize([(g, 1) for g in counties.geometry.values], shape, transform=transform, fill=0,
                        dtype="uint8", all_touched=True, merge_alg=rasterio.enums.MergeAlg.add)
    dist = np.full(shape, np.inf)
    owner = np.full(shape, -1, dtype=np.int32)
    for adcode, geom in zip(counties["adcode"].astype(int), counties.geometry.values):
        mine = np.flatnonzero(rural["county_adcode"].to_numpy().astype(int) == adcode)
        inside = rasterize([(geom, 1)], shape, transform=transform, fill=0, dtype="uint8", all_touched=True) == 1
        inside &= touched == 1  # touched by this county only: wholly inside it
        if not len(mine) or not inside.any():
            continue
        rr, cc = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
        r0, r1 = min(rr[0], rows[mine].min()), max(rr[-1], rows[mine].max()) + 1
        c0, c1 = min(cc[0], cols[mine].min()), max(cc[-1], cols[mine].max()) + 1
        seeds = np.ones((r1 - r0, c1 - c0), dtype=bool)
        seeds[rows[mine] - r0, cols[mine] - c0] = False
        d, (ir, ic) = ndimage.distance_transform_edt(seeds, sampling=sampling, return_indices=True)
        index = np.full(seeds.shape, -1, dtype=np.int32)
        index[rows[mine] - r0, cols[mine] - c0] = mine
        win = inside[r0:r1, c0:c1]
        dist[r0:r1, c0:c1][win] = d[win]
        owner[r0:r1, c0:c1][win] = index[ir, ic][win]
    return dist, owner


def plots(base: Base, village_frame: gpd.GeoDataFrame, farmland, basic_farmland, n: int, rng,
          cell_w: float = 20.0, cell_h: float = 42.0) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Strip fields of 1–5 亩 (1–4 cells of 20 m × 42 m along a column) on farmland, nearest to each village first.

    Returns (plots, contractor households). A distance transform gives every cell its nearest village,
    so plots never overlap and each belongs to one 发包方 (village collective, group by quadrant). Contracts
    start per village (most 1998, some villages 1991–1997 so that they expire 2021–2027); the recorded
    四至 names the adjoining plot's contractor, or a road/ditch, with a few sides wrong on purpose."""
    x0, y0, x1, y1 = base.city.bounds
    width, height = int((x1 - x0) / cell_w) + 1, int((y1 - y0) / cell_h) + 1
    transform = from_origin(x0, y1, cell_w, cell_h)
    farm_mask = rasterize([(g, 1) for g in getattr(farmland, "geoms", [farmland])], (height, width),
                          transform=transform, fill=0, dtype="uint8", all_touched=False).astype(bool)
    farm_mask = ndimage.binary_erosion(farm_mask)  # whole cells inside farmland, not just their centres
    rural = village_frame[village_frame["name"].str.endswith(RURAL_COMMITTEES)].reset_index(drop=True)
    vx, vy = rural.geometry.x.values, rural.geometry.y.values
    cols = ((vx - x0) / cell_w).astype(int)
    rows = ((y1 - vy) / cell_h).astype(int)
    dist, owner = _nearest_village_in_county(base.counties, rural, rows, cols, (height, width), transform,
                                             (cell_h, cell_w))
    farm_mask &= owner >= 0  # cells wholly inside one county that has villages
    # Column-major order: a strip field runs north–south along one column.
    farm_cm = np.flatnonzero(farm_mask.T.ravel())
    dist_cm = dist.T.ravel()[farm_cm]
    owner_cm_all = owner.T.ravel()[farm_cm]
    take = min(len(farm_cm), int(n * 2.6) + 1000)
    while True:
        part = np.sort(np.argpartition(dist_cm, take - 1)[:take]) if take < len(farm_cm) else np.arange(len(farm_cm))
        cells = farm_cm[part]
        pid = _strip_runs(cells, height, owner_cm_all[part], rng)
        count = int(pid[-1]) + 1 if len(pid) else 0
        if count >= n or take >= len(farm_cm):
            break
        take = min(len(farm_cm), int(take * 1.4))
    if count < n:
        raise ValueError(f"only {count} strip fields fit on the farmland for {n} plots")
    pdist = np.full(count, np.inf)
    np.minimum.at(pdist, pid, dist_cm[part])
    keep_plot = np.zeros(count, dtype=bool)
    keep_plot[np.argpartition(pdist, n - 1)[:n]] = True
    keep = keep_plot[pid]
    cells, pid = cells[keep], pid[keep]
    _, pid = np.unique(pid, return_inverse=True)
    c_all, r_all = np.divmod(cells, height)
    first = np.flatnonzero(np.r_[True, pid[1:] != pid[:-1]])
    last = np.r_[first[1:] - 1, len(pid) - 1]
    c, r_top, r_bot = c_all[first], r_all[first], r_all[last]
    own = owner[r_top, c]
    left = x0 + c * cell_w
    top = y1 - r_top * cell_h
    bottom = y1 - (r_bot + 1) * cell_h
    inset = 1.0  # field ridges between plots
    jitter = rng.uniform(0, 1.5, len(c))
    geoms = shapely.box(left + inset, bottom + inset + jitter, left + cell_w - inset, top - inset)
    # Group (组) by quadrant around the village, household by order within the group.
    qx = (left + cell_w / 2) >= vx[own]
    qy = ((top + bottom) / 2) >= vy[own]
    group = 1 + qx.astype(int) + 2 * qy.astype(int)
    village_code = rural["code"].values[own]
    fbfbm = np.char.add(village_code.astype(str), np.char.zfill(group.astype(str), 2))
    frame = pd.DataFrame({"fbfbm": fbfbm, "village_code": village_code,
                          "county_adcode": rural["county_adcode"].values[own],
                          "village": rural["name"].values[own], "_own": own})
    frame["seq"] = frame.groupby("fbfbm").cumcount()
    frame["household"] = frame["seq"] // rng.integers(2, 5)
    frame["dkbm"] = frame["fbfbm"] + (frame["seq"] + 1).map("{:05d}".format)
    frame["cbfbm"] = frame["fbfbm"] + (frame["household"] + 1).map("{:04d}".format)
    frame["cbhtbm"] = frame["cbfbm"] + "J"
    stem = frame["village"].str.replace(r"(村委会|村)$", "", regex=True).str.replace(r"村$", "", regex=True)
    frame["dkmc"] = stem + np.char.add(
        rng.choice(["东地", "西地", "南洼", "北洼", "大块", "长条地", "坟前", "渠边"], len(frame)), "")
    households = frame.drop_duplicates("cbfbm")[["cbfbm", "fbfbm", "village", "village_code", "county_adcode", "_own"]]
    households = households.reset_index(drop=True)
    households["name"] = _person_names(rng, len(households))
    households["id_number"] = _id_numbers(rng, households["county_adcode"].values)
    households["phone"] = _phones(rng, len(households))
    households["members"] = rng.integers(1, 7, len(households))
    households["plot_count"] = households["cbfbm"].map(frame["cbfbm"].value_counts()).astype(int)
    # Second-round contracts start per village: most in 1998 (ending 2028), some earlier (ending 2021–2027).
    expiring = rng.random(len(rural)) < EXPIRING_VILLAGE_SHARE
    start_year = np.where(expiring, rng.integers(1991, 1998, len(rural)), 1998)
    village_start = pd.to_datetime(pd.DataFrame({"year": start_year, "month": 3, "day": 1})) + \
        pd.to_timedelta(rng.integers(0, 300, len(rural)), unit="D")
    starts = pd.DatetimeIndex(village_start.values[households["_own"].values])
    households["contract_start"] = starts.strftime("%Y-%m-%d")
    households["contract_end"] = (starts + pd.DateOffset(years=30) - pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    households = households.drop(columns="_own")
    frame = frame.merge(households[["cbfbm", "name", "id_number", "phone", "contract_start", "contract_end"]],
                        on="cbfbm", how="left")
    metric_area = shapely.area(geoms)
    frame["measured_area_mu"] = np.round(metric_area / (10000 / 15), 2)
    frame["contract_area_mu"] = np.round(frame["measured_area_mu"] * rng.uniform(0.82, 1.0, len(frame)), 2)
    frame["transfer_status"] = "未流转"  # set from the transfer register (land_register)
    frame["mortgage_status"] = "未抵押"
    basic_mask = rasterize([(g, 1) for g in getattr(basic_farmland, "geoms", [basic_farmland])], (height, width),
                           transform=transform, fill=0, dtype="uint8").astype(bool)
    frame["is_basic_farmland"] = basic_mask[r_top, c]
    _plot_attributes(frame, rng)
    _recorded_sides(frame, c, r_top, r_bot, height, rng)
    frame = frame.rename(columns={"name": "contractor_name", "id_number": "contractor_id_number",
                                  "phone": "contractor_phone"})
    plots_frame = gpd.GeoDataFrame(frame.drop(columns=["seq", "household", "village", "_own"]), geometry=geoms,
                                   crs=METRIC_CRS)
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


def _plot_attributes(frame: pd.DataFrame, rng) -> None:
    """NY/T 2539 plot attributes: ownership, class, land-use type, grade, use, current use (现状)."""
    m = len(frame)
    frame["syqxz"] = rng.choice(["31", "32", "30"], m, p=[0.8, 0.15, 0.05])
    frame["dklb"] = rng.choice(["10", "21", "22", "23"], m, p=[0.94, 0.03, 0.02, 0.01])
    frame["tdlylx"] = rng.choice(["012", "013", "011"], m, p=[0.7, 0.29, 0.01])
    frame["dldj"] = np.char.zfill(rng.integers(3, 9, m).astype(str), 2)
    frame["tdyt"] = "1"
    use = np.full(m, "耕地", dtype=object)
    basic = frame["is_basic_farmland"].values
    bad = basic & (rng.random(m) < NON_FARM_SHARE)
    use[bad] = rng.choice(["林木", "坑塘", "建筑"], int(bad.sum()))
    other = ~basic & (rng.random(m) < 0.02)
    use[other] = rng.choice(["林木", "其他"], int(other.sum()))
    frame["current_use"] = use


def _recorded_sides(frame: pd.DataFrame, col, r_top, r_bot, height: int, rng) -> None:
    """Recorded 四至 (DKDZ/DKXZ/DKNZ/DKBZ): the adjoining plot's contractor, else a road, ditch or other;
    SIDE_MISMATCH_SHARE of the plots get one side wrong. The 指界人 (ZJRXM) is the contractor."""
    key_top = col.astype(np.int64) * height + r_top  # cell index (column-major) of each plot's top cell
    key_bot = col.astype(np.int64) * height + r_bot
    order = np.argsort(key_top)
    sorted_top = key_top[order]
    # A plot's cells are contiguous in one column: map every covered cell to its plot.
    lengths = (r_bot - r_top + 1).astype(np.int64)
    cell_plot = np.repeat(np.arange(len(col)), lengths)
    cell_key = np.repeat(key_top, lengths) + (np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths))
    corder = np.argsort(cell_key)
    cell_key, cell_plot = cell_key[corder], cell_plot[corder]
    del sorted_top, order

    def neighbour(keys):
        i = np.searchsorted(cell_key, keys)
        i = np.clip(i, 0, len(cell_key) - 1)
        hit = cell_key[i] == keys
        return np.where(hit, cell_plot[i], -1)

    mid = col.astype(np.int64) * height + (r_top + r_bot) // 2
    sides = {"dkdz": neighbour(mid + height), "dkxz": neighbour(mid - height),
             "dknz": neighbour(key_bot + 1), "dkbz": neighbour(key_top - 1)}
    names = frame["name"].values
    m = len(frame)
    for field, nb in sides.items():
        text = rng.choice(BOUNDARY_OTHER, m, p=[0.5, 0.3, 0.2]).astype(object)
        has = nb >= 0
        text[has] = names[nb[has]]
        frame[field] = text
    wrong = np.flatnonzero(rng.random(m) < SIDE_MISMATCH_SHARE)
    side = rng.choice(list(sides), len(wrong))
    for field in sides:
        idx = wrong[side == field]
        frame.loc[frame.index[idx], field] = _person_names(rng, len(idx))
    frame["zjrxm"] = names


# --- land register (非空间登记簿): employers, contracts, transfers, mortgages --------------------------------
TRANSFER_FORMS = ("出租", "转包", "入股", "互换", "代耕代种", "其他")
TRANSFER_FORM_SHARE = (0.5, 0.25, 0.08, 0.05, 0.07, 0.05)
TRANSFER_AREA_SHARE = 0.30  # about 30% of the contracted area is transferred (issue #9 §2)
STANDARD_FORM_SHARE = 0.82  # the rest oral: below the 90% target, so the roll-ups have something to show
LENDERS = ("河北省农村信用社廊坊分社", "中国农业银行廊坊分行", "中国邮政储蓄银行廊坊分行", "廊坊银行", "河北银行廊坊分行")
TRANSFEREE_KINDS = ("家庭农场", "农民专业合作社", "农业发展有限公司", "种植大户")
MORTGAGE_STATUS_DATE = pd.Timestamp("2022-01-01")  # the demo register's date: released before, in force after
TRANSFER_USES = ("种植粮食作物", "种植蔬菜", "种植经济作物", "种植粮食作物", "种植粮食作物")


def land_register(plots_frame: gpd.GeoDataFrame, households: gpd.GeoDataFrame, village_frame: gpd.GeoDataFrame,
                  rng, n_mortgages: int = 48) -> dict[str, pd.DataFrame]:
    """The non-spatial register that goes with the demo plots: 发包方, 承包方, 承包合同, 流转合同, 抵押.

    Sets plots_frame.transfer_status / mortgage_status from the transfers and mortgages it draws."""
    m = len(plots_frame)
    names = village_frame.set_index("code")["name"]
    employers = plots_frame[["fbfbm", "village_code", "county_adcode"]].drop_duplicates("fbfbm").reset_index(drop=True)
    vname = names.reindex(employers["village_code"]).fillna("").values
    employers["name"] = np.char.add(np.char.add(vname.astype(str), "第"),
                                    np.char.add(employers["fbfbm"].str[-2:].astype(int).astype(str).values, "村民小组"))
    hh = pd.DataFrame(households.drop(columns=["geometry", "demo"], errors="ignore"))
    area = plots_frame.groupby("cbfbm")["contract_area_mu"].sum().round(2)
    contracts = hh[["cbfbm", "fbfbm", "contract_start", "contract_end", "plot_count"]].copy()
    contracts.insert(0, "cbhtbm", contracts["cbfbm"] + "J")
    contracts["cbfs"] = "110"  # 家庭承包
    contracts["htzmj"] = contracts["cbfbm"].map(area).values
    contracts = contracts.rename(columns={"contract_start": "cbqxq", "contract_end": "cbqxz", "plot_count": "cbdkzs"})
    # Transfers: whole households (their contract) transfer all their plots to one transferee.
    hh_transfer = rng.random(len(hh)) < TRANSFER_AREA_SHARE
    transferring = set(hh["cbfbm"].values[hh_transfer])
    tmask = plots_frame["cbfbm"].isin(transferring).values
    tp = plots_frame.loc[tmask, ["dkbm", "cbfbm", "cbhtbm", "fbfbm", "contract_area_mu", "contract_end"]]
    tp = tp.reset_index(drop=True)
    k = len(tp)
    form = rng.choice(TRANSFER_FORMS, k, p=TRANSFER_FORM_SHARE)
    # One transferee per village group, one contract per household: plots of a household share its LZHTBM.
    hh_rank = tp["cbfbm"].rank(method="dense").astype(int).values
    start = pd.to_datetime("2015-01-01") + pd.to_timedelta(rng.integers(0, 365 * 10, k), unit="D")
    hh_first = pd.Series(np.arange(k)).groupby(hh_rank).transform("min").values
    start = start[hh_first]
    years = rng.choice([5, 10, 10, 15, 15, 20], k)[hh_first]
    end = start + pd.to_timedelta(years * 365, unit="D")
    # A transfer may run past the second-round end: the contract is extended by 30 years (L1189).
    cend = (pd.to_datetime(tp["contract_end"]) + pd.DateOffset(years=30)).values
    end = np.minimum(end.values, cend)
    transferee_kind = rng.choice(TRANSFEREE_KINDS, k)[hh_first]
    surname = rng.choice(list("王李张刘陈杨赵黄周吴"), k)[hh_first]
    transferee = np.char.add(np.char.add(np.char.add(tp["fbfbm"].str[6:9].values.astype(str), "号"), surname),
                             np.char.add("氏", transferee_kind))
    standard = (rng.random(k) < STANDARD_FORM_SHARE)[hh_first]
    transfers = pd.DataFrame({
        "lzhtbm": tp["cbhtbm"].str[:-1].values + "L" + pd.Series(start).dt.strftime("%Y").values,
        "cbhtbm": tp["cbhtbm"].values, "cbfbm": tp["cbfbm"].values, "dkbm": tp["dkbm"].values,
        "transferee": transferee, "lzfs": form[hh_first], "lzqx_years": years,
        "start_date": pd.DatetimeIndex(start).strftime("%Y-%m-%d"),
        "end_date": pd.DatetimeIndex(end).strftime("%Y-%m-%d"),
        "lzmj": tp["contract_area_mu"].values, "use": rng.choice(TRANSFER_USES, k),
        "standard_form": standard})
    status = pd.Series(transfers["lzfs"].values, index=transfers["dkbm"].values)
    plots_frame["transfer_status"] = plots_frame["dkbm"].map(status).fillna("未流转").values
    # Mortgages on management rights: a few dozen transferees or households, on some of their plots.
    lz_ids = transfers["lzhtbm"].drop_duplicates().values
    chosen = rng.choice(lz_ids, min(n_mortgages, len(lz_ids)), replace=False) if len(lz_ids) else np.array([])
    rows = []
    mortgaged = transfers[transfers["lzhtbm"].isin(set(chosen))]
    first_of = mortgaged.drop_duplicates("lzhtbm").set_index("lzhtbm")
    by_lz = mortgaged.groupby("lzhtbm")["dkbm"].apply(list)
    for i, lz in enumerate(sorted(chosen)):
        t = first_of.loc[lz]
        s = max(pd.Timestamp(t["start_date"]), pd.Timestamp("2019-01-01")) + \
            pd.Timedelta(days=int(rng.integers(0, 365 * 6)))
        term = int(rng.choice([1, 2, 3]))
        end = s + pd.DateOffset(years=term)
        base = dict(dyid=f"DY{s.year}{i + 1:04d}", lzhtbm=lz, cbfbm=t["cbfbm"], borrower=t["transferee"],
                    lender=str(rng.choice(LENDERS)), amount_wan=float(np.round(rng.uniform(10, 60), 1)),
                    term_years=term, start_date=s.strftime("%Y-%m-%d"), end_date=end.strftime("%Y-%m-%d"),
                    status="抵押中" if end >= MORTGAGE_STATUS_DATE else "已解除")
        rows += [dict(base, dkbm=dkbm) for dkbm in by_lz[lz]]
    mortgages = pd.DataFrame(rows, columns=["dyid", "dkbm", "lzhtbm", "cbfbm", "borrower", "lender", "amount_wan",
                                            "term_years", "start_date", "end_date", "status"])
    if len(mortgages):  # one amount per mortgage (万元), repeated on each of its plots' rows
        mstatus = pd.Series(mortgages["status"].values, index=mortgages["dkbm"].values)
        plots_frame["mortgage_status"] = plots_frame["dkbm"].map(mstatus).fillna("未抵押").values
    hh_table = hh[["cbfbm", "fbfbm", "name", "id_number", "phone", "members", "village_code", "county_adcode"]]
    return dict(employers=employers, households=hh_table, contracts=contracts, transfers=transfers,
                mortgages=mortgages)


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
    frame["point_id"] = [f"UP-{i:03d}" for i in range(1, len(frame) + 1)]  # stable: the seeded order
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
    """The waterlogging points that are not underpasses (the underpasses are monitored points of their own,
    UP-*: a copy here would be a second point at the same place, counted twice in closures and never the
    target of a report by location). `unders` is kept in the signature for the build order."""
    records, geoms = [], []
    for name, ll, hist in WATERLOGGING:
        records.append(dict(name=name, history=hist, name_source="新闻报道" if "虚构" not in name else "虚构"))
        geoms.append(shapely.Point(_metric(*ll)))
    frame = _frame(records, geoms)
    frame["district"] = _district_of(districts, frame.geometry.values)
    frame["point_id"] = [f"WL-{i:03d}" for i in range(1, len(frame) + 1)]  # stable: the seeded order
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
        dst.update_tags(demo="true", units="metre", source="gis-service build-layers (gis_service/demo.py, seeded)")
    tmp.replace(path)
