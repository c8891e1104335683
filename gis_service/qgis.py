"""QGIS projects for a role, framework-neutral: catalog in, a .qgs document (and its .qgz zip) out.

Every collection the role may see becomes a layer of QGIS's native OGC API – Features provider (``oapif``,
QGIS 3.22 and later), grouped and titled as on /maps/, drawn with the layer definition's style (single symbol,
or categorized by ``category_field`` with the Chinese legend labels) and labelled with ``label_field`` in a CJK
font. The project CRS is EPSG:4548 (CGCS2000 3-degree Gauss–Krüger, CM 117°E) on the CGCS2000 ellipsoid with
measurements in metres. Layers with more features than ``large_features`` ask only for the view extent, page by
page, and draw only from ``large_max_scale`` in (QGIS 3.22 would otherwise download all of them on opening).
The key never enters the project: layers name a QGIS authentication configuration by id (``authcfg``), which
the user creates once in QGIS (Settings → Options → Authentication → Basic, password = the API key).
"""

from __future__ import annotations

import io
import re
import warnings
import zipfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import quote

from pyproj import CRS

from . import crs as crs_mod
from .catalog import Catalog, LayerDef
from .errors import GisError
from .maps.factory import DEFAULT_COLOR, Style
from .store import Store, display_title

DEFAULT_AUTHCFG = "lfgis01"  # the id the README tells users to give their authentication configuration
AUTHCFG = re.compile(r"[A-Za-z0-9]{7}")  # QGIS authentication configuration ids are 7 letters or digits
PROJECT_CRS = "EPSG:4548"  # CGCS2000 / 3-degree Gauss-Kruger CM 117E: metres across Langfang (116.1–117.3°E)
ELLIPSOID = "EPSG:1024"  # CGCS2000 ellipsoid, for QGIS's ellipsoidal measurements
TILE_PROVIDER = "vectortile"  # QGIS's vector tile provider (type=xyz): the overview of large collections
PROVIDER = "OAPIF"  # QGIS's provider key for OGC API – Features (as QGIS writes it in projects)
LAYER_CRS = "OGC:CRS84"  # what QGIS 3.22's OAPIF provider reads (it never asks for crs=)
# Above this many features a layer asks only for the view extent: QGIS 3.22 otherwise downloads the whole
# collection on opening (100 000 plots: 1 000 pages, 52 s; 2 000 000 unusable). Villages (2 968) stay whole.
LARGE_FEATURES = 5_000
# ... and such a layer draws from 1:LARGE_MAX_SCALE in: a view of a few km, i.e. a few hundred plots a page.
LARGE_MAX_SCALE = 25_000
PAGE_SIZE = 1_000  # features per request: a tenth of the service's limit (ogc.MAX_LIMIT), ~1 MB of plots
WEB_MERCATOR_Z0_SCALE = 559_082_264.028717  # OGC 2D Tile Matrix Set, WebMercatorQuad, zoom 0
LABEL_FONT = "Noto Sans CJK SC"  # Debian fonts-noto-cjk; QGIS falls back to a system font with CJK glyphs
LINE_WIDTH_PX = 2.0  # defaults of the web maps (gis_service/maps/factory.py Style) where a style gives none
OUTLINE_WIDTH_PX = 1.0
POLYGON_FILL_OPACITY = 0.3
POINT_FILL_OPACITY = 0.85
OTHER_VALUES_LABEL = "其他 other"
_NAMED_COLOURS = {"black": "#000000", "white": "#ffffff", "red": "#ff0000", "green": "#008000", "blue": "#0000ff",
                  "yellow": "#ffff00", "orange": "#ffa500", "purple": "#800080", "gray": "#808080", "grey": "#808080",
                  "brown": "#a52a2a", "navy": "#000080", "teal": "#008080", "maroon": "#800000"}


@dataclass(frozen=True)
class ProjectLayer:
    """One collection as it appears in the project."""
    layer: LayerDef
    title: str
    group_title: str
    large: bool


def check_authcfg(authcfg: str) -> str:
    if not AUTHCFG.fullmatch(authcfg or ""):
        raise GisError("bad_parameter", f"authcfg {authcfg!r} 无效：QGIS 认证配置 ID 为 7 个字母或数字",
                       f"invalid authcfg {authcfg!r}: a QGIS authentication configuration id is 7 letters or digits",
                       400)
    return authcfg


