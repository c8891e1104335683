"""What every layer store offers, whatever holds the data (GeoPackage files today, PostGIS later).

The OGC core, the map pages, the exporters and the domain modules talk to a ``Store``; nothing outside
``gis_service/store/`` sees SQL, GeoPackage blobs or file paths. A page of features carries ISO WKB and
pre-serialised GeoJSON text, so a second implementation only has to produce the same two forms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import geopandas as gpd
import numpy as np
import orjson
import shapely

from ..catalog import LayerDef

# Who wrote a layer's data. build-layers writes only missing layers and never touches "imported" ones;
# "derived" layers are written by their domain (from other layers and its rules), never by build-layers.
ORIGINS = ("source", "demo", "imported", "derived")


@dataclass
class FeatureQuery:
    """What a client asked for, already validated against the layer definition (storage CRS lon/lat)."""

    bbox: tuple[float, float, float, float] | None = None
    intersects: object | None = None  # a shapely geometry, e.g. a projected bbox seen in lon/lat
    equals: dict[str, object] = field(default_factory=dict)
    cql: object | None = None  # a parsed CQL2 expression (store.cql2)
    cql_to_storage: object | None = None  # callable converting filter-crs geometries to storage
    datetime: tuple[str | None, str | None] | None = None
    sortby: list[tuple[str, bool]] = field(default_factory=list)  # (field, ascending)
    columns: list[str] | None = None  # None = every defined field
    masked: dict[str, str] = field(default_factory=dict)  # personal field -> kind, masked inside the store
    limit: int = 100
    offset: int = 0


@dataclass
class FeaturePage:
    fids: list[int]
    geometry_wkb: list[bytes]  # ISO WKB in the storage CRS (EPSG:4490, lon/lat)
    geometry_json: list[str]  # GeoJSON geometries in lon/lat (CRS84 axis order), precomputed at write
    properties_json: list[str]  # properties as JSON objects (personal fields already masked if asked)
    number_matched: int

    @property
    def geometries(self) -> np.ndarray:
        return shapely.from_wkb(self.geometry_wkb) if self.geometry_wkb else np.empty(0, dtype=object)

    @property
    def properties(self) -> list[dict]:
        return [orjson.loads(p) for p in self.properties_json]


class Store(Protocol):
    """Read and replace whole layers. Implementations must be safe to call from several threads."""

    def exists(self, layer: LayerDef) -> bool: ...

    def count(self, layer: LayerDef) -> int: ...

    def extent(self, layer: LayerDef) -> tuple[float, float, float, float] | None: ...

    def time_extent(self, layer: LayerDef) -> tuple[str, str] | None: ...

    def origin(self, layer: LayerDef) -> str | None:
        """One of ORIGINS, or None when the layer has no data yet."""

    def version(self, layer: LayerDef) -> str:
        """Changes whenever the layer's data is replaced: the key for caches of derived data."""

    def query(self, layer: LayerDef, q: FeatureQuery) -> FeaturePage: ...

    def get(self, layer: LayerDef, fid: int, masked: dict[str, str] | None = None) -> FeaturePage: ...

    def read_frame(self, layer: LayerDef) -> gpd.GeoDataFrame:
        """The whole layer, indexed by fid, in EPSG:4490 (clear values: callers mask)."""

    def write(self, layer: LayerDef, frame: gpd.GeoDataFrame, origin: str) -> int:
        """Validate against the definition and replace the layer atomically (all or nothing)."""


def is_demo(store: Store, layer: LayerDef) -> bool:
    """Demo data is what the generator wrote: a definition marked demo whose data a user has not imported."""
    return layer.demo and store.origin(layer) != "imported"


def display_title(store: Store, layer: LayerDef) -> str:
    return f"{layer.title_zh}（演示）" if is_demo(store, layer) else layer.title_zh
