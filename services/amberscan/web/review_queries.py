"""The web app's SQL of the review loop: verdicts with their history, labels, audits.

Every verdict and label change is kept in `review_events` (who, what, when); `reviews` and
`superpixel_labels` hold the current state, which is the latest event's. A write and its event
go in one transaction.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from amberscan.common.db import Database
from amberscan.web.core import LABEL_NAMES, Filters
from amberscan.web.queries import FROM, REVIEW_STATE, fetch_dicts, where_clause

# The review event of a label set (its name) or cleared.
LABEL_ACTIONS = LABEL_NAMES | {None: "label_cleared"}
_EVENT = b"""INSERT INTO review_events
    (tile_id, imagery_date, model_version, action, segment_index, reviewer, note)
    VALUES (%s, %s, %s, %s, %s, %s, %s)"""


async def _label(
    conn: AsyncConnection[Any], row: dict[str, Any], segment: int, label: int | None, reviewer: str
) -> None:
    if label is None:
        await conn.execute(
            b"DELETE FROM superpixel_labels WHERE labels_key = %s AND segment_index = %s",
            [row["labels_key"], segment],
        )
    else:
        await conn.execute(
            b"""INSERT INTO superpixel_labels
                   (labels_key, segment_index, image_key, tile_id, imagery_date, label, reviewer,
                    labelled_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s, now())
               ON CONFLICT (labels_key, segment_index) DO UPDATE SET
                   label = EXCLUDED.label, reviewer = EXCLUDED.reviewer, labelled_at = now()""",
            [
                row["labels_key"],
                segment,
                row["image_key"],
                row["tile_id"],
                row["imagery_date"],
                label,
                reviewer,
            ],
        )
    await conn.execute(
        _EVENT,
        [
            row["tile_id"],
            row["imagery_date"],
            row["model_version"],
            LABEL_ACTIONS[label],
            segment,
            reviewer,
            "",
        ],
    )


async def save_review(
    db: Database,
    row: dict[str, Any],
    verdict: str | None,
    reviewer: str,
    note: str,
    not_mining: Sequence[int] = (),
) -> dict[str, Any]:
    """Set (None: clear) a person's verdict on a detection, and label the superpixels
    `not_mining` as not mining, in one transaction with their events; the saved review, with
    what it replaced (`previous`: the earlier verdict, its reviewer, note and time, or None;
    `previous_labels`: each labelled superpixel's earlier label, None for none), so that an
    undo can put those back rather than clear them."""
    key = [row["tile_id"], row["imagery_date"], row["model_version"]]
    async with db.pool.connection() as conn, conn.transaction():
        cursor = await conn.execute(
            b"""SELECT verdict, reviewer, note, reviewed_at FROM reviews
               WHERE tile_id = %s AND imagery_date = %s FOR UPDATE""",
            key[:2],
        )
        before = await cursor.fetchone()
        previous = (
            dict(zip(("verdict", "reviewer", "note", "reviewed_at"), before, strict=True))
            if before
            else None
        )
        previous_labels: dict[int, int | None] = dict.fromkeys(not_mining)
        if not_mining:
            cursor = await conn.execute(
                b"""SELECT segment_index, label FROM superpixel_labels
                   WHERE labels_key = %s AND segment_index = ANY(%s) FOR UPDATE""",
                [row["labels_key"], list(not_mining)],
            )
            previous_labels |= {int(i): int(label) for i, label in await cursor.fetchall()}
        if verdict is None:
            await conn.execute(
                b"DELETE FROM reviews WHERE tile_id = %s AND imagery_date = %s", key[:2]
            )
            saved: dict[str, Any] = {"verdict": None, "reviewer": reviewer, "reviewed_at": None}
        else:
            cursor = await conn.execute(
                b"""INSERT INTO reviews
                       (tile_id, imagery_date, model_version, verdict, reviewer, note, reviewed_at)
                   VALUES (%s, %s, %s, %s, %s, %s, now())
                   ON CONFLICT (tile_id, imagery_date) DO UPDATE SET
                       model_version = EXCLUDED.model_version,
                       verdict = EXCLUDED.verdict, reviewer = EXCLUDED.reviewer,
                       note = EXCLUDED.note, reviewed_at = EXCLUDED.reviewed_at
                   RETURNING verdict, reviewer, reviewed_at""",
                [*key, verdict, reviewer, note],
            )
            verdict_, reviewer_, at = await cursor.fetchone()  # type: ignore[misc]
            saved = {"verdict": verdict_, "reviewer": reviewer_, "reviewed_at": at}
        await conn.execute(_EVENT, [*key, verdict or "cleared", None, reviewer, note])
        for segment in not_mining:
            await _label(conn, row, segment, 0, reviewer)
    return {**saved, "previous": previous, "previous_labels": previous_labels}


async def save_label(
    db: Database, row: dict[str, Any], segment: int, label: int | None, reviewer: str
) -> None:
    """Set (or with None, remove) a person's label of superpixel `segment` of a detection's tile."""
    async with db.pool.connection() as conn, conn.transaction():
        await _label(conn, row, segment, label, reviewer)


async def history(
    db: Database, tile_id: str, imagery_date: str, model: str = ""
) -> list[dict[str, Any]]:
    """Every review event of one tile's imagery, under any model, oldest first (each names
    the model whose detection it was made on)."""
    return await fetch_dicts(
        db,
        """SELECT action, segment_index, reviewer, note, at, model_version FROM review_events
           WHERE tile_id = %s AND imagery_date = %s
           ORDER BY at, event_id""",
        [tile_id, imagery_date],
    )


async def labels_of(db: Database, labels_key: str) -> dict[int, int]:
    """Segment index → person's label (1 mining, 0 not) for one segmentation."""
    rows = await db.fetch(
        "SELECT segment_index, label FROM superpixel_labels WHERE labels_key = %s", labels_key
    )
    return {int(i): int(label) for i, label in rows}


