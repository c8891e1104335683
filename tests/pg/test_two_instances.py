"""Two service processes over one PostGIS database (issue #10): concurrent flood reports, land edits and
control-zone edits sent to both — nothing lost, nothing duplicated, both answer the same state; a third
process killed while it writes loses nothing it had acknowledged. The processes share no file: each has its
own var directory, and their layers directory has no land register (they read the database's)."""

import datetime as dt
import os
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import shapely.geometry

from gis_service.config import REPO_ROOT
from tests.conftest import LiveServer, fresh_database, live_server
from tests.land.conftest import plots_db

LON, LAT = 116.70, 39.50


@pytest.fixture(scope="module")
def database(pg_loaded):
    return fresh_database(pg_loaded, "two_instances")


def layers_without_register(root):
    """The layer definitions and files, linked, minus the land register file: the database holds it."""
    for source in (REPO_ROOT / "layers").rglob("*"):
        target = root / source.relative_to(REPO_ROOT / "layers")
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif source.name != "register.sqlite":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
    return root


@pytest.fixture(scope="module")
def pair(database, tmp_path_factory):
    """Two servers, each with its own var directory (nothing shared on disk), over one database."""
    mp = pytest.MonkeyPatch()
    mp.setenv("GIS_LAYERS_DIR", str(layers_without_register(tmp_path_factory.mktemp("layers"))))
    try:
        with live_server(tmp_path_factory.mktemp("a"), database_url=database) as (_, url_a), \
                live_server(tmp_path_factory.mktemp("b"), database_url=database) as (_, url_b):
            a = LiveServer(url_a, tmp_path_factory.mktemp("a-client"), database)
            yield a, LiveServer(url_b, a.var_dir, database)  # one key store: a key made for A works on B
    finally:
        mp.undo()


def ago(minutes: float) -> str:
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=minutes)).isoformat()


def post_report(server, key, body):
    return httpx.post(f"{server.url}/api/flood/reports", json=body, headers={"X-API-Key": key}, timeout=60)


def history(server, key, point_id):
    r = httpx.get(f"{server.url}/api/flood/points/{point_id}/history", headers={"X-API-Key": key}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def point_ids(server, key, prefix, n):
    r = httpx.get(f"{server.url}/api/flood/status", headers={"X-API-Key": key}, timeout=60)
    ids = sorted(p["point_id"] for p in r.json()["points"] if p["point_id"].startswith(prefix))
    return ids[-n:]


def test_concurrent_reports_on_two_instances_are_all_kept_once_and_both_agree(pair):
    a, b = pair
    key = a.key("flood")
    # made through A's LiveServer, stored in the database: B accepts it too (one key store)
    points = point_ids(a, key, "WL-", 3)
    bodies = [{"report_id": uuid.uuid4().hex, "point_id": points[i % 3], "depth_cm": float(i % 50),
               "observed_at": ago(120 - i * 0.5), "reporter": f"员{i}"} for i in range(90)]
    # every report to one instance, and a third of them at the same time to the other as a client retry
    jobs = [(a if i % 2 else b, body) for i, body in enumerate(bodies)]
    jobs += [(b if i % 2 else a, body) for i, body in enumerate(bodies) if i % 3 == 0]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda job: post_report(job[0], key, job[1]), jobs))
    codes = [r.status_code for r in answers]
    assert set(codes) <= {200, 201}, [r.text for r in answers if r.status_code not in (200, 201)][:3]
    assert codes.count(201) == len(bodies) and codes.count(200) == len(jobs) - len(bodies)
    for r in answers:  # a retry answers the stored report, whichever instance stored it
        assert r.json()["report_id"] in {body["report_id"] for body in bodies}
    for point in points:
        seen_a, seen_b = history(a, key, point), history(b, key, point)
        assert seen_a["reports"] == seen_b["reports"]
        ids = [r["report_id"] for r in seen_a["reports"]]
        sent = [body["report_id"] for body in bodies if body["point_id"] == point]
        assert sorted(ids) == sorted(sent) and len(set(ids)) == len(ids)
        expected = sorted((body["observed_at"][:19], body["depth_cm"]) for body in bodies if body["point_id"] == point)
        assert [(r["observed_at"][:19], r["depth_cm"]) for r in seen_a["reports"]] == expected
    status = [httpx.get(f"{s.url}/api/flood/status", headers={"X-API-Key": key}, timeout=60).json()["points"]
              for s in (a, b)]
    assert status[0] == status[1]


