"""The front-end assets the map pages use: one list, read by the map factory (URLs under /static), by the
static route (it serves these files and nothing else from node_modules) and by the map exporter (inlined).

Adding a plugin installed with npm (frontend/package.json) is one line in PACKAGES, e.g.
``Package("leaflet-draw", js=("dist/leaflet.draw.js",), css=("dist/leaflet.draw.css",)),`` — the images its
CSS refers to (``url(images/spritesheet.png)``) are found in the CSS itself, so they cannot be forgotten.
"""

from __future__ import annotations

import base64
import posixpath
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

URL_PREFIX = "/static/"
CACHE_CONTROL = "public, max-age=86400"  # one day, then revalidated with the ETag
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".png": "image/png",
               ".svg": "image/svg+xml", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".webp": "image/webp", ".woff2": "font/woff2", ".woff": "font/woff"}


@dataclass(frozen=True)
class Package:
    """Files of one npm package under frontend/node_modules/<name>/, in the order pages load them."""

    name: str
    js: tuple[str, ...] = ()
    css: tuple[str, ...] = ()
    images: tuple[str, ...] = ()  # images its JavaScript loads itself (not referenced by its CSS)


PACKAGES: tuple[Package, ...] = (
    Package("leaflet", js=("dist/leaflet.js",), css=("dist/leaflet.css",),
            images=("dist/images/marker-icon.png", "dist/images/marker-icon-2x.png", "dist/images/marker-shadow.png")),
    Package("leaflet.markercluster", js=("dist/leaflet.markercluster.js",),
            css=("dist/MarkerCluster.css", "dist/MarkerCluster.Default.css")),
    Package("leaflet-draw", js=("dist/leaflet.draw.js",), css=("dist/leaflet.draw.css",)),
    Package("leaflet.vectorgrid", js=("dist/Leaflet.VectorGrid.bundled.min.js",)),  # Mapbox vector tiles (/ogc tiles)
)

# url(...) in CSS: quoted or not. data:, fragment (#default#VML) and absolute URLs are not files here.
_CSS_URL = re.compile(r"""url\(\s*(['"]?)([^'")]+)\1\s*\)""")
_SOURCE_MAP = re.compile(r"^\s*//[#@] sourceMappingURL=.*$", re.MULTILINE)


def js_paths() -> list[str]:
    """Every script, relative to node_modules (and to /static), in loading order."""
    return [f"{p.name}/{f}" for p in PACKAGES for f in p.js]


def css_paths() -> list[str]:
    return [f"{p.name}/{f}" for p in PACKAGES for f in p.css]


def folium_js() -> list[tuple[str, str]]:
    """(name, URL) pairs for folium's default_js: the local copies instead of folium's CDN links."""
    return [(path, URL_PREFIX + path) for path in js_paths()]


def folium_css() -> list[tuple[str, str]]:
    return [(path, URL_PREFIX + path) for path in css_paths()]


def css_references(css_path: str, css_text: str) -> list[str]:
    """Files a stylesheet refers to, as paths relative to node_modules (resolved against the CSS file)."""
    refs = []
    for _, url in _CSS_URL.findall(css_text):
        url = url.strip()
        if url.startswith(("data:", "#", "/")) or "://" in url:
            continue
        refs.append(posixpath.normpath(posixpath.join(posixpath.dirname(css_path), url.split("?")[0].split("#")[0])))
    return refs


@lru_cache(maxsize=8)
def _served(static_dir: Path) -> frozenset[str]:
    paths = set(js_paths()) | set(css_paths()) | {f"{p.name}/{f}" for p in PACKAGES for f in p.images}
    for css in css_paths():
        file = static_dir / css
        if file.is_file():
            paths |= {ref for ref in css_references(css, file.read_text(encoding="utf-8"))
                      if not ref.startswith("..") and Path(ref).suffix in MEDIA_TYPES}
    return frozenset(paths)


def served_paths(static_dir: Path) -> frozenset[str]:
    """Every file /static serves: the scripts, the stylesheets and the images they need."""
    return _served(Path(static_dir).resolve())


def lookup(static_dir: Path, path: str) -> Path | None:
    """The file for /static/<path>, or None when it is not one of the assets (or not installed)."""
    if path not in served_paths(static_dir):
        return None
    file = Path(static_dir) / path
    return file if file.is_file() else None


def media_type(path: str | Path) -> str:
    return MEDIA_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")


def path_of_url(url: str) -> str | None:
    """The asset path behind a /static URL the pages use, or None for anything else."""
    return url[len(URL_PREFIX):] if url.startswith(URL_PREFIX) else None


# --- inlining (self-contained exports) -------------------------------------------------------------------
class AssetMissing(RuntimeError):
    pass


def _file(static_dir: Path, path: str) -> Path:
    file = lookup(static_dir, path)
    if file is None:
        raise AssetMissing(f"front-end asset {path!r} is not in gis_service/maps/assets.py or not installed "
                           f"under {static_dir} (run 'make install')")
    return file


def data_uri(static_dir: Path, path: str) -> str:
    data = base64.b64encode(_file(static_dir, path).read_bytes()).decode("ascii")
    return f"data:{media_type(path).split(';')[0]};base64,{data}"


def inline_js(static_dir: Path, path: str) -> str:
    """Script text safe inside <script>…</script> (no source-map comment: there is no file beside it)."""
    text = _SOURCE_MAP.sub("", _file(static_dir, path).read_text(encoding="utf-8"))
    return re.sub(r"</(script)", r"<\\/\1", text, flags=re.IGNORECASE).replace("<!--", "<\\!--")


def inline_css(static_dir: Path, path: str) -> str:
    """Stylesheet text with every file it refers to embedded as a data: URI."""
    text = _SOURCE_MAP.sub("", _file(static_dir, path).read_text(encoding="utf-8"))
    text = re.sub(r"/\*#\s*sourceMappingURL=[^*]*\*/", "", text)

    def embed(match: re.Match) -> str:
        refs = css_references(path, f"url({match.group(2)})")
        return f'url("{data_uri(static_dir, refs[0])}")' if refs else match.group(0)

    text = _CSS_URL.sub(embed, text)
    if "</" in text:
        raise AssetMissing(f"{path}: '</' inside a stylesheet cannot be inlined safely")
    return text


def default_icon_script(static_dir: Path) -> str:
    """Leaflet finds its default marker images through a CSS URL it cuts at 'marker-icon.png'; once inlined as
    data: URIs that fails, so a self-contained page hands it the three images directly."""
    images = (("iconUrl", "marker-icon.png"), ("iconRetinaUrl", "marker-icon-2x.png"),
              ("shadowUrl", "marker-shadow.png"))
    icons = {option: data_uri(static_dir, f"leaflet/dist/images/{name}") for option, name in images}
    options = ", ".join(f'{k}: "{v}"' for k, v in icons.items())
    return f"L.Icon.Default.imagePath = ''; L.Icon.Default.mergeOptions({{{options}}});"
