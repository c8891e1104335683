"""Vector tiles encoded by PostGIS (ST_AsMVTGeom / ST_AsMVT, store.postgis.PostGISStore.mvt) are the tiles the
Python encoder makes from the same store: the same layer, extent, feature ids (fids), property values and
their protobuf value types, masked for callers not entitled (the clear values never in the bytes), the same
features left out under a pixel, the same max_features refusal, and geometries within one tile unit (within
the simplification tolerance where a geometry is simplified). Tiles are read with a protobuf reader written
here (layers, keys, typed values, tags) and with mapbox-vector-tile (geometries)."""

from __future__ import annotations

import dataclasses

import mapbox_vector_tile
import numpy as np
import psycopg
import pytest
import shapely
from shapely.geometry import shape

from gis_service import tiles
from gis_service.errors import GisError
from gis_service.ogc import Context
from gis_service.store.postgis import PostGISStore

# Value message fields (MVT 2.1, vector_tile.proto): the wire type of each property value
VALUE_FIELDS = {1: "string", 2: "float", 3: "double", 4: "int", 5: "uint", 6: "sint", 7: "bool"}


@pytest.fixture(scope="module")
def pg(pg_loaded):
    return PostGISStore(pg_loaded)


@pytest.fixture(scope="module")
def frames(pg, catalog):
    cache = {}

    def get(layer_id):
        if layer_id not in cache:
            cache[layer_id] = pg.read_frame(catalog.get(layer_id))
        return cache[layer_id]
    return get


# --- a protobuf reader for MVT, independent of the encoders --------------------------------------------------
def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) of a message: ints for varints, bytes for the rest."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        yield field, wire, value


def _packed(buf: bytes) -> list[int]:
    out, i = [], 0
    while i < len(buf):
        v, i = _varint(buf, i)
        out.append(v)
    return out


def _value(buf: bytes):
    (field, _, raw), = list(_fields(buf))
    kind = VALUE_FIELDS[field]
    if kind == "string":
        return kind, raw.decode()
    if kind == "double":
        return kind, float(np.frombuffer(raw, "<f8")[0])
    if kind == "float":
        return kind, float(np.frombuffer(raw, "<f4")[0])
    if kind == "sint":
        return kind, (raw >> 1) ^ -(raw & 1)
    if kind == "bool":
        return kind, bool(raw)
    return kind, raw


def read_tile(data: bytes) -> dict[str, dict]:
    """{layer name: {version, extent, features: {id: {key: (wire type, value)}}, types: {geometry type}}}."""
    out = {}
    for field, _, layer in _fields(data):
        assert field == 3
        name, keys, values, feats, meta = None, [], [], [], {}
        for f, _, v in _fields(layer):
            if f == 1:
                name = v.decode()
            elif f == 2:
                feats.append(v)
            elif f == 3:
                keys.append(v.decode())
            elif f == 4:
                values.append(_value(v))
            elif f == 5:
                meta["extent"] = v
            elif f == 15:
                meta["version"] = v
        features, types = {}, set()
        for feat in feats:
            fid, tags = None, []
            for f, _, v in _fields(feat):
                if f == 1:
                    fid = v
                elif f == 2:
                    tags = _packed(v)
                elif f == 3:
                    types.add(v)
            assert fid not in features
            features[fid] = {keys[k]: values[t] for k, t in zip(tags[::2], tags[1::2])}
        out[name] = {**meta, "features": features, "types": types}
    return out


def geometries(data: bytes, name: str) -> dict[int, shapely.Geometry]:
    layer = mapbox_vector_tile.decode(data, default_options={"y_coord_down": True}).get(name, {"features": []})
    return {f["id"]: shape(f["geometry"]) for f in layer["features"]}


