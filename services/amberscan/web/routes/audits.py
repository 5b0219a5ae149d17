"""Precision audits: a random sample of flagged detections, judged through the reviews, with
the 95 % Wilson interval of the precision."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from amberscan.web import core, params, review_queries
from amberscan.web.responses import json_response, page
from amberscan.web.state import DB

routes = web.RouteTableDef()
MAX_AUDIT = 10_000


@routes.get("/audit")
@routes.get("/audit/{audit_id}")  # audit.js draws a sample on /audit, steps through it on /audit/ID
async def audit_page(request: web.Request) -> web.StreamResponse:
    if "audit_id" in request.match_info:
        params.audit_id(request)
    return page("audit.html")


@routes.post("/api/audits")
async def post_audit(request: web.Request) -> web.Response:
    data = await params.body(request)
    n = data.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_AUDIT:
        raise core.BadRequest(f"n: an integer from 1 to {MAX_AUDIT}")
    filters = params.parse_filters(
        {k: str(data[k]) for k in ("year", "model", "bbox") if data.get(k)}, bbox_required=False
    )
    reviewer = params.reviewer(data.get("reviewer"))
    audit_id = await review_queries.create_audit(request.app[DB], n, filters, reviewer)
    return json_response(await _report(request, audit_id), status=201)


@routes.get("/api/audits/{audit_id}")
async def get_audit(request: web.Request) -> web.Response:
    return json_response(await _report(request, params.audit_id(request)))


async def _report(request: web.Request, audit_id: int) -> dict[str, Any]:
    audit = await review_queries.audit(request.app[DB], audit_id)
    if audit is None:
        raise web.HTTPNotFound(text=f"no audit {audit_id}")
    tiles = audit["tiles"]
    confirmed = sum(1 for t in tiles if t["verdict"] == "confirmed")
    rejected = sum(1 for t in tiles if t["verdict"] == "rejected")
    interval = core.wilson_interval(confirmed, confirmed + rejected)
    return {
        "id": audit["audit_id"],
        "requested": audit["requested"],
        "sampled": len(tiles),
        "reviewed": confirmed + rejected,
        "confirmed": confirmed,
        "rejected": rejected,
        "complete": confirmed + rejected == len(tiles),
        "precision": interval.estimate,
        "ci95": None if interval.low is None else [interval.low, interval.high],
        "created_by": audit["created_by"],
        "created_at": audit["created_at"],
        "tiles": [
            {
                "tile_id": t["tile_id"],
                "imagery_date": t["imagery_date"],
                "model_version": t["model_version"],
                "review": core.review_state(t["verdict"]),
            }
            for t in tiles
        ],
    }
