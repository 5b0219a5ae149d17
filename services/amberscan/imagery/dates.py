"""Imagery capture dates: reading them in the forms providers give, the latest, and date ranges.

Pure: strings in and out; no I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable


def latest_date(dates: Iterable[str]) -> str:
    """The latest of some ISO dates, ignoring empty ones ("" when none is known)."""
    known = [d for d in dates if d]
    return max(known) if known else ""


def normalize_date(text: str) -> str:
    """An imagery date as ISO 8601 (YYYY-MM-DD): accepts ISO dates/datetimes, "31 Dec 2012" and
    TIFF's "2017:05:01 10:00:00".

    Returns "" for an empty or unreadable date (the provider then does not say).
    """
    text = text.strip()
    if not text:
        return ""
    # The last two are TIFF's DateTime ("2017:05:01 10:00:00") and its date alone.
    formats = ("%Y-%m-%d", "%d %b %Y", "%d %B %Y", "%Y%m%d", "%Y:%m:%d %H:%M:%S", "%Y:%m:%d")
    for fmt in formats:
        try:
            return dt.datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            continue
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).date().isoformat()
    except ValueError:
        return ""


def date_in_range(imagery_date: str, date_from: str, date_to: str) -> bool:
    """Whether an ISO capture date lies within [date_from, date_to] (empty bounds are open).

    An unknown capture date ("") is accepted: it cannot be shown to be outside.
    """
    if not imagery_date:
        return True
    if date_from and imagery_date < normalize_date(date_from):
        return False
    return not (date_to and imagery_date > normalize_date(date_to))
