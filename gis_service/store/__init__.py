"""Storage behind two interfaces: ``Store`` (layers, read by the OGC core, maps and domains) and
``RecordStore`` (writable domain records with transactions). The embedded implementations (GeoPackage
files, one SQLite database) are the default; a PostGIS store will implement the same protocols."""

from .base import FeaturePage, FeatureQuery, Store, display_title, is_demo
from .gpkg import GeoPackageStore
from .records import Column, DuplicateRecord, RecordStore, SQLiteRecordStore, Table
from .temporal import parse_datetime_interval

__all__ = ["Column", "DuplicateRecord", "FeaturePage", "FeatureQuery", "GeoPackageStore", "RecordStore",
           "SQLiteRecordStore", "Store", "Table", "display_title", "is_demo", "open_record_store", "open_store",
           "parse_datetime_interval"]


def open_store(settings) -> Store:
    """The layer store the settings select (the embedded GeoPackage store is the only one so far)."""
    return GeoPackageStore()


def open_record_store(settings) -> RecordStore:
    return SQLiteRecordStore(settings.var_dir / "records.sqlite")
