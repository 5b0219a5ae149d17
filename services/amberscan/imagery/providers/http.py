"""HTTP for the providers: one shared aiohttp `ClientSession` and a `Fetcher` that limits
concurrency and request rate, times out, retries 5xx/429/connection errors under the shared
`RetryPolicy` (jittered backoff, or the server's Retry-After; then raises `TransientError`, so
the stage retries later), turns 404 and other 4xx into
a `PoisonMessage` naming the URL, refuses a body larger than its cap as it streams, and
revalidates repeated requests with `If-None-Match`. Its `SourceGuard` (required: there is no
unchecked fetcher) has it follow redirects itself, each hop's URL checked against the source
policy before it is requested, and make its session with `open_session`, whose connector
resolves names through the policy's resolver (#26 defect 8).
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
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin
from weakref import WeakSet

import aiohttp
from multidict import CIMultiDict

from amberscan.common.retry import RetryPolicy, parse_retry_after
from amberscan.errors import TransientError
from amberscan.imagery.providers.base import ProviderError, SourceRefused, TileNotFound

if TYPE_CHECKING:
    from amberscan.imagery.providers.guard import SourceGuard

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
# The largest body a provider may answer (#26, defect 7): a 256-px tile is tens of kB, a STAC
# catalogue page or WMTS capabilities document a few MB; a body past this is refused as it streams.
MAX_BODY_BYTES = 32 * 1024 * 1024
# Redirects a GET follows (each hop checked by the guard), as curl's default in GDAL.
MAX_REDIRECTS = 10
_REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
# Sessions made by `open_session`: their connector checks every address it connects to.
_CHECKED_SESSIONS: WeakSet[aiohttp.ClientSession] = WeakSet()
_SECRET_PARAMS = re.compile(r"([?&](?:key|api_key|apikey|access_token|token)=)[^&]*", re.I)


def redact(url: str) -> str:
    """`url` with API keys hidden, for error messages and logs."""
    return _SECRET_PARAMS.sub(r"\1***", url)


def open_session(guard: SourceGuard) -> aiohttp.ClientSession:
    """An aiohttp session for the providers, whose connector resolves every name through the
    source policy of `guard`, so the addresses checked are the ones connected to."""
    headers = {"User-Agent": "amberscan-tiler"}
    from amberscan.imagery.providers.guard import checked_resolver

    session = aiohttp.ClientSession(
        headers=headers, connector=aiohttp.TCPConnector(resolver=checked_resolver(guard))
    )
    _CHECKED_SESSIONS.add(session)
    return session


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
    """GETs over one shared session with a concurrency limit, rate limit, retries and ETags.

    Every URL and redirect hop is checked against `guard`'s source policy (`provider_for` gives
    the settings'; a test gives its own), and a session passed in must come from
    `open_session(guard)`.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        guard: SourceGuard,
        concurrency: int = 8,
        rate_per_s: float = 0.0,
        timeout_s: float = 30.0,
        retries: int = 4,
        backoff_s: float = 0.5,
        etag_cache_size: int = 512,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if session is not None and session not in _CHECKED_SESSIONS:
            raise ValueError("a guarded Fetcher needs a session made by open_session(guard)")
        self.guard = guard
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
            self._session = open_session(self.guard)
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
                    status, reason, received, body = await self._send(url, headers, shown)
                if status == 304 and cached is not None:
                    self.revalidated += 1
                    # Re-inserted, not moved: concurrent fetches may have evicted it from the
                    # bounded cache while this request was in flight.
                    self._remember(url, cached.etag, cached.body, cached.headers)
                    return cached.body, cached.headers
                if status == 200:
                    answer = dict(received)
                    self._remember(url, received.get("ETag", ""), body, answer)
                    return body, answer
                retry_after = parse_retry_after(received.get("Retry-After"))
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

    async def _send(
        self, url: str, headers: Mapping[str, str], shown: str
    ) -> tuple[int, str, CIMultiDict[str], bytes]:
        """One GET: status, reason, headers and (for a 200) the capped body; the redirects are
        followed here, each hop checked before it is requested."""
        target = url
        for _ in range(MAX_REDIRECTS + 1):
            self.guard.check_url(target, resolve=False)  # names: the connector's resolver
            self.requests += 1
            try:
                async with self.session.get(
                    target,
                    headers=headers,
                    timeout=self.timeout,
                    allow_redirects=False,
                ) as response:
                    location = response.headers.get("Location")
                    if response.status in _REDIRECT_STATUS and location:
                        target = urljoin(target, location)
                        continue
                    body = (
                        await self._read_capped(response, shown) if response.status == 200 else b""
                    )
                    return response.status, response.reason or "", response.headers.copy(), body
            except SourceRefused as error:  # from the resolver, which knows only host and port
                raise self.guard.refused(target, error.reason) from None
        raise ProviderError(f"{shown}: more than {MAX_REDIRECTS} redirects")

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
