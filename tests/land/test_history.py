"""Edits through the API are versions (valid_from / valid_to) in the record store: the register files are
never written; a plot, contract, transfer or mortgage reads as of any date; who may edit."""

import datetime as dt
import hashlib

import httpx

from .conftest import PLOTS, REGISTER, plot_row, register_db


def call(server, method, path, role="rural", **kw):
    headers = {"X-API-Key": server.key(role)} if role else {}
    return httpx.request(method, f"{server.url}/api/land{path}", headers=headers, timeout=60, **kw)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def untransferred_plot(offset=0):
    reg = register_db()
    taken = {r[0] for r in reg.execute("SELECT dkbm FROM transfers")} | {r[0] for r in reg.execute("SELECT dkbm FROM mortgages")}
    conn = __import__("sqlite3").connect(f"file:{PLOTS}?mode=ro", uri=True)
    codes = [r[0] for r in conn.execute("SELECT dkbm FROM plots ORDER BY fid DESC LIMIT 200")]
    return plot_row("dkbm = ?", ([c for c in codes if c not in taken][offset],))


def test_plot_edit_is_a_version_and_reads_as_of(server):
    p = untransferred_plot(0)
    before = digest(PLOTS), digest(REGISTER)
    r = call(server, "PATCH", f"/plots/{p['dkbm']}", json={"changes": {"current_use": "坑塘", "dkmc": "新名"},
                                                            "valid_from": "2024-05-01", "reason": "挖塘"})
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["valid_from"] == "2024-05-01" and v["valid_to"] is None
    assert v["changes"]["current_use"] == [p["current_use"], "坑塘"]
    r2 = call(server, "PATCH", f"/plots/{p['dkbm']}", json={"changes": {"current_use": "耕地"}, "valid_from": "2025-03-01"})
    assert r2.status_code == 200
    assert call(server, "GET", f"/plots/{p['dkbm']}", params={"as_of": "2024-01-01"}).json()["current_use"] == p["current_use"]
    mid = call(server, "GET", f"/plots/{p['dkbm']}", params={"as_of": "2024-12-31"}).json()
    assert mid["current_use"] == "坑塘" and mid["dkmc"] == "新名"
    assert mid["version"] == {"valid_from": "2024-05-01", "valid_to": "2025-03-01"}
    now = call(server, "GET", f"/plots/{p['dkbm']}").json()
    assert now["current_use"] == "耕地" and now["dkmc"] == "新名"
    h = call(server, "GET", f"/plots/{p['dkbm']}/history", role=None).json()
    assert [(x["valid_from"], x["valid_to"]) for x in h["versions"]] == [("2024-05-01", "2025-03-01"), ("2025-03-01", None)]
    assert h["base"]["valid_to"] == "2024-05-01" and h["versions"][0]["author"] is None  # anonymous: no editor
    # back-dating before the latest version is refused; files untouched
    r3 = call(server, "PATCH", f"/plots/{p['dkbm']}", json={"changes": {"current_use": "林木"}, "valid_from": "2025-01-01"})
    assert r3.status_code == 409 and set(r3.json()) == {"code", "message"}
    assert (digest(PLOTS), digest(REGISTER)) == before


def test_edits_need_rural_or_admin_and_valid_values(server):
    p = untransferred_plot(1)
    body = {"changes": {"current_use": "林木"}}
    assert call(server, "PATCH", f"/plots/{p['dkbm']}", role=None, json=body).status_code == 401
    assert call(server, "PATCH", f"/plots/{p['dkbm']}", role="planner", json=body).status_code == 403
    for changes in ({"current_use": "游乐场"}, {"measured_area_mu": 3}, {"contract_area_mu": -1}, {}):
        r = call(server, "PATCH", f"/plots/{p['dkbm']}", role="admin", json={"changes": changes})
        assert r.status_code == 400, (changes, r.text)
    assert call(server, "PATCH", f"/plots/{p['dkbm']}", json={"changes": {"dkmc": "x"}, "valid_from": "2024-13-01"}).status_code == 400


