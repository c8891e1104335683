"""/api/flood over a live server: the 30 cm rule through the API, idempotent reports, snapping, who may do
what, and every refusal as a {code, message} JSON (never a 500). Uses the underpass points UP-*; the load
test (test_load.py) uses the waterlogging points WL-*, so the two do not disturb each other."""

import datetime as dt
import re
import uuid

import httpx
import pytest

from gis_service.rules import RuleBook

RULES = RuleBook.load().domain("flood")


def url(server, path):
    return f"{server.url}/api/flood{path}"


def ago(minutes: float) -> str:
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=minutes)).isoformat()


def post(server, body, role="flood"):
    headers = {"X-API-Key": server.key(role)} if role else {}
    return httpx.post(url(server, "/reports"), json=body, headers=headers, timeout=30)


def report(point_id, depth, observed_at, **extra):
    return {"report_id": uuid.uuid4().hex, "point_id": point_id, "depth_cm": depth, "observed_at": observed_at,
            "reporter": "测试员", **extra}


def status_of(server, point_id, role="planner"):
    r = httpx.get(url(server, "/status"), headers={"X-API-Key": server.key(role)}, timeout=30)
    assert r.status_code == 200, r.text
    return next(p for p in r.json()["points"] if p["point_id"] == point_id)


def error(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"code", "message"} and " / " in body["message"]
    return body


def test_30cm_stays_open_and_30_1cm_closes_through_the_api(server):
    assert post(server, report("UP-010", 30.0, ago(30))).status_code == 201
    p = status_of(server, "UP-010")
    assert p["status"] == "watch" and p["depth_cm"] == 30.0 and p["closure_task"] is None
    assert post(server, report("UP-010", 30.1, ago(20))).status_code == 201
    p = status_of(server, "UP-010")
    assert p["status"] == "closed" and p["depth_cm"] == 30.1
    assert p["closure_task"]["unit"] == "市公安局（交警）" and "4283" in p["closure_task"]["clause"]
    closures = httpx.get(url(server, "/closures"), headers={"X-API-Key": server.key("flood")}).json()["closures"]
    assert "UP-010" in {c["point_id"] for c in closures}
    assert all(c["district"] and c["responsible_unit"] for c in closures)


def test_a_closed_point_reopens_below_the_hysteresis_level_and_since_follows(server):
    reopen = RULES.value("closure_depth_cm") - RULES.value("reopen_hysteresis_cm")
    t_close = ago(50)
    for depth, when in ((40, t_close), (reopen + 0.5, ago(45))):
        assert post(server, report("UP-011", depth, when)).status_code == 201
    p = status_of(server, "UP-011")
    assert p["status"] == "closed" and p["since"] == dt.datetime.fromisoformat(t_close).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    assert post(server, report("UP-011", reopen, ago(40))).status_code == 201
    assert status_of(server, "UP-011")["status"] in ("watch", "normal")


def test_out_of_order_reports_are_ordered_by_observed_at(server):
    assert post(server, report("UP-012", 50, ago(10))).status_code == 201
    assert post(server, report("UP-012", 5, ago(70))).status_code == 201  # older, arrives later
    p = status_of(server, "UP-012")
    assert p["depth_cm"] == 50 and p["status"] == "closed"
    history = httpx.get(url(server, "/points/UP-012/history"), headers={"X-API-Key": server.key("flood")}).json()
    assert [r["depth_cm"] for r in history["reports"]] == [5, 50]
    assert [r["status"] for r in history["reports"]] == ["normal", "closed"]


def test_offsets_are_converted_to_utc(server):
    body = report("UP-013", 3, "2026-01-01T08:00:00+08:00")
    r = post(server, body)
    assert r.status_code == 201 and r.json()["observed_at"] == "2026-01-01T00:00:00.000Z"


def test_retry_with_the_same_report_id_is_idempotent_and_other_content_conflicts(server):
    body = report("UP-014", 12, ago(5))
    first = post(server, body)
    again = post(server, body)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["duplicate"] is True and again.json()["received_at"] == first.json()["received_at"]
    error(post(server, {**body, "depth_cm": 13}), 409)
    history = httpx.get(url(server, "/points/UP-014/history"), headers={"X-API-Key": server.key("admin")}).json()
    assert [r["report_id"] for r in history["reports"]].count(body["report_id"]) == 1


def test_report_by_location_snaps_to_the_nearest_point_within_the_radius(server):
    p = status_of(server, "UP-015")
    r = post(server, {**report(None, 2, ago(3)), "x": p["lon"] + 0.0003, "y": p["lat"], "coord_sys": "cgcs2000"})
    assert r.status_code == 201, r.text
    assert r.json()["point_id"] == "UP-015" and r.json()["location"]["snap_distance_m"] < RULES.value("snap_radius_m")
    far = post(server, {**report(None, 2, ago(3)), "x": p["lon"], "y": p["lat"] + 0.01, "coord_sys": "cgcs2000"})
    assert error(far, 422)["code"] == "no_point_nearby" and "米" in far.json()["message"]
    assert re.search(r"最近的监测点在 [\d,]+\.\d 米外", far.json()["message"]), far.json()["message"]


def test_reporter_names_only_for_flood_and_admin(server):
    assert post(server, report("UP-016", 1, ago(2))).status_code == 201
    for role, shown in (("flood", True), ("admin", True), ("planner", False), ("rural", False)):
        h = httpx.get(url(server, "/points/UP-016/history"), headers={"X-API-Key": server.key(role)}).json()
        assert ("reporter" in h["reports"][0]) is shown, role


