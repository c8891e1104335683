"""One Folium map factory for every page: local assets only, Chinese titles and legends, an offline base map.

Folium's defaults load Leaflet, jQuery, Bootstrap and Font Awesome from CDNs; the government intranet has no
internet, so the factory replaces them with the copies listed in ``assets.py`` (served under /static, or
inlined by the exporter). The base map needs no internet either: every layer whose definition says
``basemap = true`` (county boundaries and names, township seats, rivers, railways, stations) is drawn under
every map, with permanent labels from the zoom its ``label_min_zoom`` gives.

Catalog layers and analysis results (GeoDataFrames in any CRS) take the same path: a frame plus an
``Overlay`` (title, style, popup fields with Chinese labels, label field) → display coordinates (WGS84, or
GCJ-02 over a Gaode basemap) → GeoJSON whose popup and label values are HTML-escaped on the server; the
browser only inserts them. Geometries are drawn as given: nothing is buffered, simplified or repaired.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import folium
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from branca.element import Element, MacroElement
from jinja2 import Template
from shapely.geometry import shape
from shapely.ops import polylabel

from .. import crs as crs_mod
from ..catalog import WITHHELD, Catalog, LayerDef
from ..config import Settings
from ..errors import not_found
from ..privacy import mask_value
from ..store import FeatureQuery, Store, display_title
from . import assets

LANGFANG_CENTER = (39.28, 116.68)  # lat, lon for Leaflet
EMBED_LIMIT = 5000  # larger layers are loaded for the current view from /maps/api/.../features
# A self-contained (exported) map cannot load anything later, so every layer is embedded — up to this many
# features per layer (the first by fid; 20 000 plot polygons ≈ 17 MB of HTML, 2 s to open in Chromium);
# beyond it the map shows a note that the layer is cut.
EXPORT_FEATURE_CAP = 20_000
LABEL_LIMIT = 2000  # permanent labels per overlay; more would make the page unusable
APP_TITLE = "廊坊空间决策支持系统"
DEFAULT_COLOR = "#3388ff"


# --- style and overlay ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Style:
    """How an overlay is drawn: the ``style`` table of a layer TOML, or given by code for analysis results.

    Unset values get defaults by geometry in the browser: lines 2 px and unfilled, polygons filled at 0.3,
    points as filled circles (1 px outline, 0.85 fill)."""

    color: str = DEFAULT_COLOR
    weight: float | None = None  # line / outline width in pixels
    fill: bool | None = None  # None: polygons and points filled, lines not
    fill_color: str | None = None  # default: the colour (or the category colour)
    fill_opacity: float | None = None
    radius: float = 5  # point radius in pixels
    dash_array: str | None = None  # e.g. "8 4"
    category_field: str | None = None  # colour by this field's value ...
    categories: Mapping[str, str] = field(default_factory=dict, hash=False)  # ... value -> colour
    category_labels: Mapping[str, str] = field(default_factory=dict, hash=False)  # value -> legend text (中文)
    label_size: int = 12  # permanent labels, pixels

    @classmethod
    def parse(cls, value: "Style | Mapping | None") -> "Style":
        if value is None:
            return cls()
        if isinstance(value, Style):
            return value
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(value) - known
        if unknown:
            raise ValueError(f"unknown style keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: (dict(v) if k in ("categories", "category_labels") else v) for k, v in value.items()})

    def color_of(self, value) -> str:
        return self.categories.get(str(value), self.color)

    def for_browser(self) -> dict:
        return {"color": self.color, "weight": self.weight, "fill": self.fill, "fill_color": self.fill_color,
                "fill_opacity": self.fill_opacity, "radius": self.radius, "dash_array": self.dash_array}


@dataclass(frozen=True)
class Overlay:
    """What the map shows of a frame: title (layer control, legend), style, popup and labels."""

    title: str
    style: Style = field(default_factory=Style)
    popup: tuple[tuple[str, str], ...] = ()  # (column, Chinese label) in display order; empty: no popup
    label_field: str | None = None  # popup heading and hover tooltip
    label_min_zoom: int | None = None  # permanent labels (label_field) from this zoom on; None: hover only
    masked: Mapping[str, str] = field(default_factory=dict, hash=False)  # column -> personal kind to mask
    key: str = ""  # a stable id for the page's scripts (window.gisLayers) and label CSS classes

    @classmethod
    def of_layer(cls, layer: LayerDef, title: str, role: str | None) -> "Overlay":
        """The layer's look; without a key (role None) its personal fields leave the popup, not only their values."""
        withheld = {n for n, kind in layer.masked_fields(role).items() if kind == WITHHELD}
        popup = [n for n in layer.popup or tuple(f.name for f in layer.fields)[:8] if n not in withheld]
        return cls(title=title, style=Style.parse(layer.style), popup=tuple((n, layer.field(n).label) for n in popup),
                   label_field=None if layer.label_field in withheld else layer.label_field,
                   label_min_zoom=layer.label_min_zoom, key=layer.id)


