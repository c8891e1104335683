"""Shared request dependencies: the service container, the caller's role, the response format.

``services`` is ``async`` although it does not await (FastAPI runs sync dependencies in the thread pool,
which costs more than returning an attribute); ``principal`` is sync because it may read SQLite."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from fastapi import Header, Request, Response
from pydantic import BaseModel, Field

from ..auth import KeyStore, Principal
from ..catalog import Catalog
from ..config import Settings
from ..errors import GisError
from ..privacy import AccessLog
from ..rules import RuleBook
from ..store import RecordStore, Store

SESSION_COOKIE = "gis_session"  # a session token (see auth.KeyStore.create_session), never the key itself
OLD_KEY_COOKIE = "gis_api_key"  # held the raw key before sessions existed: cleared, never read


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    store: Store
    keys: KeyStore
    access_log: AccessLog
    rules: RuleBook
    records: RecordStore
    domains: list  # gis_service.domains.Domain, in name order
    domain_contexts: dict  # domain name -> gis_service.domains.DomainContext


class ErrorBody(BaseModel):
    code: str = Field(description="错误代码 machine-readable error code")
    message: str = Field(description="中文说明 / English explanation")


# OpenAPI extension of a route that streams its request body to disk and enforces its own size limit (a file
# import): the application's 5 MB request-body cap (api/app.py BodyLimit) does not apply to it.
STREAMED_BODY = "x-streamed-body"
ERROR_RESPONSES = {status: {"model": ErrorBody, "description": desc} for status, desc in (
    (400, "请求参数无效 Bad request"),
    (401, "API 密钥无效（X-API-Key、Authorization: Basic 或 Bearer） Invalid API key"),
    (403, "无权访问 Forbidden"), (404, "未找到 Not found"), (422, "无法处理的输入 Unprocessable input"))}


async def services(request: Request) -> Services:
    return request.app.state.services


AUTH_REALM = "gis_service"  # the realm desktop clients (QGIS, GDAL, curl) show when they ask for a password


class Unauthenticated(GisError):
    """A 401 with the WWW-Authenticate header every 401 must carry (RFC 9110 §15.5.2). Asking to sign in, the
    challenge is Bearer: browsers show no password dialog for it (a map page's script gets the 401 and shows its
    own sign-in notice). A wrong key's challenge is Basic, which makes desktop clients (QGIS, GDAL) ask again."""

    def __init__(self, code: str, message_zh: str, message_en: str, scheme: str = "Bearer"):
        super().__init__(code, message_zh, message_en, 401)
        charset = ', charset="UTF-8"' if scheme == "Basic" else ""  # RFC 7617 §2.1
        self.headers = {"WWW-Authenticate": f'{scheme} realm="{AUTH_REALM}"{charset}'}


class InvalidKey(Unauthenticated):
    """401 for a key that names no live key."""

    def __init__(self, message_zh: str = "API 密钥无效或已吊销", message_en: str = "the API key is invalid or revoked"):
        super().__init__("invalid_api_key", message_zh, message_en, scheme="Basic")


def presented_key(request: Request) -> str | None:
    """The key the caller presents: an X-API-Key header, `Authorization: Basic` (the key is the password, any
    user name: what QGIS's authentication manager and GDAL send) or `Authorization: Bearer <key>`.

    None when the request carries none of these headers. Every such header is read (a name may repeat): an
    empty, malformed or unsupported one, or two that name different keys, is a 401, never a silent anonymous
    view nor a choice between them. The key is only ever read from headers, never from the URL."""
    keys = {_key_of(name, value) for name, value in request.headers.items() if name in ("x-api-key", "authorization")}
    if len(keys) > 1:
        raise InvalidKey("请求中的凭据不一致（X-API-Key 与 Authorization 或重复的头给出了不同的密钥）",
                         "the credentials disagree (X-API-Key, Authorization or a repeated header carry different keys)")
    return keys.pop() if keys else None