def test_transfer_and_mortgage_lifecycle_with_history_and_summary(server):
    p = untransferred_plot(2)
    village = p["village_code"]
    s0 = call(server, "GET", f"/villages/{village}/summary", role=None).json()
    start = "2023-03-01"
    r = call(server, "POST", "/transfers", json={"dkbm": p["dkbm"], "transferee": "测试家庭农场", "lzfs": "出租",
                                                  "start_date": start, "end_date": "2033-02-28", "standard_form": False,
                                                  "lzmj": 1.0})
    assert r.status_code == 201, r.text
    lz = r.json()["data"]["lzhtbm"]
    assert call(server, "POST", "/transfers", json={"dkbm": p["dkbm"], "transferee": "x", "lzfs": "出租", "lzhtbm": lz,
                                                     "start_date": start, "end_date": "2033-02-28",
                                                     "standard_form": True}).status_code == 409
    assert call(server, "POST", "/transfers", json={"dkbm": p["dkbm"], "transferee": "x", "lzfs": "赠送",
                                                     "start_date": start, "end_date": "2033-02-28",
                                                     "standard_form": True}).status_code == 400
    card = call(server, "GET", f"/plots/{p['dkbm']}", role=None).json()
    assert card["transfer_status"] == "出租" and card["transfers"][0]["standard_form"] is False
    assert call(server, "GET", f"/plots/{p['dkbm']}", role=None, params={"as_of": "2023-02-28"}).json()["transfers"] == []
    s1 = call(server, "GET", f"/villages/{village}/summary", role=None).json()
    assert round(s1["transferred_area_mu"] - s0["transferred_area_mu"], 2) == 1.0
    assert round(s1["oral_area_mu"] - s0["oral_area_mu"], 2) == 1.0
    m = call(server, "POST", "/mortgages", role="admin", json={"dkbm": p["dkbm"], "borrower": "测试家庭农场", "lender": "廊坊银行",
                                                                "amount_wan": 20, "start_date": "2024-01-10",
                                                                "end_date": "2027-01-09", "lzhtbm": lz})
    assert m.status_code == 201, m.text
    dyid = m.json()["data"]["dyid"]
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    assert call(server, "GET", f"/plots/{p['dkbm']}", role=None).json()["mortgage_status"] == \
        ("抵押中" if today <= "2027-01-09" else "未抵押")
    rel = call(server, "POST", f"/mortgages/{dyid}/release", json={"dkbm": p["dkbm"], "date": "2025-06-30"})
    assert rel.status_code == 200, rel.text
    mid = call(server, "GET", f"/plots/{p['dkbm']}", role=None, params={"as_of": "2025-01-01"}).json()
    assert mid["mortgage_status"] == "抵押中"
    after = call(server, "GET", f"/plots/{p['dkbm']}", role=None, params={"as_of": "2025-07-01"}).json()
    assert after["mortgages"][0]["status"] == "已解除" and after["mortgage_status"] != "抵押中"
    end = call(server, "POST", f"/transfers/{lz}/end", json={"dkbm": p["dkbm"], "date": "2026-01-01"})
    assert end.status_code == 200
    assert call(server, "GET", f"/plots/{p['dkbm']}", role=None, params={"as_of": "2026-01-02"}).json()["transfers"] == []
    h = call(server, "GET", f"/plots/{p['dkbm']}/history").json()
    kinds = [(v["entity"], v["valid_from"], v["valid_to"]) for v in h["versions"]]
    assert ("transfer", start, "2026-01-01") in kinds and ("transfer", "2026-01-01", None) in kinds
    assert ("mortgage", "2024-01-10", "2025-06-30") in kinds and h["versions"][0]["author"] == "test-rural"


def test_contract_edit_moves_the_extended_end(server):
    p = untransferred_plot(3)
    r = call(server, "PATCH", f"/contracts/{p['cbhtbm']}", json={"changes": {"cbqxz": "2029-06-30"},
                                                                  "valid_from": "2024-01-01"})
    assert r.status_code == 200, r.text
    c = call(server, "GET", f"/plots/{p['dkbm']}", role=None).json()["contract"]
    assert c["cbqxz"] == "2029-06-30" and c["extended_end"] == "2059-06-30"
    old = call(server, "GET", f"/plots/{p['dkbm']}", role=None, params={"as_of": "2023-12-31"}).json()["contract"]
    assert old["cbqxz"] == p["contract_end"]
    assert call(server, "PATCH", f"/contracts/{p['cbhtbm']}", json={"changes": {"cbqxz": "1990-01-01"}}).status_code == 400
    # an end whose +30 years has no date (year 10000) is refused, and the plot still reads
    late = call(server, "PATCH", f"/contracts/{p['cbhtbm']}", json={"changes": {"cbqxz": "9990-01-01"}})
    assert late.status_code == 400 and late.json()["code"] == "bad_parameter"
    assert call(server, "GET", f"/plots/{p['dkbm']}", role=None).status_code == 200
    assert call(server, "PATCH", "/contracts/NOPE", json={"changes": {"cbqxz": "2030-01-01"}}).status_code == 404


