"""What desktop GIS and OGC clients need: keys sent as HTTP Basic or Bearer, the landing page at /ogc/, and
HTTP Link headers on every items page (OGC API – Features /rec/core/link-header)."""

import base64
import re
import shutil
import subprocess

import httpx
import pytest

from gis_service import ogc


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def get(server, path, headers=None, **params):
    return httpx.get(server.url + path, params=params, headers=headers or {}, timeout=60)


def collection_ids(response) -> set:
    assert response.status_code == 200, response.text
    return {c["id"] for c in response.json()["collections"]}


def test_basic_and_bearer_see_what_x_api_key_sees(server):
    key = server.key("rural")
    by_header = collection_ids(get(server, "/ogc/collections", {"X-API-Key": key}))
    anonymous = collection_ids(get(server, "/ogc/collections"))
    assert "contractor_households" in by_header and "contractor_households" not in anonymous
    for headers in (basic("any-user", key), basic("", key), {"Authorization": f"Bearer {key}"},
                    {"Authorization": f"bearer   {key}"}):
        assert collection_ids(get(server, "/ogc/collections", headers)) == by_header
    # the restricted layer reads with Basic, and stays a 404 for a role not entitled (as with X-API-Key)
    page = get(server, "/ogc/collections/contractor_households/items", basic("qgis", key), limit=3)
    assert page.status_code == 200 and page.json()["numberReturned"] == 3
    planner = get(server, "/ogc/collections/contractor_households/items", basic("qgis", server.key("planner")))
    assert planner.status_code == 404 and planner.json()["code"] == "not_found"


def test_basic_auth_masks_personal_fields_for_roles_not_entitled_and_logs_clear_access(server):
    params = dict(limit=5, sortby="dkbm")
    planner = get(server, "/ogc/collections/plots/items", basic("u", server.key("planner")), **params).json()
    rural = get(server, "/ogc/collections/plots/items", basic("u", server.key("rural")), **params).json()
    names = [f["properties"]["contractor_name"] for f in rural["features"]]
    masked = [f["properties"]["contractor_name"] for f in planner["features"]]
    assert all(n and "*" not in n for n in names)
    assert all("*" in m for m in masked) and [m[0] for m in masked] == [n[0] for n in names]
    log = server.access_log_text()
    assert "test-rural" in log and "test-planner" not in log


@pytest.mark.parametrize("headers, phrase", [
    (lambda k: basic("qgis", k + "x"), "invalid or revoked"),
    (lambda k: {"Authorization": f"Bearer {k}x"}, "invalid or revoked"),
    (lambda k: {"Authorization": "Basic !!!notbase64"}, "base64"),
    (lambda k: basic("only-a-user", ""), "password"),
    (lambda k: {"Authorization": f"Digest {k}"}, "unsupported"),
])
def test_a_wrong_credential_is_a_401_that_asks_for_basic_never_a_public_view(server, headers, phrase):
    for path in ("/ogc/collections", "/ogc/collections/counties/items", "/maps/"):
        response = get(server, path, headers(server.key("planner")))
        assert response.status_code == 401, (path, response.text)
        body = response.json()
        assert body["code"] == "invalid_api_key" and phrase in body["message"]
        assert re.fullmatch(r'Basic realm="[^"]+".*', response.headers["www-authenticate"])


def test_a_revoked_key_sent_as_basic_is_a_401(server):
    key = server.keys.add("planner", "test-clients-revoked")
    assert get(server, "/ogc/collections", basic("u", key)).status_code == 200
    server.keys.revoke("test-clients-revoked")
    assert get(server, "/ogc/collections", basic("u", key)).status_code == 401


