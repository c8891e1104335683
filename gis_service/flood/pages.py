"""The command map /maps/flood (issue #8 item 6): districts, drainage channels, gates and pumping stations with
their responsible units; every monitored point (underpasses, waterlogging points) coloured by its status, closed
ones red with a permanent 「禁止通行」 label; a panel listing the closures with district and responsible unit;
statuses refreshed from GET /api/flood/status every flood.status_refresh_s seconds (a rule) without reloading; a rainfall scenario (preset → POST
/api/flood/scenarios) shown as the predicted depth image plus its predicted closures.

The flood layers are internal: an anonymous caller gets the map frame with 「请登录后查看」 instead of an error.
Everything the browser shows from the API (names, units, clauses, error messages) is inserted as text
(textContent, text nodes), never as HTML; the catalog layers' popups are escaped on the server by the factory.
An exported (standalone) map has no server behind it: no live status, no scenarios, and its title says so —
its monitored points are the underpass and waterlogging layers as stored, without status.
"""

from __future__ import annotations

import folium
import shapely
from branca.element import Element, MacroElement
from jinja2 import Template

from ..auth import Principal
from ..crs import GCJ_A, GCJ_EE
from ..domains import SYSTEM, DomainContext
from ..maps.factory import APP_TITLE, MapFactory, Overlay, Style, display_geometries
from ..store import display_title

STATUS_URL = "/api/flood/status"
SCENARIO_URL = "/api/flood/scenarios"
STATUS_TIMEOUT_MS = 20_000  # a status request still unanswered after this is aborted (the next refresh retries)
REFRESH_RULE = "status_refresh_s"  # the refresh interval (a page may set window.gisFloodRefreshMs for tests)
PRESETS_RULE = "scenario_presets"  # flood.toml: the named rainfall events POST /api/flood/scenarios accepts
CONTEXT_LAYERS = ("urban_districts", "drainage_channels", "drainage_gates", "pumping_stations")  # bottom first
POINT_LAYERS = ("underpasses", "waterlogging_points")  # the monitored points, for the offline file
STATUS_COLORS = {"normal": "#31a354", "watch": "#fd8d3c", "closed": "#de2d26", "unknown": "#969696"}
STATUS_ZH = {"normal": "正常", "watch": "关注（积水）", "closed": "断交（禁止通行）", "unknown": "无报告"}
KIND_ZH = {"underpass": "下穿立交", "waterlogging": "易涝点"}
SIGN_IN = "防汛图层为内部数据，请登录后查看：在地图首页输入 API 密钥登录。"
SIGN_IN_EXPORT = "防汛图层为内部数据，请登录后查看：导出时用 --role 指定有权查看的角色（如 flood）。"

_CSS = """<style>
.gis-flood-panel{background:#fff;padding:8px 10px;border-radius:4px;box-shadow:0 1px 4px rgba(0,0,0,.3);
 font-size:13px;max-width:340px;max-height:52vh;overflow:auto}
.gis-flood-panel h4{margin:6px 0 4px;font-size:14px}.gis-flood-panel ul{margin:2px 0;padding-left:18px}
.gis-flood-panel small{color:#555}.gis-flood-scenario-method{color:#555;font-size:12px;margin-top:4px}.gis-flood-error{color:#b30000}
.gis-flood-closed-label{background:#de2d26;color:#fff;border:none;font-weight:bold;padding:1px 4px}
.gis-flood-closed-label:before{display:none}
.gis-flood-popup th{text-align:left;padding-right:8px;color:#555;vertical-align:top}
.gis-flood-signin{position:absolute;top:60px;left:60px;z-index:1000;background:#fff;padding:10px 14px;
 border-radius:4px;box-shadow:0 1px 4px rgba(0,0,0,.3);font-size:15px;color:#b30000}
</style>"""


