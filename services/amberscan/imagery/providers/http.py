"""HTTP for the providers: one shared aiohttp `ClientSession` and a `Fetcher` that limits
concurrency and request rate, times out, retries 5xx/429/connection errors under the shared
`RetryPolicy` (jittered backoff, or the server's Retry-After; then raises `TransientError`, so
the stage retries later), turns 404 and other 4xx into
a `PoisonMessage` naming the URL, refuses a body larger than its cap as it streams, and
revalidates repeated requests with `If-None-Match`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from amberscan.common.retry import RetryPolicy, parse_retry_after
from amberscan.errors import TransientError
from amberscan.imagery.providers.base import ProviderError, TileNotFound

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
# The largest body a provider may answer (#26, defect 7): a 256-px tile is tens of kB, a STAC
# catalogue page or WMTS capabilities document a few MB; a body past this is refused as it streams.
MAX_BODY_BYTES = 32 * 1024 * 1024
_SECRET_PARAMS = re.compile(r"([?&](?:key|api_key|apikey|access_token|token)=)[^&]*", re.I)


def redact(url: str) -> str:
    """`url` with API keys hidden, for error messages and logs."""
    return _SECRET_PARAMS.sub(r"\1***", url)


class RateLimiter:
    """At most `rate` acquisitions per second, evenly spaced (0 disables the limit)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self.interval
        if wait > 0:
            await asyncio.sleep(wait)


@dataclass
class _Cached:
    etag: str
    body: bytes
    headers: dict[str, str]


class Fetcher:
    """GETs over one shared session with a concurrency limit, rate limit, retries and ETags."""

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        concurrency: int = 8,
        rate_per_s: float = 0.0,
        timeout_s: float = 30.0,
        retries: int = 4,
        backoff_s: float = 0.5,
        etag_cache_size: int = 512,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self._session = session
        self._own_session = session is None
        self.semaphore = asyncio.Semaphore(concurrency)
        self.limiter = RateLimiter(rate_per_s)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.retries = retries
        self.backoff_s = backoff_s
        self._etags: OrderedDict[str, _Cached] = OrderedDict()
        self._etag_cache_size = etag_cache_size
        self.max_body_bytes = max_body_bytes
        self.requests = 0  # HTTP requests sent (tests and metrics)
        self.revalidated = 0  # answered 304 Not Modified from the ETag cache

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": "amberscan-tiler"})
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, url: str) -> tuple[bytes, Mapping[str, str]]:
        """The body and headers of a 200 answer to GET `url`.

        Raises:
            TileNotFound: 404.
            ProviderError: another 4xx (except 429), or a body larger than `max_body_bytes`.
            TransientError: 5xx, 429, timeouts or connection errors after every retry.
        """
        shown = redact(url)
        policy = RetryPolicy(retries=self.retries, base_s=self.backoff_s)
        last = ""
        retry_after: float | None = None
        for attempt in range(self.retries + 1):
            if attempt:  # the shared policy: jittered backoff, or what the server asked for
                await asyncio.sleep(policy.delay(attempt, retry_after_s=retry_after))
            retry_after = None
            cached = self._etags.get(url)
            headers = {"If-None-Match": cached.etag} if cached else {}
            await self.limiter.acquire()
            try:
                async with self.semaphore:
                    self.requests += 1
                    async with self.session.get(
                        url, headers=headers, timeout=self.timeout
                    ) as response:
                        status = response.status
                        if status == 304 and cached is not None:
                            self.revalidated += 1
                            # Re-inserted, not moved: concurrent fetches may have evicted it
                            # from the bounded cache while this request was in flight.
                            self._remember(url, cached.etag, cached.body, cached.headers)
                            return cached.body, cached.headers
                        if status == 200:
                            body = await self._read_capped(response, shown)
                            answer = dict(response.headers)
                            self._remember(url, response.headers.get("ETag", ""), body, answer)
                            return body, answer
                        reason = response.reason or ""
                        retry_after = parse_retry_after(response.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError) as error:
                last = f"{type(error).__name__}: {error}".rstrip(": ")
                log.info("fetch failed, will retry", extra={"url": shown, "error": last})
                continue
            if status == 404:
                raise TileNotFound(f"{shown}: 404 Not Found")
            if status in _RETRY_STATUS:
                last = f"HTTP {status} {reason}"
                continue
            raise ProviderError(f"{shown}: HTTP {status} {reason}")
        raise TransientError(
            f"{shown}: gave up after {self.retries + 1} attempts ({last})",
            retry_after_s=retry_after,
        )

    async def _read_capped(self, response: aiohttp.ClientResponse, shown: str) -> bytes:
        """The body, read in chunks and refused once past the cap (a declared length at once)."""
        cap = self.max_body_bytes
        too_large = ProviderError(f"{shown}: the body is larger than {cap} bytes")
        if response.content_length is not None and response.content_length > cap:
            raise too_large
        body = bytearray()
        async for chunk in response.content.iter_chunked(1 << 16):
            body += chunk
            if len(body) > cap:
                raise too_large
        return bytes(body)

    async def get_json(self, url: str) -> Any:
        body, _ = await self.get(url)
        try:
            return json.loads(body)
        except ValueError as error:
            raise ProviderError(f"{redact(url)}: not JSON ({error})") from None

    def _remember(self, url: str, etag: str, body: bytes, headers: dict[str, str]) -> None:
        if not etag or self._etag_cache_size <= 0:
            return
        self._etags[url] = _Cached(etag, body, headers)
        self._etags.move_to_end(url)
        while len(self._etags) > self._etag_cache_size:
            self._etags.popitem(last=False)
