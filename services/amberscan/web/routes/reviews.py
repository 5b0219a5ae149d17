"""Reviews of detections: confirm, reject or clear a verdict (behind the token), optionally
marking a rejected detection's positive superpixels as not mining in the same action; and each
detection's review history."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from amberscan.web import params, review_queries
from amberscan.web.core import LABEL_NAMES, BadRequest
from amberscan.web.responses import json_response
from amberscan.web.state import DB, MAP_CELLS, THRESHOLDS

routes = web.RouteTableDef()


@routes.post("/api/reviews")
async def post_review(request: web.Request) -> web.Response:
    """Body: tile_id, imagery_date, model_version, verdict (confirmed, rejected or clear),
    reviewer, note; `mark_not_mining: true` with a rejection also labels every positive
    superpixel (score at or above the classifier's threshold) not mining, for
    `amberscan train --from-reviews`. The answer says what the action replaced: `previous`
    (the earlier verdict with its reviewer, note and time, or null) and `previous_labels`
    (each marked superpixel's earlier label: mining, not_mining or null), which an undo puts
    back."""
    data = await params.body(request)
    row = await params.target(request, data)
    reviewer = params.reviewer(data.get("reviewer"))
    note = params.note(data.get("note"))
    clear = data.get("verdict") == "clear"
    verdict = None if clear else params.verdict(data.get("verdict"))
    mark = data.get("mark_not_mining", False)
    if not isinstance(mark, bool):
        raise BadRequest("mark_not_mining: true or false")
    if mark and verdict != "rejected":
        raise BadRequest("mark_not_mining goes with verdict rejected")
    marked: list[int] = []
    if mark:
        if not row["labels_key"]:
            raise BadRequest(f"tile {row['tile_id']} has no label image: nothing to label")
        threshold, _ = await request.app[THRESHOLDS].of(row)
        marked = [i for i, s in enumerate(row["scores"] or []) if float(s) >= threshold]
    saved = await review_queries.save_review(request.app[DB], row, verdict, reviewer, note, marked)
    request.app[MAP_CELLS].touch()
    return json_response(
        {
            "review": saved["verdict"] or "unreviewed",
            "reviewer": saved["reviewer"],
            "reviewed_at": saved["reviewed_at"],
            "marked_not_mining": marked,
            "previous": saved["previous"],
            "previous_labels": {
                str(i): None if label is None else LABEL_NAMES[label]
                for i, label in saved["previous_labels"].items()
            },
        }
    )


@routes.get("/api/tiles/{tile_id}/history")
async def review_history(request: web.Request) -> web.Response:
    """Every review action on one tile's imagery (the query's imagery_date, else the newest's)
    under any model, oldest first: verdicts, clears and superpixel labels, with who, when and
    the model whose detection each was made on."""
    row = await params.detection(request, params.tile_id(request))
    events = await review_queries.history(
        request.app[DB], row["tile_id"], row["imagery_date"], row["model_version"]
    )
    return json_response(
        {
            "tile_id": row["tile_id"],
            "imagery_date": row["imagery_date"],
            "model_version": row["model_version"],
            "current": row["verdict"] or "unreviewed",
            "state": row["review"],
            "events": [_event(e) for e in events],
        }
    )


def _event(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "action": event["action"],
        "segment": event["segment_index"],
        "reviewer": event["reviewer"],
        "note": event["note"],
        "at": event["at"].isoformat(),
        "model_version": event["model_version"],
    }
