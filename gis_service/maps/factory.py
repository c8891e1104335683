"""One Folium map factory for every page: local assets only, Chinese titles and legends, county base layer.

Folium's defaults load Leaflet, jQuery, Bootstrap and Font Awesome from CDNs; the government intranet has no
internet, so the factory replaces them with the copies installed from npm and served under /static.
Every value that reaches a popup or tooltip is HTML-escaped on the server; the browser only inserts it.
"""

from __future__ import annotations

import html
import json

import folium
import geopandas as gpd
import numpy as np
import shapely
from branca.element import Element, MacroElement
from folium.utilities import JsCode
from jinja2 import Template

from .. import crs as crs_mod
from ..catalog import Catalog, LayerDef
from ..config import Settings
from ..privacy import mask_properties
from ..store import FeatureQuery, GeoPackageStore

LOCAL_JS = [("leaflet", "/static/leaflet/dist/leaflet.js"),
            ("markercluster", "/static/leaflet.markercluster/dist/leaflet.markercluster.js")]
LOCAL_CSS = [("leaflet_css", "/static/leaflet/dist/leaflet.css"),
             ("markercluster_css", "/static/leaflet.markercluster/dist/MarkerCluster.css"),
             ("markercluster_default_css", "/static/leaflet.markercluster/dist/MarkerCluster.Default.css")]
LANGFANG_CENTER = (39.28, 116.68)  # lat, lon for Leaflet
EMBED_LIMIT = 5000  # larger layers are loaded for the current view from /maps/api/.../features
BASE_LAYER = "counties"

_ON_EACH_FEATURE = JsCode("""
function(feature, layer) {
    if (feature.properties.__popup) { layer.bindPopup(feature.properties.__popup, {maxWidth: 360}); }
    if (feature.properties.__label) { layer.bindTooltip(feature.properties.__label, {sticky: true}); }
}
""")


def display_geometries(geoms, settings: Settings):
    """Geometries as the browser must draw them: WGS84, or shifted to GCJ-02 over a Gaode basemap."""
    if settings.basemap != "gaode":
        return geoms

    def shift(coords):
        lon, lat = crs_mod.wgs84_to_gcj02(coords[:, 0], coords[:, 1])
        return np.column_stack([lon, lat])

    return shapely.transform(geoms, shift)


def popup_html(layer: LayerDef, props: dict) -> str:
    rows = []
    for name in layer.popup or [f.name for f in layer.fields][:8]:
        field = layer.field(name)
        value = props.get(name)
        shown = "—" if value is None else ("是" if value is True else "否" if value is False else value)
        rows.append(f"<tr><th>{html.escape(field.label)}</th><td>{html.escape(str(shown))}</td></tr>")
    title = html.escape(str(props.get(layer.label_field, layer.title_zh))) if layer.label_field else html.escape(layer.title_zh)
    return f'<div class="gis-popup"><b>{title}</b><table>{"".join(rows)}</table></div>'


def display_features(layer: LayerDef, frame: gpd.GeoDataFrame, mask: bool, settings: Settings) -> dict:
    """A GeoJSON FeatureCollection for the map: personal fields masked when asked, popups escaped."""
    names = [f.name for f in layer.fields]
    rows = frame[names].astype(object).where(frame[names].notna(), None).to_dict("records")
    if mask:
        rows = mask_properties(layer, rows)
    style = layer.style
    cat_field, categories = style.get("category_field"), style.get("categories", {})
    geoms = display_geometries(frame.geometry.values, settings)
    features = []
    for fid, geom, props in zip(frame.index, shapely.to_geojson(np.asarray(geoms)), rows):
        p = {"__popup": popup_html(layer, props), "__fid": int(fid)}
        if layer.label_field and props.get(layer.label_field) is not None:
            p["__label"] = html.escape(str(props[layer.label_field]))
        if cat_field:
            p["__color"] = categories.get(str(props.get(cat_field)), style.get("color", "#3388ff"))
        features.append({"type": "Feature", "geometry": json.loads(geom), "properties": p})
    return {"type": "FeatureCollection", "features": features}


def _style_function(layer: LayerDef):
    style = layer.style

    def fn(feature):
        color = feature["properties"].get("__color", style.get("color", "#3388ff"))
        return {"color": color, "weight": style.get("weight", 2), "fillColor": feature["properties"].get(
            "__color", style.get("fill_color", color)), "fillOpacity": style.get("fill_opacity", 0.3),
            "dashArray": style.get("dash_array")}

    return fn


