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


def balance(pond, z) -> None:
    """held (depths in the raster) + lost = rain excess on the DEM, and the total is the excess × valid area."""
    held = float(np.nansum(pond.depth.astype(np.float64))) * CELL ** 2
    assert pond.rain_volume_m3 == pytest.approx(np.isfinite(z).sum() * CELL ** 2 * pond.excess_mm / 1000, rel=1e-12)
    assert held == pytest.approx(pond.stored_m3, rel=1e-6, abs=1e-6)
    assert pond.stored_m3 + pond.lost_m3 == pytest.approx(pond.rain_volume_m3, rel=1e-12, abs=1e-9)


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
    balance(pond, z)


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
    balance(pond, z)


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
    balance(pond, z)
    assert pond.lost_m3 == pytest.approx(np.isfinite(z).sum() * CELL ** 2 * 0.1 - capacity_a - inflow_b)


def test_two_pits_below_the_upper_spill_nothing_reaches_the_lower_pit_from_it():
    dep = analyse(two_pits(), CELL)
    pond = fill_and_spill(dep, 50.0)  # A receives 652.5 m³ < 900 m³
    assert pond.depth[5, 25] == pytest.approx(29 * 18 * 25 * 0.05 / (10 * 18 * 25), abs=1e-6)  # 0.145 m
    assert pond.depth[5, 65] == pytest.approx(40 * 18 * 25 * 0.05 / (10 * 18 * 25), abs=1e-6)  # 0.2 m
    balance(pond, two_pits())


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
    balance(pond, z)


def equal_level_pits():
    """The reviewer's case (5 × 9, walls 20): row 2 is edge, pit A (floor 0), shared rim R (8), pit B (3 cells,
    floor 5), B's outlet sill C (8), then down to the east edge. A and B both spill at 8."""
    z = np.full((5, 9), 20.0)
    z[2, 1] = 0.0
    z[2, 2] = 8.0
    z[2, 3:6] = 5.0
    z[2, 6] = 8.0
    z[2, 7], z[2, 8] = 4.0, 0.0
    return z


def test_two_pits_at_one_spill_level_the_overflow_of_one_fills_the_other_and_the_balance_closes():
    z = equal_level_pits()
    dep = analyse(z, 1.0)
    a, b = dep.labels[2, 1], dep.labels[2, 4]
    assert dep.spill_level[a] == dep.spill_level[b] == 8.0
    # Route by hand from the analysed catchments (1 m cells, 1.2 m excess).
    cat_a, cat_b = dep.catchment_cells[a], dep.catchment_cells[b]
    assert (dep.capacity[a], dep.capacity[b]) == (8.0, 9.0)
    pond = fill_and_spill(dep, 1200.0)
    into_b = cat_b * 1.2
    over_b = max(into_b - 9.0, 0.0)
    into_a = cat_a * 1.2 + over_b  # B's overflow at level 8 stands on the shared rim and fills A
    assert into_a >= 8.0  # the reviewer's numbers: 6 × 1.2 + 1.8 = 9.0
    assert pond.level[a] == 8.0 and pond.level[b] == 8.0  # not 7.2
    assert pond.depth[2, 1] == pytest.approx(8.0) and pond.depth[2, 4] == pytest.approx(3.0)
    assert pond.stored_m3 == pytest.approx(17.0)
    held = float(np.nansum(pond.depth.astype(np.float64)))
    assert held + pond.lost_m3 == pytest.approx(45 * 1.2, rel=1e-12)  # exactly the rain excess volume


def test_spill_graph_cycles_at_one_level_are_broken_and_the_order_puts_sources_first():
    from gis_service.flood.scenarios import _break_cycles, spill_order

    dest = np.array([0, 2, 1, 1, 3])  # 1 ⇄ 2 (equal levels), 3 → 1, 4 → 3
    _break_cycles(dest, {1: np.array([2, 0]), 2: np.array([1, 0]), 3: np.array([1]), 4: np.array([3])})
    assert list(dest) == [0, 0, 1, 1, 3]  # the lowest id of the cycle leaves it through its next outlet
    order = list(spill_order(dest))
    assert sorted(order) == [1, 2, 3, 4]
    assert all(order.index(d) < order.index(dest[d]) for d in range(1, 5) if dest[d] > 0)


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
    status = json.loads(urllib.request.urlopen(urllib.request.Request(
        server.url + "/api/flood/status", headers={"X-API-Key": key}), timeout=60).read())
    where = {p["point_id"]: (p["lon"], p["lat"]) for p in status["points"]}
    places = [where[p["point_id"]] for p in body["closures"]]
    assert len(places) == len(set(places))  # one closure per place: no point counted twice
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


