"""Map-page sign-in over a live server: the cookie holds a server-side session, never the key; a session dies
on expiry, sign-out or revocation of its key, and a caller whose session died sees the sign-in page again."""

import hashlib
import time

import httpx
import pytest

from gis_service.auth import KeyStore
from gis_service.backends import open_key_store

NOTICE = "会话已过期或已注销，请重新登录"
SIGN_IN_FORM = 'action="/maps/session"'


@pytest.fixture()
def browser(server):
    """An httpx client that keeps cookies like a browser and records every Set-Cookie header it receives."""
    set_cookies: list[str] = []

    def record(response):
        set_cookies.extend(response.headers.get_list("set-cookie"))

    with httpx.Client(base_url=server.url, timeout=30, event_hooks={"response": [record]}) as client:
        client.set_cookies = set_cookies
        yield client


def _sign_in(client, key, **headers):
    r = client.post("/maps/session", data={"api_key": key}, headers=headers)
    assert r.status_code == 303 and r.headers["location"] == "/maps/"
    return r


def _session_cookie(response) -> str:
    return next(h for h in response.headers.get_list("set-cookie") if h.startswith("gis_session="))


def _cleared(response, name="gis_session") -> bool:
    return any(h.startswith(f"{name}=") and "max-age=0" in h.lower() for h in response.headers.get_list("set-cookie"))


def _assert_anonymous_with_notice(r):
    assert r.status_code == 200
    assert "当前为匿名访问" in r.text and SIGN_IN_FORM in r.text and NOTICE in r.text
    assert "contractor_households" not in r.text
    assert _cleared(r)


def test_sign_in_cookie_is_a_session_token_stored_only_as_hash(server, browser):
    key = server.keys.add("rural", "session-cookie")
    r = _sign_in(browser, key)
    cookie = _session_cookie(r)
    token = cookie.split(";")[0].split("=", 1)[1]
    flags = [f.strip().lower() for f in cookie.split(";")[1:]]
    assert key not in cookie and len(token) >= 40
    assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags and "secure" not in flags
    assert "max-age=28800" in flags  # GIS_SESSION_HOURS default 8
    stored = server.key_storage()
    assert token.encode() not in stored and key.encode() not in stored
    [(name, role, created, expires)] = server.key_sql(
        "SELECT name, role, created_at, expires_at FROM sessions WHERE token_hash = ?",
        (hashlib.sha256(token.encode()).hexdigest(),))
    assert (name, role) == ("session-cookie", "rural")
    from datetime import datetime
    assert (datetime.fromisoformat(expires) - datetime.fromisoformat(created)).total_seconds() == 8 * 3600
    page = browser.get("/maps/")
    assert "session-cookie（rural）" in page.text and "/maps/layers/contractor_households" in page.text
    assert 'action="/maps/session/delete"' in page.text and SIGN_IN_FORM not in page.text
    assert all(key not in h for h in browser.set_cookies)


def test_cookie_is_secure_when_the_request_came_over_https(server, browser):
    r = _sign_in(browser, server.keys.add("planner", "session-https"), **{"X-Forwarded-Proto": "https"})
    assert "secure" in [f.strip().lower() for f in _session_cookie(r).split(";")]


def test_revoking_the_key_ends_its_sessions_and_shows_the_sign_in_page(server, browser):
    key = server.keys.add("rural", "session-revoked")
    _sign_in(browser, key)
    assert browser.get("/ogc/collections/contractor_households").status_code == 200
    assert "session-revoked" in browser.get("/maps/").text  # the server has now cached the session
    assert open_key_store(server.settings).revoke("session-revoked") == 1  # another process, like the CLI
    layer = browser.get("/maps/layers/contractor_households")
    assert layer.status_code == 303 and layer.headers["location"] == "/maps/"
    assert browser.get("/ogc/collections/contractor_households").status_code == 404  # anonymous, not a 401
    assert browser.get("/ogc/collections/counties/items", params={"limit": 1}).status_code == 200
    _assert_anonymous_with_notice(browser.get("/maps/"))
    again = browser.get("/maps/")  # the browser dropped the cookie: plain anonymous, no notice
    assert NOTICE not in again.text and SIGN_IN_FORM in again.text
    header = httpx.get(server.url + "/ogc/collections", headers={"X-API-Key": key})
    assert header.status_code == 401 and set(header.json()) == {"code", "message"}
    assert all(key not in h for h in browser.set_cookies)


