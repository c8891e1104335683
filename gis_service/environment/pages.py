"""Map pages of the environment domain:

- ``/maps/environment`` — risk sources and their rings, receptors by type, residential areas, water sources with
  their protection zones, the ecological red line; a click on the map opens an incident form, the page posts it
  to ``POST /api/environment/incidents`` and draws the zones, grade and receptors it answers, with a link to the
  report.
- ``/maps/environment/key-areas`` — the key risk areas (Appendix 4) with legend, method and data date.
- ``/maps/environment/incident?id=N`` — the incident report, in Chinese, print-ready on A4. MapPage routes take no
  path parameter (gis_service/api/domain_routes.py), so the page reads the incident id from its query string and
  fetches ``GET /api/environment/incidents/{id}`` with the caller's session: one route, no platform change.

Everything shown from the API goes into the page as text (window.gisEl, textContent), never as HTML.
The risk layers are internal: an anonymous caller gets the map frame with 「请登录后查看」.
"""

from __future__ import annotations

import html

import folium
from branca.element import Element, MacroElement
from jinja2 import Template

from ..auth import Principal
from ..domains import SYSTEM, DomainContext
from ..errors import GisError
from ..maps.factory import APP_TITLE, MapFactory

LAYERS = ("eco_redline", "water_protection_zones", "residential_areas", "environment_risk_rings", "pipelines",
          "risk_sources", "sensitive_receptors", "water_sources")  # bottom first
INCIDENT_URL = "/api/environment/incidents"
REPORT_PAGE = "/maps/environment/incident"
SIGN_IN = "突发环境事件图层为内部数据，请登录后查看：在地图首页输入 API 密钥登录。"
SIGN_IN_EXPORT = "突发环境事件图层为内部数据：导出时用 --role 指定有权查看的角色（如 environment）。"
ZONE_COLORS = ["#7a0177", "#c51b8a", "#f768a1", "#fbb4b9"]  # the innermost (highest level) zone first

_CSS = """<style>
.gis-env-panel{background:#fff;padding:8px 10px;border-radius:4px;box-shadow:0 1px 4px rgba(0,0,0,.3);
 font-size:13px;max-width:380px;max-height:60vh;overflow:auto}
.gis-env-panel h4{margin:6px 0 4px;font-size:14px}.gis-env-panel ul{margin:2px 0;padding-left:18px}
.gis-env-form label{display:block;margin:3px 0}.gis-env-form input,.gis-env-form select{width:120px}
.gis-env-error{color:#b30000}.gis-env-grade{font-size:15px;font-weight:bold;color:#b30000}
.gis-env-signin{position:absolute;top:60px;left:60px;z-index:1000;background:#fff;padding:10px 14px;
 border-radius:4px;box-shadow:0 1px 4px rgba(0,0,0,.3);font-size:15px;color:#b30000}
</style>"""

_REPORT_CSS = """<style>
@page{size:A4;margin:12mm}
html,body{height:auto !important;overflow:visible !important}
body{display:flex;flex-direction:column}
.gis-title{position:static !important;margin:0 0 4px 0;order:-1}
.folium-map{position:relative !important;height:115mm !important;width:100% !important;order:0;flex:none}
.gis-report{order:1}
.gis-legend,.leaflet-control-layers{display:none !important}
.gis-report{font-size:12px;line-height:1.45;padding:4px 2px;max-width:186mm}
.gis-report h1{font-size:18px;margin:6px 0}.gis-report h2{font-size:14px;margin:10px 0 4px;border-bottom:1px solid #999}
.gis-report table{border-collapse:collapse;width:100%;margin:2px 0 6px}
.gis-report th,.gis-report td{border:1px solid #bbb;padding:2px 4px;text-align:left;vertical-align:top}
.gis-report th{background:#f0f0f0}.gis-report .grade{font-size:16px;font-weight:bold;color:#b30000}
.gis-report small{color:#555}.gis-report-error{color:#b30000;font-size:15px}
@media print{.leaflet-control-container{display:none}.gis-report h2{break-after:avoid}tr{break-inside:avoid}}
</style>"""