def project_layers(catalog: Catalog, store: Store, role: str | None,
                   large_features: int = LARGE_FEATURES) -> list[ProjectLayer]:
    """The collections the role may see, in the order and groups of the /maps/ index (built ones only)."""
    visible = [l for l in catalog.visible_to(role) if not l.is_raster and store.exists(l)]
    out = []
    for group in catalog.groups.values():
        for layer in visible:
            if layer.group == group.id:
                out.append(ProjectLayer(layer, display_title(store, layer), group.title_zh,
                                        store.count(layer) > large_features))
    return out


# --- XML helpers ----------------------------------------------------------------------------------------
def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: str(v) for k, v in attrs.items()})
    if text is not None:
        el.text = str(text)
    return el


def _srs(parent: ET.Element, authid: str) -> None:
    crs = CRS.from_user_input(authid)
    ref = _sub(parent, "spatialrefsys")
    _sub(ref, "wkt", crs.to_wkt())
    with warnings.catch_warnings():  # PROJ warns that a PROJ string loses detail: the WKT above carries it
        warnings.simplefilter("ignore", UserWarning)
        _sub(ref, "proj4", crs.to_proj4() or "")
    _sub(ref, "authid", authid)
    _sub(ref, "description", crs.name)
    _sub(ref, "projectionacronym", "longlat" if crs.is_geographic else "tmerc")
    _sub(ref, "ellipsoidacronym", ELLIPSOID if crs.ellipsoid.name == "CGCS2000" else "EPSG:7030")
    _sub(ref, "geographicflag", "true" if crs.is_geographic else "false")


def _rgba(colour: str, opacity: float = 1.0) -> str:
    colour = _NAMED_COLOURS.get(colour, colour)
    hexes = colour.lstrip("#")
    if not re.fullmatch(r"[0-9a-fA-F]{3}|[0-9a-fA-F]{6}", hexes):
        return _rgba(DEFAULT_COLOR, opacity)
    if len(hexes) == 3:
        hexes = "".join(c * 2 for c in hexes)
    r, g, b = (int(hexes[i:i + 2], 16) for i in (0, 2, 4))
    return f"{r},{g},{b},{round(255 * max(0.0, min(1.0, opacity)))}"


def _props(layer_el: ET.Element, props: dict) -> None:
    for k, v in props.items():
        _sub(layer_el, "prop", k=k, v=v)


def _kind(geometry: str) -> str:
    return "marker" if "Point" in geometry else "line" if "LineString" in geometry else "fill"


def _symbol(parent: ET.Element, name: str, geometry: str, style: Style, colour: str) -> None:
    """One QGIS symbol drawn as the web maps draw the layer (pixels, colour, fill, opacity, dashes)."""
    kind = _kind(geometry)
    symbol = _sub(parent, "symbol", type=kind, name=name, alpha="1", clip_to_extent="1", force_rhr="0")
    dash = {"use_custom_dash": "1", "customdash": ";".join(style.dash_array.replace(",", " ").split()),
            "customdash_unit": "Pixel"} if style.dash_array else {"use_custom_dash": "0"}
    fill_colour = style.fill_color or colour
    if kind == "line":
        el = _sub(symbol, "layer", **{"class": "SimpleLine", "enabled": "1", "locked": "0", "pass": "0"})
        _props(el, {"line_color": _rgba(colour), "line_width": style.weight or LINE_WIDTH_PX,
                    "line_width_unit": "Pixel", "line_style": "solid", "capstyle": "round", "joinstyle": "round",
                    **dash})
    elif kind == "fill":
        filled = style.fill is not False
        opacity = POLYGON_FILL_OPACITY if style.fill_opacity is None else style.fill_opacity
        el = _sub(symbol, "layer", **{"class": "SimpleFill", "enabled": "1", "locked": "0", "pass": "0"})
        _props(el, {"color": _rgba(fill_colour, opacity if filled else 0), "style": "solid" if filled else "no",
                    "outline_color": _rgba(colour), "outline_width": style.weight or OUTLINE_WIDTH_PX,
                    "outline_width_unit": "Pixel", "outline_style": "dash" if style.dash_array else "solid",
                    "joinstyle": "round"})
    else:
        opacity = POINT_FILL_OPACITY if style.fill_opacity is None else style.fill_opacity
        el = _sub(symbol, "layer", **{"class": "SimpleMarker", "enabled": "1", "locked": "0", "pass": "0"})
        _props(el, {"name": "circle", "color": _rgba(fill_colour, opacity), "outline_color": _rgba(colour),
                    "outline_width": style.weight or OUTLINE_WIDTH_PX, "outline_width_unit": "Pixel",
                    "outline_style": "solid", "size": 2 * style.radius, "size_unit": "Pixel",
                    "scale_method": "diameter"})


