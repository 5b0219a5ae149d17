"""The source policy's rules (#26 defect 8), pure: which URLs, addresses, local paths and
buckets a source named on the bus may reach."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from amberscan import sources
from amberscan.common.settings import ImageryConfig
from amberscan.imagery.providers.guard import resolve_host
from amberscan.sources import HostRule, SourcePolicy, address_kind, glob_base

PRODUCTION = SourcePolicy.parse("https,s3", "*", [], "")
LISTED = SourcePolicy.parse(
    "https,http,s3",
    "*,tiles.internal,*.corp.example,10.1.0.0/16,127.0.0.1:8080,[::1]:9000,169.254.0.0/16:80",
    ["/data/imagery"],
    "imagery,ortho",
)


def test_the_variables_named_are_the_settings_aliases() -> None:
    fields = ImageryConfig.model_fields
    assert sources.SCHEMES_VAR == fields["source_schemes"].alias
    assert sources.HOSTS_VAR == fields["source_allowed_hosts"].alias
    assert sources.ROOTS_VAR == fields["source_allowed_roots"].alias
    assert sources.BUCKETS_VAR == fields["source_allowed_buckets"].alias


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped IPv6
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("::ffff:169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("10.0.0.5", "private"),
        ("172.16.3.4", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("100.64.0.1", "not public"),  # carrier-grade NAT
        ("8.8.8.8", ""),
        ("2001:4860:4860::8888", ""),
        ("::ffff:8.8.8.8", ""),
    ],
)
def test_address_kinds(address: str, kind: str) -> None:
    assert address_kind(address) == kind


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://tiles.example.org/{z}/{x}/{y}.png", None),
        ("https://8.8.8.8/a.tif", None),
        ("http://tiles.example.org/a.png", "scheme http is not in AMBERSCAN_SOURCE_SCHEMES"),
        ("ftp://tiles.example.org/a.png", "scheme 'ftp' is not http(s)"),
        ("file:///etc/passwd", "scheme 'file' is not http(s)"),
        ("gopher://x/", "scheme 'gopher' is not http(s)"),
        ("https:///nohost", "no host"),
        ("https://x:99999/", "malformed URL"),
        (
            "https://169.254.169.254/latest/meta-data/",
            "169.254.169.254 is link-local and not in AMBERSCAN_SOURCE_ALLOWED_HOSTS",
        ),
        ("https://127.0.0.1/a.png", "127.0.0.1 is loopback and not in"),
        ("https://[::1]/a.png", "::1 is loopback and not in"),
        ("https://[::ffff:127.0.0.1]/a.png", "is loopback and not in"),
        ("https://10.0.0.1:5432/", "10.0.0.1 is private and not in"),
        ("https://user@169.254.169.254/", "169.254.169.254 is link-local"),
    ],
)
def test_production_urls(url: str, reason: str | None) -> None:
    refusal = PRODUCTION.url_refusal(url)
    assert (refusal is None) if reason is None else (reason in (refusal or "")), refusal


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://127.0.0.1:8080/a.png", False),  # host:port listed
        ("http://127.0.0.1:8081/a.png", True),  # another port of it
        ("http://[::1]:9000/a.png", False),
        ("http://[::1]:9001/a.png", True),
        ("http://10.1.2.3/a.png", False),  # in a listed network
        ("http://10.2.0.1/a.png", True),
        ("http://169.254.169.254/a.png", False),  # the network listed on port 80
        ("https://169.254.169.254/a.png", True),  # ... not on 443
        ("https://tiles.internal/a.png", False),
        ("https://a.b.corp.example/a.png", False),  # *.suffix
        ("https://corp.example.evil/a.png", False),  # a public name: judged by its addresses
    ],
)
def test_listed_exceptions(url: str, refused: bool) -> None:
    assert (LISTED.url_refusal(url) is not None) == refused, LISTED.url_refusal(url)


@pytest.mark.parametrize(
    ("host", "port", "address", "reason"),
    [
        ("localtest.me", 443, "127.0.0.1", "localtest.me resolves to 127.0.0.1, which is loopback"),
        ("metadata.example", 443, "169.254.169.254", "which is link-local"),
        ("db.example", 5432, "::ffff:10.0.0.7", "which is private"),
        ("tiles.example.org", 443, "93.184.216.34", None),
        ("tiles.internal", 443, "10.9.9.9", None),  # listed by name: any address
        ("x.corp.example", 443, "192.168.0.1", None),
        ("other.example", 443, "10.1.7.7", None),  # its address is in a listed network
    ],
)
def test_resolved_addresses(host: str, port: int, address: str, reason: str | None) -> None:
    refusal = LISTED.address_refusal(host, port, address)
    assert (refusal is None) if reason is None else (reason in (refusal or "")), refusal


def test_only_listed_hosts_without_the_star() -> None:
    strict = SourcePolicy.parse("https", "tiles.example.org", [], "")
    assert strict.url_refusal("https://tiles.example.org/a.png") is None
    assert "other.example.org:443 is not in AMBERSCAN_SOURCE_ALLOWED_HOSTS" in (
        strict.url_refusal("https://other.example.org/a.png") or ""
    )
    assert strict.address_refusal("x.example", 443, "8.8.8.8") is not None


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("tiles.example.org", HostRule(name="tiles.example.org")),
        ("Tiles.Example.org:8443", HostRule(name="tiles.example.org", port=8443)),
        ("*.example.org", HostRule(name="*.example.org")),
        ("127.0.0.1:8080", HostRule(network=ipaddress.ip_network("127.0.0.1/32"), port=8080)),
        ("[::1]:9000", HostRule(network=ipaddress.ip_network("::1/128"), port=9000)),
        ("fd00::/8", HostRule(network=ipaddress.ip_network("fd00::/8"))),
    ],
)
def test_host_rules_parse(text: str, rule: HostRule) -> None:
    assert HostRule.parse(text) == rule


@pytest.mark.parametrize("bad", ["a/b", "*.", "x y", "host:port", "user@host"])
def test_malformed_host_entries_are_refused_naming_the_variable(bad: str) -> None:
    with pytest.raises(ValueError, match="AMBERSCAN_SOURCE_ALLOWED_HOSTS"):
        SourcePolicy.parse("https", f"*,{bad}", [], "")


def test_unknown_schemes_and_relative_roots_are_refused() -> None:
    with pytest.raises(ValueError, match="AMBERSCAN_SOURCE_SCHEMES: unknown scheme file"):
        SourcePolicy.parse("https,file", "*", [], "")
    with pytest.raises(ValueError, match="AMBERSCAN_SOURCE_ALLOWED_ROOTS"):
        SourcePolicy.parse("https", "*", ["data"], "")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/data/imagery/2019/a.tif", None),
        ("/data/imagery", None),
        ("/data/imagery-other/a.tif", "is not under AMBERSCAN_SOURCE_ALLOWED_ROOTS"),
        ("/etc/passwd", "is not under AMBERSCAN_SOURCE_ALLOWED_ROOTS (/data/imagery)"),
        ("/vsicurl/http://169.254.169.254/a.tif", "GDAL virtual file systems"),
        ("/vsis3/other/a.tif", "GDAL virtual file systems"),
    ],
)
def test_local_paths(path: str, reason: str | None) -> None:
    refusal = LISTED.path_refusal(path)
    assert (refusal is None) if reason is None else (reason in (refusal or "")), refusal


def test_production_reads_no_local_path_and_no_bucket() -> None:
    assert "AMBERSCAN_SOURCE_ALLOWED_ROOTS lists none" in (PRODUCTION.path_refusal("/tmp") or "")
    assert "bucket 'amberscan' is not in AMBERSCAN_SOURCE_ALLOWED_BUCKETS" in (
        PRODUCTION.bucket_refusal("amberscan") or ""
    )
    assert LISTED.bucket_refusal("ortho") is None
    assert LISTED.s3_refusal("s3://ortho/2019/a.tif") is None
    assert "bucket 'secrets' is not in" in (LISTED.s3_refusal("s3://secrets/a.tif") or "")
    for climbing in ("s3://ortho/../secrets/a.tif", "s3://ortho/a/./b.tif", "s3://ortho/..\\x"):
        assert "has . or .. segments" in (LISTED.s3_refusal(climbing) or ""), climbing
    no_s3 = SourcePolicy.parse("https", "*", [], "ortho")
    assert "scheme s3 is not in" in (no_s3.bucket_refusal("ortho") or "")


def test_the_settings_own_sources_are_trusted() -> None:
    policy = SourcePolicy.parse(
        "https", "*", [], "", trusted=["http://127.0.0.1:18080/tiles/{z}/{x}/{y}.png"]
    )
    assert policy.url_refusal("http://127.0.0.1:18080/tiles/1/2/3.png") is None
    assert policy.url_refusal("http://127.0.0.1:18081/tiles/1/2/3.png") is not None
    assert policy.url_refusal("http://127.0.0.2:18080/x") is not None  # another host
    assert policy.address_refusal("127.0.0.1", 18080, "127.0.0.1") is None


@pytest.mark.parametrize(
    ("pattern", "base"),
    [("/**/*.tif", "/"), ("/data/imagery/**/*.tif", "/data/imagery"), ("/a/b?/c.tif", "/a")],
)
def test_glob_base(pattern: str, base: str) -> None:
    assert glob_base(pattern) == base


@pytest.mark.parametrize("form", ["2130706433", "0x7f000001", "017700000001", "127.1"])
def test_numeric_ipv4_forms_resolve_to_loopback_and_are_refused(form: str) -> None:
    """What the system's resolver makes of the decimal, hex, octal and short forms (as curl and
    aiohttp would connect to them) is what the address rule judges."""
    try:
        addresses = resolve_host(form, 443)
    except socket.gaierror:
        pytest.fail(f"the resolver does not take {form}")
    assert addresses == ["127.0.0.1"]
    assert PRODUCTION.url_refusal(f"https://{form}/") is None  # a name: judged once resolved
    assert "which is loopback" in (PRODUCTION.address_refusal(form, 443, addresses[0]) or "")
