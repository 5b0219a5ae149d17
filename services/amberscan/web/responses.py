"""Response helpers shared by the route groups: JSON documents, error messages, pages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from aiohttp import web

from amberscan.web.state import SETTINGS


def json_response(data: Any, status: int = 200) -> web.Response:
    """`data` as JSON; dates and other values JSON lacks become their text."""
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def error(
    status: int, message: str, request_id: str = "", headers: dict[str, str] | None = None
) -> web.Response:
    """`{"error": message}` with `status` (and the request's id, for a server's failure)."""
    body: dict[str, str] = {"error": message}
    if request_id:
        body["request_id"] = request_id
    response = json_response(body, status=status)
    response.headers.update(headers or {})
    return response


# Set on a request once its download has started: a failure after that cannot be a status (the
# middleware lets aiohttp close the connection; the client sees a cut download).
STREAMING = "amberscan.streaming"


class DownloadStalled(ConnectionResetError):
    """The client of a download read nothing for `AMBERSCAN_WEB_EXPORT_STALL_S`: it is cut."""


STATIC = Path(__file__).parent / "static"


def page(name: str) -> web.FileResponse:
    """A static HTML page of the app (its script fetches the data)."""
    return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})


async def stream_rows(
    request: web.Request,
    rows: AsyncIterator[Any],
    *,
    content_type: str,
    filename: str,
    head: str,
    chunk: Callable[[list[Any], bool], str],
    tail: str = "",
    batch: int = 500,
) -> web.StreamResponse:
    """A download written as the rows arrive: `head`, then `chunk(rows, first)` for each batch of
    `batch` rows, then `tail`; memory holds one batch, whatever the total.

    A client that reads nothing for `AMBERSCAN_WEB_EXPORT_STALL_S` is cut (`DownloadStalled`),
    and however the download ends, `rows` is closed at once, so its database connection goes
    back to the pool then, not when the generator is collected."""
    response = _download(content_type, filename)
    send = _sender(request, response)

    async def write(text: str) -> None:
        await send(text.encode())

    try:
        await response.prepare(request)
        request[STREAMING] = True
        await write(head)
        pending: list[Any] = []
        first = True
        async for row in rows:
            pending.append(row)
            if len(pending) >= batch:
                await write(chunk(pending, first))
                pending, first = [], False
        if pending:
            await write(chunk(pending, first))
        await write(tail)
    finally:  # a generator's connection goes back now, not when the generator is collected
        close = getattr(rows, "aclose", None)
        if close is not None:
            await close()
    await response.write_eof()
    return response


def _download(content_type: str, filename: str) -> web.StreamResponse:
    return web.StreamResponse(
        headers={
            "Content-Type": content_type,
            "Content-Disposition": f'attachment; filename="{filename}"',
        }
    )


def _sender(
    request: web.Request, response: web.StreamResponse
) -> Callable[[bytes], Awaitable[None]]:
    """`response.write`, cut (`DownloadStalled`) when the client reads nothing for
    `AMBERSCAN_WEB_EXPORT_STALL_S`."""
    stall_s = request.app[SETTINGS].web.export_stall_s

    async def send(data: bytes) -> None:
        try:
            async with asyncio.timeout(stall_s):
                await response.write(data)
        except TimeoutError:
            if request.transport is not None:
                request.transport.abort()
            raise DownloadStalled(
                f"{request.path}: the client read nothing for {stall_s:g} s "
                "(AMBERSCAN_WEB_EXPORT_STALL_S); download cut"
            ) from None

    return send


async def stream_file(
    request: web.Request, path: Path, *, content_type: str, filename: str, chunk: int = 1 << 18
) -> web.StreamResponse:
    """The file at `path` as a download, read and sent `chunk` bytes at a time (its length
    known: Content-Length is set); a client that reads nothing for
    `AMBERSCAN_WEB_EXPORT_STALL_S` is cut, as in `stream_rows`."""
    response = _download(content_type, filename)
    response.content_length = path.stat().st_size
    send = _sender(request, response)
    await response.prepare(request)
    request[STREAMING] = True
    with path.open("rb") as source:
        while data := await asyncio.to_thread(source.read, chunk):
            await send(data)
    await response.write_eof()
    return response


def features_chunk(to_feature: Callable[[Any], dict[str, Any]]) -> Callable[[list[Any], bool], str]:
    """The `chunk` of a streamed GeoJSON FeatureCollection: features joined by commas."""

    def chunk(rows: Iterable[Any], first: bool) -> str:
        text = ",".join(json.dumps(to_feature(r), default=str) for r in rows)
        return text if first else "," + text

    return chunk


FEATURES_HEAD = '{"type":"FeatureCollection","features":['
FEATURES_TAIL = "]}"


async def stream_geojson(
    request: web.Request,
    rows: AsyncIterator[Any],
    filename: str,
    to_feature: Callable[[Any], dict[str, Any]],
    **members: str,
) -> web.StreamResponse:
    """A streamed GeoJSON FeatureCollection download of `rows`; `members` go before the
    features (e.g. what was compared)."""
    extra = "".join(f"{json.dumps(k)}:{json.dumps(v)}," for k, v in members.items())
    return await stream_rows(
        request,
        rows,
        content_type="application/geo+json",
        filename=filename,
        head=FEATURES_HEAD.replace('"features"', extra + '"features"'),
        chunk=features_chunk(to_feature),
        tail=FEATURES_TAIL,
    )


async def stream_csv(
    request: web.Request,
    rows: AsyncIterator[Any],
    filename: str,
    to_csv: Callable[[list[Any], bool], str],
) -> web.StreamResponse:
    """A streamed CSV download of `rows`: `to_csv(rows, header)` gives the text of a batch."""
    return await stream_rows(
        request,
        rows,
        content_type="text/csv",
        filename=filename,
        head=to_csv([], True),
        chunk=lambda batch, _: to_csv(batch, False),
    )
