"""Facts about the built demo land layers read straight from the files (independent of the service)."""

import sqlite3

import pytest
import shapely

from gis_service.config import REPO_ROOT
from gis_service.store.gpkg import decode_geometries

PLOTS = REPO_ROOT / "layers" / "land" / "plots.gpkg"
REGISTER = REPO_ROOT / "layers" / "land" / "register.sqlite"


def plots_db():
    return sqlite3.connect(f"file:{PLOTS}?mode=ro", uri=True)


def register_db():
    conn = sqlite3.connect(f"file:{REGISTER}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


def plot_row(where: str = "1", params=()):
    conn = plots_db()
    conn.row_factory = sqlite3.Row
    row = conn.execute(f"SELECT * FROM plots WHERE {where} ORDER BY fid LIMIT 1", params).fetchone()
    out = dict(row)
    out["geometry"] = decode_geometries([out.pop("geom")])[0]
    return out


@pytest.fixture(scope="session")
def transferred_plot():
    """A plot with a transfer in the register and a household with a full record."""
    reg = register_db()
    dkbm = reg.execute("SELECT dkbm FROM transfers WHERE start_date <= '2020-01-01' AND end_date >= '2030-01-01' "
                       "ORDER BY dkbm LIMIT 1").fetchone()[0]
    return plot_row("dkbm = ?", (dkbm,))


@pytest.fixture(scope="session")
def household_of():
    def get(cbfbm):
        return dict(register_db().execute("SELECT * FROM households WHERE cbfbm = ?", (cbfbm,)).fetchone())
    return get


def interior_point(geom):
    p = shapely.point_on_surface(geom)
    return p.x, p.y
