"""/api/flood: depth reports, point status, closures, history (thin: parsing here, logic in reports.py)."""

from __future__ import annotations

from fastapi import APIRouter

from ..api.deps import ERROR_RESPONSES
from ..domains import DomainContext


def router(ctx: DomainContext) -> APIRouter:
    r = APIRouter(responses=ERROR_RESPONSES)

    @r.get("/rules", summary="防汛规则 Flood rules in force")
    def rules():
        return {"rules": [rule.as_dict() for rule in ctx.rules]}

    return r