def _key_of(name: str, header: str) -> str:
    header = header.strip()
    if name == "x-api-key":
        if not header:
            raise InvalidKey("X-API-Key 为空", "the X-API-Key header is empty")
        return header
    scheme, _, value = header.partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer" and value:
        return value
    if scheme == "basic" and value:
        try:
            _, sep, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidKey("Authorization: Basic 的内容不是有效的 Base64（用户名:密钥）",
                             "Authorization: Basic is not valid base64 of user:key") from None
        if not sep or not password:
            raise InvalidKey("Authorization: Basic 须以 API 密钥作为密码（用户名任意）",
                             "Authorization: Basic needs the API key as the password (any user name)")
        return password
    raise InvalidKey("不支持的 Authorization 方式：请用 Basic（密码为 API 密钥）、Bearer 或 X-API-Key",
                     "unsupported Authorization scheme: use Basic (password = API key), Bearer or X-API-Key")


def caller(request: Request) -> Principal | None:
    """The caller, from a presented key (presented_key) or else the map pages' session cookie; None = anonymous.

    A wrong key is a 401. A session cookie that names no live session (expired, signed out, key revoked,
    unknown) is no error: the caller is anonymous and the request is marked (session_ended) so that the map
    pages show the sign-in form with a notice and clear the cookie."""
    keys = request.app.state.services.keys
    key = presented_key(request)
    if key is not None:
        found = keys.lookup(key)
        if found is None:
            raise InvalidKey()
        return found
    cookies = request.cookies
    token = cookies.get(SESSION_COOKIE)
    found = keys.session(token) if token else None
    if found is None and (token or OLD_KEY_COOKIE in cookies):
        request.state.session_ended = True
    return found


def session_ended(request: Request) -> bool:
    """True when caller() found a session cookie that no longer names a live session."""
    return getattr(request.state, "session_ended", False)


def _cookie_flags(request: Request) -> dict:
    # Behind a proxy uvicorn takes the scheme from X-Forwarded-Proto (trusted from FORWARDED_ALLOW_IPS only).
    return dict(path="/", secure=request.url.scheme == "https", httponly=True, samesite="strict")


def set_session_cookie(response: Response, request: Request, token: str, hours: float) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=max(1, round(hours * 3600)), **_cookie_flags(request))
    if OLD_KEY_COOKIE in request.cookies:
        response.delete_cookie(OLD_KEY_COOKIE, **_cookie_flags(request))


def clear_session_cookies(response: Response, request: Request) -> None:
    for name in (SESSION_COOKIE, OLD_KEY_COOKIE):
        response.delete_cookie(name, **_cookie_flags(request))


def principal(request: Request,
              x_api_key: str | None = Header(None, alias="X-API-Key", description="API 密钥（可选）")
              ) -> Principal | None:
    """Dependency form of caller(); the parameter documents the header in OpenAPI. Synchronous on purpose:
    a key or session the cache has not seen is read from SQLite, so FastAPI runs it in the thread pool."""
    return caller(request)


def require_role(who: Principal | None, roles: tuple[str, ...] | None, what_zh: str, what_en: str) -> Principal:
    """The caller if signed in (and in roles, when given); else 401 (anonymous) or 403 (another role)."""
    if who is None:
        raise Unauthenticated("sign_in_required", f"{what_zh}需要登录或 API 密钥（X-API-Key 或 Authorization）",
                              f"{what_en} requires an API key (X-API-Key or Authorization) or a signed-in session")
    if roles is not None and who.role not in roles:
        raise GisError("forbidden", f"角色 {who.role} 无权{what_zh}（限 {'、'.join(roles)}）",
                       f"role '{who.role}' may not {what_en} (only {', '.join(roles)})", 403)
    return who


# The credentials caller() accepts, for the OpenAPI document (components.securitySchemes); {} = anonymous.
SECURITY_SCHEMES = {
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "API 密钥 API key"},
    "basicAuth": {"type": "http", "scheme": "basic",
                  "description": "用户名任意，密码为 API 密钥（QGIS、GDAL） any user name, the API key as password"},
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API 密钥 API key>"},
    "sessionCookie": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                      "description": "地图页面登录会话（POST /maps/session） map pages' session"},
}
SECURITY = [{}, *({name: []} for name in SECURITY_SCHEMES)]

API_KEY_PARAMETER = {"name": "X-API-Key", "in": "header", "required": False, "description": "API 密钥（可选）",
                     "schema": {"type": "string"}}


def wants_html(request: Request, f: str | None) -> bool:
    if f is not None:
        if f not in ("json", "html"):
            raise GisError("bad_parameter", "参数 f 只能是 json 或 html", "parameter f must be json or html", 400)
        return f == "html"
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "json" not in accept
