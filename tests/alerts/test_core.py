"""Alerts core, pure: event keys and levels, the webhook's signature, destinations, payloads,
the e-mail and the Atom feed."""

from __future__ import annotations

import hashlib
import hmac
import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amberscan.alerts import core, feed
from amberscan.alerts.core import Alert, AlertError, AlertTile, EventKey, Verdict
from amberscan.geo.tiles import Tile

TILE = Tile(151234, 87211, 18).quadkey
ATOM = "{http://www.w3.org/2005/Atom}"


def verdict(flagged: bool, previous: bool | None, score: float = 0.5, **kw: object) -> Verdict:
    values: dict[str, object] = {
        "watch_id": 1,
        "tile_id": TILE,
        "imagery_date": "2019-06-01",
        "model_version": "m1",
        "flagged": flagged,
        "hectares": 0.3,
        "score": score,
        "previous_flagged": previous,
    }
    values.update(kw)
    return Verdict(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("flagged", "previous", "score", "levels"),
    [
        (True, False, 0.5, ["flagged"]),  # new damage
        (True, False, 0.95, ["flagged", "high"]),  # new damage above the high tier
        (True, False, 0.9, ["flagged", "high"]),  # the tier is inclusive
        (True, None, 0.95, []),  # the tile's first imagery date: the baseline
        (True, True, 0.95, []),  # flagged before too: not new
        (False, False, 0.95, []),
        (False, True, 0.95, []),  # damage gone is no alert
    ],
)
def test_events_of_a_round(
    flagged: bool, previous: bool | None, score: float, levels: list[str]
) -> None:
    events = core.events_of([verdict(flagged, previous, score)], high_score=0.9)
    assert [key.level for key, _ in events] == levels
    assert {(k.watch_id, k.tile_id, k.imagery_date) for k, _ in events} <= {(1, TILE, "2019-06-01")}


def test_a_model_change_alone_makes_the_same_event_key() -> None:
    """The key has no model: a replay under a new model gives the key already recorded."""
    old = core.events_of([verdict(True, False, model_version="m1")], 0.9)
    new = core.events_of([verdict(True, False, model_version="m2", hectares=0.5)], 0.9)
    assert [k for k, _ in old] == [k for k, _ in new]


def test_damage_alerted_already_is_not_alerted_again_by_a_later_model() -> None:
    """A replay's verdict of the same imagery above the high tier: no `high` event either."""
    assert core.events_of([verdict(True, False, 0.95, alerted=True)], 0.9) == []


def test_event_key_names_itself_and_checks_its_level() -> None:
    key = EventKey(3, TILE, "2019-06-01", "high")
    assert str(key) == f"watch 3 tile {TILE} at 2019-06-01 (high)"
    assert key == EventKey(3, TILE, "2019-06-01", "high") and len({key, key}) == 1
    with pytest.raises(ValueError, match="alert level 'possible'"):
        EventKey(3, TILE, "2019-06-01", "possible")
    with pytest.raises(AlertError, match="expected one of flagged, high, confirmed"):
        core.check_level("possible")


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(b"whsec_x", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert core.sign("whsec_x", 1700000000, body) == expected
    header = core.signature_header("whsec_x", 1700000000, body)
    assert header == f"t=1700000000,v1={expected}"
    assert core.verify("whsec_x", header, body, now=1700000010)


@pytest.mark.parametrize(
    ("secret", "body", "now", "header"),
    [
        ("whsec_other", b'{"a":1}', 1700000000, None),  # another secret
        ("whsec_x", b'{"a":2}', 1700000000, None),  # a changed body
        ("whsec_x", b'{"a":1}', 1700000000 + 301, None),  # too old: a replay
        ("whsec_x", b'{"a":1}', 1700000000, "v1=abc"),  # no timestamp
        ("whsec_x", b'{"a":1}', 1700000000, "t=soon,v1=abc"),
    ],
)
def test_a_bad_signature_is_refused(secret: str, body: bytes, now: int, header: str | None) -> None:
    header = header or core.signature_header("whsec_x", 1700000000, b'{"a":1}')
    assert not core.verify(secret, header, body, now=now)


@given(st.text(min_size=1), st.binary(), st.integers(0, 2**40))
def test_signing_round_trips(secret: str, body: bytes, timestamp: int) -> None:
    header = core.signature_header(secret, timestamp, body)
    assert core.verify(secret, header, body, now=timestamp)
    assert not core.verify(secret + "x", header, body, now=timestamp)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.org/amberscan",
        "http://127.0.0.1:8123/hook",
        "http://127.5.0.1/hook",
        "http://[::1]:9000/",
        "http://localhost:9000/",
    ],
)
def test_webhook_urls_accepted(url: str) -> None:
    assert core.check_webhook_url(url) == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://hooks.example.org/x", "plain http is allowed only to a loopback address"),
        ("http://10.0.0.5/x", "plain http is allowed only to a loopback address"),
        ("ftp://example.org/x", "expected an https:// URL"),
        ("hooks.example.org/x", "expected an https:// URL"),
        ("https://user:pw@example.org/x", "no credentials in the URL"),
    ],
)
def test_webhook_urls_refused(url: str, message: str) -> None:
    with pytest.raises(AlertError, match=message) as refused:
        core.check_webhook_url(url)
    assert url in str(refused.value)