class _FloodCommand(MacroElement):
    """Live status of the monitored points, the closures panel and the scenario control (server pages only)."""

    _template = Template("""
{% macro script(this, kwargs) %}
(function() {
  var map = {{ this._parent.get_name() }};
  var STATUS_URL = {{ this.status_url|tojson }}, SCENARIO_URL = {{ this.scenario_url|tojson }};
  var REFRESH_MS = window.gisFloodRefreshMs || {{ this.refresh_ms }};
  var STATUS_TIMEOUT_MS = window.gisFloodStatusTimeoutMs || {{ this.status_timeout_ms }};  // then abort
  var COLORS = {{ this.colors|tojson }}, STATUS_ZH = {{ this.status_zh|tojson }}, KIND_ZH = {{ this.kind_zh|tojson }};
  var PRESETS = {{ this.presets|tojson }}, GAODE = {{ this.gaode|tojson }};

  // Over a Gaode basemap the map is in GCJ-02; the API answers in lon/lat (CGCS2000 ≈ WGS84): shift as
  // gis_service/crs.py wgs84_to_gcj02 does.
  function toMap(lon, lat) {
    if (!GAODE) { return [lat, lon]; }
    var A = {{ this.gcj_a }}, EE = {{ this.gcj_ee }}, PI = Math.PI, x = lon - 105.0, y = lat - 35.0;
    var dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * Math.sqrt(Math.abs(x)) +
      (20.0 * Math.sin(6.0 * x * PI) + 20.0 * Math.sin(2.0 * x * PI)) * 2.0 / 3.0 +
      (20.0 * Math.sin(y * PI) + 40.0 * Math.sin(y / 3.0 * PI)) * 2.0 / 3.0 +
      (160.0 * Math.sin(y / 12.0 * PI) + 320 * Math.sin(y * PI / 30.0)) * 2.0 / 3.0;
    var dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * Math.sqrt(Math.abs(x)) +
      (20.0 * Math.sin(6.0 * x * PI) + 20.0 * Math.sin(2.0 * x * PI)) * 2.0 / 3.0 +
      (20.0 * Math.sin(x * PI) + 40.0 * Math.sin(x / 3.0 * PI)) * 2.0 / 3.0 +
      (150.0 * Math.sin(x / 12.0 * PI) + 300.0 * Math.sin(x / 30.0 * PI)) * 2.0 / 3.0;
    var radlat = lat / 180.0 * PI, magic = 1 - EE * Math.sin(radlat) * Math.sin(radlat), sq = Math.sqrt(magic);
    dlat = (dlat * 180.0) / ((A * (1 - EE)) / (magic * sq) * PI);
    dlon = (dlon * 180.0) / (A / sq * Math.cos(radlat) * PI);
    return [lat + dlat, lon + dlon];
  }
  window.gisFloodToMap = toMap;

  var add = window.gisEl;  // text only (gis_service/maps/factory.py)
  function when(s) {  // an ISO instant from the API, shown in Beijing time
    var d = new Date(s);
    if (s == null || isNaN(d.getTime())) { return s; }
    return new Date(d.getTime() + 8 * 3600e3).toISOString().slice(0, 16).replace('T', ' ') + '（北京时间）';
  }
  function cm(v) { return v == null ? '无报告' : (Math.round(v * 10) / 10) + ' 厘米'; }
  function request(url, options) {
    var base = {credentials: 'same-origin', headers: {'Content-Type': 'application/json'}};
    return fetch(url, Object.assign(base, options))
      .then(function(r) { return r.json().then(function(d) { return {status: r.status, ok: r.ok, data: d}; },
                                                function() { return {status: r.status, ok: false, data: {}}; }); })
      .catch(function(e) {
        var aborted = e && e.name === 'AbortError';
        return {status: 0, ok: false, data: {message: aborted ? '服务器 ' + Math.round(STATUS_TIMEOUT_MS / 1000) +
                ' 秒无响应，已放弃本次请求' : '网络错误：无法连接服务器'}};
      });
  }
  function failure(a) {
    if (a.status === 401 || a.status === 403 || a.status === 404) {
      return '无权查看或会话已失效，请在地图首页重新登录（' + (a.data.message || ('服务器返回 ' + a.status)) + '）';
    }
    return a.data.message || ('服务器返回 ' + a.status);
  }

  var state = window.gisFlood = {markers: {}, status: null, scenario: null, scenarioOverlay: null, refreshes: 0};
  var points = L.featureGroup().addTo(map);
  var rings = state.scenarioRings = L.featureGroup().addTo(map);  // the scenario's predicted closures
  window.gisLayers['flood_points'] = points;

  // --- the panel: closures now, status line, scenario control and its predicted closures ------------------
  var box, closures, stamp, scenarioList, scenarioNote, scenarioMethod, select, button, clear;
  var panel = L.control({position: 'bottomleft'});
  panel.onAdd = function() {
    box = L.DomUtil.create('div', 'gis-flood-panel');
    add(box, 'h4', '当前断交（禁止通行）');
    closures = add(box, 'ul', null, 'gis-flood-closures');
    add(closures, 'li', '正在读取状态…');
    stamp = add(box, 'small', '', 'gis-flood-stamp');
    add(box, 'h4', '降雨情景（预测积水深度）');
    var row = add(box, 'div');
    select = add(row, 'select', null, 'gis-flood-preset');
    PRESETS.forEach(function(p) { var o = add(select, 'option', p[1]); o.value = p[0]; });
    button = add(row, 'button', '运行情景', 'gis-flood-run'); button.type = 'button';
    clear = add(row, 'button', '清除情景', 'gis-flood-clear'); clear.type = 'button'; clear.disabled = true;
    scenarioNote = add(box, 'div', '', 'gis-flood-scenario-note');
    scenarioList = add(box, 'ul', null, 'gis-flood-scenario-closures');
    scenarioMethod = add(box, 'details', null, 'gis-flood-scenario-method');
    scenarioMethod.style.display = 'none';
    L.DomEvent.disableClickPropagation(box);
    L.DomEvent.disableScrollPropagation(box);
    return box;
  };
  panel.addTo(map);

  // --- live status ---------------------------------------------------------------------------------------
  function popup(p) {
    var div = document.createElement('div'); div.className = 'gis-flood-popup';
    add(div, 'b', p.name);
    var table = add(div, 'table');
    function row(label, value) {
      if (value == null || value === '') { return; }
      var tr = add(table, 'tr'); add(tr, 'th', label); add(tr, 'td', String(value));
    }
    row('类型', KIND_ZH[p.kind] || p.kind);
    row('所在区', p.district);
    row('状态', p.status_zh || STATUS_ZH[p.status] || p.status);
    row('积水深度', cm(p.depth_cm));
    row('断交阈值', p.threshold_cm != null ? '超过 ' + p.threshold_cm + ' 厘米' : null);
    row('状态开始', when(p.since));
    row('观测时间', when(p.observed_at));
    row('责任单位', p.responsible_unit);
    if (p.nearest_pumping_station) {
      var s = p.nearest_pumping_station;
      row('最近泵站', s.name + '（' + s.owner + '，' + Math.round(s.distance_m) + ' 米）');
    }
    if (p.closure_task) {
      row('断交任务', p.closure_task.unit + '：' + p.closure_task.text_zh);
      row('依据', p.closure_task.clause + '（规则 ' + p.closure_task.rule_id + '）');
    }
    return div;
  }

  function draw(data) {
    var seen = {};
    (data.points || []).forEach(function(p) {
      seen[p.point_id] = true;
      var colour = COLORS[p.status] || COLORS.unknown, m = state.markers[p.point_id];
      // a black ring tells monitored points from the (layer-styled) gates and pumping stations
      var style = {radius: p.kind === 'underpass' ? 9 : 7, color: '#000', weight: 2.5, fillColor: colour,
                   fillOpacity: 0.95};
      if (!m) { m = state.markers[p.point_id] = L.circleMarker(toMap(p.lon, p.lat), style).addTo(points); }
      else { m.setLatLng(toMap(p.lon, p.lat)); m.setStyle(style); }
      m.gisStatus = p.status;
      m.unbindPopup(); m.bindPopup(popup(p), {maxWidth: 360});
      m.unbindTooltip();
      if (p.status === 'closed') {
        var label = document.createElement('span'); label.textContent = '禁止通行';
        m.bindTooltip(label, {permanent: true, direction: 'right', offset: [8, 0],
                              className: 'gis-flood-closed-label'});
      } else {
        m.bindTooltip(document.createTextNode(p.name + '：' + (p.status_zh || STATUS_ZH[p.status] || p.status)),
                      {sticky: true});
      }
    });
    Object.keys(state.markers).forEach(function(id) {  // a point no longer monitored
      if (!seen[id]) { points.removeLayer(state.markers[id]); delete state.markers[id]; }
    });
    closures.textContent = '';
    var closed = (data.points || []).filter(function(p) { return p.status === 'closed'; });
    if (!closed.length) { add(closures, 'li', '无', 'gis-flood-none'); }
    closed.forEach(function(p) {
      var li = add(closures, 'li', null, 'gis-flood-closure');
      li.dataset.pointId = p.point_id;
      add(li, 'b', p.name);
      li.appendChild(document.createTextNode('（' + (p.district || '所在区不明') + '）积水 ' + cm(p.depth_cm)));
      add(li, 'br');
      add(li, 'small', '责任单位：' + (p.responsible_unit || '—') +
          (p.closure_task ? '；断交执行：' + p.closure_task.unit : '') + (p.since ? '；自 ' + when(p.since) : ''));
    });
    stamp.className = 'gis-flood-stamp';
    stamp.textContent = '状态更新于 ' + when(data.generated_at) + '，每 ' + Math.round(REFRESH_MS / 1000) + ' 秒自动刷新';
  }

  var busy = false;
  function refresh() {
    if (busy) { return Promise.resolve(); }
    busy = true;
    // A hung request is aborted after STATUS_TIMEOUT_MS: otherwise `busy` would stop every later refresh.
    var ctl = window.AbortController ? new AbortController() : null;
    var timer = ctl ? setTimeout(function() { ctl.abort(); }, STATUS_TIMEOUT_MS) : null;
    return request(STATUS_URL, {method: 'GET', signal: ctl ? ctl.signal : undefined}).then(function(a) {
      if (timer) { clearTimeout(timer); }
      busy = false;
      state.refreshes += 1;
      if (!a.ok) {
        stamp.className = 'gis-flood-stamp gis-flood-error';
        stamp.textContent = '状态刷新失败：' + failure(a) + (state.status ? '（显示的是上次的状态）' : '');
        if (!state.status) { closures.textContent = ''; }
        return;
      }
      state.status = a.data;
      draw(a.data);
    });
  }
  state.refresh = refresh;
  refresh();
  state.timer = setInterval(refresh, REFRESH_MS);

  // --- scenario --------------------------------------------------------------------------------------------
  function dropScenario() {
    if (state.scenarioOverlay) { map.removeLayer(state.scenarioOverlay); state.scenarioOverlay = null; }
    rings.clearLayers(); scenarioList.textContent = ''; scenarioNote.textContent = ''; clear.disabled = true;
    scenarioMethod.textContent = ''; scenarioMethod.style.display = 'none';
    state.scenario = null;
  }
  function showScenario(d) {
    var b = d.bounds, sw = toMap(b[0], b[1]), ne = toMap(b[2], b[3]);
    state.scenarioOverlay = L.imageOverlay(d.image_url, [sw, ne], {opacity: 0.65, interactive: false}).addTo(map);
    clear.disabled = false;
    add(scenarioNote, 'b', '情景：' + select.options[select.selectedIndex].textContent);
    scenarioMethod.style.display = '';
    add(scenarioMethod, 'summary', '计算方法与假设');
    add(scenarioMethod, 'div', '方法：' + d.method);
    (d.assumptions || []).forEach(function(s) { add(scenarioMethod, 'div', '假设：' + s); });
    var closing = (d.points || []).filter(function(p) { return p.closes; });
    add(scenarioNote, 'div', closing.length ? '预测断交（积水超过阈值）' + closing.length + ' 处：' : '预测无断交');
    closing.forEach(function(p) {
      var li = add(scenarioList, 'li', p.name + '（' + (KIND_ZH[p.kind] || p.kind) + (p.district ? '，' + p.district : '') +
                   '）预测积水 ' + cm(p.predicted_depth_cm), 'gis-flood-scenario-closure');
      li.dataset.pointId = p.point_id;
      var m = state.markers[p.point_id];
      if (m) {
        L.circleMarker(m.getLatLng(), {radius: 14, color: COLORS.closed, weight: 2, dashArray: '4 3', fill: false,
                                       interactive: false}).addTo(rings);
      }
    });
    state.scenario = d;
  }
  function run() {
    dropScenario();
    button.disabled = true;
    scenarioNote.textContent = '正在计算情景…';
    return request(SCENARIO_URL, {method: 'POST', body: JSON.stringify({preset: select.value})}).then(function(a) {
      button.disabled = false;
      scenarioNote.textContent = '';
      if (!a.ok) { add(scenarioNote, 'div', '情景计算失败：' + failure(a), 'gis-flood-error'); return; }
      showScenario(a.data);
    });
  }
  state.runScenario = run;
  button.addEventListener('click', run);
  clear.addEventListener('click', dropScenario);
})();
{% endmacro %}
""")

    def __init__(self, presets: list[tuple[str, str]], gaode: bool, refresh_ms: int):
        super().__init__()
        self.status_url, self.scenario_url, self.refresh_ms = STATUS_URL, SCENARIO_URL, int(refresh_ms)
        self.status_timeout_ms = STATUS_TIMEOUT_MS
        self.colors, self.status_zh, self.kind_zh = STATUS_COLORS, STATUS_ZH, KIND_ZH
        self.presets, self.gaode = [list(p) for p in presets], gaode  # a list: tojson would sort an object
        self.gcj_a, self.gcj_ee = repr(float(GCJ_A)), repr(float(GCJ_EE))  # numbers only