_COMMON_JS = """
  var add = window.gisEl;  // text only
  var ZONE_COLORS = {{ this.zone_colors|tojson }};
  function num(v, d) { return v == null ? '—' : Number(v).toLocaleString('zh-CN', {maximumFractionDigits: d == null ? 0 : d}); }
  function drawZones(group, data) {
    group.clearLayers();
    var plume = 0;
    (data.zones || []).forEach(function(z) {
      var colour = z.zone === 'isolation' ? '#000000' : z.zone === 'plume' ? ZONE_COLORS[Math.min(plume++, 3)] : '#08519c';
      var layer = L.geoJSON(z.display_geometry || z.geometry, {style: {color: colour, weight: 2, fillOpacity: 0.18,
                                                 dashArray: z.zone === 'isolation' ? '4 3' : null}});
      layer.bindTooltip(document.createTextNode(z.name_zh + '：人口约 ' + num(z.population) + ' 人，敏感目标 ' +
                        z.receptor_count + ' 处'), {sticky: true});
      group.addLayer(layer);
      var reach = z.display_reach || z.reach;
      if (reach) { group.addLayer(L.geoJSON(reach, {style: {color: '#08306b', weight: 4}})); }
    });
    // display_* (?display=map): shifted into GCJ-02 over a Gaode basemap, as the maps factory shifts overlays
    var where = data.display_location || data.location || {lon: data.lon, lat: data.lat};
    if (where.lat != null) {
      group.addLayer(L.circleMarker([where.lat, where.lon], {radius: 6, color: '#000', weight: 2, fillColor: '#ff0', fillOpacity: 1}));
    }
  }
  function request(url, options) {
    var base = {credentials: 'same-origin', headers: {'Content-Type': 'application/json'}};
    return fetch(url, Object.assign(base, options))
      .then(function(r) { return r.json().then(function(d) { return {status: r.status, ok: r.ok, data: d}; },
                                                function() { return {status: r.status, ok: false, data: {}}; }); })
      .catch(function() { return {status: 0, ok: false, data: {message: '网络错误：无法连接服务器'}}; });
  }
"""


