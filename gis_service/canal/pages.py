"""The planner map /maps/canal (issue #6 item 9): rivers with flow arrows, zones, villages inside/outside the
remediation distance, heritage ranges, green-corridor shortfalls, drawn control zones — and a draw tool that
asks /api/canal/check for a verdict and saves polygons as control zones.

Everything the browser shows from the server is inserted as text (textContent, text nodes): verdicts, reasons,
clauses, error messages. The overlays' popups are escaped on the server by the map factory. An exported
(standalone) map has no server behind it, so it has no draw tool and says so in its title.
"""

from __future__ import annotations

import json

import folium
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from branca.element import Element, MacroElement
from jinja2 import Template

from .. import crs
from ..auth import Principal
from ..domains import DomainContext
from ..maps.factory import APP_TITLE, MapFactory, Overlay, Style, display_geometries
from . import analysis, control_zones, service

CHANNELS = "canal_channels"
ARROW_SPACING_M = 4000  # one flow arrow per 4 km of channel (display only)
ARROW_COLOR = "#08519c"
CHECK_URL = "/api/canal/check"
ZONES_URL = "/api/canal/control-zones"
NEGATIVE_LIST = "negative_list"  # rule id in gis_service/rules/canal.toml: [{sector, title_zh, action, source}]


# --- flow arrows ------------------------------------------------------------------------------------------
def flow_arrows(channels, spacing_m: float = ARROW_SPACING_M) -> np.ndarray:
    """(tail, head) point pairs in EPSG:4548 along each channel line, pointing downstream.

    The channel lines are stored in flow direction (first vertex upstream), so the arrow at distance s along
    a line points from s to s + 50 m. Input in EPSG:4548; one arrow in the middle of parts shorter than
    the spacing. Returns an array of shape (n, 2, 2): [[x0, y0], [x1, y1]]."""
    crs.require_metric(channels=channels)
    out = []
    for geom in channels.geometry.values:
        for part in getattr(geom, "geoms", [geom]):
            length = part.length
            if length <= 0:
                continue
            count = max(1, int(length // spacing_m))
            for s in (np.arange(count) + 0.5) * (length / count):
                tail, head = part.interpolate(s), part.interpolate(min(s + 50.0, length))
                if head.equals(tail):  # the very end: look back instead
                    tail = part.interpolate(max(s - 50.0, 0.0))
                out.append([[tail.x, tail.y], [head.x, head.y]])
    return np.asarray(out, dtype=float).reshape(-1, 2, 2)


class _FlowArrows(MacroElement):
    """Arrow markers along the channels, in the channel layer's group (so the layer control toggles them).

    The rotation is computed in the browser from the projected tail and head, so it is right on any
    projection and basemap; the arrow itself is a fixed SVG (no server text in it)."""

    _template = Template("""
{% macro script(this, kwargs) %}
(function() {
  var map = {{ this._parent.get_name() }};
  var group = window.gisLayers[{{ this.key|tojson }}];
  if (!group) { return; }
  {{ this.arrows_js }}.forEach(function(a) {
    var p0 = map.project([a[0], a[1]], 0), p1 = map.project([a[2], a[3]], 0);
    var deg = Math.atan2(p1.y - p0.y, p1.x - p0.x) * 180 / Math.PI;
    var html = '<div style="transform:rotate(' + deg.toFixed(1) + 'deg);width:22px;height:22px">' +
      '<svg width="22" height="22" viewBox="0 0 22 22"><path d="M3 5 L20 11 L3 17 L7 11 Z" fill="#fff" ' +
      'stroke="{{ this.color }}" stroke-width="2" stroke-linejoin="round"/></svg></div>';
    L.marker([a[0], a[1]], {interactive: false, keyboard: false,
      icon: L.divIcon({className: 'gis-flow-arrow', iconSize: [22, 22], iconAnchor: [11, 11], html: html})}).addTo(group);
  });
})();
{% endmacro %}
""")

    def __init__(self, key: str, arrows: list, color: str):
        super().__init__()
        self.key, self.arrows_js, self.color = key, json.dumps(arrows), color  # numbers only


def _arrows_for_display(ctx: DomainContext, factory: MapFactory) -> list:
    pairs = flow_arrows(ctx.frame(CHANNELS))
    if not len(pairs):
        return []
    points = crs.transform_geometry(shapely.points(pairs.reshape(-1, 2)), crs.METRIC_CRS, crs.STORAGE_CRS)
    xy = shapely.get_coordinates(display_geometries(points, factory.settings)).reshape(-1, 2, 2)
    return [[round(t[1], 6), round(t[0], 6), round(h[1], 6), round(h[0], 6)] for t, h in xy]


# --- the draw tool ----------------------------------------------------------------------------------------
_DRAW_CSS = """<style>
.gis-verdict{max-width:340px;font-size:13px}.gis-verdict ul{margin:4px 0;padding-left:18px}
.gis-verdict-head{font-size:15px;font-weight:bold;margin-bottom:4px}
.gis-verdict-prohibited{color:#b30000}.gis-verdict-needs_review{color:#d95f0e}.gis-verdict-allowed{color:#238b45}
.gis-verdict-tip{font-weight:bold}
.gis-save{margin-top:6px;border-top:1px solid #ddd;padding-top:6px}.gis-save input,.gis-save select{margin:2px 4px 2px 0}
.gis-save-status{color:#555;margin-top:2px}
.gis-sector{background:#fff;padding:6px 8px;border-radius:4px;box-shadow:0 1px 4px rgba(0,0,0,.3);font-size:13px}
</style>"""


class _DrawCheck(MacroElement):
    """Leaflet.draw toolbar (polygon, line, marker); each drawn or edited shape is checked at /api/canal/check
    and its verdict shown beside it; a polygon can be saved (or, once saved, edited) as a control zone.

    Requests carry the session cookie (credentials: same-origin); it is SameSite=Strict, so another site
    cannot make the browser send it (see control_zones.py)."""

    _template = Template("""
{% macro script(this, kwargs) %}
(function() {
  var map = {{ this._parent.get_name() }};
  var COORD_SYS = {{ this.coord_sys|tojson }}, KINDS = {{ this.kinds|tojson }}, SECTORS = {{ this.sectors|tojson }};
  var CAN_SAVE = {{ this.can_save|tojson }}, SAVE_HINT = {{ this.save_hint|tojson }};
  var CHECK_URL = {{ this.check_url|tojson }}, ZONES_URL = {{ this.zones_url|tojson }};
  var BANKS = {{ this.banks|tojson }}, VERDICTS = {{ this.verdicts|tojson }};  // banks: seen looking downstream
  var RANGES = {protection: '保护范围', construction_control: '建设控制地带'};

  var t = L.drawLocal;  // the toolbar in Chinese
  t.draw.toolbar.buttons.polygon = '画面：拟建项目范围或管控区';
  t.draw.toolbar.buttons.polyline = '画线：线状工程（道路、管线）';
  t.draw.toolbar.buttons.marker = '标点：点状项目';
  t.draw.toolbar.actions = {title: '取消绘制', text: '取消'};
  t.draw.toolbar.finish = {title: '完成绘制', text: '完成'};
  t.draw.toolbar.undo = {title: '删除最后一个点', text: '删除最后一点'};
  t.draw.handlers.polygon.tooltip = {start: '点击开始画面', cont: '点击继续画面', end: '点击第一个点闭合'};
  t.draw.handlers.polyline.tooltip = {start: '点击开始画线', cont: '点击继续画线', end: '点击最后一个点结束'};
  t.draw.handlers.polyline.error = '边不能交叉！';
  t.draw.handlers.marker.tooltip = {start: '点击地图放置项目位置'};
  t.edit.toolbar.actions.save = {title: '保存修改', text: '保存'};
  t.edit.toolbar.actions.cancel = {title: '放弃修改', text: '取消'};
  t.edit.toolbar.actions.clearAll = {title: '清除全部图形', text: '全部清除'};
  t.edit.toolbar.buttons = {edit: '修改图形（修改后重新判定）', editDisabled: '没有可修改的图形',
                            remove: '删除图形', removeDisabled: '没有可删除的图形'};
  t.edit.handlers.edit.tooltip = {text: '拖动节点修改图形', subtext: '点击“取消”撤销修改'};
  t.edit.handlers.remove.tooltip = {text: '点击图形将其删除'};

  var drawn = new L.FeatureGroup().addTo(map);
  window.gisDrawn = drawn;
  map.addControl(new L.Control.Draw({position: 'topleft', edit: {featureGroup: drawn},
    draw: {polygon: {allowIntersection: false, showArea: false}, polyline: {showLength: false}, marker: true,
           rectangle: false, circle: false, circlemarker: false}}));

  // The sector of the proposed project (optional; matched against the negative list).
  var sector = document.createElement('select');
  var panel = L.control({position: 'bottomleft'});
  panel.onAdd = function() {
    var box = L.DomUtil.create('div', 'gis-sector');
    var label = document.createElement('label');
    label.textContent = '拟建项目行业（对照负面清单）：';
    sector.className = 'gis-sector-select';
    [['', '未说明']].concat(SECTORS).forEach(function(s) {
      var o = document.createElement('option'); o.value = s[0]; o.textContent = s[1]; sector.appendChild(o);
    });
    label.appendChild(sector); box.appendChild(label);
    L.DomEvent.disableClickPropagation(box);
    return box;
  };
  panel.addTo(map);

  var add = window.gisEl;  // text only (gis_service/maps/factory.py)
  function post(url, method, body) {
    return fetch(url, {method: method, credentials: 'same-origin', headers: {'Content-Type': 'application/json'},
                       body: JSON.stringify(body)})
      .then(function(r) { return r.json().then(function(d) { return {status: r.status, ok: r.ok, data: d}; },
                                                function() { return {status: r.status, ok: false, data: {}}; }); })
      .catch(function() { return {status: 0, ok: false, data: {message: '网络错误：无法连接服务器'}}; });
  }
  function tip(layer, text) {  // the verdict beside the shape
    var span = document.createElement('span'); span.textContent = text;
    if (layer.getTooltip()) { layer.setTooltipContent(span); return; }
    layer.bindTooltip(span, {permanent: true, direction: 'right', className: 'gis-verdict-tip', offset: [12, 0]});
    layer.openTooltip();
  }
  function named(items, label) {
    return items.map(function(z) { return label(z); }).filter(function(s) { return s; }).join('；');
  }

  function verdictBox(layer, answer) {
    var d = answer.data, box = document.createElement('div');
    box.className = 'gis-verdict';
    if (!answer.ok) {
      add(box, 'div', '无法判定', 'gis-verdict-head gis-verdict-error');
      add(box, 'div', d.message || ('服务器返回 ' + answer.status), 'gis-verdict-message');
      return box;
    }
    var head = add(box, 'div', '判定：', 'gis-verdict-head gis-verdict-' + d.verdict);
    add(head, 'span', d.verdict_zh, 'gis-verdict-zh');
    var reasons = add(box, 'ul', null, 'gis-verdict-reasons');
    (d.reasons || []).forEach(function(r) {
      var li = add(reasons, 'li', r.text_zh, 'gis-verdict-reason');
      add(li, 'small', '（' + r.clause + '；规则 ' + r.rule_id +
          (r.verdict_rule_id && r.verdict_rule_id !== r.rule_id ? '；结论依据 ' + r.verdict_rule_id : '') + '）',
          'gis-verdict-clause');
    });
    if (d.zones && d.zones.length) {
      add(box, 'div', '涉及分区：' + named(d.zones, function(z) {
        var names = [z.river, z.bank_zh || BANKS[z.bank] || z.bank, z.kind_zh || z.kind, z.county];
        return names.filter(function(s) { return s; }).join(' ') +
               (z.distance_to_channel_m != null ?
                '（距' + (z.baseline_zh || '河道') + ' ' + Math.round(z.distance_to_channel_m) + ' 米）' : '');
      }), 'gis-verdict-zones');
    } else if (d.nearest_zone_edge_m != null) {
      add(box, 'div', '涉及分区：无（距最近分区边界 ' + Math.round(d.nearest_zone_edge_m) + ' 米）', 'gis-verdict-zones');
    }
    if (d.control_zones && d.control_zones.length) {
      add(box, 'div', '涉及规划管控区：' + named(d.control_zones, function(c) {
        return c.name + '（' + c.kind_zh + '，第 ' + c.version + ' 版，' + c.author + '）';
      }), 'gis-verdict-control');
    }
    if (d.heritage && d.heritage.length) {
      add(box, 'div', '涉及文物：' + named(d.heritage, function(h) {
        return h.name + (RANGES[h.range] || '') + (h.distance_m != null ? '（距 ' + Math.round(h.distance_m) + ' 米）' : '');
      }), 'gis-verdict-heritage');
    }
    if (d.negative_list && d.negative_list.length) {
      add(box, 'div', '负面清单：' + named(d.negative_list, function(n) {
        return n.title_zh + (VERDICTS[n.action] ? '（' + VERDICTS[n.action] + '）' : '');
      }), 'gis-verdict-negative');
    }
    (d.caveats || []).forEach(function(c) { add(box, 'div', '说明：' + c, 'gis-verdict-caveat'); });
    if (layer.gisType === 'polygon') { saveForm(box, layer); }
    return box;
  }

  function saveForm(box, layer) {
    var form = add(box, 'div', null, 'gis-save');
    var saved = layer.gisSaved;  // {id, version} once saved: then an edit is saved as a new version
    add(form, 'div', saved ? '已保存为管控区 ' + saved.id + '（第 ' + saved.version + ' 版）' : '保存为规划管控区：');
    var name = add(form, 'input', null, 'gis-save-name');
    name.placeholder = '管控区名称'; name.value = saved ? saved.name : '';
    var kind = add(form, 'select', null, 'gis-save-kind');
    KINDS.forEach(function(k) { var o = add(kind, 'option', k[1]); o.value = k[0]; });
    if (saved) { kind.value = saved.kind; }
    var button = add(form, 'button', saved ? '保存修改（新版本）' : '保存为管控区', 'gis-save-button');
    button.type = 'button';
    var status = add(form, 'div', CAN_SAVE ? '' : SAVE_HINT, 'gis-save-status');
    button.disabled = !CAN_SAVE;
    L.DomEvent.disableClickPropagation(form);
    button.addEventListener('click', function() {
      var n = name.value.trim();
      if (!n) { status.textContent = '请填写管控区名称'; name.focus(); return; }
      button.disabled = true; status.textContent = '正在保存…';
      var body = {geometry: layer.toGeoJSON().geometry, coord_sys: COORD_SYS, name: n, kind: kind.value};
      var request = saved ? post(ZONES_URL + '/' + saved.id, 'PUT', Object.assign({base_version: saved.version}, body))
                          : post(ZONES_URL, 'POST', body);
      request.then(function(a) {
        if (a.ok) {
          layer.gisSaved = {id: a.data.id, version: a.data.version, name: a.data.name, kind: a.data.kind};
          status.textContent = '已保存：管控区 ' + a.data.id + '（第 ' + a.data.version + ' 版，' +
            Math.round(a.data.area_m2).toLocaleString('zh-CN') + ' 平方米）' +
            (a.data.repaired ? '；' + a.data.repair_note_zh : '');
          status.className = 'gis-save-status gis-save-done';
          if (layer.setStyle) { layer.setStyle({color: '#6a3d9a', dashArray: '6 3'}); }
        } else {
          status.textContent = (a.status === 401 ? '请先在地图首页以规划人员身份登录：' : '保存失败：') +
                               (a.data.message || ('服务器返回 ' + a.status));
          button.disabled = false;
        }
      });
    });
  }

  function check(layer) {
    var body = {geometry: layer.toGeoJSON().geometry, coord_sys: COORD_SYS};
    if (sector.value) { body.sector = sector.value; }
    tip(layer, '判定中…');
    return post(CHECK_URL, 'POST', body).then(function(answer) {
      tip(layer, answer.ok ? answer.data.verdict_zh : '无法判定');
      layer.unbindPopup();
      layer.bindPopup(verdictBox(layer, answer), {maxWidth: 360, minWidth: 240}).openPopup();
      layer.gisVerdict = answer.data;
    });
  }
  window.gisCheck = check;

  map.on('draw:created', function(e) {
    e.layer.gisType = e.layerType;
    drawn.addLayer(e.layer);
    check(e.layer);
  });
  map.on('draw:edited', function(e) { e.layers.eachLayer(check); });
})();
{% endmacro %}
""")

    def __init__(self, coord_sys: str, sectors: list[tuple[str, str]], who: Principal | None):
        super().__init__()
        self.coord_sys, self.sectors = coord_sys, sectors
        self.kinds = list(control_zones.KINDS.items())  # a list: tojson would sort an object's keys
        self.banks, self.verdicts = analysis.BANK_ZH, analysis.VERDICT_ZH
        self.check_url, self.zones_url = CHECK_URL, ZONES_URL
        self.can_save = who is not None and who.role in control_zones.EDITORS
        self.save_hint = ("" if self.can_save else
                          "保存管控区需以规划人员（planner）或管理员身份登录（地图首页输入 API 密钥）")


# --- the page ---------------------------------------------------------------------------------------------
ZONE_STYLES = {  # drawn widest first, so the narrower zones lie on top
    "core_monitoring": {"color": "#807dba", "weight": 1, "fill_opacity": 0.12, "dash_array": "4 4"},
    "village_remediation": {"color": "#fd8d3c", "weight": 1, "fill_opacity": 0.18},
    "green_belt": {"color": "#238b45", "weight": 1, "fill_opacity": 0.25},
}
ZONE_POPUP = {"kind_zh": "分区", "river": "河流", "bank_zh": "岸别（面向下游）", "county": "县区", "width_m": "每侧宽度（米）",
              "area_km2": "面积（平方公里）", "area_mu": "面积（亩）"}
INSIDE, OUTSIDE = "#d7301f", "#969696"
VILLAGE_POPUP = {"name": "村名", "code": "村级区划代码", "township": "乡镇（街道）", "county": "县区", "remediation": "整治范围",
                 "river": "最近河流", "bank_zh": "岸别（面向下游）", "distance_m": "距河道（米）",
                 "position_source": "点位来源", "position_uncertainty_m": "点位不确定度（米）",
                 "borderline": "点位误差可能使其落在界线另一侧"}
SHORTFALL_POPUP = {"river": "河流", "bank_zh": "岸别", "county": "县区", "length_m": "不足河段长度（米）",
                   "min_width_m": "最窄处宽度（米）", "mean_width_m": "平均宽度（米）", "gap_length_m": "其中缺口长度（米）",
                   "missing_area_m2": "缺少面积（平方米）", "missing_area_mu": "缺少面积（亩）"}
HERITAGE_POPUP = {"name": "名称", "heritage_class": "保护级别（推定）", "radius_m": "半径（米）", "range_zh": "范围"}


def village_status(svc: service.CanalService, villages: gpd.GeoDataFrame, distance_m: float) -> gpd.GeoDataFrame:
    """Every village with ``inside`` (within distance_m of a canal baseline, as /api/canal/villages counts it),
    and for those inside the nearest river, bank and distance. EPSG:4548 in and out."""
    rows = analysis.villages_within(svc.baselines(), villages, distance_m)
    nearest = pd.DataFrame(rows.drop(columns="geometry")).sort_values("distance_m").drop_duplicates("code")
    out = villages.reindex(columns=["name", "code", "township", "county", "position_source", "position_uncertainty_m",
                                    "geometry"])  # the position fields may be absent (an older villages layer)
    out = out.merge(nearest[["code", "river", "bank", "distance_m", "borderline"]], on="code", how="left")
    out["inside"] = out["distance_m"].notna()
    out["bank_zh"] = out["bank"].map(analysis.BANK_ZH)
    return gpd.GeoDataFrame(out, geometry="geometry", crs=villages.crs)


def heritage_ranges(heritage: gpd.GeoDataFrame, table: dict) -> gpd.GeoDataFrame:
    """Protection range and construction control zone of each heritage site: discs of the radii its class has
    in canal.heritage_ranges (a class the table lacks: its 其他 entry), as the siting check measures them.
    EPSG:4548 in and out."""
    crs.require_metric(heritage=heritage)
    rows = []
    for _, site in heritage.iterrows():
        cls = site.get("heritage_class")
        radii = table.get(cls) if isinstance(cls, str) else None
        radii = radii or table[analysis.OTHER_HERITAGE_CLASS]
        for key, zh in (("construction_control_m", "建设控制地带"), ("protection_m", "保护范围")):
            rows.append({"name": site["name"], "heritage_class": cls if isinstance(cls, str) else "未定级",
                         "range": key.removesuffix("_m"), "range_zh": zh, "radius_m": float(radii[key]),
                         "geometry": site.geometry.buffer(float(radii[key]), quad_segs=32)})
    return gpd.GeoDataFrame(rows, columns=["name", "heritage_class", "range", "range_zh", "radius_m", "geometry"],
                            geometry="geometry", crs=heritage.crs)


def canal_map(ctx: DomainContext, factory: MapFactory, who: Principal | None) -> folium.Map:
    """The planner map; overlays bottom to top: zones, green corridor and its shortfalls, heritage ranges, the
    rivers with flow arrows, drawn control zones (signed-in callers), villages, heritage sites."""
    role = who.role if who else None
    svc = service.service_for(ctx)
    if factory.standalone:
        title = "大运河规划管控图（离线文件：无绘制与选址判定工具，需连接服务器使用）"
    else:
        title = "大运河规划管控图：绘制面、线或点，查看选址判定并保存管控区"
    m = factory.new_map(f"{title} — {APP_TITLE}")
    _add_zones(m, factory, svc)
    if svc.has(service.CORRIDORS):
        factory.add_layer(m, ctx.layer(service.CORRIDORS), role, show=True)
        _add_shortfalls(m, factory, svc, ctx.rules.value("green_corridor_min_width_m"))
    _add_heritage_ranges(m, factory, heritage_ranges(ctx.frame(service.HERITAGE), ctx.rules.value("heritage_ranges")))
    factory.add_layer(m, ctx.layer(CHANNELS), role, show=True)
    _FlowArrows(CHANNELS, _arrows_for_display(ctx, factory), ARROW_COLOR).add_to(m)
    m.gis_legend.add(Overlay(title="箭头：水流方向（指向下游）", style=Style(color=ARROW_COLOR)), "line")
    drawn = ctx.catalog.get(control_zones.LAYER)
    if drawn is not None and drawn.can_see_layer(role) and ctx.store.exists(drawn):  # internal: signed in only
        factory.add_layer(m, drawn, role, show=True)
    limit = ctx.rules.value("village_remediation_distance_m")
    _add_villages(m, factory, village_status(svc, ctx.frame(service.VILLAGES), limit), limit)
    factory.add_layer(m, ctx.layer(service.HERITAGE), role, show=True)
    if not factory.standalone:  # checking and saving need the server
        m.get_root().header.add_child(Element(_DRAW_CSS), name="canal_draw_css")
        coord_sys = "gcj02" if factory.settings.basemap == "gaode" else "wgs84"  # what the browser's map is in
        sectors = [(s["sector"], s["title_zh"]) for s in ctx.rules.value(NEGATIVE_LIST)]
        _DrawCheck(coord_sys, sectors, who).add_to(m)
    return factory.finish(m)


def _add_zones(m: folium.Map, factory: MapFactory, svc: service.CanalService) -> None:
    """One overlay per kind (each toggled in the layer control), the frame /api/canal/zones serves; the map
    opens on their extent."""
    zones = svc.zone_set().frame
    if not len(zones):
        return
    box = crs.transform_geometry(shapely.box(*zones.total_bounds), crs.METRIC_CRS, crs.STORAGE_CRS)
    x0, y0, x1, y1 = shapely.bounds(display_geometries(box, factory.settings))
    m.fit_bounds([[y0, x0], [y1, x1]])
    for kind, style in ZONE_STYLES.items():
        part = zones[zones["kind"] == kind]
        if len(part):
            title = f"{analysis.KIND_ZH[kind]}（每侧 {part['width_m'].iloc[0]:g} 米）"
            factory.add_frame(m, part, title, style=style, popup=ZONE_POPUP, label_field="kind_zh",
                              key=f"canal_zone_{kind}", show=kind != "core_monitoring")


def _add_shortfalls(m: folium.Map, factory: MapFactory, svc: service.CanalService, min_width: float) -> None:
    """The green-corridor sections under the minimum width, as /api/canal/green-belt/shortfalls reports them."""
    sections = svc.shortfalls(None, None, None)["sections"]["features"]
    if sections:
        frame = gpd.GeoDataFrame.from_features(sections, crs=crs.STORAGE_CRS)
        factory.add_frame(m, frame, f"绿色廊道宽度不足 {min_width:g} 米的河段", popup=SHORTFALL_POPUP,
                          style={"color": "#e7298a", "weight": 2, "fill_opacity": 0.55}, key="canal_green_shortfalls")


def _add_heritage_ranges(m: folium.Map, factory: MapFactory, ranges: gpd.GeoDataFrame) -> None:
    for kind, colour in (("construction_control", "#fdae6b"), ("protection", "#b30000")):
        part = ranges[ranges["range"] == kind]
        if len(part):
            factory.add_frame(m, part, f"文物{part['range_zh'].iloc[0]}（按级别推定半径）", popup=HERITAGE_POPUP,
                              style={"color": colour, "weight": 1, "fill_opacity": 0.25}, label_field="name",
                              key=f"canal_heritage_{kind}")


def _add_villages(m: folium.Map, factory: MapFactory, villages: gpd.GeoDataFrame, limit: float) -> None:
    """Villages outside (small, grey) and inside (red) the remediation distance: two overlays, two legend rows."""
    villages = villages.assign(remediation=np.where(villages["inside"], f"河道两侧 {limit:g} 米内，须整治",
                                                    f"{limit:g} 米外"))
    factory.add_frame(m, villages[~villages["inside"]], f"行政村：距河道 {limit:g} 米外", popup=VILLAGE_POPUP,
                      label_field="name", key="canal_villages_outside",
                      style={"color": OUTSIDE, "radius": 3, "fill_opacity": 0.6})
    factory.add_frame(m, villages[villages["inside"]], f"行政村：距河道 {limit:g} 米内（须整治）", popup=VILLAGE_POPUP,
                      label_field="name", key="canal_villages_inside", style={"color": INSIDE, "radius": 5})
