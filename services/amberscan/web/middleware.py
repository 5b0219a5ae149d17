"""The web app's middleware: the write token, errors as messages (a server's failure generically,
with a request id), safe headers on every response."""

from __future__ import annotations

import hmac
import html
import logging
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import psycopg
from aiohttp import web
from psycopg_pool import PoolTimeout

from amberscan.common.settings import WebSettings
from amberscan.errors import TransientError
from amberscan.web.core import BadRequest
from amberscan.web.limits import Busy
from amberscan.web.responses import STREAMING, error
from amberscan.web.state import CSP, SETTINGS

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID = "amberscan.request_id"


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
    """Writes need the bearer token; errors become JSON with a message; safe headers.

    A server-side failure is answered generically with the request's id (also in the
    `X-Request-Id` header); its details (hosts, keys, queries) go only to the log, under that id.
    """
    request[REQUEST_ID] = uuid.uuid4().hex[:16]
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
            response.headers.update(
                {k: v for k, v in problem.headers.items() if k.lower() == "retry-after"}
            )
        elif problem.status >= 400:
            response = web.Response(
                status=problem.status,
                content_type="text/html",
                text=f"<!doctype html><title>{problem.status}</title>"
                f"<p>{html.escape(problem.text or problem.reason)}</p><p><a href='/'>map</a></p>",
                headers={k: v for k, v in problem.headers.items() if k.lower() == "retry-after"},
            )
        else:
            raise
    except Exception as problem:  # noqa: BLE001 - every failure answered, its details logged
        if request.get(STREAMING):
            raise  # the download has started: aiohttp cuts the connection
        response = server_failure(request, problem)
    return response


def server_failure(request: web.Request, problem: Exception) -> web.Response:
    """The generic answer to a failure of the server's own (its details logged)."""
    request_id = request[REQUEST_ID]
    where = f"{request.method} {request.path_qs} (request {request_id})"
    # `Database.fetch` raises a statement timeout as a TransientError caused by it.
    if isinstance(problem, psycopg.errors.QueryCanceled) or isinstance(
        problem.__cause__, psycopg.errors.QueryCanceled
    ):
        timeout = request.app[SETTINGS].web.statement_timeout_s
        log.warning("%s: statement timeout: %s", where, problem)
        return error(
            503,
            f"the database took longer than AMBERSCAN_WEB_STATEMENT_TIMEOUT_S ({timeout:g} s) "
            "for this request: narrow the view or the filters, or try again later",
            request_id,
            {"Retry-After": "5"},
        )
    if isinstance(problem, Busy | PoolTimeout):
        log.warning("%s: busy: %s", where, problem)
        return error(503, "the map is busy; try again shortly", request_id, {"Retry-After": "1"})
    if isinstance(problem, TransientError):
        log.warning("%s: %s", where, problem, exc_info=problem)
        return error(
            503,
            f"a service the map needs did not answer; try again (request {request_id})",
            request_id,
            {"Retry-After": "5"},
        )
    log.error("%s: %s: %s", where, type(problem).__name__, problem, exc_info=problem)
    return error(500, f"internal error (request {request_id}: the server's log has it)", request_id)


async def safe_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: every response, streamed ones too, gets the safe headers."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Content-Security-Policy", request.app[CSP])
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if REQUEST_ID in request:
        response.headers.setdefault("X-Request-Id", request[REQUEST_ID])