def test_destinations() -> None:
    assert core.check_destination("email", "ops@example.org") == "ops@example.org"
    assert core.check_destination("feed", "ignored") == ""
    with pytest.raises(AlertError, match="e-mail address 'ops'"):
        core.check_destination("email", "ops")
    with pytest.raises(AlertError, match="e-mail address 'a@b.org, c@d.org'"):
        core.check_destination("email", "a@b.org, c@d.org")
    with pytest.raises(AlertError, match="destination kind 'sms'"):
        core.check_destination("sms", "+48")


def alert(**kw: object) -> Alert:
    tiles = (
        AlertTile(7, TILE, "2019-06-01", "m1", 0.25, 0.8),
        AlertTile(8, Tile(151235, 87211, 18).quadkey, "2019-06-01", "m1", 0.5, 0.95),
    )
    values: dict[str, object] = {
        "delivery_id": 12,
        "subscription_id": 3,
        "watch_id": 1,
        "watch_name": "klesiv",
        "level": "flagged",
        "tiles": tiles,
        "created_at": "2026-12-06T09:00:00+00:00",
    }
    values.update(kw)
    return Alert(**values)  # type: ignore[arg-type]


def test_payload_has_tiles_hectares_dates_model_and_links() -> None:
    data = json.loads(core.body(alert(), "https://amber.example.org/"))
    assert data["type"] == "amberscan.alert" and data["test"] is False
    assert (data["delivery_id"], data["subscription_id"], data["level"]) == (12, 3, "flagged")
    assert data["watch"] == {"id": 1, "name": "klesiv"}
    assert data["hectares"] == 0.75 and data["imagery_dates"] == ["2019-06-01"]
    assert data["models"] == ["m1"]
    first = data["tiles"][0]
    assert first["tile_id"] == TILE and first["event_id"] == 7 and first["hectares"] == 0.25
    assert first["debugger_url"] == (
        f"https://amber.example.org/tile/{TILE}?imagery_date=2019-06-01&model=m1"
    )
    west, south, east, north = Tile.from_quadkey(TILE).bounds()
    assert first["bbox"] == [round(v, 7) for v in (west, south, east, north)]
    assert first["map_url"].startswith("https://amber.example.org/?bbox=")
    # The whole alert's map link covers both tiles.
    bbox = [float(v) for v in data["map_url"].split("bbox=")[1].replace("%2C", ",").split(",")]
    assert bbox[0] == pytest.approx(west, abs=1e-6) and bbox[2] > east


def test_email_says_what_and_carries_the_payload() -> None:
    message = core.email_message(alert(), "http://127.0.0.1:8080", "amber@x.org", "ops@y.org")
    assert message["Subject"] == "amberscan: new damage in klesiv: 2 tiles, 0.75 ha"
    assert (message["From"], message["To"], message[core.DELIVERY_HEADER]) == (
        "amber@x.org",
        "ops@y.org",
        "12",
    )
    text, attachment = list(message.iter_parts())
    assert f"/tile/{TILE}?imagery_date=2019-06-01&model=m1" in text.get_content()
    assert json.loads(attachment.get_content())["delivery_id"] == 12
    test = core.title(alert(test=True, level="high", tiles=alert().tiles[:1]))
    assert test == "[test] amberscan: new high-score damage in klesiv: 1 tile, 0.25 ha"


def test_atom_feed_lists_each_delivery_once_newest_first() -> None:
    first = datetime(2026, 12, 1, tzinfo=UTC)
    second = datetime(2026, 12, 5, tzinfo=UTC)
    document = feed.atom(
        3,
        "klesiv",
        "flagged",
        [(alert(delivery_id=12), first), (alert(delivery_id=15, tiles=alert().tiles[:1]), second)],
        "http://127.0.0.1:8080",
        updated=first,
    )
    root = ET.fromstring(document)
    assert root.tag == f"{ATOM}feed"
    assert root.findtext(f"{ATOM}id") == "http://127.0.0.1:8080/api/alerts/3/feed.atom"
    entries = root.findall(f"{ATOM}entry")
    assert [e.findtext(f"{ATOM}id").rsplit("-", 1)[1] for e in entries] == ["15", "12"]
    assert entries[0].findtext(f"{ATOM}title") == "amberscan: new damage in klesiv: 1 tile, 0.25 ha"
    links = entries[1].findall(f"{ATOM}link")
    related = [link.get("href") for link in links if link.get("rel") == "related"]
    assert len(related) == 2 and all("/tile/" in href for href in related)
    empty = ET.fromstring(feed.atom(3, "klesiv", "flagged", [], "http://x", updated=first))
    assert empty.findall(f"{ATOM}entry") == [] and empty.findtext(f"{ATOM}updated")
