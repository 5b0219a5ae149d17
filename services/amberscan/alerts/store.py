"""Alerts in PostGIS: subscriptions (the CLI and the web API call these), events, deliveries
and their log.

The idempotent parts: an event's key is (region, tile, imagery date, level), the primary key of
`alert_events`; an event goes into one delivery per subscription, the primary key
(subscription, event) of `alert_delivery_events`. Both are written `ON CONFLICT DO NOTHING`, so
replicas and restarts that see the same round record each event once and deliver it once. A
delivery moves pending → sent | failed under a claim whose fencing token guards every write.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from amberscan.alerts.core import (
    Alert,
    AlertError,
    AlertTile,
    EventKey,
    Verdict,
    check_destination,
    check_level,
)
from amberscan.common.db import Database, transient_errors


class DeliveryLost(AlertError):
    """Another replica claimed a delivery this replica was sending (fenced out)."""


@dataclass(frozen=True)
class Subscription:
    subscription_id: int
    watch_id: int
    level: str
    kind: str
    target: str
    secret: str
    created_at: datetime

    def public(self) -> dict[str, Any]:
        """What listing shows (never the secret)."""
        return {
            "subscription_id": self.subscription_id,
            "watch_id": self.watch_id,
            "level": self.level,
            "kind": self.kind,
            "target": self.target,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Claim:
    """A replica's hold on a pending delivery: its fencing token and the attempts made so far."""

    delivery_id: int
    owner: str
    token: int
    attempts: int


_SUBSCRIPTION = "subscription_id, watch_id, level, kind, target, secret, created_at"


def _subscription(row: Sequence[Any]) -> Subscription:
    return Subscription(int(row[0]), int(row[1]), row[2], row[3], row[4], row[5], row[6])


async def subscribe(
    db: Database, watch_id: int, level: str, kind: str, target: str = ""
) -> Subscription:
    """Add a subscription to a watched region; a webhook gets its own signing secret.

    Raises:
        AlertError: no such watch, or a bad level or destination (names it).
    """
    check_level(level)
    target = check_destination(kind, target)
    if not await db.fetch("SELECT 1 FROM watches WHERE watch_id = %s", watch_id):
        raise AlertError(f"no watch {watch_id}")
    secret = f"whsec_{secrets.token_urlsafe(24)}" if kind == "webhook" else ""
    rows = await db.fetch(
        "INSERT INTO alert_subscriptions (watch_id, level, kind, target, secret) "
        f"VALUES (%s, %s, %s, %s, %s) RETURNING {_SUBSCRIPTION}",
        watch_id,
        level,
        kind,
        target,
        secret,
    )
    return _subscription(rows[0])


async def subscriptions(db: Database, watch_id: int | None = None) -> list[Subscription]:
    rows = await db.fetch(
        f"SELECT {_SUBSCRIPTION} FROM alert_subscriptions "
        "WHERE %s::bigint IS NULL OR watch_id = %s ORDER BY subscription_id",
        watch_id,
        watch_id,
    )
    return [_subscription(r) for r in rows]


async def subscription(db: Database, subscription_id: int) -> Subscription:
    """Raises AlertError when there is no such subscription."""
    rows = await db.fetch(
        f"SELECT {_SUBSCRIPTION} FROM alert_subscriptions WHERE subscription_id = %s",
        subscription_id,
    )
    if not rows:
        raise AlertError(f"no alert subscription {subscription_id}")
    return _subscription(rows[0])


async def unsubscribe(db: Database, subscription_id: int) -> None:
    """Remove a subscription (its deliveries and their log go with it).

    Raises:
        AlertError: there is no such subscription.
    """
    rows = await db.fetch(
        "DELETE FROM alert_subscriptions WHERE subscription_id = %s RETURNING 1", subscription_id
    )
    if not rows:
        raise AlertError(f"no alert subscription {subscription_id}")


# How long a round past `round_wait_s` is looked at again for its late tiles: as long as watch
# waits for a sent tile's status before it sends the tile again in a new round
# (`watch.core.UNANSWERED_AFTER_S`, which a test keeps equal), whose alerts then cover it.
LATE_TILES_S = 6 * 3600.0

