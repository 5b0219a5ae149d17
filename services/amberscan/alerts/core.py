"""Alerts core: which events a finished watch round makes, their keys, the webhook's payload and
signature, and the checks of a destination. Pure: values in and out, no I/O.

An alert is an *event* keyed by (region, tile, imagery date, level): the store's primary key, so
it is recorded once whichever replica, round or restart sees it first. Its levels:

- `flagged`: new damage. The tile's verdict at this imagery date (its newest detection, any
  model) is flagged, and its verdict at the previous imagery date the store has for it was not.
  A tile's first imagery date is the baseline and alerts nothing; a verdict that only changed
  model version (a replay of the same date) makes no event: the key has no model in it.
- `high`: new damage whose highest superpixel score is at least `AMBERSCAN_ALERT_HIGH_SCORE`
  (default 0.9). Measured by `make bench-alert-tier` on the gate share: not more precise than the
  threshold (0.941 against 0.944; both false positives score above 0.9): fewer alerts, not surer.
- `confirmed`: a reviewer confirmed the tile's detection at that imagery date.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from amberscan.errors import AmberscanError
from amberscan.geo.tiles import Tile

LEVELS = ("flagged", "high", "confirmed")
KINDS = ("webhook", "email", "feed")
DEFAULT_HIGH_SCORE = 0.9
# Stripe's scheme: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` in this header.
SIGNATURE_HEADER = "X-Amberscan-Signature"
DELIVERY_HEADER = "X-Amberscan-Delivery"
# A receiver refuses a signature older than this (a replayed request).
SIGNATURE_TOLERANCE_S = 300
_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+$")


class AlertError(AmberscanError):
    """A subscription that cannot be added or found (names it and why)."""


@dataclass(frozen=True)
class Verdict:
    """A watched tile's verdict at one imagery date, and the one before it.

    Attributes:
        previous_flagged: the verdict at the tile's previous imagery date; None when this date
            is the first the store has for the tile (the baseline).
        score: the tile's highest superpixel score.
        alerted: a `flagged` event of this (region, tile, imagery date) is recorded already
            (a later model's verdict of the same imagery alerts nothing, not even `high`).
    """

    watch_id: int
    tile_id: str
    imagery_date: str
    model_version: str
    flagged: bool
    hectares: float
    score: float
    previous_flagged: bool | None
    alerted: bool = False


@dataclass(frozen=True)
class EventKey:
    """What makes an alert one event: (region, tile, imagery date, level)."""

    watch_id: int
    tile_id: str
    imagery_date: str
    level: str

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"alert level {self.level!r}: expected one of {', '.join(LEVELS)}")

    def __str__(self) -> str:
        return f"watch {self.watch_id} tile {self.tile_id} at {self.imagery_date or '-'} ({self.level})"


def new_damage(verdict: Verdict) -> bool:
    """Flagged now, not flagged at the tile's previous imagery date (which exists), and not
    alerted already."""
    return verdict.flagged and verdict.previous_flagged is False and not verdict.alerted


def events_of(verdicts: Iterable[Verdict], high_score: float) -> list[tuple[EventKey, Verdict]]:
    """The `flagged` and `high` events a round's verdicts make (see the module's levels)."""
    out = []
    for verdict in verdicts:
        if not new_damage(verdict):
            continue
        key = (verdict.watch_id, verdict.tile_id, verdict.imagery_date)
        out.append((EventKey(*key, "flagged"), verdict))
        if verdict.score >= high_score:
            out.append((EventKey(*key, "high"), verdict))
    return out


def check_level(level: str) -> str:
    if level not in LEVELS:
        raise AlertError(f"alert level {level!r}: expected one of {', '.join(LEVELS)}")
    return level


def check_webhook_url(url: str) -> str:
    """A webhook destination: https, or http to a loopback address (tests, the demo).

    A webhook is an outbound delivery of amberscan's own alerts, not an imagery source.

    Raises:
        AlertError: naming the URL and what is wrong with it.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        raise AlertError(f"webhook {url!r}: expected an https:// URL")
    if parts.scheme == "http" and not _loopback(host):
        raise AlertError(
            f"webhook {url!r}: plain http is allowed only to a loopback address "
            "(127.0.0.1, ::1, localhost); use https"
        )
    if parts.username or parts.password:
        raise AlertError(f"webhook {url!r}: no credentials in the URL (the payload is signed)")
    return url


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_email(address: str) -> str:
    """One e-mail address (`someone@example.org`).

    Raises:
        AlertError: naming the address.
    """
    if not _EMAIL.match(address):
        raise AlertError(
            f"e-mail address {address!r}: expected one address such as ops@example.org"
        )
    return address


