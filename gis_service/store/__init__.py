"""Layer storage. The embedded GeoPackage store is the default; a PostGIS store will share its interface."""

from .gpkg import FeaturePage, FeatureQuery, GeoPackageStore
from .temporal import parse_datetime_interval

__all__ = ["FeaturePage", "FeatureQuery", "GeoPackageStore", "parse_datetime_interval"]