@dataclass(frozen=True)
class ReviewedSuperpixel:
    """A superpixel labelled through a review, with the blobs needed to crop it and where its
    label came from (`source`: "relabelled" by a person, or derived from a "confirmed" or
    "rejected" tile's positive superpixel; who, when, and the model whose detection it was)."""

    tile_id: str
    imagery_date: str
    image_key: str
    labels_key: str
    segment_index: int
    label: int  # 1 = mining
    source: str = "relabelled"
    reviewer: str = ""
    at: str = ""
    model_version: str = ""


async def reviewed_superpixels(db: Database) -> list[ReviewedSuperpixel]:
    """Every superpixel a person labelled (tile image key, labels key, segment index, label,
    who and when)."""
    rows = await db.fetch(
        """SELECT tile_id, imagery_date, image_key, labels_key, segment_index, label, reviewer,
                  labelled_at
           FROM superpixel_labels WHERE image_key <> '' AND labels_key <> ''
           ORDER BY tile_id, imagery_date, labels_key, segment_index"""
    )
    return [
        ReviewedSuperpixel(str(t), str(d), str(i), str(k), int(s), int(lab), "relabelled",
                           str(who), at.isoformat() if at else "")
        for t, d, i, k, s, lab, who, at in rows
    ]  # fmt: skip


async def reviewed_tiles(db: Database) -> list[dict[str, Any]]:
    """Every verdict with the detection it was made on (that model's scores and positive
    count, the tile's blobs): the source of the labels `core.labels_from_verdict` derives."""
    return await fetch_dicts(
        db,
        """SELECT r.tile_id, r.imagery_date, r.model_version, r.verdict, r.reviewer,
                  r.reviewed_at, d.scores, d.positives, d.image_key, d.labels_key
           FROM reviews r JOIN detections d USING (tile_id, imagery_date, model_version)
           WHERE d.image_key <> '' AND d.labels_key <> ''
           ORDER BY r.tile_id, r.imagery_date""",
        [],
    )