# Rounds not closed yet whose scan has a status for every tile, or that waited `round_wait_s`;
# each with whether it is complete, and whether its late tiles are no longer waited for.
_ROUNDS_DUE = """
SELECT scan_id, watch_id, complete, expired FROM (
  SELECT r.scan_id, r.watch_id, r.started_at,
         (SELECT count(*) FROM scan_tiles s WHERE s.scan_id = r.scan_id) >= r.tiles AS complete,
         r.started_at < now() - make_interval(secs => %s) AS waited,
         r.started_at < now() - make_interval(secs => %s) AS expired
  FROM watch_rounds r WHERE r.alerted_at IS NULL AND r.watch_id IS NOT NULL) due
WHERE complete OR waited
ORDER BY started_at
"""
# The watches a tile's damage concerns: the round's own, and every other whose region covers
# more than `OVERLAP_SHARE` of the tile (not a shared edge, nor the sliver that rounding leaves
# there). A tile is scanned once for all watches (watch_tiles has no watch in its key), so a
# region overlapping another's is alerted from the other's rounds too.
OVERLAP_SHARE = 0.001
_WATCHES_OF_TILE = (
    """
SELECT w.watch_id FROM watches w
WHERE w.watch_id = %s
   OR (w.region && {geom} AND ST_Intersects(w.region, {geom})
       AND ST_Area(ST_Intersection(w.region, {geom})) > """
    + repr(OVERLAP_SHARE)
    + """ * ST_Area({geom}))
"""
)
# Each tile of a round at its date, for each watch it concerns: its newest detection (any
# model), the verdict at the previous date the store has for the tile, and whether its damage
# was alerted already to that watch.
_VERDICTS = (
    """
SELECT w.watch_id, t.tile_id, t.imagery_date, d.model_version, d.flagged, d.hectares,
       COALESCE((SELECT max(v) FROM unnest(d.scores) AS v), 0), p.flagged,
       EXISTS (SELECT 1 FROM alert_events e WHERE e.watch_id = w.watch_id
               AND e.tile_id = t.tile_id AND e.imagery_date = t.imagery_date
               AND e.level = 'flagged')
FROM (SELECT DISTINCT tile_id, imagery_date FROM watch_tiles WHERE scan_id = %s) t
JOIN LATERAL (SELECT * FROM detections d WHERE d.tile_id = t.tile_id
              AND d.imagery_date = t.imagery_date ORDER BY d.detected_at DESC LIMIT 1) d ON true
JOIN LATERAL ("""
    + _WATCHES_OF_TILE.format(geom="d.tile_geom")
    + """) w ON true
LEFT JOIN LATERAL (SELECT flagged FROM detections p WHERE p.tile_id = t.tile_id
                   AND p.imagery_date COLLATE "C" < t.imagery_date COLLATE "C"
                   ORDER BY p.imagery_date COLLATE "C" DESC, p.detected_at DESC LIMIT 1) p ON true
ORDER BY w.watch_id, t.tile_id
"""
)


@dataclass(frozen=True)
class RoundDue:
    """A watch round whose events can be made now; `closes`: none of its tiles will be waited
    for after this look (all have a status, or the late ones are given up)."""

    scan_id: str
    watch_id: int
    closes: bool


async def rounds_due(db: Database, round_wait_s: float) -> list[RoundDue]:
    """The watch rounds whose events can be made now: complete ones, and those that waited
    `round_wait_s`, which are looked at again on every pass (their late tiles' events recorded
    as they come) until complete or `round_wait_s + LATE_TILES_S` old."""
    rows = await db.fetch(_ROUNDS_DUE, round_wait_s, round_wait_s + LATE_TILES_S)
    return [RoundDue(r[0], int(r[1]), bool(r[2]) or bool(r[3])) for r in rows]


async def verdicts(db: Database, scan_id: str, watch_id: int) -> list[Verdict]:
    """The verdicts of round `scan_id` of watch `watch_id`, for that watch and for every other
    whose region overlaps a tile of the round."""
    rows = await db.fetch(_VERDICTS, scan_id, watch_id)  # in the order the query names them
    return [
        Verdict(
            int(r[0]),
            r[1],
            r[2],
            r[3],
            bool(r[4]),
            float(r[5]),
            float(r[6]),
            None if r[7] is None else bool(r[7]),
            bool(r[8]),
        )
        for r in rows
    ]