def _show(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "是" if value else "否"
    if isinstance(value, (float, np.floating)):
        return str(round(float(value), 6))
    if isinstance(value, pd.Timestamp):
        return value.isoformat(sep=" ")
    return str(value)


def popup_html(overlay: Overlay, props: Mapping) -> str:
    rows = "".join(f"<tr><th>{html.escape(label)}</th><td>{html.escape(_show(props.get(name)))}</td></tr>"
                   for name, label in overlay.popup)
    heading = props.get(overlay.label_field) if overlay.label_field else None
    title = html.escape(overlay.title if heading is None else _show(heading))
    return f'<div class="gis-popup"><b>{title}</b><table>{rows}</table></div>'


def display_geometries(geoms, settings: Settings):
    """Geometries (EPSG:4490 lon/lat) as the browser must draw them: WGS84, or shifted to GCJ-02 over Gaode."""
    if settings.basemap != "gaode":
        return geoms

    def shift(coords):
        lon, lat = crs_mod.wgs84_to_gcj02(coords[:, 0], coords[:, 1])
        return np.column_stack([lon, lat])

    return shapely.transform(geoms, shift)


def _lonlat(frame: gpd.GeoDataFrame) -> np.ndarray:
    """The frame's geometries in lon/lat (EPSG:4490, as the catalog layers are stored), from any CRS."""
    if frame.crs is None:
        raise ValueError("the GeoDataFrame has no CRS: set it (e.g. EPSG:4548) before adding it to a map")
    if not frame.crs.equals(crs_mod.STORAGE_CRS):
        frame = frame.to_crs(crs_mod.STORAGE_CRS)
    return np.asarray(frame.geometry.values, dtype=object)


def display_features(frame: gpd.GeoDataFrame, overlay: Overlay, settings: Settings) -> dict:
    """A GeoJSON FeatureCollection for the map: masked where the overlay says, popups and labels escaped."""
    geoms = display_geometries(_lonlat(frame), settings)
    columns = [c for c in frame.columns if c != frame.geometry.name]
    rows = frame[columns].astype(object).where(frame[columns].notna(), None).to_dict("records")
    for name, kind in overlay.masked.items():
        for row in rows:
            if name in row:
                row[name] = mask_value(kind, row[name])
    style = overlay.style
    features = []
    for fid, geom, text, props in zip(frame.index, geoms, shapely.to_geojson(geoms), rows):
        if geom is None or shapely.is_empty(geom):
            continue
        p = {"__fid": int(fid) if isinstance(fid, (int, np.integer)) else str(fid)}
        if overlay.popup:
            p["__popup"] = popup_html(overlay, props)
        if overlay.label_field and props.get(overlay.label_field) is not None:
            p["__label"] = html.escape(_show(props[overlay.label_field]))
        if style.category_field:
            p["__color"] = style.color_of(props.get(style.category_field))
        features.append({"type": "Feature", "geometry": json.loads(text), "properties": p})
    return {"type": "FeatureCollection", "features": features}


def label_points(features: dict, overlay: Overlay) -> list[list]:
    """[lat, lon, escaped text] for permanent labels: one per distinct text, on its largest feature —
    inside polygons (pole of inaccessibility), at the middle of lines, at points."""
    if overlay.label_min_zoom is None:
        return []
    best: dict[str, tuple[float, object]] = {}
    for f in features["features"]:
        text = f["properties"].get("__label")
        if not text:
            continue
        geom = shape(f["geometry"])
        size = geom.area or geom.length
        if text not in best or size > best[text][0]:
            best[text] = (size, geom)
    labels = []
    for text, (_, geom) in list(best.items())[:LABEL_LIMIT]:
        parts = list(getattr(geom, "geoms", [geom]))
        part = max(parts, key=lambda g: g.area or g.length)
        if part.geom_type == "Polygon":
            x0, y0, x1, y1 = part.bounds
            point = polylabel(part, tolerance=max(x1 - x0, y1 - y0) / 200)
        elif part.geom_type == "LineString":
            point = part.interpolate(0.5, normalized=True)
        else:
            point = part
        labels.append([round(point.y, 6), round(point.x, 6), text])
    return labels


def _script_json(value) -> str:
    """JSON for a <script> block: compact, UTF-8, and no '</' that could close the script early."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")


# --- page elements -------------------------------------------------------------------------------------
_PAGE_CSS = """<style>
body{font-family:'Noto Sans CJK SC','Microsoft YaHei',sans-serif}
.gis-popup table{border-collapse:collapse}.gis-popup th{text-align:left;padding-right:8px;color:#555}
.gis-note{background:#fff;padding:4px 8px;border-radius:4px;font-size:13px;box-shadow:0 1px 4px rgba(0,0,0,.3)}
.gis-label{background:none;border:none}
.gis-label span{position:absolute;transform:translate(-50%,-50%);white-space:nowrap;color:#222;pointer-events:none;
 text-shadow:0 0 2px #fff,0 0 2px #fff,0 0 3px #fff,0 0 4px #fff}
.gis-label-point span{transform:translate(7px,-50%);color:#444}
.gis-legend b{display:block;margin:2px 0}.gis-legend i{display:inline-block;vertical-align:middle;margin-right:6px}
</style>"""

# Shared browser code: the same styling, popups and labels for embedded, dynamically loaded and exported layers.
_PAGE_JS = """<script>
window.gisLayers = window.gisLayers || {};
// A child element with text (never HTML): what domain pages use to show server strings.
window.gisEl = function(parent, tag, text, cls) {
  var e = document.createElement(tag);
  if (cls) { e.className = cls; }
  if (text != null) { e.textContent = text; }
  parent.appendChild(e);
  return e;
};
window.gisMap = {
  options: function(style) {
    function kind(f) {
      var t = f.geometry ? f.geometry.type : '';
      return /Point$/.test(t) ? 'point' : /LineString$/.test(t) ? 'line' : 'area';
    }
    return {
      style: function(f) {
        var k = kind(f), c = f.properties.__color || style.color;
        return {color: c, weight: style.weight != null ? style.weight : (k === 'point' ? 1 : 2),
                fill: style.fill != null ? style.fill : k !== 'line',
                fillColor: f.properties.__color || style.fill_color || c,
                fillOpacity: style.fill_opacity != null ? style.fill_opacity : (k === 'point' ? 0.85 : 0.3),
                dashArray: style.dash_array || null};
      },
      pointToLayer: function(f, latlng) { return L.circleMarker(latlng, {radius: style.radius}); },
      onEachFeature: function(f, layer) {
        if (f.properties.__popup) { layer.bindPopup(f.properties.__popup, {maxWidth: 360}); }
        if (f.properties.__label) { layer.bindTooltip(f.properties.__label, {sticky: true}); }
      }
    };
  },
  labels: function(map, group, labels, minZoom, cls, size) {
    if (!labels.length) { return; }
    var layer = L.layerGroup(labels.map(function(l) {
      return L.marker([l[0], l[1]], {interactive: false, keyboard: false, icon: L.divIcon({
        className: 'gis-label ' + cls, iconSize: null,
        html: '<span style="font-size:' + size + 'px' + (size >= 14 ? ';font-weight:bold' : '') + '">' +
              l[2] + '</span>'})});
    }));
    function update() { if (map.getZoom() >= minZoom) { group.addLayer(layer); } else { group.removeLayer(layer); } }
    map.on('zoomend', update);
    update();
  },
  note: function(map, text) {
    var control = L.control({position: 'topright'});
    control.onAdd = function() { var d = L.DomUtil.create('div', 'gis-note'); d.textContent = text; return d; };
    control.addTo(map);
    return control;
  }
};
</script>"""


class _GeoJsonOverlay(folium.map.Layer):
    """Embedded features (catalog layer or analysis result) with labels and an optional note."""

    _template = Template("""
{% macro script(this, kwargs) %}
var {{ this.get_name() }} = L.featureGroup();
(function() {
  var map = {{ this._parent.get_name() }}, group = {{ this.get_name() }};
  window.gisLayers[{{ this.key|tojson }}] = group;
  L.geoJSON({{ this.data_js }}, gisMap.options({{ this.style|tojson }})).addTo(group);
  gisMap.labels(map, group, {{ this.labels_js }}, {{ this.label_min_zoom }}, {{ this.label_class|tojson }},
                {{ this.label_size }});
  {% if this.note %}gisMap.note(map, {{ this.note|tojson }});{% endif %}
})();
{% endmacro %}
""")

    def __init__(self, data: dict, overlay: Overlay, labels: list, show: bool, note: str | None):
        # Leaflet's layer control inserts names as HTML: escape them like every other value.
        super().__init__(name=html.escape(overlay.title), overlay=True, control=True, show=show)
        self.key = re.sub(r"\W", "_", overlay.key) if overlay.key else self.get_name()
        self.data_js = _script_json(data)
        self.labels_js = _script_json(labels)
        self.style = overlay.style.for_browser()
        self.label_min_zoom = overlay.label_min_zoom or 0
        self.label_class = f"gis-label-{'point' if _kind_of(data) == 'point' else 'area'} gis-label-{self.key}"
        self.label_size = int(overlay.style.label_size)
        self.note = note


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
  window.gisLayers[{{ this.layer_id|tojson }}] = group;
  var note = gisMap.note(map, '');
  var options = gisMap.options({{ this.style|tojson }});
  function say(text) { note.getContainer().textContent = text; }
  function load() {
    if (map.getZoom() < {{ this.min_zoom }}) {
      group.clearLayers();
      say({{ ("放大到 " ~ this.min_zoom ~ " 级以上显示" ~ this.title)|tojson }});
      return;
    }
    var b = map.getBounds();
    var url = {{ this.url|tojson }} + '?bbox=' + [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].join(',');
    fetch(url, {credentials: 'same-origin'}).then(function(r) { return r.json(); }).then(function(fc) {
      group.clearLayers();
      L.geoJSON(fc, options).addTo(group);
      say({{ this.title|tojson }} + '：' + fc.features.length + (fc.truncated ? '（已截断，请放大）' : ''));
    });
  }
  map.on('moveend', load);
  load();
})();
{% endmacro %}
""")

    def __init__(self, layer: LayerDef, overlay: Overlay, min_zoom: int = 14):
        super().__init__(name=html.escape(overlay.title), overlay=True, control=True, show=True)
        self.layer_id = layer.id
        self.title = overlay.title
        self.url = f"/maps/api/{layer.id}/features"
        self.min_zoom = min_zoom
        self.style = overlay.style.for_browser()


class _VectorTileLayer(folium.map.Layer):
    """A collection's Mapbox vector tiles (OGC API – Tiles, gis_service/tiles.py) drawn by Leaflet.VectorGrid.

    The browser fetches the tiles with its session cookie, so the server masks personal fields for the signed-in
    role. Popups are built with window.gisEl (text only); nothing from a tile is inserted as HTML."""

    _template = Template("""
{% macro script(this, kwargs) %}
if (!L.DomEvent.fakeStop) {  // Leaflet.VectorGrid 1.3 calls what Leaflet 1.8 removed
  L.DomEvent.fakeStop = function(e) { e._stopped = true; };
}
var {{ this.get_name() }} = (function() {
  var map = {{ this._parent.get_name() }}, cfg = {{ this.cfg|tojson }};
  function show(v) { return v === null || v === undefined ? '—' : v === true ? '是' : v === false ? '否' : String(v); }
  function colour(field, table, p, fallback) { return field && table[p[field]] ? table[p[field]] : fallback; }
  function featureStyle(p) {
    var s = cfg.style, c = colour(cfg.outline_field, cfg.outline_categories, p, s.color || '#3388ff');
    var fill = colour(cfg.category_field, cfg.categories, p, s.fill_color || s.color || '#3388ff');
    return {color: c, weight: s.weight != null ? s.weight : (cfg.kind === 'line' ? 2 : 1),
            fill: s.fill != null ? s.fill : cfg.kind !== 'line', fillColor: fill,
            fillOpacity: s.fill_opacity != null ? s.fill_opacity : (cfg.kind === 'point' ? 0.85 : 0.3),
            radius: s.radius, dashArray: s.dash_array || null};
  }
  function cellStyle(p) {
    var fill = colour(cfg.category_field, cfg.categories, p, cfg.style.fill_color || cfg.style.color || '#3388ff');
    var share = cfg.category_field && p[cfg.category_field + '_share'] != null ? p[cfg.category_field + '_share'] : 1;
    return {stroke: false, fill: true, fillColor: fill, fillOpacity: 0.25 + 0.5 * share};
  }
  var styles = {};
  styles[cfg.layer] = featureStyle;
  styles[cfg.cells] = cellStyle;
  var layer = L.vectorGrid.protobuf(cfg.url, {
    rendererFactory: L.canvas.tile, interactive: cfg.click, vectorTileLayerStyles: styles,
    minZoom: cfg.min_zoom, maxNativeZoom: cfg.max_zoom, fetchOptions: {credentials: 'same-origin'}
  });
  var state = {tiles: 0, errors: 0, key: cfg.key};
  layer.on('tileload', function() { state.tiles += 1; });
  layer.on('tileerror', function() { state.errors += 1; });
  if (cfg.click) layer.on('click', function(e) {
    var p = (e.layer && e.layer.properties) || {}, box = document.createElement('div');
    box.className = 'gis-popup';
    var cells = Math.min(Math.round(map.getZoom()), cfg.max_zoom) < cfg.detail_zoom;
    var rows = cells ? cfg.cell_popup : cfg.popup;
    gisEl(box, 'b', cells ? cfg.title + '（汇总）' : (cfg.label_field && p[cfg.label_field] != null ?
                                                   show(p[cfg.label_field]) : cfg.title));
    var table = gisEl(box, 'table');
    rows.forEach(function(r) {
      if (!(r[0] in p)) { return; }
      var tr = gisEl(table, 'tr');
      gisEl(tr, 'th', r[1]);
      gisEl(tr, 'td', r[0].slice(-6) === '_share' ? Math.round(p[r[0]] * 100) + '%' : show(p[r[0]]));
    });
    L.popup({maxWidth: 360}).setLatLng(e.latlng).setContent(box).openOn(map);
  });
  window.gisLayers[cfg.key] = layer;
  window.gisVectorTiles = window.gisVectorTiles || {};
  window.gisVectorTiles[cfg.key] = state;
  return layer;
})();
{% endmacro %}
""")

    def __init__(self, layer: LayerDef, overlay: Overlay, outline: tuple[str, Mapping[str, str]] | None, show: bool,
                 gcj02: bool = False, click: bool = True):
        from .. import tiles  # the tile core (it builds on the OGC core, which the map pages do not need)

        super().__init__(name=html.escape(overlay.title), overlay=True, control=True, show=show)
        spec = tiles.tile_def(layer)
        carried = tiles.carried_fields(layer)
        style = overlay.style
        cell_popup = [["count", "要素数"]]
        for name in spec.aggregate_fields:
            label = layer.field(name).label
            cell_popup += [[name, f"{label}（最多）"], [f"{name}_share", f"{label} 占比"]]
        self.cfg = {
            "key": overlay.key, "title": overlay.title, "layer": layer.id, "cells": tiles.cells_layer(layer),
            # over the Gaode base map the tiles come shifted to GCJ-02, like every other layer of the page
            "url": f"/ogc/collections/{layer.id}/tiles/{tiles.TMS_ID}/{{z}}/{{y}}/{{x}}"
                   + ("?coord_sys=gcj02" if gcj02 else ""),
            "min_zoom": spec.min_zoom, "max_zoom": spec.max_zoom,
            "detail_zoom": spec.detail_zoom if spec.detail_zoom is not None else spec.min_zoom,
            "kind": _geometry_kind(layer.geometry), "style": style.for_browser(),
            "category_field": style.category_field, "categories": dict(style.categories),
            "outline_field": outline[0] if outline else None, "outline_categories": dict(outline[1]) if outline else {},
            "label_field": overlay.label_field if overlay.label_field in carried else None,
            "popup": [[n, label] for n, label in overlay.popup if n in carried], "cell_popup": cell_popup,
            "click": click,
        }


def _kind_of(data: dict) -> str:
    """The kind of a FeatureCollection: point or line when every feature is one, else area."""
    kinds = {_geometry_kind(f["geometry"]["type"]) for f in data["features"]}
    return kinds.pop() if len(kinds) == 1 else "area"


def _geometry_kind(geometry_type: str) -> str:
    return "point" if geometry_type.endswith("Point") else "line" if geometry_type.endswith("LineString") else "area"


class _Legend(MacroElement):
    """The legend: overlays first, then the base map; entries are added while the map is built."""

    _template = Template("""
{% macro html(this, kwargs) %}
<div class="gis-legend" style="position:absolute;bottom:28px;right:10px;z-index:1000;background:#fff;padding:8px 10px;
 border-radius:4px;box-shadow:0 1px 4px rgba(0,0,0,.3);font:13px 'Noto Sans CJK SC',sans-serif;max-width:260px;
 max-height:60vh;overflow:auto">
<b>图例</b>{{ this.rows() }}</div>
{% endmacro %}
""")

    def __init__(self):
        super().__init__()
        self.entries: list[tuple[str, str, str, str | None]] = []  # (label, colour, kind, dash)
        self.base: list[tuple[str, str, str, str | None]] = []

    def add(self, overlay: Overlay, kind: str, base: bool = False) -> None:
        style, target = overlay.style, self.base if base else self.entries
        if style.categories:
            target += [(f"{overlay.title}：{style.category_labels.get(value, value)}", colour, kind, style.dash_array)
                       for value, colour in style.categories.items()]
        else:
            target.append((overlay.title, style.color, kind, style.dash_array))

    @staticmethod
    def _row(label: str, colour: str, kind: str, dash: str | None) -> str:
        c = html.escape(colour)
        if kind == "line":
            swatch = f'<i style="width:18px;height:0;border-top:3px {"dashed" if dash else "solid"} {c}"></i>'
        elif kind == "point":
            swatch = f'<i style="width:10px;height:10px;border-radius:50%;background:{c}"></i>'
        else:
            swatch = f'<i style="width:14px;height:10px;border:1px solid {c};background:{c};opacity:.5"></i>'
        return f"<div>{swatch}{html.escape(label)}</div>"

    def rows(self) -> str:
        out = "".join(self._row(*e) for e in self.entries)
        if self.base:
            out += "<b>底图</b>" + "".join(self._row(*e) for e in self.base)
        return out


# --- the factory -----------------------------------------------------------------------------------------
class MapFactory:
    """Builds every map page. ``standalone=True`` builds maps for a file with no server behind it: no online
    basemap, no loading on demand — every layer embedded up to ``feature_cap`` features."""

    def __init__(self, catalog: Catalog, store: Store, settings: Settings, standalone: bool = False,
                 feature_cap: int = EXPORT_FEATURE_CAP):
        self.catalog, self.store = catalog, store
        self.settings = dataclasses.replace(settings, basemap="none") if standalone else settings
        self.standalone, self.feature_cap = standalone, feature_cap

    # pages ------------------------------------------------------------------------------------------------
    def new_map(self, title: str, location=LANGFANG_CENTER, zoom: int = 9) -> folium.Map:
        """An empty map with the page furniture and the base map; add layers, then ``finish`` it."""
        m = folium.Map(location=location, zoom_start=zoom, tiles=None, control_scale=True, prefer_canvas=True)
        m.default_js = assets.folium_js()
        m.default_css = assets.folium_css()
        root = m.get_root()
        root.header.add_child(Element(f"<title>{html.escape(title)}</title>"), name="title")
        root.header.add_child(Element(_PAGE_CSS), name="gis_style")
        root.header.add_child(Element(_PAGE_JS), name="gis_js")
        root.html.add_child(Element(
            f'<div class="gis-title" style="position:absolute;top:10px;left:60px;z-index:1000;background:#fff;'
            f'padding:6px 12px;border-radius:4px;box-shadow:0 1px 4px rgba(0,0,0,.3);font-size:16px;font-weight:bold">'
            f'{html.escape(title)}</div>'))
        m.gis_legend = _Legend()
        m.gis_disclosures = []  # (layer, features embedded): personal data the page carries, for the access log
        m.add_child(m.gis_legend, name="gis_legend")
        self._online_basemap(m)
        for layer in self.base_layers():
            self._add_catalog_layer(m, layer, None, show=True, base=True)
        return m

    def base_layers(self) -> list[LayerDef]:
        """The offline base map: every built layer marked ``basemap = true``, bottom first."""
        layers = [layer for layer in self.catalog if layer.basemap and self.store.exists(layer)]
        return sorted(layers, key=lambda layer: (layer.basemap_order, layer.id))

    def layer_map(self, layer: LayerDef, role: str | None) -> folium.Map:
        """The page of one collection (over the base map, which may already hold it)."""
        m = self.new_map(f"{display_title(self.store, layer)} — {APP_TITLE}")
        if not layer.basemap:
            self.add_layer(m, layer, role)
        return self.finish(m)

    def finish(self, m: folium.Map) -> folium.Map:
        """Add the layer control (last: it lists the layers added before it). Safe to call twice."""
        if not any(isinstance(child, folium.LayerControl) for child in m._children.values()):
            folium.LayerControl(collapsed=False).add_to(m)
        return m

    def render(self, m: folium.Map) -> str:
        return self.finish(m).get_root().render()

    # layers -----------------------------------------------------------------------------------------------
    def add_layer(self, m: folium.Map, layer: LayerDef, role: str | None, show: bool = True) -> None:
        """A catalog layer as `role` may see it (personal fields masked in the store unless entitled); a layer
        the role may not see is a 404, as in the OGC API."""
        if not layer.can_see_layer(role):
            raise not_found(f"图层 {layer.id}", f"layer '{layer.id}'")
        self._add_catalog_layer(m, layer, role, show, base=False)

    def add_frame(self, m: folium.Map, frame: gpd.GeoDataFrame, title: str, style: Style | Mapping | None = None,
                  popup: Mapping[str, str] | None = None, label_field: str | None = None,
                  label_min_zoom: int | None = None, masked: Mapping[str, str] | None = None,
                  show: bool = True, key: str = "", legend: bool = True) -> None:
        """An analysis result (zones, verdicts …) in any CRS, drawn like a catalog layer.

        popup maps column -> Chinese label (in order); label_field gives the popup heading and hover text (and
        permanent labels from label_min_zoom on); masked maps column -> personal kind ("name", "id_number",
        "phone") for personal values the caller's role may not see in clear."""
        overlay = Overlay(title=title, style=Style.parse(style), popup=tuple((popup or {}).items()),
                          label_field=label_field, label_min_zoom=label_min_zoom, masked=dict(masked or {}), key=key)
        named = [n for n, _ in overlay.popup] + [label_field, overlay.style.category_field] + list(overlay.masked)
        unknown = sorted({n for n in named if n is not None and n not in frame.columns})
        if unknown:
            raise ValueError(f"columns {unknown} are not in the frame (columns: {list(frame.columns)})")
        self._add_overlay(m, frame, overlay, show)
        if legend:
            m.gis_legend.add(overlay, _geometry_kind(_dominant_type(frame)))

    def add_vector_tiles(self, m: folium.Map, layer: LayerDef, role: str | None, style: Style | Mapping | None = None,
                         outline: tuple[str, Mapping[str, str]] | None = None, title: str | None = None,
                         show: bool = True, popup: bool = True) -> None:
        """A collection as vector tiles from /ogc/collections/{id}/tiles (any size: two million plots draw as
        fast as ten), styled by ``style`` (default: the layer's), optionally outlined by a second category
        (``outline=(field, {value: colour})``); a click shows the popup fields the tiles carry (masked by the
        server for the signed-in role) or, zoomed out, the cell's count and dominant values — unless ``popup``
        is False (a page that answers clicks itself); zoomed out, cells are filled with the dominant value's
        colour, more opaque the larger its share. window.gisVectorTiles[key] counts tiles loaded and failed.
        A layer the role may not see is a 404. A self-contained export cannot fetch tiles: the layer is embedded instead."""
        if not layer.can_see_layer(role):
            raise not_found(f"图层 {layer.id}", f"layer '{layer.id}'")
        if self.standalone:
            self._add_catalog_layer(m, layer, role, show, base=False)
            return
        overlay = Overlay.of_layer(layer, title or display_title(self.store, layer), role)
        if style is not None:
            overlay = dataclasses.replace(overlay, style=Style.parse(style))
        names = [overlay.style.category_field] + ([outline[0]] if outline else [])
        unknown = [n for n in names if n is not None and layer.field(n) is None]
        if unknown:
            raise ValueError(f"fields {unknown} are not in layer {layer.id}")
        _VectorTileLayer(layer, overlay, outline, show, gcj02=self.settings.basemap == "gaode",
                         click=popup).add_to(m)
        m.gis_legend.add(overlay, _geometry_kind(layer.geometry))

    def _add_catalog_layer(self, m: folium.Map, layer: LayerDef, role: str | None, show: bool, base: bool) -> None:
        overlay = Overlay.of_layer(layer, display_title(self.store, layer), role)
        m.gis_legend.add(overlay, _geometry_kind(layer.geometry), base=base)
        total = self.store.count(layer)
        if total > EMBED_LIMIT and not self.standalone:
            _DynamicLayer(layer, overlay).add_to(m)
            return
        limit = min(total, self.feature_cap) if self.standalone else total
        page = self.store.query(layer, FeatureQuery(limit=max(limit, 1), masked=layer.masked_fields(role)))
        frame = _page_frame(layer, page)
        note = None
        if total > limit:
            note = f"{overlay.title}：本文件仅含前 {limit:,} 个要素（共 {total:,} 个，已截断）"
        self._add_overlay(m, frame, overlay, show, note)
        m.gis_disclosures.append((layer, len(frame)))

    def _add_overlay(self, m: folium.Map, frame: gpd.GeoDataFrame, overlay: Overlay, show: bool,
                     note: str | None = None) -> None:
        data = display_features(frame, overlay, self.settings)
        _GeoJsonOverlay(data, overlay, label_points(data, overlay), show, note).add_to(m)

    def _online_basemap(self, m: folium.Map) -> None:
        if self.settings.basemap == "osm":
            folium.TileLayer("OpenStreetMap", name="OpenStreetMap 底图", attr="© OpenStreetMap contributors").add_to(m)
        elif self.settings.basemap == "tianditu":
            for layer, name in (("vec", "天地图矢量"), ("cva", "天地图注记")):
                folium.TileLayer(f"/basemap/tianditu/{layer}/{{z}}/{{x}}/{{y}}", name=name, attr="© 天地图",
                                 overlay=layer == "cva").add_to(m)
        elif self.settings.basemap == "gaode":
            folium.TileLayer("https://webrd0{s}.is.autonavi.com/appmaptile?lang=zh_cn&size=1&scale=1&style=8&x={x}&y={y}&z={z}",
                             subdomains="1234", name="高德地图（GCJ-02，图层已偏移对齐）", attr="© 高德地图").add_to(m)

    # the maps API -----------------------------------------------------------------------------------------
    def features_for_view(self, layer: LayerDef, bbox, role: str | None, limit: int = 3000) -> dict:
        """Display features inside a lon/lat box for the dynamic layer (same popups as embedded; the store masks)."""
        if self.settings.basemap == "gaode":  # the browser's view is in GCJ-02 over a Gaode basemap
            lon, lat = crs_mod.gcj02_to_wgs84(np.array(bbox[0::2]), np.array(bbox[1::2]))
            bbox = (lon[0], lat[0], lon[1], lat[1])
        page = self.store.query(layer, FeatureQuery(bbox=bbox, limit=limit, masked=layer.masked_fields(role)))
        overlay = Overlay.of_layer(layer, display_title(self.store, layer), role)
        data = display_features(_page_frame(layer, page), overlay, self.settings)
        data["truncated"] = page.number_matched > limit
        return data


def _page_frame(layer: LayerDef, page) -> gpd.GeoDataFrame:
    if not page.fids:
        return gpd.GeoDataFrame({f.name: [] for f in layer.fields}, geometry=[], crs=crs_mod.STORAGE_CRS)
    return gpd.GeoDataFrame(page.properties, geometry=page.geometries, crs=crs_mod.STORAGE_CRS, index=page.fids)


def _dominant_type(frame: gpd.GeoDataFrame) -> str:
    types = frame.geometry.geom_type.dropna()
    return str(types.mode().iloc[0]) if len(types) else "Polygon"
