"""Demo layers: inside the real county polygons, marked demo; villages from the real NBS 2016 list; canal
channels in flow direction; green corridors with known shortfalls."""

import csv
import math

import numpy as np
import pandas as pd
import shapely
from pyproj import Geod
from scipy.optimize import root

from gis_service import crs, demo
from gis_service.config import REPO_ROOT
from gis_service.crs import METRIC_CRS

TOWNSHIPS = pd.read_csv(REPO_ROOT / "layers/admin/langfang_townships.csv", dtype={"code": str})
VILLAGE_LIST = REPO_ROOT / "layers/canal/langfang_adcode_nbs2016_gcj02.csv"


def _village_rows() -> tuple[list[dict], dict[str, str]]:
    """Read the committed NBS 2016 list with the csv module: village rows that are not virtual, town names."""
    with open(VILLAGE_LIST, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    towns = {r["code"][:9]: r["name"] for r in rows if r["level"] == "town"}
    return [r for r in rows if r["level"] == "village" and r["dummy"] == "f"], towns


def test_every_demo_feature_is_marked_and_inside_langfang(catalog, store):
    city = shapely.union_all(store.read_frame(catalog.get("counties")).geometry.values).buffer(1e-6)
    for layer in catalog:
        if not layer.demo or layer.is_raster or layer.source or layer.derived:
            continue
        frame = store.read_frame(layer)
        assert len(frame) > 0, layer.id
        if layer.id == "villages":  # real Amap points are not demo, generated positions are
            assert (frame["demo"] == (frame["position_source"] == "generated")).all()
        elif layer.id != "canal_channels":  # 北运河 is the real river line
            assert frame["demo"].all(), layer.id
        inside = frame.geometry.representative_point().within(city)
        assert inside.all(), f"{layer.id}: {int((~inside).sum())} outside"


def test_villages_are_the_real_list_with_its_names_and_codes(catalog, store):
    rows, towns_2016 = _village_rows()
    villages = store.read_frame(catalog.get("villages")).set_index("code")
    assert len(villages) == len(rows) and villages.index.is_unique
    assert villages.index.str.fullmatch(r"\d{12}").all()
    expected = {r["code"]: r["name"] for r in rows}
    assert villages["name"].to_dict() == expected
    assert (villages.index.str[:6].astype(int) == villages["county_adcode"]).all()
    assert (villages.index.str[:9] == villages["township_code"]).all()
    # Township name: the 2023 name where the 2023 table has the code, else the 2016 name (never empty).
    names_2023 = dict(zip(TOWNSHIPS["code"], TOWNSHIPS["name"]))
    want = [names_2023.get(c[:9], towns_2016[c[:9]]) for c in villages.index]
    assert villages["township"].tolist() == want
    assert set(villages["township_code_2023"].dropna()) <= set(TOWNSHIPS["code"])
    assert "131071" not in set(villages.index.str[:6])  # 开发区: no village of the 2016 list is coded in it


def _invert_gcj02(lon: float, lat: float) -> tuple[float, float]:
    """GCJ-02 → WGS84 by a general root finder on the forward formula (not the service's fixed-point loop)."""
    sol = root(lambda w: np.array(crs.wgs84_to_gcj02(w[0], w[1])) - [lon, lat], x0=[lon, lat], tol=1e-13)
    assert sol.success
    return float(sol.x[0]), float(sol.x[1])


def test_real_village_points_are_converted_from_gcj02(catalog, store):
    rows, _ = _village_rows()
    with_point = {r["code"]: (float(r["longitude"]), float(r["latitude"])) for r in rows if r["longitude"]}
    villages = store.read_frame(catalog.get("villages")).set_index("code")
    real = villages[villages["position_source"] == "amap_gcj02_converted"]
    assert set(real.index) == set(with_point) and len(real) == 183
    assert (~real["demo"]).all() and (real["position_uncertainty_m"] < 100).all()
    geod = Geod(ellps="WGS84")
    for code, (glon, glat) in with_point.items():
        p = real.geometry[code]
        wlon, wlat = _invert_gcj02(glon, glat)
        assert geod.inv(p.x, p.y, wlon, wlat)[2] < 1.0, code
        assert 300 < geod.inv(p.x, p.y, glon, glat)[2] < 800, code  # converted once, not left in GCJ-02


def test_generated_villages_lie_in_their_county_with_a_stated_spread(catalog, store):
    villages = store.read_frame(catalog.get("villages"))
    generated = villages[villages["position_source"] == "generated"]
    assert len(generated) == len(villages) - 183
    assert generated["demo"].all() and (generated["position_uncertainty_m"] >= 1000).all()
    counties = store.read_frame(catalog.get("counties")).set_index("adcode")
    host = villages["county_adcode"].replace({131071: 131003})  # 开发区 lies inside 广阳区
    inside = [counties.geometry[a].contains(p) for a, p in zip(host, villages.geometry)]
    assert all(inside)


def test_township_check_report_is_current():
    committed = (REPO_ROOT / "layers/canal/villages_township_check.md").read_text(encoding="utf-8")
    assert committed == demo.village_township_check(demo.load_base(REPO_ROOT / "layers"))
    assert "北位乡" in committed  # a 2016 township with no 2023 counterpart by name is reported


def test_at_least_60_villages_within_3km_of_the_canal_rivers(catalog, store):
    channels = store.read_frame(catalog.get("canal_channels")).to_crs(METRIC_CRS)
    villages = store.read_frame(catalog.get("villages")).to_crs(METRIC_CRS)
    near = villages.distance(shapely.union_all(channels.geometry.values)) <= 3000
    assert near.sum() >= 60
    assert set(channels["name"]) == {"北运河", "大清河", "赵王新河"}


def test_channel_lines_point_downstream(catalog, store):
    channels = store.read_frame(catalog.get("canal_channels")).to_crs(METRIC_CRS)
    bei = channels[channels["name"] == "北运河"].geometry.tolist()
    (x0, y0), (x1, y1) = bei[0].coords[0], bei[-1].coords[-1]
    assert x0 < x1 and y0 > y1  # enters from Beijing in the north-west, leaves towards Tianjin in the south-east
    # Each reach agrees with the whole river: measured along the real 1:4M line from its Beijing (northern) end.
    rivers = store.read_frame(catalog.get("rivers")).to_crs(METRIC_CRS)
    raw = shapely.line_merge(shapely.union_all(rivers.loc[rivers["name"] == "北运河"].geometry.values))
    if raw.coords[0][1] < raw.coords[-1][1]:
        raw = raw.reverse()
    for reach in bei:
        assert raw.project(shapely.Point(reach.coords[0])) < raw.project(shapely.Point(reach.coords[-1]))
    for name in ("大清河", "赵王新河"):
        for reach in channels.loc[channels["name"] == name].geometry:
            assert reach.coords[0][0] < reach.coords[-1][0], name  # west → east


def test_green_corridors_only_on_bei_and_daqing_on_the_stated_bank(catalog, store):
    corridors = store.read_frame(catalog.get("green_corridors")).to_crs(METRIC_CRS)
    channels = store.read_frame(catalog.get("canal_channels")).to_crs(METRIC_CRS)
    assert set(corridors["river"]) == {"北运河", "大清河"}
    assert set(corridors["bank"]) == {"left", "right"}
    for row in corridors.itertuples():
        reach = min(channels.loc[channels["name"] == row.river].geometry, key=lambda g: g.distance(row.geometry))
        p = row.geometry.representative_point()
        s = reach.project(p)
        a, b = reach.interpolate(max(s - 5, 0)), reach.interpolate(min(s + 5, reach.length))
        cross = (b.x - a.x) * (p.y - a.y) - (b.y - a.y) * (p.x - a.x)  # > 0: left of the flow direction
        assert (cross > 0) == (row.bank == "left"), row


def _transect(reach, s: float, bank: str, band, reach_out: float = 400.0) -> float:
    """Length of band along the perpendicular to the reach at chainage s, on the bank's side (looking downstream)."""
    a, b = reach.interpolate(max(s - 1, 0)), reach.interpolate(min(s + 1, reach.length))
    norm = math.hypot(b.x - a.x, b.y - a.y)
    side = 1 if bank == "left" else -1
    nx, ny = -(b.y - a.y) / norm * side, (b.x - a.x) / norm * side
    p = reach.interpolate(s)
    return band.intersection(shapely.LineString([(p.x, p.y), (p.x + nx * reach_out, p.y + ny * reach_out)])).length


def test_green_corridors_are_mostly_100m_with_narrow_sections_and_gaps(catalog, store):
    corridors = store.read_frame(catalog.get("green_corridors")).to_crs(METRIC_CRS)
    channels = store.read_frame(catalog.get("canal_channels")).to_crs(METRIC_CRS)
    key = ["river", "bank", "chainage_start_m", "chainage_end_m", "planned_width_m"]
    rows = []
    for (river, bank, c0, c1, planned), group in corridors.groupby(key):
        reaches = channels.loc[channels["name"] == river].geometry.tolist()  # stored upstream → downstream
        starts = np.cumsum([0.0] + [r.length for r in reaches])
        assert c1 <= starts[-1] + 1  # chainage runs along the river's reaches in Langfang
        i = int(np.searchsorted(starts, (c0 + c1) / 2) - 1)  # the reach holding the section's middle
        band = shapely.union_all(group.geometry.values)
        # Measured like a surveyor: perpendicular transects every 50 m, 100 m clear of the section's ends.
        stations = np.arange(c0 + 100, c1 - 100, 50.0) - starts[i]
        widths = [_transect(reaches[i], s, bank, band) for s in stations]
        rows.append(dict(river=river, bank=bank, start=c0, end=c1, planned=planned,
                         width=float(np.median(widths)) if widths else np.nan))
    sections = pd.DataFrame(rows)
    sections["length"] = sections["end"] - sections["start"]
    for river, group in sections.groupby("river"):
        long = group[group["length"] >= 1000]
        narrow = long[(long["width"] > 55) & (long["width"] < 97)]
        wide = long[long["width"] >= 100]
        assert len(narrow) >= 1 and len(wide) >= 5, river
        assert wide["length"].sum() > 3 * narrow["length"].sum(), river  # mostly at least 100 m
        # Where the city boundary does not clip it, a section measures its planned width.
        assert ((long["width"] - long["planned"]).abs() < 1).mean() > 0.8, river
    # Gaps: stretches of 1–3 km along a bank with no corridor.
    gaps = []
    for _, group in sections.groupby(["river", "bank"]):
        spans = sorted(zip(group["start"], group["end"]))
        gaps += [b0 - a1 for (_, a1), (b0, _) in zip(spans, spans[1:]) if b0 - a1 > 1]
    assert len([g for g in gaps if g >= 1000]) >= 3 and max(gaps) < 3100


def test_river_boundary_is_bei_canal_plus_minus_its_half_width(catalog, store):
    boundary = store.read_frame(catalog.get("river_boundaries")).to_crs(METRIC_CRS)
    channels = store.read_frame(catalog.get("canal_channels")).to_crs(METRIC_CRS)
    assert boundary["river"].tolist() == ["北运河"] and boundary["demo"].all()
    bei = channels.loc[channels["name"] == "北运河"].geometry
    polygon, half = boundary.geometry.iloc[0], boundary["half_width_m"].iloc[0]
    assert polygon.buffer(1).contains(shapely.union_all(bei.values).intersection(polygon.buffer(1)))
    assert 0.8 * 2 * half * bei.length.sum() < polygon.area <= 2 * half * bei.length.sum() * 1.01


def test_green_corridors_lie_outside_the_management_boundary_of_their_river(catalog, store):
    # Where a river has a management boundary (北运河), its corridor starts at the boundary's edge: the corridor
    # layer and the required band of the zones (measured from the boundary) then describe the same strip.
    corridors = store.read_frame(catalog.get("green_corridors")).to_crs(METRIC_CRS)
    boundary = store.read_frame(catalog.get("river_boundaries")).to_crs(METRIC_CRS)
    for river, half in zip(boundary["river"], boundary["half_width_m"]):
        mine = corridors[corridors["river"] == river]
        assert len(mine) and (mine["inner_offset_m"] == half).all()
        area = shapely.union_all(boundary.geometry[boundary["river"] == river].values)
        band = shapely.union_all(mine.geometry.values)
        assert band.intersection(area).area < 1e-4 * band.area  # only the 1 cm grid's slivers
        assert band.distance(area) < 0.05  # and it begins right at the boundary
    others = corridors[~corridors["river"].isin(boundary["river"])]
    assert (others["inner_offset_m"] < 100).all()  # half the water surface where there is no boundary


HERITAGE_CLASSES = {"全国重点文物保护单位", "省级文物保护单位", "市县级文物保护单位", "未定级不可移动文物"}


def test_heritage_sites_have_a_name_and_a_protection_class(catalog, store):
    sites = store.read_frame(catalog.get("heritage_sites"))
    assert sites["name"].str.len().gt(0).all()
    assert set(sites["heritage_class"]) <= HERITAGE_CLASSES
    assert sites["heritage_class_basis"].str.contains("推定").all()  # assumed, and says so


def test_heritage_sites_of_the_canal_plan(catalog, store):
    names = set(store.read_frame(catalog.get("heritage_sites"))["name"])
    for expected in ("金门闸遗址", "文安古城墙", "信安龙泉禅寺", "胜芳张家大院", "胜芳王家大院", "胜芳杨家大院",
                     "西码头陈家祠堂", "太保庄御碑殿", "汉代北辛庄遗址", "左各庄"):
        assert expected in names


def test_plots_follow_ny_t_2539_codes_and_do_not_overlap(catalog, store):
    plots = store.read_frame(catalog.get("plots"))
    assert plots["dkbm"].str.fullmatch(r"\d{19}").all() and plots["dkbm"].is_unique
    assert plots["fbfbm"].str.fullmatch(r"\d{14}").all()
    assert plots["cbfbm"].str.fullmatch(r"\d{18}").all()
    assert (plots["dkbm"].str[:14] == plots["fbfbm"]).all()
    assert (plots["fbfbm"].str[:12] == plots["village_code"]).all()
    sample = plots.iloc[:5000].to_crs(METRIC_CRS)
    pairs = sample.sindex.query(sample.geometry.values, predicate="overlaps")
    assert pairs.shape[1] == 0
    start = pd.to_datetime(plots["contract_start"])
    end = pd.to_datetime(plots["contract_end"])
    assert ((end - start).dt.days // 365 == 30).all()


def test_id_numbers_have_valid_check_digits(catalog, store):
    ids = store.read_frame(catalog.get("contractor_households"))["id_number"].iloc[:500]
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    for value in ids:
        assert "10X98765432"[sum(int(c) * w for c, w in zip(value[:17], weights)) % 11] == value[17]


def test_dem_is_plausible_with_sags_at_underpasses(catalog, store):
    import rasterio

    with rasterio.open(catalog.get("dem").data_path) as ds:
        assert ds.crs.to_epsg() == 4548 and ds.res[0] <= 5
        band = ds.read(1)
        assert 8 < np.percentile(band, 1) and np.percentile(band, 99) < 26
        unders = store.read_frame(catalog.get("underpasses")).to_crs(METRIC_CRS)
        at = np.array([v[0] for v in ds.sample([(p.x, p.y) for p in unders.geometry])])
        around = np.array([v[0] for v in ds.sample([(p.x + 400, p.y) for p in unders.geometry])])
        assert (around - at > 3).all()