async def record_round(
    db: Database, scan_id: str, events: Sequence[tuple[EventKey, Verdict]], closes: bool = True
) -> int:
    """Record a round's events (each once: a key already there is left) and, if it `closes`,
    mark the round looked at, in one transaction; returns the events this call recorded."""
    recorded = 0
    with transient_errors("alerts of a round"):
        async with db.pool.connection() as conn, conn.transaction():
            if events:
                cursor = await conn.execute(
                    b"INSERT INTO alert_events (watch_id, tile_id, imagery_date, level, "
                    b"model_version, hectares, score, scan_id) SELECT * FROM unnest("
                    b"%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], "
                    b"%s::float8[], %s::float8[], %s::text[]) ON CONFLICT DO NOTHING "
                    b"RETURNING event_id",
                    (
                        [k.watch_id for k, _ in events],
                        [k.tile_id for k, _ in events],
                        [k.imagery_date for k, _ in events],
                        [k.level for k, _ in events],
                        [v.model_version for _, v in events],
                        [v.hectares for _, v in events],
                        [v.score for _, v in events],
                        [scan_id] * len(events),
                    ),
                )
                recorded = len(await cursor.fetchall())
            if closes:
                await conn.execute(
                    b"UPDATE watch_rounds SET alerted_at = now() WHERE scan_id = %s", (scan_id,)
                )
    return recorded


async def record_confirmed(db: Database) -> int:
    """Record a `confirmed` event for each reviewer's confirmation of a watched tile (once per
    watch: the one that sent it, and every other whose region overlaps it)."""
    rows = await db.fetch(_CONFIRMED)
    return len(rows)


_CONFIRMED = (
    """
INSERT INTO alert_events (watch_id, tile_id, imagery_date, level, model_version, hectares,
                          score, scan_id)
SELECT DISTINCT ON (w.watch_id, r.tile_id, r.imagery_date) w.watch_id, r.tile_id,
       r.imagery_date, 'confirmed', r.model_version, COALESCE(d.hectares, 0),
       COALESCE((SELECT max(v) FROM unnest(d.scores) AS v), 0), t.scan_id
FROM reviews r
JOIN watch_tiles t ON t.tile_id = r.tile_id AND t.imagery_date = r.imagery_date
                  AND t.watch_id IS NOT NULL
LEFT JOIN detections d ON d.tile_id = r.tile_id AND d.imagery_date = r.imagery_date
                      AND d.model_version = r.model_version
JOIN LATERAL ("""
    + _WATCHES_OF_TILE.replace("%s", "t.watch_id").format(geom="d.tile_geom")
    + """) w ON true
WHERE r.verdict = 'confirmed' AND NOT EXISTS (
    SELECT 1 FROM alert_events e WHERE e.watch_id = w.watch_id AND e.tile_id = r.tile_id
    AND e.imagery_date = r.imagery_date AND e.level = 'confirmed')
ORDER BY w.watch_id, r.tile_id, r.imagery_date
ON CONFLICT DO NOTHING RETURNING event_id
"""
)


async def make_deliveries(db: Database) -> list[int]:
    """Gather each subscription's undelivered events (recorded since it was added) into one
    delivery; returns the new deliveries. A feed's delivery is published as it is made."""
    made = []
    for sub in await subscriptions(db):
        delivery = await _make_delivery(db, sub)
        if delivery is not None:
            made.append(delivery)
    return made


