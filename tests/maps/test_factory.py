"""The map factory draws analysis results (GeoDataFrames in any CRS) the way it draws catalog layers."""

import dataclasses

import geopandas as gpd
import pytest
import shapely
from pyproj import Transformer

from gis_service.catalog import STYLE_KEYS, load_definition
from gis_service.config import REPO_ROOT, Settings
from gis_service.errors import DefinitionError
from gis_service.maps.export import standalone_html
from gis_service.maps.factory import MapFactory, Style
from tests.maps.browser import browser_page

STATIC = REPO_ROOT / "frontend" / "node_modules"
# Two zones and a point near the central city, in CGCS2000 / 3-degree GK CM 117E (metres).
ZONES = gpd.GeoDataFrame(
    {"zone": ["核心区", "缓冲区"], "name": ["北运河核心区", "<b>缓冲</b>区"], "width_m": [1000.0, 2000.0]},
    geometry=[shapely.box(470_000, 4_375_000, 472_000, 4_377_500), shapely.box(474_000, 4_371_000, 478_500, 4_373_000)],
    crs="EPSG:4548")
WELL = gpd.GeoDataFrame({"name": ["水源井"]}, geometry=[shapely.Point(476_543.21, 4_369_876.54)], crs="EPSG:4548")


def _zone_map(catalog, store):
    factory = MapFactory(catalog, store, Settings())
    m = factory.new_map("分析结果")
    factory.add_frame(m, ZONES, "管控分区", key="zones",
                      style={"color": "#555555", "weight": 3, "dash_array": "6 4", "category_field": "zone",
                             "categories": {"核心区": "#e31a1c", "缓冲区": "#fd8d3c"}},
                      popup={"name": "名称", "width_m": "宽度（米）"}, label_field="name")
    factory.add_frame(m, WELL, "水源井", key="well", style=Style(color="#0570b0", radius=8), popup={"name": "名称"})
    return factory, m


def test_frame_in_epsg4548_lands_where_pyproj_puts_it(catalog, store):
    """The page's coordinates (read back from Leaflet in Chromium) equal an independent pyproj transform."""
    factory, m = _zone_map(catalog, store)
    page_html = standalone_html(factory.render(m), STATIC)
    with browser_page() as (page, errors, refused):
        page.set_content(page_html, wait_until="load")
        drawn = page.evaluate("""() => {
            const out = {};
            for (const key of ['zones', 'well']) {
                out[key] = [];
                window.gisLayers[key].eachLayer(g => g.eachLayer && g.eachLayer(l => {
                    if (!l.feature) return;
                    const ll = l.getLatLngs ? l.getLatLngs()[0] : [l.getLatLng()];
                    out[key].push({coords: ll.map(p => [p.lng, p.lat]), color: l.options.color,
                                   fill: l.options.fillColor, dash: l.options.dashArray, radius: l.options.radius,
                                   popup: l.getPopup() ? l.getPopup().getContent() : null});
                }));
            }
            return out;
        }""")
        legend = page.inner_text(".gis-legend")
    assert errors == [] and refused == []
    to_lonlat = Transformer.from_crs("EPSG:4548", "EPSG:4326", always_xy=True)
    for feature, geom in zip(drawn["zones"], ZONES.geometry):
        expected = [to_lonlat.transform(x, y) for x, y in geom.exterior.coords[:-1]]
        assert len(feature["coords"]) == len(expected)
        for got in expected:  # Leaflet may start the ring anywhere: every vertex must be there
            assert min(abs(a[0] - got[0]) + abs(a[1] - got[1]) for a in feature["coords"]) < 1e-7
    lon, lat = to_lonlat.transform(WELL.geometry[0].x, WELL.geometry[0].y)
    assert drawn["well"][0]["coords"][0] == pytest.approx([lon, lat], abs=1e-7)
    # Style: category colours, dash, outline; point radius; popups escaped on the server.
    assert [f["fill"] for f in drawn["zones"]] == ["#e31a1c", "#fd8d3c"]
    assert {f["dash"] for f in drawn["zones"]} == {"6 4"} and drawn["well"][0]["radius"] == 8
    assert "&lt;b&gt;缓冲&lt;/b&gt;区" in drawn["zones"][1]["popup"] and "宽度（米）" in drawn["zones"][1]["popup"]
    assert "管控分区：核心区" in legend and "管控分区：缓冲区" in legend and "水源井" in legend
    assert ZONES.crs.to_epsg() == 4548  # the caller's frame is not touched


def test_masked_columns_of_a_frame_never_reach_the_page(catalog, store):
    factory = MapFactory(catalog, store, Settings())
    m = factory.new_map("承包户")
    people = gpd.GeoDataFrame({"name": ["张三丰"], "phone": ["13812345678"]}, geometry=[shapely.Point(116.7, 39.5)],
                              crs="EPSG:4490")
    factory.add_frame(m, people, "承包户", popup={"name": "姓名", "phone": "电话"}, label_field="name",
                      masked={"name": "name", "phone": "phone"})
    page = factory.render(m)
    assert "张三丰" not in page and "13812345678" not in page
    assert "张**" in page and "138****5678" in page


def test_a_frame_without_crs_is_refused(catalog, store):
    factory = MapFactory(catalog, store, Settings())
    m = factory.new_map("x")
    with pytest.raises(ValueError, match="no CRS"):
        factory.add_frame(m, gpd.GeoDataFrame(geometry=[shapely.Point(476_000, 4_370_000)]), "无坐标系")


def test_style_keys_are_checked_at_start_up(catalog, tmp_path):
    """The catalog refuses the style keys the factory would not understand (fill_colour, radious …)."""
    assert STYLE_KEYS == {f.name for f in dataclasses.fields(Style)}
    for layer in catalog:
        Style.parse(layer.style)
    with pytest.raises(ValueError, match="fill_colour"):
        Style.parse({"fill_colour": "#fff"})
    (tmp_path / "admin").mkdir()
    path = tmp_path / "admin" / "counties.toml"
    path.write_text(catalog.get("counties").path.read_text(encoding="utf-8").replace("fill_color", "fill_colour"),
                    encoding="utf-8")
    with pytest.raises(DefinitionError) as err:
        load_definition(path)
    assert err.value.key == "style.fill_colour"


def test_titles_are_escaped_and_unknown_columns_refused(catalog, store):
    factory = MapFactory(catalog, store, Settings())
    m = factory.new_map("x")
    factory.add_frame(m, WELL, '<img src=x onerror="alert(1)">', popup={"name": "名称"})
    page = factory.render(m)
    assert "<img src=x" not in page and "&lt;img src=x" in page
    with pytest.raises(ValueError, match="nosuch"):
        factory.add_frame(m, WELL, "井", popup={"nosuch": "不存在"})


def test_legend_shows_category_labels_instead_of_codes(catalog, store):
    factory = MapFactory(catalog, store, Settings.from_env())
    m = factory.new_map("t")
    factory.add_frame(m, ZONES.assign(bank=["left", "right"]), "绿廊", style={
        "category_field": "bank", "categories": {"left": "#41ab5d", "right": "#a1d99b"},
        "category_labels": {"left": "左岸"}})
    labels = [label for label, *_ in m.gis_legend.entries]
    assert labels == ["绿廊：左岸", "绿廊：right"]  # an unlabelled value keeps its code
