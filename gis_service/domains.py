"""Domain modules: how canal, environment, flood, land (and the admin example) plug into the platform.

A domain is a package ``gis_service/<name>/`` with a ``domain.py`` that defines ``DOMAIN = Domain(...)``:
pure analysis functions in metres, a router factory, its map pages and its rules file
``gis_service/rules/<name>.toml``. The application discovers every such package here, mounts its router
under ``/api/<name>``, its pages under ``/maps/<name>`` and lists them on the map index; adding a domain
touches no other module (the pattern of TiTiler's router factories: the platform injects what a domain
needs through one ``DomainContext``).
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import geopandas as gpd

from .catalog import Catalog, LayerDef
from .config import Settings
from .crs import METRIC_CRS
from .auth import Principal
from .errors import GisError, not_found
from .privacy import AccessLog
from .rules import DomainRules
from .store import RecordStore, Store

log = logging.getLogger("gis_service")
PACKAGE_DIR = Path(__file__).resolve().parent
# Who reads layers when a domain computes its derived layers at start-up (no caller): those layers carry
# their own access class in their TOML, which the OGC API and the maps enforce.
SYSTEM = Principal("system", "admin")
# Path segments the platform already uses under /maps and /api: no domain may take them.
RESERVED_NAMES = {"api", "layers", "session", "rules", "static", "crs", "ogc"}


@dataclass(frozen=True)
class MapPage:
    """A map a domain offers: served at /maps/<domain>[/<name>], exportable as '<domain>[/<name>]'."""

    name: str  # "" for the domain's main page
    title_zh: str
    build: Callable  # (DomainContext, MapFactory, Principal | None) -> folium.Map
    description_zh: str = ""

    def export_name(self, domain: str) -> str:
        return f"{domain}/{self.name}" if self.name else domain


@dataclass(frozen=True)
class Domain:
    name: str
    title_zh: str
    title_en: str
    router: Callable  # (DomainContext) -> fastapi.APIRouter
    pages: tuple[MapPage, ...] = ()
    # (DomainContext) -> {layer id: GeoDataFrame}: the domain's derived layers (zones …), recomputed and
    # published by refresh_derived at start-up so that they are OGC collections and map layers like any other.
    derive: Callable | None = None
    # (argparse.ArgumentParser) -> None: adds the domain's command-line subcommands, run as
    # `gis-service <domain> <command> …`; each sets run=(args, ctx: DomainContext, refresh) where refresh()
    # recomputes every domain's derived layers (after the domain replaced data). Imported only when used.
    commands: Callable | None = None
    # {layer id: the domain's subcommand that imports it}: layers whose import the domain does itself (with its
    # own validation, saved versions and history). The generic `gis-service import` refuses them.
    imports: dict[str, str] = field(default_factory=dict, hash=False)
    # (Settings, psycopg.Connection) -> str | None: copies the domain's data that is not a catalog layer (the
    # land register) into the database on `gis-service db load`; returns a line for the operator.
    database_load: Callable | None = None

    def page(self, name: str) -> MapPage | None:
        return next((p for p in self.pages if p.name == name), None)


@dataclass
class DomainContext:
    """Everything a domain may use from the platform; a domain imports no other domain."""

    settings: Settings
    catalog: Catalog
    store: Store
    records: RecordStore
    rules: DomainRules
    access_log: AccessLog
    _frames: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _shared: dict = field(default_factory=dict, repr=False)
    _shared_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def shared(self, make: Callable):
        """The one object `make(ctx)` builds for this context (a domain's service and its caches), built on
        first use and shared by the routes, the map pages and derive."""
        with self._shared_lock:
            if make not in self._shared:
                self._shared[make] = make(self)
            return self._shared[make]

    def publish(self, layer_id: str, frame: gpd.GeoDataFrame) -> int:
        """Replace a derived layer (atomically) with a frame computed by the domain."""
        layer = self.catalog.get(layer_id)
        if layer is None or not layer.derived:
            raise ValueError(f"{layer_id} is not a derived layer (set derived = true in its TOML)")
        return self.store.write(layer, frame, origin="derived")

    def layer(self, layer_id: str, who: Principal | None = None) -> LayerDef:
        """A built layer `who` may see (anonymous by default); 404 as in the OGC API otherwise."""
        layer = self.catalog.get(layer_id)
        if layer is not None and not layer.can_see_layer(who.role if who else None):
            raise not_found(f"图层 {layer_id}", f"layer '{layer_id}'")
        if layer is None or not self.store.exists(layer):
            raise GisError("layer_not_available", f"图层 {layer_id} 未定义或尚未构建",
                           f"layer '{layer_id}' is not defined or not built", 503)
        return layer

    def frame(self, layer_id: str, crs: str = METRIC_CRS, who: Principal | None = None) -> gpd.GeoDataFrame:
        """A whole layer `who` may see, in `crs` (metres by default), cached until its data is replaced.

        Clear values: a domain that returns personal fields masks them with LayerDef.masked_fields(role).
        Derived layers computed at start-up read as SYSTEM."""
        layer = self.layer(layer_id, who)
        key = (layer_id, crs)
        version = self.store.version(layer)
        with self._lock:
            cached = self._frames.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        frame = self.store.read_frame(layer).to_crs(crs)
        with self._lock:
            self._frames[key] = (version, frame)
        return frame


def discover(package_dir: Path = PACKAGE_DIR) -> list[Domain]:
    """Every package under gis_service/ with a domain.py, in name order."""
    domains = []
    for path in sorted(package_dir.glob("*/domain.py")):
        name = path.parent.name
        module = importlib.import_module(f"{__package__}.{name}.domain")
        domain = getattr(module, "DOMAIN", None)
        if not isinstance(domain, Domain) or domain.name != name:
            raise RuntimeError(f"{path}: must define DOMAIN = Domain(name={name!r}, ...)")
        if name in RESERVED_NAMES:
            raise RuntimeError(f"{path}: the name {name!r} is used by the platform")
        domains.append(domain)
    return domains


def contexts(domains: list[Domain], *, settings: Settings, catalog: Catalog, store: Store, records: RecordStore,
             rules, access_log: AccessLog) -> dict[str, DomainContext]:
    """One DomainContext per domain, each with its own rules (rules: a RuleBook)."""
    return {d.name: DomainContext(settings, catalog, store, records, rules.domain(d.name), access_log)
            for d in domains}


def find_page(domains: list[Domain], name: str) -> tuple[Domain, MapPage] | None:
    """The domain page called '<domain>' or '<domain>/<page>', if any."""
    domain_name, _, page_name = name.partition("/")
    domain = next((d for d in domains if d.name == domain_name), None)
    page = domain.page(page_name) if domain else None
    return (domain, page) if page else None


def map_builder(domains: list[Domain], domain_contexts: dict[str, DomainContext]):
    """A builder for the map exporter: domain pages by '<domain>[/<page>]', else a collection's layer map."""
    from .auth import Principal
    from .maps.export import build_map

    def build(factory, name: str, role: str | None):
        found = find_page(domains, name)
        if found is None:
            return build_map(factory, name, role)
        domain, page = found
        return page.build(domain_contexts[domain.name], factory, Principal("cli", role) if role else None)

    return build


def load_into_database(settings: Settings, url: str) -> list[str]:
    """Every domain's non-layer data into the database (after `db load` copied the layers)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return [line for d in discover() if d.database_load is not None
                for line in [d.database_load(settings, conn)] if line]


def refuse_domain_import(domains: list[Domain], layer_id: str) -> None:
    """A GisError naming the domain's own command when a domain imports `layer_id` itself."""
    for domain in domains:
        command = domain.imports.get(layer_id)
        if command:
            line = f"gis-service {domain.name} {command} FILE"
            raise GisError("layer_imported_by_domain",
                           f"图层 {layer_id} 由领域 {domain.title_zh} 自行导入（校验、留存旧版本、可回退）：请用 {line}",
                           f"layer '{layer_id}' is imported by the {domain.name} domain itself (validated, previous "
                           f"version kept, reversible): use {line}", 409)


def refresh_derived(domains: list[Domain], domain_contexts: dict[str, DomainContext]) -> list[str]:
    """Recompute and publish every domain's derived layers (rules or inputs may have changed); ids written.

    A domain whose input layers are not defined or not built here is skipped with a warning: a layers
    directory without the canal layers still serves everything else."""
    written = []
    for domain in domains:
        if domain.derive is None:
            continue
        ctx = domain_contexts[domain.name]
        try:
            frames = domain.derive(ctx)  # derive reads with who=SYSTEM where it must
        except GisError as exc:
            if exc.code not in ("layer_not_available", "layer_not_built"):
                raise
            log.warning("derived layers of %s not refreshed: %s", domain.name, exc.message_en)
            continue
        for layer_id, frame in frames.items():
            if ctx.catalog.get(layer_id) is None:
                log.warning("derived layer %s of %s has no definition here; not published", layer_id, domain.name)
                continue
            ctx.publish(layer_id, frame)
            written.append(layer_id)
    return written
