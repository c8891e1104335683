"""The status of a point from its readings: the 30 cm closure rule (“超过30厘米”, L4283), the watch class and the
reopening hysteresis, on hand-made sequences; boundary cases generated from the rule table plus cases written
by hand from the seed text (so that a wrong table cannot pass its own tests)."""

import geopandas as gpd
import pytest
import shapely

from gis_service import crs
from gis_service.flood import analysis
from gis_service.flood.analysis import Thresholds, classify
from gis_service.rules import RuleBook

RULES = RuleBook.load().domain("flood")
CLOSE = float(RULES.value("closure_depth_cm"))
WATCH = float(RULES.value("watch_depth_cm"))
REOPEN = CLOSE - float(RULES.value("reopen_hysteresis_cm"))
T = Thresholds(closure_cm=CLOSE, reopen_cm=REOPEN, watch_cm=WATCH)


def statuses(depths, t=T):
    return [s.status for s in classify([(f"t{i:03d}", d) for i, d in enumerate(depths)], t)]


# --- by hand, from the seed text ------------------------------------------------------------------------
def test_the_table_says_what_the_plan_says():
    assert RULES.value("closure_depth_cm") == 30 and RULES.rule("closure_depth_cm").line == 4283
    assert RULES.value("closure_unit") == "市公安局（交警）"
    assert RULES.value("channel_units") == {"大皮营引渠": "市住建局", "八干渠": "市住建局"}
    assert set(RULES.value("district_gate_channels")) == {"六干渠", "九干渠", "五干渠", "龙河"}
    assert RULES.value("gate_supervisor") == "市水利局"
    assert RULES.value("point_threshold_overrides") == []


def test_underpass_stays_open_at_exactly_30cm_and_closes_at_30_1():
    hand = Thresholds(closure_cm=30, reopen_cm=25, watch_cm=15)
    assert statuses([30.0], hand) == ["watch"]
    assert statuses([30.1], hand) == ["closed"]


def test_watch_from_15cm_included_and_normal_at_14_9():
    hand = Thresholds(closure_cm=30, reopen_cm=25, watch_cm=15)
    assert statuses([15.0], hand) == ["watch"]
    assert statuses([14.9], hand) == ["normal"]
    assert statuses([0], hand) == ["normal"]


# --- generated from the rule table --------------------------------------------------------------------------
def test_closure_boundary_from_the_table():
    assert statuses([CLOSE]) == ["watch"]
    assert statuses([CLOSE + 0.1]) == ["closed"]
    assert statuses([WATCH]) == ["watch"]
    assert statuses([WATCH - 0.1]) == ["normal"]


def test_a_closed_point_reopens_only_at_or_below_the_hysteresis_level():
    assert statuses([CLOSE + 1, CLOSE, REOPEN + 0.1, REOPEN]) == ["closed", "closed", "closed", "watch"]
    assert statuses([CLOSE + 1, REOPEN + 0.1, CLOSE + 5, WATCH - 1]) == ["closed", "closed", "closed", "normal"]


def test_without_hysteresis_a_point_reopens_at_the_closure_depth():
    t = Thresholds(closure_cm=CLOSE, reopen_cm=CLOSE, watch_cm=WATCH)
    assert statuses([CLOSE + 1, CLOSE], t) == ["closed", "watch"]


def test_hysteresis_only_keeps_closed_points_closed():
    assert statuses([REOPEN + 1]) == ["watch"]  # never closed: the band means nothing


def test_since_is_when_the_current_status_began():
    steps = classify([("a", 1), ("b", WATCH), ("c", WATCH + 1), ("d", CLOSE + 1), ("e", REOPEN + 1), ("f", 0)], T)
    assert [(s.status, s.since) for s in steps] == [
        ("normal", "a"), ("watch", "b"), ("watch", "b"), ("closed", "d"), ("closed", "d"), ("normal", "f")]


def test_inconsistent_thresholds_are_refused():
    with pytest.raises(ValueError):
        Thresholds(closure_cm=30, reopen_cm=31, watch_cm=15)


# --- geometry -----------------------------------------------------------------------------------------------
def _points(xy):
    return gpd.GeoDataFrame({"point_id": [f"P{i}" for i in range(len(xy))]},
                            geometry=[shapely.Point(p) for p in xy], crs=crs.METRIC_CRS)


def test_snap_takes_the_nearest_point_within_the_radius():
    pts = _points([(500000, 4370000), (500100, 4370000)])
    assert analysis.snap(shapely.Point(500049, 4370000), pts, 50) == analysis.Snap(0, 49.0)
    assert analysis.snap(shapely.Point(500150, 4370000), pts, 50) == analysis.Snap(1, 50.0)  # 50 m included
    far = analysis.snap(shapely.Point(500000, 4370300), pts, 50)
    assert far.index == -1 and far.distance_m == pytest.approx(300)


def test_snap_ties_go_to_the_first_row_the_underpass():
    pts = _points([(500000, 4370000), (500000, 4370000)])
    assert analysis.snap(shapely.Point(500010, 4370000), pts, 50).index == 0