def clear_values(url: str, layer_id: str, field: str, fids) -> dict[int, str | None]:
    """The stored (clear) values of a field, read from the table itself."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(f'SELECT fid, "{field}" FROM layers."{layer_id}" WHERE fid = ANY(%s)',
                            (list(map(int, fids)),)).fetchall()
    return dict(rows)


# --- the two encoders over the same store ---------------------------------------------------------------------
def context(pg, catalog) -> Context:
    return Context(catalog, pg, None, None, "")


def both(pg, catalog, layer, box, role):
    """(Python-encoded, PostGIS-encoded) tile of the layer for a caller of the role, and the feature counts."""
    ctx, columns, masked = context(pg, catalog), tiles.carried_fields(layer), layer.masked_fields(role)
    py = tiles._python_tile(ctx, layer, box, columns, masked)
    query, min_size, most = tiles._selection(layer, box)
    db = pg.mvt(layer, (box.z, box.x, box.y), query, columns, masked, min_size, most, extent=tiles.EXTENT,
                buffer=tiles.BUFFER, simplify=(tiles.SIMPLIFY_ABOVE, tiles.SIMPLIFY_UNITS))
    assert tiles._feature_tile(ctx, layer, box, columns, masked) == db  # what the service serves on PostGIS
    return py, db


def box_at(frame, i: int, z: int) -> tiles.TileBox:
    lon, lat = frame.geometry.iloc[i].representative_point().coords[0]
    col, row = tiles._lonlat_to_tile(lon, lat, z)
    return tiles.TileBox(z, int(col), int(row))


def assert_same_tile(py, db, layer, simplified_ok: bool = False):
    (py_bytes, py_count), (db_bytes, db_count) = py, db
    assert py_count == db_count
    if not py_count:
        assert py_bytes == db_bytes == b""
        return
    a, b = read_tile(py_bytes)[layer.id], read_tile(db_bytes)[layer.id]
    assert a["extent"] == b["extent"] == tiles.EXTENT and a["version"] == b["version"] == 2
    assert a["types"] == b["types"] and len(a["types"]) == 1
    assert set(a["features"]) == set(b["features"]) and len(a["features"]) == py_count
    for fid, props in a["features"].items():
        assert b["features"][fid] == props, fid  # values and their protobuf types
    ga, gb = geometries(py_bytes, layer.id), geometries(db_bytes, layer.id)
    for fid, g in ga.items():
        many = shapely.get_num_coordinates(g) > tiles.SIMPLIFY_ABOVE
        if simplified_ok and many:
            # GEOS 3.11 (PostGIS) and 3.12+ (shapely) keep different vertices within the tolerance
            assert shapely.hausdorff_distance(g, gb[fid]) <= tiles.SIMPLIFY_UNITS + 1, fid
            if g.area:
                assert abs(g.area - gb[fid].area) <= 0.01 * g.area, fid
        else:
            assert shapely.hausdorff_distance(g, gb[fid]) <= 1.0, fid
            assert abs(g.area - gb[fid].area) <= max(1.0, 0.005 * g.area) + shapely.length(g), fid
    return a


# --- tests ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("z", [14, 15, 16, 17])
def test_plots_tiles_are_the_python_tiles_for_every_role(pg, pg_loaded, catalog, frames, z):
    plots = catalog.get("plots")
    frame = frames("plots")
    drawn = 0
    for i in np.random.default_rng(z).choice(len(frame), 4, replace=False):
        box = box_at(frame, int(i), z)
        for role in (None, "planner", "rural"):
            got = assert_same_tile(*both(pg, catalog, plots, box, role), plots)
            drawn += len(got["features"])
            names = {p.get("contractor_name", (None, None))[1] for p in got["features"].values()}
            if role is None:
                assert names == {None}  # no key: the person is left out
            elif role == "planner":
                assert all(n.endswith("*") for n in names)
            else:
                clear = clear_values(pg_loaded, "plots", "contractor_name", got["features"])
                assert names == set(clear.values())
    assert drawn > 0


def test_property_types_on_the_wire(pg, catalog, frames):
    """Strings, doubles (real), integers (uint), booleans, dates as strings — the same Value field both ways,
    and the values those of the table."""
    plots = catalog.get("plots")
    spec = dataclasses.replace(plots.tiles, fields=("dkbm", "contract_area_mu", "county_adcode", "is_basic_farmland",
                                                   "contract_start", "transfer_status"))
    layer = dataclasses.replace(plots, tiles=spec)
    frame = frames("plots")
    box = box_at(frame, 7, 15)
    got = assert_same_tile(*both(pg, catalog, layer, box, "planner"), layer)
    kinds = {k: {t for p in got["features"].values() for (t, _) in [p[k]] if k in p} for k in spec.fields}
    assert kinds == {"dkbm": {"string"}, "contract_area_mu": {"double"}, "county_adcode": {"uint"},
                     "is_basic_farmland": {"bool"}, "contract_start": {"string"}, "transfer_status": {"string"}}
    for fid, props in got["features"].items():
        row = frame.loc[fid]
        assert props["dkbm"][1] == row["dkbm"]
        assert props["contract_area_mu"][1] == row["contract_area_mu"]
        assert props["county_adcode"][1] == row["county_adcode"]
        assert props["is_basic_farmland"][1] == bool(row["is_basic_farmland"])
        assert props["contract_start"][1] == row["contract_start"]


def test_clear_personal_values_never_in_unentitled_tiles(pg, pg_loaded, catalog, frames):
    """Carrying the names, phones and ID numbers: the entitled role's tile has them clear; the anonymous and
    the planner's tiles (masked in SQL) never contain those bytes."""
    plots = catalog.get("plots")
    personal = ("contractor_name", "contractor_phone", "contractor_id_number")
    layer = dataclasses.replace(plots, tiles=dataclasses.replace(plots.tiles, fields=("dkbm",) + personal))
    frame = frames("plots")
    checked = 0
    for i in (11, 222, 3333):
        box = box_at(frame, i, 16)
        clear_tile = assert_same_tile(*both(pg, catalog, layer, box, "rural"), layer)
        clear = {f: clear_values(pg_loaded, "plots", f, clear_tile["features"]) for f in personal}
        for f in personal:
            assert {fid: p[f][1] for fid, p in clear_tile["features"].items() if f in p} == \
                {fid: v for fid, v in clear[f].items() if v is not None}
        for role in (None, "planner"):
            py, db = both(pg, catalog, layer, box, role)
            assert_same_tile(py, db, layer)
            for f in ("contractor_phone", "contractor_id_number"):
                for value in filter(None, clear[f].values()):
                    assert value.encode() not in db[0] and value.encode() not in py[0]
                    checked += 1
            for value in filter(None, clear["contractor_name"].values()):
                if len(value) > 1:
                    assert value.encode() not in db[0]
    assert checked > 20


