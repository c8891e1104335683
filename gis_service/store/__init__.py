"""Storage behind two interfaces: ``Store`` (layers, read by the OGC core, maps and domains) and
``RecordStore`` (writable domain records with transactions). The embedded implementations (GeoPackage
files, one SQLite database) are the default; GIS_DATABASE_URL=postgresql://… selects PostgreSQL/PostGIS
(store.postgis, store.pgrecords) for both."""

import os

from .base import FeaturePage, FeatureQuery, Store, display_title, is_demo
from .gpkg import GeoPackageStore
from .records import Column, DuplicateRecord, RecordStore, SQLiteRecordStore, Table
from .temporal import parse_datetime_interval

__all__ = ["Column", "DuplicateRecord", "FeaturePage", "FeatureQuery", "GeoPackageStore", "RecordStore",
           "SQLiteRecordStore", "Store", "Table", "display_title", "is_demo", "open_record_store", "open_rules",
           "open_store", "parse_datetime_interval"]


def open_store(settings) -> Store:
    """The layer store the settings select: PostGIS when GIS_DATABASE_URL is set, else the GeoPackage files."""
    if getattr(settings, "database_url", ""):
        from .postgis import PostGISStore

        return PostGISStore(settings.database_url)
    return GeoPackageStore()


def open_record_store(settings) -> RecordStore:
    if getattr(settings, "database_url", ""):
        from .pgrecords import PostgresRecordStore

        return PostgresRecordStore(settings.database_url)
    return SQLiteRecordStore(settings.var_dir / "records.sqlite")


def rules_override_location(settings) -> str:
    """Where an operator changes the local rule values, as /api/rules and /maps/rules tell them."""
    if getattr(settings, "database_url", ""):
        return "数据库表 gis.rules_override（编辑 var/rules.local.toml 后运行 gis-service db rules）"
    return f"$GIS_VAR_DIR/{settings.rules_override.name}（默认 default var/）"


def open_rules(settings):
    """The rules in force: the rule files plus the local overrides — var/rules.local.toml, or with the database
    selected the overrides stored there (``gis-service db load`` / ``db rules``), so every instance agrees."""
    from ..rules import RuleBook

    if not getattr(settings, "database_url", ""):
        return RuleBook.load(override_path=settings.rules_override)
    from .pgplatform import rules_override_text

    text = rules_override_text(settings.database_url)
    if text is None:
        return RuleBook.load()
    # RuleBook reads (and cites in its errors) a file: the database's copy, refreshed at every start.
    copy = settings.var_dir / "rules.database.toml"
    copy.parent.mkdir(parents=True, exist_ok=True)
    tmp = copy.with_name(f".{copy.name}.{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, copy)
    return RuleBook.load(override_path=copy)
