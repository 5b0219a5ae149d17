"""Response helpers shared by the route groups: JSON documents, error messages, pages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web


def json_response(data: Any, status: int = 200) -> web.Response:
    """`data` as JSON; dates and other values JSON lacks become their text."""
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def error(status: int, message: str) -> web.Response:
    """`{"error": message}` with `status`."""
    return json_response({"error": message}, status=status)


STATIC = Path(__file__).parent / "static"


def page(name: str) -> web.FileResponse:
    """A static HTML page of the app (its script fetches the data)."""
    return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})