def _marker(layer: LayerDef):
    if not layer.geometry.endswith("Point"):
        return None
    style = layer.style
    return folium.CircleMarker(radius=style.get("radius", 5), weight=1, fill=True, fill_opacity=0.85,
                               color=style.get("color", "#3388ff"))


class _Legend(MacroElement):
    _template = Template("""
{% macro html(this, kwargs) %}
<div class="gis-legend" style="position:absolute;bottom:28px;right:10px;z-index:1000;background:#fff;padding:8px 10px;
 border-radius:4px;box-shadow:0 1px 4px rgba(0,0,0,.3);font:13px 'Noto Sans CJK SC',sans-serif;max-width:260px">
<b>图例</b>{{ this.rows }}</div>
{% endmacro %}
""")

    def __init__(self, entries: list[tuple[str, str]]):
        super().__init__()
        self.rows = "".join(
            f'<div><span style="display:inline-block;width:12px;height:12px;margin-right:6px;background:{html.escape(c)}"></span>'
            f"{html.escape(label)}</div>" for label, c in entries)


def _legend_entries(layers: list[LayerDef]) -> list[tuple[str, str]]:
    entries = []
    for layer in layers:
        cats = layer.style.get("categories")
        if cats:
            entries += [(f"{layer.title_zh}：{k}", v) for k, v in cats.items()]
        else:
            entries.append((layer.title_zh, layer.style.get("color", "#3388ff")))
    return entries


class _DynamicLayer(folium.map.Layer):
    """Features of a large layer loaded for the current view (zoom ≥ min_zoom) from the maps API.

    A folium Layer, so the layer control lists it like any embedded layer."""

    _template = Template("""
{% macro script(this, kwargs) %}
var {{ this.get_name() }} = L.featureGroup();
(function() {
  var map = {{ this._parent.get_name() }};
  var group = {{ this.get_name() }}.addTo(map);
  window.gisDynamicLayers = window.gisDynamicLayers || {};
  window.gisDynamicLayers[{{ this.layer_id|tojson }}] = group;
  var note = L.control({position: 'topright'});
  note.onAdd = function() { this._div = L.DomUtil.create('div', 'gis-note'); return this._div; };
  note.addTo(map);
  var style = {{ this.style|tojson }};
  function load() {
    if (map.getZoom() < {{ this.min_zoom }}) {
      group.clearLayers();
      note._div.innerHTML = {{ ("放大到 " ~ this.min_zoom ~ " 级以上显示" ~ this.title)|tojson }};
      return;
    }
    var b = map.getBounds();
    var url = {{ this.url|tojson }} + '?bbox=' + [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].join(',');
    fetch(url, {credentials: 'same-origin'}).then(function(r) { return r.json(); }).then(function(fc) {
      group.clearLayers();
      L.geoJSON(fc, {style: function(f) { return {color: f.properties.__color || style.color, weight: style.weight,
                      fillOpacity: style.fill_opacity}; },
                    pointToLayer: function(f, ll) { return L.circleMarker(ll, {radius: style.radius}); },
                    onEachFeature: {{ this.on_each_feature }} }).addTo(group);
      note._div.innerHTML = {{ this.title|tojson }} + '：' + fc.features.length + (fc.truncated ? '（已截断，请放大）' : '');
    });
  }
  map.on('moveend', load);
  load();
})();
{% endmacro %}
""")

    def __init__(self, layer: LayerDef, min_zoom: int = 14):
        super().__init__(name=layer.title_zh, overlay=True, control=True, show=True)
        self.layer_id = layer.id
        self.title = layer.title_zh
        self.url = f"/maps/api/{layer.id}/features"
        self.min_zoom = min_zoom
        self.style = {"color": layer.style.get("color", "#3388ff"), "weight": layer.style.get("weight", 1),
                      "fill_opacity": layer.style.get("fill_opacity", 0.4), "radius": layer.style.get("radius", 5)}
        self.on_each_feature = _ON_EACH_FEATURE.js_code