async def _make_delivery(db: Database, sub: Subscription) -> int | None:
    with transient_errors(f"alert subscription {sub.subscription_id}"):
        async with db.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                b"SELECT e.event_id FROM alert_events e WHERE e.watch_id = %s AND e.level = %s "
                b"AND e.created_at >= %s AND NOT EXISTS (SELECT 1 FROM alert_delivery_events x "
                b"WHERE x.subscription_id = %s AND x.event_id = e.event_id) ORDER BY e.event_id",
                (sub.watch_id, sub.level, sub.created_at, sub.subscription_id),
            )
            events = [int(r[0]) for r in await cursor.fetchall()]
            if not events:
                return None
            feed = sub.kind == "feed"
            cursor = await conn.execute(
                b"INSERT INTO alert_deliveries (subscription_id, state, finished_at) "
                b"VALUES (%s, %s, CASE WHEN %s THEN clock_timestamp() END) RETURNING delivery_id",
                (sub.subscription_id, "sent" if feed else "pending", feed),
            )
            delivery = int((await cursor.fetchall())[0][0])
            # Another replica gathering the same events at once waits here for its commit,
            # then finds them taken.
            cursor = await conn.execute(
                b"INSERT INTO alert_delivery_events (subscription_id, event_id, delivery_id) "
                b"SELECT %s, unnest(%s::bigint[]), %s ON CONFLICT DO NOTHING RETURNING event_id",
                (sub.subscription_id, events, delivery),
            )
            if not await cursor.fetchall():
                await conn.execute(
                    b"DELETE FROM alert_deliveries WHERE delivery_id = %s", (delivery,)
                )
                return None
            if feed:
                await conn.execute(
                    b"INSERT INTO alert_attempts (delivery_id, attempt, owner, outcome) "
                    b"VALUES (%s, 1, 'feed', 'published')",
                    (delivery,),
                )
    return delivery


async def add_test_delivery(db: Database, subscription_id: int) -> int:
    """A sample delivery of a subscription (no events), to be sent at once by the caller."""
    rows = await db.fetch(
        "INSERT INTO alert_deliveries (subscription_id, test) VALUES (%s, true) "
        "RETURNING delivery_id",
        subscription_id,
    )
    return int(rows[0][0])


# A claim of the delivery `WHERE` picks: its owner and lease, and one more fencing token.
_CLAIM = (
    "UPDATE alert_deliveries SET claim_owner = %s, "
    "claim_until = now() + make_interval(secs => %s), claim_token = claim_token + 1 "
    "WHERE delivery_id = {which} RETURNING delivery_id, claim_token, attempts"
)


async def claim(db: Database, owner: str, lease_s: float) -> Claim | None:
    """Take the oldest pending delivery no live claim holds (None: none)."""
    oldest = (
        "(SELECT delivery_id FROM alert_deliveries WHERE state = 'pending' AND NOT test "
        "AND (claim_until IS NULL OR claim_until < now()) ORDER BY delivery_id "
        "LIMIT 1 FOR UPDATE SKIP LOCKED)"
    )
    rows = await db.fetch(_CLAIM.format(which=oldest), owner, lease_s)
    return Claim(int(rows[0][0]), owner, int(rows[0][1]), int(rows[0][2])) if rows else None


async def claim_test(db: Database, delivery_id: int, owner: str, lease_s: float) -> Claim:
    """Take test delivery `delivery_id` (just made: no other replica claims a test)."""
    rows = await db.fetch(_CLAIM.format(which="%s"), owner, lease_s, delivery_id)
    return Claim(int(rows[0][0]), owner, int(rows[0][1]), int(rows[0][2]))


async def release(db: Database, claim: Claim) -> None:
    """Give a claimed delivery back (a replica stopping): another may take it at once."""
    await db.execute(
        "UPDATE alert_deliveries SET claim_until = NULL, claim_owner = NULL "
        "WHERE delivery_id = %s AND claim_token = %s",
        claim.delivery_id,
        claim.token,
    )


async def log_attempt(
    db: Database,
    claim: Claim,
    attempt: int,
    outcome: str,
    *,
    status: int | None = None,
    error: str = "",
) -> None:
    """Log one attempt of a claimed delivery; `sent` and `failed` also end it. Fenced by the
    claim's token.

    Raises:
        DeliveryLost: another replica has claimed the delivery since (nothing is written).
    """
    with transient_errors(f"alert delivery {claim.delivery_id}"):
        async with db.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                b"UPDATE alert_deliveries SET attempts = %s, last_error = %s, "
                b"state = CASE WHEN %s IN ('sent', 'failed') THEN %s ELSE state END, "
                b"finished_at = CASE WHEN %s IN ('sent', 'failed') THEN clock_timestamp() END "
                b"WHERE delivery_id = %s AND claim_token = %s AND state = 'pending' "
                b"RETURNING 1",
                (attempt, error, outcome, outcome, outcome, claim.delivery_id, claim.token),
            )
            if not await cursor.fetchall():
                raise DeliveryLost(
                    f"alert delivery {claim.delivery_id}: claim {claim.token} of {claim.owner} "
                    "was taken by another replica, or the delivery has ended"
                )
            await conn.execute(
                b"INSERT INTO alert_attempts (delivery_id, attempt, owner, outcome, status, "
                b"error) VALUES (%s, %s, %s, %s, %s, %s)",
                (claim.delivery_id, attempt, claim.owner, outcome, status, error[:2000]),
            )