def _renderer(parent: ET.Element, layer: LayerDef) -> None:
    style = Style.parse(layer.style)
    common = dict(symbollevels="0", enableorderby="0", forceraster="0")
    if style.category_field and style.categories:
        renderer = _sub(parent, "renderer-v2", type="categorizedSymbol", attr=style.category_field, **common)
        cats, symbols = _sub(renderer, "categories"), _sub(renderer, "symbols")
        for i, (value, colour) in enumerate(style.categories.items()):
            _sub(cats, "category", value=value, symbol=str(i), label=style.category_labels.get(value, value),
                 render="true", type="string")
            _symbol(symbols, str(i), layer.geometry, style, colour)
        other = str(len(style.categories))  # QGIS's "all other values": a category with an empty value
        _sub(cats, "category", value="", symbol=other, label=OTHER_VALUES_LABEL, render="true", type="string")
        _symbol(symbols, other, layer.geometry, style, style.color)
    else:
        renderer = _sub(parent, "renderer-v2", type="singleSymbol", **common)
        _symbol(_sub(renderer, "symbols"), "0", layer.geometry, style, style.color)


def _labeling(parent: ET.Element, layer: LayerDef) -> None:
    style = Style.parse(layer.style)
    labeling = _sub(parent, "labeling", type="simple")
    settings = _sub(labeling, "settings", calloutType="simple")
    text = _sub(settings, "text-style", fieldName=layer.label_field, isExpression="0", fontFamily=LABEL_FONT,
                namedStyle="Regular", fontSize=style.label_size, fontSizeUnit="Pixel", textColor="30,30,30,255",
                textOpacity="1", fontWeight="50", fontItalic="0", multilineHeight="1", blendMode="0")
    _sub(text, "text-buffer", bufferDraw="1", bufferSize="1.5", bufferSizeUnits="Pixel",
         bufferColor="255,255,255,255", bufferOpacity="0.85", bufferJoinStyle="128", bufferNoFill="1")
    # 0 around points, 2 parallel to lines, 1 over the polygon's centre (QgsPalLayerSettings::Placement)
    placement = {"marker": "0", "line": "2", "fill": "1"}[_kind(layer.geometry)]
    _sub(settings, "placement", placement=placement, dist="1", distUnits="Pixel", centroidInside="1")
    # permanent labels from label_min_zoom on, as on the web maps (QGIS's "scaleMax" is the smallest scale shown)
    shown_from = label_scale(layer.label_min_zoom) if layer.label_min_zoom is not None else 0
    _sub(settings, "rendering", obstacle="1", displayAll="0", scaleVisibility="1" if shown_from else "0",
         scaleMin="0", scaleMax=repr(shown_from), upsidedownLabels="0", limitNumLabels="0", mergeLines="1",
         drawLabels="1", fontLimitPixelSize="0")


def label_scale(zoom: int) -> float:
    """The scale denominator of a web map zoom level (OGC WebMercatorQuad, 0.28 mm pixels): labels that the
    web maps show from that zoom on are shown in QGIS from this scale on."""
    return WEB_MERCATOR_Z0_SCALE / 2 ** zoom


