"""HTTP helpers of the web tests: GET and POST against a served app, with the test token."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.web.conftest import TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def fetch(url: str, **params: str) -> tuple[int, Any, str]:
    """(status, body, content type); the body is JSON, text or bytes by its content type."""
    async with aiohttp.ClientSession() as s, s.get(url, params=params) as r:
        if "json" in r.content_type:
            return r.status, await r.json(content_type=None), r.content_type
        if r.content_type.startswith("text/"):
            return r.status, await r.text(), r.content_type
        return r.status, await r.read(), r.content_type


async def get(url: str, **params: str) -> tuple[int, Any]:
    status, body, _ = await fetch(url, **params)
    return status, body


async def post(url: str, body: object, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(url, json=body, headers=headers or {}) as r:
        return r.status, await r.json()


def target(detection: Any) -> dict[str, str]:
    """The body fields that name one detection (a pb.Detection) in a write."""
    return {
        "tile_id": detection.tile_id,
        "imagery_date": detection.imagery_date,
        "model_version": detection.models.classifier,
    }