@pytest.mark.parametrize("change, code", [
    ({"depth_cm": -0.1}, "bad_depth"),
    ({"depth_cm": RULES.value("absurd_depth_cm") + 0.1}, "absurd_depth"),
    ({"depth_cm": "deep"}, "bad_parameter"),
    ({"depth_cm": True}, "bad_parameter"),
    ({"depth_cm": None}, "bad_parameter"),
    ({"point_id": "UP-999"}, "unknown_point"),
    ({"point_id": None}, "missing_point"),
    ({"observed_at": "2099-01-01T00:00:00Z"}, "observed_at_in_future"),
    ({"observed_at": "gestern"}, "bad_observed_at"),
    ({"observed_at": "9999-12-31T23:59:59-14:00"}, "bad_observed_at"),  # beyond datetime's range in UTC
    ({"observed_at": "2000-01-01T00:00:00+23:59"}, "bad_observed_at"),  # 1999-12-31T00:01Z
    ({"observed_at": "2026-07-18 15:30"}, "observed_at_no_offset"),
    ({"observed_at": 1700000000}, "bad_parameter"),
    ({"report_id": ""}, "bad_parameter"),
])
def test_bad_reports_are_422_with_code_and_message(server, change, code):
    assert error(post(server, {**report("UP-017", 5, ago(1)), **change}), 422)["code"] == code


def test_a_time_slightly_ahead_within_the_clock_skew_is_accepted(server):
    ahead = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=RULES.value("clock_skew_s") / 2)).isoformat()
    assert post(server, report("UP-017", 5, ahead)).status_code == 201


def test_who_may_post_and_read(server):
    body = report("UP-018", 5, ago(1))
    error(post(server, body, role=None), 401)
    for role in ("planner", "rural", "environment"):
        error(post(server, body, role=role), 403)
    r = httpx.post(url(server, "/reports"), json=body, headers={"X-API-Key": "wrong"})
    error(r, 401)
    for path in ("/status", "/closures", "/points/UP-018/history"):
        error(httpx.get(url(server, path)), 401)
    error(httpx.get(url(server, "/points/XX-1/history"), headers={"X-API-Key": server.key("flood")}), 404)


def test_status_lists_every_monitored_point_with_its_context(server):
    r = httpx.get(url(server, "/status"), headers={"X-API-Key": server.key("environment")})
    body = r.json()
    points = body["points"]
    ids = [p["point_id"] for p in points]
    assert len(ids) == len(set(ids)) and any(i.startswith("UP-") for i in ids) and any(i.startswith("WL-") for i in ids)
    keys = {"point_id", "kind", "name", "district", "lon", "lat", "depth_cm", "status", "status_zh", "since",
            "observed_at", "threshold_cm", "responsible_unit", "nearest_pumping_station", "closure_task"}
    for p in points:
        assert keys <= set(p)
        assert p["kind"] in ("underpass", "waterlogging") and p["status"] in ("normal", "watch", "closed", "unknown")
        assert p["nearest_pumping_station"]["owner"] and p["nearest_pumping_station"]["distance_m"] >= 0
        assert (p["closure_task"] is not None) == (p["status"] == "closed")
        assert "reporter" not in p
    assert body["generated_at"].endswith("Z")
    assert {r["id"] for r in body["rules_applied"]} >= {"closure_depth_cm", "reopen_hysteresis_cm", "watch_depth_cm"}


def test_responsibilities_of_channels_gates_and_stations(server):
    error(httpx.get(url(server, "/responsibilities")), 401)
    body = httpx.get(url(server, "/responsibilities"), headers={"X-API-Key": server.key("planner")}).json()
    gates = [f for f in body["facilities"] if f["kind"] == "gate"]
    assert gates and all(f["unit"] and f["clauses"] for f in body["facilities"])
    for g in gates:
        if g["channel"] in ("大皮营引渠", "八干渠"):
            assert g["unit"] == "市住建局"
        elif g["channel"] in ("六干渠", "九干渠", "五干渠", "龙河"):
            assert g["supervisor"] == "市水利局" and g["district"] in g["unit"] or g["caveat"]
    assert set(body["district_duties"]) >= {"广阳区", "安次区", "廊坊开发区"}


def test_reporter_names_shown_in_history_and_duplicate_replies_are_logged_as_personal_data(server):
    def entries():
        return server.access_entries()

    body = report("UP-014", 3, ago(4), reporter="李四")
    assert post(server, body).status_code == 201
    before = len(entries())
    h = httpx.get(url(server, "/points/UP-014/history"), headers={"X-API-Key": server.key("flood")}, timeout=30)
    assert h.status_code == 200
    named = sum(1 for r in h.json()["reports"] if r.get("reporter"))
    after = entries()
    assert len(after) == before + 1
    line = after[-1]
    assert (line["collection"], line["fields"], line["count"]) == ("flood_reports", ["reporter"], named)
    assert (line["who"], line["role"]) == ("test-flood", "flood") and "/points/UP-014/history" in line["request"]
    # a planner sees no names: nothing logged
    httpx.get(url(server, "/points/UP-014/history"), headers={"X-API-Key": server.key("planner")}, timeout=30)
    assert len(entries()) == before + 1
    # a duplicate retry answers with the stored report and its reporter: logged (the first answer only
    # echoes what the caller sent)
    again = post(server, body, role="admin")
    assert again.status_code == 200 and again.json()["duplicate"] and again.json()["reporter"] == "李四"
    last = entries()
    assert len(last) == before + 2
    assert (last[-1]["collection"], last[-1]["fields"], last[-1]["count"], last[-1]["role"]) == (
        "flood_reports", ["reporter"], 1, "admin")
