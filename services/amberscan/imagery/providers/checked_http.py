"""Blocking HTTP under the source policy (#26 defect 8): a `requests` session whose connections
go only to addresses the policy admits, and a rasterio opener that reads a raster's byte ranges
through it, so GDAL itself never opens an HTTP connection.

The session's connections resolve their host through `SourceGuard.connect_address` (every
address checked) and connect to the address checked, so a name re-resolved to another address
between a check and the connection (DNS rebinding) is never reached. It reads no proxy or netrc
from the environment (a proxy would be the address connected to).

`RangeOpener` is rasterio's `opener=` for one http(s) URL: each read GDAL asks for is a range
request, its redirects followed here, each hop checked before it is requested (GDAL's curl would
follow them on every range read, unchecked). An opener raises nothing into GDAL: its first
failure is kept in `error` and raised by the caller once GDAL gives up (`raise_error`). Blocks
read are kept in `BLOCKS`, shared by the process's openers as GDAL's /vsicurl/ cache was (a
raster's header is read once, not at each scan tile), keyed by the policy they were read under
and the URL.
"""

from __future__ import annotations

import io
import os
import re
import socket
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NameResolutionError
from urllib3.util.retry import Retry

from amberscan.errors import AmberscanError, TransientError
from amberscan.imagery.providers.base import SourceError, SourceRefused

if TYPE_CHECKING:
    from amberscan.imagery.providers.guard import SourceGuard

# Bytes fetched per block (consecutive missing blocks go in one request); GDAL's own read of a
# COG header is 16 kB, a tile of a 512-px JPEG COG tens of kB.
BLOCK_BYTES = 64 * 1024
# What the process keeps of the blocks read (GDAL's /vsicurl/ cache is 16 MB by default).
CACHE_BYTES = 16 * 1024 * 1024
# The largest whole file kept when a server answers a range request with all of it (200).
MAX_WHOLE_BYTES = 32 * 1024 * 1024
MAX_REDIRECTS = 10
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
RETRY_STATUS = (429, 500, 502, 503, 504)
_TOTAL = re.compile(r"bytes \d+-\d+/(\d+)")


class _Checked:
    """A urllib3 connection that connects only to an address the policy admits for its host."""

    guard: SourceGuard
    _dns_host: str
    host: str
    port: int

    def _new_conn(self) -> socket.socket:
        name = self._dns_host
        try:
            address = self.guard.connect_address(name, self.port)
        except socket.gaierror as error:
            raise NameResolutionError(self.host, self, error) from error  # type: ignore[arg-type]
        self._dns_host = address  # what urllib3 connects to; TLS still checks `host`
        try:
            sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        finally:
            self._dns_host = name
        return sock


class CheckedAdapter(HTTPAdapter):
    """A requests adapter whose every connection is `_Checked` by `guard`."""

    def __init__(self, guard: SourceGuard, **kwargs: Any) -> None:
        self.guard = guard
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        guard = self.guard
        plain = type("CheckedHTTPConnection", (_Checked, HTTPConnection), {"guard": guard})
        tls = type("CheckedHTTPSConnection", (_Checked, HTTPSConnection), {"guard": guard})
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("CheckedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": plain}),
            "https": type("CheckedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": tls}),
        }


def checked_session(guard: SourceGuard, max_retries: int | Retry = 0) -> requests.Session:
    """A requests session connecting only to addresses `guard` admits (no proxy from the
    environment). Redirect hops are the caller's to check (`allow_redirects=False`, or a
    response hook)."""
    session = requests.Session()
    session.trust_env = False
    session.headers["User-Agent"] = "amberscan-tiler"
    for prefix in ("http://", "https://"):
        session.mount(prefix, CheckedAdapter(guard, max_retries=max_retries))
    return session


