"""Demo layers: inside the real county polygons, marked demo, coded from the real township codes."""

import numpy as np
import pandas as pd
import shapely

from gis_service.config import REPO_ROOT
from gis_service.crs import METRIC_CRS

TOWNSHIPS = pd.read_csv(REPO_ROOT / "layers/admin/langfang_townships.csv", dtype={"code": str})


def test_every_demo_feature_is_marked_and_inside_langfang(catalog, store):
    city = shapely.union_all(store.read_frame(catalog.get("counties")).geometry.values).buffer(1e-6)
    for layer in catalog:
        if not layer.demo or layer.is_raster or layer.source:
            continue
        frame = store.read_frame(layer)
        assert len(frame) > 0, layer.id
        if layer.id != "canal_channels":  # 北运河 is the real river line
            assert frame["demo"].all(), layer.id
        inside = frame.geometry.representative_point().within(city)
        assert inside.all(), f"{layer.id}: {int((~inside).sum())} outside"


def test_villages_are_coded_from_their_township_and_lie_in_its_county(catalog, store):
    villages = store.read_frame(catalog.get("villages"))
    assert len(villages) >= 2000
    assert villages["code"].str.fullmatch(r"\d{12}").all()
    assert villages["code"].is_unique
    assert (villages["code"].str[:9] == villages["township_code"]).all()
    assert set(villages["township_code"]) <= set(TOWNSHIPS["code"])
    counties = store.read_frame(catalog.get("counties")).set_index("adcode")
    host = villages["county_adcode"].replace({131071: 131003})  # 开发区 lies inside 广阳区
    inside = [counties.geometry[a].contains(p) for a, p in zip(host, villages.geometry)]
    assert all(inside)


def test_at_least_60_villages_within_3km_of_the_canal_rivers(catalog, store):
    channels = store.read_frame(catalog.get("canal_channels")).to_crs(METRIC_CRS)
    villages = store.read_frame(catalog.get("villages")).to_crs(METRIC_CRS)
    near = villages.distance(shapely.union_all(channels.geometry.values)) <= 3000
    assert near.sum() >= 60
    assert set(channels["name"]) == {"北运河", "大清河", "赵王新河"}


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
