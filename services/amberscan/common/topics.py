"""Topic names: one place, so every service and test agrees on them."""

from __future__ import annotations

SCAN_REQUESTS = "scan-requests"
TILES = "tiles"
SUPERPIXELS = "superpixels"
FEATURES = "features"
SCORES = "scores"
DETECTIONS = "detections"
DEAD_LETTERS = "dead-letters"

ALL_TOPICS = (SCAN_REQUESTS, TILES, SUPERPIXELS, FEATURES, SCORES, DETECTIONS, DEAD_LETTERS)


def topic_name(prefix: str, base: str) -> str:
    """The full name of a topic under a prefix (tests use a unique prefix to run side by side)."""
    return f"{prefix}{base}"