def _quoted(value) -> str:
    """A QgsDataSourceUri value: in single quotes, backslash and quote escaped (QgsDataSourceUri::escape)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def datasource(base_url: str, layer: LayerDef, authcfg: str | None, large: bool, page_size: int = PAGE_SIZE) -> str:
    """The OAPIF provider URI (QgsWFSDataSourceURI keys: url = the landing page, typename = collection id)."""
    parts = [f"{key}={_quoted(value)}" for key, value in (
        ("pageSize", page_size), ("pagingEnabled", "true"), ("restrictToRequestBBOX", 1 if large else 0),
        ("typename", layer.id), ("url", base_url))]
    if authcfg:
        parts.insert(0, f"authcfg={authcfg}")
    return " ".join(parts)


def _maplayer(parent: ET.Element, item: ProjectLayer, base_url: str, authcfg: str | None, page_size: int,
              large_max_scale: int) -> str:
    layer = item.layer
    layer_id = f"{layer.id}_oapif"
    # the label field is set up for every layer that has one; shown where the web maps show permanent labels
    attrs = dict(type="vector", geometry={"marker": "Point", "line": "Line", "fill": "Polygon"}[_kind(layer.geometry)],
                 labelsEnabled="1" if layer.label_field and layer.label_min_zoom is not None else "0", readOnly="1", autoRefreshEnabled="0",
                 hasScaleBasedVisibilityFlag="1" if item.large else "0", styleCategories="AllStyleCategories",
                 minScale=str(large_max_scale) if item.large else "100000000", maxScale="0")
    el = _sub(parent, "maplayer", **attrs)
    _sub(el, "id", layer_id)
    _sub(el, "datasource", datasource(base_url, layer, authcfg, item.large, page_size))
    _sub(el, "layername", item.title)
    _srs(_sub(el, "srs"), LAYER_CRS)
    _sub(el, "provider", PROVIDER, encoding="UTF-8")
    aliases = _sub(el, "aliases")
    for i, f in enumerate(layer.fields):
        _sub(aliases, "alias", field=f.name, index=str(i), name=f.label)
    _renderer(el, layer)
    if layer.label_field:
        _labeling(el, layer)
    if layer.label_field:
        _sub(el, "previewExpression", f'"{layer.label_field}"')
    _sub(el, "layerOpacity", "1")
    return layer_id


def tiles_datasource(base_url: str, layer: LayerDef, authcfg: str | None) -> str:
    """The vectortile provider URI of the collection's Mapbox vector tiles (OGC API – Tiles, gis_service/tiles.py),
    encoded as QgsDataSourceUri.encodedUri() writes it (the {z}/{y}/{x} template percent-encoded)."""
    from .tiles import TMS_ID, tile_def

    spec = tile_def(layer)
    url = quote(f"{base_url}/collections/{layer.id}/tiles/{TMS_ID}/{{z}}/{{y}}/{{x}}", safe=":/")
    params = [("type", "xyz"), ("url", url), ("zmax", spec.max_zoom), ("zmin", spec.min_zoom)]
    if authcfg:
        params.append(("authcfg", authcfg))
    return "&".join(f"{k}={v}" for k, v in params)


def _tile_layer(parent: ET.Element, item: ProjectLayer, base_url: str, authcfg: str | None,
                large_max_scale: int) -> tuple[str, str, str]:
    """The overview of a large collection: its vector tiles (every feature from the layer's detail zoom, count
    cells below it), drawn where the OAPIF layer is not (scales smaller than 1:large_max_scale)."""
    layer = item.layer
    layer_id, name, source = f"{layer.id}_tiles", f"{item.title}（概览 矢量瓦片）", tiles_datasource(base_url, layer, authcfg)
    el = _sub(parent, "maplayer", type="vector-tile", hasScaleBasedVisibilityFlag="1", autoRefreshEnabled="0",
              styleCategories="AllStyleCategories", minScale="100000000", maxScale=str(large_max_scale))
    _sub(el, "id", layer_id)
    _sub(el, "datasource", source)
    _sub(el, "layername", name)
    _srs(_sub(el, "srs"), "EPSG:3857")
    _sub(el, "provider", TILE_PROVIDER)
    renderer = _sub(_sub(el, "renderer", type="basic"), "styles")
    dimension = {"marker": "0", "line": "1", "fill": "2"}[_kind(layer.geometry)]
    # cells below the detail zoom are squares: a polygon style for them whatever the layer's geometry
    drawn = [(layer.geometry, dimension, "要素 features")] + ([("Polygon", "2", "格网 cells")] if dimension != "2" else [])
    look = Style.parse(layer.style)
    for geometry, kind, style_name in drawn:
        style = _sub(renderer, "style", name=style_name, layer="", geometry=kind, enabled="1", **{
            "min-zoom": "-1", "max-zoom": "-1", "expression": f"geometry_type($geometry)='{_QGIS_GEOMETRY[kind]}'"})
        _symbol(_sub(style, "symbols"), "0", geometry, look, look.color)
    return layer_id, name, source


_QGIS_GEOMETRY = {"0": "Point", "1": "Line", "2": "Polygon"}


def _extent(store: Store, items: list[ProjectLayer]) -> tuple[float, float, float, float]:
    """Union of the layers' extents in the project CRS (easting/northing as QGIS orders them)."""
    boxes = [store.extent(i.layer) for i in items]
    boxes = [b for b in boxes if b] or [(116.1, 38.4, 117.3, 40.1)]  # no data: Langfang's bounds
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    xs, ys = crs_mod.transform_xy([x0, x0, x1, x1], [y0, y1, y0, y1], crs_mod.STORAGE_CRS, PROJECT_CRS)
    return float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys))