class MapFactory:
    def __init__(self, catalog: Catalog, store: GeoPackageStore, settings: Settings):
        self.catalog, self.store, self.settings = catalog, store, settings

    def new_map(self, title: str, location=LANGFANG_CENTER, zoom: int = 9) -> folium.Map:
        m = folium.Map(location=location, zoom_start=zoom, tiles=None, control_scale=True, prefer_canvas=True)
        m.default_js = LOCAL_JS
        m.default_css = LOCAL_CSS
        m.get_root().header.add_child(Element(f"<title>{html.escape(title)}</title>"), name="title")
        m.get_root().header.add_child(Element(
            "<style>body{font-family:'Noto Sans CJK SC','Microsoft YaHei',sans-serif}"
            ".gis-popup table{border-collapse:collapse}.gis-popup th{text-align:left;padding-right:8px;color:#555}"
            ".gis-note{background:#fff;padding:4px 8px;border-radius:4px;font-size:13px}</style>"), name="gis_style")
        m.get_root().html.add_child(Element(
            f'<div class="gis-title" style="position:absolute;top:10px;left:60px;z-index:1000;background:#fff;'
            f'padding:6px 12px;border-radius:4px;box-shadow:0 1px 4px rgba(0,0,0,.3);font-size:16px;font-weight:bold">'
            f'{html.escape(title)}</div>'))
        self._basemap(m)
        return m

    def _basemap(self, m: folium.Map) -> None:
        if self.settings.basemap == "osm":
            folium.TileLayer("OpenStreetMap", name="OpenStreetMap 底图", attr="© OpenStreetMap contributors").add_to(m)
        elif self.settings.basemap == "tianditu":
            for layer, name in (("vec", "天地图矢量"), ("cva", "天地图注记")):
                folium.TileLayer(f"/basemap/tianditu/{layer}/{{z}}/{{x}}/{{y}}", name=name, attr="© 天地图",
                                 overlay=layer == "cva").add_to(m)
        elif self.settings.basemap == "gaode":
            folium.TileLayer("https://webrd0{s}.is.autonavi.com/appmaptile?lang=zh_cn&size=1&scale=1&style=8&x={x}&y={y}&z={z}",
                             subdomains="1234", name="高德地图（GCJ-02，图层已偏移对齐）", attr="© 高德地图").add_to(m)
        base = self.catalog.get(BASE_LAYER)
        if base is not None and self.store.exists(base):
            self.add_layer(m, base, role=None, show=True)

    def add_layer(self, m: folium.Map, layer: LayerDef, role: str | None, show: bool = True) -> None:
        if self.store.count(layer) > EMBED_LIMIT:
            _DynamicLayer(layer).add_to(m)
            return
        data = display_features(layer, self.store.read_frame(layer), not layer.sees_personal(role), self.settings)
        folium.GeoJson(data, name=layer.title_zh, show=show, style_function=_style_function(layer),
                       marker=_marker(layer), on_each_feature=_ON_EACH_FEATURE).add_to(m)

    def layer_map(self, layer: LayerDef, role: str | None) -> folium.Map:
        m = self.new_map(f"{layer.title_zh} — 廊坊空间决策支持系统")
        if layer.id != BASE_LAYER:
            self.add_layer(m, layer, role)
        _Legend(_legend_entries([self.catalog.get(BASE_LAYER), layer] if layer.id != BASE_LAYER else [layer])).add_to(m)
        folium.LayerControl(collapsed=False).add_to(m)
        return m

    def features_for_view(self, layer: LayerDef, bbox, role: str | None, limit: int = 3000) -> dict:
        """Display features inside a lon/lat box for the dynamic layer (same popups as embedded; the store masks)."""
        if self.settings.basemap == "gaode":  # the browser's view is in GCJ-02 over a Gaode basemap
            lon, lat = crs_mod.gcj02_to_wgs84(np.array(bbox[0::2]), np.array(bbox[1::2]))
            bbox = (lon[0], lat[0], lon[1], lat[1])
        page = self.store.query(layer, FeatureQuery(bbox=bbox, limit=limit, masked=layer.masked_fields(role)))
        frame = gpd.GeoDataFrame(page.properties, geometry=page.geometries, crs=crs_mod.STORAGE_CRS,
                                 index=page.fids) if page.fids else gpd.GeoDataFrame(
            {f.name: [] for f in layer.fields}, geometry=[], crs=crs_mod.STORAGE_CRS)
        data = display_features(layer, frame, False, self.settings)
        data["truncated"] = page.number_matched > limit
        return data
