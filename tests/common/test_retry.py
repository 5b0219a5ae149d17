"""The one retry policy: bounded, jittered, and honouring what a server asks."""

from __future__ import annotations

import email.utils

import pytest

from amberscan.common.retry import RetryPolicy, grpc_retry_after, parse_retry_after
from amberscan.errors import TransientError


def test_delays_are_jittered_within_a_doubling_capped_ceiling() -> None:
    policy = RetryPolicy(retries=5, base_s=0.5, cap_s=4.0)
    for attempt, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)):
        delays = {policy.delay(attempt) for _ in range(200)}
        assert all(0.0 <= d <= ceiling for d in delays)
        assert len(delays) > 100  # random: copies that failed together retry apart


def test_a_servers_retry_after_wins_but_is_capped() -> None:
    policy = RetryPolicy(base_s=0.5, cap_s=30.0)
    assert policy.delay(1, TransientError("busy", retry_after_s=7.0)) == 7.0
    assert policy.delay(1, TransientError("busy", retry_after_s=600.0)) == 30.0


def test_retry_after_headers_in_both_forms() -> None:
    assert parse_retry_after("120") == 120.0
    when = email.utils.formatdate(1_000_060.0, usegmt=True)
    assert parse_retry_after(when, now=1_000_000.0) == pytest.approx(60.0)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert grpc_retry_after([("grpc-retry-pushback-ms", "1500")]) == 1.5
    assert grpc_retry_after([("other", "1")]) is None


async def test_retrying_stops_after_the_bound_and_reraises_the_last_error() -> None:
    calls = 0
    policy = RetryPolicy(retries=2, base_s=0.001)
    with pytest.raises(TransientError, match="third"):
        async for attempt in policy.retrying(lambda e: isinstance(e, TransientError)):
            with attempt:
                calls += 1
                raise TransientError(["first", "second", "third"][calls - 1])
    assert calls == 3
