"""The admin map page: click anywhere to see the county, township and nearest village."""

from __future__ import annotations

import folium
from branca.element import MacroElement
from jinja2 import Template

from ..auth import Principal
from ..domains import DomainContext
from ..maps.factory import MapFactory
from .router import VILLAGES


class _WhereOnClick(MacroElement):
    """On a map click, ask /api/admin/where and show the answer in a popup (text nodes only: no HTML injection)."""

    _template = Template("""
{% macro script(this, kwargs) %}
(function() {
  var map = {{ this._parent.get_name() }};
  function line(parent, label, value) {
    var row = document.createElement('div');
    var b = document.createElement('b'); b.textContent = label + '：'; row.appendChild(b);
    row.appendChild(document.createTextNode(value)); parent.appendChild(row);
  }
  map.on('click', function(e) {
    var url = '/api/admin/where?coord_sys={{ this.coord_sys }}&x=' + e.latlng.lng + '&y=' + e.latlng.lat;
    fetch(url, {credentials: 'same-origin'}).then(function(r) { return r.json(); }).then(function(d) {
      var box = document.createElement('div'); box.className = 'gis-where';
      if (d.code) { line(box, '错误', d.message); }
      else {
        line(box, '县区', d.county ? d.county.name : '不在廊坊市内');
        line(box, '乡镇（推断）', d.township ? d.township.name : '—');
        line(box, '最近村庄', d.nearest_village ?
             d.nearest_village.name + '（' + Math.round(d.nearest_village.distance_m) + ' 米）' : '—');
        d.caveats.forEach(function(c) { line(box, '说明', c); });
      }
      L.popup({maxWidth: 360}).setLatLng(e.latlng).setContent(box).openOn(map);
    });
  });
})();
{% endmacro %}
""")

    def __init__(self, coord_sys: str):
        super().__init__()
        self.coord_sys = coord_sys


def where_map(ctx: DomainContext, factory: MapFactory, who: Principal | None) -> folium.Map:
    title = "位置查询：点击地图查看所在县区、乡镇与最近村庄" if not factory.standalone else "村庄与乡镇位置（离线文件不支持点击查询）"
    m = factory.new_map(f"{title} — 廊坊空间决策支持系统")
    factory.add_layer(m, ctx.layer(VILLAGES, who), who.role if who else None, show=True)
    if not factory.standalone:  # the lookup needs the server; an exported file has none
        # Over a Gaode basemap the browser's coordinates are GCJ-02; the API converts them explicitly.
        _WhereOnClick("gcj02" if ctx.settings.basemap == "gaode" else "wgs84").add_to(m)
    return factory.finish(m)