def square(lon, lat, d=0.005):
    ring = [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


def zones_api(server, method, key, path="", **kwargs):
    return httpx.request(method, f"{server.url}/api/canal/control-zones{path}", headers={"X-API-Key": key},
                         timeout=60, **kwargs)


def test_concurrent_control_zone_edits_on_two_instances(pair):
    a, b = pair
    key = a.key("planner")
    made = []
    lock = threading.Lock()

    def create(i):
        server = (a, b)[i % 2]
        r = zones_api(server, "POST", key, json={"geometry": square(LON + 0.01 * i, LAT), "name": f"并发{i}",
                                                 "kind": "core_monitoring"})
        assert r.status_code == 201, r.text
        with lock:
            made.append(r.json())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(12)))
    assert len({z["id"] for z in made}) == 12

    def edit(zone):  # each zone edited once on the instance that did not create it, all at once
        server = b if int(zone["name"][2:]) % 2 == 0 else a
        return zones_api(server, "PUT", key, f"/{zone['id']}", json={
            "geometry": square(LON + 0.01 * int(zone["name"][2:]), LAT + 0.01), "name": zone["name"] + "改",
            "kind": "green_belt", "base_version": 1})

    with ThreadPoolExecutor(8) as pool:
        edits = list(pool.map(edit, made))
    assert [r.status_code for r in edits] == [200] * 12 and all(r.json()["version"] == 2 for r in edits)
    # a second edit of the same version from the other instance is refused: the first one won
    stale = zones_api(a, "PUT", key, f"/{made[0]['id']}", json={"geometry": square(LON, LAT), "name": "迟到",
                                                                  "kind": "green_belt", "base_version": 1})
    assert stale.status_code == 409
    lists = [zones_api(s, "GET", key).json()["features"] for s in (a, b)]
    ours = [{f["id"]: (f["properties"]["version"], f["properties"]["name"]) for f in features
             if f["id"] in {z["id"] for z in made}} for features in lists]
    assert ours[0] == ours[1] == {z["id"]: (2, z["name"] + "改") for z in made}
    items = [httpx.get(f"{s.url}/ogc/collections/canal_control_zones/items", params={"limit": 1000},
                       headers={"X-API-Key": key}, timeout=60).json()["features"] for s in (a, b)]
    published = [{f["properties"]["zone_id"]: f["properties"]["version"] for f in features} for features in items]
    assert published[0] == published[1] and {z["id"] for z in made} <= set(published[0])
    assert all(published[0][z["id"]] == 2 for z in made)
    moved = {f["properties"]["zone_id"]: f for f in items[0]}[made[0]["id"]]
    assert shapely.geometry.shape(moved["geometry"]).bounds[1] == pytest.approx(LAT + 0.01, abs=1e-6)


def land(server, method, key, path, **kwargs):
    return httpx.request(method, f"{server.url}/api/land{path}", headers={"X-API-Key": key}, timeout=120, **kwargs)


def village_plots(n: int) -> list[str]:
    """n plots of the first village that has that many (read from the layer file, not through the service)."""
    conn = plots_db()
    try:
        village = conn.execute("SELECT village_code FROM plots GROUP BY village_code HAVING count(*) >= ? "
                               "ORDER BY village_code LIMIT 1", (n,)).fetchone()[0]
        return [r[0] for r in conn.execute("SELECT dkbm FROM plots WHERE village_code = ? ORDER BY dkbm LIMIT ?",
                                           (village, n))]
    finally:
        conn.close()