def project_xml(catalog: Catalog, store: Store, role: str | None, base_url: str, authcfg: str | None,
                large_features: int = LARGE_FEATURES, page_size: int = PAGE_SIZE,
                large_max_scale: int = LARGE_MAX_SCALE) -> str:
    """The .qgs document. base_url is the service's OGC landing page (…/ogc); authcfg None: anonymous."""
    if authcfg is not None:
        check_authcfg(authcfg)
    items = project_layers(catalog, store, role, large_features)
    title = f"廊坊空间决策支持系统（{role or '匿名 public'}）"
    root = ET.Element("qgis", projectname=title, version="3.22.16-Białowieża")
    _sub(root, "homePath", path="")
    _sub(root, "title", title)
    _srs(_sub(root, "projectCrs"), PROJECT_CRS)
    tree = _sub(root, "layer-tree-group")
    _sub(tree, "customproperties")
    layers_el = _sub(root, "projectlayers")
    groups: dict[str, ET.Element] = {}
    for item in items:
        if item.group_title not in groups:
            groups[item.group_title] = _sub(tree, "layer-tree-group", name=item.group_title,
                                            checked="Qt::Checked", expanded="1")
            _sub(groups[item.group_title], "customproperties")
        layer_id = _maplayer(layers_el, item, base_url, authcfg, page_size, large_max_scale)
        node = _sub(groups[item.group_title], "layer-tree-layer", id=layer_id, name=item.title,
                    source=datasource(base_url, item.layer, authcfg, item.large, page_size), providerKey=PROVIDER,
                    checked="Qt::Checked", expanded="0")
        _sub(node, "customproperties")
        if item.large:
            tile_id, tile_name, tile_source = _tile_layer(layers_el, item, base_url, authcfg, large_max_scale)
            node = _sub(groups[item.group_title], "layer-tree-layer", id=tile_id, name=tile_name, source=tile_source,
                        providerKey=TILE_PROVIDER, checked="Qt::Checked", expanded="0")
            _sub(node, "customproperties")
    x0, y0, x1, y1 = _extent(store, items)
    canvas = _sub(root, "mapcanvas", name="theMapCanvas", annotationsVisible="1")
    _sub(canvas, "units", "meters")
    box = _sub(canvas, "extent")
    for tag, value in (("xmin", x0), ("ymin", y0), ("xmax", x1), ("ymax", y1)):
        _sub(box, tag, repr(value))
    _sub(canvas, "rotation", "0")
    _srs(_sub(canvas, "destinationsrs"), PROJECT_CRS)
    view = _sub(root, "ProjectViewSettings", UseProjectScales="0")
    _srs(_sub(view, "DefaultViewExtent", xmin=repr(x0), ymin=repr(y0), xmax=repr(x1), ymax=repr(y1)), PROJECT_CRS)
    props = _sub(root, "properties")
    _sub(_sub(props, "SpatialRefSys"), "ProjectionsEnabled", "1", type="int")  # else QGIS ignores projectCrs
    _sub(_sub(props, "Measure"), "Ellipsoid", ELLIPSOID, type="QString")
    measurement = _sub(props, "Measurement")
    _sub(measurement, "DistanceUnits", "meters", type="QString")
    _sub(measurement, "AreaUnits", "m2", type="QString")
    ET.indent(root)
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(root, encoding="unicode")


def qgz_bytes(xml: str, name: str = "langfang.qgs") -> bytes:
    """A .qgz: a zip holding the .qgs (QGIS reads the first .qgs in it)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, xml.encode("utf-8"))
    return buffer.getvalue()