def test_snap_refuses_degrees():
    pts = _points([(116.7, 39.5)]).set_crs(crs.STORAGE_CRS, allow_override=True)
    with pytest.raises(Exception):
        analysis.snap(shapely.Point(116.7, 39.5), pts, 50)


def test_nearest_station_and_its_distance():
    pts = _points([(500000, 4370000), (501000, 4370000)])
    stations = _points([(500000, 4370300), (501000, 4369000)])
    near = analysis.nearest_each(pts, stations)
    assert [(n.index, round(n.distance_m)) for n in near] == [(0, 300), (1, 1000)]


# --- responsibilities (L4235, L4267, L4233, L4251) ------------------------------------------------------------
def _frame(rows, geoms):
    return gpd.GeoDataFrame(rows, geometry=geoms, crs=crs.METRIC_CRS)


def test_gates_and_stations_get_their_units_from_the_plan():
    west = shapely.box(500000, 4370000, 501000, 4371000)
    east = shapely.box(501000, 4370000, 502000, 4371000)
    districts = _frame({"name": ["广阳区", "安次区"]}, [west, east])
    channels = _frame({"name": ["八干渠", "六干渠", "无名沟"]}, [shapely.LineString([(500100, 4370500), (501900, 4370500)])] * 3)
    gates = _frame({"name": ["G1", "G2", "G3", "G4"], "channel": ["八干渠", "六干渠", "六干渠", "六干渠"]},
                   [shapely.Point(500500, 4370500), shapely.Point(500500, 4370500), shapely.Point(501500, 4370500),
                    shapely.Point(503000, 4370500)])
    stations = _frame({"name": ["S1", "S2"], "owner": ["市住建局（排水管理处）", "安次区水务局"]},
                      [shapely.Point(500500, 4370100), shapely.Point(501500, 4370100)])
    duties = analysis.responsibilities(
        channels, gates, stations, districts, channel_units=RULES.value("channel_units"),
        district_gate_channels=RULES.value("district_gate_channels"), gate_supervisor=RULES.value("gate_supervisor"),
        city_owner=RULES.value("pumping_station_owner_city"), governments=RULES.value("district_governments"))
    by_name = {d.name: d for d in duties}
    assert by_name["八干渠"].unit == "市住建局" and "无名沟" not in by_name
    assert (by_name["G1"].unit, by_name["G1"].supervisor) == ("市住建局", None)
    assert (by_name["G2"].unit, by_name["G2"].supervisor) == ("广阳区政府", "市水利局")
    assert (by_name["G3"].unit, by_name["G3"].district) == ("安次区政府", "安次区")
    assert by_name["G4"].district == "安次区" and "1,000 米" in by_name["G4"].caveat  # outside: nearest, said so
    assert by_name["S1"].unit == "市住建局"
    assert by_name["S2"].unit == "安次区政府"


def test_a_per_point_override_changes_only_that_point(tmp_path):
    from types import SimpleNamespace

    from gis_service.flood.reports import FloodReports
    from gis_service.store import SQLiteRecordStore

    local = tmp_path / "rules.local.toml"
    local.write_text('[flood]\npoint_threshold_overrides = [{ point_id = "UP-001", closure_depth_cm = 20 }]\n',
                     encoding="utf-8")
    rules = RuleBook.load(override_path=local).domain("flood")
    service = FloodReports(SimpleNamespace(rules=rules, records=SQLiteRecordStore(tmp_path / "r.sqlite")))
    t = service.thresholds("UP-001")
    assert (t.closure_cm, t.reopen_cm) == (20, 20 - RULES.value("reopen_hysteresis_cm"))
    assert service.thresholds("UP-002").closure_cm == CLOSE
    assert [s.status for s in classify([("a", 20.0), ("b", 20.1)], t)] == ["watch", "closed"]


@pytest.mark.parametrize("override", [
    '[flood]\npoint_threshold_overrides = [{ point_id = "UP-001", closure_depth_cm = 0 }]\n',
    '[flood]\npoint_threshold_overrides = [{ point_id = "UP-001", depth = 20 }]\n',
    '[flood]\nwatch_depth_cm = 30\n',
])
def test_inconsistent_local_rules_stop_start_up_naming_the_key(tmp_path, override):
    from gis_service.errors import RuleFileError
    from gis_service.flood.reports import check_rules

    local = tmp_path / "rules.local.toml"
    local.write_text(override, encoding="utf-8")
    with pytest.raises(RuleFileError, match="flood"):
        check_rules(RuleBook.load(override_path=local).domain("flood"))


@pytest.mark.parametrize("text", ["9999-12-31T23:59:59-14:00", "2000-01-01T00:00:00+23:59", "1999-12-31T23:59:59Z"])
def test_out_of_range_and_pre_2000_utc_times_are_422_not_500(text):
    import datetime as dt

    from gis_service.errors import GisError
    from gis_service.flood.reports import parse_observed_at

    with pytest.raises(GisError) as e:
        parse_observed_at(text, dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), 120)
    assert e.value.status == 422 and e.value.code == "bad_observed_at"


