"""/api/land over a live server: plot cards, extension dates, map click, search areas, summaries against
values read straight from the layer and register files, codes refused, and masking for every role."""

import datetime as dt
import json

import httpx
import pytest
import shapely
from pyproj import Transformer

from gis_service.rules import RuleBook

from .conftest import interior_point, plots_db, register_db

RULES = RuleBook.load().domain("land")
ROLES = ("planner", "flood", "environment", "rural", "admin")


def get(server, path, role=None, **params):
    headers = {"X-API-Key": server.key(role)} if role else {}
    return httpx.get(f"{server.url}/api/land{path}", params=params, headers=headers, timeout=60)


def plus_years(day: str, years: int) -> str:
    d = dt.date.fromisoformat(day)
    try:
        return d.replace(year=d.year + years).isoformat()
    except ValueError:
        return d.replace(year=d.year + years, day=28).isoformat()


def test_plot_card_for_rural_is_full_and_logged(server, transferred_plot, household_of):
    p = transferred_plot
    h = household_of(p["cbfbm"])
    r = get(server, f"/plots/{p['dkbm']}", "rural")
    assert r.status_code == 200, r.text
    c = r.json()
    assert c["dkbm"] == p["dkbm"] and c["measured_area_mu"] == p["measured_area_mu"]
    assert c["contractor"]["name"] == h["name"] and c["contractor"]["id_number"] == h["id_number"]
    assert c["contractor"]["phone"] == h["phone"] and c["personal_data"] == "full"
    assert c["transfers"] and c["transfer_status"] == c["transfers"][0]["lzfs"]
    shape = shapely.geometry.shape(c["geometry"])
    assert shape.equals_exact(p["geometry"], 1e-6)  # GeoJSON rounded to ~0.1 m
    entries = server.access_entries()
    mine = [e for e in entries if e.get("subjects") == [p["dkbm"]] and e["role"] == "rural"]
    assert mine and "contractor_id_number" in mine[-1]["fields"] and mine[-1]["who"] == "test-rural"


@pytest.mark.parametrize("role", ["planner", "flood", "environment"])
def test_plot_card_masked_for_other_roles(server, transferred_plot, household_of, role):
    p = transferred_plot
    h = household_of(p["cbfbm"])
    c = get(server, f"/plots/{p['dkbm']}", role).json()
    assert c["personal_data"] == "masked"
    name, idn, phone = c["contractor"]["name"], c["contractor"]["id_number"], c["contractor"]["phone"]
    assert name == h["name"][0] + "*" * (len(h["name"]) - 1)
    assert idn == h["id_number"][:4] + "**********" + h["id_number"][-4:]  # 1310**********1234 (issue #9 §8)
    assert h["id_number"] not in r_text(c) and h["phone"] not in r_text(c)
    assert phone == h["phone"][:3] + "****" + h["phone"][-4:]
    assert c["zjrxm"] != p["zjrxm"] or len(p["zjrxm"]) < 2