def scenario_presets(ctx: DomainContext) -> list[tuple[str, str]]:
    """(preset key, option text) for the scenario control, from the rule the scenario endpoint reads."""
    return [(key, f"{p['name_zh']}（{p['rain_mm']:g} 毫米，{p['duration_min']:g} 分钟）")
            for key, p in ctx.rules.value(PRESETS_RULE).items()]


def _status_legend(m: folium.Map) -> None:
    m.gis_legend.add(Overlay(title="监测点（黑圈）状态", style=Style(category_field="status", categories=STATUS_COLORS,
                                                          category_labels=STATUS_ZH)), "point")


def flood_map(ctx: DomainContext, factory: MapFactory, who: Principal | None) -> folium.Map:
    """The command map. Overlays bottom to top: districts, channels, gates, pumping stations (popups with the
    responsible unit or owner), then the monitored points — live from /api/flood/status on a server page, the
    stored point layers in an offline file."""
    role = who.role if who else None
    if factory.standalone:
        title = "城区防汛指挥图（离线文件：无实时状态刷新与降雨情景，需连接服务器使用）"
    else:
        title = f"城区防汛指挥图：易涝点与下穿立交实时状态（每 {ctx.rules.value(REFRESH_RULE):g} 秒刷新）、断交清单、降雨情景"
    layers = [ctx.layer(i, SYSTEM) for i in CONTEXT_LAYERS + POINT_LAYERS]  # not built here: 503 (export skips)
    if not all(layer.can_see_layer(role) for layer in layers):  # internal layers: a signed-in caller only
        m = factory.new_map(f"城区防汛指挥图（请登录后查看） — {APP_TITLE}", zoom=12)
        notice = SIGN_IN_EXPORT if factory.standalone else SIGN_IN
        m.get_root().html.add_child(Element(f'<div class="gis-flood-signin" role="alert">{notice}</div>'))
        m.get_root().header.add_child(Element(_CSS), name="flood_css")
        return factory.finish(m)
    m = factory.new_map(f"{title} — {APP_TITLE}", zoom=12)
    m.get_root().header.add_child(Element(_CSS), name="flood_css")
    for layer_id in CONTEXT_LAYERS:
        factory.add_layer(m, ctx.layer(layer_id, who), role, show=True)
    districts = ctx.frame("urban_districts", crs="EPSG:4490", who=who)
    if len(districts):
        box = display_geometries(shapely.box(*districts.total_bounds), factory.settings)
        x0, y0, x1, y1 = shapely.bounds(box)
        m.fit_bounds([[y0, x0], [y1, x1]])
    if factory.standalone:  # no server: the points as stored, grey (no status) so that none reads as closed
        for layer_id in POINT_LAYERS:
            layer = ctx.layer(layer_id, who)
            popup = {name: layer.field(name).label for name in layer.popup or [f.name for f in layer.fields][:8]}
            title = f"{display_title(ctx.store, layer)}（无实时状态）"
            factory.add_frame(m, ctx.frame(layer_id, crs="EPSG:4490", who=who), title,
                              style={"color": "#000", "weight": 2, "fill_color": STATUS_COLORS["unknown"],
                                     "radius": 8}, popup=popup, label_field=layer.label_field, key=layer_id)
    else:
        _status_legend(m)
        _FloodCommand(scenario_presets(ctx), gaode=factory.settings.basemap == "gaode",
                      refresh_ms=round(ctx.rules.value(REFRESH_RULE) * 1000)).add_to(m)
    return factory.finish(m)
