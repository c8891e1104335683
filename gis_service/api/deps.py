"""Shared request dependencies: the service container, the caller's role, the response format.

Dependencies are ``async`` although they do not await: FastAPI runs sync dependencies in a thread pool,
which costs more than the work they do."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Header, Request
from pydantic import BaseModel, Field

from ..auth import KeyStore, Principal
from ..catalog import Catalog
from ..config import Settings
from ..errors import GisError
from ..privacy import AccessLog
from ..store import GeoPackageStore

API_KEY_COOKIE = "gis_api_key"


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    store: GeoPackageStore
    keys: KeyStore
    access_log: AccessLog


class ErrorBody(BaseModel):
    code: str = Field(description="错误代码 machine-readable error code")
    message: str = Field(description="中文说明 / English explanation")


ERROR_RESPONSES = {status: {"model": ErrorBody, "description": desc} for status, desc in (
    (400, "请求参数无效 Bad request"), (401, "API 密钥无效 Invalid API key"),
    (403, "无权访问 Forbidden"), (404, "未找到 Not found"), (422, "无法处理的输入 Unprocessable input"))}


async def services(request: Request) -> Services:
    return request.app.state.services


def caller(request: Request) -> Principal | None:
    """The caller, from the X-API-Key header (or the key cookie set by the map pages); None = anonymous."""
    key = request.headers.get("x-api-key") or request.cookies.get(API_KEY_COOKIE)
    if not key:
        return None
    found = request.app.state.services.keys.lookup(key)
    if found is None:
        raise GisError("invalid_api_key", "API 密钥无效或已吊销", "the API key is invalid or revoked", 401)
    return found


async def principal(request: Request,
                    x_api_key: str | None = Header(None, alias="X-API-Key", description="API 密钥（可选）")
                    ) -> Principal | None:
    """Dependency form of caller(); the parameter documents the header in OpenAPI."""
    return caller(request)


API_KEY_PARAMETER = {"name": "X-API-Key", "in": "header", "required": False, "description": "API 密钥（可选）",
                     "schema": {"type": "string"}}


def wants_html(request: Request, f: str | None) -> bool:
    if f is not None:
        if f not in ("json", "html"):
            raise GisError("bad_parameter", "参数 f 只能是 json 或 html", "parameter f must be json or html", 400)
        return f == "html"
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "json" not in accept
