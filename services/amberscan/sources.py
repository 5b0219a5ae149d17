"""The source policy (#26 defect 8): which URLs, hosts, addresses, local paths and buckets a
source named on the bus may make the readers open.

Pure rules (domain, so the settings check the lists as they load, `ImageryConfig`): a policy
parsed from the settings' lists says why a URL, an address a host resolved to, a local path
(already resolved) or a bucket is refused, or None. Resolving names, following redirects and
opening things is the providers' part (`imagery/providers/guard.py`), which asks these rules at
every hop.

- Schemes: only those listed (`https` and `s3` by default); a local path is governed by the roots.
- Hosts: `*` admits any host whose every address is public (globally routable); a listed host
  (`name`, `name:port`, `*.suffix`, an IP, a CIDR network, each with an optional port) is
  admitted whatever it resolves to. Loopback, private, link-local, unspecified, multicast,
  reserved and other non-global addresses are refused unless their host or network is listed,
  IPv4 inside IPv6 (`::ffff:127.0.0.1`, NAT64, 6to4) judged as the IPv4 address it carries.
- Local paths: only under a listed root (the real path, symlinks resolved); GDAL's virtual file
  systems (`/vsicurl/`, `/vsis3/`, ...) never.
- `s3://` buckets: only those listed (they are read with the blob store's keys).
- Origins (scheme, host, port) of the sources the settings name themselves are trusted.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

SCHEMES_VAR = "AMBERSCAN_SOURCE_SCHEMES"
HOSTS_VAR = "AMBERSCAN_SOURCE_ALLOWED_HOSTS"
ROOTS_VAR = "AMBERSCAN_SOURCE_ALLOWED_ROOTS"
BUCKETS_VAR = "AMBERSCAN_SOURCE_ALLOWED_BUCKETS"
ANY_PUBLIC = "*"
DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def address_kind(address: str | Address) -> str:
    """Why an address is not public ("loopback", "link-local", ...), or "" when it is."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
    for kind, flag in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("unspecified", ip.is_unspecified),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("not public", not ip.is_global),
    ):
        if flag:
            return kind
    return ""


@dataclass(frozen=True)
class HostRule:
    """One entry of the allowed hosts: a name (or `*.suffix`) or a network, and maybe a port."""

    name: str = ""
    network: Network | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> HostRule:
        """`name`, `name:port`, `*.suffix`, `10.0.0.0/8`, `127.0.0.1:8080`, `[::1]:8080`.

        Raises:
            ValueError: not one of those forms.
        """
        entry, port_text = text.strip().lower(), ""
        if entry.startswith("["):  # [IPv6] or [IPv6]:port
            entry, _, rest = entry[1:].partition("]")
            if rest and not rest.startswith(":"):
                raise ValueError(f"{text!r} is not [IPv6] or [IPv6]:port")
            port_text = rest[1:]
        elif entry.count(":") == 1:
            entry, _, port_text = entry.partition(":")
        port = None
        if port_text or text.strip().endswith(":"):
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ValueError(f"{text!r} has no port from 1 to 65535 after its ':'")
            port = int(port_text)
        try:
            return cls(network=ipaddress.ip_network(entry, strict=False), port=port)
        except ValueError:
            pass
        name = entry.removeprefix("*.")
        if not name or any(c in name for c in "/*@ ") or ":" in name:
            raise ValueError(f"{text!r} is not a host, host:port, *.suffix, IP or CIDR network")
        return cls(name=entry, port=port)

    def admits(self, host: str, port: int, address: Address | None = None) -> bool:
        """Whether this entry lists `host` (a name, as in the URL) or `address` on `port`."""
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            target = address if address is not None else _ip_or_none(host)
            if target is None or target.version != self.network.version:
                return False
            return target in self.network
        if self.name.startswith("*."):
            return host.endswith(self.name[1:])
        return host == self.name


