"""Keys and the access log where the settings put them: files under var/, or the database when
GIS_DATABASE_URL is set. Kept out of gis_service.store so that light commands (``gis-service keys``) do not
import the GIS libraries; the database classes are imported only when the database is selected."""

from __future__ import annotations


def open_key_store(settings):
    """API keys and map-page sessions: var/keys.sqlite, or the database when GIS_DATABASE_URL is set."""
    if getattr(settings, "database_url", ""):
        from .store.pgplatform import PostgresKeyStore

        return PostgresKeyStore(settings.database_url)
    from .auth import KeyStore

    return KeyStore(settings.var_dir / "keys.sqlite")


def open_access_log(settings):
    """The personal-data access log: var/personal_data_access.log, or a table in the database."""
    if getattr(settings, "database_url", ""):
        from .store.pgplatform import PostgresAccessLog

        return PostgresAccessLog(settings.database_url)
    from .privacy import AccessLog

    return AccessLog(settings.var_dir / "personal_data_access.log")