def check_destination(kind: str, target: str) -> str:
    """The destination of a subscription of `kind`, checked (a feed has none)."""
    if kind == "webhook":
        return check_webhook_url(target)
    if kind == "email":
        return check_email(target)
    if kind == "feed":
        return ""
    raise AlertError(f"destination kind {kind!r}: expected one of {', '.join(KINDS)}")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of `<timestamp>.<body>` under the subscription's secret."""
    message = str(int(timestamp)).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Amberscan-Signature` value: `t=<timestamp>,v1=<signature>`."""
    return f"t={int(timestamp)},v1={sign(secret, timestamp, body)}"


def verify(
    secret: str, header: str, body: bytes, now: float, tolerance_s: float = SIGNATURE_TOLERANCE_S
) -> bool:
    """Whether `header` signs `body` under `secret`, made within `tolerance_s` of `now` (what a
    receiver checks; the README has the same in a few lines)."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), fields.get("v1", ""))


@dataclass(frozen=True)
class AlertTile:
    """One event of a delivery, as its payload shows it."""

    event_id: int
    tile_id: str
    imagery_date: str
    model_version: str
    hectares: float
    score: float


@dataclass(frozen=True)
class Alert:
    """What one delivery carries: a subscription's events of one round (or a sample)."""

    delivery_id: int
    subscription_id: int
    watch_id: int
    watch_name: str
    level: str
    tiles: tuple[AlertTile, ...]
    created_at: str
    test: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def tile_links(base_url: str, tile: AlertTile) -> dict[str, Any]:
    """The tile's bounds, its map link (the map fitted to the tile) and its tile debugger."""
    bounds = Tile.from_quadkey(tile.tile_id).bounds()
    base = base_url.rstrip("/")
    query = urlencode({"imagery_date": tile.imagery_date, "model": tile.model_version})
    return {
        "bbox": [round(v, 7) for v in bounds],
        "map_url": f"{base}/?{urlencode({'bbox': ','.join(f'{v:.6f}' for v in bounds)})}",
        "debugger_url": f"{base}/tile/{quote(tile.tile_id)}?{query}",
    }


def payload(alert: Alert, base_url: str) -> dict[str, Any]:
    """The webhook's JSON body (the e-mail and the feed entry say the same)."""
    tiles = []
    boxes = []
    for tile in alert.tiles:
        links = tile_links(base_url, tile)
        boxes.append(links["bbox"])
        tiles.append(
            {
                "event_id": tile.event_id,
                "tile_id": tile.tile_id,
                "imagery_date": tile.imagery_date,
                "model": tile.model_version,
                "hectares": round(tile.hectares, 4),
                "score": round(tile.score, 4),
                **links,
            }
        )
    bbox = (
        [
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        ]
        if boxes
        else None
    )
    base = base_url.rstrip("/")
    return {
        "type": "amberscan.alert",
        "test": alert.test,
        "delivery_id": alert.delivery_id,
        "subscription_id": alert.subscription_id,
        "level": alert.level,
        "watch": {"id": alert.watch_id, "name": alert.watch_name},
        "created_at": alert.created_at,
        "tiles": tiles,
        "hectares": round(sum(t.hectares for t in alert.tiles), 4),
        "imagery_dates": sorted({t.imagery_date for t in alert.tiles}),
        "models": sorted({t.model_version for t in alert.tiles}),
        "map_url": f"{base}/?{urlencode({'bbox': ','.join(f'{v:.6f}' for v in bbox)})}"
        if bbox
        else f"{base}/",
        **alert.extra,
    }


def body(alert: Alert, base_url: str) -> bytes:
    """The payload as the bytes that are signed and sent."""
    return json.dumps(payload(alert, base_url), separators=(",", ":"), sort_keys=True).encode()


def title(alert: Alert) -> str:
    """One line naming what happened, for the e-mail's subject and the feed entry."""
    what = {"flagged": "new damage", "high": "new high-score damage", "confirmed": "confirmed"}
    region = alert.watch_name or f"watch {alert.watch_id}"
    hectares = sum(t.hectares for t in alert.tiles)
    test = "[test] " if alert.test else ""
    return (
        f"{test}amberscan: {what[alert.level]} in {region}: {len(alert.tiles)} tile"
        f"{'' if len(alert.tiles) == 1 else 's'}, {hectares:.2f} ha"
    )


def text(alert: Alert, base_url: str) -> str:
    """The plain-text summary: one line per tile with its links."""
    data = payload(alert, base_url)
    lines = [title(alert), "", f"Map: {data['map_url']}", ""]
    for tile in data["tiles"]:
        lines.append(
            f"- tile {tile['tile_id']} imagery {tile['imagery_date'] or '-'}: "
            f"{tile['hectares']:.2f} ha, score {tile['score']:.2f}, model {tile['model'] or '-'}"
        )
        lines.append(f"  {tile['debugger_url']}")
    lines += ["", f"Delivery {alert.delivery_id}, subscription {alert.subscription_id}."]
    return "\n".join(lines) + "\n"


def email_message(alert: Alert, base_url: str, sender: str, to: str) -> EmailMessage:
    """The e-mail of a delivery (plain text, its payload as a JSON attachment)."""
    message = EmailMessage()
    message["Subject"] = title(alert)
    message["From"] = sender
    message["To"] = to
    message[DELIVERY_HEADER] = str(alert.delivery_id)
    message.set_content(text(alert, base_url))
    message.add_attachment(
        body(alert, base_url), maintype="application", subtype="json", filename="alert.json"
    )
    return message


def summarise(tiles: Sequence[AlertTile]) -> str:
    return ", ".join(f"{t.tile_id}@{t.imagery_date or '-'}" for t in tiles)
