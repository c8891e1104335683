"""The land map /maps/land (issue #9 §10): every plot of the city from the vector tiles of the plots
collection, drawn by the platform (MapFactory.add_vector_tiles: OGC API – Tiles, Leaflet.VectorGrid from the
local assets, cells by the dominant transfer status and its share when zoomed out), styled by transfer
status and outlined by mortgage status; a click shows the plot card from GET /api/land/plots?at= (masked per the
caller's role by the API: the page never sees more than the API gives it); a village summary layer; a
search box by plot code (GET /api/land/plots/{dkbm}).

Everything the browser shows from the API is inserted as text (window.gisEl / textContent), never as HTML.
An exported (standalone) map has no server: it carries the village summary layer only, and says so.
"""

from __future__ import annotations

import folium
from branca.element import Element, MacroElement
from jinja2 import Template

from ..auth import Principal
from ..domains import DomainContext
from ..maps.factory import APP_TITLE, MapFactory
from .service import PLOTS, service_for

AT_URL = "/api/land/plots"
TRANSFER_COLORS = {"未流转": "#fee391", "出租": "#6baed6", "转包": "#3182bd", "入股": "#756bb1",
                   "互换": "#31a354", "代耕代种": "#74c476", "其他": "#969696"}
MORTGAGE_COLOR = "#de2d26"  # outline of plots under a mortgage

_CSS = """<style>
.gis-land-panel{background:#fff;padding:8px 10px;border-radius:4px;box-shadow:0 1px 4px rgba(0,0,0,.3);
 font-size:13px;max-width:360px;max-height:60vh;overflow:auto}
.gis-land-panel h4{margin:6px 0 4px;font-size:14px}.gis-land-card th{text-align:left;padding-right:8px;color:#555;vertical-align:top}
.gis-land-error{color:#b30000}.gis-land-legend span{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}
</style>"""


class _LandPanel(MacroElement):
    _template = Template("""
{% macro script(this, kwargs) %}
(function() {
  var map = {{ this._parent.get_name() }};
  var AT_URL = {{ this.at_url|tojson }}, MORTGAGE = {{ this.mortgage_color|tojson }};
  var add = window.gisEl;
  var state = window.gisLand = {card: null, error: null};

  // The panel: search by plot code, the card of the plot clicked or found.
  var Panel = L.Control.extend({options: {position: 'topright'}, onAdd: function() {
    var div = L.DomUtil.create('div', 'gis-land-panel');
    L.DomEvent.disableClickPropagation(div); L.DomEvent.disableScrollPropagation(div);
    return div; }});
  var panel = new Panel().addTo(map).getContainer();
  add(panel, 'h4', '按地块编码查询');
  var input = add(panel, 'input'); input.id = 'gis-land-search'; input.placeholder = '19 位地块编码 DKBM'; input.maxLength = 19;
  var button = add(panel, 'button', '查询'); button.id = 'gis-land-search-button';
  var legend = add(panel, 'div', null, 'gis-land-legend');
  var mrow = add(legend, 'div'); var msw = add(mrow, 'span'); msw.style.border = '2px solid ' + MORTGAGE; add(mrow, 'span', '抵押中（红框）').style.width = 'auto';
  var box = add(panel, 'div'); box.id = 'gis-land-card';
  var highlight = L.layerGroup().addTo(map);

  function failure(a) { return (a.data && a.data.message) ? a.data.message : ('HTTP ' + a.status); }
  function request(url) {
    return fetch(url, {credentials: 'same-origin', headers: {'Accept': 'application/json'}}).then(function(r) {
      return r.json().then(function(d) { return {ok: r.ok, status: r.status, data: d}; },
                           function() { return {ok: r.ok, status: r.status, data: null}; });
    }, function(e) { return {ok: false, status: 0, data: {message: String(e)}}; });
  }
  function row(table, label, value) {
    var tr = add(table, 'tr'); add(tr, 'th', label); add(tr, 'td', value == null ? '—' : String(value));
  }
  function showCard(c) {
    box.textContent = ''; highlight.clearLayers(); state.card = c; state.error = null;
    add(box, 'h4', '地块 ' + c.dkbm);
    var t = add(box, 'table', null, 'gis-land-card');
    row(t, '地块名称', c.dkmc); row(t, '发包方', c.employer && c.employer.name);
    row(t, '实测面积（亩）', c.measured_area_mu); row(t, '合同面积（亩）', c.contract_area_mu);
    row(t, '现状用途', c.current_use); row(t, '基本农田', c.sfjbnt ? '是' : '否');
    if (c.contract) { row(t, '承包期', c.contract.cbqxq + ' 至 ' + c.contract.cbqxz);
                      row(t, '延包后止期（+30年）', c.contract.extended_end); }
    row(t, '承包方', c.contractor ? c.contractor.name : '（登录后按权限显示）');
    if (c.contractor) { row(t, '证件号码', c.contractor.id_number); row(t, '联系电话', c.contractor.phone); }
    if (c.boundaries) { row(t, '四至（东西南北）', [c.boundaries.east, c.boundaries.west, c.boundaries.south, c.boundaries.north].join(' / ')); }
    row(t, '流转状态', c.transfer_status);
    (c.transfers || []).forEach(function(x) { row(t, '流转', x.lzfs + '，' + (x.transferee || '（受让方不公开）') + '，' + x.start_date + '–' + x.end_date + (x.standard_form ? '（制式合同）' : '（口头/非制式）')); });
    row(t, '抵押状态', c.mortgage_status);
    (c.mortgages || []).forEach(function(x) { row(t, '抵押', x.lender + ' ' + x.amount_wan + ' 万元，' + x.start_date + '–' + x.end_date + '，' + x.status); });
    if (c.geometry) {
      var g = L.geoJSON(c.geometry, {style: {color: '#000', weight: 3, fill: false}}).addTo(highlight);
      return g;
    }
  }
  function showError(msg) { box.textContent = ''; state.card = null; state.error = msg; add(box, 'div', msg, 'gis-land-error'); }
  map.on('click', function(e) {
    var url = AT_URL + '?at=' + e.latlng.lng.toFixed(7) + ',' + e.latlng.lat.toFixed(7) + '&coord_sys=wgs84';
    return request(url).then(function(a) {
      if (!a.ok) { showError('查询失败：' + failure(a)); return; }
      if (!a.data.count) { showError('此处没有承包地块'); return; }
      showCard(a.data.plots[0]);
    });
  });
  function search() {
    var code = input.value.trim();
    return request(AT_URL + '/' + encodeURIComponent(code)).then(function(a) {
      if (!a.ok) { showError('查询失败：' + failure(a)); return; }
      var g = showCard(a.data);
      if (g) { map.fitBounds(g.getBounds(), {maxZoom: 17}); }
    });
  }
  state.search = search;
  button.addEventListener('click', search);
  input.addEventListener('keydown', function(e) { if (e.key === 'Enter') { search(); } });
})();
{% endmacro %}
""")

    def __init__(self):
        super().__init__()
        self.at_url, self.mortgage_color = AT_URL, MORTGAGE_COLOR


