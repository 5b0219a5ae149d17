"""Sink core: a detection or a dead letter → the SQL parameters of its rows. Pure.

The newest detection of a (tile, imagery date, model version) key wins, by the detection's own
`detected_at` (stamped by the aggregator): a redelivered or replayed older one, or the older of
two with the same key in one batch (handled concurrently), never overwrites a newer row, and
re-writing the same one is harmless. A detection without a time (from before the field) is
stored when its key is new, never over an existing row.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from amberscan.v1 import messages_pb2 as pb

UPSERT_DETECTION = """
INSERT INTO detections (
    tile_id, imagery_date, model_version, backbone_version, scan_id, z, x, y, provider,
    flagged, positives, segment_count, min_positives, hectares, scores, demo, image_key,
    labels_key, tile_geom, positives_geom, detected_at)
VALUES (%(tile_id)s, %(imagery_date)s, %(model_version)s, %(backbone_version)s, %(scan_id)s,
    %(z)s, %(x)s, %(y)s, %(provider)s, %(flagged)s, %(positives)s, %(segment_count)s,
    %(min_positives)s, %(hectares)s, %(scores)s, %(demo)s, %(image_key)s, %(labels_key)s,
    ST_SetSRID(ST_GeomFromGeoJSON(%(tile_geojson)s), 4326),
    CASE WHEN %(positives_geojson)s = '' THEN NULL
         ELSE ST_Multi(ST_SetSRID(ST_GeomFromGeoJSON(%(positives_geojson)s), 4326)) END,
    COALESCE(%(detected_at)s::timestamptz, now()))
ON CONFLICT (tile_id, imagery_date, model_version) DO UPDATE SET
    backbone_version = EXCLUDED.backbone_version, scan_id = EXCLUDED.scan_id,
    flagged = EXCLUDED.flagged, positives = EXCLUDED.positives,
    segment_count = EXCLUDED.segment_count, min_positives = EXCLUDED.min_positives,
    hectares = EXCLUDED.hectares, scores = EXCLUDED.scores, demo = EXCLUDED.demo,
    image_key = EXCLUDED.image_key, labels_key = EXCLUDED.labels_key,
    tile_geom = EXCLUDED.tile_geom, positives_geom = EXCLUDED.positives_geom,
    detected_at = EXCLUDED.detected_at
WHERE %(detected_at)s::timestamptz IS NOT NULL AND detections.detected_at <= EXCLUDED.detected_at
"""

# A tile that failed and later succeeded (a replay) ends as done; done never turns to failed
# (nor to skipped: the tiler's skip of a redelivered request keeps the tile done).
UPSERT_SCAN_TILE = """
INSERT INTO scan_tiles (scan_id, tile_id, status, flagged, hectares, reason, updated_at)
VALUES (%(scan_id)s, %(tile_id)s, %(status)s, %(flagged)s, %(hectares)s, %(reason)s, now())
ON CONFLICT (scan_id, tile_id) DO UPDATE SET
    status = EXCLUDED.status, flagged = EXCLUDED.flagged, hectares = EXCLUDED.hectares,
    reason = EXCLUDED.reason, updated_at = now()
WHERE scan_tiles.status <> 'done' OR EXCLUDED.status = 'done'
"""


def detected_at(detection: pb.Detection) -> datetime | None:
    """When the aggregator made the detection, or None for one without a time."""
    if not detection.HasField("detected_at"):
        return None
    when: datetime = detection.detected_at.ToDatetime(tzinfo=UTC)
    return when


def detection_row(detection: pb.Detection) -> dict[str, Any]:
    return {
        "tile_id": detection.tile_id,
        "imagery_date": detection.imagery_date,
        "model_version": detection.models.classifier,
        "backbone_version": detection.models.backbone,
        "scan_id": detection.scan_id,
        "z": detection.tile.z,
        "x": detection.tile.x,
        "y": detection.tile.y,
        "provider": detection.provider,
        "flagged": detection.flagged,
        "positives": detection.positives,
        "segment_count": detection.segment_count,
        "min_positives": detection.min_positives,
        "hectares": detection.hectares,
        "scores": list(detection.scores),
        "demo": detection.demo,
        "image_key": detection.image_key,
        "labels_key": detection.labels_key,
        "tile_geojson": detection.tile_geojson,
        "positives_geojson": detection.positives_geojson,
        "detected_at": detected_at(detection),
    }


def done_row(detection: pb.Detection) -> dict[str, Any]:
    return {
        "scan_id": detection.scan_id,
        "tile_id": detection.tile_id,
        "status": "done",
        "flagged": detection.flagged,
        "hectares": detection.hectares if detection.flagged else 0.0,
        "reason": "",
    }


def failed_row(letter: pb.DeadLetter) -> dict[str, Any] | None:
    """The failed-tile row of a dead letter, or None when it names no scan.

    A failure of the scan request itself (an invalid region) has no tile: its row has tile id ''.
    """
    if not letter.scan_id:
        return None
    return {
        "scan_id": _text(letter.scan_id),
        "tile_id": _text(letter.tile_id),
        "status": "failed",
        "flagged": False,
        "hectares": 0.0,
        "reason": _text(f"{letter.service}: {letter.reason}")[:2000],
    }


def _text(value: str) -> str:
    """`value` as PostgreSQL text takes it (no NUL characters), so a failure is never lost to
    the text it carries."""
    return value.replace("\x00", "\ufffd")