async def alert(db: Database, delivery_id: int) -> tuple[Alert, Subscription]:
    """A delivery as its payload shows it, and its subscription. A test delivery carries one
    sample tile: the scan tile at the region's centre."""
    rows = await db.fetch(
        "SELECT d.delivery_id, d.subscription_id, d.test, "
        "COALESCE(d.finished_at, d.created_at), w.watch_id, w.name, "
        "ST_X(ST_Centroid(w.region)), ST_Y(ST_Centroid(w.region)) FROM alert_deliveries d "
        "JOIN alert_subscriptions s USING (subscription_id) JOIN watches w USING (watch_id) "
        "WHERE d.delivery_id = %s",
        delivery_id,
    )
    if not rows:
        raise AlertError(f"no alert delivery {delivery_id}")
    did, sid, test, created, watch_id, name, lon, lat = rows[0]
    sub = await subscription(db, int(sid))
    if test:
        tiles: tuple[AlertTile, ...] = (_sample(float(lon), float(lat)),)
    else:
        tiles = tuple(
            AlertTile(int(r[0]), r[1], r[2], r[3], float(r[4]), float(r[5]))
            for r in await db.fetch(
                "SELECT e.event_id, e.tile_id, e.imagery_date, e.model_version, e.hectares, "
                "e.score FROM alert_delivery_events x JOIN alert_events e USING (event_id) "
                "WHERE x.delivery_id = %s ORDER BY e.tile_id, e.imagery_date",
                delivery_id,
            )
        )
    alert = Alert(
        int(did), int(sid), int(watch_id), name, sub.level, tiles, created.isoformat(), bool(test)
    )
    return alert, sub


def _sample(lon: float, lat: float) -> AlertTile:
    import mercantile

    from amberscan.geo.tiles import DEFAULT_SCAN_ZOOM

    tile = mercantile.tile(lon, lat, DEFAULT_SCAN_ZOOM)
    return AlertTile(0, mercantile.quadkey(tile), "", "sample", 0.0, 0.0)


async def published(db: Database, subscription_id: int, limit: int = 100) -> list[int]:
    """A feed's entries: its newest published deliveries."""
    rows = await db.fetch(
        "SELECT delivery_id FROM alert_deliveries WHERE subscription_id = %s AND state = 'sent' "
        "ORDER BY delivery_id DESC LIMIT %s",
        subscription_id,
        limit,
    )
    return [int(r[0]) for r in rows]


async def log(db: Database, subscription_id: int, limit: int = 100) -> list[dict[str, Any]]:
    """A subscription's newest deliveries, each with its attempts (the delivery log)."""
    rows = await db.fetch(
        "SELECT d.delivery_id, d.state, d.test, d.attempts, d.last_error, d.created_at, "
        "d.finished_at, (SELECT count(*) FROM alert_delivery_events x "
        "WHERE x.delivery_id = d.delivery_id), "
        "COALESCE((SELECT json_agg(json_build_object('attempt', a.attempt, 'owner', a.owner, "
        "'outcome', a.outcome, 'status', a.status, 'error', a.error, 'at', a.at) "
        "ORDER BY a.attempt_id) FROM alert_attempts a WHERE a.delivery_id = d.delivery_id), "
        "'[]'::json) FROM alert_deliveries d WHERE d.subscription_id = %s "
        "ORDER BY d.delivery_id DESC LIMIT %s",
        subscription_id,
        limit,
    )
    return [
        {
            "delivery_id": int(r[0]),
            "state": r[1],
            "test": bool(r[2]),
            "attempts": int(r[3]),
            "last_error": r[4],
            "created_at": r[5].isoformat(),
            "finished_at": r[6].isoformat() if r[6] else None,
            "events": int(r[7]),
            "log": r[8],
        }
        for r in rows
    ]
