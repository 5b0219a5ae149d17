"""The watch core: cadences, what a round enqueues, backoff, the requests it sends."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amberscan.geo.tiles import Tile
from amberscan.watch.core import (
    Enqueued,
    Watch,
    backoff_s,
    describe_every,
    parse_every,
    plan_round,
    tile_request,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1d", 86400), ("12h", 43200), ("30m", 1800), ("2w", 1209600), ("45s", 45), (" 1.5 H ", 5400)],
)
def test_parse_every(text: str, seconds: float) -> None:
    assert parse_every(text) == seconds


@pytest.mark.parametrize("text", ["", "1", "d", "0d", "-1d", "1y", "1 day"])
def test_parse_every_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="expected a positive number and s, m, h, d or w"):
        parse_every(text)


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from("smhdw"))
def test_describe_every_round_trips(n: int, unit: str) -> None:
    seconds = parse_every(f"{n}{unit}")
    assert parse_every(describe_every(seconds)) == seconds


def record(
    tile: str, date: str, *, failed: bool = False, attempts: int = 1, since: float = 0
) -> Enqueued:
    return Enqueued(tile, date, "m1", "scan-a", attempts, failed, since)


def test_only_new_dates_are_enqueued() -> None:
    known = [record("a", "2018-05-01"), record("b", "2018-05-01")]
    plan = plan_round(
        {"a": "2018-05-01", "b": "2019-06-01", "c": "2018-05-01"},
        known,
        retry_base_s=60,
        max_attempts=3,
    )
    assert plan.new == (("b", "2019-06-01"), ("c", "2018-05-01"))
    assert plan.retries == () and not plan.empty


def test_a_model_change_alone_rescans_nothing() -> None:
    known = [Enqueued("a", "2018-05-01", "old-model", "s", 1, False, 10.0)]
    assert plan_round({"a": "2018-05-01"}, known, retry_base_s=60, max_attempts=3).empty


def test_failed_tiles_are_retried_after_their_backoff() -> None:
    offered = {"a": "2018-05-01", "b": "2018-05-01", "c": "2018-05-01"}
    known = [
        record("a", "2018-05-01", failed=True, attempts=1, since=59),  # waits 60 s
        record("b", "2018-05-01", failed=True, attempts=2, since=121),  # waits 120 s: due
        record("c", "2018-05-01", failed=True, attempts=3, since=10**6),  # out of attempts
    ]
    plan = plan_round(offered, known, retry_base_s=60, max_attempts=3)
    assert [r.tile_id for r in plan.retries] == ["b"]
    assert [r.tile_id for r in plan.given_up] == ["c"]
    assert plan.new == ()


@given(st.integers(min_value=1, max_value=40), st.floats(min_value=1, max_value=10**5))
def test_backoff_doubles_and_is_capped(attempts: int, base: float) -> None:
    assert backoff_s(attempts + 1, base) >= backoff_s(attempts, base)
    assert backoff_s(1, base) == pytest.approx(min(base, 7 * 86400))
    assert backoff_s(attempts, base) <= 7 * 86400


def test_tile_request_reads_the_tile_at_its_date() -> None:
    watch = Watch(3, "{}", "stac", 86400, ("http://x/catalog.json",), "ortho", (), "", "c", "n")
    tile = Tile(37659, 21852, 16)
    request = tile_request(watch, "scan-1", tile, "2019-06-01", 2)
    assert request.HasField("tile") and request.tile.quadkey == tile.quadkey
    assert (request.vintage, request.tiles_expected, request.provider) == ("2019-06-01", 2, "stac")
    assert list(request.sources) == ["http://x/catalog.json"] and request.collection == "ortho"
    assert (request.zoom, request.fetch_zoom) == (16, 18)


def test_a_tile_sent_without_a_status_is_retried_once_it_is_overdue() -> None:
    """#26 defect 5: a sent tile with no status for `unanswered_after_s` counts as failed."""
    waiting = Enqueued("a", "2018-05-01", "m1", "scan-a", 1, False, 100.0, unanswered=True)
    overdue = Enqueued("b", "2018-05-01", "m1", "scan-a", 1, False, 4000.0, unanswered=True)
    spent = Enqueued("c", "2018-05-01", "m1", "scan-a", 3, False, 9e5, unanswered=True)
    answered = record("d", "2018-05-01", since=9e5)
    plan = plan_round(
        {t: "2018-05-01" for t in "abcd"},
        [waiting, overdue, spent, answered],
        retry_base_s=60,
        max_attempts=3,
        unanswered_after_s=3600,
    )
    assert plan.new == () and plan.retries == (overdue,) and plan.given_up == (spent,)