def _ip_or_none(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True)
class SourcePolicy:
    """What sources may reach; each `*_refusal` gives the rule a source breaks, or None."""

    schemes: frozenset[str] = frozenset({"https", "s3"})
    any_public_host: bool = True
    hosts: tuple[HostRule, ...] = ()
    roots: tuple[PurePosixPath, ...] = ()
    buckets: frozenset[str] = frozenset()
    origins: frozenset[tuple[str, str, int]] = frozenset()

    @classmethod
    def parse(
        cls,
        schemes: str,
        hosts: str,
        roots: Iterable[str],
        buckets: str,
        trusted: Iterable[str] = (),
    ) -> SourcePolicy:
        """The policy of the settings' lists; `roots` already resolved to real paths (the settings
        check them unresolved), `trusted` the URLs the settings name themselves (their origins
        are admitted).

        Raises:
            ValueError: an entry of the lists that is not a scheme, host or root (named).
        """
        scheme_set = frozenset(s.lower() for s in _split(schemes))
        unknown = scheme_set - {"http", "https", "s3"}
        if unknown:
            raise ValueError(
                f"{SCHEMES_VAR}: unknown scheme {', '.join(sorted(unknown))} "
                "(http, https, s3; local paths are governed by the roots)"
            )
        entries = _split(hosts)
        try:
            rules = tuple(HostRule.parse(e) for e in entries if e != ANY_PUBLIC)
        except ValueError as error:
            raise ValueError(f"{HOSTS_VAR}: {error}") from None
        root_paths = tuple(PurePosixPath(r) for r in roots)
        relative = [str(r) for r in root_paths if not r.is_absolute()]
        if relative:
            raise ValueError(f"{ROOTS_VAR}: {relative[0]!r} is not an absolute path")
        bucket_set = frozenset(_split(buckets))
        bad = sorted(b for b in bucket_set if not _BUCKET.fullmatch(b))
        if bad:
            raise ValueError(
                f"{BUCKETS_VAR}: {bad[0]!r} is not a bucket name (3-63 lowercase letters, "
                "digits, dots and hyphens)"
            )
        origins = set()
        for url in trusted:
            origin = _origin(url)
            if origin is not None:
                origins.add(origin)
        return cls(
            schemes=scheme_set,
            any_public_host=ANY_PUBLIC in entries,
            hosts=rules,
            roots=root_paths,
            buckets=bucket_set,
            origins=frozenset(origins),
        )

    def _listed(self, host: str, port: int, address: Address | None = None) -> bool:
        return any(rule.admits(host, port, address) for rule in self.hosts)

    def url_refusal(self, url: str) -> str | None:
        """The rule an http(s) URL breaks by its scheme or host alone (a name's addresses are
        judged by `address_refusal` once resolved), or None."""
        try:
            parts = urlsplit(url)
            scheme, host, port = parts.scheme.lower(), (parts.hostname or ""), parts.port
        except ValueError as error:
            return f"malformed URL ({error})"
        if scheme not in DEFAULT_PORTS:
            listed = ", ".join(sorted(self.schemes)) or "none"
            return f"scheme {scheme or '(none)'!r} is not http(s) nor in {SCHEMES_VAR} ({listed})"
        if not host:
            return "no host"
        port = port or DEFAULT_PORTS[scheme]
        if (scheme, host, port) in self.origins:
            return None
        if scheme not in self.schemes:
            listed = ", ".join(sorted(self.schemes)) or "none"
            return f"scheme {scheme} is not in {SCHEMES_VAR} ({listed})"
        ip = _ip_or_none(host)
        if ip is not None:
            return self.address_refusal(host, port, ip)
        if self._listed(host, port):
            return None
        if not self.any_public_host:
            return f"{host}:{port} is not in {HOSTS_VAR}"
        return None

    def address_refusal(self, host: str, port: int, address: str | Address) -> str | None:
        """The rule connecting to `address` (which `host` resolved to) on `port` breaks, or None."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if any(o[1] == host and o[2] == port for o in self.origins):
            return None
        if self._listed(host, port) or self._listed(host, port, ip):
            return None
        kind = address_kind(ip)
        named = host if _ip_or_none(host) == ip else f"{host} resolves to {ip}, which"
        if kind:
            return f"{named} is {kind} and not in {HOSTS_VAR}"
        if not self.any_public_host:
            return f"{host}:{port} is not in {HOSTS_VAR}"
        return None

    def path_refusal(self, real_path: str) -> str | None:
        """The rule reading local `real_path` (absolute, symlinks resolved) breaks, or None."""
        if real_path.startswith("/vsi"):
            return "GDAL virtual file systems (/vsi...) are not sources"
        if not self.roots:
            return f"local paths are refused ({ROOTS_VAR} lists none)"
        path = PurePosixPath(real_path)
        if any(path == root or root in path.parents for root in self.roots):
            return None
        return f"{real_path} is not under {ROOTS_VAR} ({', '.join(map(str, self.roots))})"

    def s3_refusal(self, url: str) -> str | None:
        """The rule an `s3://bucket/key` source breaks, or None: its bucket must be listed, and
        its key may not climb out of it (GDAL's /vsis3/ puts the key in the request's path)."""
        bucket, _, key = url.removeprefix("s3://").partition("/")
        if any(part in (".", "..") for part in key.replace("\\", "/").split("/")):
            return f"the key {key!r} has . or .. segments"
        return self.bucket_refusal(bucket)

    def bucket_refusal(self, bucket: str) -> str | None:
        """The rule reading `s3://bucket/...` with the blob store's keys breaks, or None."""
        if "s3" not in self.schemes:
            return f"scheme s3 is not in {SCHEMES_VAR} ({', '.join(sorted(self.schemes))})"
        if bucket not in self.buckets:
            return f"bucket {bucket!r} is not in {BUCKETS_VAR}"
        return None


def _origin(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), parts.hostname or ""
        port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        return None
    if scheme not in DEFAULT_PORTS or not host:
        return None
    return scheme, host, port


def glob_base(pattern: str) -> str:
    """The folder a glob pattern reads under: its path up to the first wildcard part."""
    parts = PurePosixPath(pattern).parts
    fixed = []
    for part in parts:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    return str(PurePosixPath(*fixed)) if fixed else "."