def _village_layer(ctx: DomainContext, factory: MapFactory, m: folium.Map) -> None:
    """Villages with their figures (plots, transferred share, standard-form rate) as circles."""
    land = service_for(ctx)
    from .history import today
    table = land.villages_as_of(today())
    villages = ctx.frame("villages", crs="EPSG:4490")
    frame = villages[villages["code"].isin(table.index)][["code", "name", "township", "county", "geometry"]].copy()
    t = table.reindex(frame["code"].values)
    frame["plots"] = t["plots"].values.astype(int)
    frame["households"] = t["households"].values.astype(int)
    frame["contract_area_mu"] = t["contract_area_mu"].round(1).values
    share = (100 * t["transferred_area_mu"] / t["contract_area_mu"]).round(1)
    rate = (100 * t["standard_area_mu"] / t["transferred_area_mu"].where(t["transferred_area_mu"] > 0)).round(1)
    frame["transferred_share_pct"] = share.values
    frame["standard_rate_pct"] = rate.values
    target = float(ctx.rules.value("standard_transfer_target_pct"))
    frame["standard_met"] = ["是" if r >= target else ("—" if r != r else "否") for r in rate.values]
    factory.add_frame(m, frame, "村级汇总（流转规范率）", key="land_villages", show=False,
                      style={"color": "#333", "weight": 1, "radius": 4, "category_field": "standard_met",
                             "categories": {"是": "#31a354", "否": "#de2d26", "—": "#bdbdbd"}},
                      popup={"name": "村", "township": "乡镇", "county": "县（市、区）", "plots": "地块数",
                             "households": "承包农户", "contract_area_mu": "合同面积（亩）",
                             "transferred_share_pct": "流转面积占比（%）", "standard_rate_pct": "流转规范率（%）",
                             "standard_met": f"达到 {target:g}% 目标"},
                      label_field="name")


def land_map(ctx: DomainContext, factory: MapFactory, who: Principal | None) -> folium.Map:
    title = "农村承包地一张图：地块流转与抵押状态、村级汇总、按地块编码查询"
    if factory.standalone:
        title = "农村承包地一张图（离线文件：仅村级汇总，地块瓦片与查询需连接服务器）"
    m = factory.new_map(f"{title} — {APP_TITLE}", zoom=10)
    m.get_root().header.add_child(Element(_CSS), name="land_css")
    _village_layer(ctx, factory, m)
    if not factory.standalone:
        layer = ctx.layer(PLOTS, who)
        factory.add_vector_tiles(m, layer, who.role if who else None, popup=False,  # the card answers clicks
                                 style={**layer.style, "weight": 1, "fill_opacity": 0.6,
                                        "category_field": "transfer_status", "categories": TRANSFER_COLORS},
                                 outline=("mortgage_status", {"抵押中": MORTGAGE_COLOR}))
        _LandPanel().add_to(m)
    return factory.finish(m)