def test_sign_out_ends_the_session_on_the_server(server, browser):
    key = server.keys.add("rural", "session-signout")
    token = _session_cookie(_sign_in(browser, key)).split(";")[0].split("=", 1)[1]
    assert "session-signout" in browser.get("/maps/").text
    out = browser.post("/maps/session/delete")
    assert out.status_code == 303 and _cleared(out)
    assert "当前为匿名访问" in browser.get("/maps/").text
    replayed = httpx.get(server.url + "/maps/", cookies={"gis_session": token})
    _assert_anonymous_with_notice(replayed)
    assert httpx.get(server.url + "/maps/api/contractor_households/features", cookies={"gis_session": token},
                     params={"bbox": "116.3,39.0,116.6,39.2"}).status_code == 404  # anonymous cannot see it


def test_expired_session_is_anonymous(server, browser):
    _sign_in(browser, server.keys.add("rural", "session-expired"))
    assert "session-expired" in browser.get("/maps/").text
    server.key_sql("UPDATE sessions SET expires_at = '2020-01-01T00:00:00.000+00:00' WHERE name = 'session-expired'")
    _assert_anonymous_with_notice(browser.get("/maps/"))


def test_unknown_session_and_the_old_key_cookie_are_anonymous(server):
    _assert_anonymous_with_notice(httpx.get(server.url + "/maps/", cookies={"gis_session": "forged"}))
    old = httpx.get(server.url + "/maps/", cookies={"gis_api_key": server.key("rural")})  # the cookie before sessions
    assert "当前为匿名访问" in old.text and NOTICE in old.text and _cleared(old, "gis_api_key")


@pytest.mark.parametrize("key", ["lf_wrong", ""])
def test_wrong_key_shows_the_sign_in_page_again(server, browser, key):
    r = browser.post("/maps/session", data={"api_key": key})
    assert r.status_code == 401 and r.headers["content-type"].startswith("text/html")
    assert "API 密钥无效或已吊销" in r.text and SIGN_IN_FORM in r.text
    assert "gis_session" not in browser.cookies


def test_signing_in_again_replaces_the_previous_session(server, browser):
    key = server.keys.add("planner", "session-twice")
    first = _session_cookie(_sign_in(browser, key)).split(";")[0].split("=", 1)[1]
    _sign_in(browser, key)
    _assert_anonymous_with_notice(httpx.get(server.url + "/maps/", cookies={"gis_session": first}))
    assert "session-twice" in browser.get("/maps/").text


# --- KeyStore without HTTP: the per-process cache never serves a dead session ---------------------------

def test_cached_session_expires_on_time(tmp_path):
    keys = KeyStore(tmp_path / "keys.sqlite")
    token = keys.create_session(keys.add("flood", "值班员"), hours=0.5 / 3600)
    assert keys.session(token).name == "值班员"  # now cached
    time.sleep(0.6)
    assert keys.session(token) is None


def test_a_write_by_another_process_drops_every_cache(tmp_path):
    worker_a, worker_b = KeyStore(tmp_path / "keys.sqlite"), KeyStore(tmp_path / "keys.sqlite")
    key = worker_a.add("flood", "值班员")
    token, other = worker_a.create_session(key, 8), worker_a.create_session(key, 8)
    assert worker_a.session(token) and worker_a.session(other) and worker_a.lookup(key)
    assert worker_b.end_session(token)
    assert worker_a.session(token) is None and worker_a.session(other) is not None
    worker_b.revoke("值班员")
    assert worker_a.session(other) is None and worker_a.lookup(key) is None
    assert worker_a.create_session(key, 8) is None


def test_browser_signs_in_is_signed_out_by_revocation_and_signs_out(server):
    """Headless Chromium (nothing off 127.0.0.1): the form, the SameSite=Strict cookie, the notice, the button."""
    from playwright.sync_api import sync_playwright

    key = server.keys.add("rural", "session-browser")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(server.url) else r.abort())
        page.goto(server.url + "/maps/")
        with page.expect_navigation():
            page.fill('input[name="api_key"]', key)
            page.click('form[action="/maps/session"] button')
        assert "session-browser（rural）" in page.content()
        cookies = {c["name"]: c for c in page.context.cookies()}
        assert set(cookies) == {"gis_session"} and cookies["gis_session"]["httpOnly"]
        assert cookies["gis_session"]["sameSite"] == "Strict" and key not in cookies["gis_session"]["value"]
        page.goto(server.url + "/maps/layers/contractor_households")
        server.keys.revoke("session-browser")
        page.reload()  # the layer page sends the browser to the index, which says why
        assert page.url == server.url + "/maps/" and NOTICE in page.content()
        assert page.is_visible('input[name="api_key"]') and page.context.cookies() == []
        with page.expect_navigation():
            page.fill('input[name="api_key"]', server.keys.add("rural", "session-browser-2"))
            page.click('form[action="/maps/session"] button')
        assert "session-browser-2（rural）" in page.content()
        with page.expect_navigation():
            page.click('form[action="/maps/session/delete"] button')
        assert "当前为匿名访问" in page.content() and page.context.cookies() == []
        browser.close()