async def create_audit(db: Database, n: int, filters: Filters, created_by: str) -> int:
    """Draw a uniform random sample of `n` flagged detections; the new audit's id."""
    where, params = where_clause(filters)
    async with db.pool.connection() as conn, conn.transaction():
        cursor = await conn.execute(
            b"INSERT INTO audits (requested, created_by) VALUES (%s, %s) RETURNING audit_id",
            [n, created_by],
        )
        audit_id = int((await cursor.fetchone())[0])  # type: ignore[index]
        await conn.execute(
            f"""INSERT INTO audit_tiles (audit_id, tile_id, imagery_date, model_version)
                SELECT %s, d.tile_id, d.imagery_date, d.model_version {FROM}
                WHERE d.flagged AND {where} ORDER BY random() LIMIT %s""".encode(),
            [audit_id, *params, n],
        )
    return audit_id


async def audit(db: Database, audit_id: int) -> dict[str, Any] | None:
    head = await fetch_dicts(
        db,
        "SELECT audit_id, requested, created_by, created_at FROM audits WHERE audit_id = %s",
        [audit_id],
    )
    if not head:
        return None
    tiles = await fetch_dicts(
        db,
        """SELECT a.tile_id, a.imagery_date, a.model_version, r.verdict, r.reviewer
           FROM audit_tiles a LEFT JOIN reviews r
             ON r.tile_id = a.tile_id AND r.imagery_date = a.imagery_date
           WHERE a.audit_id = %s ORDER BY a.tile_id, a.imagery_date, a.model_version""",
        [audit_id],
    )
    return {**head[0], "tiles": tiles}


# What the review queue weighs (`queue.py`): for each tile's detection the filters choose (its
# newest vintage, or the one of the year asked for), another model's flag on the same imagery
# (the newest such run) and the tile's previous vintage, with enough to open both.
_QUEUE = f"""
SELECT d.tile_id, d.imagery_date, d.model_version, d.scan_id, d.flagged, d.scores,
       d.positives, d.segment_count, d.min_positives, d.hectares, d.demo,
       r.verdict, ({REVIEW_STATE}) AS review,
       o.model_version AS other_model, o.flagged AS other_flagged,
       p.imagery_date AS previous_date, p.model_version AS previous_model,
       p.flagged AS previous_flagged
{FROM}
LEFT JOIN LATERAL (SELECT o.model_version, o.flagged FROM detections o
                   WHERE o.tile_id = d.tile_id AND o.imagery_date = d.imagery_date
                     AND o.model_version <> d.model_version
                   ORDER BY o.detected_at DESC LIMIT 1) o ON true
LEFT JOIN LATERAL (SELECT p.imagery_date, p.model_version, p.flagged FROM detections p
                   WHERE p.tile_id = d.tile_id AND p.imagery_date ~ '^[0-9]{{4}}'
                     AND left(p.imagery_date, 4) < left(d.imagery_date, 4)
                   ORDER BY p.imagery_date DESC, p.detected_at DESC LIMIT 1) p ON true
"""


async def queue_rows(
    db: Database, filters: Filters, scan: str = ""
) -> AsyncGenerator[dict[str, Any], None]:
    """The detections the review queue may hold: under `filters` (region, vintage, model) and
    of scan `scan` when given, not yet reviewed or reflagged, with the other model's and the
    previous vintage's flags (`_QUEUE`). Unordered (`queue.Top` keeps the head of the order),
    and streamed from a server-side cursor: an unscoped queue weighs every tile of a survey,
    and memory holds only what the cursor fetched."""
    where, params = where_clause(filters)
    query = f"{_QUEUE} WHERE {where} AND (r.verdict IS NULL OR ({REVIEW_STATE}) = 'reflagged')"
    if scan:
        query += " AND d.scan_id = %s"
        params.append(scan)
    async with db.pool.connection() as conn, conn.transaction():
        async with conn.cursor(name="amberscan_review_queue", row_factory=dict_row) as cursor:
            await cursor.execute(query.encode(), params)
            async for row in cursor:
                yield row
