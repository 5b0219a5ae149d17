"""The source policy at every place a source is opened (#26 defect 8).

`SourceGuard` holds the policy of the settings (`amberscan/sources.py`) and applies it where the
readers reach out: a URL's scheme and host before each request and each redirect hop, every
address a name resolves to, as the connection is made (aiohttp's connector resolves through
`CheckedResolver`, `requests` through `checked_http.CheckedAdapter`: the address checked is the
one connected to), local paths by their real path under the allowed roots, `s3://` buckets
against the allowed ones. A refusal is `SourceRefused`, a `PoisonMessage`: the tile fails with
the message, its dead letter is made and the stream goes on.

GDAL follows redirects itself (curl's FOLLOWLOCATION, which GDAL 3.10 sets on every request
with no option to turn it off) and resolves names on its own, so GDAL is never handed an
http(s) URL: rasterio reads it through `checked_http.RangeOpener` (`range_opener`), whose every
range request, redirect hop and connection is checked here.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from amberscan.common.settings import ImagerySettings
from amberscan.errors import TransientError
from amberscan.imagery.providers.base import SourceRefused
from amberscan.sources import DEFAULT_PORTS, SourcePolicy, glob_base

Resolve = Callable[[str, int], list[str]]


def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (as the system's resolver gives them, so decimal and
    octal IPv4 forms included)."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in found})


def _shown(source: str) -> str:
    from amberscan.imagery.providers.http import redact

    return redact(source)


@dataclass(frozen=True)
class SourceGuard:
    """The source policy with the I/O it needs (resolving names, real paths, redirects)."""

    policy: SourcePolicy
    resolve: Resolve = field(default=resolve_host, repr=False)
    timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: ImagerySettings) -> SourceGuard:
        """The policy of `settings.imagery`, trusting the sources the settings name themselves.

        Raises:
            ValueError: an entry of the policy's lists is malformed (names the variable).
        """
        imagery = settings.imagery
        roots = [
            os.path.realpath(r.strip())
            for r in imagery.source_allowed_roots.split(",")
            if r.strip()
        ]
        if imagery.local_tiles_dir is not None:
            roots.append(os.path.realpath(imagery.local_tiles_dir))
        trusted = [imagery.xyz_url, imagery.demo_tiles_url, imagery.stac_url, imagery.wmts_url]
        policy = SourcePolicy.parse(
            imagery.source_schemes,
            imagery.source_allowed_hosts,
            roots,
            imagery.source_allowed_buckets,
            trusted=[u for u in trusted if u],
        )
        return cls(policy, timeout_s=imagery.fetch_timeout_s)

    def refused(self, source: str, reason: str) -> SourceRefused:
        return SourceRefused(_shown(source), reason)

    def check_url(self, url: str, *, resolve: bool = True) -> None:
        """Refuse an http(s) URL by its scheme and host and, with `resolve`, by every address its
        host resolves to now (without, the caller's connector checks them as it connects).

        Raises:
            SourceRefused: the rule it breaks.
            TransientError: its host cannot be resolved now.
        """
        reason = self.policy.url_refusal(url)
        if reason:
            raise self.refused(url, reason)
        if not resolve:
            return
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or DEFAULT_PORTS[parts.scheme.lower()]
        try:
            addresses = self.resolve(host, port)
        except OSError as error:
            raise TransientError(f"source {_shown(url)}: cannot resolve {host} ({error})") from None
        for address in addresses:
            reason = self.policy.address_refusal(host, port, address)
            if reason:
                raise self.refused(url, reason)

    def check_bucket(self, url: str) -> None:
        """Refuse an `s3://bucket/...` source whose bucket is not listed (or whose key climbs
        out of it)."""
        reason = self.policy.s3_refusal(url)
        if reason:
            raise self.refused(url, reason)

    def check_path(self, source: str) -> str:
        """The real path of a local source (`file://` stripped), refused outside the roots."""
        path = source.removeprefix("file://")
        if path.startswith("/vsi"):
            raise self.refused(source, self.policy.path_refusal(path) or "")
        real = os.path.realpath(path)
        reason = self.policy.path_refusal(real)
        if reason:
            raise self.refused(source, reason)
        return real

    def check_glob(self, pattern: str) -> None:
        """Refuse a glob whose fixed part (what it reads under) is outside the roots."""
        self.check_path(glob_base(pattern.removeprefix("file://")))

    def check(self, source: str, *, resolve: bool = True) -> None:
        """Refuse any source a request names (a URL, an `s3://` key, a local path or glob).

        Raises:
            SourceRefused: the rule it breaks.
            TransientError: its host cannot be resolved now (only with `resolve`).
        """
        scheme = urlsplit(source).scheme.lower() if "://" in source else ""
        if scheme == "s3":
            self.check_bucket(source)
        elif scheme in ("", "file"):
            if any(c in source for c in "*?["):
                self.check_glob(source)
            else:
                self.check_path(source)
        else:
            self.check_url(source, resolve=resolve)

    def connect_address(self, host: str, port: int) -> str:
        """The address a connection to `host` on `port` is to use: every address it resolves to
        now is checked, and the first is the one connected to (no second resolution).

        Raises:
            SourceRefused: an address the policy refuses (named by host and port).
            OSError: the name does not resolve now.
        """
        addresses = self.resolve(host, port)
        for address in addresses:
            reason = self.policy.address_refusal(host, port, address)
            if reason:
                raise self.refused(f"{host}:{port}", reason)
        if not addresses:
            raise socket.gaierror(f"{host} resolves to no address")
        return addresses[0]

    def range_opener(self, url: str, retries: int = 0, backoff_s: float = 0.5) -> Any:
        """rasterio's `opener=` reading the http(s) `url` by checked range requests."""
        from amberscan.imagery.providers.checked_http import RangeOpener

        return RangeOpener(self, url, retries=retries, backoff_s=backoff_s)

    def stac_io(self, timeout_s: float) -> Any:
        """A pystac-client I/O whose every request, redirect hop and local read is checked."""
        from amberscan.imagery.providers.stac_io import CheckedStacIO

        return CheckedStacIO(self, timeout=timeout_s)


def checked_resolver(guard: SourceGuard) -> Any:
    """An aiohttp resolver refusing the addresses the policy refuses (what is checked is what
    the connector connects to)."""
    from aiohttp.abc import AbstractResolver, ResolveResult
    from aiohttp.resolver import ThreadedResolver

    class CheckedResolver(AbstractResolver):
        def __init__(self) -> None:
            self._inner = ThreadedResolver()

        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            found = await self._inner.resolve(host, port, family)
            for entry in found:
                reason = guard.policy.address_refusal(host, port, entry["host"])
                if reason:
                    raise guard.refused(f"{host}:{port}", reason)
            return found

        async def close(self) -> None:
            await self._inner.close()

    return CheckedResolver()