def test_keys_sent_by_every_means_never_reach_the_logs(server):
    key = server.key("rural")
    for headers in (basic("u", key), {"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
        assert get(server, "/ogc/collections/plots/items", headers, limit=2).status_code == 200
    assert get(server, "/ogc/collections", basic("u", key + "x")).status_code == 401
    for text in server.logs():
        assert key not in text and base64.b64encode(f"u:{key}".encode()).decode() not in text


def test_ogc_with_and_without_slash_answer_the_landing_page(server):
    for path in ("/ogc", "/ogc/"):
        response = httpx.get(server.url + path, params={"f": "json"}, follow_redirects=False, timeout=30)
        assert response.status_code == 200, (path, response.status_code)
        assert {l["rel"] for l in response.json()["links"]} >= {"self", "service-desc", "conformance", "data"}
        html = httpx.get(server.url + path, headers={"Accept": "text/html"}, follow_redirects=False, timeout=30)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")


LINK = re.compile(r'<([^>]*)>\s*;\s*rel="([^"]+)"\s*;\s*type="([^"]+)"')


def link_header(response) -> dict:
    """rel -> (href, type), parsed by the RFC 8288 grammar (link-value = "<" URI-Reference ">" *( ";" param ))."""
    values = [v.strip() for v in re.split(r",\s*(?=<)", response.headers["link"])]
    parsed = [LINK.fullmatch(v) for v in values]
    assert all(parsed), response.headers["link"]
    return {m.group(2): (m.group(1), m.group(3)) for m in parsed}


def test_every_items_page_of_every_collection_carries_link_headers(server):
    key = server.key("admin")
    ids = collection_ids(get(server, "/ogc/collections", {"X-API-Key": key}))
    assert len(ids) > 20
    for cid in sorted(ids):
        path = f"/ogc/collections/{cid}/items"
        first = get(server, path, {"X-API-Key": key}, limit=1)
        matched = first.json()["numberMatched"]
        links = link_header(first)
        assert links["self"][1] == "application/geo+json" and links["alternate"][1] == "text/html"
        assert "prev" not in links and ("next" in links) == (matched > 1), cid
        # the header links are the body's links, and they work
        body = {l["rel"]: l["href"] for l in first.json()["links"]}
        assert {rel: href for rel, (href, _) in links.items()} == body
        if matched > 1:
            second = httpx.get(links["next"][0], headers={"X-API-Key": key}, timeout=60)
            assert second.json()["features"][0]["id"] != first.json()["features"][0]["id"]
            assert "prev" in link_header(second)
        html = get(server, path, {"X-API-Key": key}, limit=1, f="html")
        assert html.status_code == 200
        hlinks = link_header(html)
        assert hlinks["self"] == (links["alternate"][0], "text/html")
        assert hlinks["alternate"] == (links["self"][0], "application/geo+json")
        if matched > 1:
            assert hlinks["next"][1] == "text/html"
            assert httpx.get(hlinks["next"][0], headers={"X-API-Key": key}, timeout=60).headers[
                "content-type"].startswith("text/html")


def test_link_headers_keep_the_query_and_page_both_ways(server):
    response = get(server, "/ogc/collections/villages/items", limit=10, offset=20, bbox="116.3,39.0,116.9,39.6")
    links = link_header(response)
    for rel, offset in (("self", 20), ("next", 30), ("prev", 10)):
        href = links[rel][0]
        assert f"offset={offset}" in href and "limit=10" in href and "bbox=116.3" in href, (rel, href)
    last = get(server, "/ogc/collections/villages/items", limit=10,
               offset=response.json()["numberMatched"] - 1, bbox="116.3,39.0,116.9,39.6")
    assert "next" not in link_header(last) and "prev" in link_header(last)


def test_gdal_still_reads_through_the_landing_page_with_basic_credentials(server):
    ogrinfo = shutil.which("ogrinfo")
    assert ogrinfo, "gdal-bin must be installed (make test installs it)"
    key = server.key("rural")
    listing = subprocess.run([ogrinfo, "-ro", "-q", f"OAPIF:{server.url}/ogc/", "--config", "GDAL_HTTP_AUTH", "BASIC",
                              "--config", "GDAL_HTTP_USERPWD", f"qgis:{key}"], capture_output=True, text=True,
                             timeout=180)
    assert listing.returncode == 0, listing.stderr
    assert "contractor_households" in listing.stdout and "villages" in listing.stdout


def test_collection_metadata_for_desktop_clients(server, catalog):
    doc = get(server, "/ogc/collections/villages").json()
    layer = catalog.get("villages")
    assert doc["description"].startswith(layer.description_zh) and layer.provenance in doc["description"]
    assert doc["demo"] is True and "演示数据" in doc["description"] and doc["provenance"] == layer.provenance
    assert {"大运河", "Grand Canal", layer.title_zh, layer.title_en, "公开 public", "演示数据 demo"} <= set(doc["keywords"])
    assert doc["license"] == "various"  # STAC: see the rel=license links
    [licence] = [l for l in doc["links"] if l["rel"] == "license"]
    assert "CC BY 4.0" in licence["title"] and licence["href"].endswith("/ogc/provenance")
    text = httpx.get(licence["href"], timeout=30)
    assert text.status_code == 200 and "villages" in text.text and text.headers["content-type"].startswith(
        "text/markdown")
    real = get(server, "/ogc/collections/counties").json()
    assert real["demo"] is False and "演示数据 demo" not in real["keywords"] and "演示数据" not in real["description"]
    internal = get(server, "/ogc/collections/risk_sources", {"X-API-Key": server.key("planner")}).json()
    assert "内部 internal" in internal["keywords"]


def _headers(pairs):
    return httpx.Headers(pairs)  # a list of pairs: a name may repeat, as on the wire


@pytest.mark.parametrize("pairs", [
    lambda rural, planner: [("X-API-Key", rural), ("Authorization", f"Bearer {planner}")],
    lambda rural, planner: [("X-API-Key", planner), ("Authorization", basic("u", rural)["Authorization"])],
    lambda rural, planner: [("X-API-Key", rural), ("Authorization", "Bearer not-a-key")],
    lambda rural, planner: [("X-API-Key", rural), ("X-API-Key", planner)],
    lambda rural, planner: [("Authorization", f"Bearer {rural}"), ("Authorization", "Bearer not-a-key")],
    lambda rural, planner: [("Authorization", f"Bearer {rural}"), ("Authorization", basic("u", planner)["Authorization"])],
])
def test_credentials_that_disagree_are_a_401_never_one_of_them_chosen(server, pairs):
    """Whatever the order, two different keys (or a key and a wrong one) name no one caller."""
    rural, planner = server.key("rural"), server.key("planner")
    for order in (pairs(rural, planner), pairs(rural, planner)[::-1]):
        response = httpx.get(server.url + "/ogc/collections/contractor_households", headers=_headers(order),
                             timeout=30)
        assert response.status_code == 401, (order, response.status_code)
        assert response.json()["code"] == "invalid_api_key" and "disagree" in response.json()["message"]


def test_the_same_key_sent_twice_is_one_caller(server):
    rural = server.key("rural")
    pairs = [("X-API-Key", rural), ("Authorization", f"Bearer {rural}"), ("Authorization", basic("q", rural)[
        "Authorization"])]
    response = httpx.get(server.url + "/ogc/collections/contractor_households", headers=_headers(pairs), timeout=30)
    assert response.status_code == 200 and response.json()["id"] == "contractor_households"


@pytest.mark.parametrize("pairs", [[("X-API-Key", "")], [("Authorization", "")],
                                   [("Authorization", "Basic")], [("Authorization", "Bearer")]])
def test_an_empty_credential_is_a_401_not_an_anonymous_view(server, pairs):
    response = httpx.get(server.url + "/ogc/collections", headers=_headers(pairs), timeout=30)
    assert response.status_code == 401, (pairs, response.status_code)
    assert response.json()["code"] == "invalid_api_key"


def test_a_wrong_key_beside_a_live_session_cookie_is_a_401(server):
    signed_in = httpx.post(server.url + "/maps/session", data={"api_key": server.key("rural")}, timeout=30)
    assert signed_in.status_code == 303
    cookies = {"gis_session": signed_in.cookies["gis_session"]}
    with_session = httpx.get(server.url + "/ogc/collections/contractor_households", cookies=cookies, timeout=30)
    assert with_session.status_code == 200
    wrong = httpx.get(server.url + "/ogc/collections/contractor_households", cookies=cookies,
                      headers={"Authorization": "Bearer not-a-key"}, timeout=30)
    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_api_key"


def test_a_single_feature_carries_self_alternate_and_collection_link_headers(server):
    crs = "http://www.opengis.net/def/crs/EPSG/0/4548"
    fid = get(server, "/ogc/collections/villages/items", limit=1, offset=7).json()["features"][0]["id"]
    path = f"/ogc/collections/villages/items/{fid}"
    response = get(server, path, crs=crs)
    links = link_header(response)
    assert set(links) == {"self", "alternate", "collection"}
    assert links["self"][1] == "application/geo+json" and links["alternate"][1] == "text/html"
    assert links["collection"] == (f"{server.url}/ogc/collections/villages", "application/json")
    assert {rel: href for rel, (href, _) in links.items()} == {l["rel"]: l["href"] for l in response.json()["links"]}
    again = httpx.get(links["self"][0], timeout=30)  # self names this representation: the same crs
    assert again.json() == {**response.json(), "links": again.json()["links"]}
    assert again.headers["content-crs"] == f"<{crs}>"
    page = httpx.get(links["alternate"][0], timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert httpx.get(links["collection"][0], timeout=30).json()["id"] == "villages"
    html = link_header(get(server, path, f="html", crs=crs))
    assert html["self"] == (links["alternate"][0], "text/html")
    assert html["alternate"] == (links["self"][0], "application/geo+json")


def test_openapi_documents_every_credential_and_anonymous_access(server):
    doc = get(server, "/ogc/openapi").json()
    schemes = doc["components"]["securitySchemes"]
    assert {(s["type"], s.get("scheme"), s.get("in"), s.get("name")) for s in schemes.values()} == {
        ("apiKey", None, "header", "X-API-Key"), ("http", "basic", None, None), ("http", "bearer", None, None),
        ("apiKey", None, "cookie", "gis_session")}
    assert {} in doc["security"]  # anonymous callers are served (the public layers)
    assert {name for requirement in doc["security"] for name in requirement} == set(schemes)
    # what the documentation promises, the server does: a Bearer key reads what its role may
    bearer = {"Authorization": f"Bearer {server.key('rural')}"}
    assert get(server, "/ogc/collections/contractor_households", bearer).status_code == 200


def test_every_401_carries_a_challenge_and_basic_then_reads_the_domain_endpoint(server):
    """RFC 9110 §15.5.2: a 401 carries WWW-Authenticate. Asking to sign in it is Bearer, for which browsers open
    no password dialog over the map pages (Basic would: the pages' scripts call these endpoints)."""
    anonymous = get(server, "/api/environment/risk-zones")
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "sign_in_required"
    assert anonymous.headers.get("www-authenticate") == 'Bearer realm="gis_service"'
    answered = get(server, "/api/environment/risk-zones", basic("curl", server.key("planner")))
    assert answered.status_code == 200 and answered.json()["count"] > 0


def test_a_long_query_keeps_its_link_headers_small_enough_for_curl_and_proxies_and_next_always(server):
    """A CQL2 IN list of thousands of values (what the README advises for many values) makes a 45 KB URL: four
    links to it in one header are 180 KB, which curl refuses (error 27) and nginx (4-8 KB for all headers) answers
    with a 502. The header keeps `next` (so header-reading clients page on) and what fits; the body keeps all."""
    curl = shutil.which("curl")
    assert curl, "curl must be installed"
    names = ",".join(f"'v{i:05d}'" for i in range(3000))
    url = httpx.URL(f"{server.url}/ogc/collections/villages/items",
                    params={"filter": f"name IN ({names}) OR name IS NOT NULL", "limit": 2, "offset": 4})
    assert len(str(url)) > 40_000
    done = subprocess.run([curl, "-s", "-D", "-", "-o", "/dev/null", str(url)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.returncode
    head = done.stdout
    assert head.startswith("HTTP/1.1 200")
    [link] = [line for line in head.splitlines() if line.lower().startswith("link:")]
    rels = {rel: href for href, rel, _ in LINK.findall(link)}
    body = {l["rel"]: l["href"] for l in httpx.get(url, timeout=60).json()["links"]}
    assert rels["next"] == body["next"] and set(rels) < set(body)
    assert len(link) - len(rels["next"]) <= ogc.LINK_HEADER_BUDGET
    short = link_header(get(server, "/ogc/collections/villages/items", limit=2, offset=4))
    assert set(short) == set(body)  # an ordinary page has all its links in the header