class _IncidentForm(MacroElement):
    """Click → incident form → POST → zones drawn with the grade, the receptors and a link to the report."""

    _template = Template("""
{% macro script(this, kwargs) %}
(function() {
  var map = {{ this._parent.get_name() }};
  var URL = {{ this.url|tojson }}, REPORT = {{ this.report|tojson }}, GAODE = {{ this.gaode|tojson }};
""" + _COMMON_JS + """
  var state = window.gisEnv = {result: null, marker: null};
  var zones = L.featureGroup().addTo(map);
  window.gisLayers['environment_incident'] = zones;
  var box, out;
  var panel = L.control({position: 'bottomleft'});
  panel.onAdd = function() {
    box = L.DomUtil.create('div', 'gis-env-panel');
    add(box, 'h4', '突发环境事件评估');
    add(box, 'div', '在地图上单击事发位置，填写源项后提交。', 'gis-env-hint');
    out = add(box, 'div', null, 'gis-env-result');
    L.DomEvent.disableClickPropagation(box);
    L.DomEvent.disableScrollPropagation(box);
    return box;
  };
  panel.addTo(map);

  function field(form, label, name, value, type) {
    var l = add(form, 'label', label + ' ');
    var i = add(l, 'input'); i.name = name; i.value = value == null ? '' : value; i.type = type || 'text';
    return i;
  }
  function select(form, label, name, options) {
    var l = add(form, 'label', label + ' ');
    var s = add(l, 'select'); s.name = name;
    options.forEach(function(o) { var e = add(s, 'option', o[1]); e.value = o[0]; });
    return s;
  }
  function openForm(latlng) {
    var form = document.createElement('form'); form.className = 'gis-env-form';
    add(form, 'b', '事发位置 ' + latlng.lat.toFixed(5) + ', ' + latlng.lng.toFixed(5));
    var kind = select(form, '类型', 'kind', [['air', '大气'], ['water', '水体（河流）'], ['soil', '土壤'], ['unknown', '不明']]);
    var air = add(form, 'div'), water = add(form, 'div'), soil = add(form, 'div');
    field(air, '源强（克/秒）', 'release_rate_g_s', 1000);
    field(air, '持续（分钟）', 'duration_min', 30);
    field(air, '风从（度，北=0）', 'wind_from_deg', 225);
    field(air, '风速（米/秒）', 'wind_speed_m_s', 2);
    select(air, '稳定度', 'stability', [['D', 'D 中性'], ['A', 'A 极不稳定'], ['B', 'B'], ['C', 'C'], ['E', 'E'], ['F', 'F 稳定']]);
    field(air, '关注浓度（毫克/立方米，逗号分隔）', 'levels', '3,20,100');
    field(water, '河流（空=最近）', 'river', '');
    field(water, '流速（米/秒，空=默认）', 'velocity_m_s', '');
    field(water, '前瞻（小时）', 'hours', 24);
    field(soil, '半径（米）', 'radius_m', 500);
    function show() {
      air.style.display = kind.value === 'air' ? '' : 'none';
      water.style.display = kind.value === 'water' ? '' : 'none';
      soil.style.display = (kind.value === 'soil' || kind.value === 'unknown') ? '' : 'none';
    }
    kind.addEventListener('change', show); show();
    var submit = add(form, 'button', '评估并保存'); submit.type = 'submit';
    form.addEventListener('submit', function(ev) {
      ev.preventDefault();
      var v = function(n) { return form.elements[n].value.trim(); };
      var body = {location: {type: 'Point', coordinates: [latlng.lng, latlng.lat]},
                  coord_sys: GAODE ? 'gcj02' : 'cgcs2000', kind: kind.value};
      if (kind.value === 'air') {
        ['release_rate_g_s', 'duration_min', 'wind_from_deg', 'wind_speed_m_s'].forEach(function(n) { body[n] = Number(v(n)); });
        body.stability = v('stability');
        body.levels_of_concern_mg_m3 = v('levels').split(/[,，\\s]+/).filter(Boolean).map(Number);
      } else if (kind.value === 'water') {
        if (v('river')) { body.river = v('river'); }
        if (v('velocity_m_s')) { body.velocity_m_s = Number(v('velocity_m_s')); }
        body.hours = Number(v('hours'));
      } else { body.radius_m = Number(v('radius_m')); }
      map.closePopup();
      return post(body);
    });
    L.popup({maxWidth: 320}).setLatLng(latlng).setContent(form).openOn(map);
    return form;
  }
  state.openForm = openForm;
  map.on('click', function(e) { openForm(e.latlng); });

  function post(body) {
    out.textContent = '正在评估…';
    return request(URL, {method: 'POST', body: JSON.stringify(body)}).then(function(a) {
      out.textContent = '';
      if (!a.ok) { add(out, 'div', '评估失败：' + (a.data.message || ('服务器返回 ' + a.status)), 'gis-env-error'); return a; }
      show(a.data); return a;
    });
  }
  state.post = post;
  function show(d) {
    state.result = d;
    drawZones(zones, d);
    if (zones.getLayers().length) { map.fitBounds(zones.getBounds(), {maxZoom: 14}); }
    var g = d.grading;
    add(out, 'div', '初判：' + g.grade + '（' + g.level + '级响应' + (g.escalated ? '，已因敏感地区或时段提高一级' : '') + '）', 'gis-env-grade');
    add(out, 'div', '负责：' + g.response.lead);
    if (g.report_to_province) { add(out, 'div', '须立即向省政府报告', 'gis-env-error'); }
    add(out, 'div', '涉及：' + d.admin.counties.join('、') + '（' + d.admin.provinces.join('、') + '）');
    add(out, 'div', '影响区内人口约 ' + num(d.population_total) + ' 人（居民区面积加权）');
    var ul = add(out, 'ul', null, 'gis-env-zones');
    d.zones.forEach(function(z) {
      add(ul, 'li', z.name_zh + '：人口 ' + num(z.population) + '，学校 ' + z.receptor_counts.schools + '，医院 ' +
          z.receptor_counts.hospitals + '，养老院 ' + z.receptor_counts.elderly_homes + '，水源地 ' + z.water_sources.length);
    });
    var a = add(out, 'a', '打开事件报告（第 ' + d.id + ' 号，可打印）', 'gis-env-report-link');
    a.href = REPORT + '?id=' + encodeURIComponent(d.id); a.target = '_blank';
  }
})();
{% endmacro %}
""")

    def __init__(self, gaode: bool):
        super().__init__()
        self.url, self.report, self.gaode, self.zone_colors = INCIDENT_URL + "?display=map", REPORT_PAGE, gaode, ZONE_COLORS