@pytest.mark.parametrize("layer_id, z", [("contractor_households", 15), ("contractor_households", 17),
                                         ("villages", 12), ("townships", 11)])
def test_point_layers(pg, catalog, frames, layer_id, z):
    layer = catalog.get(layer_id)
    frame = frames(layer_id)
    for i in (0, len(frame) // 2, len(frame) - 1):
        for role in (None, "planner", "admin"):
            assert_same_tile(*both(pg, catalog, layer, box_at(frame, i, z), role), layer)


@pytest.mark.parametrize("layer_id, z", [("railways", 13), ("rivers", 12), ("rivers", 15), ("canal_channels", 14),
                                         ("hsr_lines", 11), ("counties", 9), ("counties", 12), ("land_use", 14)])
def test_line_and_many_vertex_layers(pg, catalog, frames, layer_id, z):
    """Lines and polygons of many vertices cross the tile edge (clipped to the 64-unit buffer) and are simplified
    by 8 units: within that tolerance, the same areas to 1 %."""
    layer = catalog.get(layer_id)
    frame = frames(layer_id)
    for i in (0, len(frame) // 3, len(frame) - 1):
        assert_same_tile(*both(pg, catalog, layer, box_at(frame, i, z), "admin"), layer, simplified_ok=True)


def test_features_under_a_pixel_are_left_out_alike(pg, catalog, frames):
    """Zoomed out (zoom 11, a pixel ≈ 60 m) most plots are under a pixel: both leave out the same ones."""
    plots = catalog.get("plots")
    layer = dataclasses.replace(plots, tiles=dataclasses.replace(plots.tiles, max_features=10**6))
    frame = frames("plots")
    box = box_at(frame, 5, 11)
    py, db = both(pg, catalog, layer, box, None)
    assert_same_tile(py, db, layer)
    x0, y0, x1, y1 = box.lonlat_bounds(tiles.BUFFER)
    b = frame.bounds
    touching = int(((b.minx <= x1) & (b.maxx >= x0) & (b.miny <= y1) & (b.maxy >= y0)).sum())
    assert 0 < db[1] < touching


def test_max_features_refused_alike(pg, catalog, frames):
    """A tile with n features: served by both when max_features is n, refused by both (422) at n - 1."""
    plots = catalog.get("plots")
    frame = frames("plots")
    box = box_at(frame, 42, 14)
    n = both(pg, catalog, plots, box, None)[0][1]
    query, min_size, _ = tiles._selection(plots, box)
    x0, y0, x1, y1 = query
    b = frame.bounds
    wide = ((b.maxx - b.minx) >= min_size[0]) | ((b.maxy - b.miny) >= min_size[1])
    assert n == int(((b.minx <= x1) & (b.maxx >= x0) & (b.miny <= y1) & (b.maxy >= y0) & wide).sum()) > 2
    ctx, columns = context(pg, catalog), tiles.carried_fields(plots)
    for most in (n, n - 1):
        layer = dataclasses.replace(plots, tiles=dataclasses.replace(plots.tiles, max_features=most))
        if most == n:
            assert_same_tile(*both(pg, catalog, layer, box, None), layer)
            continue
        for encode in (tiles._python_tile, tiles._feature_tile):
            with pytest.raises(GisError) as err:
                encode(ctx, layer, box, columns, {})
            assert err.value.status == 422 and err.value.code == "tile_too_dense"
        assert pg.mvt(layer, (box.z, box.x, box.y), query, columns, {}, min_size, most, extent=tiles.EXTENT,
                      buffer=tiles.BUFFER, simplify=(tiles.SIMPLIFY_ABOVE, tiles.SIMPLIFY_UNITS)) is None


def test_empty_tile(pg, catalog):
    plots = catalog.get("plots")
    py, db = both(pg, catalog, plots, tiles.TileBox(14, 0, 0), None)
    assert py == db == (b"", 0)


def test_gcj02_tiles_take_the_python_path(pg, catalog, frames):
    """GCJ-02 has no PostGIS function: on PostGIS those tiles are the Python encoder's, shifted."""
    plots = catalog.get("plots")
    frame = frames("plots")
    plain = box_at(frame, 9, 15)
    box = dataclasses.replace(plain, gcj02=True)
    ctx, columns = context(pg, catalog), tiles.carried_fields(plots)
    served = tiles._feature_tile(ctx, plots, box, columns, {})
    assert served == tiles._python_tile(ctx, plots, box, columns, {}) and served[1] > 0
    assert served != tiles._feature_tile(ctx, plots, plain, columns, {})


def test_statement_timeout_is_a_4xx_on_both_paths(pg_loaded, catalog, frames):
    """A tile statement cancelled by the statement timeout is a GisError (the API's 4xx JSON), not a psycopg
    error (a 500): ST_AsMVT's tile (422 tile_too_slow: zoom in) and the Python path's scan (GCJ-02 tiles,
    400 filter_too_broad as for every other query). The timeout is made certain, not raced: the pool's one
    connection gets a 200 ms timeout and the table is locked, as a layer swap locks it, by another session."""
    from gis_service.store.postgis import make_pool

    plots = catalog.get("plots")
    box = box_at(frames("plots"), 9, 15)
    pool = make_pool(pg_loaded, max_size=1, name="timeout")
    try:
        with pool.connection() as conn:
            conn.execute("SET statement_timeout = 200")
        store = PostGISStore(pg_loaded, pool=pool, migrate=False)
        ctx, columns = context(store, catalog), tiles.carried_fields(plots)
        with psycopg.connect(pg_loaded) as locker:
            locker.execute("LOCK TABLE layers.plots IN ACCESS EXCLUSIVE MODE")
            for tile_box, code, status in ((box, "tile_too_slow", 422),
                                           (dataclasses.replace(box, gcj02=True), "filter_too_broad", 400)):
                with pytest.raises(GisError) as err:
                    tiles._feature_tile(ctx, plots, tile_box, columns, {})
                assert (err.value.code, err.value.status) == (code, status)
        assert tiles._feature_tile(ctx, plots, box, columns, {})[1] > 0  # the lock released: served again
    finally:
        pool.close()
