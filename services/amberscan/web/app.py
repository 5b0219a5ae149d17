"""The web map and review loop: one aiohttp app over PostGIS and the blob store.

Pages (static HTML + JS that renders data with textContent only): `/` map, `/tile/{id}` tile
debugger, `/label/{id}` labelling, `/explore` projection. JSON/GeoJSON/CSV/PNG under `/api/`.
Reads are open; every write needs `Authorization: Bearer <AMBERSCAN_WEB_TOKEN>`.

This module only assembles: the route groups are in `routes/`, request parsing in `params.py`,
the token, errors and headers in `middleware.py`, keys and resources in `state.py`.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes

from aiohttp import web

from amberscan.common.settings import WebSettings, refuse_built_in_credentials
from amberscan.web import middleware, state
from amberscan.web.params import EXCLUSIONS_MAX_BODY
from amberscan.web.responses import STATIC
from amberscan.web.routes import (
    alerts,
    area,
    audits,
    changes,
    exclusions,
    explore,
    exports,
    imagery,
    models,
    review_queue,
    reviews,
    tiles,
)
from amberscan.web.routes import map as map_routes

log = logging.getLogger(__name__)
# MapLibre ships ES modules: a browser runs a module only when served as JavaScript.
mimetypes.add_type("text/javascript", ".mjs")
GROUPS = (
    map_routes,
    tiles,
    reviews,
    audits,
    explore,
    exports,
    changes,
    exclusions,
    models,
    area,
    alerts,
    imagery,
)


def make_app(settings: WebSettings) -> web.Application:
    """The web application; it opens its database pools on startup and closes them on cleanup.

    Raises:
        DefaultCredentials: built-in or example credentials outside the demo (AMBERSCAN_DEMO).
    """
    refuse_built_in_credentials(settings)
    # Exclusion polygons may be large; every other body is held to params.MAX_BODY.
    app = web.Application(middlewares=[middleware.guard], client_max_size=EXCLUSIONS_MAX_BODY)
    app[state.SETTINGS] = settings
    app[state.CSP] = middleware.content_security_policy(settings)
    app.cleanup_ctx.append(state.resources)
    app.on_response_prepare.append(middleware.safe_headers)
    for group in (*GROUPS, review_queue):
        app.add_routes(group.routes)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    return app


async def run(settings: WebSettings, stop: asyncio.Event) -> None:
    """Serve the web app on settings.web.host:web_port until `stop` is set."""
    runner = web.AppRunner(make_app(settings), access_log=log)
    await runner.setup()
    site = web.TCPSite(runner, settings.web.host, settings.web.port)
    await site.start()
    log.info("web map on http://%s:%s/", settings.web.host, settings.web.port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
