"""The model registry, read-only: which classifiers exist, which one is served, and each one's
lineage and promotion history (what `amberscan models list` and `show --json` print). Promotion
stays a command-line act, through the gate."""

from __future__ import annotations

from aiohttp import web

from amberscan.common import registry
from amberscan.web.responses import json_response
from amberscan.web.state import SETTINGS

routes = web.RouteTableDef()


@routes.get("/api/models")
async def models(request: web.Request) -> web.Response:
    return json_response(await registry.catalogue(request.app[SETTINGS].s3))


@routes.get("/api/models/{version}")
async def model(request: web.Request) -> web.Response:
    version = request.match_info["version"]
    if not version.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise web.HTTPNotFound(text="no such model version")
    try:
        return json_response(await registry.describe(request.app[SETTINGS].s3, version))
    except registry.RegistryError as error:
        raise web.HTTPNotFound(text=str(error)) from None