def test_a_second_edit_on_one_day_supersedes_the_first_and_the_summary_follows(server):
    p = untransferred_plot(4)
    village = p["village_code"]
    s0 = call(server, "GET", f"/villages/{village}/summary", role=None).json()
    for area in (5.0, 6.0):
        r = call(server, "PATCH", f"/plots/{p['dkbm']}", json={"changes": {"contract_area_mu": area},
                                                                "valid_from": "2024-02-02"})
        assert r.status_code == 200, r.text
        s = call(server, "GET", f"/villages/{village}/summary", role=None).json()
        assert round(s["contract_area_mu"] - s0["contract_area_mu"], 2) == round(area - p["contract_area_mu"], 2)
    h = call(server, "GET", f"/plots/{p['dkbm']}/history", role=None).json()
    mine = [(v["valid_from"], v["valid_to"], v["changes"]["contract_area_mu"]) for v in h["versions"] if v["entity"] == "plot"]
    assert mine == [("2024-02-02", "2024-02-02", [p["contract_area_mu"], 5.0]), ("2024-02-02", None, [5.0, 6.0])]
    assert call(server, "GET", f"/plots/{p['dkbm']}", role=None, params={"as_of": "2024-02-02"}).json()["contract_area_mu"] == 6.0


def test_a_mortgage_released_later_was_in_force_during_its_term(server):
    """as_of reads the register as it stood: a demo mortgage now 已解除 (its term over) was 抵押中 on a day
    within its term — on the card, its row and the village's mortgaged plots; after its end it is not."""
    reg = register_db()
    dyid, start, end, village = reg.execute(
        "SELECT dyid, start_date, end_date, village_code FROM mortgages WHERE status = '已解除' "
        "AND end_date > start_date ORDER BY dyid LIMIT 1").fetchone()
    plots = {r[0] for r in reg.execute("SELECT dkbm FROM mortgages WHERE dyid = ?", (dyid,))}
    dkbm = min(plots)
    during = call(server, "GET", f"/plots/{dkbm}", role=None, params={"as_of": start}).json()
    assert during["mortgage_status"] == "抵押中"
    assert [m["status"] for m in during["mortgages"] if m["dyid"] == dyid] == ["抵押中"]
    summary = call(server, "GET", f"/villages/{village}/summary", role=None, params={"as_of": start}).json()
    assert summary["mortgaged_plots"] >= len(plots) and summary["mortgage_amount_wan"] > 0
    later = (dt.date.fromisoformat(end) + dt.timedelta(days=1)).isoformat()
    others = reg.execute("SELECT count(*) FROM mortgages WHERE dkbm = ? AND dyid != ? AND start_date <= ? "
                         "AND end_date >= ?", (dkbm, dyid, later, later)).fetchone()[0]
    after = call(server, "GET", f"/plots/{dkbm}", role=None, params={"as_of": later}).json()
    assert others or after["mortgage_status"] == "已解除"
    assert [m["status"] for m in after["mortgages"] if m["dyid"] == dyid] == ["已解除"]


def test_history_with_names_in_clear_is_logged_and_masked_for_others(server):
    p = untransferred_plot(5)
    name = "史测试"
    r = call(server, "PATCH", f"/plots/{p['dkbm']}", json={"changes": {"zjrxm": name}, "valid_from": "2024-02-01"})
    assert r.status_code == 200, r.text
    before = len(server.access_entries())
    clear = call(server, "GET", f"/plots/{p['dkbm']}/history")
    assert clear.status_code == 200 and name in clear.text
    new = server.access_entries()[before:]
    assert [(e["who"], e["subjects"]) for e in new if "/history" in e["request"]] == [("test-rural", [p["dkbm"]])]
    assert "zjrxm" in new[-1]["fields"]
    for role in ("planner", None):
        other = call(server, "GET", f"/plots/{p['dkbm']}/history", role=role)
        assert other.status_code == 200 and name not in other.text
    assert len(server.access_entries()) == before + 1  # masked views are no disclosure