class _Report(MacroElement):
    """The report: reads ?id=, fetches the incident, fills the report below the map (text only)."""

    _template = Template("""
{% macro script(this, kwargs) %}
(function() {
  var map = {{ this._parent.get_name() }};
  var URL = {{ this.url|tojson }};
""" + _COMMON_JS + """
  var root = document.getElementById('gis-report');
  var zones = L.featureGroup().addTo(map);
  var state = window.gisReport = {done: false, data: null, zones: zones};
  function table(parent, head, rows) {
    var t = add(parent, 'table'), tr = add(t, 'tr');
    head.forEach(function(h) { add(tr, 'th', h); });
    rows.forEach(function(r) { var row = add(t, 'tr'); r.forEach(function(c) { add(row, 'td', c == null ? '—' : String(c)); }); });
    return t;
  }
  var KIND = {air: '大气', water: '水体（河流）', soil: '土壤', unknown: '不明'};
  var LABEL = {release_rate_g_s: '源强（克/秒）', duration_min: '持续时间（分钟）', wind_from_deg: '风向（风从，度）',
               wind_speed_m_s: '风速（米/秒）', stability: '大气稳定度', daytime: '白天', levels_of_concern_mg_m3: '关注浓度（毫克/立方米）',
               river: '河流', velocity_m_s: '流速（米/秒）', hours: '前瞻（小时）', radius_m: '半径（米）', coord_sys: '坐标系',
               client_ref: '客户端编号', note: '备注'};
  function fill(d) {
    state.data = d;
    drawZones(zones, d);
    if (zones.getLayers().length) { map.fitBounds(zones.getBounds(), {maxZoom: 14}); }
    var g = d.grading;
    add(root, 'small', '图例：黄点＝事发位置；黑色虚线圆＝初始隔离区；紫红色由深到浅＝关注浓度由高到低的烟羽范围；' +
        '蓝色＝河流影响带（深蓝粗线为污染前锋经过的河段）；底图为县界、河流、铁路与乡镇驻地。');
    add(root, 'h1', '突发环境事件评估报告（第 ' + d.id + ' 号，第 ' + d.version + ' 版）');
    add(root, 'div', '事件类型：' + (KIND[d.kind] || d.kind) + '；位置：东经 ' + d.lon.toFixed(5) + '°，北纬 ' + d.lat.toFixed(5) +
        '°（CGCS2000）；事发县区：' + (d.admin.origin_county || '—') + '；评估时间（UTC）：' + d.updated_at +
        (d.saved_by ? '；填报人：' + d.saved_by : ''));
    add(root, 'h2', '一、初判级别与响应');
    add(root, 'div', '初判级别：' + g.grade + '；响应级别：' + g.level + ' 级' + (g.escalated ? '（因发生在易造成重大影响的地区或重要时段，由 ' + g.base_level + ' 级提高）' : ''), 'grade');
    add(root, 'div', '负责机构：' + g.response.lead);
    add(root, 'div', '向省政府报告：' + (g.report_to_province ? '须立即报告 —— ' + g.province_report_reasons.join('；') : '不属于须立即报告的情形'));
    add(root, 'div', '触发的分级标准：');
    table(root, ['标准', '取值', '阈值', '级别', '来源', '依据'], g.triggered.map(function(t) {
      return [t.criterion, t.value, t.threshold, t.grade, t.source === 'staff' ? '现场录入' : t.source === 'model' ? '模型估算' : '—', t.clause];
    }));
    if (d.derived_reasons.length) { add(root, 'div', '模型估算的事实：' + d.derived_reasons.join('；')); }
    add(root, 'h2', '二、应急工作组');
    table(root, ['工作组', '牵头单位', '参加单位', '主要职责'], g.response.groups.map(function(w) {
      return [w.name, w.lead, w.members.join('、'), w.duty];
    }));
    add(root, 'h2', '三、通报与报告');
    table(root, ['对象', '原因', '依据'], d.notify.map(function(n) { return [n.to, n.why, n.clause]; }));
    add(root, 'div', '涉及县区：' + d.admin.counties.join('、') + '；涉及市：' + d.admin.cities.join('、') + '；涉及省（市）：' + d.admin.provinces.join('、'));
    add(root, 'h2', '四、影响区与受威胁目标');
    table(root, ['影响区', '面积（公顷）', '人口（面积加权）', '学校', '医院', '养老院', '水源地', '生态红线'], d.zones.map(function(z) {
      return [z.name_zh, num(z.area_m2 / 1e4, 1), num(z.population), z.receptor_counts.schools, z.receptor_counts.hospitals,
              z.receptor_counts.elderly_homes, z.water_sources.map(function(w) { return w.name + '（' + w.tier + '）'; }).join('、') || '无',
              z.eco_redline.join('、') || '无'];
    }));
    d.zones.forEach(function(z) {
      if (!z.receptors.length) { return; }
      add(root, 'div', z.name_zh + ' 内的敏感目标（' + z.receptor_count + ' 处' + (z.receptors_truncated ? '，列出最近的 ' + z.receptors.length + ' 处' : '') + '）：');
      table(root, ['名称', '类型', '规模', '距离（米）', '方位（度）', d.kind === 'air' ? '估算浓度（毫克/立方米）' : '到达时间（小时）'],
            z.receptors.map(function(r) {
              return [r.name, r.kind, r.capacity != null ? r.capacity + ' ' + (r.capacity_unit || '') : '', num(r.distance_m),
                      num(r.bearing_deg), d.kind === 'air' ? r.concentration_mg_m3 : r.arrival_h];
            }));
    });
    add(root, 'h2', '五、输入');
    var inputs = d.inputs, rows = [];
    Object.keys(inputs).forEach(function(k) {
      if (k === 'location' || k === 'facts' || k === 'kind') { return; }
      rows.push([LABEL[k] || k, Array.isArray(inputs[k]) ? inputs[k].join('、') : inputs[k]]);
    });
    Object.keys(d.staff_facts || {}).forEach(function(k) { rows.push(['现场录入：' + k, d.staff_facts[k]]); });
    table(root, ['项目', '取值'], rows);
    add(root, 'h2', '六、模型与局限');
    add(root, 'div', '方法：' + d.model.method + (d.model.stability ? '；稳定度 ' + d.model.stability + '（' + (d.model.stability_basis === 'given' ? '现场给定' : d.model.stability_basis) + '）' : '') +
        (d.model.velocity_m_s ? '；流速 ' + d.model.velocity_m_s + ' 米/秒（' + d.model.velocity_basis + '）' : ''));
    var ul = add(root, 'ul');
    d.model.caveats.forEach(function(c) { add(ul, 'li', c); });
    add(root, 'small', '本报告为辅助决策的初步估算，人口与敏感目标来自演示数据图层；级别以生态环境部门核定为准。');
    state.done = true;
  }
  var id = new URLSearchParams(window.location.search).get('id');
  if (!id || !/^[0-9]+$/.test(id)) {
    add(root, 'div', '请在地址中给出事件编号，如 ?id=1', 'gis-report-error'); state.done = true; return;
  }
  request(URL + '/' + id + '?display=map', {method: 'GET'}).then(function(a) {
    if (!a.ok) { add(root, 'div', '无法读取事件 ' + id + '：' + (a.data.message || ('服务器返回 ' + a.status)), 'gis-report-error'); state.done = true; return; }
    fill(a.data);
  });
})();
{% endmacro %}
""")

    def __init__(self):
        super().__init__()
        self.url, self.zone_colors = INCIDENT_URL, ZONE_COLORS


