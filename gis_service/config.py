"""Settings from environment variables (prefix GIS_), with defaults that work from a checkout."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BASEMAPS = ("none", "osm", "tianditu", "gaode")


@dataclass(frozen=True)
class Settings:
    layers_dir: Path = REPO_ROOT / "layers"
    var_dir: Path = REPO_ROOT / "var"  # API key hashes and the personal-data access log
    maps_dir: Path = REPO_ROOT / "maps"
    static_dir: Path = REPO_ROOT / "frontend" / "node_modules"
    host: str = "127.0.0.1"
    port: int = 8000
    basemap: str = "none"  # offline by default: county boundaries are the base layer
    tianditu_key: str = field(default="", repr=False)  # server-side only, never sent to the browser
    workers: int = 1  # uvicorn worker processes (GIS_WORKERS); they share the store, keys and sessions
    session_hours: float = 8.0  # lifetime of a map-page sign-in (GIS_SESSION_HOURS)
    # postgresql://… selects the PostGIS store for layers, records, keys, sessions, rule overrides and the
    # access log (GIS_DATABASE_URL); empty: the embedded store (GeoPackage files and SQLite under var_dir).
    database_url: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        env = os.environ
        values = dict(
            layers_dir=Path(env.get("GIS_LAYERS_DIR", cls.layers_dir)),
            var_dir=Path(env.get("GIS_VAR_DIR", cls.var_dir)),
            maps_dir=Path(env.get("GIS_MAPS_DIR", cls.maps_dir)),
            static_dir=Path(env.get("GIS_STATIC_DIR", cls.static_dir)),
            host=env.get("GIS_HOST", cls.host),
            port=int(env.get("GIS_PORT", cls.port)),
            basemap=env.get("GIS_BASEMAP", cls.basemap),
            tianditu_key=env.get("GIS_TIANDITU_KEY", ""),
            workers=int(env.get("GIS_WORKERS", cls.workers)),
            session_hours=float(env.get("GIS_SESSION_HOURS", cls.session_hours)),
            database_url=env.get("GIS_DATABASE_URL", ""),
        )
        values.update(overrides)
        if values["basemap"] not in BASEMAPS:
            raise ValueError(f"GIS_BASEMAP must be one of {BASEMAPS}, not {values['basemap']!r}")
        if not 0 < values["session_hours"] < float("inf"):
            raise ValueError(f"GIS_SESSION_HOURS must be a positive number of hours, not {values['session_hours']!r}")
        if values["workers"] < 1:
            raise ValueError(f"GIS_WORKERS must be at least 1, not {values['workers']!r}")
        if values["database_url"] and not values["database_url"].startswith(("postgresql://", "postgres://")):
            raise ValueError("GIS_DATABASE_URL must be a postgresql:// URL (or empty for the embedded store)")
        return cls(**values)

    @property
    def rules_override(self) -> Path:
        """The bureau's local rule values (see gis_service/rules/__init__.py)."""
        return self.var_dir / "rules.local.toml"
