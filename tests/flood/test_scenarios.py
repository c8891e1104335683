"""Rainfall scenarios (gis_service/flood/scenarios.py): DEMs whose answer is known by hand, plus one live API run."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request

import numpy as np
import pytest

from gis_service.flood.scenarios import (ScenarioRequest, analyse, depth_at, fill_and_spill, rain_excess_mm,
                                         resolve_inputs)
from gis_service.rules import RuleBook

CELL = 5.0


def paraboloid_bowl(a=1e-5, radius=500.0, margin=60):
    """z = a r² inside `radius`, a ridge at r = radius and an outward slope to the DEM edge beyond it."""
    n = int(2 * radius / CELL) + 2 * margin
    c = (np.arange(n) + 0.5) * CELL - n * CELL / 2
    x, y = np.meshgrid(c, c)
    r = np.hypot(x, y)
    z = np.where(r <= radius, a * r ** 2, a * radius ** 2 - 0.01 * (r - radius))
    return z + 10.0, r


def test_paraboloid_bowl_holds_the_rain_of_its_catchment_and_the_centre_depth_follows_the_volume_formula():
    a, radius = 1e-5, 500.0
    z, r = paraboloid_bowl(a, radius)
    dep = analyse(z, CELL)
    assert dep.count == 1
    # Catchment = the disc inside the ridge, give or take a ring one cell wide (the grid's circle).
    area = dep.catchment_cells[1] * CELL ** 2
    assert area == pytest.approx(math.pi * radius ** 2, abs=2 * math.pi * radius * CELL)
    excess = rain_excess_mm(80.0, 1.0, 0.5, 20.0)  # (80 − 20·1) × 0.5 = 30 mm
    assert excess == pytest.approx(30.0)
    pond = fill_and_spill(dep, excess)
    volume = float(np.nansum(pond.depth)) * CELL ** 2
    assert volume == pytest.approx(area * 0.030, rel=1e-6)  # every drop on the catchment is held
    # V = π h² / (2a) for a paraboloid z = a r² filled to depth h  ⇒  h = √(2 a V / π)
    expected_h = math.sqrt(2 * a * (area * 0.030) / math.pi)
    centre = np.unravel_index(np.argmin(r), r.shape)
    assert float(pond.depth[centre]) == pytest.approx(expected_h, rel=0.02)
    # The water surface is flat and ends where the bowl reaches it: r_w = √(h / a)
    wet = pond.depth > 0
    assert r[wet].max() == pytest.approx(math.sqrt(expected_h / a), abs=2 * CELL)
    assert pond.stored_m3 + pond.lost_m3 == pytest.approx(pond.rain_volume_m3)


def test_bowl_holds_at_most_its_spill_volume_and_the_rest_leaves_the_dem():
    a, radius = 1e-5, 500.0
    z, _ = paraboloid_bowl(a, radius)
    dep = analyse(z, CELL)
    capacity = dep.capacity[1]
    # Capacity ≈ π a R⁴ / 2 (the paraboloid filled to its rim; the grid's ridge is slightly lower)
    assert capacity == pytest.approx(math.pi * a * radius ** 4 / 2, rel=0.03)
    pond = fill_and_spill(dep, 5000.0)  # 5 m of excess: far more than the bowl holds
    assert pond.stored_m3 == pytest.approx(capacity)
    assert float(np.nanmax(pond.depth)) == pytest.approx(dep.spill_level[1] - z[dep.labels == 1].min())


def two_pits():
    """A plane sloping east (0.01 m per cell), walls along the north and south edges, two flat-bottomed pits
    across the valley: A (columns 20–29, bottom 19.50, spills at the plane's 19.70 east of it) and B
    (columns 60–69, bottom 18.30, spills at 19.30). Rows 1–18 are the valley (18 rows)."""
    rows, cols = 20, 100
    col = np.arange(cols)
    z = np.tile(20.0 - 0.01 * col, (rows, 1))
    z[0, :] += 5.0
    z[-1, :] += 5.0
    z[1:-1, 20:30] = 19.50
    z[1:-1, 60:70] = 18.30
    return z


def test_two_pits_the_upper_fills_to_its_spill_level_and_the_excess_spills_into_the_lower():
    z = two_pits()
    dep = analyse(z, CELL)
    assert dep.count == 2
    a_id, b_id = dep.labels[5, 25], dep.labels[5, 65]
    assert dep.spill_level[a_id] == pytest.approx(19.70) and dep.spill_level[b_id] == pytest.approx(19.30)
    assert dep.dest[a_id] == b_id and dep.dest[b_id] == 0
    # By hand: 18 valley rows × 25 m² per cell; column 0 and the walls drain off the DEM.
    row_area = 18 * CELL ** 2
    assert dep.catchment_cells[a_id] * CELL ** 2 == pytest.approx(29 * row_area)  # columns 1–29
    assert dep.catchment_cells[b_id] * CELL ** 2 == pytest.approx(40 * row_area)  # columns 30–69
    excess = rain_excess_mm(100.0, 1.0, 1.0, 0.0)  # 100 mm = 0.1 m on every cell
    pond = fill_and_spill(dep, excess)
    inflow_a = 29 * row_area * 0.1  # 1305 m³
    capacity_a = 10 * row_area * (19.70 - 19.50)  # 900 m³
    overflow = inflow_a - capacity_a  # 405 m³ spill into B
    inflow_b = 40 * row_area * 0.1 + overflow  # 1800 + 405 = 2205 m³
    level_b = 18.30 + inflow_b / (10 * row_area)  # 18.79
    assert pond.level[a_id] == pytest.approx(19.70)
    assert pond.depth[5, 25] == pytest.approx(0.20, abs=1e-6)
    assert pond.level[b_id] == pytest.approx(level_b)
    assert pond.depth[5, 65] == pytest.approx(level_b - 18.30, abs=1e-5)  # 0.49 m
    assert pond.stored_m3 == pytest.approx(capacity_a + inflow_b)


def test_two_pits_below_the_upper_spill_nothing_reaches_the_lower_pit_from_it():
    dep = analyse(two_pits(), CELL)
    pond = fill_and_spill(dep, 50.0)  # A receives 652.5 m³ < 900 m³
    assert pond.depth[5, 25] == pytest.approx(29 * 18 * 25 * 0.05 / (10 * 18 * 25), abs=1e-6)  # 0.145 m
    assert pond.depth[5, 65] == pytest.approx(40 * 18 * 25 * 0.05 / (10 * 18 * 25), abs=1e-6)  # 0.2 m


def test_rain_below_the_drainage_capacity_ponds_nothing():
    dep = analyse(two_pits(), CELL)
    excess = rain_excess_mm(25.0, 1.5, 0.9, 20.0)  # 25 mm < 20 mm/h × 1.5 h
    assert excess == 0
    pond = fill_and_spill(dep, excess)
    assert float(np.nanmax(pond.depth)) == 0.0 and pond.stored_m3 == 0.0


def test_nodata_cells_are_outlets_and_stay_nodata():
    z = two_pits()
    z[1:-1, 0] = np.nan  # the west column is missing: rain there is not counted
    dep = analyse(z, CELL)
    pond = fill_and_spill(dep, 100.0)
    assert np.isnan(pond.depth[5, 0])
    # Column 1 now drains west into the hole: A gets 28 columns (1260 m³), spills 360 m³, B holds 2160 m³.
    assert dep.catchment_cells[dep.labels[5, 25]] == 28 * 18
    assert pond.depth[5, 65] == pytest.approx(2160 / (10 * 18 * 25), abs=1e-5)


def test_depth_at_takes_the_deepest_cell_around_a_point_and_none_outside():
    depth = np.zeros((5, 5), dtype=np.float32)
    depth[2, 3] = 0.4
    assert depth_at(depth, np.array([2, 2, 9]), np.array([2, 0, 9])) == [pytest.approx(0.4), 0.0, None]


@pytest.fixture(scope="module")
def flood_rules():
    return RuleBook.load().domain("flood")


def test_presets_come_from_the_rules_and_request_values_override_them(flood_rules):
    got = resolve_inputs(ScenarioRequest(preset="2021-07-18 短时强降雨"), flood_rules)
    assert (got["preset"], got["rain_mm"], got["duration_min"]) == ("cloudburst_2021", 63.3, 60)
    assert got["runoff_coefficient"] == flood_rules.value("scenario_runoff_coefficient")
    got = resolve_inputs(ScenarioRequest(preset="ampil_2018", runoff_coefficient=0.5), flood_rules)
    assert (got["rain_mm"], got["runoff_coefficient"]) == (147.9, 0.5)


@pytest.mark.parametrize("body, field", [
    (dict(rain_mm=-1, duration_min=60), "rain_mm"),
    (dict(rain_mm=50, duration_min=0), "duration_min"),
    (dict(rain_mm=50, duration_min=60, runoff_coefficient=1.2), "runoff_coefficient"),
    (dict(rain_mm=50, duration_min=60, runoff_coefficient=-0.1), "runoff_coefficient"),
    (dict(rain_mm=50, duration_min=60, drainage_capacity_mm_per_h=-5), "drainage_capacity_mm_per_h"),
    (dict(duration_min=60), "rain_mm"),
])
def test_bad_inputs_are_422_naming_the_field(flood_rules, body, field):
    with pytest.raises(Exception) as err:
        resolve_inputs(ScenarioRequest(**body), flood_rules)
    assert err.value.status == 422 and field in err.value.message_en


def test_unknown_preset_is_422(flood_rules):
    with pytest.raises(Exception) as err:
        resolve_inputs(ScenarioRequest(preset="1998 洪水"), flood_rules)
    assert (err.value.status, err.value.code) == (422, "unknown_preset")


# --- one live run on the demo DEM --------------------------------------------------------------------------
def _post(server, path, body, key=None):
    req = urllib.request.Request(server.url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **({"X-API-Key": key} if key else {})})
    try:
        with urllib.request.urlopen(req, timeout=180) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_api_2021_preset_closes_some_underpasses_and_not_others_and_the_geotiff_is_in_epsg4548(server, tmp_path):
    import rasterio

    status, body = _post(server, "/api/flood/scenarios", {"preset": "2021-07-18 短时强降雨"})
    assert status == 401 and body["code"] == "sign_in_required"
    key = server.key("flood")
    status, body = _post(server, "/api/flood/scenarios", {"rain_mm": -5, "duration_min": 60}, key)
    assert status == 422 and body["code"] == "bad_parameter"
    status, body = _post(server, "/api/flood/scenarios", {"preset": "2021-07-18 短时强降雨"}, key)
    assert status == 200, body
    underpasses = [p for p in body["points"] if p["kind"] == "underpass"]
    closing = [p for p in underpasses if p["closes"]]
    assert 0 < len(closing) < len(underpasses)
    assert all((p["predicted_depth_cm"] > p["closure_depth_cm"]) == p["closes"] for p in underpasses)
    assert {p["point_id"] for p in body["closures"]} >= {p["point_id"] for p in closing}
    assert body["method"] and body["assumptions"]
    west, south, east, north = body["bounds"]
    assert 116.5 < west < east < 117.0 and 39.3 < south < north < 39.7
    req = urllib.request.Request(server.url + body["raster_url"], headers={"X-API-Key": key})
    path = tmp_path / "depth.tif"
    path.write_bytes(urllib.request.urlopen(req, timeout=60).read())
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 4548 and src.nodata is not None
        assert src.res == (5.0, 5.0)
        assert float(src.read(1).max()) * 100 >= max(p["predicted_depth_cm"] for p in closing)
    req = urllib.request.Request(server.url + body["image_url"], headers={"X-API-Key": key})
    assert urllib.request.urlopen(req, timeout=60).read()[:8] == b"\x89PNG\r\n\x1a\n"