def r_text(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def test_plot_card_without_key_has_no_persons(server, transferred_plot, household_of):
    p = transferred_plot
    c = get(server, f"/plots/{p['dkbm']}").json()
    assert c["contractor"] is None and c["zjrxm"] is None and c["boundaries"] is None
    assert c["personal_data"] == "omitted"
    h = household_of(p["cbfbm"])
    assert h["name"] not in r_text(c) and h["id_number"][-4:] not in r_text(c).replace(p["dkbm"], "")


@pytest.mark.parametrize("role", [None, "planner", "rural"])
def test_the_transferee_is_a_person_on_the_card(server, transferred_plot, role):
    """The other party of a transfer may be a natural person: clear for rural, masked with another key, none
    without one (values from the register file)."""
    dkbm = transferred_plot["dkbm"]
    today = dt.date.today().isoformat()
    clear = {r[0] for r in register_db().execute(
        "SELECT transferee FROM transfers WHERE dkbm = ? AND start_date <= ? AND end_date >= ?", (dkbm, today, today))}
    shown = {t["transferee"] for t in get(server, f"/plots/{dkbm}", role).json()["transfers"]}
    assert clear
    want = {None: {None}, "planner": {n[0] + "*" * (len(n) - 1) for n in clear}, "rural": clear}[role]
    assert shown == want


def test_admin_sees_full(server, transferred_plot, household_of):
    c = get(server, f"/plots/{transferred_plot['dkbm']}", "admin").json()
    assert c["contractor"]["id_number"] == household_of(transferred_plot["cbfbm"])["id_number"]


def test_extension_is_end_plus_thirty_years(server, transferred_plot):
    reg = register_db()
    contract = dict(reg.execute("SELECT * FROM contracts WHERE cbhtbm = ?", (transferred_plot["cbhtbm"],)).fetchone())
    c = get(server, f"/plots/{transferred_plot['dkbm']}").json()["contract"]
    assert RULES.value("extension_years") == 30
    assert c["cbqxz"] == contract["cbqxz"] and c["extended_end"] == plus_years(contract["cbqxz"], 30)
    assert "L1189" in c["extension_rule"]["citation"] or "1189" in c["extension_rule"]["citation"]


def test_extension_of_29_february():
    from gis_service.land.service import LandService
    svc = LandService.__new__(LandService)
    svc.rules = RULES
    assert svc.extended_end("2028-02-29") == "2058-02-28"
    assert svc.extended_end("2027-12-31") == "2057-12-31"
    assert svc.extended_end(None) is None
    assert svc.extended_end("9969-12-31") == "9999-12-31"
    assert svc.extended_end("9970-01-01") is None  # year 10000: no date, not a 500


def test_expiring_villages_match_the_contract_end_years(server):
    conn = plots_db()
    expected = {r[0] for r in conn.execute("SELECT DISTINCT village_code FROM plots WHERE substr(contract_end, 1, 4) = '2021'")}
    assert expected, "the demo has villages whose contracts end in 2021"
    body = get(server, "/villages/expiring", year=2021).json()
    assert {v["village_code"] for v in body["villages"]} == expected
    v = body["villages"][0]
    assert v["last_end"].startswith("2021") and v["extended_last_end"] == plus_years(v["last_end"], 30)
    assert get(server, "/villages/expiring", year=2035).json()["count"] == 0
    assert get(server, "/villages/expiring", year="abc").status_code == 400


@pytest.mark.parametrize("code,status", [("131022", 422), ("13102210323703000X1", 422), ("1310221032370300001" + "9", 422),
                                         ("9999999999999999999", 404)])
def test_bad_or_unknown_codes(server, code, status):
    r = get(server, f"/plots/{code}")
    assert r.status_code == status, r.text
    assert set(r.json()) == {"code", "message"}


def test_map_click_finds_the_plot_in_three_coordinate_systems(server, transferred_plot):
    x, y = interior_point(transferred_plot["geometry"])
    r = get(server, "/plots", at=f"{x},{y}", coord_sys="cgcs2000").json()
    assert r["count"] == 1 and r["plots"][0]["dkbm"] == transferred_plot["dkbm"]
    ex, ny = Transformer.from_crs("EPSG:4490", "EPSG:4548", always_xy=True).transform(x, y)
    r = get(server, "/plots", at=f"{ex},{ny}", coord_sys="epsg:4548").json()
    assert r["plots"][0]["dkbm"] == transferred_plot["dkbm"]
    assert r["plots"][0]["contractor"] is None  # no key, no persons
    r = get(server, "/plots", at="120.0,30.0")
    assert r.status_code == 422 and r.json()["code"] == "coordinate_outside_langfang"
    assert get(server, "/plots", at="abc").status_code == 400


def test_map_click_on_open_land_finds_nothing(server):
    lon, lat = 116.6838, 39.5380  # the city centre: built-up land, no farmland
    tol = 3 / 111_000  # the click tolerance, checked on the R-tree of the file
    near = plots_db().execute("SELECT count(*) FROM rtree_plots_geom WHERE minx <= ? AND maxx >= ? AND miny <= ? "
                              "AND maxy >= ?", (lon + tol, lon - tol, lat + tol, lat - tol)).fetchone()[0]
    assert near == 0
    r = get(server, "/plots", at=f"{lon},{lat}", coord_sys="cgcs2000").json()
    assert r["count"] == 0 and r["plots"] == []


def test_search_polygon_returns_intersected_areas(server, transferred_plot):
    g = transferred_plot["geometry"]
    to_m = Transformer.from_crs("EPSG:4490", "EPSG:4548", always_xy=True)
    gm = shapely.transform(g, lambda c: __import__("numpy").column_stack(to_m.transform(c[:, 0], c[:, 1])))
    x0, y0, x1, y1 = gm.bounds
    half = shapely.box(x0 - 1, y0 - 1, (x0 + x1) / 2, y1 + 1)  # west half of the plot (and the ridge beside it)
    body = {"geometry": json.loads(shapely.to_geojson(half)), "coord_sys": "epsg:4548"}
    r = httpx.post(f"{server.url}/api/land/plots/search", json=body, timeout=60)
    assert r.status_code == 200, r.text
    hit = next(p for p in r.json()["plots"] if p["dkbm"] == transferred_plot["dkbm"])
    expected = gm.intersection(half).area
    assert abs(hit["intersect_area_m2"] - expected) < 0.5
    assert abs(hit["intersect_area_mu"] - expected * 15 / 10000) < 0.001
    assert abs(expected - gm.area / 2) < 0.05 * gm.area  # half the plot, computed by hand
    bad = httpx.post(f"{server.url}/api/land/plots/search", json={"geometry": {"type": "Point", "coordinates": [116.5, 39.5]}},
                     timeout=30)
    assert bad.status_code == 422 and set(bad.json()) == {"code", "message"}


def test_village_summary_against_the_files(server, transferred_plot):
    village = transferred_plot["village_code"]
    conn = plots_db()
    n, households, contract, measured = conn.execute(
        "SELECT count(*), count(DISTINCT cbfbm), sum(contract_area_mu), sum(measured_area_mu) FROM plots "
        "WHERE village_code = ?", (village,)).fetchone()
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    reg = register_db()
    tr, std = reg.execute("SELECT sum(lzmj), sum(CASE WHEN standard_form THEN lzmj ELSE 0 END) FROM transfers "
                          "WHERE village_code = ? AND start_date <= ? AND end_date >= ?", (village, today, today)).fetchone()
    s = get(server, f"/villages/{village}/summary").json()
    assert s["plots"] == n and s["households"] == households
    assert abs(s["contract_area_mu"] - contract) < 0.01 and abs(s["measured_area_mu"] - measured) < 0.01
    assert abs(s["transferred_area_mu"] - (tr or 0)) < 0.01
    if tr:
        assert s["standard_rate_pct"] == round(100 * std / tr, 1)
        assert s["standard_target_met"] == (round(100 * std / tr, 1) >= 90)
    assert get(server, "/villages/999999999999/summary").status_code == 404
    assert get(server, "/villages/12/summary").status_code == 400


def test_city_and_county_rollups_against_targets(server):
    city = get(server, "/summary").json()
    conn = plots_db()
    assert city["plots"] == conn.execute("SELECT count(*) FROM plots").fetchone()[0]
    reg = register_db()
    rows = reg.execute("SELECT DISTINCT dyid, amount_wan, borrower FROM mortgages WHERE start_date <= '2021-12-31' "
                       "AND end_date >= '2021-01-01'").fetchall()
    credit = round(sum(r["amount_wan"] for r in rows), 1)
    borrowers = len({r["borrower"] for r in rows})
    assert city["target_year_credit_wan"] == credit and city["target_year_borrowers"] == borrowers
    assert city["mortgage_credit_met"] == (credit >= 1200) and city["borrowers_met"] == (borrowers >= 30)
    assert sum(c["plots"] for c in city["counties"]) == city["plots"]
    county = city["counties"][0]["county_adcode"]
    one = get(server, f"/counties/{county}/summary").json()
    assert one["plots"] == conn.execute("SELECT count(*) FROM plots WHERE county_adcode = ?", (county,)).fetchone()[0]


def test_lists_by_village_and_contractor(server, transferred_plot, household_of):
    village = transferred_plot["village_code"]
    body = get(server, "/plots", village=village, limit=5).json()
    n = plots_db().execute("SELECT count(*) FROM plots WHERE village_code = ?", (village,)).fetchone()[0]
    assert body["number_matched"] == n and len(body["plots"]) == min(5, n)
    assert all(p["contractor_name"] is None for p in body["plots"])  # no key
    h = household_of(transferred_plot["cbfbm"])
    assert get(server, "/plots", contractor=h["cbfbm"]).status_code == 401
    assert get(server, "/plots", contractor=h["cbfbm"], role="planner").status_code == 403
    by_code = get(server, "/plots", contractor=h["cbfbm"], role="rural").json()
    expected = {r[0] for r in plots_db().execute("SELECT dkbm FROM plots WHERE cbfbm = ?", (h["cbfbm"],))}
    assert {p["dkbm"] for p in by_code["plots"]} == expected
    assert by_code["households"][0]["id_number"] == h["id_number"]
    by_name = get(server, "/plots", contractor=h["name"], role="admin").json()
    assert h["cbfbm"] in {x["cbfbm"] for x in by_name["households"]}
    assert get(server, "/plots").status_code == 400
