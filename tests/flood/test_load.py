"""Under load (issue #8 item 4): 50 concurrent clients post 2 000 reports to a live server, each retrying a
share of them with the same report_id (as a client does when an answer is lost). None is lost, none is
duplicated, and the status afterwards reflects each point's latest observed_at, computed here independently
(the closure and reopening rule re-implemented from the rule values). Uses the waterlogging points WL-*."""

import datetime as dt
import random
import threading
import uuid
from collections import defaultdict

import httpx

from gis_service.rules import RuleBook

RULES = RuleBook.load().domain("flood")
CLIENTS, REPORTS, RETRY_SHARE = 50, 2000, 0.25


def expected_status(depths_in_time_order):
    close = RULES.value("closure_depth_cm")
    reopen = close - RULES.value("reopen_hysteresis_cm")
    status = "unknown"
    for d in depths_in_time_order:
        if d > close or (status == "closed" and d > reopen):
            status = "closed"
        else:
            status = "watch" if d >= RULES.value("watch_depth_cm") else "normal"
    return status


def test_50_clients_2000_reports_none_lost_none_duplicated_status_follows_latest(server):
    headers = {"X-API-Key": server.key("flood")}
    status = httpx.get(f"{server.url}/api/flood/status", headers=headers, timeout=30).json()
    points = [p["point_id"] for p in status["points"] if p["point_id"].startswith("WL-")]
    assert len(points) >= 8
    before = {p: httpx.get(f"{server.url}/api/flood/points/{p}/history", headers=headers).json()["count"]
              for p in points}
    rng = random.Random(8)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    # distinct observation times (whole seconds within the last ~2 hours), sent in random order
    offsets = rng.sample(range(60, 7200), REPORTS)
    reports = [{"report_id": uuid.uuid4().hex, "point_id": rng.choice(points),
                "depth_cm": round(rng.uniform(0, 60), 1),
                "observed_at": (now - dt.timedelta(seconds=s)).astimezone(dt.timezone(dt.timedelta(hours=8))).isoformat(),
                "reporter": f"巡查员{rng.randint(1, 20)}"} for s in offsets]
    shares = [reports[i::CLIENTS] for i in range(CLIENTS)]
    answers, failures = defaultdict(list), []

    def client(mine, seed):
        r = random.Random(seed)
        queue = list(mine) + [m for m in mine if r.random() < RETRY_SHARE]  # retries, some right after
        r.shuffle(queue)
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
            for body in queue:
                resp = http.post("/api/flood/reports", json=body)
                if resp.status_code not in (200, 201):
                    failures.append((resp.status_code, resp.text))
                    continue
                answers[body["report_id"]].append((resp.status_code, resp.json()["duplicate"]))

    threads = [threading.Thread(target=client, args=(s, i)) for i, s in enumerate(shares)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    assert len(answers) == REPORTS  # none lost
    for report_id, got in answers.items():  # exactly one creation per report, every retry a duplicate
        assert sorted(got) == [(200, True)] * (len(got) - 1) + [(201, False)], (report_id, got)
    assert sum(len(g) for g in answers.values()) > REPORTS  # retries did happen

    by_point = defaultdict(list)
    for body in reports:
        by_point[body["point_id"]].append(body)
    status = {p["point_id"]: p for p in
              httpx.get(f"{server.url}/api/flood/status", headers=headers, timeout=30).json()["points"]}
    for point_id in points:
        history = httpx.get(f"{server.url}/api/flood/points/{point_id}/history", headers=headers, timeout=30).json()
        mine = sorted(by_point[point_id], key=lambda b: dt.datetime.fromisoformat(b["observed_at"]))
        assert history["count"] - before[point_id] == len(mine)  # none lost, none duplicated
        ids = [r["report_id"] for r in history["reports"]]
        assert len(ids) == len(set(ids)) and set(b["report_id"] for b in mine) <= set(ids)
        if not mine or before[point_id]:
            continue
        latest = mine[-1]
        got = status[point_id]
        assert got["depth_cm"] == latest["depth_cm"]
        assert dt.datetime.fromisoformat(got["observed_at"]) == dt.datetime.fromisoformat(latest["observed_at"])
        assert got["status"] == expected_status([b["depth_cm"] for b in mine]), point_id