def _signed_out(ctx: DomainContext, factory: MapFactory, who: Principal | None, title: str) -> folium.Map | None:
    role = who.role if who else None
    layers = [ctx.layer(i, SYSTEM) for i in LAYERS]
    if all(layer.can_see_layer(role) for layer in layers):
        return None
    m = factory.new_map(f"{title}（请登录后查看） — {APP_TITLE}", zoom=9)
    m.get_root().header.add_child(Element(_CSS), name="env_css")
    notice = SIGN_IN_EXPORT if factory.standalone else SIGN_IN
    m.get_root().html.add_child(Element(f'<div class="gis-env-signin" role="alert">{html.escape(notice)}</div>'))
    return factory.finish(m)


def environment_map(ctx: DomainContext, factory: MapFactory, who: Principal | None) -> folium.Map:
    title = "突发环境事件应急图：风险源与周边环、敏感目标、饮用水水源地；单击地图评估事件"
    signed_out = _signed_out(ctx, factory, who, "突发环境事件应急图")
    if signed_out is not None:
        return signed_out
    role = who.role if who else None
    if factory.standalone:
        title = "突发环境事件应急图（离线文件：无事件评估，需连接服务器使用）"
    m = factory.new_map(f"{title} — {APP_TITLE}", zoom=9)
    m.get_root().header.add_child(Element(_CSS), name="env_css")
    for layer_id in LAYERS:
        factory.add_layer(m, ctx.layer(layer_id, who), role, show=layer_id != "residential_areas")
    if not factory.standalone:
        _IncidentForm(gaode=factory.settings.basemap == "gaode").add_to(m)
    return factory.finish(m)


