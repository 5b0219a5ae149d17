"""The review queue: tiles ordered by how much a verdict would teach the model (`queue.py`'s
rule), and the `/review` page that steps through them with the keyboard. Verdicts go through
`POST /api/reviews` (`routes/reviews.py`) with the token, like every other write."""

from __future__ import annotations

import contextlib
from typing import Any

from aiohttp import web

from amberscan.web import params, queue, review_queries
from amberscan.web.core import Filters
from amberscan.web.export_queries import row_threshold
from amberscan.web.responses import json_response, page
from amberscan.web.state import BUDGET, DB, THRESHOLDS

routes = web.RouteTableDef()
DEFAULT_QUEUE = 20
MAX_QUEUE = 200


@routes.get("/review")
async def review_page(request: web.Request) -> web.StreamResponse:
    return page("review.html")


@routes.get("/api/review-queue")
async def review_queue(request: web.Request) -> web.Response:
    """Query: `scan` (a scan id), `bbox` (W,S,E,N), `year` (a vintage), `model`, `limit`
    (1-200, default 20). The first `limit` tiles of the queue with their priority and its
    reasons, the threshold and decisive score, the other model's and the previous vintage's
    flags; `matched` counts every tile in the queue under these filters."""
    query = request.query
    parsed = params.parse_filters(
        {k: query[k] for k in ("bbox", "year", "model") if k in query}, bbox_required=False
    )
    filters = Filters(bbox=parsed.bbox, year=parsed.year, model=parsed.model)
    scan = params.scan_id(query["scan"]) if query.get("scan") else ""
    limit = params.int_param(query, "limit", DEFAULT_QUEUE, 1, MAX_QUEUE)
    # Unscoped, the queue weighs every unreviewed tile of the survey: heavy.
    scoped = bool(scan) or filters.bbox is not None
    top: queue.Top[dict[str, Any]] = queue.Top(limit)
    missing: set[str] = set()  # versions the registry lacks: asked once a request
    async with contextlib.nullcontext() if scoped else request.app[BUDGET].heavy(request):
        async for row in review_queries.queue_rows(request.app[DB], filters, scan):
            row["threshold"], _ = await row_threshold(row, request.app[THRESHOLDS], missing)
            top.add(_candidate(row), row)
    return json_response(
        {
            "rule": queue.RULE,
            "matched": top.matched,
            "tiles": [_item(row, p) for _, p, row in top.head()],
        }
    )


def _candidate(row: dict[str, Any]) -> queue.Candidate:
    return queue.Candidate(
        tile_id=row["tile_id"],
        imagery_date=row["imagery_date"],
        model_version=row["model_version"],
        flagged=bool(row["flagged"]),
        scores=[float(s) for s in row["scores"] or []],
        threshold=row["threshold"],
        min_positives=int(row["min_positives"]),
        other_flagged=row["other_flagged"],
        previous_flagged=row["previous_flagged"],
        reviewed=row["verdict"] is not None,
        reflagged=row["review"] == "reflagged",
    )


def _item(row: dict[str, Any], weighed: queue.Priority) -> dict[str, Any]:
    previous = None
    if row["previous_date"] is not None:
        previous = {
            "imagery_date": row["previous_date"],
            "model_version": row["previous_model"],
            "flagged": bool(row["previous_flagged"]),
        }
    decisive = weighed.decisive_score
    return {
        "tile_id": row["tile_id"],
        "imagery_date": row["imagery_date"],
        "model_version": row["model_version"],
        "scan_id": row["scan_id"],
        "flagged": bool(row["flagged"]),
        "positives": int(row["positives"]),
        "segment_count": int(row["segment_count"]),
        "min_positives": int(row["min_positives"]),
        "hectares": round(float(row["hectares"]), 4),
        "demo": bool(row["demo"]),
        "review": row["review"],
        "threshold": round(float(row["threshold"]), 4),
        "decisive_score": None if decisive is None else round(decisive, 4),
        "priority": round(weighed.value, 4),
        "reasons": weighed.reasons,
        "other_model": row["other_model"] or "",
        "other_flagged": row["other_flagged"],
        "previous": previous,
    }