def test_a_time_early_on_1_january_2000_local_but_2000_in_utc_is_accepted():
    import datetime as dt

    from gis_service.flood.reports import parse_observed_at

    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert parse_observed_at("2000-01-01T00:00:00-01:00", now, 120) == "2000-01-01T01:00:00.000Z"


def test_status_and_history_reads_proceed_while_another_connection_holds_the_write_lock(tmp_path):
    import sqlite3
    from types import SimpleNamespace

    from gis_service.flood.reports import REPORTS, FloodReports
    from gis_service.store import SQLiteRecordStore

    path = tmp_path / "records.sqlite"
    store = SQLiteRecordStore(path)
    service = FloodReports(SimpleNamespace(rules=RuleBook.load().domain("flood"), records=store))
    row = {"report_id": "r1", "point_id": "UP-001", "depth_cm": 31.0, "observed_at": "2026-01-01T00:00:00.000Z",
           "received_at": "2026-01-01T00:00:01.000Z", "reporter": None, "author": "t", "author_role": "flood"}
    with store.transaction() as tx:
        tx.insert(REPORTS, row)
    store._connection().execute("PRAGMA busy_timeout = 1000")  # a read that waited would fail within 1 s
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another worker in the middle of a write
    writer.execute("INSERT INTO flood_reports (report_id, point_id, depth_cm, observed_at, received_at, author, "
                   "author_role) VALUES ('r2', 'UP-001', 5, '2026-01-01T01:00:00.000Z', 'x', 't', 'flood')")
    try:
        assert service._sync() == 1  # the committed report only, read without the write lock
        assert service._steps["UP-001"][-1].status == "closed"
        with store.reading() as tx:  # the history's read path
            assert [r["report_id"] for r in tx.find(REPORTS, {"point_id": "UP-001"})] == ["r1"]
    finally:
        writer.execute("COMMIT")
        writer.close()
    assert service._sync() == 2 and service._steps["UP-001"][-1].status == "normal"


def _flood_context(tmp_path, catalog, store, override: str):
    from gis_service.config import Settings
    from gis_service.domains import DomainContext
    from gis_service.privacy import AccessLog
    from gis_service.store import SQLiteRecordStore

    local = tmp_path / "rules.local.toml"
    local.write_text(override, encoding="utf-8")
    return DomainContext(settings=Settings.from_env(var_dir=tmp_path), catalog=catalog, store=store,
                         records=SQLiteRecordStore(tmp_path / "records.sqlite"),
                         rules=RuleBook.load(override_path=local).domain("flood"),
                         access_log=AccessLog(tmp_path / "access.log"))


def test_an_override_naming_an_unknown_point_stops_start_up_naming_the_key(tmp_path, catalog, store):
    from gis_service.errors import RuleFileError
    from gis_service.flood.reports import FloodReports

    ctx = _flood_context(tmp_path, catalog, store, '[flood]\npoint_threshold_overrides = ['
                         '{ point_id = "UP-001", closure_depth_cm = 25 }, { point_id = "UP-0O2", closure_depth_cm = 25 }]\n')
    with pytest.raises(RuleFileError) as err:
        FloodReports(ctx).check_override_points()
    assert err.value.key == "flood.point_threshold_overrides[1]" and "UP-0O2" in err.value.message_en
    ok = _flood_context(tmp_path, catalog, store,
                        '[flood]\npoint_threshold_overrides = [{ point_id = "UP-001", closure_depth_cm = 25 }]\n')
    FloodReports(ok).check_override_points()  # a known point passes


def test_overrides_are_only_warned_about_when_the_point_layers_are_not_built(tmp_path, catalog, store, caplog):
    from gis_service.errors import GisError
    from gis_service.flood.reports import FloodReports

    ctx = _flood_context(tmp_path, catalog, store,
                         '[flood]\npoint_threshold_overrides = [{ point_id = "UP-999", closure_depth_cm = 25 }]\n')

    def not_built(layer_id, who=None):
        raise GisError("layer_not_available", "未构建", f"layer '{layer_id}' is not built", 503)

    ctx.layer = not_built
    with caplog.at_level("WARNING", logger="gis_service"):
        FloodReports(ctx).check_override_points()
    assert "point_threshold_overrides not checked" in caplog.text


def test_no_waterlogging_point_sits_on_an_underpass(catalog, store):
    """Each place is monitored once: an underpass is UP-*, so no WL-* point may coincide with one (it would be
    a second closure for one place and, being the second row, never the target of a report by location)."""
    from gis_service.crs import METRIC_CRS

    unders = store.read_frame(catalog.get("underpasses")).to_crs(METRIC_CRS)
    points = store.read_frame(catalog.get("waterlogging_points")).to_crs(METRIC_CRS)
    assert len(points) > 0 and points["point_id"].is_unique
    radius = RULES.value("snap_radius_m")
    nearest = [float(unders.distance(g).min()) for g in points.geometry]
    assert min(nearest) > 2 * radius, dict(zip(points["point_id"], nearest))
    assert {"银河大桥北下坡", "爱民道积水点", "建设路积水点", "广阳道积水点", "永兴路积水点", "迎春路积水点"} <= set(points["name"])