def key_areas_map(ctx: DomainContext, factory: MapFactory, who: Principal | None) -> folium.Map:
    from .service import service_for

    title = "突发环境风险重点区域评估结果示意图（附件4）"
    signed_out = _signed_out(ctx, factory, who, title)
    if signed_out is not None:
        return signed_out
    role = who.role if who else None
    m = factory.new_map(f"{title} — {APP_TITLE}", zoom=9)
    m.get_root().header.add_child(Element(_CSS), name="env_css")
    factory.add_layer(m, ctx.layer("environment_key_areas", who), role)
    factory.add_layer(m, ctx.layer("risk_sources", who), role, show=False)
    rule = ctx.rules.rule("key_area_method")
    counts = service_for(ctx).key_areas()["risk_class"].value_counts().to_dict()
    text = (f"方法：{rule.reason}。网格数：高 {counts.get('高', 0)}、中 {counts.get('中', 0)}、低 {counts.get('低', 0)}。"
            f"数据日期：{service_for(ctx).data_date()}（演示数据）。规则 environment.key_area_method，可在 var/rules.local.toml 修改。")
    m.get_root().html.add_child(Element(
        '<div class="gis-env-panel gis-env-method" style="position:absolute;bottom:20px;left:10px;z-index:1000">'
        f"<h4>评估方法与数据日期</h4><div>{html.escape(text)}</div></div>"))
    return factory.finish(m)


def incident_report(ctx: DomainContext, factory: MapFactory, who: Principal | None) -> folium.Map:
    """The report shell; the incident comes from the API. Not exported: an offline file has no incidents."""
    title = "突发环境事件评估报告"
    signed_out = _signed_out(ctx, factory, who, title)  # the risk layers not built here: 503 (export skips it)
    if signed_out is not None:
        return signed_out
    if factory.standalone:
        raise GisError("not_exportable", "事件报告需连接服务器读取事件，不能导出为离线文件",
                       "the incident report reads the incident from the server and cannot be exported", 503)
    m = factory.new_map(f"{title} — {APP_TITLE}", zoom=11)
    root = m.get_root()
    root.header.add_child(Element(_REPORT_CSS), name="report_css")
    root.html.add_child(Element('<div id="gis-report" class="gis-report"></div>'))
    _Report().add_to(m)
    return factory.finish(m)
