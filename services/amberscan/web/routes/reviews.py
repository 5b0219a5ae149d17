"""Reviews of detections: confirm, reject or clear a verdict (behind the token)."""

from __future__ import annotations

from aiohttp import web

from amberscan.web import params, queries
from amberscan.web.responses import json_response
from amberscan.web.state import DB

routes = web.RouteTableDef()


@routes.post("/api/reviews")
async def post_review(request: web.Request) -> web.Response:
    data = await params.body(request)
    row = await params.target(request, data)
    reviewer = params.reviewer(data.get("reviewer"))
    note = params.note(data.get("note"))
    key = (row["tile_id"], row["imagery_date"], row["model_version"])
    if data.get("verdict") == "clear":
        await queries.delete_review(request.app[DB], *key)
        return json_response({"review": "unreviewed"})
    verdict = params.verdict(data.get("verdict"))
    saved = await queries.save_review(request.app[DB], *key, verdict, reviewer, note)
    return json_response(
        {
            "review": saved["verdict"],
            "reviewer": saved["reviewer"],
            "reviewed_at": saved["reviewed_at"],
        }
    )
