"""The web app's middleware: the write token, errors as messages; safe headers on every response."""

from __future__ import annotations

import hmac
import html
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from amberscan.common.settings import WebSettings
from amberscan.errors import AmberscanError
from amberscan.web.core import BadRequest
from amberscan.web.responses import error
from amberscan.web.state import CSP, SETTINGS

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def content_security_policy(settings: WebSettings) -> str:
    """Scripts, styles and data from the app itself; the map's base layer also from its own
    origin (MapLibre fetches raster tiles, then draws them from blobs)."""
    tiles = urlsplit(settings.web.map_tiles_url)
    tile_origin = f"{tiles.scheme}://{tiles.netloc}" if tiles.scheme and tiles.netloc else ""
    return (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        f"img-src 'self' data: blob: {tile_origin}; connect-src 'self' {tile_origin}; "
        "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )


def token_ok(request: web.Request, token: str) -> bool:
    """The request carries `Authorization: Bearer <token>` (compared in constant time)."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def refuse_without_token(request: web.Request) -> web.Response | None:
    """The 403/401 answer to a request that needs the token and lacks it; None when it has it."""
    token = request.app[SETTINGS].web.token
    if not token:
        return error(
            403, "writes are disabled on this server: set AMBERSCAN_WEB_TOKEN to enable them"
        )
    if not token_ok(request, token):
        return error(401, "missing or wrong token: send 'Authorization: Bearer <token>'")
    return None


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Writes need the bearer token; errors become JSON with a message; safe headers."""
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        refusal = refuse_without_token(request)
        if refusal is not None:
            return refusal
    response: web.StreamResponse
    try:
        response = await handler(request)
    except BadRequest as problem:
        response = error(400, str(problem))
    except web.HTTPException as problem:
        if problem.status >= 400 and request.path.startswith("/api/"):
            response = error(problem.status, problem.text or problem.reason)
        elif problem.status >= 400:
            response = web.Response(
                status=problem.status,
                content_type="text/html",
                text=f"<!doctype html><title>{problem.status}</title>"
                f"<p>{html.escape(problem.text or problem.reason)}</p><p><a href='/'>map</a></p>",
            )
        else:
            raise
    except AmberscanError as problem:
        log.warning("%s %s: %s", request.method, request.path, problem)
        response = error(500, str(problem))
    return response


async def safe_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: every response, streamed ones too, gets the safe headers."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Content-Security-Policy", request.app[CSP])
    response.headers.setdefault("Referrer-Policy", "same-origin")