def test_concurrent_land_edits_on_two_instances_are_all_kept_once_and_both_agree(pair):
    a, b = pair
    key = a.key("rural")
    plots = village_plots(4)
    village = plots[0][:12]
    day = dt.datetime.now(dt.timezone.utc).date().isoformat()  # the service's today
    before = land(a, "GET", key, f"/villages/{village}/summary").json()
    names = {dkbm: [f"并发{dkbm[-3:]}-{i}" for i in range(10)] for dkbm in plots}
    edits = [(a if i % 2 else b, dkbm, name) for dkbm in plots for i, name in enumerate(names[dkbm])]
    transfers = [{"dkbm": plots[i % 4], "lzhtbm": f"LZ-TWO-{uuid.uuid4().hex[:8]}", "transferee": f"受让方{i}",
                  "lzfs": "出租", "start_date": day, "end_date": "2030-12-31", "lzmj": 0.5, "standard_form": i % 2 == 0}
                 for i in range(12)]
    # every new transfer sent to both instances at once (a user double-submitting through two browsers)
    jobs = [("PATCH", server, f"/plots/{dkbm}", {"changes": {"dkmc": name}, "valid_from": day})
            for server, dkbm, name in edits]
    jobs += [("POST", server, "/transfers", body) for body in transfers for server in (a, b)]
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda job: land(job[1], job[0], key, job[2], json=job[3]), jobs))
    edit_answers, transfer_answers = answers[:len(edits)], answers[len(edits):]
    assert [r.status_code for r in edit_answers] == [200] * len(edits), [r.text for r in edit_answers][:3]
    for i in range(len(transfers)):  # one of each pair made it, the other was told it exists
        pair_codes = sorted(r.status_code for r in transfer_answers[2 * i:2 * i + 2])
        assert pair_codes == [201, 409], [r.text for r in transfer_answers[2 * i:2 * i + 2]]
    for dkbm in plots:
        seen = [land(s, "GET", key, f"/plots/{dkbm}/history").json() for s in (a, b)]
        assert seen[0] == seen[1]
        versions = [v for v in seen[0]["versions"] if v["entity"] == "plot"]
        assert sorted(v["data"]["dkmc"] for v in versions) == sorted(names[dkbm])  # each edit once
        current = [v for v in versions if v["valid_to"] is None]
        assert len(current) == 1  # the others were closed by the one after them
        cards = [land(s, "GET", key, f"/plots/{dkbm}").json() for s in (a, b)]
        assert cards[0]["dkmc"] == cards[1]["dkmc"] == current[0]["data"]["dkmc"]
        made = [v["key"].split("|")[0] for v in seen[0]["versions"] if v["entity"] == "transfer"]
        assert sorted(made) == sorted(t["lzhtbm"] for t in transfers if t["dkbm"] == dkbm)
    after = [land(s, "GET", key, f"/villages/{village}/summary").json() for s in (a, b)]
    assert after[0] == after[1]
    assert after[0]["transfer_contracts"] == before["transfer_contracts"] + len(transfers)
    assert after[0]["transferred_area_mu"] == pytest.approx(before["transferred_area_mu"] + 0.5 * len(transfers),
                                                            abs=0.011)


def report_writer(c, key, point, i):
    body = {"report_id": uuid.uuid4().hex, "point_id": point, "depth_cm": 10.0 + i % 20,
            "observed_at": ago(60 - i * 0.01), "reporter": "断电测试"}
    return body["report_id"], lambda: post_report(c, key, body).status_code == 201


def edit_writer(c, key, dkbm, i):
    name = f"断电{uuid.uuid4().hex[:10]}"
    return name, lambda: land(c, "PATCH", key, f"/plots/{dkbm}", json={"changes": {"dkmc": name}}).status_code == 200


@pytest.mark.parametrize("kind", ["flood report", "land edit"])
def test_killing_an_instance_mid_write_loses_nothing_it_acknowledged(pair, database, tmp_path, kind):
    a, _ = pair
    if kind == "flood report":
        key = a.key("flood")
        target, make = point_ids(a, key, "WL-", 4)[0], report_writer

        def stored():
            return [r["report_id"] for r in history(a, key, target)["reports"]]
    else:
        key = a.key("rural")
        target, make = village_plots(5)[4], edit_writer

        def stored():
            versions = land(a, "GET", key, f"/plots/{target}/history").json()["versions"]
            return [v["data"]["dkmc"] for v in versions if v["entity"] == "plot" and v["data"]["dkmc"].startswith("断电")]
    acknowledged: list[str] = []
    sent: list[str] = []
    with live_server(tmp_path, database_url=database) as (proc, url):
        c = LiveServer(url, a.var_dir, database)
        stop = threading.Event()

        def writer():
            i = 0
            while not stop.is_set():
                ident, send = make(c, key, target, i)
                sent.append(ident)
                try:
                    ok = send()
                except httpx.HTTPError:
                    return  # the process is gone
                if ok:
                    acknowledged.append(ident)
                i += 1

        threads = [threading.Thread(target=writer) for _ in range(4)]
        for t in threads:
            t.start()
        deadline = time.time() + 60
        while len(acknowledged) < 40 and time.time() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown: connections cut mid-transaction
        proc.wait(20)
        stop.set()
        for t in threads:
            t.join(60)
    assert len(acknowledged) >= 40
    ids = stored()
    assert set(acknowledged) <= set(ids)  # every acknowledged write committed
    assert len(ids) == len(set(ids)) and set(ids) <= set(sent)  # nothing twice, nothing invented
