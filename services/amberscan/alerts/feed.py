"""A feed subscription's Atom feed (RFC 4287): one entry per delivery, newest first. Pure.

Written with the standard library's ElementTree: feedgen 1.0.0 drops the `rel` and `title` of
an entry's links (its `atom_entry` rebinds the loop's `link`), and the tile debugger links are
`rel="related"`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import datetime

from amberscan.alerts.core import Alert, payload, text, title

ATOM = "http://www.w3.org/2005/Atom"
CONTENT_TYPE = "application/atom+xml; charset=utf-8"


def _add(parent: ET.Element, tag: str, value: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
    if value is not None:
        element.text = value
    return element


def atom(
    subscription_id: int,
    region: str,
    level: str,
    alerts: Sequence[tuple[Alert, datetime]],
    base_url: str,
    updated: datetime,
) -> bytes:
    """The Atom document of a feed subscription's deliveries (each with its time).

    Args:
        updated: the feed's time when it has no entry (the subscription's creation).
    """
    base = base_url.rstrip("/")
    url = f"{base}/api/alerts/{subscription_id}/feed.atom"
    ET.register_namespace("", ATOM)
    feed = ET.Element(f"{{{ATOM}}}feed")
    _add(feed, "id", url)
    _add(feed, "title", f"amberscan alerts: {region} ({level})")
    _add(feed, "updated", max([when for _, when in alerts], default=updated).isoformat())
    _add(_add(feed, "author"), "name", "amberscan")
    _add(feed, "link", href=url, rel="self", type="application/atom+xml")
    _add(feed, "link", href=f"{base}/", rel="alternate", type="text/html")
    for alert, when in sorted(alerts, key=lambda a: (a[1], a[0].delivery_id), reverse=True):
        data = payload(alert, base_url)
        entry = _add(feed, "entry")
        _add(entry, "id", f"{url}#delivery-{alert.delivery_id}")
        _add(entry, "title", title(alert))
        _add(entry, "updated", when.isoformat())
        _add(entry, "published", when.isoformat())
        _add(entry, "link", href=data["map_url"], rel="alternate", type="text/html")
        for tile in data["tiles"]:
            _add(
                entry,
                "link",
                href=tile["debugger_url"],
                rel="related",
                type="text/html",
                title=f"tile {tile['tile_id']}",
            )
        _add(entry, "content", text(alert, base_url), type="text")
    document: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return document