def test_a_second_scenario_in_the_same_process_is_refused_with_429_while_one_computes(flood_rules, tmp_path):
    import threading
    from types import SimpleNamespace

    from gis_service.errors import GisError
    from gis_service.flood.scenarios import ScenarioService

    service = ScenarioService(SimpleNamespace(settings=SimpleNamespace(var_dir=tmp_path), rules=flood_rules))
    entered, release = threading.Event(), threading.Event()

    def slow_run(inputs, who):  # stands in for the computation
        entered.set()
        release.wait(60)
        return {"ran": inputs["rain_mm"]}

    service._run = slow_run
    results = []
    first = threading.Thread(target=lambda: results.append(service.run(ScenarioRequest(rain_mm=50, duration_min=60), None)))
    first.start()
    assert entered.wait(60)
    with pytest.raises(GisError) as err:
        service.run(ScenarioRequest(rain_mm=60, duration_min=60), None)
    assert (err.value.status, err.value.code) == (429, "scenario_busy")
    assert "重试" in err.value.message_zh and "retry" in err.value.message_en
    release.set()
    first.join(60)
    assert results == [{"ran": 50}]
    assert service.run(ScenarioRequest(rain_mm=70, duration_min=60), None) == {"ran": 70}  # free again


def test_api_scenarios_only_for_the_flood_and_admin_roles(server):
    for role in ("planner", "environment", "rural"):
        status, body = _post(server, "/api/flood/scenarios", {"rain_mm": -5, "duration_min": 60}, server.key(role))
        assert (status, body["code"]) == (403, "forbidden"), role
        req = urllib.request.Request(server.url + "/api/flood/scenarios/" + "0" * 32 + "/depth.tif",
                                     headers={"X-API-Key": server.key(role)})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code == 403
    status, body = _post(server, "/api/flood/scenarios", {"rain_mm": -5, "duration_min": 60}, server.key("admin"))
    assert (status, body["code"]) == (422, "bad_parameter")  # admin passes the role check
    req = urllib.request.Request(server.url + "/api/flood/scenarios/" + "0" * 32 + "/depth.png",
                                 headers={"X-API-Key": server.key("flood")})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 404 and json.loads(err.value.read())["code"] == "not_found"


def test_cleanup_survives_files_vanishing_under_another_worker_and_removes_stale_temporaries(
        flood_rules, tmp_path, monkeypatch):
    import os
    import pathlib
    import time
    from types import SimpleNamespace

    import rasterio.transform
    from rasterio.crs import CRS

    from gis_service.errors import GisError
    from gis_service.flood.scenarios import STALE_TMP_S, ScenarioService

    service = ScenarioService(SimpleNamespace(settings=SimpleNamespace(var_dir=tmp_path), rules=flood_rules))
    keep = flood_rules.value("scenario_keep")
    folder = tmp_path / "flood_scenarios"
    folder.mkdir()
    now = time.time()
    old = [f"{i:032x}" for i in range(1, keep + 3)]  # keep + 2 earlier scenarios, oldest first
    for age, sid in zip(range(len(old), 0, -1), old):
        for suffix in (".tif", ".png"):
            (folder / f"{sid}{suffix}").write_bytes(b"x")
            os.utime(folder / f"{sid}{suffix}", (now - 100 * age, now - 100 * age))
    ghost = folder / ("f" * 32 + ".tif")  # listed, then removed by another worker before stat
    ghost.write_bytes(b"x")
    dead, fresh = folder / ".dead.tif.tmp", folder / ".fresh.png.tmp"
    dead.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(dead, (now - STALE_TMP_S - 60, now - STALE_TMP_S - 60))
    real_stat = pathlib.Path.stat

    def racing_stat(self, *a, **k):
        if self.name == ghost.name:
            raise FileNotFoundError(self)
        return real_stat(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "stat", racing_stat)
    depth = np.zeros((8, 8), dtype=np.float32)
    depth[3, 3] = 0.5
    transform = rasterio.transform.from_origin(500000.0, 4380000.0, 5.0, 5.0)
    service._write("e" * 32, depth, transform, CRS.from_epsg(4548))
    monkeypatch.undo()
    kept = {p.stem for p in folder.glob("*.tif")} - {ghost.stem}
    assert kept == {"e" * 32, *old[-(keep - 1):]}  # the newest scenario_keep scenarios
    assert {p.stem for p in folder.glob("*.png")} == kept
    assert not dead.exists() and fresh.exists()
    with pytest.raises(GisError) as err:
        service.open(old[0], ".tif")  # removed by the cleanup: 404, not 500
    assert err.value.status == 404
    with service.open("e" * 32, ".tif") as fh:  # an open download survives another worker's cleanup
        (folder / ("e" * 32 + ".tif")).unlink()
        assert fh.read(4) in (b"II*\x00", b"MM\x00*")