class BlockCache:
    """The blocks (and lengths) of http(s) rasters read lately, least recently used dropped
    past `max_bytes`; thread-safe (GDAL reads run in worker threads)."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: Hashable, value: bytes) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            self._bytes += len(value) - (len(old) if old is not None else 0)
            self._entries[key] = value
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= len(dropped)


BLOCKS = BlockCache()


class RangeOpener:
    """rasterio's `opener=` for one http(s) URL: reads its byte ranges over `checked_session`.

    GDAL asks for the file's size and for side files (`.aux.xml`, `.msk`, ...): only `url` itself
    is opened, the others are missing. Blocks read are kept in `cache`.
    """

    def __init__(
        self,
        guard: SourceGuard,
        url: str,
        retries: int = 0,
        backoff_s: float = 0.5,
        cache: BlockCache = BLOCKS,
    ) -> None:
        self.guard = guard
        self.url = url
        self.cache = cache
        self._key = (guard.policy, url)
        retry = Retry(
            total=None,
            connect=0,
            read=0,
            redirect=0,
            other=0,
            status=retries,
            status_forcelist=RETRY_STATUS,
            backoff_factor=backoff_s,
            allowed_methods=None,
            raise_on_status=False,
        )
        self.session = checked_session(guard, retry)
        self.error: AmberscanError | None = None
        self.requests = 0

    def __call__(self, path: str, mode: str = "rb") -> RangeFile:
        if path != self.url or not mode.startswith("r"):
            raise FileNotFoundError(path)
        return RangeFile(self)

    def raise_error(self) -> None:
        """Raise the first failure of this opener's requests, if any."""
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.session.close()

    def total(self) -> int:
        """The file's length in bytes."""
        known = self.cache.get((*self._key, "length"))
        if known is None:
            self.fetch(0, 0)
            known = self.cache.get((*self._key, "length"))
        return int(known or b"0")

    def read(self, start: int, length: int) -> bytes:
        """Bytes [start, start + length) of the file (fewer at its end)."""
        size = self.total()
        if length <= 0 or start >= size:
            return b""
        first, last = start // BLOCK_BYTES, (min(start + length, size) - 1) // BLOCK_BYTES
        got: dict[int, bytes] = {}
        for block in range(first, last + 1):
            cached = self.cache.get((*self._key, block))
            if cached is not None:
                got[block] = cached
        block = first
        while block <= last:
            if block in got:
                block += 1
                continue
            end = block
            while end + 1 <= last and end + 1 not in got:
                end += 1
            got.update(self.fetch(block, end))
            block = end + 1
        data = b"".join(got.get(b, b"") for b in range(first, last + 1))
        offset = start - first * BLOCK_BYTES
        return data[offset : offset + length]

    def fetch(self, first: int, last: int) -> dict[int, bytes]:
        """Blocks `first`..`last` (and the file's size) by one range request, its redirects
        followed here, each hop checked before it is requested.

        Raises:
            SourceRefused: a hop, or an address a hop's host resolves to, that the policy refuses.
            SourceError: no such file, or an answer that is not the range asked for.
            TransientError: the server is down, slow or busy.
        """
        try:
            return self._fetch(first, last)
        except AmberscanError as error:
            self.error = self.error or error
            raise

    def _fetch(self, first: int, last: int) -> dict[int, bytes]:
        target = self.url
        wanted = f"bytes={first * BLOCK_BYTES}-{(last + 1) * BLOCK_BYTES - 1}"
        for _ in range(MAX_REDIRECTS + 1):
            self.guard.check_url(target, resolve=False)  # its addresses: as it connects
            self.requests += 1
            try:
                response = self.session.get(
                    target,
                    headers={"Range": wanted},
                    allow_redirects=False,
                    timeout=self.guard.timeout_s,
                    stream=True,
                )
            except SourceRefused as refused:  # from the connection, which knows host and port
                raise self.guard.refused(target, refused.reason) from None
            except requests.exceptions.SSLError as error:
                raise SourceError(
                    f"raster {self.url}: cannot open it as a raster ({error})"
                ) from None
            except requests.RequestException as error:
                raise TransientError(f"raster {self.url}: cannot read it now ({error})") from None
            with response:
                location = response.headers.get("Location")
                if response.status_code in REDIRECT_STATUS and location:
                    target = urljoin(target, location)
                    continue
                return self._keep(response, first)
        raise self.guard.refused(self.url, f"more than {MAX_REDIRECTS} redirects")

    def _keep(self, response: requests.Response, first: int) -> dict[int, bytes]:
        status = response.status_code
        if status == 206:
            found = _TOTAL.match(response.headers.get("Content-Range", ""))
            if found is None:
                raise SourceError(f"raster {self.url}: a range answer without its file's length")
            size = int(found.group(1))
            body = response.raw.read(MAX_WHOLE_BYTES, decode_content=True)
        elif status == 200:  # a server that ignores ranges sends the whole file
            body = response.raw.read(MAX_WHOLE_BYTES + 1, decode_content=True)
            if len(body) > MAX_WHOLE_BYTES:
                raise SourceError(
                    f"raster {self.url}: the server answers no byte ranges and the file is "
                    f"larger than {MAX_WHOLE_BYTES} bytes"
                )
            size, first = len(body), 0
        elif status == 416:  # nothing at or past the range's start: an empty file
            size, body = 0, b""
        elif status == 404:
            raise SourceError(f"raster {self.url}: no such file (HTTP 404)")
        elif status in RETRY_STATUS:
            raise TransientError(f"raster {self.url}: cannot read it now (HTTP {status})")
        else:
            raise SourceError(f"raster {self.url}: cannot open it as a raster (HTTP {status})")
        blocks = {
            first + index // BLOCK_BYTES: body[index : index + BLOCK_BYTES]
            for index in range(0, len(body), BLOCK_BYTES)
        }
        self.cache.put((*self._key, "length"), str(size).encode())
        for index, block in blocks.items():
            self.cache.put((*self._key, index), block)
        return blocks


class RangeFile(io.RawIOBase):
    """One file handle GDAL holds on a `RangeOpener`'s URL (its own position, shared blocks)."""

    def __init__(self, opener: RangeOpener) -> None:
        super().__init__()
        self.opener = opener
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END:
            offset += self.opener.total()  # a failure here fails GDAL's stat: kept, re-raised
        elif whence == os.SEEK_CUR:
            offset += self.position
        self.position = max(0, offset)
        return self.position

    def tell(self) -> int:
        return self.position

    def read(self, size: int = -1) -> bytes:
        try:
            if size < 0:
                size = max(0, self.opener.total() - self.position)
            data = self.opener.read(self.position, size)
        except AmberscanError:
            return b""  # kept in `opener.error`: GDAL sees a short read and fails the read
        self.position += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
