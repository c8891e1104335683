"""Self-contained HTML maps: what a command post copies to a USB stick or sends in a message.

``gis-service maps export NAME|--all --output maps/ [--role ROLE]`` writes one HTML file per map that opens
from disk with no server and no internet: Leaflet and its plugins inlined (the images their CSS uses as
data: URIs), every layer embedded (at most ``EXPORT_FEATURE_CAP`` features each, with a note on the map
when a layer is cut), personal fields masked unless ``--role`` is entitled to them — and then every clear
disclosure is written to the personal-data access log, as for the API.
"""

from __future__ import annotations

import datetime as dt
import html
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import folium
from branca.element import Element

from ..auth import Principal
from ..catalog import Catalog
from ..config import Settings
from ..errors import GisError
from ..privacy import AccessLog
from ..store import Store
from . import assets
from .factory import EXPORT_FEATURE_CAP, MapFactory

# (standalone factory, map name, role) -> folium.Map
MapBuilder = Callable[[MapFactory, str, "str | None"], folium.Map]

_TAG = re.compile(r'<script src="([^"]*)"></script>|<link rel="stylesheet" href="([^"]*)"/>')
_ANY_LOAD = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=", re.IGNORECASE)


def build_map(factory: MapFactory, name: str, role: str | None) -> folium.Map:
    """The layer map of the collection `name` as `role` sees it. Domain pages ('<domain>[/<page>]') are
    resolved by ``gis_service.domains.map_builder``, which falls back to this; everything after the builder
    — inlining, masking, the access log, file names — is the same for any folium.Map."""
    layer = factory.catalog.get(name)
    if layer is None or layer.is_raster or not layer.can_see_layer(role):
        raise GisError("map_not_found", f"没有可导出的地图 {name}（或角色 {role or '匿名'} 无权查看）",
                       f"no exportable map '{name}' (or role {role or 'anonymous'} may not see it)", 404)
    return factory.layer_map(layer, role)


def map_names(catalog: Catalog, role: str | None) -> list[str]:
    """The collection maps `role` may export (--all adds the domain pages: see gis_service/cli.py)."""
    return [layer.id for layer in catalog.visible_to(role) if not layer.is_raster]


@dataclass
class Exported:
    name: str
    path: Path
    disclosed: list[tuple[str, int]]  # (collection, features) carried with personal fields in clear


def export_maps(names: list[str], output_dir: Path, role: str | None, *, catalog: Catalog, store: Store,
                settings: Settings, access_log: AccessLog, feature_cap: int = EXPORT_FEATURE_CAP,
                builder: MapBuilder = build_map, operator: str = "cli") -> list[Exported]:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    factory = MapFactory(catalog, store, settings, standalone=True, feature_cap=feature_cap)
    return [_export_one(factory, name, output_dir, role, settings, access_log, builder, operator) for name in names]


def file_name(name: str, role: str | None) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "map"
    return f"{safe}-{role}.html" if role else f"{safe}.html"


def _export_one(factory: MapFactory, name: str, output_dir: Path, role: str | None, settings: Settings,
                access_log: AccessLog, builder: MapBuilder, operator: str) -> Exported:
    m = builder(factory, name, role)
    path = output_dir / file_name(name, role)
    disclosed = [(layer, count) for layer, count in getattr(m, "gis_disclosures", [])
                 if count and layer.personal_fields and layer.sees_personal(role)]
    _stamp(m, role, bool(disclosed))
    _refuse_online_layers(m)
    page = standalone_html(factory.render(m), settings.static_dir)
    # Log before the file exists: a disclosure is never missing from the log, at worst logged for a failed write.
    who = Principal(operator, role) if role else None
    for layer, count in disclosed:
        access_log.disclose(who, layer, [f.name for f in layer.fields], count, f"maps export {path}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return Exported(name, path, [(layer.id, count) for layer, count in disclosed])


def _refuse_online_layers(m: folium.Map) -> None:
    """Tiles, WMS and image/video overlays fetch their URLs from script: a file on a USB stick cannot."""
    online, todo = [], list(m._children.values())
    while todo:
        element = todo.pop()
        todo += list(element._children.values())
        url = getattr(element, "tiles", None) or getattr(element, "url", None)
        if isinstance(element, folium.map.Layer) and isinstance(url, str) and not url.startswith("data:"):
            online.append(url)
    if online:
        raise GisError("export_external_resource", f"离线地图不能包含在线图层：{online[0]}",
                       f"a self-contained map cannot hold online layers: {online[0]}", 500)


def _stamp(m: folium.Map, role: str | None, clear: bool) -> None:
    """A line on the map saying what the file is: exported when, for whom, personal data masked or not."""
    when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M")
    personal = "含未脱敏个人信息（已记入访问日志），请妥善保管" if clear else "个人信息已脱敏"
    text = f"离线导出 {when} · 角色：{role or '匿名（仅公开图层）'} · {personal}"
    m.get_root().html.add_child(Element(
        '<div class="gis-export-stamp" style="position:absolute;bottom:4px;left:110px;z-index:1000;background:#fffe;'
        f'padding:2px 8px;border-radius:3px;font-size:12px;color:#333">{html.escape(text)}</div>'))


def standalone_html(page: str, static_dir: Path) -> str:
    """The rendered page with every script and stylesheet inlined; refuses a page that would load anything."""
    static_dir = Path(static_dir)
    for match in _TAG.finditer(page):
        url = match.group(1) or match.group(2)
        path = assets.path_of_url(url)
        if path is None or assets.lookup(static_dir, path) is None:
            raise GisError("export_external_resource", f"地图引用了无法内嵌的资源 {url}",
                           f"the map refers to {url}, which cannot be inlined", 500)

    def inline(match: re.Match) -> str:
        path = assets.path_of_url(match.group(1) or match.group(2))
        if match.group(1):
            return f"<script>{assets.inline_js(static_dir, path)}</script>"
        return f"<style>{assets.inline_css(static_dir, path)}</style>"

    head, sep, rest = page.partition("</head>")
    left = _ANY_LOAD.search(_TAG.sub("", head) + rest)
    if left:
        raise GisError("export_external_resource", f"地图含有外部加载：{left.group(0)}",
                       f"the map would load something: {left.group(0)}", 500)
    head = _TAG.sub(inline, head)
    icons = f"<script>{assets.default_icon_script(static_dir)}</script>\n"
    return head + icons + sep + rest
